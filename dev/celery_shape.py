"""The Celery shape of the local stack: a Redis broker and workers that share no project folder.

On Astro the API server, the scheduler and each worker are separate containers built from one
image: a task can hand nothing to another task (or to the API server) through the local disk.
The Celery shape gives every worker its own copy of ``dags/``, ``include/`` and ``plugins/``
under the stack's root (its "image"), its own working directory, ``PYTHONPATH`` and DAGs folder,
and its own hostname, so a drill fails where the deployment would. Shared between them, as on a
deployment: the metadata database, the broker, the landing location (a bucket's stand-in) and
the task logs folder (remote logging's stand-in).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DBT_QUEUE = "dbt"
DEFAULT_QUEUE = "default"
WORKER_NAME_ENV = "ECOMMERCE_WORKER_NAME"
# what the image copies, plus dev/ for the workers' hostname callable (a container has its own hostname)
PROJECT_FOLDERS = ("dags", "include", "plugins", "dev")
MANIFEST_FILES = ("manifest.json", "manifest.fingerprint")  # target/ in the image holds the built manifest only
SKIPPED = {"__pycache__", "target", "logs", "dbt_packages", ".pytest_cache"}  # build output, not the image


@dataclass(frozen=True)
class WorkerSpec:
    """One ``airflow celery worker``: its name (also its hostname) and the queues it serves."""

    name: str
    queues: tuple[str, ...]
    concurrency: int = 4


DEFAULT_WORKERS = (
    WorkerSpec("worker-dbt", (DBT_QUEUE,)),
    WorkerSpec("worker-default", (DEFAULT_QUEUE,)),
)


def worker_hostname() -> str:
    """``[core] hostname_callable`` of a local worker: its name, as a container's hostname would be,
    so the task instances' ``hostname`` tells the workers apart on one machine."""
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


def copy_project(repo_root: Path, dags_folder: Path, destination: Path) -> Path:
    """A fresh copy of what the image holds, at ``destination`` (replacing an older copy).

    dbt's virtualenv is linked, not copied: it is part of the image, never written by a task.
    """
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for folder in PROJECT_FOLDERS:
        source = dags_folder if folder == "dags" else repo_root / folder
        if source.is_dir():
            shutil.copytree(source, destination / folder, ignore=_ignore_build_output)
    _copy_manifest(repo_root, destination)
    dbt_venv = repo_root / ".venv-dbt"
    if dbt_venv.exists():
        (destination / ".venv-dbt").symlink_to(dbt_venv.resolve(), target_is_directory=True)
    return destination


def build_image(repo_root: Path, dags_folder: Path, destination: Path) -> Path:
    """The "image" every component of the Celery shape runs from: a snapshot of the project with its
    dbt manifest built as the Dockerfile builds it, so edits to the working tree while the stack
    runs reach no component (as a deployment changes only with a new image)."""
    copy_project(repo_root, dags_folder, destination)
    result = subprocess.run(
        [sys.executable, "-m", "include.orchestration.manifest"],  # the Dockerfile's RUN step
        cwd=destination,
        env={**os.environ, "PYTHONPATH": str(destination)},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"building the dbt manifest in {destination} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return destination


def _ignore_build_output(directory: str, names: list[str]) -> set[str]:
    return SKIPPED & set(names)


def _copy_manifest(repo_root: Path, destination: Path) -> None:
    """The dbt manifest the image build made (``RUN python -m include.orchestration.manifest``)."""
    for target in (repo_root / "include" / "dbt").glob("*/target"):
        copied = destination / target.relative_to(repo_root)
        copied.mkdir(parents=True, exist_ok=True)
        for name in MANIFEST_FILES:
            if (target / name).exists():
                shutil.copy2(target / name, copied / name)
