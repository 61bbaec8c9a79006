"""Whole-pipeline benchmark on the embedded stack: ``make bench SCALE=medium`` (not a test).

In one go, on a fresh local stack at the chosen scale (``small`` | ``medium`` | ``large``):

1. the full ``ecommerce_elt`` run through the real scheduler (LocalExecutor): wall time per stage
   (health checks, extraction, dbt, docs, notify) from the task instances, and the run's total;
2. the same after one day of generator changes (the incremental run), then a ``full_refresh`` run
   on the now warm stack (the first run also pays the Airflow processes' one-time start-up work);
3. baselines on the same data: a plain ``dbt build --full-refresh`` and a plain ``dbt build`` of
   the project (the work of the full and of the incremental dbt stage), and the ``psql COPY``
   pipe for the four OLTP tables the extraction loads;
4. DAG parse time of the pipeline DAG file vs an empty DAG file (after the stack stopped);
5. peak memory (VmHWM) of the scheduler and of the largest task process, sampled from /proc, the
   peak number of task processes alive at once during each run's dbt stage, and the CPU seconds
   each component used during that stage (scheduler, task processes with their dbt, triggerer,
   DAG processor, API server, PostgreSQL);
6. the whole pipeline against its floor measured in the same session: the COPY pipe, a plain
   ``dbt build`` and a plain ``dbt docs generate``;
7. a retry from the grid: ``transform.<model>.run`` cleared with its downstream (as *Clear* does)
   after the incremental run, against a plain ``dbt build --select <model>+``;
8. with ``--models-curve 1,4,16``: the dbt stage (a ``DbtDag`` of the project with every model
   replicated N times, through the scheduler), a plain ``dbt build`` of it, and its parse time;
9. with ``--dbt-runner``: runs 1 and 2 again on a second fresh stack whose Airflow has dbt-core
   installed in its own environment (``.local/runner-venv``) and whose producer runs dbt in-process
   (``InvocationMode.DBT_RUNNER``), against the same plain baselines.

Prints a table and writes ``bench-results/pipeline_<scale>_<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from dev import shopgen
from dev.airflow_client import api, clear_tasks, task_instances, trigger, wait_for_dag, wait_for_run
from dev.bench_el import RESULTS, TABLES, create_like, peak_rss_mib, psql_copy_pipe
from dev.bench_parse import empty_dag_seconds, parse_seconds
from dev.embedded_postgres import find_free_port
from dev.stack import REPO_ROOT, LocalStack, StackLayout

DAG_ID = "ecommerce_elt"
STAGES = ("health", "extraction", "dbt", "docs", "notify")
CLEARED_MODEL = "fct_orders"  # the retry from the grid: a mart with descendants and tests
BENCH_ROOT = REPO_ROOT / ".local" / "bench"
# Airflow and dbt in one environment, for the DBT_RUNNER comparison only (scripts/bootstrap.sh).
RUNNER_VENV = REPO_ROOT / ".local" / "runner-venv"


def stage_of(task_id: str) -> str:
    if task_id.startswith("transform."):
        return "dbt"
    if task_id.startswith(("extract_", "all_extractions")):
        return "extraction"
    if task_id == "dbt_docs":
        return "docs"
    if task_id == "notify_success":
        return "notify"
    return "health"  # validate_params, check_*


@dataclass
class RunTiming:
    """Wall time of one DAG run and of each stage (first task start → last task end)."""

    label: str
    total_s: float
    stages: dict[str, float]
    tasks: int
    # per task: seconds from the run's start to queued, started and ended (JSON only: where time goes)
    timeline: list[dict] = field(default_factory=list)
    # most task processes (Airflow supervisors) alive at once while the dbt stage ran
    peak_task_processes: int = 0
    peak_tasks: list[str] = field(default_factory=list)  # which tasks they were (the first such moment)
    run_id: str = ""
    # CPU seconds per component during the dbt stage (see StackSampler.cpu_seconds)
    dbt_cpu_s: dict[str, float] = field(default_factory=dict)
    # the most memory the triggerer (its processes together) held during the dbt stage, MiB
    triggerer_peak_mib: float = 0.0
    # the dbt stage's first task start and last task end (for the process count; not in the JSON)
    dbt_window: tuple[datetime, datetime] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, label: str, run: dict, instances: list[dict], stage: Callable[[str], str] = stage_of) -> RunTiming:
        """From the API's DAG run and its task instances."""
        spans: dict[str, list[datetime]] = {}
        for ti in instances:
            if ti["start_date"] and ti["end_date"]:
                spans.setdefault(stage(ti["task_id"]), []).extend([_time(ti["start_date"]), _time(ti["end_date"])])
        stages = {name: (max(times) - min(times)).total_seconds() for name, times in spans.items()}
        begin = _time(run["start_date"])
        total = (_time(run["end_date"]) - begin).total_seconds()
        timeline = sorted(
            (
                {
                    "task": ti["task_id"],
                    "try": ti.get("try_number"),
                    **{
                        key: round((_time(ti[field]) - begin).total_seconds(), 2)
                        for key, field in _TIMELINE_FIELDS
                        if ti.get(field)
                    },
                }
                for ti in instances
            ),
            key=lambda t: t.get("start", 1e9),
        )
        dbt_times = spans.get("dbt")
        window = (min(dbt_times), max(dbt_times)) if dbt_times else None
        return cls(
            label,
            round(total, 1),
            {k: round(v, 1) for k, v in stages.items()},
            len(instances),
            timeline,
            dbt_window=window,
        )


_TIMELINE_FIELDS = (("queued", "queued_when"), ("start", "start_date"), ("end", "end_date"))


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class StackSampler(threading.Thread):
    """Samples the local stack until stopped: VmHWM (peak RSS) of the scheduler and every process
    under it (executor workers, task processes, their dbt subprocesses), the number of task
    processes alive, and the CPU time each component has used so far. VmHWM only grows, so a
    sample late in a process's life has its peak; a process shorter than the interval may be missed.

    :param components: name → root pid of the other components whose CPU is counted (triggerer,
        DAG processor, API server, PostgreSQL's postmaster).
    """

    def __init__(self, scheduler_pid: int, components: dict[str, int], interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.scheduler_pid, self.components, self.interval_s = scheduler_pid, components, interval_s
        self.peaks: dict[int, tuple[float, str]] = {}
        self.task_processes: list[tuple[datetime, frozenset[str]]] = []  # (when, task instance ids alive)
        self.cpu: list[tuple[datetime, dict[str, float]]] = []  # (when, CPU seconds so far per component)
        self.triggerer_rss: list[tuple[datetime, float]] = []  # (when, the triggerer's processes' RSS, MiB)
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            if not self.sample():
                return

    def sample(self) -> bool:
        """One look at the stack; False once the scheduler is gone."""
        try:
            scheduler = psutil.Process(self.scheduler_pid)
            processes = [scheduler, *scheduler.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        titles = []
        for process in processes:
            title = _title(process)
            titles.append(title)
            peak = peak_rss_mib(process.pid)
            if peak is not None and peak > self.peaks.get(process.pid, (0.0, ""))[0]:
                self.peaks[process.pid] = (peak, title)
        now = datetime.now().astimezone()
        running = {match[1] for title in titles if (match := _TASK_PROCESS.match(title))}
        self.task_processes.append((now, frozenset(running)))
        trees = {name: _process_tree(pid) for name, pid in self.components.items()}
        self.cpu.append((now, self._cpu_so_far(processes, titles, trees)))
        self.triggerer_rss.append((now, _tree_rss_mib(trees.get("triggerer", []))))
        return True

    def _cpu_so_far(
        self, scheduler_tree: list[psutil.Process], titles: list[str], trees: dict[str, list[psutil.Process]]
    ) -> dict[str, float]:
        """CPU seconds used so far per component. A process's ended children count in its own
        ``children_*`` times once reaped, so a tree's total only grows. The scheduler's share is its
        own process and its LocalExecutor workers'; what runs under the workers is the tasks'."""
        executor = sum(
            _own_cpu(process)
            for process, title in zip(scheduler_tree, titles, strict=True)
            if process.pid == self.scheduler_pid or "LocalExecutor" in title
        )
        so_far = {"scheduler": executor, "tasks (incl. dbt)": _tree_cpu(scheduler_tree) - executor}
        so_far.update({name: _tree_cpu(tree) for name, tree in trees.items()})
        return so_far

    def cpu_seconds(self, window: tuple[datetime, datetime] | None) -> dict[str, float]:
        """CPU seconds each component used in the window (the dbt stage), and the window's
        capacity (its wall time × this machine's cores), from the samples either side of it."""
        if window is None:
            return {}
        before = [cpu for when, cpu in self.cpu if when <= window[0]]
        within = [cpu for when, cpu in self.cpu if when <= window[1]]
        if not before or not within:
            return {}
        start, end = before[-1], within[-1]
        used = {name: round(end[name] - start.get(name, 0.0), 1) for name in end}
        used["capacity (wall × cores)"] = round((window[1] - window[0]).total_seconds() * (os.cpu_count() or 1), 1)
        return used

    def triggerer_peak_mib(self, window: tuple[datetime, datetime] | None) -> float:
        """The most memory the triggerer's processes held together in the window (its node tasks'
        triggers all wait in it during the dbt stage)."""
        if window is None:
            return 0.0
        return round(max((rss for when, rss in self.triggerer_rss if window[0] <= when <= window[1]), default=0.0))

    def peak_task_processes(self, window: tuple[datetime, datetime] | None) -> int:
        return len(self.peak_tasks(window))

    def peak_tasks(self, window: tuple[datetime, datetime] | None) -> frozenset[str]:
        """The task instance ids alive at once at the window's peak (the first, if several)."""
        if window is None:
            return frozenset()
        alive = [ids for when, ids in self.task_processes if window[0] <= when <= window[1]]
        return max(alive, key=len, default=frozenset())

    def stop(self) -> None:
        self._stopped.set()
        self.join()

    def summary(self) -> dict[str, object]:
        """Peak memory so far: the scheduler's, and the largest task process's."""
        scheduler = self.peaks.get(self.scheduler_pid, (0.0, "scheduler"))[0]
        tasks = [
            (peak, title)
            for pid, (peak, title) in self.peaks.items()
            if pid != self.scheduler_pid and "LocalExecutor" not in title and "serve-logs" not in title
        ]
        largest = max(tasks, default=(0.0, "-"))
        return {
            "scheduler_peak_mib": round(scheduler),
            "largest_task_peak_mib": round(largest[0]),
            "largest_task": largest[1],
        }


def _children_cpu() -> float:
    """CPU seconds of this process's ended (reaped) children: a plain dbt command's own."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own_cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def _tree_cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _process_tree(pid: int) -> list[psutil.Process]:
    """A process and every process under it (none once it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _tree_rss_mib(processes: list[psutil.Process]) -> float:
    """The RSS of ``processes`` together."""
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total / 2**20


# A process that runs a task names its task instance id: the task runner (``airflow worker -- <id>``)
# and the LocalExecutor worker that starts and supervises it (``airflow worker -- LocalExecutor: <id>``,
# ``<idle>`` between tasks). Counting distinct ids counts each running task once.
_TASK_PROCESS = re.compile(r"airflow worker -- (?:LocalExecutor\S*: )?([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})")


def _title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:120]
    except psutil.Error:
        return "?"


@dataclass
class BenchReport:
    scale: str
    shop_generated_s: float = 0.0
    runs: list[RunTiming] = field(default_factory=list)
    baselines: dict[str, float] = field(default_factory=dict)
    parse: dict[str, float] = field(default_factory=dict)
    memory: dict[str, object] = field(default_factory=dict)
    retry: dict = field(default_factory=dict)  # clear one model with downstream: seconds, tasks, timeline
    # CPU seconds per component while each plain command ran, on the idle stack (its dbt: "tasks")
    baseline_cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)
    dbt_runner: list[dict] = field(default_factory=list)  # runs 1 and 2 with InvocationMode.DBT_RUNNER
    settings: dict[str, object] = field(default_factory=dict)  # the TransformSettings the stack ran with

    def floor(self, run: str) -> float:
        """The pipeline's floor: the same work done by the plain tools, back to back."""
        build = "dbt build --full-refresh" if run == "full" else "dbt build"
        b = self.baselines
        return b["psql COPY pipe (4 tables)"] + b[build] + b["dbt docs generate"]

    def ratios(self) -> dict[str, float]:
        full, incremental = self.runs[0], self.runs[1]
        b = self.baselines
        warm: dict[str, float] = {}
        if len(self.runs) > 2:  # the full refresh on a warm stack
            warm = {
                "dbt stage / plain dbt build --full-refresh (full refresh, warm)": self.runs[2].stages["dbt"]
                / b["dbt build --full-refresh"],
                "pipeline / floor (full refresh, warm)": self.runs[2].total_s / self.floor("full"),
            }
        runner = {
            f"dbt stage, DBT_RUNNER / plain dbt build ({run['label']})": run["stages"]["dbt"]
            / b["dbt build --full-refresh" if run["label"] == "full" else "dbt build"]
            for run in self.dbt_runner
        }
        return {
            **runner,
            "dbt stage / plain dbt build (full)": full.stages["dbt"] / b["dbt build --full-refresh"],
            "dbt stage / plain dbt build (incremental)": incremental.stages["dbt"] / b["dbt build"],
            "extraction stage / psql COPY pipe": full.stages["extraction"] / b["psql COPY pipe (4 tables)"],
            **warm,
            "incremental run / full run": incremental.total_s / full.total_s,
            "pipeline / floor (full: COPY pipe + dbt build --full-refresh + docs)": full.total_s / self.floor("full"),
            "pipeline / floor (incremental: COPY pipe + dbt build + docs)": incremental.total_s
            / self.floor("incremental"),
            f"clear {CLEARED_MODEL}.run with downstream / dbt build --select {CLEARED_MODEL}+": (
                self.retry["seconds"] / b[f"dbt build --select {CLEARED_MODEL}+"]
            ),
            f"clear {CLEARED_MODEL}.run, to its dbt tasks' end / dbt build --select {CLEARED_MODEL}+": (
                self.retry["dbt_tasks_seconds"] / b[f"dbt build --select {CLEARED_MODEL}+"]
            ),
            "pipeline DAG parse / empty DAG parse": self.parse["pipeline_s"] / self.parse["empty_s"],
        }


class PipelineBench:
    """:param pipeline_only: runs 1 and 2 alone (the DBT_RUNNER comparison's child bench)."""

    def __init__(self, scale: str, curve: list[int], root: Path = BENCH_ROOT, pipeline_only: bool = False) -> None:
        self.scale = scale
        self.pipeline_only = pipeline_only
        self.root = root / scale
        dags_folder = self._dags_folder()
        self.curve = [CurveProject.prepare(factor, self.root / "curve", dags_folder) for factor in curve]
        self.stack = LocalStack(
            StackLayout(self.root / "local"), airflow_port=find_free_port(), dags_folder=dags_folder
        )
        self.base_url = f"http://127.0.0.1:{self.stack.ports.airflow}"
        from include.orchestration.transform import SETTINGS

        self.report = BenchReport(scale, settings={k: str(v) for k, v in asdict(SETTINGS).items()})
        self.sampler: StackSampler | None = None
        self.task_ids: dict[str, str] = {}  # task instance id → task id, to name the largest task

    def _dags_folder(self) -> Path:
        """The project's DAG files plus the curve's generated ones."""
        folder = self.root / "dags"
        folder.mkdir(parents=True, exist_ok=True)
        for dag_file in (REPO_ROOT / "dags").glob("*.py"):
            (folder / dag_file.name).unlink(missing_ok=True)
            (folder / dag_file.name).symlink_to(dag_file)
        return folder

    def run(self) -> BenchReport:
        os.environ["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"  # only the runs the bench triggers
        started = time.perf_counter()
        self.stack.up(self.scale, with_airflow=True)
        self.report.shop_generated_s = round(time.perf_counter() - started, 1)
        memory = self.sampler = StackSampler(self._scheduler_pid(), self._component_pids())
        memory.start()
        try:
            wait_for_dag(self.base_url, DAG_ID)
            self.report.runs.append(self._pipeline_run("full"))
            changes = shopgen.apply_changes(
                1, self.stack.source_dsn(), self.stack.layout.charges_db, self.stack.layout.marketing_landing_dir
            )
            say(
                f"one day of changes: {changes.new_orders} new orders, {changes.status_changes} status changes, "
                f"{changes.late_refunds} late refunds"
            )
            incremental = self._pipeline_run("incremental")
            self.report.runs.append(incremental)
            if self.pipeline_only:
                return self.report
            # The first run after the stack starts also pays one-time start-up work of Airflow's
            # processes (the triggerer's in-process Execution API initialises on its first use): a
            # full refresh on the now warm stack is the steady state of a long-running deployment.
            self.report.runs.append(self._pipeline_run("full refresh, warm", conf={"full_refresh": True}))
            self.report.memory = memory.summary()
            self._name_largest_task()
            self.report.retry = self._retry_from_grid(incremental.run_id)
            self._baselines()
            for project in self.curve:
                wait_for_dag(self.base_url, project.dag_id, timeout_s=600)
                self.report.curve.append(self._curve_point(project))
        finally:
            if memory.is_alive():
                memory.stop()
            self.stack.down()
        self.report.parse = _parse_times(REPO_ROOT / "dags" / "ecommerce_elt.py")
        for point, project in zip(self.report.curve, self.curve, strict=True):
            point["parse_added_s"] = round(parse_seconds(project.dag_file, 3) - self.report.parse["empty_s"], 3)
        return self.report

    def _name_largest_task(self) -> None:
        """Task processes are titled with their task instance id; say which task that was."""
        title = str(self.report.memory.get("largest_task", ""))
        for ti_id, task_id in self.task_ids.items():
            if ti_id in title:
                self.report.memory["largest_task"] = task_id
                return

    def _scheduler_pid(self) -> int:
        scheduler = next(p for p in self.stack.airflow_components() if p.name == "airflow-scheduler")
        pid = scheduler.pid()
        assert pid is not None, "the scheduler is not running"
        return pid

    def _component_pids(self) -> dict[str, int]:
        """The components besides the scheduler whose CPU the sampler counts."""
        names = {
            "airflow-triggerer": "triggerer",
            "airflow-dag-processor": "DAG processor",
            "airflow-api-server": "API server",
        }
        pids = {names[p.name]: p.pid() for p in self.stack.airflow_components() if p.name in names}
        postmaster = self.stack.postgres.pid()
        return {name: pid for name, pid in {**pids, "PostgreSQL": postmaster}.items() if pid is not None}

    def _pipeline_run(self, label: str, dag_id: str = DAG_ID, conf: dict | None = None) -> RunTiming:
        say(f"{label}: triggering {dag_id} ...")
        run_id = trigger(self.base_url, dag_id, conf)
        state = wait_for_run(self.base_url, dag_id, run_id, timeout_s=3600)
        if state != "success":
            raise RuntimeError(f"{dag_id} run {run_id} ended {state}: see {self.stack.layout.logs_dir}")
        run = api(self.base_url, "GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        instances = task_instances(self.base_url, dag_id, run_id)
        timing = RunTiming.of(label, run, instances, stage_of if dag_id == DAG_ID else (lambda _: "dbt"))
        timing.run_id = run_id
        if self.sampler is not None:
            timing.peak_task_processes = self.sampler.peak_task_processes(timing.dbt_window)
            names = {ti["id"]: ti["task_id"] for ti in instances}
            timing.peak_tasks = sorted(names.get(ti, ti) for ti in self.sampler.peak_tasks(timing.dbt_window))
            timing.dbt_cpu_s = self.sampler.cpu_seconds(timing.dbt_window)
            timing.triggerer_peak_mib = self.sampler.triggerer_peak_mib(timing.dbt_window)
        self.task_ids.update({ti["id"]: ti["task_id"] for ti in instances})
        say(
            f"{label}: {timing.total_s:.1f}s {timing.stages}, peak task processes in the dbt stage "
            f"{timing.peak_task_processes} {timing.peak_tasks}, CPU seconds in it {timing.dbt_cpu_s}, "
            f"triggerer memory at most {timing.triggerer_peak_mib:.0f} MiB"
        )
        return timing

    def _retry_from_grid(self, run_id: str) -> dict[str, float]:
        """*Clear* on one model's run task with its downstream, timed from the clear to the run's end."""
        rendered = set(self.task_ids.values())  # the model's own group, or its task alone (tests in it)
        task_id = next(t for t in (f"transform.{CLEARED_MODEL}.run", f"transform.{CLEARED_MODEL}_run") if t in rendered)
        started, cleared_at = time.perf_counter(), datetime.now(UTC)
        clear_tasks(self.base_url, DAG_ID, run_id, [task_id])
        state = wait_for_run(self.base_url, DAG_ID, run_id, timeout_s=1800)
        seconds = time.perf_counter() - started
        if state != "success":
            raise RuntimeError(f"the cleared run {run_id} ended {state}: see {self.stack.layout.logs_dir}")
        instances = task_instances(self.base_url, DAG_ID, run_id)
        cleared = [ti for ti in instances if (ti.get("try_number") or 0) > 1]
        # The plain command builds the dbt nodes only; *Clear* with downstream also reruns what follows
        # the dbt stage (docs, the summary): both are reported.
        dbt_done = max(_time(ti["end_date"]) for ti in cleared if stage_of(ti["task_id"]) == "dbt")
        dbt_seconds = (dbt_done - cleared_at).total_seconds()
        say(
            f"clear {task_id} with downstream: {seconds:.1f}s ({dbt_seconds:.1f}s to its dbt tasks' end), "
            f"{len(cleared)} tasks reran"
        )
        run = api(self.base_url, "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")  # restarted by the clear
        timeline = RunTiming.of("clear", run, cleared).timeline  # (JSON only: where the time goes)
        return {
            "cleared_tasks": len(cleared),
            "seconds": round(seconds, 1),
            "dbt_tasks_seconds": round(dbt_seconds, 1),
            "timeline": timeline,
        }

    def _baselines(self) -> None:
        from include.orchestration.dbt_cli import run_dbt

        # the profile mapping reads the Connection the Airflow way; this process is the bench's own
        os.environ["AIRFLOW_CONN_WAREHOUSE_POSTGRES"] = self.stack.settings.connection(
            "warehouse_postgres"
        ).to_env_value()
        plain = (
            ("dbt build --full-refresh", ["build", "--full-refresh"]),
            ("dbt build", ["build"]),
            (f"dbt build --select {CLEARED_MODEL}+", ["build", "--select", f"{CLEARED_MODEL}+"]),
            ("dbt docs generate", ["docs", "generate"]),
        )
        for label, args in plain:
            started, began, children = time.perf_counter(), datetime.now().astimezone(), _children_cpu()
            run_dbt(args)
            self.report.baselines[label] = round(time.perf_counter() - started, 1)
            if self.sampler is not None:  # the same columns as the dbt stage's: dbt here is the bench's child
                cpu = self.sampler.cpu_seconds((began, datetime.now().astimezone()))
                cpu["tasks (incl. dbt)"] = round(_children_cpu() - children, 1)
                self.report.baseline_cpu_s[label] = cpu
            cpu_used = self.report.baseline_cpu_s.get(label)
            say(f"baseline {label}: {self.report.baselines[label]}s, CPU seconds {cpu_used}")
        self.report.baselines["psql COPY pipe (4 tables)"] = round(self._psql_pipe(), 2)
        say(f"baseline psql COPY pipe: {self.report.baselines['psql COPY pipe (4 tables)']}s")

    def _psql_pipe(self) -> float:
        source = self.stack.settings.connection("ecommerce_source")
        warehouse = self.stack.settings.connection("warehouse_postgres")
        host, port = "127.0.0.1", self.stack.ports.postgres
        seconds = 0.0
        for table in TABLES:
            create_like(self.stack.source_dsn(), self.stack.warehouse_dsn(), table, "copy_pipe")
            seconds += psql_copy_pipe(
                host,
                port,
                (source.login, source.password, source.schema),
                (warehouse.login, warehouse.password, warehouse.schema),
                f"public.{table}",
                f"copy_pipe.{table}",
            )
        return seconds

    def _curve_point(self, project: CurveProject) -> dict[str, float]:
        """The dbt stage of a replicated project through the scheduler vs its plain ``dbt build``."""
        from include.orchestration.dbt_cli import run_dbt

        timing = self._pipeline_run(f"x{project.factor}", project.dag_id, {"full_refresh": True})
        started = time.perf_counter()
        run_dbt(["build", "--full-refresh"], project_dir=project.project_dir)
        build_s = time.perf_counter() - started
        say(f"x{project.factor}: {project.models} models, dbt stage {timing.total_s:.1f}s, dbt build {build_s:.1f}s")
        return {
            "factor": project.factor,
            "models": project.models,
            "tasks": timing.tasks,
            "dbt_stage_s": timing.total_s,
            "dbt_build_s": round(build_s, 1),
            "peak_task_processes": timing.peak_task_processes,
            "dbt_cpu_s": timing.dbt_cpu_s,
            "triggerer_peak_mib": timing.triggerer_peak_mib,
        }


@dataclass(frozen=True)
class CurveProject:
    """The dbt project with each model replicated ``factor`` times, and a DbtDag file rendering it."""

    factor: int
    project_dir: Path
    dag_file: Path
    models: int

    @property
    def dag_id(self) -> str:
        return f"bench_models_x{self.factor}"

    @classmethod
    def prepare(cls, factor: int, root: Path, dags_dir: Path) -> CurveProject:
        from dev.replicate_dbt import replicate_project
        from include.orchestration.manifest import build_manifest

        project_dir = replicate_project(factor, root / f"x{factor}")
        manifest = json.loads(build_manifest(project_dir).read_text())
        models = sum(1 for node in manifest["nodes"].values() if node["resource_type"] == "model")
        dag_file = dags_dir / f"bench_models_x{factor}.py"
        dag_file.write_text(CURVE_DAG.format(dag_id=f"bench_models_x{factor}", project_dir=str(project_dir)))
        return cls(factor, project_dir, dag_file, models)


CURVE_DAG = '''"""Benchmark only: the dbt stage of a replicated project (dev/bench.py)."""
from pathlib import Path

import pendulum
from airflow.sdk import Param

from include.orchestration.transform import transform_dag

{dag_id} = transform_dag(
    "{dag_id}", project_dir=Path("{project_dir}"), schedule=None, catchup=False, tags=["bench"],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), default_args={{"owner": "bench", "retries": 0}},
    params={{"warehouse": Param(None, type=["null", "string"]), "full_refresh": Param(False, type="boolean")}},
)
'''


def ensure_runner_venv() -> Path:
    """The DBT_RUNNER comparison's virtualenv, made (or refreshed) by the project's bootstrap."""
    subprocess.run([str(REPO_ROOT / "scripts" / "bootstrap.sh"), "--dbt-runner-venv"], check=True)
    return RUNNER_VENV / "bin" / "python"


def dbt_runner_runs(scale: str, python: Path) -> list[dict]:
    """Runs 1 and 2 on a fresh stack of the runner virtualenv (``python``), dbt in-process in the producer."""
    root = BENCH_ROOT / "dbt_runner"
    shutil.rmtree(root / scale, ignore_errors=True)
    # (not the Connections this process set for its baselines: they name its own, stopped, stack)
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW_CONN_")}
    env["ECOMMERCE_DBT_INVOCATION_MODE"] = "dbt_runner"
    out = root / f"runs_{scale}.json"
    command = [str(python), "-m", "dev.bench", "--scale", scale, "--root", str(root), "--pipeline-only", str(out)]
    say("DBT_RUNNER: runs 1 and 2 on a second stack ...")
    subprocess.run(command, env=env, cwd=REPO_ROOT, check=True)
    return json.loads(out.read_text())


def _parse_times(dag_file: Path, repeat: int = 3) -> dict[str, float]:
    empty_s, pipeline_s = empty_dag_seconds(repeat), parse_seconds(dag_file, repeat)
    say(f"parse: empty {empty_s:.2f}s, {dag_file.name} {pipeline_s:.2f}s")
    return {"empty_s": round(empty_s, 3), "pipeline_s": round(pipeline_s, 3), "added_s": round(pipeline_s - empty_s, 3)}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def table(report: BenchReport) -> str:
    lines = [f"scale {report.scale} (shop + stack up: {report.shop_generated_s}s)"]
    lines += [", ".join(f"{name}={value}" for name, value in report.settings.items()), ""]
    header = f"{'run':<12} {'total':>7} " + " ".join(f"{s:>10}" for s in STAGES) + f" {'tasks':>6} {'peak procs':>10}"
    lines += [header, "-" * len(header)]
    for run in report.runs:
        cells = " ".join(f"{run.stages.get(s, 0.0):>9.1f}s" for s in STAGES)
        lines.append(f"{run.label:<12} {run.total_s:>6.1f}s {cells} {run.tasks:>6} {run.peak_task_processes:>10}")
    for run in report.dbt_runner:
        cells = " ".join(f"{run['stages'].get(s, 0.0):>9.1f}s" for s in STAGES)
        label = f"{run['label']} (runner)"
        lines.append(f"{label:<12} {run['total_s']:>6.1f}s {cells} {run['tasks']:>6} {run['peak_task_processes']:>10}")
    lines += ["", "baselines (same data, same session):"]
    lines += [f"  {name:<28} {seconds:>7.1f}s" for name, seconds in report.baselines.items()]
    lines += ["", "ratios:"]
    lines += [f"  {name:<44} {value:>6.2f}" for name, value in report.ratios().items()]
    lines += [
        "",
        f"parse: empty DAG file {report.parse['empty_s']:.2f}s, pipeline DAG file {report.parse['pipeline_s']:.2f}s "
        f"(adds {report.parse['added_s']:.2f}s)",
    ]
    lines += [
        f"peak memory: scheduler {report.memory['scheduler_peak_mib']} MiB, largest task "
        f"{report.memory['largest_task_peak_mib']} MiB ({report.memory['largest_task']})"
    ]
    lines += ["", "CPU seconds used during the dbt stage, per component:"]
    lines += _cpu_lines(
        [(run.label, run.dbt_cpu_s) for run in report.runs]
        + [(f"plain {label.removeprefix('dbt ')}", cpu) for label, cpu in report.baseline_cpu_s.items()]
    )
    if report.curve:
        lines += _cpu_lines([(f"x{point['factor']}", point["dbt_cpu_s"]) for point in report.curve])
        lines += [
            "",
            f"{'models':>7} {'tasks':>6} {'dbt stage':>10} {'dbt build':>10} {'ratio':>6} {'parse adds':>11}"
            f" {'peak procs':>10} {'triggerer MiB':>13}",
        ]
        for point in report.curve:
            lines.append(
                f"{point['models']:>7} {point['tasks']:>6} {point['dbt_stage_s']:>9.1f}s {point['dbt_build_s']:>9.1f}s "
                f"{point['dbt_stage_s'] / point['dbt_build_s']:>6.2f} {point['parse_added_s']:>10.2f}s"
                f" {point['peak_task_processes']:>10} {point['triggerer_peak_mib']:>13.0f}"
            )
    return "\n".join(lines)


def _cpu_lines(rows: list[tuple[str, dict[str, float]]]) -> list[str]:
    names = list(dict.fromkeys(name for _, cpu in rows for name in cpu))
    lines = [f"  {'run':<26} " + " ".join(f"{name[:16]:>16}" for name in names)]
    for label, cpu in rows:
        lines.append(f"  {label:<26} " + " ".join(f"{cpu.get(name, 0.0):>15.1f}s" for name in names))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", choices=("small", "medium", "large"))
    parser.add_argument("--models-curve", default="", help="replication factors of the dbt models, e.g. 1,4,16")
    parser.add_argument("--dbt-runner", action="store_true", help="also runs 1 and 2 with InvocationMode.DBT_RUNNER")
    parser.add_argument("--pipeline-only", type=Path, help=argparse.SUPPRESS)  # the DBT_RUNNER child: runs JSON
    parser.add_argument("--root", type=Path, default=BENCH_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    curve = [int(f) for f in args.models_curve.split(",") if f]
    shutil.rmtree(args.root / args.scale, ignore_errors=True)  # a fresh stack: the first run is a full load
    if args.pipeline_only:
        report = PipelineBench(args.scale, [], args.root, pipeline_only=True).run()
        args.pipeline_only.write_text(json.dumps([asdict(run) for run in report.runs], default=str))
        return
    runner_python = ensure_runner_venv() if args.dbt_runner else None  # before the long part
    report = PipelineBench(args.scale, curve).run()
    if runner_python is not None:
        try:
            report.dbt_runner = dbt_runner_runs(args.scale, runner_python)
        except subprocess.CalledProcessError as error:  # the main report stands without the comparison
            say(f"DBT_RUNNER comparison failed ({error}); its stack's logs are in {BENCH_ROOT / 'dbt_runner'}")
    print("\n" + table(report))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"pipeline_{args.scale}_{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({**asdict(report), "ratios": report.ratios()}, indent=2, default=str))
    print(f"\nwritten to {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
