"""Airflow local settings (Airflow imports this module from the plugins folder in every process).

Preloads, in the processes that fork task processes, the third-party modules every task of this
project imports. A LocalExecutor scheduler (and a Celery worker) forks one process per task, and
a task process inherits what its parent had imported: with the task runner, Cosmos and the
providers already loaded, a task process skips most of its imports before it parses the DAG file.
The dbt stage runs a task per model and test, so this is a large share of its overhead over a
plain `dbt build` (docs/performance.md has the figures).

Only third-party modules: the project's own `include/` code is imported fresh by each task, so
an edit there reaches the next task without restarting the scheduler. Other Airflow commands do
not preload and start as fast as before.
"""

from __future__ import annotations

import importlib
import logging
import sys

TASK_FORKING_COMMANDS = ("scheduler", "worker")  # `airflow scheduler`, `airflow celery worker`
PRELOADED_MODULES = (
    "airflow.sdk.execution_time.task_runner",
    "cosmos",
    "cosmos.operators.watcher",
    "cosmos.profiles",
    "airflow.providers.slack.notifications.slack_webhook",
    "airflow.providers.postgres.hooks.postgres",
    "airflow.providers.http.hooks.http",
    "psycopg",
    "yaml",
)


def _forks_tasks(argv: list[str]) -> bool:
    return any(command in argv[1:3] for command in TASK_FORKING_COMMANDS)


def preload(modules: tuple[str, ...] = PRELOADED_MODULES) -> list[str]:
    """Import ``modules``; one that fails to import is logged and skipped, never fatal."""
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as error:
            logging.getLogger(__name__).warning("airflow_local_settings: not preloading %s (%s)", name, error)
    return loaded


if _forks_tasks(sys.argv):
    preload()
