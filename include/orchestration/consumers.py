"""Watcher consumer tasks that start and end in the triggerer: no worker process on the happy path.

Cosmos's WATCHER mode runs one producer task (``dbt build``) and renders every model, test and source
as a consumer sensor that reads the producer's node results from XCom. Stock, each consumer is a
worker process (fork, DAG parse, then poking or deferring), so the dbt stage pays one task start per
node while dbt itself runs in a single process. Here a consumer is instead created deferred by the
scheduler (``start_from_trigger`` with :attr:`ConsumerMixin.start_trigger_args`) and its trigger,
Cosmos's :class:`~cosmos.operators._watcher.triggerer.WatcherTrigger` subclassed as
:class:`ConsumerTrigger`, ends the task itself (``TaskSuccessEvent`` / ``TaskSkippedEvent``) once the
producer reports the node. Only what has to run code goes to a worker, by resuming the task with
``execute_complete`` and Cosmos's event payload:

- a failed node: Cosmos's ``execute_complete`` logs the node's dbt event and fails the task, so the
  error is in the task's own log and the failure callbacks run where they always did;
- a try after the first (an Airflow retry or a cleared task): the producer does not build twice, so
  the task resumes as "producer skipped" and Cosmos runs its fallback (``dbt run|test|source
  freshness --select <node>``). The scheduler starts every try from the trigger (it reads the
  serialized operator, not the try), so the trigger decides by the rendered ``try_number``;
- a node whose task carries Assets (the marts'), when the task that built it did not emit them: a task
  ended by its trigger emits no asset events (``handle_event_submit`` for ``BaseTaskEndEvent`` only
  sets the state). The task that built the node emits them as its own events through
  :data:`BUILT_OUTLETS` (:func:`emit_built_outlets`, the consumer's task id in each event's
  ``extra``): the producer in its ``post_execute`` hook (:func:`publish_built_outlets`), a cleared
  build's leader after its build; so the task waits for that task to end and ends in the triggerer.
  Only if that task failed after building the node (another node failed) does it resume to succeed
  on a worker, which emits them.

**Released at the stage's start, gated by the build.** With triggers, no consumer waits for its
parents' tasks: :func:`release_at_stage_start` puts an empty task before every consumer (done when
the stage starts, as the producer is) and gives the consumers ``one_success``, so all of them defer at
once and each ends as soon as the one build reports its node, not one lineage level (one scheduler
and two triggerer loops) after its parents. The lineage edges stay, for the graph, for *Clear* with
downstream and for the run's outcome. What Airflow's edges decided is decided by the trigger instead:

- a node the build did not succeed for whose parent tasks did not all succeed ends **skipped** in the
  triggerer (dbt skipped it for an upstream failure; Cosmos reports that as a failure), without an
  alert; only the node that failed alerts;
- a cleared task waits for its cleared parents to end before it looks for its node's result;
- the empty task after every consumer (``none_failed``) fails the run, through a leaf, when a node failed.

The trigger's ``run_id`` and ``try_number`` are templates: for a task started from its trigger the
triggerer builds a runtime task instance and renders the trigger kwargs that are also operator
``template_fields`` (``BaseTrigger.task_instance`` setter, ``TriggerRunner.run_trigger``).

All consumers of a run wait in one triggerer process, and every lookup is a call through the
triggerer's supervisor to Airflow's Execution API and the metadata database, so their lookups are kept
few: the producer's state (and in a clear, the leader's ticket) is looked up once per interval for
all of them (:data:`_SHARED_LOOKUPS`);
a node's result with Cosmos's own XCom lookup but without its log line per lookup, and only once
the results of its parent models have been read (dbt builds a node after its parents,
:data:`_SEEN_NODES`), so only the consumers of what dbt can be building look anything up; and the dbt
version banner that Cosmos's trigger waits for (three lookups per interval until dbt has started) is
left to the producer's log.

Nothing resumes a deferral on the happy path, so the stale-event failures of resumed deferrals
(apache/airflow#72716, #71580) that made this project poke instead of defer do not apply to it.

The classes are registered through Cosmos's ``RenderConfig.node_converters`` (:func:`node_converters`):
the converter builds Cosmos's own task metadata for the node and swaps in the subclass, with the
node type's policy (retries, timeouts) as constructor arguments. With ``start_from_trigger=False``
the same classes are Cosmos's poking sensors, which conclude as Cosmos's trigger does when a
successful build reported nothing for the node (:meth:`ConsumerMixin._handle_no_dbt_node_status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.exceptions import AirflowException
from airflow.sdk import Asset, AssetAlias, TriggerRule
from airflow.triggers.base import (
    BaseTaskEndEvent,
    StartTriggerArgs,
    TaskSkippedEvent,
    TaskSuccessEvent,
    TriggerEvent,
)
from asgiref.sync import sync_to_async
from cosmos import RenderConfig
from cosmos.airflow.graph import create_task_metadata, create_test_task_metadata
from cosmos.constants import TESTABLE_DBT_RESOURCES, DbtResourceType, ExecutionMode, TestBehavior
from cosmos.core.airflow import get_airflow_task
from cosmos.core.graph.entities import Task as TaskMetadata
from cosmos.dbt.graph import DbtNode
from cosmos.listeners.dag_run_listener import EventStatus
from cosmos.operators._watcher.aggregation import get_tests_status_xcom_key
from cosmos.operators._watcher.base import store_dbt_resource_status_from_log
from cosmos.operators._watcher.state import (
    PRODUCER_FINAL_STATES,
    ProducerTaskState,
    get_dbt_event_xcom_key,
    get_status_xcom_key,
    get_xcom_val,
    is_dbt_node_status_success,
    is_dbt_node_status_terminal,
    safe_xcom_push,
)
from cosmos.operators._watcher.triggerer import WatcherEventReason, WatcherTrigger
from cosmos.operators.watcher import DbtRunWatcherOperator, DbtSourceWatcherOperator, DbtTestWatcherOperator

_TRIGGER_PATH = "include.orchestration.consumers.ConsumerTrigger"
# XCom of a cleared build's leader, read by the cleared tasks below it: who built the cleared set, in
# which start of the run (``dag_run.start_date``: clearing a finished run restarts it) and for which
# tasks; see :meth:`ConsumerMixin._build_cleared_set`. Each task it ends keeps a copy (who built it).
# The triggerer's ``dag_run`` has no ``clear_number``.
CLEARED_BUILD_KEY = "cleared_build"
# A cleared task that has not run yet: released consumers wait deferred for their cleared parents.
_WAITING_STATES = (None, "scheduled", "deferred")
# The empty tasks before and after every consumer (:func:`release_at_stage_start`).
RELEASE_TASK_ID = "nodes_released"
NODES_DONE_TASK_ID = "nodes_done"
_FINAL_STATES = frozenset({"success", "failed", "upstream_failed", "skipped", "removed"})
_NOT_SUCCEEDED = frozenset({"failed", "upstream_failed", "skipped"})
_BUILDER_TYPES = ("ModelConsumer", "TestConsumer")  # the tasks a cleared build's leader can be
# Lookups every consumer of a run makes (the producer's state; a cleared build's tickets), per
# (event loop, DAG, run, what): when it was looked up, and the lookup. One per interval serves them all.
_SHARED_LOOKUPS: dict[tuple[Any, ...], tuple[float, asyncio.Future[Any]]] = {}
_SHARED_LOOKUP_MAX_AGE_S = 1.0
# A task with Assets whose node succeeded waits for the end of the task that built it (the producer, or
# a cleared build's leader), the build's last step: for these few tasks, at its very end, it is looked
# up more often.
_BUILDER_END_LOOKUP_S = 0.25
# A consumer whose parent models have no result here yet looks its own node up once per this many
# intervals: a parent's consumer may wait in another triggerer process, whose reads are not seen here.
_GATED_LOOKUP_INTERVALS = 5
# The reason of the event that resumes a model's task whose tests failed (:attr:`ConsumerMixin.gated_by_tests`).
TESTS_FAILED = "tests_failed"
# The producer's outlet through which it emits its consumers' outlets (:func:`publish_built_outlets`).
BUILT_OUTLETS = AssetAlias("dbt_built_outlets")


@dataclass
class _SeenNodes:
    """The model nodes whose result a consumer of this process has read, for one start of a run."""

    nodes: set[str] = field(default_factory=set)
    waits: dict[str, asyncio.Event] = field(default_factory=dict)  # per node not read yet, set when it is
    touched: float = field(default_factory=time.monotonic)

    def add(self, node: str) -> None:
        self.nodes.add(node)
        if (read := self.waits.pop(node, None)) is not None:
            read.set()

    def read(self, node: str) -> asyncio.Event:
        """Set once the result of ``node`` (not read yet) has been read."""
        return self.waits.setdefault(node, asyncio.Event())


# Per (event loop, DAG, run, start of the run, producer); dropped an hour after its last use.
_SEEN_NODES: dict[tuple[int, str, str, str, str], _SeenNodes] = {}


class ConsumerTrigger(WatcherTrigger):
    """Cosmos's watcher trigger that ends its task in the triggerer when nothing needs a worker.

    :param try_number: the task's try; after the first, the task ends with its node's result in a
        cleared build led by an ancestor, or resumes on a worker for Cosmos's fallback run.
    :param resume_on_success: a task with Assets: after a success, end here only once the task that
        built the node (the producer, or a cleared build's leader) has succeeded, which emitted them;
        else resume on a worker, which emits them.
    :param upstream_task_ids: the task's parents in the lineage (not the release task).
    :param released: the task was released at the stage's start, not by its parents' tasks; the
        trigger then decides what the edges would have (see the module docstring).
    :param parent_models: the unique ids of the nearest models above the node (through their tests'
        tasks); a released consumer looks its node up once their results have been read.
    :param gated_by_tests: the node's tests have no task of their own: after the node's success the
        task waits for their results in the same build, and fails if one did not pass.
    """

    def __init__(
        self,
        *,
        try_number: int | str = 1,
        resume_on_success: bool = False,
        upstream_task_ids: Sequence[str] = (),
        run_started: float | str = 0,
        released: bool = False,
        parent_models: Sequence[str] = (),
        gated_by_tests: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gated_by_tests = gated_by_tests
        self.released = released
        self.parent_models = list(parent_models)
        self._ticket: dict[str, Any] | None = None
        self.try_number = try_number
        self.resume_on_success = resume_on_success
        self.upstream_task_ids = list(upstream_task_ids)
        self.run_started = run_started

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return _TRIGGER_PATH, {
            **kwargs,
            "try_number": self.try_number,
            "resume_on_success": self.resume_on_success,
            "upstream_task_ids": self.upstream_task_ids,
            "run_started": self.run_started,
            "released": self.released,
            "parent_models": self.parent_models,
            "gated_by_tests": self.gated_by_tests,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        ancestors = self._ancestors() if int(self.try_number) > 1 else []
        self._release_the_dag()
        if int(self.try_number) > 1:
            yield self._ending(await self._with_outlets_emitted(await self._retry_event(ancestors)))
            return
        await self._wait_for_parent_models()
        async for event in super().run():
            if event.payload.get("status") != EventStatus.SUCCESS:  # e.g. built since by a retried upstream
                event = await self._cleared_build_event() or event
            elif self.gated_by_tests:
                event = await self._after_the_tests(event)
            if event.payload.get("status") == EventStatus.FAILED and await self._a_parent_did_not_succeed():
                event = TaskSkippedEvent()  # dbt skipped the node for its parent's failure
            yield self._ending(await self._with_outlets_emitted(event))
            return

    def _release_the_dag(self) -> None:
        """Let go of the deserialized DAG the triggerer built this trigger's task instance from.

        For a task started from its trigger, Airflow's trigger runner deserializes the whole DAG,
        builds a runtime task instance and its template context on it, renders the trigger's kwargs,
        and then keeps both (the task instance on the trigger, the context in the coroutine that runs
        it) for as long as the trigger runs. With every node task of a run waiting at once, the
        triggerer held one whole copy of the DAG per node task, and Python's garbage collector scanned
        them all over and over: the triggerer's cost grew with tasks × DAG size. Once the kwargs are
        rendered the trigger needs none of it, so the context (cached, the one object the runner
        holds) is emptied and the task dropped from the task instance; what identifies the task
        instance (its ids, try, run) stays.
        """
        ti = getattr(self, "task_instance", None)
        if ti is None or getattr(ti, "task", None) is None or not hasattr(ti, "get_template_context"):
            return
        try:
            ti.get_template_context().clear()
        except Exception:  # only memory is at stake: never fail the task for it
            self.log.warning("Could not release the DAG's template context", exc_info=True)
            return
        ti.task = None

    async def _after_the_tests(self, event: TriggerEvent) -> TriggerEvent:
        """The node's success once all its tests in the producer's build have passed; else the
        failure its task resumes with on a worker (:meth:`ConsumerMixin._fail_for_tests` names the
        tests). A build that ended without their results: Cosmos's "node not run" when it succeeded
        (nothing selected them), "producer failed" when it did not (the task's retry builds them)."""
        passed = await self._tests_passed(self.producer_task_id, self._producer_ended)
        if passed is False:
            return TriggerEvent(
                {"status": EventStatus.FAILED, "reason": TESTS_FAILED, "builder": self.producer_task_id}
            )
        if passed is None and not await self._producer_succeeded():
            return TriggerEvent({"status": EventStatus.FAILED, "reason": WatcherEventReason.PRODUCER_FAILED})
        return event

    async def _tests_passed(self, builder: str, builder_ended: Callable[[], Awaitable[bool]]) -> bool | None:
        """Whether all the node's tests passed in ``builder``'s build (the aggregate Cosmos's parser
        publishes once the last one has reported); None if the build ended without it."""
        key = get_tests_status_xcom_key(self.model_unique_id)
        while True:
            ended = await builder_ended()  # before the read: a read after the end is final
            status = await self._xcom_of(builder, key)
            if status is not None:
                return is_dbt_node_status_success(status)
            if ended:
                return None
            await asyncio.sleep(self.poke_interval)

    async def _xcom_of(self, task_id: str, key: str) -> Any:
        from airflow.sdk.execution_time.xcom import XCom

        return await sync_to_async(XCom.get_one)(
            run_id=str(self.run_id), key=key, task_id=task_id, dag_id=self.dag_id, map_index=self.map_index
        )

    async def _producer_ended(self) -> bool:
        return await self._get_producer_task_status() in PRODUCER_FINAL_STATES

    async def _task_ended(self, task_id: str) -> bool:
        """Whether ``task_id`` (a cleared build's leader) has ended."""
        return await self._task_state(task_id) in _FINAL_STATES

    async def _task_state(self, task_id: str, max_age_s: float = _SHARED_LOOKUP_MAX_AGE_S) -> str | None:
        """The state of ``task_id`` (the producer or a cleared build's leader), looked up at most once
        per ``max_age_s`` for all the consumers of this process that ask."""
        if task_id == self.producer_task_id:
            return await self._get_producer_task_status(max_age_s)
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        def state() -> str | None:
            by_run = RuntimeTaskInstance.get_task_states(
                dag_id=self.dag_id, task_ids=[task_id], run_ids=[str(self.run_id)]
            )
            found = by_run.get(str(self.run_id), {}).get(task_id)
            return str(found) if found else None

        key = (self.dag_id, str(self.run_id), "task state", task_id)
        return await self._shared_lookup(key, sync_to_async(state), max_age_s)

    async def _end_state(self, task_id: str) -> str | None:
        """The state ``task_id`` ended in, looked up every :data:`_BUILDER_END_LOOKUP_S` meanwhile."""
        while (state := await self._task_state(task_id, _BUILDER_END_LOOKUP_S)) not in _FINAL_STATES:
            await asyncio.sleep(_BUILDER_END_LOOKUP_S)
        return state

    async def _producer_succeeded(self) -> bool:
        """Once the producer has ended: did it succeed?"""
        return await self._end_state(self.producer_task_id) == ProducerTaskState.SUCCESS

    async def _with_outlets_emitted(self, event: TriggerEvent) -> TriggerEvent:
        """For a task with Assets whose node succeeded (:attr:`resume_on_success`): the event that
        ends it here once the task that built the node (the producer, or a cleared build's leader)
        has succeeded, which emitted its Assets as its own events (:func:`emit_built_outlets`):
        Airflow registers a task's outlet events with its state, in the same call. If that task
        failed (another node did) it emitted nothing, and Cosmos's event goes back: the task resumes
        on a worker, which emits them."""
        if isinstance(event, BaseTaskEndEvent) or not self.resume_on_success:
            return event
        if event.payload.get("status") != EventStatus.SUCCESS:
            return event
        ticket = event.payload.get(CLEARED_BUILD_KEY)
        builder = ticket["leader"] if ticket else self.producer_task_id
        if await self._end_state(builder) != ProducerTaskState.SUCCESS:
            return event
        return TaskSuccessEvent(xcoms={CLEARED_BUILD_KEY: ticket} if ticket else None)

    async def _wait_for_parent_models(self) -> None:
        """Until a consumer of this process has read a result for each parent model, or the
        producer is done: dbt cannot have built the node yet, so it is looked up only once per
        :data:`_GATED_LOOKUP_INTERVALS` intervals, and the wait ends as soon as the last parent's
        result is read here. (Tasks released by their parents' tasks do not wait here.)"""
        if not self.released or not self.parent_models:
            return
        seen = self._seen_nodes()
        interval = float(self.poke_interval)
        next_lookup = time.monotonic() + interval * _GATED_LOOKUP_INTERVALS
        while missing := [node for node in self.parent_models if node not in seen.nodes]:
            if await self._get_producer_task_status() in PRODUCER_FINAL_STATES:
                return
            if time.monotonic() >= next_lookup:
                status, _ = await self._parse_dbt_node_status_and_compiled_sql()
                if status is not None:
                    return
                next_lookup = time.monotonic() + interval * _GATED_LOOKUP_INTERVALS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(seen.read(missing[0]).wait(), timeout=interval)

    def _seen_nodes(self) -> _SeenNodes:
        """The nodes read by this process's consumers of this start of the run (:class:`_SeenNodes`)."""
        run = (str(self.run_id), str(self.run_started))
        key = (id(asyncio.get_running_loop()), self.dag_id, *run, self.producer_task_id)
        now = time.monotonic()
        seen = _SEEN_NODES.get(key)
        if seen is None:
            for stale in [k for k, old in _SEEN_NODES.items() if now - old.touched > 3600]:
                del _SEEN_NODES[stale]
            seen = _SEEN_NODES[key] = _SeenNodes()
        seen.touched = now
        return seen

    async def _parse_dbt_node_status_and_compiled_sql(self) -> tuple[str | None, str | None]:
        """Cosmos's lookup of the node's result; a model's final result is shared with the
        consumers waiting for it as a parent (:meth:`_wait_for_parent_models`)."""
        status, compiled_sql = await super()._parse_dbt_node_status_and_compiled_sql()
        if not self.is_test_sensor and is_dbt_node_status_terminal(status):
            self._seen_nodes().add(self.model_unique_id)
        return status, compiled_sql

    async def _a_parent_did_not_succeed(self) -> bool:
        """Once every parent task has ended: did one not succeed? (Always False for a task its
        parents released: Airflow ran it because they succeeded.)"""
        while (parents := await self._ended_parents()) is None:
            await asyncio.sleep(self.poke_interval)
        return any(state in _NOT_SUCCEEDED for state in parents.values())

    async def _ended_parents(self) -> dict[str, str | None] | None:
        """The parent tasks' states once all have ended (empty when the parents released the
        task), None while one has not."""
        if not self.released or not self.upstream_task_ids:
            return {}
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        def states() -> dict[str, str | None]:
            by_run = RuntimeTaskInstance.get_task_states(
                dag_id=self.dag_id, task_ids=self.upstream_task_ids, run_ids=[str(self.run_id)]
            )
            return {task: (str(state) if state else None) for task, state in by_run.get(str(self.run_id), {}).items()}

        parents = await sync_to_async(states)()
        if all(parents.get(task) in _FINAL_STATES for task in self.upstream_task_ids):
            return parents
        return None

    async def _retry_event(self, ancestors: Sequence[str]) -> TriggerEvent:
        """The result of a cleared build of one of ``ancestors`` that listed this task, as soon as
        it has the node (no waiting for the tasks in between); else, once the parents have ended,
        skipped if one of them did not succeed, or (once the producer is done) "producer skipped",
        on which Cosmos runs the node alone."""
        while True:
            built = await self._cleared_build_event(ancestors)
            if built is not None:
                return built
            if (parents := await self._ended_parents()) is not None:
                break
            await asyncio.sleep(self.poke_interval)
        if any(state in _NOT_SUCCEEDED for state in parents.values()):
            return TaskSkippedEvent()
        built = await self._cleared_build_event(ancestors)
        if built is not None:
            return built
        while await self._get_producer_task_status() not in PRODUCER_FINAL_STATES:
            await asyncio.sleep(self.poke_interval)
        return TriggerEvent({"status": EventStatus.FAILED, "reason": WatcherEventReason.PRODUCER_SKIPPED})

    def _ancestors(self) -> list[str]:
        """The model and test tasks above this one, any of which may lead a cleared build: read
        from the task the triggerer deserialized for this trigger (without one, the parents), before
        :meth:`_release_the_dag`."""
        task = getattr(getattr(self, "task_instance", None), "task", None)
        dag = getattr(task, "dag", None)
        if task is None or dag is None:
            return self.upstream_task_ids
        above = task.get_flat_relative_ids(upstream=True)
        return sorted(t for t in above if getattr(dag.get_task(t), "task_type", "") in _BUILDER_TYPES)

    async def get_xcom_val(self, key: str) -> Any | None:
        """Cosmos's XCom lookup (Airflow 3) without its log line per lookup."""
        return await self.get_xcom_val_af3(key)

    async def _log_startup_events(self) -> None:
        """dbt's version banner is in the producer's log; Cosmos's trigger waits for it first."""

    async def _get_producer_task_status(self, max_age_s: float = _SHARED_LOOKUP_MAX_AGE_S) -> str | None:
        """The producer's state, looked up at most once per ``max_age_s`` for all consumers of the
        run. A state read a moment ago is still safe to act on: the producer publishes a node's
        result before it ends, and Cosmos reads the node after the state."""
        key = (self.dag_id, str(self.run_id), "state", self.producer_task_id)
        return await self._shared_lookup(key, super()._get_producer_task_status, max_age_s)

    async def _shared_lookup(
        self, key: tuple[Any, ...], lookup: Callable[[], Awaitable[Any]], max_age_s: float = _SHARED_LOOKUP_MAX_AGE_S
    ) -> Any:
        """``lookup()``'s result, shared by the consumers of this process that ask for ``key``
        within ``max_age_s`` (or the poke interval, if shorter)."""
        key = (id(asyncio.get_running_loop()), *key)
        now = time.monotonic()
        cached = _SHARED_LOOKUPS.get(key)
        if cached is None or now - cached[0] > min(max_age_s, float(self.poke_interval)):
            for stale in [k for k, (when, _) in _SHARED_LOOKUPS.items() if now - when > 60]:
                del _SHARED_LOOKUPS[stale]
            cached = (now, asyncio.ensure_future(lookup()))
            _SHARED_LOOKUPS[key] = cached
        return await asyncio.shield(cached[1])

    async def _cleared_build_event(self, candidates: Sequence[str] | None = None) -> TriggerEvent | None:
        """Success if one of ``candidates`` (by default the parents) led a build of this clear that
        listed this task and has its node succeeded; None otherwise (not yet, or the task then runs
        its node itself, with its own log)."""
        ticket = self._ticket or await self._find_ticket(self.upstream_task_ids if candidates is None else candidates)
        if ticket is None:
            return None
        producer = self.producer_task_id
        try:
            self.producer_task_id = ticket["leader"]  # Cosmos's lookups now read the leader's results
            status, compiled_sql = await self._parse_dbt_node_status_and_compiled_sql()
        finally:
            self.producer_task_id = producer
        if not is_dbt_node_status_success(status):
            return None
        if self.gated_by_tests:  # its tests' failure in the cleared build: the task runs them itself, with its log
            leader = ticket["leader"]
            if not await self._tests_passed(leader, functools.partial(self._task_ended, leader)):
                return None
        return TriggerEvent({**self._build_success_event(compiled_sql), CLEARED_BUILD_KEY: ticket})

    async def _find_ticket(self, candidates: Sequence[str]) -> dict[str, Any] | None:
        """The ticket of this clear listing this task, from the first candidate that holds one (each
        candidate's looked up once per interval for all the cleared tasks that share it)."""
        from airflow.sdk.execution_time.xcom import XCom

        for candidate in candidates:
            lookup = functools.partial(
                sync_to_async(XCom.get_one),
                run_id=str(self.run_id),
                key=CLEARED_BUILD_KEY,
                task_id=candidate,
                dag_id=self.dag_id,
                map_index=self.map_index,
            )
            ticket = await self._shared_lookup((self.dag_id, str(self.run_id), "ticket", candidate), lookup)
            if _ticket_covers(ticket, getattr(self, "task_id", ""), self.run_started):  # set with task_instance
                self._ticket = ticket
                return ticket
        return None

    def _ending(self, event: TriggerEvent) -> TriggerEvent:
        """The event that ends the task here, or Cosmos's event to resume it with on a worker."""
        if isinstance(event, (TaskSkippedEvent, TaskSuccessEvent)):
            return event
        status = event.payload.get("status")
        if status == EventStatus.SUCCESS and not self.resume_on_success:
            ticket = event.payload.get(CLEARED_BUILD_KEY)  # kept on the task: who built it
            return TaskSuccessEvent(xcoms={CLEARED_BUILD_KEY: ticket} if ticket else None)
        if status == EventStatus.SKIPPED:
            return TaskSkippedEvent()
        return event


class ConsumerMixin:
    """What the three consumer classes add to Cosmos's sensors; see the module docstring.

    :param start_from_trigger: start (and on the happy path end) the task in the triggerer.
    :param released: the task is released at the stage's start (:func:`release_at_stage_start`),
        not by its parents' tasks: ``one_success`` over the release task and its parents.
    :param gated_by_tests: the node's tests have no task of their own (a model's or source's task with
        ``ConsumerOptions.tests_in_model_task``): the task succeeds once they passed too, fails
        naming them if one did not, and its retry or cleared build runs them with the node.
    """

    template_fields: tuple[str, ...] = ("run_id", "try_number", "run_started")
    start_from_trigger: bool = False
    released: bool = False
    gated_by_tests: bool = False

    # Set by Cosmos's sensor classes this mixes into.
    model_unique_id: str
    producer_task_id: str
    poke_interval: float
    is_test_sensor: bool
    outlets: list[Any]

    def __init__(
        self, *, start_from_trigger: bool = False, released: bool = False, gated_by_tests: bool = False, **kwargs: Any
    ) -> None:
        if released:
            kwargs["trigger_rule"] = TriggerRule.ONE_SUCCESS  # the release task's success is enough
        super().__init__(**kwargs)
        self.start_from_trigger = start_from_trigger
        self.released = released
        self.gated_by_tests = gated_by_tests
        # Rendered by the triggerer into the trigger's kwargs of the same names.
        self.run_id = "{{ run_id }}"
        self.try_number = "{{ ti.try_number }}"
        self.run_started = "{{ dag_run.start_date.timestamp() }}"

    @property  # type: ignore[override]
    def start_trigger_args(self) -> StartTriggerArgs | None:
        """Read when the DAG is serialized, after Cosmos has set ``producer_task_id``."""
        if not self.start_from_trigger:
            return None
        return StartTriggerArgs(
            trigger_cls=_TRIGGER_PATH,
            next_method="execute_complete",
            trigger_kwargs={
                "model_unique_id": self.model_unique_id,
                "producer_task_id": self.producer_task_id,
                "dag_id": self.dag_id,  # type: ignore[attr-defined]
                "run_id": self.run_id,
                "map_index": -1,  # the producer is not mapped
                "poke_interval": self.poke_interval,
                "is_test_sensor": self.is_test_sensor,
                "try_number": self.try_number,
                "resume_on_success": bool(_assets(self)),
                "upstream_task_ids": sorted(_parents(self)),
                "parent_models": _parent_models(self),
                "run_started": self.run_started,
                "released": self.released,
                "gated_by_tests": self.gated_by_tests,
            },
            timeout=None,  # the scheduler applies execution_timeout to the trigger
        )

    def pre_execute(self, context: Any) -> None:
        """On a worker (a failed node, a retry, a clear): the dbt command the task may run is
        watched for a warehouse that stops answering (nothing is probed unless one runs)."""
        from include.orchestration.watchdog import watch_dbt_task  # workers only, not the triggerer

        watch_dbt_task(context)
        super().pre_execute(context)  # type: ignore[misc]

    def execute_complete(self, context: Any, event: dict[str, Any]) -> None:
        if event.get("reason") == TESTS_FAILED:
            self._fail_for_tests(context, event.get("builder") or self.producer_task_id)
        super().execute_complete(context, event)  # type: ignore[misc]
        # A task with outlets ended from a cleared build keeps its ticket as the others do.
        if event.get(CLEARED_BUILD_KEY):
            safe_xcom_push(task_instance=context["ti"], key=CLEARED_BUILD_KEY, value=event[CLEARED_BUILD_KEY])

    def _fallback_to_non_watcher_run(self, try_number: int, context: Any) -> bool:
        """A cleared (or retried) task whose cleared descendants wait for it builds them with it in
        one ``dbt build``; alone, it runs Cosmos's fallback for its node."""
        followers = self._cleared_followers(context) if _in_cleared_builds(self) else []
        if followers:
            self._build_cleared_set(context, followers)
        elif not self.gated_by_tests:
            return super()._fallback_to_non_watcher_run(try_number, context)  # type: ignore[misc]
        elif isinstance(self, SourceConsumer):  # its freshness, then its tests
            super()._fallback_to_non_watcher_run(try_number, context)  # type: ignore[misc]
            source = DbtNode.get_resource_name_from_unique_id(self.model_unique_id)
            self._run_dbt(context, "test", ["--select", f"source:{source}"])
        else:  # the model with its tests: Cosmos's fallback, as `dbt build`
            self.base_cmd = ["build"]
            try:
                super()._fallback_to_non_watcher_run(try_number, context)  # type: ignore[misc]
            finally:
                del self.base_cmd
        return True

    def _run_dbt(self, context: Any, command: str, cmd_flags: list[str]) -> None:
        """``dbt <command> <cmd_flags>`` with this task's profile and flags (Cosmos's own runner)."""
        self.base_cmd = [command]
        try:
            self.build_and_run_cmd(context, cmd_flags=cmd_flags)  # type: ignore[attr-defined]
        finally:
            del self.base_cmd

    def _fail_for_tests(self, context: Any, builder: str) -> None:
        """Fail the task of a node whose tests did not all pass in ``builder``'s build (the producer or
        a cleared build's leader), naming each failed test with dbt's message (Cosmos's parser keeps
        the dbt event of a node that errored or failed, none of one that passed)."""
        producer = context["dag"].get_task(self.producer_task_id)
        tests = (getattr(producer, "tests_per_model", None) or {}).get(self.model_unique_id, [])
        failed = []
        for test in tests:
            dbt_event = get_xcom_val(context["ti"], builder, get_dbt_event_xcom_key(test))
            if not isinstance(dbt_event, dict) or is_dbt_node_status_success(dbt_event.get("status")):
                continue
            failed.append(f"{test.split('.')[2]} ({dbt_event.get('msg') or dbt_event.get('status')})")
            self.log.error("%s: %s", test, dbt_event.get("msg"))  # type: ignore[attr-defined]
        node = DbtNode.get_resource_name_from_unique_id(self.model_unique_id)
        raise AirflowException(
            f"'{self.model_unique_id}' was built, but its tests did not pass: "
            f"{'; '.join(failed) or 'see the log of ' + builder}. Its descendants are skipped. "
            f"Fix the data or the model, then clear this task: it builds {node} with its tests again."
        )

    def _cleared_followers(self, context: Any) -> list[ConsumerMixin]:
        """The model and test tasks below this one that wait to run again and whose every waiting
        ancestor is this task or one of them: one build of this node and theirs serves them all."""
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        dag, run_id = context["dag"], context["run_id"]
        states = RuntimeTaskInstance.get_task_states(dag_id=dag.dag_id, run_ids=[run_id]).get(run_id, {})
        waiting = {task_id for task_id, state in states.items() if state in _WAITING_STATES}
        below = self.get_flat_relative_ids(upstream=False)  # type: ignore[attr-defined]
        followers = {
            task_id for task_id in below & waiting if isinstance(dag.get_task(task_id), (ModelConsumer, TestConsumer))
        }
        while True:  # drop what also waits for a cleared task outside the set, then what waited on those
            outside = {
                task_id
                for task_id in followers
                if (dag.get_task(task_id).get_flat_relative_ids(upstream=True) & waiting) - followers
            }
            if not outside:
                return [dag.get_task(task_id) for task_id in sorted(followers)]
            followers -= outside

    def _selected_nodes(self, tests_per_model: Mapping[str, Sequence[str]]) -> list[str]:
        """dbt selectors of this task's node(s): its model (with its tests, when they gate it), or its
        model's tests, or its test."""
        uid = self.model_unique_id
        tests = [test.split(".")[2] for test in tests_per_model.get(uid, [])]  # test.<package>.<name>.<hash>
        if not self.is_test_sensor:
            return [DbtNode.get_resource_name_from_unique_id(uid), *(tests if self.gated_by_tests else [])]
        return tests

    def _build_cleared_set(self, context: Any, followers: Sequence[ConsumerMixin]) -> None:
        """One ``dbt build`` of this task's node and its followers', its node results published
        under this task as the producer publishes its own (Cosmos's parser), and a ticket the
        followers' triggers find among their ancestors (:data:`CLEARED_BUILD_KEY`). Fails only if this
        task's own node did; each follower reports its own node."""
        ti = context["ti"]
        producer = context["dag"].get_task(self.producer_task_id)
        tasks = [self, *followers]
        tests_per_model = with_detached_tests(getattr(producer, "tests_per_model", None) or {}, tasks)
        selectors = sorted({selector for task in tasks for selector in task._selected_nodes(tests_per_model)})
        for task in tasks:  # no result of an earlier build may be read as this one's
            safe_xcom_push(ti, _status_key(task), None if task.is_test_sensor else {"status": None, "outlet_uris": []})
            if task.gated_by_tests:
                safe_xcom_push(ti, get_tests_status_xcom_key(task.model_unique_id), None)
        ticket = {
            "leader": self.task_id,  # type: ignore[attr-defined]
            "run_started": context["dag_run"].start_date.timestamp(),
            "tasks": [task.task_id for task in followers],  # type: ignore[attr-defined]
        }
        safe_xcom_push(ti, CLEARED_BUILD_KEY, ticket)
        self.log.info("One dbt build for %s cleared tasks: %s", len(tasks), " ".join(selectors))  # type: ignore[attr-defined]
        self._process_log_line_callable = functools.partial(  # Cosmos's hook for the producer's parser
            store_dbt_resource_status_from_log,
            tests_per_model=tests_per_model,
            test_results_per_model={},
            model_outlet_uris={},
            dataset_namespace=None,
            should_generate_model_uris=False,
            upstream_failure_skipped_ids=set(),
        )
        self.base_cmd = ["build"]
        failure: Exception | None = None
        try:
            self.build_and_run_cmd(  # type: ignore[attr-defined]
                context,
                cmd_flags=["--log-format", "json", "--indirect-selection", "empty", "--select", *selectors],
            )
        except Exception as error:  # another node's failure is that node's task's to report
            failure = error
        finally:
            del self.base_cmd
            self._process_log_line_callable = None
        own = get_xcom_val(ti, self.task_id, _status_key(self))  # type: ignore[attr-defined]
        if failure is not None and not is_dbt_node_status_success(own.get("status") if isinstance(own, dict) else own):
            raise failure
        if self.gated_by_tests:
            tests = get_xcom_val(ti, self.task_id, get_tests_status_xcom_key(self.model_unique_id))  # type: ignore[attr-defined]
            if tests is not None and not is_dbt_node_status_success(tests):
                self._fail_for_tests(context, self.task_id)  # type: ignore[attr-defined]
        emit_built_outlets(context, self.task_id, followers, require_tests_passed=True)  # type: ignore[attr-defined]

    def _handle_no_dbt_node_status(self, producer_task_state: str | None, try_number: int, context: Any) -> bool:
        """Once the producer's ``dbt build`` succeeded, a node without a status did not fail (Cosmos's
        trigger concludes ``NODE_NOT_RUN`` the same way); the stock poke path would wait until its
        timeout instead, e.g. for every test on several models."""
        if producer_task_state == ProducerTaskState.SUCCESS:
            return True
        return super()._handle_no_dbt_node_status(producer_task_state, try_number, context)  # type: ignore[misc]


class ModelConsumer(ConsumerMixin, DbtRunWatcherOperator):
    """A model's task; see :class:`ConsumerMixin`."""

    template_fields = DbtRunWatcherOperator.template_fields + ConsumerMixin.template_fields

    def __init__(self, **kwargs: Any) -> None:  # in the class itself: Airflow's metaclass wraps it
        super().__init__(**kwargs)


class TestConsumer(ConsumerMixin, DbtTestWatcherOperator):
    """The task of a model's tests (or of a test on several models); see :class:`ConsumerMixin`."""

    __test__ = False  # not a pytest class
    template_fields = DbtTestWatcherOperator.template_fields + ConsumerMixin.template_fields

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)


class SourceConsumer(ConsumerMixin, DbtSourceWatcherOperator):
    """A source's freshness task; see :class:`ConsumerMixin`."""

    template_fields = DbtSourceWatcherOperator.template_fields + ConsumerMixin.template_fields

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)


@dataclass(frozen=True)
class ConsumerOptions:
    """How the consumer tasks are built.

    :param start_from_trigger: the triggerer-only tasks of this module, released at the stage's
        start (:func:`release_at_stage_start`); ``False``: poking sensors, each waiting for its
        parents' tasks.
    :param poke_interval_s: how often a consumer looks for its node's result (trigger or poke).
    :param policies: constructor kwargs (retries, timeouts, pool) per resource type.
    :param outlets: extra outlets per model name (e.g. the marts' Assets).
    :param outlet_policy: constructor kwargs of a model task with outlets, over its type's policy
        (it resumes on a worker to emit them: a pool bounds how many at once).
    :param tests_in_model_task: the project is rendered without test tasks; each model's (and
        source's) task gates on its tests (:attr:`ConsumerMixin.gated_by_tests`).
    """

    start_from_trigger: bool = True
    poke_interval_s: float = 2
    policies: Mapping[DbtResourceType, Mapping[str, Any]] = field(default_factory=dict)
    outlets: Mapping[str, Asset] = field(default_factory=dict)
    outlet_policy: Mapping[str, Any] = field(default_factory=dict)
    tests_in_model_task: bool = False


_CLASSES: dict[DbtResourceType, type[ConsumerMixin]] = {
    DbtResourceType.MODEL: ModelConsumer,
    DbtResourceType.TEST: TestConsumer,
    DbtResourceType.SOURCE: SourceConsumer,
}


def node_converters(render_config: RenderConfig, options: ConsumerOptions) -> dict[DbtResourceType, Callable[..., Any]]:
    """Cosmos ``node_converters`` that render models, tests and sources as this module's consumers.

    :param render_config: the project's RenderConfig (without these converters), as Cosmos's own
        metadata functions need it.
    """
    return {resource_type: _converter(resource_type, render_config, options) for resource_type in _CLASSES}


def _converter(
    resource_type: DbtResourceType, render_config: RenderConfig, options: ConsumerOptions
) -> Callable[..., Any]:
    def convert(
        *,
        dag: Any,
        task_group: Any,
        node: DbtNode,
        task_id: str,
        task_args: dict[str, Any],
        execution_mode: ExecutionMode,
        test_indirect_selection: Any,
        on_warning_callback: Any,
        detached_from_parent: dict[str, list[DbtNode]] | None,
        **_: Any,
    ) -> Any:
        if resource_type == DbtResourceType.TEST:
            node = _detached_test(task_id, detached_from_parent) or node
            meta = create_test_task_metadata(
                task_id,
                execution_mode,
                test_indirect_selection,
                task_args=task_args,
                on_warning_callback=on_warning_callback,
                node=node,
                render_config=render_config,
                detached_from_parent=detached_from_parent,
                enable_owner_inheritance=render_config.enable_owner_inheritance,
            )
        else:
            in_own_group = (
                node.resource_type in TESTABLE_DBT_RESOURCES
                and render_config.test_behavior == TestBehavior.AFTER_EACH
                and node.has_non_detached_test is True
            )
            outer_group = task_group.parent_group if in_own_group and task_group is not None else task_group
            meta = create_task_metadata(
                node=node,
                execution_mode=execution_mode,
                args=task_args,
                dbt_dag_task_group_identifier=_group_identifier(dag, outer_group),
                render_config=render_config,
                use_task_group=in_own_group,
                test_indirect_selection=test_indirect_selection,
                on_warning_callback=on_warning_callback,
                detached_from_parent=detached_from_parent,
            )
            if meta is None:
                return None
        return _instantiate(meta, _CLASSES[resource_type], resource_type, node, options, dag, task_group)

    convert.__name__ = f"convert_{resource_type.value}_to_consumer"
    return convert


def _instantiate(
    meta: TaskMetadata,
    cls: type[ConsumerMixin],
    resource_type: DbtResourceType,
    node: DbtNode,
    options: ConsumerOptions,
    dag: Any,
    task_group: Any,
) -> Any:
    if not meta.operator_class.startswith("cosmos.operators.watcher."):
        return get_airflow_task(meta, dag, task_group)  # e.g. Cosmos's empty task for a source without freshness
    arguments = {
        **meta.arguments,
        **options.policies.get(resource_type, {}),
        "poke_interval": options.poke_interval_s,
        "deferrable": False,  # never defers from a worker: it starts in the triggerer or pokes
        "start_from_trigger": options.start_from_trigger,
        "released": options.start_from_trigger,
        "gated_by_tests": options.tests_in_model_task and resource_type != DbtResourceType.TEST and bool(node.has_test),
    }
    if resource_type == DbtResourceType.MODEL and node.resource_name in options.outlets:
        arguments.update(options.outlet_policy)
        arguments["outlets"] = [*arguments.get("outlets", []), options.outlets[node.resource_name]]
    if options.start_from_trigger and options.outlets and _leads_cleared_builds(resource_type, node):
        # Airflow registers an alias's events only for a task that lists it: a cleared build's leader
        # emits its followers' Assets through it (:func:`emit_built_outlets`).
        arguments["outlets"] = [*arguments.get("outlets", []), BUILT_OUTLETS]
    meta = TaskMetadata(
        id=meta.id,
        owner=meta.owner,
        operator_class=f"{cls.__module__}.{cls.__name__}",
        arguments=arguments,
        extra_context=meta.extra_context,
    )
    return get_airflow_task(meta, dag, task_group)


def release_at_stage_start(tasks: Sequence[Any], dag: Any, task_group: Any = None) -> None:
    """Wire the released consumers among ``tasks`` (Cosmos's rendered tasks of one DAG or group):
    an empty task before them all, done when the stage starts (it takes the stage's upstream, as
    the producer does), and an empty task after them all that fails the run through a leaf when a
    node failed (``none_failed``: its descendants end skipped, see the module docstring)."""
    from airflow.providers.standard.operators.empty import EmptyOperator

    released = [task for task in tasks if isinstance(task, ConsumerMixin) and task.released]
    if not released:
        return
    release = EmptyOperator(
        task_id=RELEASE_TASK_ID,
        dag=dag,
        task_group=task_group,
        doc_md="Releases every model, test and source task at the stage's start: each waits for its node in the build.",
    )
    done = EmptyOperator(
        task_id=NODES_DONE_TASK_ID,
        dag=dag,
        task_group=task_group,
        trigger_rule=TriggerRule.NONE_FAILED,
        doc_md="Fails (upstream_failed) when a model, test or source task failed: what follows the stage waits here.",
    )
    release >> released >> done


def watch_detached_tests(context: Any) -> None:
    """The producer's ``pre_execute`` hook: its parser publishes a test's result as soon as dbt
    reports it for the tasks of tests on several models too (:func:`with_detached_tests`), so those
    tasks end during the build instead of once the producer has ended."""
    producer = context["task"]
    watchers = [task for task in context["dag"].tasks if getattr(task, "producer_task_id", None) == producer.task_id]
    producer.tests_per_model = with_detached_tests(producer.tests_per_model, watchers)


def with_detached_tests(tests_per_model: Mapping[str, list[str]], tasks: Sequence[Any]) -> dict[str, list[str]]:
    """Cosmos's map of each model to its tests, plus each test on several models among ``tasks``
    mapped to itself. Cosmos's parser publishes a test's result only in the aggregates of the models
    it lists it under, while the test's own task (Cosmos's detached test) reads the aggregate of its
    own node: listed as its own "model", the parser publishes that aggregate too. Without it the
    task learns nothing until the producer has ended (Cosmos's "node not run")."""
    detached = {task.model_unique_id: [task.model_unique_id] for task in tasks if _is_detached_test(task)}
    return {**tests_per_model, **detached}


def publish_built_outlets(context: Any, result: Any = None) -> None:
    """The producer's ``post_execute`` hook: :func:`emit_built_outlets` for every consumer of its
    build. It runs only when the build succeeded; otherwise those consumers resume on a worker and
    emit their own (:meth:`ConsumerTrigger._with_outlets_emitted`)."""
    producer = context["task"]
    consumers = [task for task in context["dag"].tasks if getattr(task, "producer_task_id", None) == producer.task_id]
    emit_built_outlets(context, producer.task_id, consumers)


def emit_built_outlets(context: Any, builder: str, tasks: Sequence[Any], *, require_tests_passed: bool = False) -> None:
    """Emit, as the running task's own events through :data:`BUILT_OUTLETS`, the Assets of those of
    ``tasks`` that end in the triggerer (which emits none) and whose node ``builder``'s build (the
    producer's, or this cleared build's) succeeded; each event names the consumer's task and node in
    its ``extra``. A node left out of the build (a stale source) gets no event.

    :param require_tests_passed: the build may have failed elsewhere (a cleared build's leader
        succeeds unless its own node failed): a task its tests gate gets an event only if they all
        reported a pass, as its trigger requires before it ends from a cleared build. (The producer's
        hook runs only after a build in which nothing failed.)
    """
    ti, running = context["ti"], context["task"]
    events = context["outlet_events"][BUILT_OUTLETS]
    for task in tasks:
        if not (isinstance(task, ConsumerMixin) and task.start_from_trigger and _assets(task)):
            continue
        status = get_xcom_val(ti, builder, _status_key(task))
        if not is_dbt_node_status_success(status.get("status") if isinstance(status, dict) else status):
            continue
        tests_key = get_tests_status_xcom_key(task.model_unique_id)
        if (
            require_tests_passed
            and task.gated_by_tests
            and not is_dbt_node_status_success(get_xcom_val(ti, builder, tests_key))
        ):
            continue
        for asset in _assets(task):
            events.add(asset, extra={"task_id": task.task_id, "dbt_node": task.model_unique_id})
            running.log.info("Asset event for %s (%s): %s", task.task_id, task.model_unique_id, asset.uri)


def _assets(task: Any) -> list[Asset]:
    """The task's Asset outlets (not :data:`BUILT_OUTLETS`, through which it may emit others')."""
    return [outlet for outlet in task.outlets if isinstance(outlet, Asset)]


def _parents(task: Any) -> set[str]:
    """The task's parents in the lineage: its upstream tasks but the release task."""
    return {task_id for task_id in task.upstream_task_ids if task_id.rsplit(".", 1)[-1] != RELEASE_TASK_ID}


def _parent_models(task: Any) -> list[str]:
    """The unique ids of the nearest model tasks above ``task`` that watch the same producer,
    through their tests' tasks: dbt builds ``task``'s node only after theirs."""
    found: set[str] = set()
    todo, visited = list(task.upstream_list), set()
    while todo:
        upstream = todo.pop()
        if upstream.task_id in visited or getattr(upstream, "producer_task_id", None) != task.producer_task_id:
            continue
        visited.add(upstream.task_id)
        if isinstance(upstream, ModelConsumer):
            found.add(upstream.model_unique_id)
        elif isinstance(upstream, TestConsumer):
            todo.extend(upstream.upstream_list)
    return sorted(found)


def _status_key(task: ConsumerMixin) -> str:
    """The XCom key Cosmos's trigger reads for this task's node (a model's tests: their aggregate)."""
    if task.is_test_sensor:
        return get_tests_status_xcom_key(task.model_unique_id)
    return get_status_xcom_key(task.model_unique_id)


def _in_cleared_builds(task: Any) -> bool:
    """A model's task or its tests' task can lead a cleared build; a cleared test on several models
    (its own task) is built by its models' leader, or runs itself."""
    return isinstance(task, (ModelConsumer, TestConsumer)) and not _is_detached_test(task)


def _leads_cleared_builds(resource_type: DbtResourceType, node: DbtNode) -> bool:
    """:func:`_in_cleared_builds` for a task being rendered: a model's, or its tests' (a test task
    whose node is the model, not a test)."""
    return resource_type == DbtResourceType.MODEL or (
        resource_type == DbtResourceType.TEST and node.resource_type != DbtResourceType.TEST
    )


def _is_detached_test(task: Any) -> bool:
    """The task of a test on several models (Cosmos's detached test: its node is the test)."""
    return isinstance(task, TestConsumer) and task.model_unique_id.startswith("test.")


def _ticket_covers(ticket: Any, task_id: str, run_started: float | str) -> bool:
    """A cleared build's ticket of this start of the run that lists ``task_id``."""
    if not isinstance(ticket, dict) or task_id not in (ticket.get("tasks") or ()):
        return False
    try:
        return abs(float(ticket["run_started"]) - float(run_started)) < 1e-3
    except (KeyError, TypeError, ValueError):
        return False


def _detached_test(task_id: str, detached_from_parent: dict[str, list[DbtNode]] | None) -> DbtNode | None:
    """The test node of a detached test's task. Cosmos 1.15.1 hands a detached test's converter the
    last node it rendered (``_add_test_tasks`` reuses the loop's ``task_or_group_args``), so the
    node is found by the task id Cosmos gave it (``calculate_detached_node_name``)."""
    for tests in (detached_from_parent or {}).values():
        for test in tests:
            if f"{test.resource_name.split('.')[0]}_test" == task_id:
                return test
    return None


def _group_identifier(dag: Any, task_group: Any) -> str:
    """Cosmos's ``dbt_dag_task_group_identifier`` (``cosmos.airflow.graph``), from the outer group."""
    parts = [dag.dag_id] if dag.dag_id else []
    if task_group is not None and task_group.group_id:
        parts.append(task_group.group_id)
    return "__".join(parts)
