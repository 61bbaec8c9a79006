"""Drills of the whole pipeline on the embedded stack, through the real scheduler (LocalExecutor,
triggerer, API server) with the Slack receiver standing in for Slack.

One stack for the module (`small` shop); the drills run in order and each leaves the shop as
it found it. Time-based scheduling is off, so only the runs a drill triggers exist.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, quote_plus, urlencode

import psycopg
import pytest

from dev.airflow_client import (
    api,
    clear_tasks,
    task_instances,
    task_states,
    trigger,
    wait_for_dag,
    wait_for_run,
)
from dev.airflow_settings import ConnectionSpec
from dev.fault_proxy import FaultProxy, snowflake_statement_holding
from dev.stack import LocalStack
from include.orchestration.transform import MARTS, SETTINGS, node_kind
from tests.dags.conftest import DAG_ID, drill_stack
from tests.dbt.contract_oracle import comparable_marts, expected_marts, read_marts_snowflake, read_raw_postgres
from tests.dbt.contract_oracle import read_marts_postgres as marts

pytestmark = pytest.mark.slow
STG_ORDERS_DESCENDANTS = (
    "int_orders_enriched",
    "fct_orders",
    "dim_customers",
    "fct_daily_revenue",
    "fct_marketing_performance",
)
# A model below a failed node: its trigger ends it skipped (consumers released at the stage's start,
# include/orchestration/consumers.py); Airflow marks it upstream_failed when sensors wait for parents.
DESCENDANT_OF_A_FAILURE = "skipped" if SETTINGS.consumers_start_from_trigger else "upstream_failed"
UNRELATED_MODELS = (
    "stg_customers",
    "stg_products",
    "stg_order_items",
    "stg_stripe_charges",
    "stg_marketing_spend",
    "int_order_items_rolled_up",
    "int_payments_per_order",
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with drill_stack(tmp_path_factory.mktemp("pipeline")) as local:
        wait_for_dag(base_url(local), "marts_consumers")
        api(base_url(local), "PATCH", "/dags/marts_consumers", {"is_paused": False})
        yield local


def base_url(stack: LocalStack) -> str:
    return f"http://127.0.0.1:{stack.ports.airflow}"


def run_pipeline(stack: LocalStack, conf: dict | None = None) -> tuple[str, str, dict[str, str]]:
    run_id = trigger(base_url(stack), DAG_ID, conf)
    state = wait_for_run(base_url(stack), DAG_ID, run_id, timeout_s=900)
    return run_id, state, task_states(base_url(stack), DAG_ID, run_id)


def slack_messages(stack: LocalStack, run_id: str) -> list[dict]:
    if not stack.layout.slack_log.exists():
        return []
    entries = [json.loads(line) for line in stack.layout.slack_log.read_text().splitlines()]
    return [entry["payload"] for entry in entries if run_id in json.dumps(entry["payload"])]


def wait_for_slack(stack: LocalStack, run_id: str, words: str, timeout_s: float = 120) -> list[str]:
    """Texts of the run's Slack messages containing ``words``, once at least one has arrived."""
    deadline = time.monotonic() + timeout_s
    while True:
        texts = [m["text"] for m in slack_messages(stack, run_id) if words in m["text"]]
        if texts or time.monotonic() > deadline:
            return texts
        time.sleep(1)


def facts(message: dict) -> dict[str, str]:
    fields = [field["text"] for block in message["attachments"][0]["blocks"] for field in block.get("fields", [])]
    return dict(text.strip("*").split("*\n", 1) for text in fields)


HAPPY_RUN: dict[str, str] = {}


def test_happy_path_builds_the_contracts_marts_and_reports_once(stack: LocalStack) -> None:
    started = time.monotonic()
    run_id, state, states = run_pipeline(stack)
    print(f"\nlocal-executor small run: {time.monotonic() - started:.1f}s wall")  # beside the Celery drill's
    HAPPY_RUN["run_id"] = run_id

    assert state == "success", {task: s for task, s in states.items() if s != "success"}
    assert set(states.values()) == {"success"}
    dsn = stack.warehouse_dsn()
    assert marts(dsn) == expected_marts(read_raw_postgres(dsn))
    successes = [m for m in slack_messages(stack, run_id) if "succeeded" in m["text"]]
    assert len(successes) == 1
    with psycopg.connect(dsn) as conn:
        orders = conn.execute("SELECT count(*) FROM raw.orders").fetchone()[0]
        rejects = conn.execute("SELECT count(*) FROM raw.marketing_spend_rejects").fetchone()[0]
    summary = facts(successes[0])
    assert f"orders {orders:,}" in summary["Rows loaded"] and summary["Rejected rows"] == f"{rejects:,}"
    assert summary["Models built"] == str(sum(1 for t in states if node_kind(t) == "model"))


def test_consumer_tasks_take_no_worker_on_the_happy_path(stack: LocalStack) -> None:
    """A model/test/source task starts and ends in the triggerer: the scheduler creates it deferred
    and its trigger ends it, so no worker ever ran it (no pid, never queued to the executor). The
    marts too: the producer emits their Assets; it is the one task process of the stage."""
    instances = {ti["task_id"]: ti for ti in task_instances(base_url(stack), DAG_ID, HAPPY_RUN["run_id"])}
    producer = instances["transform.dbt_producer_watcher"]
    assert producer["pid"] is not None  # what a worker run leaves behind
    consumers = {task: ti for task, ti in instances.items() if task.startswith("transform.") and node_kind(task)}
    assert len(consumers) > 20
    assert {f"transform.{mart}.run" for mart in MARTS} <= set(consumers)
    on_a_worker = {task for task, ti in consumers.items() if ti["pid"] is not None or ti["queued_when"] is not None}
    assert on_a_worker == set()
    assert {ti["try_number"] for ti in consumers.values()} == {1}


def test_a_finished_task_gives_its_worker_back_within_about_a_second(stack: LocalStack) -> None:
    """A task's supervisor (the LocalExecutor worker's, or a Celery worker's) returns once it has
    seen the task process exit; with Airflow's default ``[workers] min_heartbeat_interval`` of 5 s
    it saw that about 5 s after the task's success, holding the worker slot and the process (the
    stack and the image set 1 s, ``IMAGE_AIRFLOW_CONFIG``). The supervisor logs when it returns."""
    ended = {
        ti["id"]: datetime.fromisoformat(ti["end_date"])
        for ti in task_instances(base_url(stack), DAG_ID, HAPPY_RUN["run_id"])
        if ti["pid"] is not None and ti["end_date"]
    }
    deadline = time.monotonic() + 60
    while (returned := workloads_returned(stack)).keys() < ended.keys() and time.monotonic() < deadline:
        time.sleep(0.5)  # the run's last tasks' supervisors may still be returning
    lingered = {ti: (returned[ti] - end).total_seconds() for ti, end in ended.items() if ti in returned}
    assert len(lingered) == len(ended) > 10, (len(lingered), len(ended))
    assert max(lingered.values()) < 3.0, sorted(lingered.values())


def workloads_returned(stack: LocalStack) -> dict[str, datetime]:
    """When each task's supervisor returned (its "Workload finished" line), by task instance id."""
    returned = {}
    for line in (stack.layout.logs_dir / "airflow-scheduler.log").read_text().splitlines():
        if "Workload finished" in line and (match := re.search(r"workload_id=(\S+)", line)):
            returned[match[1]] = datetime.fromisoformat(line.split(" ", 1)[0])
    return returned


def test_each_test_on_several_models_reads_its_own_result_from_the_build(stack: LocalStack) -> None:
    """A test on several models has its own task: the producer published that test's own result
    ("pass") as dbt reported it, so the task did not wait for the producer's end to learn nothing
    ("node not run"). One published result per such task."""
    run_id = HAPPY_RUN["run_id"]
    producer = "transform.dbt_producer_watcher"
    detached = [
        task
        for task in (ti["task_id"] for ti in task_instances(base_url(stack), DAG_ID, run_id))
        if task.startswith("transform.") and node_kind(task) == "test" and not task.endswith(".test")  # not a model's
    ]
    assert any("assert_daily_revenue_matches_fct_orders" in task for task in detached)
    entries = api(
        base_url(stack), "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{producer}/xcomEntries?limit=1000"
    )
    own = [
        e["key"]
        for e in entries["xcom_entries"]
        if e["key"].startswith("test__") and e["key"].endswith("_tests_status")
    ]
    assert len(own) == len(detached), (own, detached)
    assert any("assert_daily_revenue_matches_fct_orders" in key for key in own)
    for key in own:
        value = api(
            base_url(stack), "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{producer}/xcomEntries/{key}"
        )
        assert value["value"] in ("pass", '"pass"'), (key, value["value"])


def test_clearing_a_model_reruns_it_and_then_its_descendants(stack: LocalStack) -> None:
    """The cleared model's second try runs on a worker and builds itself and its cleared
    descendants in one ``dbt build``; each descendant's task reports its own node from that build
    (the ticket it read) in the triggerer, without a worker: the leader emitted the cleared marts'
    Assets for them. The rest of the run stays as it was."""
    run_id = HAPPY_RUN["run_id"]
    cleared = "transform.int_orders_enriched.run"
    clear_tasks(base_url(stack), DAG_ID, run_id, [cleared])
    assert wait_for_run(base_url(stack), DAG_ID, run_id, timeout_s=900) == "success"
    instances = {ti["task_id"]: ti for ti in task_instances(base_url(stack), DAG_ID, run_id)}
    assert {ti["state"] for ti in instances.values()} == {"success"}
    assert instances[cleared]["try_number"] == 2 and instances[cleared]["pid"] is not None
    followers = ["transform.int_orders_enriched.test"]
    followers += [f"transform.{model}.{kind}" for model in ("fct_orders", "dim_customers") for kind in ("run", "test")]
    # tests on several models (their own tasks, e.g. daily revenue against fct_orders) are built too
    detached = [task for task, ti in instances.items() if ti["try_number"] == 2 and task.endswith("_test")]
    assert detached, "no test on several models below the cleared model"
    followers += detached
    cleared_marts = {task for mart in MARTS if instances[task := f"transform.{mart}.run"]["try_number"] == 2}
    assert {"transform.fct_orders.run", "transform.dim_customers.run"} <= cleared_marts
    followers += sorted(cleared_marts - set(followers))  # the marts further below (e.g. daily revenue)
    for task in followers:
        assert instances[task]["try_number"] == 2, task
        assert cleared_build(stack, run_id, task)["leader"] == cleared, task
        assert instances[task]["pid"] is None and instances[task]["queued_when"] is None, task  # no worker
    query = urlencode({"source_run_id": run_id, "source_task_id": cleared})
    events = api(base_url(stack), "GET", f"/assets/events?{query}")["asset_events"]
    by_leader = [e for e in events if e["uri"].startswith("ecommerce://")]  # not Cosmos's per-table Assets
    assert sorted(e["extra"]["task_id"] for e in by_leader) == sorted(cleared_marts), by_leader
    assert all(e["uri"] == f"ecommerce://marts/{e['extra']['task_id'].split('.')[1]}" for e in by_leader), by_leader
    for model in UNRELATED_MODELS:
        assert instances[f"transform.{model}.run"]["try_number"] == 1, model
    leader_log = next(Path(stack.layout.logs_dir).rglob(f"run_id={run_id}/task_id={cleared}/attempt=2.log")).read_text()
    assert "One dbt build for" in leader_log and "fct_orders" in leader_log
    dsn = stack.warehouse_dsn()
    assert marts(dsn) == expected_marts(read_raw_postgres(dsn))


def cleared_build(stack: LocalStack, run_id: str, task_id: str) -> dict:
    """The ticket a task read from the cleared build it reported from (include/orchestration/consumers.py)."""
    entry = api(
        base_url(stack), "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/cleared_build"
    )
    value = entry["value"]
    return json.loads(value) if isinstance(value, str) else value


def test_the_marts_asset_queues_the_consumer_which_exports_the_report(stack: LocalStack) -> None:
    """The producer emits each mart's Asset for the mart's task (which ends in the triggerer), once
    per run, naming the task and the dbt node."""
    events = api(base_url(stack), "GET", "/assets/events?limit=100")["asset_events"]
    happy = [e for e in events if e["source_run_id"] == HAPPY_RUN["run_id"] and e["uri"].startswith("ecommerce://")]
    # (a mart cleared by an earlier drill in this run has a second event, from that clear's leader)
    by_producer = [e for e in happy if e["source_task_id"] == "transform.dbt_producer_watcher"]
    assert sorted(e["uri"] for e in by_producer) == sorted(f"ecommerce://marts/{mart}" for mart in MARTS), happy
    revenue = [e for e in by_producer if e["uri"] == "ecommerce://marts/fct_daily_revenue"]
    assert revenue[0]["extra"]["task_id"] == "transform.fct_daily_revenue.run", revenue
    assert revenue[0]["extra"]["dbt_node"] == "model.ecommerce.fct_daily_revenue"
    # time-based and asset scheduling are off in this stack (only drill-triggered runs exist), so
    # the event waits in the consumer's queue; in production the scheduler starts it from there
    queued = api(base_url(stack), "GET", "/dags/marts_consumers/assets/queuedEvents")["queued_events"]
    assert any(q["asset_id"] == revenue[0]["asset_id"] for q in queued), queued

    run_id = trigger(base_url(stack), "marts_consumers")
    assert wait_for_run(base_url(stack), "marts_consumers", run_id, timeout_s=300) == "success"
    reports = list((stack.layout.landing_dir / "reports").glob("daily_revenue_*.csv"))
    assert reports
    lines = reports[0].read_text().splitlines()
    with psycopg.connect(stack.warehouse_dsn()) as conn:
        days = conn.execute("SELECT count(*) FROM marts.fct_daily_revenue").fetchone()[0]
    assert lines[0].startswith("order_date,order_count") and len(lines) == days + 1


def test_a_run_past_its_deadline_alerts_slack(stack: LocalStack) -> None:
    """The drills' deadline is 15 s after queueing; the happy run took longer, so the triggerer
    ran the deadline callback, which posted through the Slack notifier."""
    run_id = HAPPY_RUN["run_id"]
    alerts = wait_for_slack(stack, run_id, "missed its deadline")
    assert len(alerts) == 1, alerts
    deadline = next(m for m in slack_messages(stack, run_id) if "missed its deadline" in m["text"])
    assert facts(deadline)["DAG"] == DAG_ID and facts(deadline)["Run"] == run_id


def test_a_second_run_without_changes_changes_nothing(stack: LocalStack) -> None:
    dsn = stack.warehouse_dsn()
    before = marts(dsn)
    with psycopg.connect(dsn) as conn:
        raw_before = conn.execute("SELECT md5(string_agg(o::text, ',' ORDER BY order_id)) FROM raw.orders o").fetchone()

    _, state, _ = run_pipeline(stack)

    assert state == "success"
    assert marts(dsn) == before
    with psycopg.connect(dsn) as conn:
        assert (
            conn.execute("SELECT md5(string_agg(o::text, ',' ORDER BY order_id)) FROM raw.orders o").fetchone()
            == raw_before
        )


@pytest.fixture
def stripe_faults_and_slack_down(stack: LocalStack) -> Iterator[None]:
    """Stripe answers 30% of requests with 429/500, and Slack's endpoint is gone."""
    stub = f"http://127.0.0.1:{stack.ports.stripe}/_stub/faults"
    set_faults = lambda body: urllib.request.urlopen(  # noqa: E731
        urllib.request.Request(stub, json.dumps(body).encode(), {"Content-Type": "application/json"}), timeout=10
    )
    set_faults({"rate_429": 0.15, "rate_500": 0.15})
    stack.slack_receiver().stop()
    yield
    set_faults({"rate_429": 0.0, "rate_500": 0.0})
    stack.slack_receiver().start()


def test_incremental_run_through_stripe_faults_and_without_slack_is_exact(
    stack: LocalStack, stripe_faults_and_slack_down: None
) -> None:
    from dev import shopgen
    from dev.charge_store import ChargeStore

    summary = shopgen.apply_changes(1, stack.source_dsn(), stack.layout.charges_db, stack.layout.marketing_landing_dir)
    assert summary.late_refunds and summary.status_changes

    _run_id, state, states = run_pipeline(stack)

    assert state == "success", {task: s for task, s in states.items() if s != "success"}
    dsn = stack.warehouse_dsn()
    with psycopg.connect(dsn) as conn:
        raw_charges = {row[0]: row[1] for row in conn.execute("SELECT id, payload FROM raw.stripe_charges")}
    assert raw_charges == {c["id"]: c for c in ChargeStore(stack.layout.charges_db).all()}
    with psycopg.connect(stack.source_dsn()) as source, psycopg.connect(dsn) as warehouse:
        query = "SELECT order_id, status, updated_at FROM {} ORDER BY order_id"
        assert (
            source.execute(query.format("public.orders")).fetchall()
            == warehouse.execute(query.format("raw.orders")).fetchall()
        )
    assert marts(dsn) == expected_marts(read_raw_postgres(dsn))  # incremental marts = the full definition


@pytest.fixture
def postgres_marts(stack: LocalStack) -> dict[str, list[tuple]]:
    """The Postgres marts of the same shop, built here when this drill runs without the earlier ones."""
    with psycopg.connect(stack.warehouse_dsn()) as conn:
        built = conn.execute("SELECT to_regclass('marts.fct_orders') IS NOT NULL").fetchone()[0]
    if not built:
        assert run_pipeline(stack)[1] == "success"
    return comparable_marts(marts(stack.warehouse_dsn()))


def test_a_snowflake_run_builds_the_same_marts_on_fakesnow(
    stack: LocalStack, postgres_marts: dict[str, list[tuple]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """warehouse=snowflake: extraction, dbt and docs against the stack's fakesnow server."""
    run_id, state, states = run_pipeline(stack, {"warehouse": "snowflake"})

    assert state == "success", {task: s for task, s in states.items() if s != "success"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE_SNOWFLAKE", stack.settings.connection("warehouse_snowflake").to_env_value()
    )
    assert read_marts_snowflake() == postgres_marts
    summary = [m for m in slack_messages(stack, run_id) if "succeeded" in m["text"]]
    assert len(summary) == 1 and "snowflake" in json.dumps(summary[0])


@pytest.fixture
def source_database(stack: LocalStack) -> Iterator[str]:
    """The shop's database; whatever a drill does to it, it accepts connections again afterwards."""
    name = stack.settings.connection("ecommerce_source").schema or ""
    yield name
    with psycopg.connect(stack.postgres.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def wait_for_a_query_blocked_on(admin_dsn: str, database: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        while time.monotonic() < deadline:
            blocked = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", (database,)
            ).fetchone()[0]
            if blocked:
                return
            time.sleep(0.5)
    raise TimeoutError(f"no extraction query reached {database} within {timeout_s:.0f}s")


def stop_source(admin_dsn: str, database: str) -> None:
    """What clients see of a stopped server: open sessions killed, new connections refused. (The
    embedded server also holds Airflow's metadata DB, so the source goes down as a database.)"""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        # The sessions waiting on a lock go first, and each is waited for (the timeout argument): killed
        # together with the session holding the lock, a waiter could get it and finish in between.
        others = (
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()"
        )
        admin.execute(others + " AND wait_event_type = 'Lock'", (database,))
        admin.execute(others, (database,))


def test_source_down_mid_extraction_stops_before_dbt_and_a_cleared_rerun_is_exact(
    stack: LocalStack, source_database: str
) -> None:
    admin_dsn = stack.postgres.dsn("postgres")
    lock = psycopg.connect(stack.postgres.dsn(source_database))  # holds extract_orders mid-query
    lock.execute("LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE")
    run_id = trigger(base_url(stack), DAG_ID)
    wait_for_a_query_blocked_on(admin_dsn, source_database)
    stop_source(admin_dsn, source_database)
    lock.close()

    state = wait_for_run(base_url(stack), DAG_ID, run_id, timeout_s=600)
    states = task_states(base_url(stack), DAG_ID, run_id)
    assert (state, states["extract_orders"]) == ("failed", "failed"), states
    assert states["all_extractions_complete"] == "upstream_failed"
    assert {
        s
        for task, s in states.items()
        if task.startswith("transform.") and (node_kind(task) or task.endswith("dbt_producer_watcher"))
    } == {"upstream_failed"}
    assert wait_for_slack(stack, run_id, f"{DAG_ID}.extract_orders failed")

    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{source_database}" ALLOW_CONNECTIONS true')
    clear_tasks(base_url(stack), DAG_ID, run_id, [task for task, s in states.items() if s == "failed"])

    assert wait_for_run(base_url(stack), DAG_ID, run_id, timeout_s=900) == "success"
    dsn = stack.warehouse_dsn()
    with psycopg.connect(stack.source_dsn()) as source, psycopg.connect(dsn) as warehouse:
        query = "SELECT order_id, status, updated_at FROM {} ORDER BY order_id"
        assert (
            source.execute(query.format("public.orders")).fetchall()
            == warehouse.execute(query.format("raw.orders")).fetchall()
        )
    assert marts(dsn) == expected_marts(read_raw_postgres(dsn))


UNREACHABLE_AFTER_S = 10
PRODUCER_ID = "transform.dbt_producer_watcher"


def edit_connection(stack: LocalStack, spec: ConnectionSpec) -> None:
    """What an operator does in the UI's Connections page (the API behind it)."""
    body = {"connection_id": spec.conn_id, **spec.to_airflow_dict()}
    api(base_url(stack), "PATCH", f"/connections/{spec.conn_id}", body)


# The statement that never gets an answer: dbt's building int_orders_enriched, mid-build (the staging
# models are done). Postgres's wire carries it as text; the Snowflake connector gzips its requests.
STALL_AT = {
    "postgres": b"int_orders_enriched",
    "snowflake": snowflake_statement_holding(b"int_orders_enriched"),
}


@pytest.fixture
def warehouse_that_stops_answering(stack: LocalStack, request: pytest.FixtureRequest) -> Iterator[FaultProxy]:
    """The run's warehouse Connection reached through a :class:`FaultProxy` that stops answering at
    :data:`STALL_AT`, with ``unreachable_after`` shortened in its extras. The proxy relays again once
    the producer has failed, as a warehouse back from an outage does; the Connection is restored after."""
    spec = stack.settings.connection(f"warehouse_{request.param}")
    if request.param == "snowflake":  # the connector and dbt read host and port from the extras
        host, port = spec.extra["host"], spec.extra["port"]
        proxy = FaultProxy(host, port, stall_on=STALL_AT["snowflake"]).start()
        extra = {**spec.extra, "host": "127.0.0.1", "port": proxy.port}
        proxied = dataclasses.replace(spec, extra=extra)
    else:
        proxy = FaultProxy(spec.host or "127.0.0.1", spec.port or 5432, stall_on=STALL_AT["postgres"]).start()
        proxied = dataclasses.replace(spec, host="127.0.0.1", port=proxy.port, extra=dict(spec.extra))
    proxied.extra["unreachable_after"] = UNREACHABLE_AFTER_S
    edit_connection(stack, proxied)

    def heal_once_the_producer_failed() -> None:
        if not proxy.stalled.wait(900):
            return
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            runs = api(base_url(stack), "GET", f"/dags/{DAG_ID}/dagRuns?order_by=-start_date&limit=1")["dag_runs"]
            if runs and task_states(base_url(stack), DAG_ID, runs[0]["dag_run_id"]).get(PRODUCER_ID) == "failed":
                break
            time.sleep(0.5)
        proxy.heal()

    healer = threading.Thread(target=heal_once_the_producer_failed, daemon=True)
    healer.start()
    yield proxy
    edit_connection(stack, spec)
    proxy.close()


@pytest.mark.parametrize("warehouse_that_stops_answering", ["postgres", "snowflake"], indirect=True)
def test_a_warehouse_that_stops_answering_mid_build_stops_the_producer_and_the_retries_are_exact(
    stack: LocalStack,
    postgres_marts: dict[str, list[tuple]],  # before the proxy: built on a warehouse that answers
    warehouse_that_stops_answering: FaultProxy,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dbt's statement never gets an answer (a paused server, a partition; on Snowflake, a connector
    with no network timeout retries it for as long as dbt lives): the watchdog stops the build within
    ``unreachable_after``, the producer fails naming the Connection in its alert, and the node tasks'
    own retries, once the warehouse answers again, leave marts equal to the contract."""
    warehouse = request.node.callspec.params["warehouse_that_stops_answering"]
    run_id, state, states = run_pipeline(stack, {"warehouse": warehouse})

    assert state == "success", {task: s for task, s in states.items() if s != "success"}
    assert warehouse_that_stops_answering.stalled_at is not None  # dbt's statement was held
    instances = {ti["task_id"]: ti for ti in task_instances(base_url(stack), DAG_ID, run_id)}
    producer = instances[PRODUCER_ID]
    assert producer["state"] == "failed" and producer["try_number"] == 1
    stopped_after = datetime.fromisoformat(producer["end_date"]).timestamp() - warehouse_that_stops_answering.stalled_at
    print(f"{warehouse}: producer ended {stopped_after:.1f} s after the warehouse stopped answering")
    assert stopped_after < UNREACHABLE_AFTER_S + 50
    alerts = [m for m in slack_messages(stack, run_id) if f"{PRODUCER_ID} failed" in m["text"]]
    assert len(alerts) == 1
    detail = json.dumps(alerts[0])
    assert f"Warehouse Connection 'warehouse_{warehouse}' failed every probe" in detail
    assert "unreachable_after" in detail
    # rebuilt by a retry: its own second try, or (when a test of a parent was cut off with the build)
    # that test's retry, which leads one build of the waiting tasks below it and lists it in its ticket
    rebuilt = "transform.int_orders_enriched.run"
    if instances[rebuilt]["try_number"] == 1:
        leader = cleared_build(stack, run_id, rebuilt)["leader"]
        assert instances[leader]["try_number"] > 1, leader
    if warehouse == "snowflake":
        monkeypatch.setenv(
            "AIRFLOW_CONN_WAREHOUSE_SNOWFLAKE", stack.settings.connection("warehouse_snowflake").to_env_value()
        )
        assert read_marts_snowflake() == postgres_marts
    else:
        dsn = stack.warehouse_dsn()
        assert marts(dsn) == expected_marts(read_raw_postgres(dsn))


def test_dbt_docs_are_served_by_the_api_server(stack: LocalStack) -> None:
    with urllib.request.urlopen(f"{base_url(stack)}/cosmos/ecommerce/manifest.json", timeout=30) as response:
        manifest = json.loads(response.read())
    assert "model.ecommerce.fct_orders" in manifest["nodes"]
    with urllib.request.urlopen(f"{base_url(stack)}/cosmos/ecommerce/dbt_docs_index.html", timeout=30) as response:
        assert response.status == 200 and b"dbt" in response.read().lower()


def test_a_failing_dbt_test_stops_its_descendants_only_and_alerts(stack: LocalStack, teleported_order: None) -> None:
    run_id, state, states = run_pipeline(stack)

    assert state == "failed"
    assert states["transform.stg_orders.test"] == "failed"
    for model in STG_ORDERS_DESCENDANTS:  # released at the stage's start: their triggers end them skipped
        assert states[f"transform.{model}.run"] == DESCENDANT_OF_A_FAILURE, model
    assert states["transform.nodes_done"] == "upstream_failed"  # the leaf that fails the run
    for model in UNRELATED_MODELS:
        assert states[f"transform.{model}.run"] == "success", model
    failures = [m["text"] for m in slack_messages(stack, run_id) if "failed" in m["text"]]
    assert any("stg_orders.test" in text for text in failures), failures


def test_a_failed_test_cleared_after_its_data_is_fixed_runs_its_descendants_and_the_run_succeeds(
    stack: LocalStack, teleported_order: None
) -> None:
    """The retry from the grid: the bad row is corrected where dbt reads it (raw.orders; staging is a
    view), the failed test's task is cleared with downstream, the model's descendants then run, the
    run succeeds and the marts are the contract's."""
    run_id, state, states = run_pipeline(stack)
    assert (state, states["transform.stg_orders.test"]) == ("failed", "failed"), states
    dsn = stack.warehouse_dsn()
    with psycopg.connect(dsn) as conn:
        fixed = conn.execute("UPDATE raw.orders SET status = 'completed' WHERE order_id = 1 AND status = 'teleported'")
        assert fixed.rowcount == 1

    clear_tasks(base_url(stack), DAG_ID, run_id, ["transform.stg_orders.test"])

    assert wait_for_run(base_url(stack), DAG_ID, run_id, timeout_s=900) == "success"
    after = task_states(base_url(stack), DAG_ID, run_id)
    # The first build's failure stays on record in the producer (it is not below the cleared test);
    # what follows the group waits for the node tasks alone.
    assert {task: s for task, s in after.items() if s != "success"} == {
        "transform.dbt_producer_watcher": "failed",
        "transform.dbt_producer_watcher_done": "upstream_failed",
    }
    for model in STG_ORDERS_DESCENDANTS:
        assert (
            states[f"transform.{model}.run"] == DESCENDANT_OF_A_FAILURE and after[f"transform.{model}.run"] == "success"
        )
    assert marts(dsn) == expected_marts(read_raw_postgres(dsn))


@pytest.fixture
def stale_marketing_spend(stack: LocalStack) -> Iterator[None]:
    """Every marketing spend row loaded 30 hours earlier than it was: past the source's error_after
    (24 h); no new delivery lands, so the run's extraction merges nothing into it."""
    with psycopg.connect(stack.warehouse_dsn()) as conn:
        conn.execute("UPDATE raw.marketing_spend SET _loaded_at = _loaded_at - interval '30 hours'")
    yield
    with psycopg.connect(stack.warehouse_dsn()) as conn:
        conn.execute("UPDATE raw.marketing_spend SET _loaded_at = _loaded_at + interval '30 hours'")


def test_a_stale_source_fails_its_task_and_leaves_out_what_reads_only_it(
    stack: LocalStack, stale_marketing_spend: None
) -> None:
    """The producer's own freshness check (no `dbt source freshness` before the build): the stale
    source's task fails (its retry runs dbt's own check, which agrees) and alerts; the model that
    reads only it is left out of the build, with its tests; what also reads fresh data still runs."""
    run_id, state, states = run_pipeline(stack)

    assert state == "failed"
    assert states["transform.raw_marketing_spend.source"] == "failed"
    assert states["transform.stg_marketing_spend.run"] == "skipped"
    assert states["transform.stg_marketing_spend.test"] == "skipped"
    for task in ("transform.fct_marketing_performance.run", "transform.raw_customers.source"):
        assert states[task] == "success", task
    for model in set(UNRELATED_MODELS) - {"stg_marketing_spend"}:
        assert states[f"transform.{model}.run"] == "success", model
    producer_log = next(
        Path(stack.layout.logs_dir).rglob(f"run_id={run_id}/task_id=transform.dbt_producer_watcher/attempt=1.log")
    ).read_text()
    assert "source raw.marketing_spend: error" in producer_log and "dbt source freshness" not in producer_log
    source_logs = "".join(
        path.read_text()
        for path in Path(stack.layout.logs_dir).rglob(f"run_id={run_id}/task_id=transform.raw_marketing_spend.source/*")
    )
    assert "ERROR STALE freshness of raw.marketing_spend" in source_logs  # dbt's own check, on the retry
    failures = [m["text"] for m in slack_messages(stack, run_id) if "failed" in m["text"]]
    assert any("raw_marketing_spend.source" in text for text in failures), failures


def secret_forms(stack: LocalStack) -> dict[str, str]:
    """Every connection password, as written and URL-encoded (how a URI or a query string carries it)."""
    passwords = [c.password for c in stack.settings.connections if c.password and len(c.password) >= 6]
    assert passwords
    forms = {password: password for password in passwords}
    forms.update({quote(password, safe=""): password for password in passwords})
    forms.update({quote_plus(password): password for password in passwords})
    return forms


def places_secrets_could_leak_to(stack: LocalStack) -> dict[str, str]:
    """Where earlier drills' runs wrote text: task logs, Slack payloads, XComs, rendered task fields
    in the metadata database, and dbt's target/ and logs/ (place → its text)."""
    from dev.stack import AIRFLOW_METADATA_DB
    from include.orchestration.manifest import DBT_PROJECT_DIR

    files = [*Path(stack.layout.logs_dir).rglob("*.log")]
    files += [f for d in ("target", "logs") for f in (DBT_PROJECT_DIR / d).rglob("*") if f.is_file()]
    places = {str(f): f.read_text(errors="replace") for f in files}
    places["slack payloads"] = json.dumps(
        [json.loads(line)["payload"] for line in stack.layout.slack_log.read_text().splitlines()]
    )
    with psycopg.connect(stack.postgres.dsn(AIRFLOW_METADATA_DB)) as metadata:
        places["xcom"] = json.dumps(metadata.execute("SELECT task_id, value::text FROM xcom").fetchall())
        places["rendered_task_instance_fields"] = json.dumps(
            metadata.execute(
                "SELECT task_id, rendered_fields::text, k8s_pod_yaml::text FROM rendered_task_instance_fields"
            ).fetchall()
        )
    return places


def test_no_connection_password_appears_in_logs_slack_xcoms_rendered_fields_or_dbt_artifacts(stack: LocalStack) -> None:
    forms = secret_forms(stack)
    places = places_secrets_could_leak_to(stack)
    assert any(name.endswith(".log") for name in places) and "failed" in places["slack payloads"]
    assert places["xcom"] != "[]" and places["rendered_task_instance_fields"] != "[]"
    leaks = [(place, password) for place, text in places.items() for form, password in forms.items() if form in text]
    assert not leaks, f"connection passwords (or their URL-encoded forms) appear in: {sorted({p for p, _ in leaks})}"
