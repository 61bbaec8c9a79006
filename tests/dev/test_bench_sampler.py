"""The benchmark's sampler: its count of task processes (real child processes titled as Airflow's
LocalExecutor titles its busy workers and task runners, the prefix from Airflow itself, counted once
per task instance, idle workers not at all) and its CPU seconds per component."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from airflow.executors.local_executor import _get_executor_process_title_prefix

from dev.bench import StackSampler

_TITLED_CHILD = (
    "import setproctitle, sys; setproctitle.setproctitle(sys.argv[1]); print('ready', flush=True); sys.stdin.read()"
)
# Burns the CPU seconds it is given (process time, not wall time), then says so and waits.
_BUSY_CHILD = (
    "import setproctitle, sys, time; setproctitle.setproctitle(sys.argv[1]); sys.stdin.readline()\n"
    "while time.process_time() < float(sys.argv[2]): pass\n"
    "print('done', flush=True); sys.stdin.read()"
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
    sampler = StackSampler(os.getpid(), {})
    before = datetime.now().astimezone()
    assert sampler.sample()
    window = (before, datetime.now().astimezone() + timedelta(seconds=1))
    assert sampler.peak_task_processes(window) == 2
    assert sampler.peak_tasks(window) == {titled_children[1].rsplit(" ", 1)[1], titled_children[2].rsplit(" ", 1)[1]}
    assert sampler.peak_task_processes((before - timedelta(hours=2), before - timedelta(hours=1))) == 0


def _busy(title: str, cpu_s: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _BUSY_CHILD, title, str(cpu_s)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


def test_cpu_is_counted_per_component_and_a_task_s_cpu_not_as_the_scheduler_s() -> None:
    """A component and a task process under the "scheduler" (this process) each burn a known amount
    of CPU between two samples: each lands in its bucket. (The component, a child here too, also
    counts under the tasks; in the stack it is not under the scheduler.)"""
    task = _busy(f"airflow worker -- {uuid.uuid4()}", 0.6)
    component = _busy("airflow triggerer", 0.4)
    children = (task, component)
    try:
        sampler = StackSampler(os.getpid(), {"triggerer": component.pid})
        assert sampler.sample()
        start = datetime.now().astimezone()  # the window opens after the first sample
        for child in children:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(b"go\n")
            child.stdin.flush()
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == b"done"
        assert sampler.sample()
        used = sampler.cpu_seconds((start, datetime.now().astimezone()))
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert used["triggerer"] >= 0.35
    assert used["tasks (incl. dbt)"] >= 0.55
    assert used["scheduler"] < 0.3  # this test process only samples
    assert used["capacity (wall × cores)"] > 0
