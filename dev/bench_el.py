"""Extract-load benchmark: ``include.ingestion`` against the alternatives, on the same machine and data.

``python -m dev.bench_el --scales medium large`` (``make bench-el``). For each scale it starts
a throwaway embedded PostgreSQL, generates the synthetic shop into a source database and moves the
four OLTP tables into fresh warehouse databases with:

- ``ours``    ``include.ingestion.pipeline.extract`` (full load, then an incremental one after each
              of ``--trials`` days of changes), each in its own process so its peak RSS is the task's;
              after each incremental load the same process set-up times only opening and closing
              the load's two connections, as the load opens them: the floor of an incremental load;
- ``psql``    ``psql -c "COPY t TO STDOUT" | psql -c "COPY t FROM STDIN"`` into an identical table
              with its primary key: the physical limit of this machine;
- ``pandas``  ``pandas.read_sql_table`` + ``DataFrame.to_sql`` (the naive pipeline);
- ``dlt``     dlt's ``sql_database`` source, pyarrow backend, into the same PostgreSQL (installed only
              in ``.local/bench-venv`` from ``requirements-bench.txt``).

Every method but dlt runs ``--trials`` times (default 3) and is summarised by its median trial.
Prints one table and writes the numbers to ``bench-results/bench_el_<time>.json``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from dev import shopgen
from dev.airflow_settings import ConnectionSpec
from dev.embedded_postgres import EmbeddedPostgres, find_free_port, postgres_bin_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLES = ("customers", "products", "orders", "order_items")
BENCH_VENV = REPO_ROOT / ".local" / "bench-venv"
RESULTS = REPO_ROOT / "bench-results"
SEED = 42
ROLES = {"shop": "bench-shop-pw", "warehouse": "bench-warehouse-pw"}
CONNECTIONS = "connections only"  # the method name of an incremental load's floor


@dataclass(frozen=True)
class Result:
    scale: str
    method: str
    table: str
    rows: int
    seconds: float
    peak_rss_mib: float | None = None
    note: str = ""
    trial: int = 1  # repeated measurements (full loads, days of changes) are summarised by their median

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


# ---------------------------------------------------------------------------------------- workers
def worker_ours(table: str, full: bool, connections_only: bool = False) -> dict:
    """Runs in a child process: import first (a worker has Airflow loaded), then time one extract.

    The warm-up does what any Airflow task process has done by the time it extracts: it resolved
    the two Connections once (the first lookup imports Airflow's connection machinery: one-off
    imports that are not part of moving the data) and parsed the DAG file, which read
    ``sources.yml``."""
    from airflow.sdk import BaseHook

    from include.ingestion.config import load_source_config
    from include.ingestion.pipeline import extract
    from include.ingestion.sources import postgres as _source  # noqa: F401  (imports the hooks)
    from include.ingestion.warehouse import postgres as _warehouse  # noqa: F401

    for conn_id in ("ecommerce_source", "warehouse_postgres"):
        BaseHook.get_connection(conn_id)
    load_source_config()

    if connections_only:
        return {"rows": 0, "read": 0, "seconds": _time_connections(table), "peak_rss_mib": peak_rss_mib()}
    started = time.perf_counter()
    report = extract(table, full_refresh=full, batch_id=f"bench-{table}-{'full' if full else 'incr'}")
    seconds = time.perf_counter() - started
    return {"rows": report.rows_merged, "read": report.rows_read, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def _time_connections(table: str) -> float:
    """Seconds to open and close the source and warehouse connections the way a load does (the
    warehouse's on a helper thread while the source's opens): what no incremental load can go below."""
    from include.ingestion.config import source_entry
    from include.ingestion.pipeline import _postgres_connections
    from include.warehouses import warehouse as warehouse_spec

    entry, warehouse = source_entry(table), warehouse_spec("postgres").load_writer()
    started = time.perf_counter()
    with _postgres_connections(entry, warehouse) as (_, warehouse_conn):
        warehouse_conn.result()
    return time.perf_counter() - started


def worker_pandas(table: str, source_url: str, warehouse_url: str) -> dict:
    import pandas as pd
    import sqlalchemy

    source, warehouse = sqlalchemy.create_engine(source_url), sqlalchemy.create_engine(warehouse_url)
    started = time.perf_counter()
    frame = pd.read_sql_table(table, source, schema="public")
    frame.to_sql(table, warehouse, schema="naive", index=False, if_exists="replace")
    return {"rows": len(frame), "seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}


DLT_SCRIPT = """
import json, resource, sys, time
import dlt
from dlt.sources.sql_database import sql_database
table, source_url, warehouse_url, pipelines_dir = sys.argv[1:5]
pipeline = dlt.pipeline(pipeline_name="bench_" + table, destination=dlt.destinations.postgres(warehouse_url),
                        dataset_name="dlt_raw", pipelines_dir=pipelines_dir)
source = sql_database(source_url, schema="public", table_names=[table], backend="pyarrow")
started = time.perf_counter()
pipeline.run(source)
seconds = time.perf_counter() - started
rows = pipeline.last_trace.last_normalize_info.row_counts.get(table, 0)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mib": hwm / 1024}))
"""


def peak_rss_mib(pid: int | str = "self") -> float | None:
    """A process's peak RSS (VmHWM), or None once it is gone. Not ``ru_maxrss``: Linux carries the
    parent's peak across fork+exec into it, so every worker would report the driver's memory."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def psql_copy_pipe(host: str, port: int, source: tuple, target: tuple, source_table: str, target_table: str) -> float:
    """Seconds for ``psql -c "COPY s TO STDOUT" | psql -c "COPY t FROM STDIN"``: the physical limit of
    moving a table on this machine. ``source``/``target`` are (user, password, database)."""
    psql = str(postgres_bin_dir() / "psql")
    common = ["-X", "-q", "-h", host, "-p", str(port)]
    (source_user, source_password, source_db), (target_user, target_password, target_db) = source, target
    started = time.perf_counter()
    reader = subprocess.Popen(
        [psql, *common, "-U", source_user, "-d", source_db, "-c", f"COPY {source_table} TO STDOUT"],
        stdout=subprocess.PIPE,
        env=dict(os.environ, PGPASSWORD=source_password),
    )
    subprocess.run(
        [
            psql,
            *common,
            "-U",
            target_user,
            "-d",
            target_db,
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"COPY {target_table} FROM STDIN",
        ],
        stdin=reader.stdout,
        env=dict(os.environ, PGPASSWORD=target_password),
        check=True,
    )
    reader.stdout.close()
    if reader.wait() != 0:
        raise RuntimeError(f"psql COPY TO STDOUT of {source_table} failed")
    return time.perf_counter() - started


def create_like(source_dsn: str, target_dsn: str, table: str, schema: str) -> None:
    """An empty ``schema.table`` in the target with the source's column types and primary key."""
    with psycopg.connect(source_dsn) as conn:
        columns = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (f"public.{table}",),
        ).fetchall()
        key = conn.execute(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (f"public.{table}",),
        ).fetchall()
    definition = ", ".join(
        [f'"{name}" {type_}' for name, type_ in columns] + [f"PRIMARY KEY ({', '.join(k for (k,) in key)})"]
    )
    with psycopg.connect(target_dsn) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(f"DROP TABLE IF EXISTS {schema}.{table}")
        conn.execute(f"CREATE TABLE {schema}.{table} ({definition})")


# ---------------------------------------------------------------------------------------- the bench
class Bench:
    def __init__(self, root: Path, scale: str) -> None:
        self.root, self.scale = root, scale
        self.server = EmbeddedPostgres(root / "postgres", find_free_port())

    def dsn(self, database: str, role: str) -> str:
        return self.server.dsn(database, role, ROLES[role])

    def env(self, warehouse_db: str) -> dict[str, str]:
        """Connections the Airflow way, for child processes."""
        env = dict(
            os.environ,
            AIRFLOW_HOME=str(self.root / "airflow"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            PYTHONPATH=str(REPO_ROOT),
        )
        for conn_id, role, database in (
            ("ecommerce_source", "shop", "source"),
            ("warehouse_postgres", "warehouse", warehouse_db),
        ):
            spec = ConnectionSpec(conn_id, "postgres", self.server.host, self.server.port, database, role, ROLES[role])
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = spec.to_env_value()
        return env

    def start(self) -> None:
        (self.root / "airflow").mkdir(parents=True, exist_ok=True)
        self.server.start()
        for role, password in ROLES.items():
            self.server.ensure_role(role, password)
        self.server.ensure_database("source", owner="shop")
        for method in ("ours", "psql", "pandas", "dlt"):
            self.server.ensure_database(f"wh_{method}", owner="warehouse")

    def generate(self) -> tuple[str, float]:
        """The shop from ``dev.shopgen`` at the benchmark's scale."""
        started = time.perf_counter()
        shopgen.generate(
            scale=self.scale,
            seed=SEED,
            source_dsn=self.dsn("source", "shop"),
            charges_db=self.root / "charges.sqlite",
            landing_dir=self.root / "landing",
        )
        return "dev.shopgen", time.perf_counter() - started

    def apply_one_day_of_changes(self) -> None:
        shopgen.apply_changes(1, source_dsn=self.dsn("source", "shop"), charges_db=self.root / "charges.sqlite")

    def settle(self) -> None:
        """What a day between two loads gives: autovacuum has analysed the freshly loaded tables.

        Without it the incremental loads race autovacuum's ANALYZE of the full load's tables for
        the two cores, and their time says more about that race than about the load."""
        for database in ("source", "wh_ours"):
            with psycopg.connect(self.server.dsn(database), autocommit=True) as conn:
                conn.execute("VACUUM (ANALYZE)")

    def count(self, table: str) -> int:
        with psycopg.connect(self.dsn("source", "shop")) as conn:
            return int(conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()[0])

    # -------------------------------------------------------------------------------- methods
    def reset_ours(self) -> None:
        """An empty warehouse again, for another full load."""
        with psycopg.connect(self.dsn("wh_ours", "warehouse")) as conn:
            conn.execute("DROP SCHEMA IF EXISTS raw CASCADE")

    def ours(self, table: str, full: bool, trial: int = 1) -> Result:
        out = self._child(
            [sys.executable, "-m", "dev.bench_el", "worker-ours", table] + ([] if full else ["--incremental"]),
            self.env("wh_ours"),
        )
        method = "ours" if full else "ours incremental"
        return Result(
            self.scale, method, table, out["rows"], out["seconds"], out["peak_rss_mib"], f"read {out['read']}", trial
        )

    def connections(self, table: str, trial: int = 1) -> Result:
        """An incremental load's floor: its two connections opened and closed, nothing else."""
        out = self._child(
            [sys.executable, "-m", "dev.bench_el", "worker-ours", table, "--connections-only"],
            self.env("wh_ours"),
        )
        return Result(self.scale, CONNECTIONS, table, 0, out["seconds"], out["peak_rss_mib"], trial=trial)

    def psql(self, table: str, trial: int = 1) -> Result:
        create_like(self.dsn("source", "shop"), self.dsn("wh_psql", "warehouse"), table, "pipe")
        seconds = psql_copy_pipe(
            self.server.host,
            self.server.port,
            ("shop", ROLES["shop"], "source"),
            ("warehouse", ROLES["warehouse"], "wh_psql"),
            f"public.{table}",
            f"pipe.{table}",
        )
        return Result(self.scale, "psql pipe", table, self.count(table), seconds, trial=trial)

    def pandas(self, table: str, trial: int = 1) -> Result:
        url = "postgresql+psycopg://{}:{}@{}:{}/{}"
        source = url.format("shop", ROLES["shop"], self.server.host, self.server.port, "source")
        warehouse = url.format("warehouse", ROLES["warehouse"], self.server.host, self.server.port, "wh_pandas")
        with psycopg.connect(self.dsn("wh_pandas", "warehouse")) as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS naive")
        out = self._child([sys.executable, "-m", "dev.bench_el", "worker-pandas", table, source, warehouse], os.environ)
        return Result(self.scale, "pandas", table, out["rows"], out["seconds"], out["peak_rss_mib"], trial=trial)

    def dlt(self, table: str) -> Result:
        url = "postgresql://{}:{}@{}:{}/{}"
        source = url.format("shop", ROLES["shop"], self.server.host, self.server.port, "source")
        warehouse = url.format("warehouse", ROLES["warehouse"], self.server.host, self.server.port, "wh_dlt")
        pipelines = self.root / "dlt"
        out = self._child(
            [str(BENCH_VENV / "bin" / "python"), "-c", DLT_SCRIPT, table, source, warehouse, str(pipelines)],
            dict(os.environ, DLT_DATA_DIR=str(pipelines), RUNTIME__LOG_LEVEL="WARNING"),
        )
        return Result(self.scale, "dlt (pyarrow)", table, out["rows"], out["seconds"], out["peak_rss_mib"])

    # -------------------------------------------------------------------------------- helpers
    @staticmethod
    def _child(command: list[str], env: dict[str, str]) -> dict:
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO_ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{command[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_bench_venv() -> None:
    """dlt lives in its own throwaway virtualenv, never in .venv or the image."""
    if (BENCH_VENV / "bin" / "python").exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        [
            str(uv),
            "pip",
            "install",
            "-q",
            "--python",
            str(BENCH_VENV / "bin" / "python"),
            "-r",
            str(REPO_ROOT / "requirements-bench.txt"),
        ],
        check=True,
    )


def run_scale(scale: str, methods: set[str], pandas_scales: set[str], trials: int) -> list[Result]:  # noqa: C901 - one branch per benchmarked method and trial
    """Every method on one freshly generated shop; all but dlt run ``trials`` times, summarised by
    the median: this machine's timings vary by a third from one run to the next."""
    with tempfile.TemporaryDirectory(prefix=f"bench-el-{scale}-") as folder:
        bench = Bench(Path(folder), scale)
        bench.start()
        try:
            print(f"[{scale}] generating the synthetic shop ...", flush=True)
            generator, seconds = bench.generate()
            print(f"[{scale}] generated by {generator} in {seconds:.1f}s", flush=True)
            results: list[Result] = []
            for trial in range(1, trials + 1):
                if trial > 1:
                    bench.reset_ours()
                for table in TABLES:
                    if "psql" in methods:
                        results.append(_say(bench.psql(table, trial)))
                    if "ours" in methods:
                        results.append(_say(bench.ours(table, full=True, trial=trial)))
                    if "pandas" in methods and scale in pandas_scales:
                        results.append(_say(bench.pandas(table, trial)))
            for table in TABLES:
                if "dlt" in methods:  # once: minutes per run at large, and 7-8x behind ours
                    results.append(_say(bench.dlt(table)))
            if "ours" in methods:
                for day in range(1, trials + 1):
                    bench.apply_one_day_of_changes()
                    bench.settle()
                    for table in TABLES:
                        results.append(_say(bench.ours(table, full=False, trial=day)))
                        results.append(_say(bench.connections(table, trial=day)))
            return results
        finally:
            bench.server.stop()


def _say(result: Result) -> Result:
    rss = f"{result.peak_rss_mib:7.0f}" if result.peak_rss_mib is not None else "      -"
    print(
        f"  {result.scale:7} {result.method:17} #{result.trial} {result.table:12} {result.rows:>10,} rows "
        f"{result.seconds:8.2f}s {result.rows_per_s:>12,.0f} rows/s  peak RSS {rss} MiB  {result.note}",
        flush=True,
    )
    return result


def summarise(results: list[Result]) -> str:
    """Per scale and method: the median trial's rows/s over the four tables, and the goals of issue 3."""
    lines = []
    for scale in dict.fromkeys(r.scale for r in results):
        totals = {}
        for method in dict.fromkeys(r.method for r in results if r.scale == scale):
            picked = [r for r in results if r.scale == scale and r.method == method]
            by_trial = {t: [r for r in picked if r.trial == t] for t in dict.fromkeys(r.trial for r in picked)}
            trials = sorted((sum(r.seconds for r in rs), sum(r.rows for r in rs)) for rs in by_trial.values())
            seconds, rows = trials[len(trials) // 2]
            spread = f"  (median of {len(trials)}: {trials[0][0]:.2f}–{trials[-1][0]:.2f}s)" if len(trials) > 1 else ""
            rss = max((r.peak_rss_mib or 0) for r in picked)
            totals[method] = (rows, seconds)
            lines.append(
                f"{scale:7} {method:17} {rows:>10,} rows {seconds:8.2f}s "
                f"{rows / seconds if seconds else 0:>12,.0f} rows/s  max RSS {rss:6.0f} MiB{spread}"
            )
        ours = totals.get("ours")
        if ours:
            speed = ours[0] / ours[1]
            for other, label in (("psql pipe", "of the psql pipe"), ("pandas", "× pandas"), ("dlt (pyarrow)", "× dlt")):
                if other in totals:
                    ratio = speed / (totals[other][0] / totals[other][1])
                    lines.append(
                        f"{scale:7} ours = {ratio * 100:.0f}% {label}"
                        if other == "psql pipe"
                        else f"{scale:7} ours = {ratio:.1f}{label}"
                    )
            if "ours incremental" in totals:
                share = totals["ours incremental"][1] / ours[1]
                lines.append(
                    f"{scale:7} incremental took {share * 100:.1f}% of the full load, "
                    f"merged {totals['ours incremental'][0]:,} rows"
                )
            if CONNECTIONS in totals:
                floor = totals[CONNECTIONS][1]
                lines.append(
                    f"{scale:7} of which opening the {len(TABLES)} loads' connections alone: {floor:.2f}s = "
                    f"{floor / ours[1] * 100:.1f}% of the full load ({floor / len(TABLES) * 1000:.0f} ms per table)"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    ours = sub.add_parser("worker-ours")
    ours.add_argument("table")
    ours.add_argument("--incremental", action="store_true")
    ours.add_argument("--connections-only", action="store_true")
    pandas = sub.add_parser("worker-pandas")
    pandas.add_argument("table")
    pandas.add_argument("source_url")
    pandas.add_argument("warehouse_url")
    parser.add_argument("--scales", nargs="+", default=["medium", "large"], choices=("small", "medium", "large"))
    parser.add_argument("--methods", default="ours,psql,pandas,dlt")
    parser.add_argument("--trials", type=int, default=3, help="full loads, psql pipes and days of changes per scale")
    parser.add_argument("--pandas-scales", default="small,medium", help="pandas holds whole tables in memory")
    args = parser.parse_args()

    if args.command == "worker-ours":
        print(json.dumps(worker_ours(args.table, full=not args.incremental, connections_only=args.connections_only)))
        return
    if args.command == "worker-pandas":
        print(json.dumps(worker_pandas(args.table, args.source_url, args.warehouse_url)))
        return
    methods = set(args.methods.split(","))
    if "dlt" in methods:
        ensure_bench_venv()
    results: list[Result] = []
    for scale in args.scales:
        results += run_scale(scale, methods, set(args.pandas_scales.split(",")), args.trials)
    print("\n" + summarise(results))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_el_{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps([{**asdict(r), "rows_per_s": r.rows_per_s} for r in results], indent=2))
    print(f"\nwritten to {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
