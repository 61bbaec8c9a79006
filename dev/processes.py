"""Background processes of the local stack: start once, find again after a restart, stop cleanly.

Each process has a pid file and a log file under ``.local/``. A pid file only counts while the
process it names is alive *and* is the one that was started (pids get reused: the file keeps the
process's start time beside its pid), so starting twice is harmless and a crashed process is simply
started again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    argv: tuple[str, ...]
    run_dir: Path
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict, compare=False)
    cwd: Path | None = field(default=None, compare=False)  # a Celery worker runs in its own project copy

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The running process's pid, or None (stale pid files are removed)."""
        try:
            pid, started = _parse_pid_file(self.pid_file.read_text())
            process = psutil.Process(pid)
            alive = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
            # The start time, not the command line: a process that rewrites its title (redis does,
            # while it starts) shows an empty or different command line for a moment.
            if alive and abs(process.create_time() - started) < 0.01:
                return pid
        except (FileNotFoundError, ValueError, psutil.Error):
            pass
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self) -> int:
        """Start unless already running; returns the pid."""
        running = self.pid()
        if running is not None:
            return running
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,  # survives the starting shell; stopped as a group
            )
        try:
            started = psutil.Process(process.pid).create_time()
        except psutil.NoSuchProcess:  # exited at once: pid() says so, and the caller shows the log
            started = 0.0
        self.pid_file.write_text(f"{process.pid} {started!r}")
        return process.pid

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout_s``."""
        pid = self.pid()
        if pid is None:
            return
        group = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        _signal_group(pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(group, timeout=timeout_s)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.pid_file.unlink(missing_ok=True)

    def fail_with_log(self, problem: str) -> RuntimeError:
        tail = self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""
        return RuntimeError(f"{self.name}: {problem}. Last lines of {self.log_file}:\n{tail}")


def _parse_pid_file(text: str) -> tuple[int, float]:
    """``"<pid> <start time>"``, as :meth:`ManagedProcess.start` writes it."""
    pid, started = text.split()
    return int(pid), float(started)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgid(pid), sig)


def wait_for_http(url: str, process: ManagedProcess, timeout_s: float = 60) -> None:
    """Poll ``url`` until it answers 2xx; fail early if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.pid() is None:
            raise process.fail_with_log("exited while starting")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if 200 <= response.status < 300:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise process.fail_with_log(f"did not answer {url} within {timeout_s:.0f}s")
