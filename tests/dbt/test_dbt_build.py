"""A plain ``dbt build`` on the raw layer the extraction loaded: every test passes and the marts
equal an independent computation of the contract, row for row, cents exact."""

from __future__ import annotations

import re

import pytest

from include.orchestration.dbt_cli import run_dbt
from tests.dbt.conftest import ShopWarehouse
from tests.dbt.contract_oracle import expected_marts, read_raw_postgres
from tests.dbt.contract_oracle import read_marts_postgres as marts

pytestmark = pytest.mark.slow


def build(shop: ShopWarehouse, *flags: str) -> str:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in shop.env.items():
            patch.setenv(key, value)
        return run_dbt(["build", *flags])


def test_dbt_build_passes_and_marts_equal_the_contract(shop_warehouse: ShopWarehouse) -> None:
    build(shop_warehouse)
    assert marts(shop_warehouse.warehouse_dsn) == expected_marts(read_raw_postgres(shop_warehouse.warehouse_dsn))


def test_incremental_build_after_a_day_of_changes_equals_a_full_refresh(shop_warehouse: ShopWarehouse) -> None:
    """fct_orders and dim_customers merge only what changed; late refunds and status changes included."""
    from dev import shopgen

    build(shop_warehouse)
    changes = shopgen.apply_changes(1, shop_warehouse.source_dsn, shop_warehouse.charges_db, shop_warehouse.landing_dir)
    assert changes.late_refunds and changes.status_changes and changes.new_orders
    shop_warehouse.extract_all()

    output = build(shop_warehouse)
    incremental = marts(shop_warehouse.warehouse_dsn)
    build(shop_warehouse, "--full-refresh")

    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)  # without dbt's colours
    for model in ("fct_orders", "dim_customers"):  # they really merged into the existing tables
        assert re.search(rf"incremental model marts\.{model} \.+ \[MERGE \d+", plain), plain[-3000:]
    assert incremental == marts(shop_warehouse.warehouse_dsn)
    assert incremental == expected_marts(read_raw_postgres(shop_warehouse.warehouse_dsn))
