"""The pipeline as deployed: CeleryExecutor, a Redis broker and two workers that share no project
folder (dev/celery_shape.py), so whatever one task left on its local disk is invisible to
the next task and to the API server, as between a deployment's containers. The dbt docs go
through S3 as on a deployment: moto's S3 API server, an `aws` Connection with an ``endpoint_url``.

One stack for the module (`small` shop); the drills run in order.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

import pytest

from dev.airflow_client import api, clear_tasks, task_instances, trigger, wait_for_dag, wait_for_run
from dev.airflow_settings import AirflowSettings, ConnectionSpec
from dev.celery_shape import DBT_QUEUE, DEFAULT_QUEUE, WorkerSpec
from dev.embedded_postgres import find_free_port
from dev.stack import LocalStack, StackLayout
from include.orchestration.docs import DOCS_CONN_ID, DOCS_URL_VARIABLE
from tests.dbt.contract_oracle import expected_marts, read_raw_postgres
from tests.dbt.contract_oracle import read_marts_postgres as marts

pytestmark = pytest.mark.slow
DAG_ID = "ecommerce_elt"
PRODUCER = "transform.dbt_producer_watcher"
RETRIED_MODEL = "transform.fct_orders.run"
DOCS_BUCKET = "ecommerce-dbt-docs"
DOCS_URL = f"s3://{DOCS_BUCKET}/dbt-docs/ecommerce"
RUN: dict[str, str] = {}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 API server on 127.0.0.1 with the docs bucket (the deployment's docs bucket)."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = find_free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local-secret",
    ).create_bucket(Bucket=DOCS_BUCKET)
    yield endpoint
    server.stop()


def docs_on_s3(settings: AirflowSettings, endpoint: str) -> AirflowSettings:
    """The deployment's docs location: the Variable on the bucket, its Connection an `aws` one."""
    storage = ConnectionSpec(
        DOCS_CONN_ID,
        "aws",
        login="local",
        password="local-secret",
        extra={"endpoint_url": endpoint, "region_name": "us-east-1"},
    )
    connections = tuple(storage if c.conn_id == DOCS_CONN_ID else c for c in settings.connections)
    return replace(settings, connections=connections, variables={**settings.variables, DOCS_URL_VARIABLE: DOCS_URL})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("celery")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", "False")
        local = LocalStack(StackLayout(root / "local"), airflow_port=find_free_port(), executor="celery")
        local.settings = docs_on_s3(local.settings, s3_endpoint)
        local.up("small", with_airflow=True)
        wait_for_dag(base_url(local), DAG_ID)
        yield local
        local.down()


def base_url(stack: LocalStack) -> str:
    return f"http://127.0.0.1:{stack.ports.airflow}"


def instances(stack: LocalStack, run_id: str) -> dict[str, dict]:
    return {ti["task_id"]: ti for ti in task_instances(base_url(stack), DAG_ID, run_id)}


def worker_names(stack: LocalStack) -> set[str]:
    return {worker.name for worker in stack.workers}


def test_the_pipeline_succeeds_through_two_workers_with_the_producer_on_the_dbt_queue(stack: LocalStack) -> None:
    started = time.monotonic()
    run_id = trigger(base_url(stack), DAG_ID)
    state = wait_for_run(base_url(stack), DAG_ID, run_id, timeout_s=900)
    print(f"\ncelery small run: {time.monotonic() - started:.1f}s wall")
    RUN["run_id"] = run_id
    tis = instances(stack, run_id)

    assert state == "success", {task: ti["state"] for task, ti in tis.items() if ti["state"] != "success"}
    assert tis[PRODUCER]["queue"] == DBT_QUEUE and tis[PRODUCER]["hostname"] == "worker-dbt"
    others = {task: ti for task, ti in tis.items() if task != PRODUCER}
    assert {ti["queue"] for ti in others.values()} == {DEFAULT_QUEUE}
    on_workers = {ti["hostname"] for ti in tis.values() if ti["hostname"] in worker_names(stack)}
    assert on_workers == worker_names(stack), {task: ti["hostname"] for task, ti in tis.items()}
    assert tis["dbt_docs"]["hostname"] == "worker-default"  # not where dbt built the models
    dsn = stack.warehouse_dsn()
    assert marts(dsn) == expected_marts(read_raw_postgres(dsn))


def test_the_api_server_serves_the_docs_of_that_run_from_s3(stack: LocalStack, s3_endpoint: str) -> None:
    import boto3

    docs = instances(stack, RUN["run_id"])["dbt_docs"]
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local-secret",
    )
    stored = {o["Key"] for o in s3.list_objects_v2(Bucket=DOCS_BUCKET)["Contents"]}
    assert stored == {f"dbt-docs/ecommerce/{name}" for name in ("index.html", "manifest.json", "catalog.json")}
    with urllib.request.urlopen(f"{base_url(stack)}/cosmos/ecommerce/manifest.json", timeout=30) as response:
        manifest = json.loads(response.read())
    generated = datetime.fromisoformat(manifest["metadata"]["generated_at"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(docs["start_date"]) <= generated <= datetime.fromisoformat(docs["end_date"])
    models = {task.split(".")[1] for task in instances(stack, RUN["run_id"]) if task.endswith(".run")}
    assert models and {f"model.ecommerce.{model}" for model in models} <= set(manifest["nodes"])
    in_bucket = json.loads(s3.get_object(Bucket=DOCS_BUCKET, Key="dbt-docs/ecommerce/manifest.json")["Body"].read())
    assert manifest == in_bucket
    with urllib.request.urlopen(f"{base_url(stack)}/cosmos/ecommerce/dbt_docs_index.html", timeout=30) as response:
        assert response.status == 200 and b"dbt" in response.read().lower()


def test_a_model_cleared_from_the_grid_reruns_on_a_worker_that_did_not_run_the_producer(stack: LocalStack) -> None:
    """The cleared model reruns dbt, so the cluster policy sends it to the dbt queue; the worker
    that built the run is gone (a replaced container), so nothing it left on disk can help."""
    run_id = RUN["run_id"]
    before = instances(stack, run_id)
    producer_worker = next(w for w in stack.workers if w.name == before[PRODUCER]["hostname"])
    stack.celery_worker(producer_worker).stop()
    replacement = WorkerSpec("worker-dbt-2", (DBT_QUEUE,))
    stack.workers = (*stack.workers, replacement)  # so the stack's teardown stops it too
    stack.start_worker(replacement)

    clear_tasks(base_url(stack), DAG_ID, run_id, [RETRIED_MODEL])

    assert wait_for_run(base_url(stack), DAG_ID, run_id, timeout_s=600) == "success"
    after = instances(stack, run_id)
    retried = after[RETRIED_MODEL]
    assert retried["state"] == "success" and retried["try_number"] > before[RETRIED_MODEL]["try_number"]
    assert (retried["queue"], retried["hostname"]) == (DBT_QUEUE, replacement.name), retried
    assert after[PRODUCER]["try_number"] == before[PRODUCER]["try_number"]  # the producer did not rerun
    dsn = stack.warehouse_dsn()
    assert marts(dsn) == expected_marts(read_raw_postgres(dsn))


def test_the_celery_queues_are_the_readmes(stack: LocalStack) -> None:
    dag = api(base_url(stack), "GET", f"/dags/{DAG_ID}/tasks/{PRODUCER}")
    assert dag["queue"] == DBT_QUEUE
