"""The benchmark's count of task processes: real child processes titled as Airflow's LocalExecutor
titles its busy workers and task runners (the prefix comes from Airflow itself), counted once per
task instance, idle workers not at all."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from airflow.executors.local_executor import _get_executor_process_title_prefix

from dev.bench import PeakMemory

_TITLED_CHILD = (
    "import setproctitle, sys; setproctitle.setproctitle(sys.argv[1]); print('ready', flush=True); sys.stdin.read()"
)


@pytest.fixture
def titled_children() -> Iterator[list[str]]:
    """Processes under this one, each titled, alive until the test ends."""
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    prefix = _get_executor_process_title_prefix(None)
    titles = [
        f"{prefix} {first}",  # the executor's worker supervising the first task
        f"airflow worker -- {first}",  # that task's runner
        f"{prefix} {second}",  # a second task, still starting
        f"{prefix} <idle>",
    ]
    children = [
        subprocess.Popen([sys.executable, "-c", _TITLED_CHILD, title], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for title in titles
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        yield titles
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_running_tasks_are_counted_once_each_and_idle_workers_not_at_all(titled_children: list[str]) -> None:
    sampler = PeakMemory(os.getpid())
    before = datetime.now().astimezone()
    assert sampler.sample()
    window = (before, datetime.now().astimezone() + timedelta(seconds=1))
    assert sampler.peak_task_processes(window) == 2
    assert sampler.peak_task_processes((before - timedelta(hours=2), before - timedelta(hours=1))) == 0
