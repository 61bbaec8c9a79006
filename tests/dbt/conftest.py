"""A warehouse whose `raw` layer was loaded by the real extraction from the synthetic shop.

The dbt tests start from what production has: ``dev.shopgen`` fills a source database and
the Stripe stub's charge store, ``include.ingestion`` extracts all six sources into `raw` through
Airflow Connections (``AIRFLOW_CONN_*``), and dbt builds on top of that.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from dev import shopgen
from dev.airflow_settings import ConnectionSpec
from dev.embedded_postgres import EmbeddedPostgres
from dev.stripe_stub import StripeStub
from include.ingestion.config import load_source_config
from include.ingestion.pipeline import extract
from include.orchestration.policies import POLICIES_FILE

PASSWORDS = {"shop": "dbt-test-shop-Pw-1", "warehouse": "dbt-test-wh-Pw-2", "snowflake": "sf-Pa55word-51d0e3"}
STRIPE_KEY = "sk_test_dbt_suite_8d2f"


@dataclass
class ShopWarehouse:
    source_dsn: str
    warehouse_dsn: str
    charges_db: Path
    landing_dir: Path
    env: dict[str, str] = field(default_factory=dict)  # Airflow connections and variables

    def extract_all(self, warehouse: str = "postgres", env: dict[str, str] | None = None) -> dict[str, int]:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in {**self.env, **(env or {})}.items():
                patch.setenv(key, value)
            return {entry.name: extract(entry.name, warehouse=warehouse).rows_merged for entry in load_source_config()}


@pytest.fixture(scope="module")
def shop_warehouse(
    request: pytest.FixtureRequest, postgres_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ShopWarehouse]:
    """The shop at the test module's ``SHOP_SCALE`` (default ``small``), extracted into raw."""
    scale = getattr(request.module, "SHOP_SCALE", "small")
    root = tmp_path_factory.mktemp("shop")
    suffix = uuid.uuid4().hex[:6]
    specs = {}
    for conn_id, role, database in (
        ("ecommerce_source", "shop", f"shop_{suffix}"),
        ("warehouse_postgres", "warehouse", f"wh_{suffix}"),
    ):
        postgres_server.ensure_role(role, PASSWORDS[role])
        postgres_server.ensure_database(database, owner=role)
        specs[conn_id] = ConnectionSpec(
            conn_id, "postgres", postgres_server.host, postgres_server.port, database, role, PASSWORDS[role]
        )
    source_dsn = postgres_server.dsn(specs["ecommerce_source"].schema, "shop", PASSWORDS["shop"])
    shop = ShopWarehouse(
        source_dsn=source_dsn,
        warehouse_dsn=postgres_server.dsn(specs["warehouse_postgres"].schema, "warehouse", PASSWORDS["warehouse"]),
        charges_db=root / "charges.sqlite",
        landing_dir=root / "landing",
    )
    shopgen.generate(scale, 42, source_dsn, shop.charges_db, shop.landing_dir)
    stub = StripeStub(shop.charges_db, STRIPE_KEY)
    stub_url = stub.serve_in_thread()
    shop.env = {
        **{f"AIRFLOW_CONN_{conn_id.upper()}": spec.to_env_value() for conn_id, spec in specs.items()},
        "AIRFLOW_CONN_STRIPE_API": json.dumps({"conn_type": "http", "host": stub_url, "password": STRIPE_KEY}),
        "AIRFLOW_VAR_MARKETING_LANDING_URL": f"file://{shop.landing_dir}",
        "AIRFLOW_VAR_ECOMMERCE_WAREHOUSE": "postgres",
    }
    shop.extract_all()
    yield shop
    stub.shutdown()


def snowflake_connection_env(database: str, **network: object) -> dict[str, str]:
    """``warehouse_snowflake`` as an ``AIRFLOW_CONN_*`` variable; ``network`` = host, port, protocol
    for a ``fakesnow -s`` server (none: in-process ``fakesnow.patch()``)."""
    extra = {"account": "local", "warehouse": "transforming", "database": database, "role": "transformer", **network}
    spec = ConnectionSpec(
        "warehouse_snowflake", "snowflake", None, None, "raw", "transformer", PASSWORDS["snowflake"], extra
    )
    return {"AIRFLOW_CONN_WAREHOUSE_SNOWFLAKE": spec.to_env_value()}


def fast_policies_file(directory: Path, run_deadline_minutes: float | None = None) -> Path:
    """policies.yml with the same retry counts but second-long delays, so a failing test's retry
    does not hold a test run for minutes; optionally a run deadline short enough to be missed."""
    document = yaml.safe_load(POLICIES_FILE.read_text())
    if run_deadline_minutes is not None:
        document["deadline"]["run_finishes_within"] = run_deadline_minutes
    for policy in document["tasks"].values():
        policy["retry_delay"] = 0.02
        if "max_retry_delay" in policy:
            policy["max_retry_delay"] = 0.05
    path = directory / "policies-fast.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def subprocess_env(shop: ShopWarehouse, airflow_home: Path) -> dict[str, str]:
    """Environment of an Airflow CLI process working on ``shop``: its connections, fast retries."""
    repo_root = str(Path(__file__).resolve().parents[2])
    return {
        **os.environ,
        **shop.env,
        "AIRFLOW_HOME": str(airflow_home),
        "PYTHONPATH": repo_root,
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "ECOMMERCE_POLICIES_FILE": str(fast_policies_file(airflow_home)),
    }
