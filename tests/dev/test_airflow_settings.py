"""airflow_settings.yaml is read once and pointed at the local stack without other changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dev.airflow_settings import Endpoint, SettingsError, load_settings, localize
from tests.conftest import REPO_ROOT

CONTRACT_CONNECTIONS = {
    "ecommerce_source",
    "warehouse_postgres",
    "warehouse_snowflake",
    "stripe_api",
    "slack_alerts",
    "dbt_docs_storage",
}


@pytest.fixture
def settings():
    return load_settings(REPO_ROOT / "airflow_settings.yaml")


def test_every_contract_connection_is_declared(settings) -> None:
    assert {c.conn_id for c in settings.connections} == CONTRACT_CONNECTIONS
    assert settings.connection("warehouse_snowflake").conn_type == "snowflake"
    assert settings.connection("slack_alerts").conn_type == "slackwebhook"


def test_the_pools_are_the_ones_the_project_declares(settings) -> None:
    """policies.yml declares the pools (it ships in the image); this file creates them locally."""
    from include.orchestration.policies import load_policies

    declared = {name: pool.slots for name, pool in load_policies().pools.items()}
    assert {pool.name: pool.slots for pool in settings.pools} == declared


def test_localize_rewrites_service_hosts_and_nothing_else(settings) -> None:
    services = {
        "source-db": Endpoint("127.0.0.1", 15432),
        "warehouse-db": Endpoint("127.0.0.1", 15432),
        "stripe-stub": Endpoint("127.0.0.1", 12999),
        "snowflake-emulator": Endpoint("127.0.0.1", 18085),
    }
    local = localize(settings, services, {"/usr/local/airflow/landing": Path("/data/landing")})

    source = local.connection("ecommerce_source")
    assert (source.host, source.port) == ("127.0.0.1", 15432)
    assert (source.login, source.password, source.schema) == ("shop", "shop-local-pw", "ecommerce")
    assert local.connection("stripe_api").host == "http://127.0.0.1:12999"
    snowflake = local.connection("warehouse_snowflake")
    assert (snowflake.extra["host"], snowflake.extra["port"], snowflake.extra["protocol"]) == (
        "127.0.0.1",
        18085,
        "http",
    )
    # a service without a local endpoint keeps its compose host
    assert local.connection("slack_alerts").host == settings.connection("slack_alerts").host
    assert local.variables["marketing_landing_url"] == "file:///data/landing/marketing"


def test_connection_exports_as_airflow_json(settings) -> None:
    body = settings.connection("warehouse_snowflake").to_airflow_dict()
    assert body["conn_type"] == "snowflake"
    assert '"protocol": "http"' in body["extra"]


def test_missing_connection_names_the_file_section(settings) -> None:
    with pytest.raises(SettingsError, match="airflow.connections"):
        settings.connection("nope")


def test_malformed_connection_is_reported_with_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "airflow_settings.yaml"
    bad.write_text("airflow:\n  connections:\n    - conn_host: x\n")
    with pytest.raises(SettingsError, match=str(bad)):
        load_settings(bad)
