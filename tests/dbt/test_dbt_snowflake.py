"""The same dbt project on the Snowflake target: raw extracted into a local ``fakesnow -s`` server
through the ``warehouse_snowflake`` Connection, ``dbt build`` through the Cosmos Snowflake profile
mapping (host, port, ``protocol: http``), and marts equal to the Postgres marts of the same data."""

from __future__ import annotations

import http.server
import re
import threading
import time
import uuid
from pathlib import Path

import pytest

from dev.fault_proxy import FaultProxy
from include.orchestration.dbt_cli import DbtCommandFailed, run_dbt
from include.orchestration.profiles import SNOWFLAKE_RETRIES, warehouse_profile_mapping
from tests.dbt.conftest import ShopWarehouse, snowflake_connection_env
from tests.dbt.contract_oracle import (
    MART_COLUMNS,
    comparable_marts,
    expected_marts,
    read_marts_postgres,
    read_marts_snowflake,
    read_raw_postgres,
)

pytestmark = pytest.mark.slow


def test_snowflake_build_on_fakesnow_equals_the_postgres_marts(
    shop_warehouse: ShopWarehouse, fakesnow_server: int
) -> None:
    snowflake = snowflake_connection_env(
        f"analytics_{uuid.uuid4().hex[:6]}", host="127.0.0.1", port=fakesnow_server, protocol="http"
    )  # a database of its own on the fakesnow server
    loaded = shop_warehouse.extract_all("snowflake", snowflake)
    assert loaded["orders"] > 0
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**shop_warehouse.env, **snowflake}.items():
            patch.setenv(key, value)
        run_dbt(["build"], warehouse="snowflake")
        snowflake_marts = read_marts_snowflake()
        run_dbt(["build"], warehouse="postgres")

    postgres_marts = read_marts_postgres(shop_warehouse.warehouse_dsn)
    assert postgres_marts == expected_marts(read_raw_postgres(shop_warehouse.warehouse_dsn))
    assert all(snowflake_marts[mart] for mart in MART_COLUMNS)
    for mart, rows in comparable_marts(postgres_marts).items():
        differing = [(ours, theirs) for ours, theirs in zip(snowflake_marts[mart], rows, strict=True) if ours != theirs]
        assert not differing, f"{mart}: {len(differing)} rows differ, first: {differing[0]}"


BUILD_TIMEOUT_S = 900  # a hung build (a statement the connector retries for ever) fails the test instead


def test_second_snowflake_build_merges_a_day_of_changes_like_postgres(
    shop_warehouse: ShopWarehouse, fakesnow_server: int
) -> None:
    """The run after the first day: the incremental models exist, so dbt merges into them (the
    path that put two DuckDB databases in one transaction); the marts still equal Postgres's."""
    from dev import shopgen

    snowflake = snowflake_connection_env(
        f"analytics_{uuid.uuid4().hex[:6]}", host="127.0.0.1", port=fakesnow_server, protocol="http"
    )
    shop_warehouse.extract_all("snowflake", snowflake)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**shop_warehouse.env, **snowflake}.items():
            patch.setenv(key, value)
        run_dbt(["build"], warehouse="snowflake", timeout=BUILD_TIMEOUT_S)
        changes = shopgen.apply_changes(
            1, shop_warehouse.source_dsn, shop_warehouse.charges_db, shop_warehouse.landing_dir
        )
        assert changes.late_refunds and changes.status_changes and changes.new_orders
        shop_warehouse.extract_all("snowflake", snowflake)
        shop_warehouse.extract_all("postgres")
        output = run_dbt(["build"], warehouse="snowflake", timeout=BUILD_TIMEOUT_S)
        snowflake_marts = read_marts_snowflake()
        run_dbt(["build"], warehouse="postgres")

    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    for model in ("intermediate.int_orders_enriched", "marts.fct_orders", "marts.dim_customers"):
        assert re.search(rf"incremental model {re.escape(model)} \.+ \[SUCCESS", plain), plain[-3000:]
    postgres_marts = read_marts_postgres(shop_warehouse.warehouse_dsn)
    assert postgres_marts == expected_marts(read_raw_postgres(shop_warehouse.warehouse_dsn))
    for mart, rows in comparable_marts(postgres_marts).items():
        assert len(snowflake_marts[mart]) == len(rows), mart
        differing = [(ours, theirs) for ours, theirs in zip(snowflake_marts[mart], rows, strict=True) if ours != theirs]
        assert not differing, f"{mart}: {len(differing)} rows differ, first: {differing[0]}"


class _FailingSnowflake(http.server.BaseHTTPRequestHandler):
    """A Snowflake endpoint that accepts every request and answers HTTP 500."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test asserts on dbt's output."""


FAILURE_BOUND_S = 120  # what "fails within minutes" allows a dbt invocation here


@pytest.mark.parametrize("endpoint", ["answers_http_500", "refuses_connections"])
def test_dbt_against_a_failing_snowflake_ends_within_a_bound_with_an_error(endpoint: str, tmp_path: Path) -> None:
    """The profile's bounded connection retries: dbt gives up with an error naming the connection
    failure, instead of retrying while the task's slot is held."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailingSnowflake)
    port = server.server_address[1]
    if endpoint == "answers_http_500":
        threading.Thread(target=server.serve_forever, daemon=True).start()
    else:
        server.server_close()  # the port is now closed
    snowflake = snowflake_connection_env("analytics_failing", host="127.0.0.1", port=port, protocol="http")
    started = time.monotonic()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in snowflake.items():
                patch.setenv(key, value)
            assert warehouse_profile_mapping("snowflake").profile.items() >= SNOWFLAKE_RETRIES.items()
            with pytest.raises(DbtCommandFailed, match=r"Could not connect to Snowflake backend"):
                run_dbt(
                    ["build", "-s", "stg_orders"],
                    warehouse="snowflake",
                    target_path=tmp_path / "target",
                    timeout=FAILURE_BOUND_S * 3,
                )
    finally:
        if endpoint == "answers_http_500":
            server.shutdown()
            server.server_close()
    assert time.monotonic() - started < FAILURE_BOUND_S


def test_dbt_on_a_snowflake_that_stops_answering_after_login_is_stopped_naming_the_connection(
    fakesnow_server: int, tmp_path: Path
) -> None:
    """A good login, then no answer to any statement: dbt-snowflake 1.11 gives its connector no network
    timeout, so the connector retries the statement for as long as dbt lives (here until run_dbt's
    timeout). The watchdog probes the same Connection, and stops dbt within ``unreachable_after``."""
    proxy = FaultProxy("127.0.0.1", fakesnow_server, stall_on=b"/queries/v1/query-request").start()
    snowflake = snowflake_connection_env(
        "analytics_stalled", host="127.0.0.1", port=proxy.port, protocol="http", unreachable_after=6
    )
    started = time.monotonic()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in snowflake.items():
                patch.setenv(key, value)
            with pytest.raises(DbtCommandFailed) as failure:
                run_dbt(
                    ["build", "-s", "stg_orders"],
                    warehouse="snowflake",
                    target_path=tmp_path / "target",
                    timeout=FAILURE_BOUND_S * 3,
                )
            assert proxy.stalled.is_set()  # a statement after the login was the one held
    finally:
        proxy.close()
    message = str(failure.value)
    assert "was stopped: Warehouse Connection 'warehouse_snowflake' failed every probe" in message, message[-2000:]
    assert "connections.warehouse_snowflake in policies.yml" in message
    assert time.monotonic() - started < FAILURE_BOUND_S
