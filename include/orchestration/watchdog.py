"""A dbt command whose warehouse stops answering ends within minutes, not at its task's timeout.

dbt's own connections have no bound that covers every way a warehouse can stop answering:
dbt-snowflake 1.11 passes its connector no network timeout (``SnowflakeConnectionManager.open``
calls ``snowflake.connector.connect`` with a fixed set of arguments), so a statement whose requests
keep failing after a good login is retried for as long as dbt lives; a paused or partitioned
Postgres server enforces no ``statement_timeout``, and TCP keepalives do not fire while something
on the path still acknowledges. While a dbt command runs, :class:`WarehouseWatchdog` probes the same
warehouse through the same Airflow Connection on a connection of its own, every wait of the probe
bounded; once every probe has failed for the Connection's ``unreachable_after`` (policies.yml
``connections:``, or the Connection's extras), it stops dbt and says why. The task then fails with
that cause in its log and its alert, and a retry starts over: dbt sends each model as statements
that commit whole or not at all, so a stopped build leaves nothing half-written.

A warehouse that answers the probe is left alone, however long dbt's statements take: a slow
build is the ``execution_timeout``'s business, not this.

Every dbt command the project runs on a worker is watched: Cosmos's producer and the node tasks'
own runs (their ``pre_execute``, :func:`watch_dbt_task`), and
:func:`include.orchestration.dbt_cli.run_dbt` (docs generation). In-process dbt
(``InvocationMode.DBT_RUNNER``) has no process of its own to stop, so nothing is probed there.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from include.ingestion.warehouse.base import Warehouse
from include.orchestration.alerts import record_failure_cause, scrub
from include.orchestration.policies import airflow_connection_limits

logger = logging.getLogger(__name__)

# A probe per this share of ``unreachable_after``, so several probes fail before dbt is stopped.
_PROBES_PER_WINDOW = 6
_MAX_INTERVAL_S = 30.0
_MIN_PROBE_S = 2  # libpq counts connect_timeout in whole seconds, at least 2
_TERM_GRACE_S = 10.0  # between SIGTERM and SIGKILL


@dataclass(frozen=True)
class WatchSchedule:
    """When the watchdog probes and when it gives up.

    :param unreachable_after_s: how long every probe may fail before dbt is stopped.
    :param interval_s: between the starts of two probes.
    :param probe_within_s: the cap on each wait of one probe (log in, the query).
    """

    unreachable_after_s: float
    interval_s: float
    probe_within_s: int

    @classmethod
    def for_connection(cls, conn_id: str) -> WatchSchedule:
        after = airflow_connection_limits(conn_id).unreachable_after
        interval = min(_MAX_INTERVAL_S, max(1.0, after / _PROBES_PER_WINDOW))
        return cls(float(after), interval, max(_MIN_PROBE_S, round(interval)))


class WarehouseWatchdog:
    """Stops the dbt process ``process()`` returns once its warehouse has failed every probe for
    ``schedule.unreachable_after_s``; :attr:`cause` then says why, naming the Connection and the fix.

    ``process`` is read at every look, so one watchdog serves a task that starts dbt after it (Cosmos
    creates the process inside ``execute``); no process, or one that has ended, is not probed.
    ``on_stop`` receives the cause just before dbt is stopped.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        process: Callable[[], subprocess.Popen[Any] | None],
        schedule: WatchSchedule,
        on_stop: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.warehouse = warehouse
        self.schedule = schedule
        self.cause: str | None = None
        self._process = process
        self._on_stop = on_stop
        self._clock = clock
        self._failing_since: float | None = None
        self._done = threading.Event()

    def start(self) -> WarehouseWatchdog:
        name = f"warehouse-watchdog-{self.warehouse.conn_id}"
        threading.Thread(target=self._watch, name=name, daemon=True).start()
        return self

    def close(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(self.schedule.interval_s):
            if self.look():
                return

    def look(self) -> bool:
        """One probe while dbt runs; True once dbt has been stopped."""
        process = self._process()
        if process is None or process.poll() is not None:
            self._failing_since = None  # nothing running: nothing to hold against the warehouse
            return False
        started = self._clock()
        error = self._probe()
        if error is None:
            if self._failing_since is not None:
                logger.info("Warehouse Connection '%s' answers again.", self.warehouse.conn_id)
            self._failing_since = None
            return False
        if self._failing_since is None:
            self._failing_since = started
        failing_for = self._clock() - self._failing_since
        if failing_for < self.schedule.unreachable_after_s:
            logger.warning(
                "Warehouse Connection '%s' did not answer a probe (%s); dbt is stopped if it still does not "
                "after %.0f s (for %.0f s now).",
                self.warehouse.conn_id,
                error,
                self.schedule.unreachable_after_s,
                failing_for,
            )
            return False
        if process.poll() is not None:  # dbt ended by itself meanwhile: its own error stands
            self._failing_since = None
            return False
        self.cause = self._describe(failing_for, error)
        logger.error("%s", self.cause)
        if self._on_stop is not None:  # before the stop: the task's failure handling starts with dbt's exit
            self._on_stop(self.cause)
        stop_process_group(process)
        return True

    def _probe(self) -> str | None:
        """None when the warehouse answered, else the error in one line. The probe runs on a thread
        of its own, so a driver that ignores its timeouts cannot hold the watchdog either."""
        outcome: list[str | None] = []

        def probe() -> None:
            try:
                self.warehouse.probe(self.schedule.probe_within_s)
                outcome.append(None)
            except Exception as error:
                outcome.append(f"{type(error).__name__}: {' '.join(str(error).split())[:300]}")

        thread = threading.Thread(target=probe, name="warehouse-probe", daemon=True)
        thread.start()
        thread.join(self.schedule.probe_within_s * 3 + 5)
        if not outcome:
            return f"no answer within {self.schedule.probe_within_s * 3 + 5} s"
        return outcome[0]

    def _describe(self, failing_for: float, error: str) -> str:
        conn_id = self.warehouse.conn_id
        return scrub(
            f"Warehouse Connection '{conn_id}' failed every probe for {failing_for:.0f} s while dbt was running, so "
            f"dbt was stopped instead of waiting until the task's execution_timeout. Check that the warehouse is up "
            f"and reachable through '{conn_id}', then clear the failed tasks (each reruns its own model); if it was "
            f"only slow to answer, raise `unreachable_after` under connections.{conn_id} in policies.yml or in the "
            f"Connection's extras. Each statement dbt sent committed whole or not at all. Last probe: {error}"
        )


def stop_process_group(process: subprocess.Popen[Any], grace_s: float = _TERM_GRACE_S) -> None:
    """SIGTERM to the process's group (dbt and what it started; both Cosmos and :func:`run_dbt` start
    dbt in a session of its own), SIGKILL if it is still there after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(os.getpgid(process.pid), sig)
        except ProcessLookupError:
            return
        try:
            process.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def watch_warehouse(
    warehouse: Warehouse,
    process: Callable[[], subprocess.Popen[Any] | None],
    on_stop: Callable[[str], None] | None = None,
) -> WarehouseWatchdog:
    """A started watchdog over ``process`` on ``warehouse``, on its Connection's schedule."""
    schedule = WatchSchedule.for_connection(warehouse.conn_id)
    return WarehouseWatchdog(warehouse, process, schedule, on_stop).start()


def watch_dbt_task(context: Any) -> WarehouseWatchdog | None:
    """For a Cosmos dbt task's ``pre_execute``: watches the dbt process it is about to start (its
    ``subprocess_hook``) on the run's warehouse; a stop's cause heads the task's failure alert."""
    from include.warehouses import current_warehouse, warehouse

    hook = getattr(context["task"], "subprocess_hook", None)
    if hook is None:
        return None
    return watch_warehouse(
        warehouse(current_warehouse()).load_writer(),
        lambda: hook.sub_process,
        lambda cause: record_failure_cause(context, cause),
    )
