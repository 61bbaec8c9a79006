"""The same dbt project on the Snowflake target: raw extracted into a local ``fakesnow -s`` server
through the ``warehouse_snowflake`` Connection, ``dbt build`` through the Cosmos Snowflake profile
mapping (host, port, ``protocol: http``), and marts equal to the Postgres marts of the same data."""

from __future__ import annotations

import uuid

import pytest

from include.orchestration.dbt_cli import run_dbt
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
    snowflake = snowflake_connection_env(f"analytics_{uuid.uuid4().hex[:6]}", host="127.0.0.1", port=fakesnow_server,
                                         protocol="http")  # a database of its own on the fakesnow server
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

