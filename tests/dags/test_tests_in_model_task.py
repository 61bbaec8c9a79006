"""Drills of the pipeline with ``TransformSettings.tests_in_model_task``: one task per model, which
succeeds only once the model's tests passed in the same build (no test tasks), on the embedded stack
through the real scheduler, triggerer and API server.

The switch reaches every Airflow component through ``ECOMMERCE_TESTS_IN_MODEL_TASK``, as a deployment
would set it. One stack for the module; the drills run in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest

from dev.airflow_client import api, clear_tasks, task_instances, task_states, wait_for_run
from dev.stack import LocalStack
from include.orchestration.manifest import DBT_PROJECT_DIR
from include.orchestration.transform import MARTS, node_kind
from tests.dags.conftest import DAG_ID, drill_stack
from tests.dags.test_pipeline_drills import (
    STG_ORDERS_DESCENDANTS,
    UNRELATED_MODELS,
    base_url,
    run_pipeline,
    slack_messages,
)
from tests.dbt.contract_oracle import comparable_marts, expected_marts, read_marts_snowflake, read_raw_postgres
from tests.dbt.contract_oracle import read_marts_postgres as marts

pytestmark = pytest.mark.slow
PRODUCER = "transform.dbt_producer_watcher"
RUNS: dict[str, str] = {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with drill_stack(tmp_path_factory.mktemp("tests_in_model_task"), ECOMMERCE_TESTS_IN_MODEL_TASK="true") as local:
        yield local


def model_task(model: str) -> str:
    """Cosmos's id of a model's task when nothing else is rendered for the model (no group)."""
    return f"transform.{model}_run"


def model_tests(model: str) -> list[str]:
    manifest = json.loads((DBT_PROJECT_DIR / "target" / "manifest.json").read_text())
    uid = f"model.{manifest['metadata'].get('project_name', 'ecommerce')}.{model}"
    return [
        node["name"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "test" and uid in node["depends_on"]["nodes"]
    ]


def aggregate_of_tests(stack: LocalStack, run_id: str, model: str) -> object:
    """What the producer published for all the model's tests ("pass" / "fail")."""
    key = f"model__ecommerce__{model}_tests_status"
    entry = api(base_url(stack), "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{PRODUCER}/xcomEntries/{key}")
    return (
        json.loads(entry["value"])
        if isinstance(entry["value"], str) and entry["value"].startswith('"')
        else entry["value"]
    )


def task_log(stack: LocalStack, run_id: str, task_id: str, attempt: int) -> str:
    return next(
        Path(stack.layout.logs_dir).rglob(f"run_id={run_id}/task_id={task_id}/attempt={attempt}.log")
    ).read_text()


def test_one_task_per_model_gated_by_its_tests_builds_the_contracts_marts_in_the_triggerer(stack: LocalStack) -> None:
    """No test task is rendered; the producer's build still ran every test (their aggregate per
    model is published), and each model's task ended in the triggerer only after it."""
    run_id, state, states = run_pipeline(stack)
    RUNS["happy"] = run_id
    assert state == "success", {task: s for task, s in states.items() if s != "success"}
    dsn = stack.warehouse_dsn()
    assert marts(dsn) == expected_marts(read_raw_postgres(dsn))

    kinds = {task: node_kind(task) for task in states if task.startswith("transform.")}
    assert "test" not in kinds.values()
    assert {model_task(mart) for mart in MARTS} <= {task for task, kind in kinds.items() if kind == "model"}
    instances = {ti["task_id"]: ti for ti in task_instances(base_url(stack), DAG_ID, run_id)}
    nodes = [task for task, kind in kinds.items() if kind]
    assert len(nodes) > 15
    assert [task for task in nodes if instances[task]["pid"] is not None or instances[task]["queued_when"]] == []
    entries = api(
        base_url(stack), "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{PRODUCER}/xcomEntries?limit=1000"
    )
    aggregates = {e["key"] for e in entries["xcom_entries"] if e["key"].endswith("_tests_status")}
    assert "model__ecommerce__stg_orders_tests_status" in aggregates
    assert len(model_tests("stg_orders")) >= 2


def test_on_snowflake_the_model_tasks_gate_on_the_tests_fakesnow_ran_and_build_the_same_marts(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres_marts = comparable_marts(marts(stack.warehouse_dsn()))  # the happy path's
    run_id, state, states = run_pipeline(stack, {"warehouse": "snowflake"})

    assert state == "success", {task: s for task, s in states.items() if s != "success"}
    assert aggregate_of_tests(stack, run_id, "stg_orders") == "pass"
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE_SNOWFLAKE", stack.settings.connection("warehouse_snowflake").to_env_value()
    )
    assert read_marts_snowflake() == postgres_marts


def test_a_failing_test_fails_its_models_task_naming_it_and_stops_only_the_descendants(
    stack: LocalStack, teleported_order: None
) -> None:
    run_id, state, states = run_pipeline(stack)
    RUNS["failed"] = run_id

    assert state == "failed"
    assert states[model_task("stg_orders")] == "failed"
    for model in STG_ORDERS_DESCENDANTS:
        assert states[model_task(model)] == "skipped", model
    for model in UNRELATED_MODELS:
        assert states[model_task(model)] == "success", model
    log = task_log(stack, run_id, model_task("stg_orders"), 1)
    failing = next(name for name in model_tests("stg_orders") if name.startswith("accepted_values"))
    assert f"tests did not pass: {failing} (Got 1 result" in log and "clear this task" in log
    assert "unique_stg_orders_order_id" not in log  # a test that passed is not named
    failures = [m["text"] for m in slack_messages(stack, run_id) if "failed" in m["text"]]
    assert any("stg_orders_run" in text for text in failures), failures


def test_the_failed_models_task_cleared_after_the_fix_rebuilds_it_with_its_tests_and_the_run_succeeds(
    stack: LocalStack, teleported_order: None
) -> None:
    run_id = RUNS["failed"]
    dsn = stack.warehouse_dsn()
    with psycopg.connect(dsn) as conn:
        fixed = conn.execute("UPDATE raw.orders SET status = 'completed' WHERE order_id = 1 AND status = 'teleported'")
        assert fixed.rowcount == 1

    cleared = model_task("stg_orders")
    clear_tasks(base_url(stack), DAG_ID, run_id, [cleared])

    assert wait_for_run(base_url(stack), DAG_ID, run_id, timeout_s=900) == "success"
    after = task_states(base_url(stack), DAG_ID, run_id)
    for model in ("stg_orders", *STG_ORDERS_DESCENDANTS):
        assert after[model_task(model)] == "success", model
    leader = task_log(stack, run_id, cleared, 2)
    assert "One dbt build for" in leader and "accepted_values" in leader  # the model's tests were in it
    # its descendants, the marts too, ended from that build in the triggerer; it emitted the marts' Assets
    instances = {ti["task_id"]: ti for ti in task_instances(base_url(stack), DAG_ID, run_id)}
    for model in STG_ORDERS_DESCENDANTS:
        assert instances[model_task(model)]["pid"] is None, model
        assert instances[model_task(model)]["queued_when"] is None, model
    cleared_marts = sorted(model_task(mart) for mart in MARTS if mart in STG_ORDERS_DESCENDANTS)
    assert cleared_marts
    query = urlencode({"source_run_id": run_id, "source_task_id": cleared})
    events = api(base_url(stack), "GET", f"/assets/events?{query}")["asset_events"]
    by_leader = [e for e in events if e["uri"].startswith("ecommerce://")]  # not Cosmos's per-table Assets
    assert sorted(e["extra"]["task_id"] for e in by_leader) == cleared_marts, by_leader
    assert marts(dsn) == expected_marts(read_raw_postgres(dsn))
