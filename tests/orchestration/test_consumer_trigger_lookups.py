"""The consumers of a run wait in one triggerer process: their lookups of the producer's state are
shared, one per interval for all of them, and they do not wait for dbt's version banner.

The lookup itself (Airflow's Execution API, through the triggerer's supervisor) is replaced here by
a counting stand-in under :class:`ConsumerTrigger` in the method order; the real lookup runs in the
pipeline drills (``tests/dags/test_pipeline_drills.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from cosmos.operators._watcher.triggerer import WatcherTrigger

from include.orchestration import consumers
from include.orchestration.consumers import ConsumerTrigger


class _CountingLookup(WatcherTrigger):
    lookups: ClassVar[list[tuple[str, str]]] = []

    async def _get_producer_task_status(self) -> str | None:
        type(self).lookups.append((str(self.run_id), self.producer_task_id))
        await asyncio.sleep(0)  # a real lookup yields to the other triggers while it waits
        return "running"

    async def get_xcom_val_af3(self, key: str) -> Any | None:
        type(self).lookups.append((str(self.run_id), key))
        return None


class _Trigger(ConsumerTrigger, _CountingLookup):
    pass


def _trigger(run_id: str, model: str = "model.ecommerce.stg_orders") -> _Trigger:
    return _Trigger(
        model_unique_id=model,
        producer_task_id="transform.dbt_producer_watcher",
        dag_id="ecommerce_elt",
        run_id=run_id,
        map_index=-1,
        poke_interval=2,
    )


def test_all_consumers_of_a_run_share_one_lookup_of_the_producer_state_per_interval() -> None:
    _CountingLookup.lookups = []

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


def test_a_state_older_than_its_maximum_age_is_looked_up_again(monkeypatch: Any) -> None:
    _CountingLookup.lookups = []
    monkeypatch.setattr(consumers, "_PRODUCER_STATE_MAX_AGE_S", 0.0)

    async def poll_twice() -> None:
        trigger = _trigger("run_c")
        await trigger._get_producer_task_status()
        await trigger._get_producer_task_status()

    asyncio.run(poll_twice())
    assert len(_CountingLookup.lookups) == 2


def test_a_consumer_does_not_wait_for_dbts_version_banner() -> None:
    """Cosmos's trigger first polls the banner XCom, the producer state and the node until dbt has
    started; the consumer's only lookups are for its node."""
    _CountingLookup.lookups = []
    asyncio.run(asyncio.wait_for(_trigger("run_d")._log_startup_events(), timeout=5))  # Cosmos's waits on
    assert _CountingLookup.lookups == []
