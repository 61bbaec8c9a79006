"""The warehouse watchdog: a dbt command whose warehouse stops answering is stopped within the
Connection's ``unreachable_after``, with a cause naming the Connection and the fix; one whose
warehouse answers is left alone however long it runs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from dev.airflow_settings import ConnectionSpec
from dev.embedded_postgres import EmbeddedPostgres
from dev.fault_proxy import FaultProxy
from include.orchestration.dbt_cli import DbtCommandFailed, run_dbt
from include.orchestration.watchdog import WarehouseWatchdog, WatchSchedule


class _Warehouse:
    """Stands in for a warehouse writer: only the probe the watchdog calls, answering as told."""

    conn_id = "warehouse_stand_in"

    def __init__(self) -> None:
        self.answers = True
        self.probes = 0

    def probe(self, within_s: int) -> None:
        self.probes += 1
        if not self.answers:
            raise ConnectionError(f"no answer within {within_s} s")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dbt_like_process() -> Iterator[subprocess.Popen]:
    """A long-running process in a session of its own, as Cosmos and run_dbt start dbt."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


SCHEDULE = WatchSchedule(unreachable_after_s=60, interval_s=10, probe_within_s=5)


def watchdog(
    warehouse: _Warehouse, process: Callable[[], subprocess.Popen | None], clock: _Clock
) -> tuple[WarehouseWatchdog, list[str]]:
    """The watchdog, and the causes its ``on_stop`` received."""
    causes: list[str] = []
    return WarehouseWatchdog(warehouse, process, SCHEDULE, on_stop=causes.append, clock=clock), causes  # type: ignore[arg-type]


def test_a_process_whose_warehouse_fails_every_probe_past_the_limit_is_stopped_with_the_cause(
    dbt_like_process: subprocess.Popen,
) -> None:
    warehouse, clock = _Warehouse(), _Clock()
    dog, causes = watchdog(warehouse, lambda: dbt_like_process, clock)
    warehouse.answers = False
    for _ in range(6):  # failing for 0 .. 50 s: under the limit
        assert dog.look() is False
        clock.now += 10
    assert dbt_like_process.poll() is None and dog.cause is None
    assert dog.look() is True  # 60 s of failed probes
    assert dbt_like_process.wait(timeout=20) == -15  # SIGTERM to its group
    assert dog.cause is not None and causes == [dog.cause]
    for words in ("'warehouse_stand_in'", "60 s", "no answer within 5 s", "unreachable_after", "clear the failed"):
        assert words in dog.cause


def test_a_warehouse_that_answers_again_restarts_the_count(dbt_like_process: subprocess.Popen) -> None:
    warehouse, clock = _Warehouse(), _Clock()
    dog, _ = watchdog(warehouse, lambda: dbt_like_process, clock)
    warehouse.answers = False
    for _ in range(5):
        assert dog.look() is False
        clock.now += 10
    warehouse.answers = True
    assert dog.look() is False  # answered at 50 s: the count starts again
    warehouse.answers = False
    for _ in range(6):
        clock.now += 10
        assert dog.look() is False  # failing for 0 .. 50 s again
    assert dbt_like_process.poll() is None


def test_nothing_is_probed_while_no_dbt_process_runs(dbt_like_process: subprocess.Popen) -> None:
    warehouse, clock = _Warehouse(), _Clock()
    warehouse.answers = False
    running: list[subprocess.Popen] = []
    dog, _ = watchdog(warehouse, lambda: running[0] if running else None, clock)
    assert dog.look() is False and warehouse.probes == 0  # before dbt starts
    running.append(dbt_like_process)
    assert dog.look() is False and warehouse.probes == 1
    dbt_like_process.kill()
    dbt_like_process.wait()
    clock.now += 3600
    assert dog.look() is False and warehouse.probes == 1  # after it ended, however long


UNREACHABLE_AFTER_S = 6
BOUND_S = 90  # dbt's start-up and parse, the limit, a probe and SIGTERM, on a loaded machine


@pytest.fixture
def proxied_warehouse(
    postgres_server: EmbeddedPostgres,
    warehouse_postgres: Callable[[str, str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[FaultProxy]:
    """``warehouse_postgres`` reached through a :class:`FaultProxy` that stalls at the statement
    carrying ``watchdog_marker``, with a short ``unreachable_after`` in the Connection's extras."""
    password = "watchdog-Pw-7"
    dsn = warehouse_postgres("watchdog", password)
    proxy = FaultProxy(postgres_server.host, postgres_server.port, stall_on=b"watchdog_marker").start()
    spec = ConnectionSpec(
        "warehouse_postgres",
        "postgres",
        "127.0.0.1",
        proxy.port,
        conninfo_to_dict(dsn)["dbname"],
        "warehouse",
        password,
        {"unreachable_after": UNREACHABLE_AFTER_S},
    )
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_POSTGRES", spec.to_env_value())
    yield proxy
    proxy.close()


def test_dbt_on_a_postgres_that_stops_answering_mid_statement_is_stopped_naming_the_connection(
    proxied_warehouse: FaultProxy, tmp_path: Path
) -> None:
    """The statement reaches the proxy and no answer ever comes back (a paused server, a partition):
    dbt itself would wait until its task's execution_timeout; run_dbt would raise TimeoutExpired."""
    started = time.monotonic()
    with pytest.raises(DbtCommandFailed) as failure:
        run_dbt(
            ["show", "--inline", "select 'watchdog_marker' as marker"],
            target_path=tmp_path / "target",
            timeout=BOUND_S * 3,
        )
    elapsed = time.monotonic() - started
    assert proxied_warehouse.stalled.is_set()  # dbt's statement was the one held
    message = str(failure.value)
    assert "was stopped: Warehouse Connection 'warehouse_postgres' failed every probe" in message
    assert "connections.warehouse_postgres in policies.yml" in message
    assert UNREACHABLE_AFTER_S <= elapsed < BOUND_S


def test_dbt_on_a_postgres_that_answers_is_not_stopped(proxied_warehouse: FaultProxy, tmp_path: Path) -> None:
    """A statement that takes longer than ``unreachable_after`` on a warehouse that answers probes."""
    output = run_dbt(
        ["show", "--inline", f"select 'still here' as marker from pg_sleep({UNREACHABLE_AFTER_S * 2})"],
        target_path=tmp_path / "target",
        timeout=BOUND_S * 3,
    )
    assert "still here" in output
    assert not proxied_warehouse.stalled.is_set()


def test_the_schedule_comes_from_policies_and_the_connections_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ConnectionSpec("warehouse_postgres", "postgres", "127.0.0.1", 5432, "wh", "warehouse", "pw")
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_POSTGRES", spec.to_env_value())
    assert WatchSchedule.for_connection("warehouse_postgres") == WatchSchedule(180, 30, 30)  # policies.yml default
    spec.extra["unreachable_after"] = 12
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_POSTGRES", spec.to_env_value())
    assert WatchSchedule.for_connection("warehouse_postgres") == WatchSchedule(12, 2, 2)  # the extras win
