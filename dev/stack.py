"""The embedded local stack: everything `astro dev start` gives, without Docker.

``python -m dev.stack up [--airflow] [--trigger]`` starts, idempotently:
  - PostgreSQL 16 (pgserver's binaries) on 127.0.0.1 with the databases of the Connections
    (``ecommerce`` source, ``warehouse``) and Airflow's metadata database ``airflow``;
  - synthetic shop data (first start only, seeded) and the Stripe stub serving its charges;
  - the Slack webhook receiver and a fakesnow server (the local Snowflake);
  - with ``--airflow``: Airflow's API server, scheduler, DAG processor and triggerer
    (LocalExecutor), with the Connections, Variables and Pools of ``airflow_settings.yaml``.
``down`` stops all of it and keeps the data; ``up`` again resumes on the same ports.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from dev.airflow_settings import AirflowSettings, Endpoint, load_settings, localize
from dev.celery_shape import DBT_QUEUE, DEFAULT_WORKERS, WORKER_NAME_ENV, WorkerSpec, build_image, copy_project
from dev.embedded_postgres import EmbeddedPostgres, PortInUseError, find_free_port, port_is_free
from dev.processes import ManagedProcess, wait_for_http
from dev.seed import ensure_shop_data
from include.orchestration.docs import DOCS_CONN_ID, DOCS_URL_VARIABLE, docs_projects_setting

REPO_ROOT = Path(__file__).resolve().parents[1]
SETTINGS_FILE = REPO_ROOT / "airflow_settings.yaml"
CONTAINER_LANDING = "/usr/local/airflow/landing"
AIRFLOW_METADATA_DB = "airflow"
PIPELINE_DAG_ID = "ecommerce_elt"
POSTGRES_SERVICES = ("source-db", "warehouse-db")
EXECUTORS = ("local", "celery")
# Airflow configuration the image sets too (Dockerfile ENV; tests/repo/test_deployment.py keeps them in step).
IMAGE_AIRFLOW_CONFIG = {
    "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
    # A task's supervisor notices its process has exited only when a select on the process's
    # sockets returns; once the task has closed them, that select waits this long. At Airflow's 5 s
    # every finished task kept its worker slot (and process) about 5 s after its success; 1 s also
    # bounds how often a running task heartbeats.
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
    # A scheduler loop that found nothing to do sleeps this long (Airflow's default 1 s) before it
    # looks again: each hand-over between tasks that the triggerer does not end (the next stage, a
    # cleared task sent to a worker by its trigger) waited up to that long.
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
    # How often the DAG processor re-parses a DAG file that has not changed (Airflow's default 30 s;
    # a changed file is parsed at once whatever this says). The DAGs here change only with their
    # files or the dbt manifest, whose build marks the DAG files changed (include/orchestration/
    # manifest.py); every re-parse of an unchanged file took CPU from the dbt build beside it.
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300",
}


@dataclass(frozen=True)
class StackLayout:
    """Where the stack keeps its state; everything lives under one ignored folder."""

    root: Path

    @property
    def postgres_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def charges_db(self) -> Path:
        return self.root / "stripe" / "charges.sqlite"

    @property
    def landing_dir(self) -> Path:
        return self.root / "landing"

    @property
    def marketing_landing_dir(self) -> Path:
        return self.landing_dir / "marketing"

    @property
    def slack_log(self) -> Path:
        return self.root / "slack" / "messages.jsonl"

    @property
    def snowflake_dir(self) -> Path:
        return self.root / "snowflake"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    @property
    def workers_dir(self) -> Path:
        """The Celery shape's workers, each with its own copy of the project (its "container")."""
        return self.root / "workers"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def image_dir(self) -> Path:
        """The Celery shape's snapshot of the project that its Airflow components run from."""
        return self.root / "image"


@dataclass(frozen=True)
class StackPorts:
    postgres: int
    stripe: int
    slack: int
    snowflake: int
    airflow: int
    redis: int = 0  # the Celery shape's broker; allocated on its first start

    @classmethod
    def load_or_allocate(cls, layout: StackLayout, airflow_port: int) -> StackPorts:
        """Reuse the ports of the first start, so connections stay valid across restarts."""
        if layout.ports_file.exists():
            saved = json.loads(layout.ports_file.read_text())
            return cls(**{**saved, "airflow": airflow_port})
        ports = cls(find_free_port(), find_free_port(), find_free_port(), find_free_port(), airflow_port)
        ports.save(layout)
        return ports

    def with_broker(self, layout: StackLayout) -> StackPorts:
        """These ports plus the broker's, allocated once and saved like the others."""
        if self.redis:
            return self
        ports = replace(self, redis=find_free_port())
        ports.save(layout)
        return ports

    def save(self, layout: StackLayout) -> None:
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.ports_file.write_text(json.dumps(asdict(self), indent=2))


class LocalStack:
    def __init__(
        self,
        layout: StackLayout,
        airflow_port: int = 8080,
        dags_folder: Path | None = None,
        executor: str = "local",
        workers: tuple[WorkerSpec, ...] = DEFAULT_WORKERS,
    ) -> None:
        """``executor="celery"``: the deployment's shape (dev/celery_shape.py); else LocalExecutor."""
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
        self.layout = layout
        self.dags_folder = dags_folder or REPO_ROOT / "dags"  # the benchmark adds generated DAGs beside ours
        self.executor = executor
        self.workers = workers if executor == "celery" else ()
        self.ports = StackPorts.load_or_allocate(layout, airflow_port)
        if executor == "celery":
            self.ports = self.ports.with_broker(layout)
        self.postgres = EmbeddedPostgres(layout.postgres_dir, self.ports.postgres)
        self.settings = self._local_settings()

    # ------------------------------------------------------------------ configuration
    def _local_settings(self) -> AirflowSettings:
        local = "127.0.0.1"
        services = {name: Endpoint(local, self.ports.postgres) for name in POSTGRES_SERVICES}
        services["stripe-stub"] = Endpoint(local, self.ports.stripe)
        services["slack-receiver"] = Endpoint(local, self.ports.slack)
        services["snowflake-emulator"] = Endpoint(local, self.ports.snowflake)
        return localize(load_settings(SETTINGS_FILE), services, {CONTAINER_LANDING: self.layout.landing_dir})

    def airflow_env(self) -> dict[str, str]:
        """Airflow's configuration for the local stack, as environment variables."""
        api = f"http://127.0.0.1:{self.ports.airflow}"
        return {
            "AIRFLOW_HOME": str(self.layout.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if self.executor == "celery" else "LocalExecutor",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.dsn(AIRFLOW_METADATA_DB).replace(
                "postgresql://", "postgresql+psycopg2://"
            ),
            "AIRFLOW__API__PORT": str(self.ports.airflow),
            "AIRFLOW__API__BASE_URL": f"http://localhost:{self.ports.airflow}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.layout.logs_dir / "airflow"),
            "AIRFLOW__COSMOS__DBT_DOCS_PROJECTS": docs_projects_setting(
                self.settings.variables[DOCS_URL_VARIABLE], DOCS_CONN_ID
            ),
            **IMAGE_AIRFLOW_CONFIG,
            "PYTHONPATH": str(REPO_ROOT),
            **(self._celery_env() if self.executor == "celery" else {}),
        }

    def _celery_env(self) -> dict[str, str]:
        """The deployment's queues: the dbt producer on ``dbt`` (Cosmos reads this when it parses the
        DAG), the result backend in the metadata database."""
        metadata = self.postgres.dsn(AIRFLOW_METADATA_DB).replace("postgresql://", "db+postgresql://")
        image = self.layout.image_dir
        return {
            "AIRFLOW__CORE__DAGS_FOLDER": str(image / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(image / "plugins"),
            "PYTHONPATH": str(image),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.ports.redis}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": metadata,
            "AIRFLOW__COSMOS__WATCHER_DBT_EXECUTION_QUEUE": DBT_QUEUE,
        }

    def worker_dir(self, worker: WorkerSpec) -> Path:
        return self.layout.workers_dir / worker.name

    def worker_env(self, worker: WorkerSpec) -> dict[str, str]:
        """A worker sees only its own copy of the project, as a container sees its image."""
        project = self.worker_dir(worker) / "project"
        return {
            **self.airflow_env(),
            "AIRFLOW_HOME": str(self.worker_dir(worker) / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(project / "plugins"),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "dev.celery_shape.worker_hostname",
            WORKER_NAME_ENV: worker.name,
            "PYTHONPATH": str(project),
        }

    # ------------------------------------------------------------------ processes
    def _process(self, name: str, *argv: str, env: dict[str, str] | None = None) -> ManagedProcess:
        return ManagedProcess(name, tuple(argv), self.layout.run_dir, self.layout.logs_dir, env or {})

    def stripe_stub(self) -> ManagedProcess:
        stripe = self.settings.connection("stripe_api")
        return self._process(
            "stripe-stub",
            sys.executable,
            "-m",
            "dev.stripe_stub",
            "--port",
            str(self.ports.stripe),
            "--charges-db",
            str(self.layout.charges_db),
            "--api-key",
            stripe.password or "",
            env={"PYTHONPATH": str(REPO_ROOT)},
        )

    def slack_receiver(self) -> ManagedProcess:
        slack = self.settings.connection("slack_alerts")
        return self._process(
            "slack-receiver",
            sys.executable,
            "-m",
            "dev.slack_receiver",
            "--port",
            str(self.ports.slack),
            "--token",
            slack.password or "",
            "--log",
            str(self.layout.slack_log),
            env={"PYTHONPATH": str(REPO_ROOT)},
        )

    def snowflake_emulator(self) -> ManagedProcess:
        return self._process(
            "snowflake-emulator",
            str(Path(sys.executable).parent / "fakesnow"),
            "-s",
            "-p",
            str(self.ports.snowflake),
            "-d",
            str(self.layout.snowflake_dir),
        )

    def airflow_components(self) -> list[ManagedProcess]:
        airflow = str(Path(sys.executable).parent / "airflow")
        env = self.airflow_env()
        return [
            self._process("airflow-api-server", airflow, "api-server", "--port", str(self.ports.airflow), env=env),
            self._process("airflow-scheduler", airflow, "scheduler", env=env),
            # Below the others' priority: Airflow re-parses the DAG file for each task its trigger ends
            # (a success callback request with nothing to run), work that would otherwise take CPU from
            # dbt on a laptop's cores; a deployment runs the DAG processor as its own component.
            self._process("airflow-dag-processor", "nice", "-n", "10", airflow, "dag-processor", env=env),
            self._process("airflow-triggerer", airflow, "triggerer", env=env),
        ]

    def broker(self) -> ManagedProcess:
        return self._process(
            "redis-broker",
            shutil.which("redis-server") or "redis-server",
            "--set-proc-title",
            "no",  # its command line stays what ManagedProcess recognises it by
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.layout.redis_dir),
            "--port",
            str(self.ports.redis),
        )

    def celery_worker(self, worker: WorkerSpec) -> ManagedProcess:
        airflow = str(Path(sys.executable).parent / "airflow")
        project = self.worker_dir(worker) / "project"
        return replace(
            self._process(
                f"airflow-{worker.name}",
                airflow,
                "celery",
                "worker",
                "--queues",
                ",".join(worker.queues),
                "--concurrency",
                str(worker.concurrency),
                "--skip-serve-logs",
                "--celery-hostname",
                f"{worker.name}@%h",
                env=self.worker_env(worker),
            ),
            cwd=project,
        )

    def celery_processes(self) -> list[ManagedProcess]:
        if self.executor != "celery":
            return []
        return [self.broker(), *(self.celery_worker(worker) for worker in self.workers)]

    def all_processes(self) -> list[ManagedProcess]:
        return [
            self.stripe_stub(),
            self.slack_receiver(),
            self.snowflake_emulator(),
            *self.celery_processes(),
            *self.airflow_components(),
        ]

    # ------------------------------------------------------------------ up / down
    def up(self, scale: str = "small", seed: int = 42, with_airflow: bool = False) -> None:
        self._check_ports_free(with_airflow)
        self.postgres.start()
        self._ensure_databases()
        self._ensure_shop_data(scale, seed)
        for directory in (self.layout.snowflake_dir, self.layout.slack_log.parent):
            directory.mkdir(parents=True, exist_ok=True)
        stub, slack, snowflake = self.stripe_stub(), self.slack_receiver(), self.snowflake_emulator()
        for process in (stub, slack, snowflake):
            process.start()
        wait_for_http(f"http://127.0.0.1:{self.ports.stripe}/_stub/health", stub)
        wait_for_http(f"http://127.0.0.1:{self.ports.slack}/health", slack)
        wait_for_port(self.ports.snowflake, snowflake)
        if with_airflow:
            self._start_airflow()

    def down(self) -> None:
        for process in reversed(self.all_processes()):
            process.stop()
        self.postgres.stop()

    def status(self) -> dict[str, str]:
        state = {"postgres": f"running on 127.0.0.1:{self.ports.postgres}" if self.postgres.is_running() else "stopped"}
        for process in self.all_processes():
            pid = process.pid()
            state[process.name] = f"running (pid {pid})" if pid else "stopped"
        return state

    def _check_ports_free(self, with_airflow: bool) -> None:
        """A port held by something that is not ours is an error that names the port."""
        ours = {p.name: p.pid() is not None for p in self.all_processes()}
        ours["postgres"] = self.postgres.is_running()
        wanted = {
            "postgres": self.ports.postgres,
            "stripe-stub": self.ports.stripe,
            "slack-receiver": self.ports.slack,
            "snowflake-emulator": self.ports.snowflake,
        }
        if with_airflow:
            wanted["airflow-api-server"] = self.ports.airflow
        for name, port in wanted.items():
            if not ours[name] and not port_is_free(port):
                flag = " (choose another with --airflow-port)" if name == "airflow-api-server" else ""
                raise PortInUseError(
                    f"{name} cannot start: port {port} on 127.0.0.1 is in use by another process{flag}. "
                    f"Stop that process, or delete {self.layout.ports_file} to pick new ports."
                )

    def _ensure_databases(self) -> None:
        for conn in self.settings.connections:
            if conn.conn_type == "postgres" and conn.login and conn.schema:
                self.postgres.ensure_role(conn.login, conn.password or "")
                self.postgres.ensure_database(conn.schema, owner=conn.login)
        self.postgres.ensure_database(AIRFLOW_METADATA_DB)

    def source_dsn(self) -> str:
        return self._dsn("ecommerce_source")

    def warehouse_dsn(self) -> str:
        return self._dsn("warehouse_postgres")

    def _dsn(self, conn_id: str) -> str:
        connection = self.settings.connection(conn_id)
        return self.postgres.dsn(connection.schema or "", connection.login or "", connection.password)

    def _ensure_shop_data(self, scale: str, seed: int) -> None:
        """Generate the synthetic shop on first start only: restarts keep the data as it is."""
        ensure_shop_data(self.source_dsn(), self.layout.charges_db, self.layout.marketing_landing_dir, scale, seed)

    def _start_airflow(self) -> None:
        self.layout.airflow_home.mkdir(parents=True, exist_ok=True)
        running = any(process.pid() is not None for process in self.airflow_components())
        if self.executor == "celery" and not running:  # a new "image" only for a fresh start
            build_image(REPO_ROOT, self.dags_folder, self.layout.image_dir)
        self._write_env_script()
        env = {**os.environ, **self.airflow_env()}
        run_checked([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env, "airflow db migrate")
        run_checked(
            [sys.executable, "-m", "dev.airflow_objects", json.dumps(_settings_payload(self.settings))],
            env,
            "importing connections, variables and pools",
        )
        self._start_celery()
        components = self.airflow_components()
        for process in components:
            process.start()
        wait_for_http(f"http://127.0.0.1:{self.ports.airflow}/api/v2/monitor/health", components[0], 120)
        # The execution API (what every task process talks to) builds its versioned routes (Cadwyn)
        # on its first request, holding the API server's event loop for seconds: asked here, so the
        # first task of the first run does not wait for it.
        wait_for_http(f"http://127.0.0.1:{self.ports.airflow}/execution/health", components[0], 120)

    def _start_celery(self) -> None:
        """The broker, then each worker from a fresh copy of the project (a new container)."""
        if self.executor != "celery":
            return
        if shutil.which("redis-server") is None:
            raise RuntimeError("the Celery shape's broker is redis-server: install it (apt-get install redis-server)")
        broker = self.broker()
        self.layout.redis_dir.mkdir(parents=True, exist_ok=True)
        broker.start()
        wait_for_port(self.ports.redis, broker)
        for worker in self.workers:
            self.start_worker(worker)

    def start_worker(self, worker: WorkerSpec) -> ManagedProcess:
        process = self.celery_worker(worker)
        if process.pid() is None:
            copy_project(self.layout.image_dir, self.layout.image_dir / "dags", self.worker_dir(worker) / "project")
            logged = process.log_file.stat().st_size if process.log_file.exists() else 0
            process.start()
            wait_for_log(process, " ready.", logged)
        return process

    def _write_env_script(self) -> None:
        """``source .local/env.sh`` gives a shell the Airflow CLI of the local stack."""
        lines = [f"export {key}={shlex.quote(value)}" for key, value in self.airflow_env().items()]
        lines.append(f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH")
        (self.layout.root / "env.sh").write_text("\n".join(lines) + "\n")


def _settings_payload(settings: AirflowSettings) -> dict:
    return {
        "connections": {conn.conn_id: conn.to_airflow_dict() for conn in settings.connections},
        "variables": settings.variables,
        "pools": [asdict(pool) for pool in settings.pools],
    }


def run_checked(argv: list[str], env: dict[str, str], what: str) -> None:
    import subprocess

    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-3000:]}")


def wait_for_port(port: int, process: ManagedProcess, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while port_is_free(port):
        if process.pid() is None:
            raise process.fail_with_log("exited while starting")
        if time.monotonic() > deadline:
            raise process.fail_with_log(f"is not listening on port {port} after {timeout_s:.0f}s")
        time.sleep(0.2)


def wait_for_log(process: ManagedProcess, text: str, offset: int = 0, timeout_s: float = 120) -> None:
    """Wait until ``process`` logs ``text`` after ``offset`` (Celery's worker says ``ready.`` once it
    consumes its queues; nothing else tells), failing early if it exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        with process.log_file.open("rb") as log:
            log.seek(offset)
            if text.encode() in log.read():
                return
        if process.pid() is None:
            raise process.fail_with_log("exited while starting")
        if time.monotonic() > deadline:
            raise process.fail_with_log(f"did not log {text!r} within {timeout_s:.0f}s")
        time.sleep(0.25)


def default_stack(airflow_port: int = 8080, executor: str | None = None) -> LocalStack:
    """The stack under ``.local``; without ``executor``, the one it was last started with."""
    layout = StackLayout(REPO_ROOT / ".local")
    saved = layout.root / "executor"
    chosen = executor or (saved.read_text().strip() if saved.exists() else "local")
    if executor:
        layout.root.mkdir(parents=True, exist_ok=True)
        saved.write_text(executor + "\n")
    return LocalStack(layout, airflow_port, executor=chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.stack", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the stack (idempotent)")
    up.add_argument("--scale", choices=("small", "medium", "large"), default="small")
    up.add_argument("--seed", type=int, default=42)
    up.add_argument("--airflow", action="store_true", help="also start Airflow (API server on --airflow-port)")
    up.add_argument("--airflow-port", type=int, default=8080)
    up.add_argument("--trigger", action="store_true", help=f"run the {PIPELINE_DAG_ID} DAG once and wait for it")
    up.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=os.environ.get("EXECUTOR") or "local",
        help="celery: a Redis broker and workers with their own project copies, as deployed",
    )
    changes = commands.add_parser("changes", help="play days of business on the shop (dev.shopgen)")
    changes.add_argument("--days", type=int, default=1)
    changes.add_argument("--seed", type=int, default=7)
    commands.add_parser("down", help="stop everything, keep the data")
    commands.add_parser("status", help="what runs where")
    args = parser.parse_args(argv)

    stack = default_stack(getattr(args, "airflow_port", 8080), getattr(args, "executor", None))
    try:
        if args.command == "up":
            started = time.monotonic()
            stack.up(args.scale, args.seed, with_airflow=args.airflow or args.trigger)
            print(f"Local stack up in {time.monotonic() - started:.1f}s")
            if args.trigger:
                from dev.airflow_client import run_dag_and_wait

                run_dag_and_wait(f"http://127.0.0.1:{stack.ports.airflow}", PIPELINE_DAG_ID)
            if args.airflow or args.trigger:
                print(f"Airflow UI: http://localhost:{stack.ports.airflow}   (CLI: source .local/env.sh)")
        elif args.command == "changes":
            from dev import shopgen

            summary = shopgen.apply_changes(
                args.days,
                stack.source_dsn(),
                stack.layout.charges_db,
                stack.layout.marketing_landing_dir,
                seed=args.seed,
            )
            print(f"Applied {args.days} day(s) of changes: {summary}")
        elif args.command == "down":
            stack.down()
            print("Local stack stopped (data kept in .local/)")
        else:
            for name, state in stack.status().items():
                print(f"{name:22} {state}")
    except (PortInUseError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
