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
- a node whose task carries outlets (the marts' Assets): a task ended by its trigger emits no asset
  events (``handle_event_submit`` for ``BaseTaskEndEvent`` only sets the state), so it resumes to
  succeed on a worker, which emits them.

The trigger's ``run_id`` and ``try_number`` are templates: for a task started from its trigger the
triggerer builds a runtime task instance and renders the trigger kwargs that are also operator
``template_fields`` (``BaseTrigger.task_instance`` setter, ``TriggerRunner.run_trigger``).

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
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import Asset
from airflow.triggers.base import StartTriggerArgs, TaskSkippedEvent, TaskSuccessEvent, TriggerEvent
from cosmos import RenderConfig
from cosmos.airflow.graph import create_task_metadata, create_test_task_metadata
from cosmos.constants import TESTABLE_DBT_RESOURCES, DbtResourceType, ExecutionMode, TestBehavior
from cosmos.core.airflow import get_airflow_task
from cosmos.core.graph.entities import Task as TaskMetadata
from cosmos.dbt.graph import DbtNode
from cosmos.listeners.dag_run_listener import EventStatus
from cosmos.operators._watcher.state import PRODUCER_FINAL_STATES, ProducerTaskState
from cosmos.operators._watcher.triggerer import WatcherEventReason, WatcherTrigger
from cosmos.operators.watcher import DbtRunWatcherOperator, DbtSourceWatcherOperator, DbtTestWatcherOperator

_TRIGGER_PATH = "include.orchestration.consumers.ConsumerTrigger"


class ConsumerTrigger(WatcherTrigger):
    """Cosmos's watcher trigger that ends its task in the triggerer when nothing needs a worker.

    :param try_number: the task's try; after the first, the task resumes on a worker for Cosmos's
        fallback run once the producer is done.
    :param resume_on_success: resume on a worker after a success too (a task with outlets).
    """

    def __init__(self, *, try_number: int | str = 1, resume_on_success: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.try_number = try_number
        self.resume_on_success = resume_on_success

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return _TRIGGER_PATH, {**kwargs, "try_number": self.try_number, "resume_on_success": self.resume_on_success}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if int(self.try_number) > 1:
            yield await self._retry_event()
            return
        async for event in super().run():
            yield self._ending(event)
            return

    async def _retry_event(self) -> TriggerEvent:
        """Once the producer is done, resume as "producer skipped": Cosmos then runs the node alone."""
        while await self._get_producer_task_status() not in PRODUCER_FINAL_STATES:
            await asyncio.sleep(self.poke_interval)
        return TriggerEvent({"status": EventStatus.FAILED, "reason": WatcherEventReason.PRODUCER_SKIPPED})

    def _ending(self, event: TriggerEvent) -> TriggerEvent:
        """The event that ends the task here, or Cosmos's event to resume it with on a worker."""
        status = event.payload.get("status")
        if status == EventStatus.SUCCESS and not self.resume_on_success:
            return TaskSuccessEvent()
        if status == EventStatus.SKIPPED:
            return TaskSkippedEvent()
        return event


class ConsumerMixin:
    """What the three consumer classes add to Cosmos's sensors; see the module docstring.

    :param start_from_trigger: start (and on the happy path end) the task in the triggerer.
    """

    template_fields: tuple[str, ...] = ("run_id", "try_number")
    start_from_trigger: bool = False

    # Set by Cosmos's sensor classes this mixes into.
    model_unique_id: str
    producer_task_id: str
    poke_interval: float
    is_test_sensor: bool
    outlets: list[Any]

    def __init__(self, *, start_from_trigger: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_from_trigger = start_from_trigger
        # Rendered by the triggerer into the trigger's kwargs of the same names.
        self.run_id = "{{ run_id }}"
        self.try_number = "{{ ti.try_number }}"

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
                "resume_on_success": bool(self.outlets),
            },
            timeout=None,  # the scheduler applies execution_timeout to the trigger
        )

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

    :param start_from_trigger: the triggerer-only tasks of this module; ``False``: poking sensors.
    :param poke_interval_s: how often a consumer looks for its node's result (trigger or poke).
    :param policies: constructor kwargs (retries, timeouts, pool) per resource type.
    :param outlets: extra outlets per model name (e.g. the marts' Assets).
    """

    start_from_trigger: bool = True
    poke_interval_s: float = 2
    policies: Mapping[DbtResourceType, Mapping[str, Any]] = field(default_factory=dict)
    outlets: Mapping[str, Asset] = field(default_factory=dict)


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
    }
    if resource_type == DbtResourceType.MODEL and node.resource_name in options.outlets:
        arguments["outlets"] = [*arguments.get("outlets", []), options.outlets[node.resource_name]]
    meta = TaskMetadata(
        id=meta.id,
        owner=meta.owner,
        operator_class=f"{cls.__module__}.{cls.__name__}",
        arguments=arguments,
        extra_context=meta.extra_context,
    )
    return get_airflow_task(meta, dag, task_group)


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
