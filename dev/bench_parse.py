"""DAG parse cost: importing the pipeline DAG file into a DagBag vs an empty DAG file.

``python -m dev.bench_parse [--repeat 5]``. Each measurement runs in a fresh process (the
DAG processor parses a file in a fresh process too), after a warm-up that pays for Airflow's own
imports, so the figure is what the file adds. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EMPTY_DAG = """
import pendulum
from airflow.sdk import dag, task

@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["bench"])
def empty():
    @task
    def noop():
        pass
    noop()

empty()
"""
MEASURE = """
import json, sys, time
import airflow.sdk, cosmos  # Airflow's and Cosmos's own imports are paid by the processor once
from airflow.sdk.lineage import get_hook_lineage_collector
get_hook_lineage_collector()  # loads the plugins once, as a running DAG processor has
from airflow.dag_processing.dagbag import DagBag
started = time.perf_counter()
bag = DagBag(sys.argv[1])
elapsed = time.perf_counter() - started
assert not bag.import_errors, bag.import_errors
print(json.dumps({"seconds": elapsed, "dags": len(bag.dags)}))
"""


def parse_seconds(dag_file: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", MEASURE, str(dag_file)],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
            env={"PYTHONPATH": str(REPO_ROOT), **_env()},
        )
        times.append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    return statistics.median(times)


def _env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def empty_dag_seconds(repeat: int) -> float:
    """The baseline: parsing a DAG file with one task and nothing of this project."""
    with tempfile.TemporaryDirectory() as directory:
        empty = Path(directory) / "empty_dag.py"
        empty.write_text(EMPTY_DAG)
        return parse_seconds(empty, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dag-file", type=Path, default=REPO_ROOT / "dags" / "ecommerce_elt.py")
    args = parser.parse_args()
    baseline = empty_dag_seconds(args.repeat)
    pipeline = parse_seconds(args.dag_file, args.repeat)
    print(f"empty DAG file      {baseline:6.3f} s (median of {args.repeat})")
    print(f"{args.dag_file.name:<19} {pipeline:6.3f} s")
    print(f"added by the file   {pipeline - baseline:6.3f} s  ({pipeline / baseline:.1f}x the empty file)")


if __name__ == "__main__":
    main()
