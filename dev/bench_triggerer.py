"""The triggerer's work when a run's node tasks start from their triggers, under two GC settings.

For every task started from its trigger, Airflow 3.3.2's triggerer deserializes the whole serialized
DAG in its supervisor (``TriggerRunnerSupervisor._create_workload``, to read the task's
``start_from_trigger``), sends the DAG's JSON with the workload to its trigger runner (all of a
loop's new workloads in one message), and deserializes it again there (``create_runtime_ti``). This
replays that work in one process for each task of the project replicated ``--factor`` times (as
``make bench``'s model-count curve renders it), once with Python's default garbage-collector
thresholds and once with the triggerer's (``TRIGGERER_GC_THRESHOLDS`` in
``plugins/airflow_local_settings.py``), each in a fresh process, and prints the ratio. Not a test.

    python -m dev.bench_triggerer --factor 16
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_SETTINGS = REPO_ROOT / "plugins" / "airflow_local_settings.py"
# As the image and the local stack render the DAG (Cosmos's telemetry adds a param to every task).
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")

# Runs in a fresh process: argv = serialized DAG file, thresholds as JSON (null: Python's defaults).
MEASURE = """
import collections, gc, json, sys, time
thresholds = json.loads(sys.argv[2])
if thresholds:
    gc.set_threshold(*thresholds)
from airflow.serialization.serialized_objects import DagSerialization
raw = open(sys.argv[1]).read()
row = json.loads(raw)
task_ids = [task["__var"]["task_id"] for task in row["dag"]["tasks"]]
collected = [0.0]
started_at = [0.0]
def on_gc(phase, info):
    if phase == "start":
        started_at[0] = time.perf_counter()
    else:
        collected[0] += time.perf_counter() - started_at[0]
gc.collect()
gc.callbacks.append(on_gc)
started = time.perf_counter()
for task_id in task_ids:  # the supervisor: one deserialization per workload it builds
    DagSerialization.from_dict(row).get_task(task_id)
supervisor = time.perf_counter() - started
started = time.perf_counter()
message = collections.deque(json.loads(raw) for _ in task_ids)  # the runner: one decoded copy per workload
while message:
    data = message.popleft()
    DagSerialization.from_dict(data).get_task(task_ids[len(task_ids) - len(message) - 1])
    del data
runner = time.perf_counter() - started
print(json.dumps({"tasks": len(task_ids), "bytes": len(raw), "supervisor_s": supervisor, "runner_s": runner,
                  "gc_s": collected[0]}))
"""


def gc_thresholds() -> tuple[int, int, int]:
    """The triggerer's thresholds, read from the plugins folder's settings as Airflow loads them."""
    spec = importlib.util.spec_from_file_location("project_local_settings", LOCAL_SETTINGS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.TRIGGERER_GC_THRESHOLDS)


def serialized_dag(factor: int, root: Path) -> Path:
    """The JSON of the DAG ``make bench``'s model-count curve runs for the project replicated
    ``factor`` times (its own DAG file, loaded as the DAG processor loads it)."""
    import runpy

    from airflow.serialization.serialized_objects import DagSerialization

    from dev.bench import CurveProject

    project = CurveProject.prepare(factor, root, root)
    dag = runpy.run_path(str(project.dag_file))[project.dag_id]
    path = root / f"x{factor}.json"
    path.write_text(json.dumps(DagSerialization.to_dict(dag)))
    return path


def measure(dag_json: Path, thresholds: tuple[int, int, int] | None) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(dag_json), json.dumps(thresholds)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=16, help="replication factor of the dbt models")
    args = parser.parse_args()
    tuned = gc_thresholds()
    with tempfile.TemporaryDirectory() as directory:
        dag_json = serialized_dag(args.factor, Path(directory))
        results = {"Python's defaults": measure(dag_json, None), f"triggerer's {tuned}": measure(dag_json, tuned)}
    first = next(iter(results.values()))
    print(f"x{args.factor}: {first['tasks']} tasks, serialized DAG {first['bytes'] / 1e6:.2f} MB")
    print(f"{'GC thresholds':<32} {'supervisor':>10} {'runner':>8} {'total':>8} {'of it GC':>9}")
    for name, result in results.items():
        supervisor, runner, collected = result["supervisor_s"], result["runner_s"], result["gc_s"]
        print(f"{name:<32} {supervisor:>9.1f}s {runner:>7.1f}s {supervisor + runner:>7.1f}s {collected:>8.1f}s")
    default, triggerer = (r["supervisor_s"] + r["runner_s"] for r in results.values())
    print(f"default / triggerer's thresholds: {default / triggerer:.2f}")


if __name__ == "__main__":
    main()
