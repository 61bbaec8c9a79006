"""Postgres source → Postgres warehouse, against the embedded PostgreSQL 16 (no mocks).

Connections are set the Airflow way (``AIRFLOW_CONN_*`` holding JSON) with real login roles and
passwords, so the hooks, the auth and the "no secrets in logs" check are all real.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from dev.airflow_settings import ConnectionSpec
from dev.embedded_postgres import EmbeddedPostgres
from include.ingestion.pipeline import extract
from include.ingestion.postgres_connection import SessionLimitExceeded, named_limits

SOURCE_PASSWORD = "src-Pa55word-4f9d1c"
WAREHOUSE_PASSWORD = "wh-Pa55word-8e2b7a"

SCHEMA = """
CREATE TABLE customers (customer_id bigint PRIMARY KEY, email text NOT NULL, first_name text, last_name text,
    country_code char(2), created_at timestamptz, updated_at timestamptz);
CREATE TABLE orders (order_id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers,
    status text NOT NULL, channel text NOT NULL, currency char(3) NOT NULL DEFAULT 'USD',
    ordered_at timestamptz NOT NULL, created_at timestamptz, updated_at timestamptz);
INSERT INTO customers
SELECT i, 'c' || i || '@example.com', CASE WHEN i % 7 = 0 THEN NULL ELSE 'Fïrst "' || i || '"' END,
       'Last,' || i, CASE WHEN i % 2 = 0 THEN 'DE' ELSE 'US' END,
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 minute',
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 minute'
FROM generate_series(1, 2000) AS i;
INSERT INTO orders
SELECT i, 1 + i % 2000, 'placed', (ARRAY['organic','paid_search','social','email','affiliate'])[1 + i % 5], 'USD',
       timestamptz '2025-01-02 00:00:00+00' + i * interval '10 seconds',
       timestamptz '2025-01-02 00:00:00+00' + i * interval '10 seconds',
       timestamptz '2025-01-02 00:00:00+00' + i * interval '10 seconds'
FROM generate_series(1, 20000) AS i;
"""

# One synthetic day: a few orders ship, a customer moves, new orders arrive; updated_at moves forward.
ONE_DAY_OF_CHANGES = """
UPDATE orders SET status = 'shipped', updated_at = timestamptz '2025-01-05 00:00:00+00' WHERE order_id % 1000 = 0;
UPDATE customers SET country_code = 'FR', updated_at = timestamptz '2025-01-05 00:00:01+00' WHERE customer_id = 42;
INSERT INTO orders
SELECT i, 1 + i % 2000, 'placed', 'email', 'USD', timestamptz '2025-01-05 01:00:00+00',
       timestamptz '2025-01-05 01:00:00+00', timestamptz '2025-01-05 01:00:00+00'
FROM generate_series(20001, 20050) AS i;
"""


@dataclass(frozen=True)
class Shop:
    source_dsn: str
    warehouse_dsn: str


@pytest.fixture
def shop(postgres_server: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    """A source database owned by ``shop`` and a warehouse owned by ``warehouse``, as Airflow Connections."""
    suffix = uuid.uuid4().hex[:8]
    dsns = {}
    for conn_id, role, password, database in (
        ("ecommerce_source", "shop", SOURCE_PASSWORD, f"ing_src_{suffix}"),
        ("warehouse_postgres", "warehouse", WAREHOUSE_PASSWORD, f"ing_wh_{suffix}"),
    ):
        postgres_server.ensure_role(role, password)
        postgres_server.ensure_database(database, owner=role)
        spec = ConnectionSpec(conn_id, "postgres", postgres_server.host, postgres_server.port, database, role, password)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", spec.to_env_value())
        dsns[conn_id] = postgres_server.dsn(database, role, password)
    with psycopg.connect(dsns["ecommerce_source"]) as conn:
        conn.execute(SCHEMA)
    yield Shop(dsns["ecommerce_source"], dsns["warehouse_postgres"])


def rows(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def assert_raw_equals_source(shop: Shop, table: str, key: str) -> None:
    source = rows(shop.source_dsn, f"SELECT * FROM public.{table} ORDER BY {key}")
    columns = [
        c[0]
        for c in rows(
            shop.source_dsn,
            f"SELECT attname FROM pg_attribute WHERE attrelid = 'public.{table}'::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        )
    ]
    raw = rows(shop.warehouse_dsn, f"SELECT {', '.join(columns)} FROM raw.{table} ORDER BY {key}")
    assert raw == source


def load_columns(shop: Shop, table: str, key: str) -> list[tuple]:
    return rows(shop.warehouse_dsn, f"SELECT {key}, _loaded_at, _batch_id FROM raw.{table} ORDER BY {key}")


def test_full_then_incremental_equals_source_and_moves_only_changed_rows(shop: Shop) -> None:
    full = extract("orders", batch_id="b1")
    assert (full.mode, full.rows_read, full.rows_merged) == ("full", 20000, 20000)
    assert full.high_water == "2025-01-04T07:33:20+00:00"
    assert_raw_equals_source(shop, "orders", "order_id")

    with psycopg.connect(shop.source_dsn) as conn:
        conn.execute(ONE_DAY_OF_CHANGES)
    incremental = extract("orders", batch_id="b2")

    assert incremental.mode == "incremental"
    assert incremental.previous_high_water == full.high_water
    assert incremental.rows_merged == 20 + 50  # 20 shipped, 50 new
    assert incremental.high_water == "2025-01-05T01:00:00+00:00"
    assert_raw_equals_source(shop, "orders", "order_id")
    batches = dict(rows(shop.warehouse_dsn, "SELECT _batch_id, count(*) FROM raw.orders GROUP BY 1"))
    assert batches == {"b1": 20000 - 20, "b2": 70}


def test_rerun_changes_nothing_not_even_load_columns(shop: Shop) -> None:
    extract("customers", batch_id="first")
    before = load_columns(shop, "customers", "customer_id")

    again = extract("customers", batch_id="second")
    full_again = extract("customers", batch_id="third", full_refresh=True)

    assert (again.rows_merged, full_again.rows_merged) == (0, 0)
    assert full_again.rows_read == 2000
    assert load_columns(shop, "customers", "customer_id") == before
    state = rows(shop.warehouse_dsn, "SELECT source, high_water, _batch_id FROM raw._ingestion_state")
    assert state == [("customers", "2025-01-02T09:20:00+00:00", "first")]


def test_overlap_window_picks_up_rows_committed_late(shop: Shop) -> None:
    extract("orders", batch_id="b1")
    # A transaction that stamped updated_at before the mark but committed after the load ran.
    with psycopg.connect(shop.source_dsn) as conn:
        conn.execute(
            "UPDATE orders SET status = 'cancelled', updated_at = timestamptz '2025-01-04 07:30:00+00'"
            " WHERE order_id = 7"
        )
    late = extract("orders", batch_id="b2")
    assert late.rows_merged == 1
    assert rows(shop.warehouse_dsn, "SELECT status FROM raw.orders WHERE order_id = 7") == [("cancelled",)]


def test_column_added_in_source_appears_in_raw(shop: Shop) -> None:
    extract("customers", batch_id="b1")
    with psycopg.connect(shop.source_dsn) as conn:
        conn.execute("ALTER TABLE customers ADD COLUMN loyalty_tier text")
        conn.execute(
            "UPDATE customers SET loyalty_tier = 'gold', updated_at = timestamptz '2025-02-01 00:00:00+00'"
            " WHERE customer_id <= 3"
        )
    report = extract("customers", batch_id="b2")
    assert report.rows_merged == 3
    assert_raw_equals_source(shop, "customers", "customer_id")
    # The new column was committed on its own before the data: the batch still labels the rows.
    batches = {key: batch for key, _, batch in load_columns(shop, "customers", "customer_id")}
    assert {key for key, batch in batches.items() if batch == "b2"} == {1, 2, 3}
    assert set(batches.values()) == {"b1", "b2"}


def test_source_outage_mid_load_leaves_raw_unchanged_and_the_retry_succeeds(shop: Shop) -> None:
    extract("orders", batch_id="b1")
    with psycopg.connect(shop.source_dsn) as conn:
        conn.execute(ONE_DAY_OF_CHANGES)
    raw_before = rows(shop.warehouse_dsn, "SELECT * FROM raw.orders ORDER BY order_id")
    state_before = rows(shop.warehouse_dsn, "SELECT * FROM raw._ingestion_state")
    _arm_outage(shop.source_dsn, after_order_id=20040)

    with pytest.raises(psycopg.OperationalError):  # a full read: staging has taken rows when it breaks
        extract("orders", batch_id="b2-try1", full_refresh=True)

    assert rows(shop.warehouse_dsn, "SELECT * FROM raw.orders ORDER BY order_id") == raw_before
    assert rows(shop.warehouse_dsn, "SELECT * FROM raw._ingestion_state") == state_before
    with psycopg.connect(shop.source_dsn) as conn:
        conn.execute("TRUNCATE outage_switch")
    retry = extract("orders", batch_id="b2-try2", full_refresh=True)
    assert retry.rows_merged == 70
    assert_raw_equals_source(shop, "orders", "order_id")


def _arm_outage(source_dsn: str, after_order_id: int) -> None:
    """Make the source server drop the extraction's connection in the middle of its COPY.

    A row-level-security policy evaluates a function per row; at ``after_order_id`` it terminates
    its own backend, which the client sees exactly like a crashed or restarted source database.
    """
    with psycopg.connect(source_dsn) as conn:
        conn.execute(
            f"""
            CREATE TABLE outage_switch (armed boolean);
            INSERT INTO outage_switch VALUES (true);
            CREATE FUNCTION outage_at(id bigint) RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN
                IF id = {after_order_id} AND EXISTS (SELECT 1 FROM outage_switch) THEN
                    PERFORM pg_terminate_backend(pg_backend_pid());
                END IF;
                RETURN true;
            END $$;
            ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
            ALTER TABLE orders FORCE ROW LEVEL SECURITY;
            CREATE POLICY outage ON orders USING (outage_at(order_id));
            """
        )


def test_connection_passwords_never_reach_the_logs(
    shop: Shop,
    postgres_server: EmbeddedPostgres,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    extract("customers", batch_id="b1")
    wrong = "wrong-Pa55word-0c3e"
    spec = ConnectionSpec(
        "warehouse_postgres", "postgres", postgres_server.host, postgres_server.port, "postgres", "warehouse", wrong
    )
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_POSTGRES", spec.to_env_value())
    with pytest.raises(psycopg.OperationalError, match="password authentication failed") as failure:
        extract("customers", batch_id="b2")

    captured = capfd.readouterr()
    text = caplog.text + captured.out + captured.err + str(failure.value)
    assert "raw.customers" in text  # the successful load was logged at all
    for secret in (SOURCE_PASSWORD, WAREHOUSE_PASSWORD, wrong):
        assert secret not in text


def with_extras(monkeypatch: pytest.MonkeyPatch, conn_id: str, **extras: object) -> None:
    """The Connection's environment JSON with ``extras`` added: the operator's per-Connection override."""
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    body = json.loads(os.environ[variable])
    body["extra"] = json.dumps({**json.loads(body.get("extra") or "{}"), **extras})
    monkeypatch.setenv(variable, json.dumps(body))


def test_sessions_carry_the_policies_timeouts_and_keepalives(shop: Shop) -> None:
    from include.ingestion.postgres_connection import connect
    from include.orchestration.policies import connection_limits

    for conn_id in ("ecommerce_source", "warehouse_postgres"):
        limits = connection_limits(conn_id)
        with connect(conn_id) as conn:
            settings = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout', 'lock_timeout')"
                ).fetchall()
            )
            parameters = conn.info.get_parameters()
        assert settings == {
            "statement_timeout": str(limits.statement_timeout * 1000),
            "lock_timeout": str(limits.lock_timeout * 1000),
        }, conn_id
        assert parameters["connect_timeout"] == str(limits.connect_timeout), conn_id
        assert parameters["keepalives_idle"] == str(limits.keepalives_idle), conn_id


def test_a_warehouse_lock_fails_the_merge_within_lock_timeout_and_the_retry_is_exact(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another session holds raw.orders, so the merge queues on its lock: the load fails within the
    Connection's ``lock_timeout`` (an extras override of policies.yml), the failure alert reaches
    Slack, raw is as it was, and the retry after the lock is released is exact."""
    from dev.slack_receiver import SlackReceiver
    from include.orchestration.alerts import AlertKind, PipelineAlert

    extract("orders", batch_id="b1")
    with psycopg.connect(shop.source_dsn) as conn:
        conn.execute(ONE_DAY_OF_CHANGES)
    raw_before = rows(shop.warehouse_dsn, "SELECT * FROM raw.orders ORDER BY order_id")
    state_before = rows(shop.warehouse_dsn, "SELECT * FROM raw._ingestion_state")
    with_extras(monkeypatch, "warehouse_postgres", lock_timeout=1)
    holder = psycopg.connect(shop.warehouse_dsn)
    holder.execute("LOCK TABLE raw.orders IN SHARE MODE")  # readers pass, the merge's writes queue
    started = time.monotonic()
    with pytest.raises(
        SessionLimitExceeded, match=r"Connection 'warehouse_postgres'.*lock_timeout \(1 s\).*rolled back.*raise"
    ) as failure:
        extract("orders", batch_id="b2-try1")
    assert time.monotonic() - started < 30

    receiver = SlackReceiver(token="T0TEST/B0TEST/lock-drill")
    url = receiver.serve_in_thread()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_SLACK_ALERTS",
            json.dumps({"conn_type": "slackwebhook", "host": url, "password": "T0TEST/B0TEST/lock-drill"}),
        )
        ti = SimpleNamespace(
            dag_id="ecommerce_elt",
            task_id="extract_orders",
            try_number=1,
            max_tries=2,
            run_id="manual__lock",
            start_date=None,
            log_url=None,
        )
        PipelineAlert(AlertKind.FAILURE).notify({"ti": ti, "exception": failure.value})
        [message] = receiver.messages
    finally:
        receiver.shutdown()
    assert isinstance(failure.value.__cause__, psycopg.errors.LockNotAvailable)
    assert "SessionLimitExceeded: Connection 'warehouse_postgres'" in json.dumps(message["payload"])

    assert rows(shop.warehouse_dsn, "SELECT * FROM raw.orders ORDER BY order_id") == raw_before
    assert rows(shop.warehouse_dsn, "SELECT * FROM raw._ingestion_state") == state_before
    holder.close()
    retry = extract("orders", batch_id="b2-try2")
    assert retry.rows_merged == 70
    assert_raw_equals_source(shop, "orders", "order_id")


def orders_sources(tmp_path: Path, overlap_seconds: int) -> Path:
    """A sources.yml with only ``orders``, re-reading ``overlap_seconds`` behind its mark."""
    path = tmp_path / "sources.yml"
    path.write_text(
        "sources:\n  - {name: orders, kind: postgres, conn_id: ecommerce_source, table: orders, "
        f"primary_key: [order_id], cursor: updated_at, mode: incremental, overlap_seconds: {overlap_seconds}}}\n"
    )
    return path


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def pipeline_warnings() -> Iterator[list[str]]:
    """The warnings the pipeline logs (to the task log), however the process's logging is set up."""
    handler, logger = _Lines(), logging.getLogger("include.ingestion.pipeline")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def test_a_future_dated_row_is_loaded_and_named_but_later_changes_still_arrive(
    shop: Shop, pipeline_warnings: list[str]
) -> None:
    extract("orders", batch_id="b1")
    with psycopg.connect(shop.source_dsn) as conn:
        conn.execute("UPDATE orders SET status = 'future', updated_at = '2099-01-01' WHERE order_id = 1")
        source_now = conn.execute("SELECT now()").fetchone()[0]
    dated = extract("orders", batch_id="b2")

    assert dated.future_rows == 1
    assert datetime.fromisoformat(dated.high_water) <= source_now + timedelta(minutes=5)
    [warning] = [line for line in pipeline_warnings if "after the source's clock" in line]
    assert all(part in warning for part in ("'orders'", "1 row(s)", "public.orders", "2099-01-01", "e.g. 1"))
    with psycopg.connect(shop.source_dsn) as conn:
        conn.execute("UPDATE orders SET status = 'shipped', updated_at = now() WHERE order_id = 2")
    extract("orders", batch_id="b3")
    assert_raw_equals_source(shop, "orders", "order_id")


def test_a_transaction_open_during_the_load_is_read_by_the_next_one(shop: Shop, tmp_path: Path) -> None:
    """It stamped ``now()`` (its start) before a change that committed first; with no overlap, only a
    mark held at its start finds it once it commits."""
    config = orders_sources(tmp_path, overlap_seconds=0)
    extract("orders", batch_id="b1", config_path=config)
    late = psycopg.connect(shop.source_dsn)
    late.execute("UPDATE orders SET status = 'cancelled', updated_at = now() WHERE order_id = 5")
    late_started = late.execute("SELECT now()").fetchone()[0]
    with psycopg.connect(shop.source_dsn) as conn:
        conn.execute("UPDATE orders SET status = 'shipped', updated_at = now() WHERE order_id = 6")

    during = extract("orders", batch_id="b2", config_path=config)
    late.commit()
    late.close()
    after = extract("orders", batch_id="b3", config_path=config)

    assert datetime.fromisoformat(during.high_water) <= late_started
    assert after.rows_merged >= 1
    assert_raw_equals_source(shop, "orders", "order_id")


def test_rows_with_a_null_cursor_reach_raw_and_are_named(shop: Shop, pipeline_warnings: list[str]) -> None:
    extract("orders", batch_id="b1")
    with psycopg.connect(shop.source_dsn) as conn:
        conn.execute("UPDATE orders SET status = 'shipped', updated_at = NULL WHERE order_id = 3")
        conn.execute("INSERT INTO orders VALUES (30001, 1, 'placed', 'email', 'USD', '2025-01-06', NULL, NULL)")
    nulls = extract("orders", batch_id="b2")
    again = extract("orders", batch_id="b3")

    assert (nulls.mode, nulls.rows_merged, again.rows_merged) == ("incremental", 2, 0)
    assert any("2 row(s) of public.orders have a NULL updated_at" in line for line in pipeline_warnings)
    assert_raw_equals_source(shop, "orders", "order_id")


@pytest.mark.parametrize("emptying", ["TRUNCATE raw.orders", "DROP TABLE raw.orders"])
def test_a_raw_table_emptied_behind_its_mark_is_loaded_in_full(
    shop: Shop, pipeline_warnings: list[str], emptying: str
) -> None:
    first = extract("orders", batch_id="b1")
    with psycopg.connect(shop.source_dsn) as conn:
        conn.execute(ONE_DAY_OF_CHANGES)
    with psycopg.connect(shop.warehouse_dsn) as conn:
        conn.execute(emptying)
    reload = extract("orders", batch_id="b2")

    assert (reload.mode, reload.previous_high_water, reload.rows_read) == ("full", first.high_water, 20050)
    assert any("raw.orders is empty" in line and "full_refresh" in line for line in pipeline_warnings)
    assert_raw_equals_source(shop, "orders", "order_id")


def test_a_mark_already_past_the_source_clock_is_repaired_by_a_full_load(
    shop: Shop, pipeline_warnings: list[str]
) -> None:
    """A mark an older loader took from a future-dated row: the rows changed since it was written are
    below it, so only a full read finds them."""
    extract("orders", batch_id="b1")
    with psycopg.connect(shop.warehouse_dsn) as conn:
        conn.execute("UPDATE raw._ingestion_state SET high_water = '2099-01-01T00:00:00+00:00' WHERE source = 'orders'")
    with psycopg.connect(shop.source_dsn) as conn:
        conn.execute(ONE_DAY_OF_CHANGES)

    repaired = extract("orders", batch_id="b2")

    assert (repaired.mode, repaired.high_water) == ("full", "2025-01-05T01:00:00+00:00")
    assert any("after the source's clock" in line and "in full" in line for line in pipeline_warnings)
    assert_raw_equals_source(shop, "orders", "order_id")


def test_a_statement_over_its_timeout_fails_naming_the_connection_and_the_limit(shop: Shop) -> None:
    """statement_timeout, like lock_timeout, ends in an error that names the Connection and the fix."""
    with psycopg.connect(shop.warehouse_dsn) as conn:
        conn.execute("SET statement_timeout = '50ms'")
        timed_out = pytest.raises(
            SessionLimitExceeded, match=r"'warehouse_postgres'.*statement_timeout \(\d+ s\) running"
        )
        with timed_out, named_limits("warehouse_postgres"):
            conn.execute("SELECT pg_sleep(2)")
        conn.rollback()
        conn.execute("SET statement_timeout = 0")
        conn.execute("CREATE TABLE lock_probe (x int)")
        conn.commit()
        conn.execute("LOCK TABLE lock_probe IN ACCESS EXCLUSIVE MODE")  # held until this transaction ends
        not_a_limit = pytest.raises(psycopg.errors.LockNotAvailable, match="could not obtain lock")
        with psycopg.connect(shop.warehouse_dsn) as other, not_a_limit, named_limits("warehouse_postgres"):
            other.execute("LOCK TABLE lock_probe NOWAIT")  # NOWAIT is not a limit: psycopg's own error stays
