"""The dbt stage as Cosmos renders it, run for real by Airflow (``airflow dags test``) on the
embedded warehouse: every model and test task succeeds and the marts equal an independent
computation of the contract; a failing staging test stops that model's descendants and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.dbt.conftest import ShopWarehouse, subprocess_env
from tests.dbt.contract_oracle import MART_COLUMNS, MART_KEYS, expected_marts, read_raw_postgres

AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAG_ID = "dbt_transform"
# stg_orders feeds these, directly or not; nothing else depends on it
STG_ORDERS_DESCENDANTS = ("int_orders_enriched", "fct_orders", "dim_customers", "fct_daily_revenue",
                          "fct_marketing_performance")  # fmt: skip
UNRELATED_MODELS = ("stg_customers", "stg_products", "stg_order_items", "stg_stripe_charges", "stg_marketing_spend",
                    "int_order_items_rolled_up", "int_payments_per_order")  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory, shop_warehouse: ShopWarehouse) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    subprocess.run([AIRFLOW, "db", "migrate"], env=subprocess_env(shop_warehouse, home), check=True,
                   capture_output=True)  # fmt: skip
    return home


def run_dag(shop: ShopWarehouse, home: Path, logical_date: str, conf: dict) -> dict[str, str]:
    """``airflow dags test`` one run; the state of every task, by task id."""
    env = subprocess_env(shop, home)
    result = subprocess.run([AIRFLOW, "dags", "test", DAG_ID, logical_date, "-c", json.dumps(conf)],
                            env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    (home / f"dags-test-{logical_date}.log").write_text(result.stdout + result.stderr)  # for post-mortems
    run_id = next(line.split("run_id=")[1].split()[0] for line in (result.stdout + result.stderr).splitlines()
                  if "run_id=" in line)  # fmt: skip
    states = subprocess.run([AIRFLOW, "tasks", "states-for-dag-run", DAG_ID, run_id, "-o", "json"],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert states.returncode == 0, f"{states.stderr[-2000:]}\ndags test said:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    parsed = {row["task_id"]: row["state"] for row in json.loads(states.stdout[states.stdout.index("["):])}
    assert parsed, f"no task states; dags test said:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return parsed


def marts(dsn: str) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        return {
            mart: conn.execute(f"SELECT {', '.join(columns)} FROM marts.{mart} ORDER BY {', '.join(MART_KEYS[mart])}").fetchall()
            for mart, columns in MART_COLUMNS.items()
        }


def test_every_task_succeeds_and_the_marts_equal_the_contract(shop_warehouse: ShopWarehouse, airflow_home: Path) -> None:
    states = run_dag(shop_warehouse, airflow_home, "2026-11-20", {"warehouse": "postgres"})

    assert set(states.values()) == {"success"}, {task: state for task, state in states.items() if state != "success"}
    assert {f"transform.{model}.run" for model in STG_ORDERS_DESCENDANTS} <= set(states) or \
           {f"{model}.run" for model in STG_ORDERS_DESCENDANTS} <= set(states)  # fmt: skip
    assert marts(shop_warehouse.warehouse_dsn) == expected_marts(read_raw_postgres(shop_warehouse.warehouse_dsn))


@pytest.fixture
def broken_order_status(shop_warehouse: ShopWarehouse) -> Iterator[None]:
    """One raw order with a status the contract does not know: stg_orders' accepted_values test fails."""
    with psycopg.connect(shop_warehouse.warehouse_dsn) as conn:
        (status,) = conn.execute("SELECT status FROM raw.orders WHERE order_id = 1").fetchone()
        conn.execute("UPDATE raw.orders SET status = 'teleported' WHERE order_id = 1")
    yield
    with psycopg.connect(shop_warehouse.warehouse_dsn) as conn:
        conn.execute("UPDATE raw.orders SET status = %s WHERE order_id = 1", (status,))


def test_a_failing_staging_test_stops_only_its_descendants(
    shop_warehouse: ShopWarehouse, airflow_home: Path, broken_order_status: None
) -> None:
    states = run_dag(shop_warehouse, airflow_home, "2026-11-21", {"warehouse": "postgres"})

    assert states["stg_orders.test"] == "failed"
    for model in STG_ORDERS_DESCENDANTS:
        assert states[f"{model}.run"] == "upstream_failed", model
    for model in UNRELATED_MODELS:
        assert states[f"{model}.run"] == "success", model
