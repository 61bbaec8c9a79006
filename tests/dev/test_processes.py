"""The local stack's process bookkeeping: a pid file names the process that was started, and only it."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from dev.processes import ManagedProcess


def managed(tmp_path: Path, *argv: str) -> ManagedProcess:
    return ManagedProcess("probe", argv, tmp_path / "run", tmp_path / "log")


def test_a_process_that_rewrites_its_command_line_is_still_ours(tmp_path: Path) -> None:
    # `exec -a` starts sleep under another argv[0], as redis-server retitles itself while it starts
    process = managed(tmp_path, "bash", "-c", "exec -a renamed-while-starting sleep 60")
    pid = process.start()
    try:
        assert process.pid() == pid
        assert process.start() == pid  # starting twice is harmless
    finally:
        process.stop()
    assert process.pid() is None


def test_a_pid_file_naming_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    process = managed(tmp_path, "sleep", "60")
    process.run_dir.mkdir(parents=True)
    started = psutil.Process(os.getpid()).create_time()
    process.pid_file.write_text(f"{os.getpid()} {started - 3600!r}")  # this pid, another process's start
    assert process.pid() is None
    assert not process.pid_file.exists()
