"""dev/bench_triggerer.py replays the triggerer's per-task DAG work for every task of the DAG."""

from __future__ import annotations

import json
from pathlib import Path

from dev import bench_triggerer


def test_the_replay_covers_every_task_under_the_triggerers_thresholds(tmp_path: Path) -> None:
    thresholds = bench_triggerer.gc_thresholds()
    dag_json = bench_triggerer.serialized_dag(1, tmp_path)
    tasks = json.loads(dag_json.read_text())["dag"]["tasks"]
    assert len(tasks) > 40  # every model, test and source task of the project, not a stub

    result = bench_triggerer.measure(dag_json, thresholds)

    assert result["tasks"] == len(tasks)
    assert result["supervisor_s"] > 0 and result["runner_s"] > 0
