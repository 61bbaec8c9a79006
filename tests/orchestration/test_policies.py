"""Retry and timeout policies are data: the issue's numbers, and clear errors for bad files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from include.orchestration.policies import PolicyError, load_policies, run_deadline, task_policy


def test_policies_per_task_type_match_the_operating_rules() -> None:
    extraction = task_policy("extraction")
    assert (extraction.retries, extraction.retry_delay) == (2, timedelta(minutes=5))
    assert extraction.retry_exponential_backoff and extraction.max_retry_delay == timedelta(minutes=20)
    assert (task_policy("dbt_model").retries, task_policy("dbt_model").retry_delay) == (2, timedelta(minutes=5))
    assert (task_policy("dbt_test").retries, task_policy("dbt_test").retry_delay) == (1, timedelta(minutes=3))
    assert task_policy("notification").retries == 0
    assert run_deadline() == timedelta(minutes=30)


def test_every_policy_has_an_execution_timeout() -> None:
    for name, policy in load_policies().tasks.items():
        assert policy.operator_kwargs()["execution_timeout"] > timedelta(0), name


def test_an_unknown_task_type_names_the_file_and_the_known_types() -> None:
    with pytest.raises(PolicyError, match=r"'extract'.*policies.yml.*extraction"):
        task_policy("extract")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("tasks: {x: {retries: 1, retry_delay: 1}}\ndeadline: {run_finishes_within: 30}", "needs retries"),
        (
            "tasks: {x: {retries: -1, retry_delay: 1, execution_timeout: 1}}\ndeadline: {run_finishes_within: 30}",
            "non-negative",
        ),
        (
            "tasks: {x: {retries: 1, retry_delay: 0, execution_timeout: 1}}\ndeadline: {run_finishes_within: 30}",
            "retry_delay must be a positive",
        ),
        (
            "tasks: {x: {retries: 1, retry_delay: 1, execution_timeout: 1, retires: 2}}\n"
            "deadline: {run_finishes_within: 30}",
            "unknown keys",
        ),
        ("tasks: {}\ndeadline: {}", "run_finishes_within"),
        (
            "tasks: {x: {retries: 1, retry_delay: 1, execution_timeout: 1, pool: dbt_bild}}\n"
            "deadline: {run_finishes_within: 30}\npools: {dbt_build: {slots: 1}}",
            r"tasks.x.pool 'dbt_bild' is not declared under `pools:` \(dbt_build\)",
        ),
        ("tasks: {}\ndeadline: {run_finishes_within: 30}\npools: {dbt_build: {slots: 0}}", "slots must be a positive"),
    ],
)
def test_a_bad_policies_file_is_refused_with_the_key(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "policies.yml"
    path.write_text(body)
    with pytest.raises(PolicyError, match=message):
        load_policies(path)


def test_connection_limits_per_connection_over_the_default_and_extras_win() -> None:
    from include.orchestration.policies import connection_limits

    default = load_policies().connections["default"]
    source = connection_limits("ecommerce_source")
    assert source.connect_timeout == default.connect_timeout and source.lock_timeout > 0
    assert connection_limits("unknown_connection") == default
    assert connection_limits("ecommerce_source", {"lock_timeout": "3", "host": "x"}).lock_timeout == 3


def test_a_bad_connection_limit_names_the_connection_and_key(tmp_path: Path) -> None:
    path = tmp_path / "policies.yml"
    path.write_text(
        "tasks: {}\ndeadline: {run_finishes_within: 30}\nconnections: {warehouse_postgres: {lock_timout: 5}}\n"
    )
    with pytest.raises(PolicyError, match=r"connections.warehouse_postgres.*lock_timout.*lock_timeout"):
        load_policies(path)


def test_the_snowflake_connector_gets_login_and_network_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from include.ingestion.warehouse.snowflake import ProtocolAwareSnowflakeHook
    from include.orchestration.policies import connection_limits

    body = {
        "conn_type": "snowflake",
        "login": "u",
        "password": "p",
        "schema": "raw",
        "extra": json.dumps({"account": "local", "database": "analytics", "network_timeout": 7}),
    }
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_SNOWFLAKE", json.dumps(body))
    params = ProtocolAwareSnowflakeHook(snowflake_conn_id="warehouse_snowflake")._get_conn_params()
    assert params["login_timeout"] == connection_limits("warehouse_snowflake").connect_timeout
    assert params["network_timeout"] == 7  # the Connection's extras override policies.yml
