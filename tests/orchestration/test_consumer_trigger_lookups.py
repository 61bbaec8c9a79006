"""The consumers of a run wait in one triggerer process: their lookups of the producer's state are
shared, one per interval for all of them, a consumer looks its node up once its parent models'
results have been read, and they do not wait for dbt's version banner.

The lookup itself (Airflow's Execution API, through the triggerer's supervisor) is replaced here by
a counting stand-in under :class:`ConsumerTrigger` in the method order; the real lookup runs in the
pipeline drills (``tests/dags/test_pipeline_drills.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from cosmos.operators._watcher.state import get_status_xcom_key
from cosmos.operators._watcher.triggerer import WatcherTrigger

from include.orchestration.consumers import ConsumerTrigger


class _CountingLookup(WatcherTrigger):
    lookups: ClassVar[list[tuple[str, str]]] = []
    xcoms: ClassVar[dict[str, Any]] = {}  # the producer's XComs by key
    producer_state: ClassVar[str] = "running"

    async def _get_producer_task_status(self) -> str | None:
        type(self).lookups.append((str(self.run_id), self.producer_task_id))
        await asyncio.sleep(0)  # a real lookup yields to the other triggers while it waits
        return type(self).producer_state

    async def get_xcom_val_af3(self, key: str) -> Any | None:
        type(self).lookups.append((str(self.run_id), key))
        return type(self).xcoms.get(key)


class _Trigger(ConsumerTrigger, _CountingLookup):
    pass


def _trigger(run_id: str, model: str = "model.ecommerce.stg_orders", **kwargs: Any) -> _Trigger:
    return _Trigger(
        model_unique_id=model,
        producer_task_id="transform.dbt_producer_watcher",
        dag_id="ecommerce_elt",
        run_id=run_id,
        map_index=-1,
        **{"poke_interval": 2, **kwargs},
    )


@pytest.fixture(autouse=True)
def _fresh_lookups() -> None:
    _CountingLookup.lookups, _CountingLookup.xcoms, _CountingLookup.producer_state = [], {}, "running"


def _node_lookups(model: str) -> list[tuple[str, str]]:
    return [lookup for lookup in _CountingLookup.lookups if lookup[1] == get_status_xcom_key(model)]


async def _until_waiting(task: asyncio.Future[Any]) -> None:
    """Let the event loop run ``task`` until it blocks on something other than the loop itself."""
    for _ in range(100):
        await asyncio.sleep(0)
    assert not task.done()


def test_a_released_consumer_looks_up_its_node_once_its_parents_results_are_read() -> None:
    """While dbt cannot have built the node (its parent models have no result yet) the consumer
    makes no lookup of its node; the parent's consumer reading a result ends that wait at once."""
    parent, child = "model.ecommerce.stg_orders", "model.ecommerce.fct_orders"

    async def scenario() -> None:
        waiting = _trigger("run_e", child, parent_models=[parent], released=True, poke_interval=60)
        gate = asyncio.ensure_future(waiting._wait_for_parent_models())
        await _until_waiting(gate)
        assert _node_lookups(child) == []
        _CountingLookup.xcoms[get_status_xcom_key(parent)] = {"status": "success", "outlet_uris": []}
        await _trigger("run_e", parent, released=True)._parse_dbt_node_status_and_compiled_sql()
        await asyncio.wait_for(gate, timeout=5)  # well within the 60-second interval
        assert _node_lookups(child) == []  # Cosmos's loop looks it up next

    asyncio.run(scenario())


def test_a_parents_result_read_for_another_start_of_the_run_does_not_release_the_wait() -> None:
    parent, child = "model.ecommerce.stg_orders", "model.ecommerce.fct_orders"

    async def scenario() -> None:
        _CountingLookup.xcoms[get_status_xcom_key(parent)] = {"status": "success", "outlet_uris": []}
        await _trigger("run_f", parent, run_started=1.0)._parse_dbt_node_status_and_compiled_sql()
        waiting = _trigger("run_f", child, parent_models=[parent], released=True, run_started=2.0, poke_interval=60)
        gate = asyncio.ensure_future(waiting._wait_for_parent_models())
        await _until_waiting(gate)
        gate.cancel()

    asyncio.run(scenario())


def test_a_waiting_consumer_still_looks_up_its_node_now_and_then_and_ends_with_the_producer() -> None:
    """A parent's consumer may wait in another triggerer process: every few intervals the node is
    looked up anyway; and once the producer is done, nothing is waited for."""
    parent, child = "model.ecommerce.stg_orders", "model.ecommerce.fct_orders"
    _CountingLookup.xcoms[get_status_xcom_key(child)] = {"status": "success", "outlet_uris": []}
    waiting = _trigger("run_g", child, parent_models=[parent], released=True, poke_interval=0.01)
    asyncio.run(asyncio.wait_for(waiting._wait_for_parent_models(), timeout=5))
    assert _node_lookups(child)

    _CountingLookup.lookups, _CountingLookup.xcoms, _CountingLookup.producer_state = [], {}, "success"
    done = _trigger("run_h", child, parent_models=[parent], released=True, poke_interval=60)
    asyncio.run(asyncio.wait_for(done._wait_for_parent_models(), timeout=5))
    assert _node_lookups(child) == []


def test_all_consumers_of_a_run_share_one_lookup_of_the_producer_state_per_interval() -> None:

    async def poll() -> list[str | None]:
        triggers = [_trigger("run_a", f"model.ecommerce.m{i}") for i in range(50)] + [_trigger("run_b")]
        first = await asyncio.gather(*(t._get_producer_task_status() for t in triggers))
        again = await asyncio.gather(*(t._get_producer_task_status() for t in triggers))
        return [*first, *again]

    states = asyncio.run(poll())
    assert set(states) == {"running"}
    # one lookup for the 50 consumers of run_a and one for run_b, though each asked twice
    assert sorted(_CountingLookup.lookups) == [
        ("run_a", "transform.dbt_producer_watcher"),
        ("run_b", "transform.dbt_producer_watcher"),
    ]


def test_a_state_older_than_its_maximum_age_is_looked_up_again() -> None:
    async def poll() -> None:
        trigger = _trigger("run_c")
        await trigger._get_producer_task_status()
        await trigger._get_producer_task_status()  # within the default age: shared
        await trigger._get_producer_task_status(0.0)  # a waiter that wants a fresh state (a mart at the end)

    asyncio.run(poll())
    assert len(_CountingLookup.lookups) == 2


def test_a_consumer_does_not_wait_for_dbts_version_banner() -> None:
    """Cosmos's trigger first polls the banner XCom, the producer state and the node until dbt has
    started; the consumer's only lookups are for its node."""
    asyncio.run(asyncio.wait_for(_trigger("run_d")._log_startup_events(), timeout=5))  # Cosmos's waits on
    assert _CountingLookup.lookups == []


def test_the_cleared_tasks_of_a_run_share_their_lookups_of_a_tickets_candidates(monkeypatch: Any) -> None:
    """In a clear every cleared task looks for the leader's ticket on its ancestors; one lookup of a
    candidate per interval serves them all (``XCom.get_one`` counted here in place of the API)."""
    from airflow.sdk.execution_time.xcom import XCom

    looked_up: list[str] = []
    ticket = {"leader": "transform.fct_orders.run", "run_started": 1.0, "tasks": []}

    def get_one(*, task_id: str, **_: Any) -> Any:
        looked_up.append(task_id)
        return ticket if task_id == "transform.fct_orders.run" else None

    monkeypatch.setattr(XCom, "get_one", staticmethod(get_one))
    candidates = ["transform.stg_orders.run", "transform.fct_orders.run"]

    async def clear() -> list[Any]:
        triggers = [_trigger("run_i", f"model.ecommerce.m{i}", run_started=1.0) for i in range(20)]
        for i, trigger in enumerate(triggers):
            trigger.task_id = f"transform.m{i}.run"
            ticket["tasks"].append(trigger.task_id)
        return await asyncio.gather(*(t._find_ticket(candidates) for t in triggers))

    found = asyncio.run(clear())
    assert found == [ticket] * 20
    assert sorted(looked_up) == sorted(candidates)  # not 20 × 2


def test_a_waiting_consumer_keeps_no_copy_of_the_dag_the_triggerer_built_it_from() -> None:
    """The triggerer deserializes the whole DAG for each task started from its trigger and keeps
    the task instance and template context built on it while the trigger runs; with every node
    task waiting at once that was one copy of the DAG per task. Started as Airflow's trigger runner
    starts it (``TriggerRunner.create_triggers`` / ``run_trigger``), a waiting consumer lets its copy go."""
    import gc
    import uuid
    import weakref

    import pendulum
    from airflow.executors.workloads import TaskInstanceDTO
    from airflow.jobs.triggerer_job_runner import TriggerRunner
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from include.orchestration.transform import transform_task_group

    with DAG("dag_copy_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        transform_task_group()
    task = dag.get_task("transform.fct_orders.run")
    encoded_dag = DagSerialization.to_dict(dag)
    now = pendulum.now("UTC")
    ti = TaskInstanceDTO.model_construct(
        id=uuid.uuid4(), task_id=task.task_id, dag_id=dag.dag_id, run_id="run_copy", try_number=1, map_index=-1
    )
    dag_run = {
        "dag_id": dag.dag_id, "run_id": "run_copy", "logical_date": now, "data_interval_start": now,
        "data_interval_end": now, "run_after": now, "start_date": now, "end_date": None, "run_type": "manual",
        "state": "running", "consumed_asset_events": [], "partition_key": None,
    }  # fmt: skip

    async def scenario() -> None:
        runtime_ti = TriggerRunner.create_runtime_ti(ti, encoded_dag, dag_run)
        copy = weakref.ref(runtime_ti.task.dag)
        context = runtime_ti.get_template_context()  # held by run_trigger while the trigger runs
        kwargs = dict(task.start_trigger_args.trigger_kwargs)
        trigger = _Trigger(**kwargs)
        trigger.task_instance = runtime_ti
        trigger.render_template_fields(context=context)
        assert (trigger.run_id, trigger.try_number) == ("run_copy", "1")  # rendered before it lets go
        del runtime_ti
        running = asyncio.ensure_future(trigger.run().__anext__())
        await _until_waiting(running)
        gc.collect()
        assert copy() is None, "the waiting trigger still holds the deserialized DAG"
        assert trigger.task_instance.task_id == task.task_id
        running.cancel()

    asyncio.run(scenario())
