"""The Cosmos task group mirrors the dbt lineage of the manifest: one run task and one test task
per model, and each model's run waits for the tests of every model or source it selects from."""

from __future__ import annotations

import dataclasses
import json

import pendulum
import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TriggerRule

from include.orchestration.consumers import NODES_DONE_TASK_ID, RELEASE_TASK_ID, ConsumerMixin
from include.orchestration.manifest import require_manifest
from include.orchestration.transform import (
    MART_ASSETS,
    PRODUCER_ABSORBED_TASK_ID,
    SETTINGS,
    TRANSFORM_GROUP_ID,
    transform_task_group,
)


@pytest.fixture(scope="module")
def rendered() -> tuple[dict, DAG]:
    manifest = json.loads(require_manifest().read_text())
    with DAG("lineage_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        transform_task_group()
    return manifest, dag


def models(manifest: dict) -> dict[str, dict]:
    return {node["name"]: node for node in manifest["nodes"].values() if node["resource_type"] == "model"}


def test_every_model_is_its_own_run_task_followed_by_its_tests(rendered: tuple[dict, DAG]) -> None:
    manifest, dag = rendered
    for name in models(manifest):
        run = dag.task_dict.get(f"{TRANSFORM_GROUP_ID}.{name}.run") or dag.task_dict.get(
            f"{TRANSFORM_GROUP_ID}.{name}_run"
        )
        assert run is not None, f"no task for model {name}"
        tests = dag.task_dict.get(f"{TRANSFORM_GROUP_ID}.{name}.test")
        if tests is not None:
            assert run.task_id in tests.upstream_task_ids


def test_each_model_waits_for_what_it_selects_from(rendered: tuple[dict, DAG]) -> None:
    manifest, dag = rendered
    by_id = {**manifest["nodes"], **manifest["sources"]}
    for name, node in models(manifest).items():
        run = dag.task_dict.get(f"{TRANSFORM_GROUP_ID}.{name}.run") or dag.task_dict[f"{TRANSFORM_GROUP_ID}.{name}_run"]
        upstream = run.get_flat_relative_ids(upstream=True)
        for parent_id in node["depends_on"]["nodes"]:
            parent = by_id[parent_id]
            parent_name = (
                parent["name"] if parent["resource_type"] == "model" else f"{parent['source_name']}_{parent['name']}"
            )
            assert any(
                f".{parent_name}." in f".{task_id}" or f".{parent_name}_" in f".{task_id}" for task_id in upstream
            ), f"{name} does not wait for {parent_name}"


def test_marts_update_their_assets_and_node_types_get_their_policies(rendered: tuple[dict, DAG]) -> None:
    _, dag = rendered
    for mart, asset in MART_ASSETS.items():
        assert asset in dag.task_dict[f"{TRANSFORM_GROUP_ID}.{mart}.run"].outlets
    assert dag.task_dict[f"{TRANSFORM_GROUP_ID}.fct_orders.run"].retries == 2
    assert dag.task_dict[f"{TRANSFORM_GROUP_ID}.fct_orders.test"].retries == 1
    assert dag.task_dict[f"{TRANSFORM_GROUP_ID}.dbt_producer_watcher"].retries == 0
    # a mart resumes on a worker for its Asset after a failed build: a pool bounds how many at once
    assert {dag.task_dict[f"{TRANSFORM_GROUP_ID}.{mart}.run"].pool for mart in MART_ASSETS} == {"dbt_asset_events"}
    assert dag.task_dict[f"{TRANSFORM_GROUP_ID}.stg_orders.run"].pool == "default_pool"


def test_what_follows_the_group_waits_for_the_node_tasks_not_the_producers_exit_code(
    rendered: tuple[dict, DAG],
) -> None:
    """A failed first build must not fail a run whose failed nodes were fixed and cleared: the
    producer's gate is no leaf of the group, the task after it is done whatever the gate ended with;
    what follows the group waits for the node tasks, through the task after all of them."""
    _, dag = rendered
    with dag:
        follower = EmptyOperator(task_id="after_the_group")
    dag.task_group_dict[TRANSFORM_GROUP_ID] >> follower
    gate = f"{TRANSFORM_GROUP_ID}.dbt_producer_watcher_done"
    finished = dag.task_dict[f"{TRANSFORM_GROUP_ID}.{PRODUCER_ABSORBED_TASK_ID}"]
    assert gate not in follower.upstream_task_ids
    assert finished.task_id in follower.upstream_task_ids and finished.upstream_task_ids == {gate}
    assert finished.trigger_rule == TriggerRule.ALL_DONE
    others = follower.upstream_task_ids - {finished.task_id}
    if not SETTINGS.consumers_start_from_trigger:  # poking sensors: the group's leaves are node tasks
        assert others and all(hasattr(dag.task_dict[task_id], "model_unique_id") for task_id in others)
        return
    assert others == {f"{TRANSFORM_GROUP_ID}.{NODES_DONE_TASK_ID}"}


def test_every_consumer_is_released_at_the_stages_start_and_gates_the_task_after_them(
    rendered: tuple[dict, DAG],
) -> None:
    """Each model, test and source task takes ``one_success`` over the release task (done when the
    stage starts) and its parents, so it defers at once; the lineage edges stay; the task after
    them all is ``none_failed``, so a failed node fails the run through a leaf."""
    _, dag = rendered
    if not SETTINGS.consumers_start_from_trigger:
        pytest.skip("consumers poke")
    release = dag.task_dict[f"{TRANSFORM_GROUP_ID}.{RELEASE_TASK_ID}"]
    done = dag.task_dict[f"{TRANSFORM_GROUP_ID}.{NODES_DONE_TASK_ID}"]
    consumers = {t.task_id for t in dag.tasks if isinstance(t, ConsumerMixin)}
    assert len(consumers) > 20
    assert release.downstream_task_ids == consumers and done.upstream_task_ids == consumers
    assert release.upstream_task_ids == set() and done.trigger_rule == TriggerRule.NONE_FAILED
    assert {dag.task_dict[t].trigger_rule for t in consumers} == {TriggerRule.ONE_SUCCESS}
    # the lineage is still there: fct_orders waits (in its trigger) for int_orders_enriched's tests
    assert (
        f"{TRANSFORM_GROUP_ID}.int_orders_enriched.test"
        in dag.task_dict[f"{TRANSFORM_GROUP_ID}.fct_orders.run"].upstream_task_ids
    )


def test_watcher_sensors_look_for_their_node_result_at_the_configured_interval(rendered: tuple[dict, DAG]) -> None:
    _, dag = rendered
    sensors = [t for t in dag.tasks if t.task_id.startswith(f"{TRANSFORM_GROUP_ID}.") and hasattr(t, "poke_interval")]
    assert len(sensors) > 20
    assert {t.poke_interval for t in sensors} == {SETTINGS.watcher_poke_interval_s}
    assert {t.deferrable for t in sensors} == {False}  # started in the triggerer or poking, never deferring
    assert SETTINGS.watcher_poke_interval_s < 10  # Cosmos's default, which adds up per lineage level


def test_a_sensor_without_a_node_status_concludes_from_the_producers_build(rendered: tuple[dict, DAG]) -> None:
    """Cosmos writes no status for a test on several models: success of the build decides."""
    _, dag = rendered
    sensors = [t for t in dag.tasks if hasattr(t, "poke_interval")]
    assert any(t.model_unique_id.startswith("test.") for t in sensors)  # tests on several models are among them
    for sensor in sensors:
        assert sensor._handle_no_dbt_node_status("success", 1, {}) is True
        sensor.poke_retry_number = 0
        assert sensor._handle_no_dbt_node_status("running", 1, {}) is False  # still waiting


def test_consumers_start_from_their_trigger_with_templated_run_and_try(rendered: tuple[dict, DAG]) -> None:
    """Every model/test/source task is created deferred by the scheduler; the triggerer renders the
    run id and try number (a try after the first resumes on a worker for Cosmos's fallback run)."""
    from include.orchestration.consumers import BUILT_OUTLETS, _assets, _in_cleared_builds

    _, dag = rendered
    consumers = [t for t in dag.tasks if hasattr(t, "poke_interval")]
    assert {type(t).__module__ for t in consumers} == {"include.orchestration.consumers"}
    assert {t.start_from_trigger for t in consumers} == {SETTINGS.consumers_start_from_trigger}
    if not SETTINGS.consumers_start_from_trigger:  # the switch back to Cosmos's poking sensors
        assert {t.start_trigger_args for t in consumers} == {None}
        return
    producer = dag.task_dict[f"{TRANSFORM_GROUP_ID}.dbt_producer_watcher"]
    for consumer in consumers:
        args = consumer.start_trigger_args
        assert args.next_method == "execute_complete"
        kwargs = args.trigger_kwargs
        assert kwargs["producer_task_id"] == producer.task_id
        assert kwargs["run_id"] == "{{ run_id }}" and kwargs["try_number"] == "{{ ti.try_number }}"
        assert {"run_id", "try_number"} <= set(consumer.template_fields)
        assert kwargs["resume_on_success"] is bool(_assets(consumer))  # only the marts wait, for their Assets
        # what can lead a cleared build lists the alias it emits its followers' Assets through
        assert (BUILT_OUTLETS in consumer.outlets) is _in_cleared_builds(consumer), consumer.task_id
    assert sum(bool(_assets(t)) for t in consumers) == len(MART_ASSETS)


def test_the_serialized_dag_keeps_the_trigger_start(rendered: tuple[dict, DAG]) -> None:
    """What the scheduler reads: ``start_from_trigger`` and ``start_trigger_args`` survive serialization."""
    from airflow.serialization.serialized_objects import DagSerialization

    _, dag = rendered
    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    task = serialized.get_task(f"{TRANSFORM_GROUP_ID}.fct_orders.run")
    assert task.start_from_trigger is SETTINGS.consumers_start_from_trigger
    if SETTINGS.consumers_start_from_trigger:
        assert task.start_trigger_args.trigger_cls == "include.orchestration.consumers.ConsumerTrigger"


def _local_settings():
    """The plugins folder's settings module, loaded by path as Airflow loads it."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "plugins" / "airflow_local_settings.py"
    spec = importlib.util.spec_from_file_location("project_local_settings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_cleared_consumer_goes_to_the_dbt_queue_and_its_first_try_stays(
    rendered: tuple[dict, DAG], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cluster policy: try 0 (creation) keeps the default queue and the mart's pool; a cleared
    try reruns dbt on ``dbt``, in the default pool (a cleared mart that leads the build must not
    hold the marts' one slot while the marts below it wait to emit their Assets)."""
    from airflow.configuration import conf
    from airflow.models.taskinstance import TaskInstance
    from airflow.serialization.serialized_objects import DagSerialization

    from include.orchestration.consumers import ModelConsumer

    settings = _local_settings()
    assert ModelConsumer.__module__ == settings.CONSUMER_MODULE
    monkeypatch.setenv("AIRFLOW__COSMOS__WATCHER_DBT_EXECUTION_QUEUE", "dbt")
    assert conf.get(*settings.DBT_QUEUE_OPTION) == "dbt"

    _, dag = rendered
    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    model = TaskInstance(task=serialized.get_task(f"{TRANSFORM_GROUP_ID}.fct_orders.run"), dag_version_id=None)
    default_queue = model.queue
    assert default_queue != "dbt"
    assert model.pool == "dbt_asset_events"  # the marts' policy

    model.try_number = 0
    settings.task_instance_mutation_hook(model)
    assert (model.queue, model.pool) == (default_queue, "dbt_asset_events")

    model.try_number = 1
    settings.task_instance_mutation_hook(model)
    assert (model.queue, model.pool) == ("dbt", "default_pool")

    producer_task = next(t for t in serialized.tasks if t.task_id.endswith("dbt_producer_watcher"))
    producer = TaskInstance(task=producer_task, dag_version_id=None)
    before = (producer.queue, producer.pool)
    assert producer.pool == "dbt_build"
    producer.try_number = 1
    settings.task_instance_mutation_hook(producer)
    assert (producer.queue, producer.pool) == before


def test_the_dag_processor_preloads_as_the_task_forking_processes_do() -> None:
    """The DAG processor forks a parse per DAG file, again for every batch of task-end callbacks."""
    settings = _local_settings()
    assert settings._forks_tasks(["airflow", "dag-processor"])
    assert settings._forks_tasks(["airflow", "scheduler"]) and settings._forks_tasks(["airflow", "celery", "worker"])
    assert not settings._forks_tasks(["airflow", "api-server"]) and not settings._forks_tasks(["airflow", "triggerer"])


@pytest.mark.parametrize("command", ["triggerer", "scheduler", "api-server"])
def test_only_the_triggerer_raises_its_gc_thresholds(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The triggerer deserializes the whole DAG for every node task it starts; its collector is tuned
    for that burst (inherited by the forked trigger runner), every other process keeps Python's."""
    import gc
    import sys

    before = gc.get_threshold()
    monkeypatch.setattr(sys, "argv", ["airflow", command])
    try:
        settings = _local_settings()
        expected = settings.TRIGGERER_GC_THRESHOLDS if command == "triggerer" else before
        assert gc.get_threshold() == expected
        assert settings.TRIGGERER_GC_THRESHOLDS[0] > before[0]
    finally:
        gc.set_threshold(*before)


def test_a_cleared_build_ticket_serves_only_its_clear_and_its_tasks() -> None:
    """A ticket left by an earlier clear of the run, or one that did not list the task, is not
    read as this clear's build (the task then runs its own node)."""
    from include.orchestration.consumers import _ticket_covers

    started = 1796280000.123456
    ticket = {"leader": "transform.a.run", "run_started": started, "tasks": ["transform.b.run", "transform.b.test"]}
    assert _ticket_covers(ticket, "transform.b.run", str(started))  # the trigger's value is a rendered template
    assert not _ticket_covers(ticket, "transform.b.run", str(started - 60))  # an earlier start of the run
    assert not _ticket_covers(ticket, "transform.c.run", str(started))
    assert not _ticket_covers(None, "transform.b.run", str(started))
    assert not _ticket_covers(ticket, "transform.b.run", "")


def test_a_task_ended_from_a_cleared_build_ends_in_the_triggerer_and_keeps_the_ticket() -> None:
    """A follower of a cleared build needs no worker: its trigger ends it with the ticket as its XCom;
    a task with Assets (a mart) goes on only once its leader has emitted them (see below)."""
    from airflow.triggers.base import TaskSuccessEvent, TriggerEvent

    from include.orchestration.consumers import CLEARED_BUILD_KEY, ConsumerTrigger

    ticket = {"leader": "transform.a.run", "run_started": 1.0, "tasks": ["transform.b.run"]}
    event = TriggerEvent({"status": "success", CLEARED_BUILD_KEY: ticket})
    common = {"model_unique_id": "model.p.b", "producer_task_id": "p", "dag_id": "d", "run_id": "r", "map_index": -1}
    ended = ConsumerTrigger(**common)._ending(event)
    assert isinstance(ended, TaskSuccessEvent) and ended.xcoms == {CLEARED_BUILD_KEY: ticket}
    assert ConsumerTrigger(**common, resume_on_success=True)._ending(event) is event


def test_consumers_pass_their_upstream_tasks_and_the_runs_start_to_their_trigger(
    rendered: tuple[dict, DAG],
) -> None:
    _, dag = rendered
    task = dag.task_dict[f"{TRANSFORM_GROUP_ID}.fct_orders.run"]
    if not SETTINGS.consumers_start_from_trigger:
        pytest.skip("consumers poke")
    kwargs = task.start_trigger_args.trigger_kwargs
    release = f"{TRANSFORM_GROUP_ID}.{RELEASE_TASK_ID}"
    assert release in task.upstream_task_ids
    assert kwargs["upstream_task_ids"] == sorted(task.upstream_task_ids - {release})  # its parents in the lineage
    assert kwargs["released"] is True
    assert kwargs["run_started"] == "{{ dag_run.start_date.timestamp() }}" and "run_started" in task.template_fields
    # the models dbt builds before it (its parents' tasks are their tests' tasks): read from the manifest
    manifest, _ = rendered
    node = manifest["nodes"]["model.ecommerce.fct_orders"]
    parents = sorted(uid for uid in node["depends_on"]["nodes"] if uid.startswith("model."))
    assert parents and kwargs["parent_models"] == parents
    tests = dag.task_dict[f"{TRANSFORM_GROUP_ID}.fct_orders.test"].start_trigger_args.trigger_kwargs
    assert tests["parent_models"] == ["model.ecommerce.fct_orders"]


def test_a_cleared_build_selects_and_publishes_a_test_on_several_models(rendered: tuple[dict, DAG]) -> None:
    """A test on several models has its own task, which reads the aggregate of its node alone: the
    cleared build lists it as its own "model", so it is selected and its aggregate is published."""
    from cosmos.operators._watcher.aggregation import (
        get_tests_status_xcom_key,
        push_test_result_or_aggregate,
    )

    from include.orchestration.consumers import _in_cleared_builds, _is_detached_test, _status_key

    _, dag = rendered
    task = dag.task_dict[f"{TRANSFORM_GROUP_ID}.assert_daily_revenue_matches_fct_orders_test"]
    assert _is_detached_test(task) and not _in_cleared_builds(task)  # built by its models' leader
    assert not _is_detached_test(dag.task_dict[f"{TRANSFORM_GROUP_ID}.fct_orders.test"])
    uid = task.model_unique_id
    assert task._selected_nodes({}) == []  # nothing to select from the producer's map alone
    mapping = {uid: [uid]}
    assert task._selected_nodes(mapping) == ["assert_daily_revenue_matches_fct_orders"]

    class _TaskInstance:  # records what Cosmos's parser would push as XComs
        def __init__(self) -> None:
            self.pushed: dict[str, object] = {}

        def xcom_push(self, key: str, value: object) -> None:
            self.pushed[key] = value

    ti = _TaskInstance()
    push_test_result_or_aggregate(uid, "pass", mapping, {}, ti)
    assert _status_key(task) == get_tests_status_xcom_key(uid) and ti.pushed == {_status_key(task): "pass"}


def test_the_producer_publishes_each_test_on_several_models_as_dbt_reports_it(rendered: tuple[dict, DAG]) -> None:
    """The producer's pre_execute hook lists each test on several models as its own "model", so
    Cosmos's parser (the real one, fed dbt's JSON line) publishes the test's result for its task
    during the build; the models' own test lists are kept."""
    import copy
    import json

    from include.orchestration.consumers import _is_detached_test, _status_key, watch_detached_tests

    _, dag = rendered
    producer = copy.copy(dag.task_dict[f"{TRANSFORM_GROUP_ID}.dbt_producer_watcher"])
    assert producer._pre_execute_hook.func.__name__ == "_before_build"  # wired, whatever the freshness switch
    cosmos_map = copy.deepcopy(producer.tests_per_model)
    detached = [task for task in dag.tasks if _is_detached_test(task)]
    assert len(detached) >= 2
    watch_detached_tests({"task": producer, "dag": dag})
    assert {uid: producer.tests_per_model[uid] for uid in cosmos_map} == cosmos_map
    for task in detached:
        assert producer.tests_per_model[task.model_unique_id] == [task.model_unique_id]

    class _TaskInstance:  # records what Cosmos's parser pushes as XComs
        def __init__(self) -> None:
            self.pushed: dict[str, object] = {}

        def xcom_push(self, key: str, value: object) -> None:
            self.pushed[key] = value

        def xcom_pull(self, key: str, **_: object) -> object:
            return self.pushed.get(key)

    ti, task = _TaskInstance(), detached[0]
    finished = {
        "info": {"name": "NodeFinished", "msg": "1 of 1 PASS", "ts": "2026-12-04T00:00:01Z"},
        "data": {
            "node_info": {
                "unique_id": task.model_unique_id,
                "resource_type": "test",
                "node_status": "pass",
                "node_started_at": "2026-12-04T00:00:00",
                "node_finished_at": "2026-12-04T00:00:01",
            }
        },
    }
    producer._make_parse_callable()(json.dumps(finished), {"context": {"ti": ti}})
    assert ti.pushed.get(_status_key(task)) == "pass"


def test_the_producer_emits_the_outlets_of_the_tasks_that_end_in_the_triggerer(rendered: tuple[dict, DAG]) -> None:
    """Its post_execute hook emits, through its alias outlet, the Asset of each mart whose node the
    build succeeded (the real hook, on the rendered DAG, with the producer's published statuses);
    a mart left out of the build gets none."""
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from include.orchestration.consumers import BUILT_OUTLETS, publish_built_outlets

    _, dag = rendered
    producer = dag.task_dict[f"{TRANSFORM_GROUP_ID}.dbt_producer_watcher"]
    if not SETTINGS.consumers_start_from_trigger:  # the marts' own tasks emit them on a worker
        assert BUILT_OUTLETS not in producer.outlets
        return
    assert BUILT_OUTLETS in producer.outlets and producer._post_execute_hook is publish_built_outlets

    published = {  # what the producer pushed while dbt built (a model's status is a dict)
        "model__ecommerce__fct_orders_status": {"status": "success", "outlet_uris": []},
        "model__ecommerce__dim_customers_status": {"status": "success", "outlet_uris": []},
        "model__ecommerce__fct_daily_revenue_status": "success",
        "model__ecommerce__fct_marketing_performance_status": "skipped",  # left out: a stale source
    }

    class ProducerTI:
        def xcom_pull(self, task_ids: str, key: str) -> object:
            assert task_ids == producer.task_id
            return published.get(key)

    events = OutletEventAccessors()
    publish_built_outlets({"ti": ProducerTI(), "task": producer, "dag": dag, "outlet_events": events})
    emitted = events[BUILT_OUTLETS].asset_alias_events
    assert sorted(e.dest_asset_key.uri for e in emitted) == sorted(
        MART_ASSETS[mart].uri for mart in ("fct_orders", "dim_customers", "fct_daily_revenue")
    )
    by_uri = {e.dest_asset_key.uri: e.extra for e in emitted}
    assert by_uri[MART_ASSETS["fct_orders"].uri] == {
        "task_id": f"{TRANSFORM_GROUP_ID}.fct_orders.run",
        "dbt_node": "model.ecommerce.fct_orders",
    }


@pytest.mark.parametrize("cleared", [False, True], ids=["producer", "cleared build"])
@pytest.mark.parametrize(("builder_state", "ends_here"), [("success", True), ("failed", False)])
def test_a_mart_ends_in_the_triggerer_once_its_builder_succeeded_else_resumes(
    cleared: bool, builder_state: str, ends_here: bool
) -> None:
    """After its node's success, a task with Assets waits for the end of the task that built the node
    (the producer, or a cleared build's leader): a success means that task emitted them (the task
    ends here, a cleared build's follower with the ticket); a failed build emitted nothing (Cosmos's
    event goes back: it resumes on a worker, which emits them)."""
    import asyncio

    from airflow.triggers.base import TaskSuccessEvent, TriggerEvent

    from include.orchestration.consumers import CLEARED_BUILD_KEY, ConsumerTrigger

    ticket = {"leader": "transform.a.run", "run_started": 1.0, "tasks": ["transform.m.run"]}
    builder = ticket["leader"] if cleared else "p"
    states = iter(["running", "running", builder_state])
    looked_up: set[str] = set()

    class Trigger(ConsumerTrigger):
        async def _task_state(self, task_id: str, *_: object) -> str:  # the state lookup, as the API returns it
            looked_up.add(task_id)
            return next(states)

    trigger = probe_trigger(Trigger, resume_on_success=True)
    built = TriggerEvent({"status": "success", **({CLEARED_BUILD_KEY: ticket} if cleared else {})})
    event = asyncio.run(trigger._with_outlets_emitted(built))
    assert looked_up == {builder}
    if ends_here:
        assert isinstance(event, TaskSuccessEvent)
        assert event.xcoms == ({CLEARED_BUILD_KEY: ticket} if cleared else None)
    else:
        assert event is built and trigger._ending(event) is event
    failed = TriggerEvent({"status": "failed"})  # nothing to wait for: the task resumes to report it
    assert asyncio.run(trigger._with_outlets_emitted(failed)) is failed


def test_a_cleared_builds_leader_emits_the_assets_of_its_followers_that_end_from_it(
    rendered_with_tests_in_model_task: tuple[dict, DAG],
) -> None:
    """The leader emits, through its alias outlet, the Asset of each follower mart whose node and
    tests its build passed (the real function, on the rendered DAG, with the leader's published
    statuses); a mart whose tests failed (it resumes and fails, naming them) or that the build
    left out gets none, and a model task without an Asset none either."""
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from include.orchestration.consumers import BUILT_OUTLETS, emit_built_outlets

    _, dag = rendered_with_tests_in_model_task
    leader = dag.task_dict[f"{TRANSFORM_GROUP_ID}.stg_orders_run"]
    assert BUILT_OUTLETS in leader.outlets
    followers = [dag.task_dict[f"{TRANSFORM_GROUP_ID}.{name}_run"] for name in (*MART_ASSETS, "int_orders_enriched")]
    published = {  # what the leader pushed while dbt built (a model's status is a dict)
        "model__ecommerce__fct_orders_status": {"status": "success", "outlet_uris": []},
        "model__ecommerce__fct_orders_tests_status": "pass",
        "model__ecommerce__dim_customers_status": {"status": "success", "outlet_uris": []},
        "model__ecommerce__dim_customers_tests_status": "fail",
        "model__ecommerce__fct_daily_revenue_status": {"status": "success", "outlet_uris": []},
        "model__ecommerce__fct_daily_revenue_tests_status": "pass",
        "model__ecommerce__int_orders_enriched_status": {"status": "success", "outlet_uris": []},
        "model__ecommerce__int_orders_enriched_tests_status": "pass",
    }

    class LeaderTI:
        def xcom_pull(self, task_ids: str, key: str) -> object:
            assert task_ids == leader.task_id
            return published.get(key)

    events = OutletEventAccessors()
    context = {"ti": LeaderTI(), "task": leader, "dag": dag, "outlet_events": events}
    emit_built_outlets(context, leader.task_id, followers, require_tests_passed=True)
    emitted = {e.dest_asset_key.uri: e.extra for e in events[BUILT_OUTLETS].asset_alias_events}
    assert emitted == {
        MART_ASSETS[mart].uri: {"task_id": f"{TRANSFORM_GROUP_ID}.{mart}_run", "dbt_node": f"model.ecommerce.{mart}"}
        for mart in ("fct_orders", "fct_daily_revenue")
    }


@pytest.fixture(scope="module")
def rendered_with_tests_in_model_task() -> tuple[dict, DAG]:
    manifest = json.loads(require_manifest().read_text())
    settings = dataclasses.replace(SETTINGS, tests_in_model_task=True, consumers_start_from_trigger=True)
    with DAG("tests_in_model_task_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        transform_task_group(settings=settings)
    return manifest, dag


def test_with_tests_in_model_task_each_model_is_one_task_gated_by_its_tests_which_the_build_runs(
    rendered_with_tests_in_model_task: tuple[dict, DAG],
) -> None:
    from include.orchestration.transform import TESTS_IN_THE_BUILD, node_kind

    manifest, dag = rendered_with_tests_in_model_task
    assert not [task for task in dag.task_ids if node_kind(task) == "test"]
    tested = {
        uid
        for node in manifest["nodes"].values()
        if node["resource_type"] == "test"
        for uid in node["depends_on"]["nodes"]
    }
    producer = dag.task_dict[f"{TRANSFORM_GROUP_ID}.dbt_producer_watcher"]
    for name, node in models(manifest).items():
        task = dag.task_dict[f"{TRANSFORM_GROUP_ID}.{name}_run"]
        assert task.gated_by_tests is (node["unique_id"] in tested), name
        assert task.start_trigger_args.trigger_kwargs["gated_by_tests"] is task.gated_by_tests
    stg_orders = dag.task_dict[f"{TRANSFORM_GROUP_ID}.stg_orders_run"]
    selected = stg_orders._selected_nodes(producer.tests_per_model)  # a cleared build: the model with its tests
    assert selected[0] == "stg_orders" and any(
        name.startswith("accepted_values_stg_orders_status") for name in selected
    )
    flags = producer.dbt_cmd_flags
    assert flags[: len(TESTS_IN_THE_BUILD)] == list(TESTS_IN_THE_BUILD)  # with Cosmos's model/seed/snapshot after
    assert {"model", "test", "unit_test"} <= {flags[i + 1] for i, flag in enumerate(flags) if flag == "--resource-type"}


@pytest.mark.parametrize(
    ("aggregates", "producer_state", "reason"),
    [
        ([None, "pass"], "running", None),  # its tests passed: the node's own success event
        ([None, None, "fail"], "running", "tests_failed"),  # resumes on a worker, which names them
        ([None, None], "success", None),  # the build selected none of them (Cosmos's "node not run")
        ([None, None], "failed", "producer_failed"),  # the build died before they ran: the retry builds them
    ],
)
def test_a_gated_trigger_ends_its_task_only_once_the_tests_reported(
    aggregates: list[str | None], producer_state: str, reason: str | None
) -> None:
    import asyncio

    from airflow.triggers.base import TriggerEvent

    from include.orchestration.consumers import ConsumerTrigger

    published = iter(aggregates)
    lookups: list[tuple[str, str]] = []

    class Trigger(ConsumerTrigger):
        async def _get_producer_task_status(self, *_: object) -> str:
            return producer_state

        async def _xcom_of(self, task_id: str, key: str) -> object:
            lookups.append((task_id, key))
            return next(published, None)

    trigger = probe_trigger(Trigger, gated_by_tests=True)
    built = TriggerEvent({"status": "success"})
    event = asyncio.run(trigger._after_the_tests(built))
    assert lookups[0] == ("p", "model__p__m_tests_status")
    assert (
        (event is built)
        if reason is None
        else (event.payload["reason"] == reason and event.payload["status"] == "failed")
    )


def test_tests_in_the_model_task_are_refused_without_triggers_which_gate_on_them() -> None:
    with pytest.raises(ValueError, match="needs consumers_start_from_trigger.*ECOMMERCE_TESTS_IN_MODEL_TASK"):
        dataclasses.replace(SETTINGS, tests_in_model_task=True, consumers_start_from_trigger=False)


@pytest.mark.parametrize(
    ("task_id", "commands"),
    [
        ("stg_orders_run", [(["build"], ["--select", "stg_orders"])]),  # the model with its tests
        (
            "raw_customers_source",  # dbt's own freshness check, then the source's tests
            [
                (["source", "freshness"], ["--select", "source:raw.customers"]),
                (["test"], ["--select", "source:raw.customers"]),
            ],
        ),
    ],
)
def test_a_retried_task_gated_by_its_tests_runs_them_with_its_node(
    rendered_with_tests_in_model_task: tuple[dict, DAG],
    monkeypatch: pytest.MonkeyPatch,
    task_id: str,
    commands: list[tuple[list[str], list[str]]],
) -> None:
    """A retry (or a clear with nothing cleared below) falls back to dbt for the node alone: with
    its tests in its task, the fallback runs them too. The dbt commands are recorded, not run."""
    _, dag = rendered_with_tests_in_model_task
    task = dag.task_dict[f"{TRANSFORM_GROUP_ID}.{task_id}"]
    assert task.gated_by_tests
    ran: list[tuple[list[str], list[str]]] = []
    monkeypatch.setattr(
        task, "build_and_run_cmd", lambda context, cmd_flags: ran.append((list(task.base_cmd), cmd_flags))
    )
    monkeypatch.setattr(task, "_cleared_followers", lambda context: [])  # nothing else cleared

    class _TaskInstance:
        def xcom_pull(self, *_: object, **__: object) -> None:  # the producer published no flags
            return None

    assert task._fallback_to_non_watcher_run(2, {"ti": _TaskInstance(), "dag": dag}) is True
    assert [(base, flags[-2:]) for base, flags in ran] == commands
    assert task.base_cmd == type(task).base_cmd  # the class's own command again


def probe_trigger(cls: type, **kwargs: object) -> object:
    """A consumer trigger for node ``model.p.m`` of producer ``p`` in DAG ``d``, run ``r``, polling fast."""
    return cls(
        model_unique_id="model.p.m",
        producer_task_id="p",
        dag_id="d",
        run_id="r",
        map_index=-1,
        poke_interval=0.01,
        **kwargs,
    )
