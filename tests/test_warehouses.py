"""The one warehouse registry: each entry's Connection is the contract's, and its writer and dbt
profile mapping are built on that Connection (no module keeps a conn id of its own)."""

from __future__ import annotations

import pytest

from include.orchestration.profiles import RunWarehouseProfileMapping, warehouse_profile_mapping
from include.warehouses import WAREHOUSES, UnknownWarehouse, warehouse


def test_the_connections_are_the_contracts() -> None:
    assert {name: spec.conn_id for name, spec in WAREHOUSES.items()} == {
        "postgres": "warehouse_postgres",
        "snowflake": "warehouse_snowflake",
    }


@pytest.mark.parametrize("name", sorted(WAREHOUSES))
def test_the_writer_and_the_dbt_profile_use_the_entrys_connection(name: str) -> None:
    spec = warehouse(name)
    writer = spec.load_writer()
    assert (writer.name, writer.conn_id) == (name, spec.conn_id)
    mapping = warehouse_profile_mapping(name)
    assert (mapping.dbt_profile_type, mapping.conn_id) == (name, spec.conn_id)
    assert mapping.profile_args == {"schema": "marts", "threads": 4}


def test_the_run_chosen_mapping_names_every_connection() -> None:
    assert all(spec.conn_id in RunWarehouseProfileMapping().conn_id for spec in WAREHOUSES.values())


def test_an_unknown_warehouse_is_refused_naming_where_it_came_from_and_the_choices() -> None:
    with pytest.raises(
        UnknownWarehouse,
        match=r"Variable ecommerce_warehouse='bigquery' is not a known warehouse: use one of postgres, snowflake",
    ):
        warehouse("bigquery", "Variable ecommerce_warehouse")
