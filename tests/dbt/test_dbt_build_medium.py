"""The dbt suite on the ``medium`` shop (100k orders, ~300k items, ~95k charges, 365 spend files):
every test passes and the marts equal the contract's oracle, row for row, cents exact."""

from __future__ import annotations

import pytest

from include.orchestration.dbt_cli import run_dbt
from tests.dbt.conftest import ShopWarehouse
from tests.dbt.contract_oracle import expected_marts, read_marts_postgres, read_raw_postgres

pytestmark = pytest.mark.slow
SHOP_SCALE = "medium"


def test_dbt_build_on_medium_passes_and_marts_equal_the_contract(shop_warehouse: ShopWarehouse) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in shop_warehouse.env.items():
            patch.setenv(key, value)
        run_dbt(["build"])
    marts = read_marts_postgres(shop_warehouse.warehouse_dsn)
    assert len(marts["fct_orders"]) == 100_000
    assert marts == expected_marts(read_raw_postgres(shop_warehouse.warehouse_dsn))
