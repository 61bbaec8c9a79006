"""Airflow local settings (Airflow imports this module from the plugins folder in every process).

Three things, all kept free of project imports because the API server and the scheduler import this
module too, and neither needs the DAGs' code:

- :func:`task_instance_mutation_hook`, Airflow's cluster policy: a dbt node's task that is cleared
  goes to the dbt worker queue and the default pool;
- preloading, described below;
- the triggerer's garbage-collector thresholds (:data:`TRIGGERER_GC_THRESHOLDS`).

Preloads, in the processes that fork task processes, the third-party modules every task of this
project imports. A LocalExecutor scheduler (and a Celery worker) forks one process per task, and
a task process inherits what its parent had imported: with the task runner, Cosmos and the
providers already loaded, a task process skips most of its imports before it parses the DAG file.
The dbt stage runs a task per model and test, so this is a large share of its overhead over a
plain `dbt build` (docs/performance.md has the figures). The DAG processor forks one process per
DAG file it parses, and it parses the pipeline's file again for every batch of task-end callbacks
(each task a trigger ends sends one), so it preloads the same modules.

Only third-party modules: the project's own `include/` code is imported fresh by each task, so
an edit there reaches the next task without restarting the scheduler. Other Airflow commands do
not preload and start as fast as before.
"""

from __future__ import annotations

import gc
import importlib
import logging
import sys
from typing import Any

# Only the policy is Airflow's: every other public name here would become a global of airflow.settings.
__all__ = ["task_instance_mutation_hook"]

CONSUMER_MODULE = "include.orchestration.consumers"  # where the dbt stage's model, test and source tasks live
DBT_QUEUE_OPTION = ("cosmos", "watcher_dbt_execution_queue")  # the producer's queue, read by Cosmos too

# `airflow scheduler`, `airflow celery worker`, `airflow dag-processor` (it forks a parse per file)
TASK_FORKING_COMMANDS = ("scheduler", "worker", "dag-processor")
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

# The triggerer's thresholds for Python's cyclic garbage collector (generation 0, 1, 2). Every dbt
# node task of a run starts in the triggerer at once, and for each one Airflow sends the trigger runner
# the whole serialized DAG and deserializes it there: a burst of millions of long-lived objects. With
# Python's defaults (700, 10, 10) the collector then runs full collections over all of them, again and
# again while the burst lasts; at a few hundred tasks that was most of the triggerer's CPU, on the cores
# dbt runs on (docs/performance.md). Larger thresholds collect young cycles as before and leave the
# full collection for when the heap has really grown. The trigger runner is forked from the
# `airflow triggerer` process, so it inherits them.
TRIGGERER_GC_THRESHOLDS = (50_000, 20, 100)


def task_instance_mutation_hook(task_instance: Any) -> None:
    """A cleared model, test or source task reruns dbt for its node, so it goes where dbt runs.

    Airflow applies this policy when it creates a task instance (``try_number`` 0: the first try,
    which the consumer spends in the triggerer) and again when a task is cleared (``try_number``
    is then the try that ran), so only a try after the first is moved. An automatic retry keeps
    the queue of its first try: Airflow does not re-apply the policy there. Cosmos's own policy does
    the same for its stock consumer classes, which it recognises by their module; this project's
    consumers subclass them in :data:`CONSUMER_MODULE`, which it does not match.

    A cleared try also leaves its node type's pool for the default one: the marts' one-slot pool
    keeps the worker processes beside a running producer few, but a cleared mart runs dbt (a
    cleared build, or its node alone) and would hold that slot for the whole run, so other cleared
    marts that run their own would run one after another.
    """
    if not task_instance.try_number:
        return
    task = getattr(task_instance, "task", None)
    if (getattr(task, "_task_module", None) or type(task).__module__) != CONSUMER_MODULE:
        return
    from airflow.configuration import conf
    from airflow.models.pool import Pool

    task_instance.pool = Pool.DEFAULT_POOL_NAME
    queue = conf.get(*DBT_QUEUE_OPTION, fallback=None)
    if queue:
        task_instance.queue = queue


def _forks_tasks(argv: list[str]) -> bool:
    return any(command in argv[1:3] for command in TASK_FORKING_COMMANDS)


def _is_triggerer(argv: list[str]) -> bool:
    return "triggerer" in argv[1:2]


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
if _is_triggerer(sys.argv):
    gc.set_threshold(*TRIGGERER_GC_THRESHOLDS)
