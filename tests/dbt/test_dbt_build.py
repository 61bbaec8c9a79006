"""A plain ``dbt build`` on the raw layer the extraction loaded: every test passes and the marts
equal an independent computation of the contract, row for row, cents exact."""

from __future__ import annotations

import psycopg
import pytest

from include.orchestration.dbt_cli import run_dbt
from tests.dbt.conftest import ShopWarehouse
from tests.dbt.contract_oracle import MART_COLUMNS, MART_KEYS, expected_marts, read_raw_postgres

pytestmark = pytest.mark.slow


def marts(dsn: str) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        return {
            mart: conn.execute(f"SELECT {', '.join(columns)} FROM marts.{mart} ORDER BY {', '.join(MART_KEYS[mart])}").fetchall()
            for mart, columns in MART_COLUMNS.items()
        }


def build(shop: ShopWarehouse, *flags: str) -> str:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in shop.env.items():
            patch.setenv(key, value)
        return run_dbt(["build", *flags])


def test_dbt_build_passes_and_marts_equal_the_contract(shop_warehouse: ShopWarehouse) -> None:
    build(shop_warehouse)
    assert marts(shop_warehouse.warehouse_dsn) == expected_marts(read_raw_postgres(shop_warehouse.warehouse_dsn))
