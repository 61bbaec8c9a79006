"""The producer's own source-freshness check gives what ``dbt source freshness`` gives, on the same
raw layer with the same declared thresholds, on Postgres and on Snowflake (fakesnow): fresh, past
``warn_after``, past ``error_after``, empty, and missing sources; and what a stale source leaves out
of the build is Cosmos's rule."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from include.orchestration.dbt_cli import DbtCommandFailed, run_dbt
from include.orchestration.freshness import ERROR, PASS, RUNTIME_ERROR, WARN, check, declared_freshness, left_out
from include.orchestration.manifest import require_manifest
from include.warehouses import warehouse
from tests.dbt.conftest import ShopWarehouse, snowflake_connection_env

pytestmark = pytest.mark.slow

SOURCE = "source.ecommerce.raw."
# What each table is made to look like, and the status both checks must then give.
EXPECTED = {
    "customers": PASS,  # as just loaded
    "products": WARN,  # 13 h old: past warn_after (12 h), not error_after (24 h)
    "orders": ERROR,  # 30 h old
    "order_items": ERROR,  # no rows: infinitely old
    "stripe_charges": RUNTIME_ERROR,  # the table is gone
}
POSTGRES_AGEING = [
    "UPDATE raw.products SET _loaded_at = now() - interval '13 hours'",
    "UPDATE raw.orders SET _loaded_at = now() - interval '30 hours'",
    "DELETE FROM raw.order_items",
    "ALTER TABLE raw.stripe_charges RENAME TO stripe_charges_gone",
]
SNOWFLAKE_AGEING = [
    "UPDATE raw.products SET _loaded_at = dateadd('hour', -13, current_timestamp())",
    "UPDATE raw.orders SET _loaded_at = dateadd('hour', -30, current_timestamp())",
    "DELETE FROM raw.order_items",
    "ALTER TABLE raw.stripe_charges RENAME TO raw.stripe_charges_gone",
]


def dbt_freshness(warehouse_name: str, target: Path) -> tuple[dict[str, str], str]:
    """``dbt source freshness``'s status per source in ``sources.json``, and its output (it exits
    non-zero on an error: expected here)."""
    try:
        output = run_dbt(["source", "freshness"], warehouse=warehouse_name, target_path=target)
    except DbtCommandFailed as failed:
        output = str(failed)
    results = json.loads((target / "sources.json").read_text())["results"]
    return {result["unique_id"]: result["status"] for result in results}, output


def ours(warehouse_name: str) -> dict[str, str]:
    manifest = json.loads(require_manifest().read_text())
    results = check(warehouse(warehouse_name).load_writer(), declared_freshness(manifest))
    return {result.source.unique_id: result.status for result in results}


def compare(warehouse_name: str, age: Callable[[], None], env: dict[str, str], target: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        age()
        ours_now, (dbt_now, dbt_output) = ours(warehouse_name), dbt_freshness(warehouse_name, target)
    assert {SOURCE + table: status for table, status in EXPECTED.items()}.items() <= ours_now.items()
    # dbt leaves a query that failed out of sources.json and reports it in its log
    assert re.search(r"ERROR freshness of raw\.stripe_charges", dbt_output), dbt_output[-3000:]
    assert ours_now == {**dbt_now, SOURCE + "stripe_charges": RUNTIME_ERROR}
    assert SOURCE + "marketing_spend_rejects" not in ours_now  # declares `freshness: null`


def test_the_producers_check_gives_what_dbt_source_freshness_gives_on_postgres(
    shop_warehouse: ShopWarehouse, tmp_path: Path
) -> None:
    def age() -> None:
        with psycopg.connect(shop_warehouse.warehouse_dsn) as conn:
            for statement in POSTGRES_AGEING:
                conn.execute(statement)

    compare("postgres", age, shop_warehouse.env, tmp_path)


def test_the_producers_check_gives_what_dbt_source_freshness_gives_on_snowflake(
    shop_warehouse: ShopWarehouse, fakesnow_server: int, tmp_path: Path
) -> None:
    snowflake = snowflake_connection_env(
        f"analytics_{uuid.uuid4().hex[:6]}", host="127.0.0.1", port=fakesnow_server, protocol="http"
    )
    env = {**shop_warehouse.env, **snowflake}
    shop_warehouse.extract_all("snowflake", snowflake)

    def age() -> None:
        connection = warehouse("snowflake").load_writer().connect()
        try:
            for statement in SNOWFLAKE_AGEING:
                connection.cursor().execute(statement)
        finally:
            connection.close()

    compare("snowflake", age, env, tmp_path)


def test_a_stale_source_leaves_out_the_models_that_read_only_stale_sources() -> None:
    manifest = json.loads(require_manifest().read_text())
    types = {uid: node["resource_type"] for uid, node in manifest["nodes"].items()}
    assert left_out(manifest["child_map"], types, [SOURCE + "orders"]) == [
        "model.ecommerce.stg_orders"
    ]  # int_orders_enriched reads clean sources too
    every_order_source = [SOURCE + table for table in ("orders", "order_items", "stripe_charges")]
    out = left_out(manifest["child_map"], types, every_order_source)
    assert {"model.ecommerce.stg_orders", "model.ecommerce.int_orders_enriched", "model.ecommerce.fct_orders"} <= set(
        out
    )
    assert "model.ecommerce.dim_customers" not in out  # it reads the clean customers too
    assert all(uid.startswith("model.") for uid in out)  # tests follow their models in dbt's selection
