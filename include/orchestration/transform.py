"""The dbt stage as Cosmos renders it: one task per model with its tests right after it.

Both the pipeline's task group (``dags/ecommerce_elt.py``) and the transform-only ``DbtDag``
(``dags/dbt_transform.py``) are built here from the same configs, so they cannot drift apart:

- project: rendered from ``target/manifest.json`` (``LoadMode.DBT_MANIFEST``), so parsing a DAG
  never runs dbt; :func:`require_manifest` refuses a missing or stale manifest by name;
- profile: the run's warehouse Connection (:class:`RunWarehouseProfileMapping`);
- render: tests after each model (a failing test stops that model's descendants only), or in the
  model's own task (:attr:`TransformSettings.tests_in_model_task`), sources as
  freshness-check tasks, checked by the producer before its build (:mod:`include.orchestration.freshness`);
- execution: dbt from its own virtualenv; retries and timeouts per node type from policies.yml; a
  warehouse that stops answering stops the dbt command (:mod:`include.orchestration.watchdog`);
- consumers: each model/test/source task starts and, on the happy path, ends in the triggerer, all
  of them released at the stage's start and gated by the build's results rather than by their
  parents' tasks (:mod:`include.orchestration.consumers`;
  :attr:`TransformSettings.consumers_start_from_trigger`);
- each mart's task also updates a stable Asset (:data:`MART_ASSETS`) the consumers schedule on;
  the producer emits it when its build succeeded (the mart's task then ends in the triggerer).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import airflow  # noqa: F401  (cosmos.constants needs Airflow initialised first)
from airflow.sdk import Asset, TriggerRule
from cosmos import DbtDag, DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import (
    PRODUCER_WATCHER_DONE_TASK_ID,
    DbtResourceType,
    ExecutionMode,
    InvocationMode,
    LoadMode,
    SourceRenderingBehavior,
    TestBehavior,
)

from include.orchestration.consumers import (
    BUILT_OUTLETS,
    ConsumerOptions,
    node_converters,
    publish_built_outlets,
    release_at_stage_start,
    watch_detached_tests,
)
from include.orchestration.freshness import check_before_build
from include.orchestration.manifest import DBT_PROJECT_DIR, dbt_executable, project_names, require_manifest
from include.orchestration.policies import task_policy
from include.orchestration.profiles import RunWarehouseProfileMapping
from include.orchestration.watchdog import watch_dbt_task

TRANSFORM_GROUP_ID = "transform"
# Inside the group, after Cosmos's producer gate; see _let_the_node_tasks_decide.
PRODUCER_ABSORBED_TASK_ID = "producer_state_absorbed"
MARTS = ("fct_orders", "dim_customers", "fct_daily_revenue", "fct_marketing_performance")
# Warehouse-independent names for the marts: a run on either warehouse updates the same Asset.
# The producer's flags when the model tasks gate on their tests (TransformSettings.tests_in_model_task).
TESTS_IN_THE_BUILD = ("--resource-type", "test", "--resource-type", "unit_test")
MART_ASSETS = {mart: Asset(name=f"ecommerce.marts.{mart}", uri=f"ecommerce://marts/{mart}") for mart in MARTS}


@dataclass(frozen=True)
class TransformSettings:
    """The knobs of the dbt stage; one switch for the execution mode (see README, performance)."""

    execution_mode: ExecutionMode = ExecutionMode.WATCHER
    invocation_mode: InvocationMode = InvocationMode.SUBPROCESS
    test_behavior: TestBehavior = TestBehavior.AFTER_EACH
    source_rendering: SourceRenderingBehavior = SourceRenderingBehavior.ALL
    # How often a consumer (trigger or poking sensor) looks for its node's result; Cosmos's 10 s
    # default adds up to 10 s per lineage level to the stage, a lookup costs one XCom query.
    watcher_poke_interval_s: int = 2
    # Consumers start and end in the triggerer (include/orchestration/consumers.py): on the happy path
    # no model/test/source task takes a worker process, and all are released at the stage's start, so
    # each ends when the build reports its node, not a lineage level after its parents' tasks.
    # False: Cosmos's sensors poke in their own task process, each after its parents' tasks (a worker
    # slot per waiting sensor), as before. Neither defers from a worker:
    # a resumed deferral can fail on a stale executor event (apache/airflow#72716, #71580).
    consumers_start_from_trigger: bool = True
    # The producer checks source freshness itself before its build (include/orchestration/freshness.py),
    # with the project's thresholds; False: Cosmos's pre-step, a `dbt source freshness` of its own
    # (a second dbt start-up and parse before the build).
    freshness_in_producer: bool = True
    # One task per model whose own success also waits for the model's tests in the same build (and
    # fails, naming them, when one failed): no task of its own for a model's tests, half the tasks the
    # scheduler and triggerer carry per model. Its retry or clear rebuilds the model with its tests
    # (`dbt build`). False: each model's tests have their own task after the model's (Cosmos's
    # AFTER_EACH), which can be cleared on its own.
    tests_in_model_task: bool = False

    def __post_init__(self) -> None:
        if self.tests_in_model_task and not self.consumers_start_from_trigger:
            raise ValueError(
                "TransformSettings.tests_in_model_task needs consumers_start_from_trigger: the model's trigger is "
                "what waits for its tests (a poking sensor would pass a model whose tests failed). Unset "
                "ECOMMERCE_TESTS_IN_MODEL_TASK, or ECOMMERCE_CONSUMERS_START_FROM_TRIGGER=false."
            )


def _env_flag(name: str, default: bool = True) -> bool:
    return os.environ.get(name, str(default)).lower() not in ("false", "0", "")


# The switches from outside (the benchmark's comparisons): ECOMMERCE_CONSUMERS_START_FROM_TRIGGER=false,
# ECOMMERCE_FRESHNESS_IN_PRODUCER=false, ECOMMERCE_TESTS_IN_MODEL_TASK=true, and
# ECOMMERCE_DBT_INVOCATION_MODE=dbt_runner (dbt-core installed in Airflow's own environment).
SETTINGS = TransformSettings(
    consumers_start_from_trigger=_env_flag("ECOMMERCE_CONSUMERS_START_FROM_TRIGGER"),
    freshness_in_producer=_env_flag("ECOMMERCE_FRESHNESS_IN_PRODUCER"),
    tests_in_model_task=_env_flag("ECOMMERCE_TESTS_IN_MODEL_TASK", default=False),
    invocation_mode=InvocationMode(os.environ.get("ECOMMERCE_DBT_INVOCATION_MODE", InvocationMode.SUBPROCESS.value)),
)


def node_kind(task_id: str) -> str | None:
    """``model``, ``test`` or ``source`` for a task of the dbt stage that Cosmos rendered for a dbt
    node, else None (only for ids inside the group: ``check_ecommerce_source`` would read as a source).

    Cosmos names them ``<model>.run`` / ``<model>.test`` inside a model's group, ``<model>_run``
    for a model without tests, ``<test>_test`` for a test on several models, ``<source>.source`` or
    ``<source>_source``; the one place this project reads those names.
    """
    for kind, suffix in (("model", "run"), ("test", "test"), ("source", "source")):
        if task_id.endswith((f".{suffix}", f"_{suffix}")):
            return kind
    return None


def project_config(project_dir: Path = DBT_PROJECT_DIR) -> ProjectConfig:
    return ProjectConfig(
        dbt_project_path=project_dir,
        manifest_path=require_manifest(project_dir),
        project_name=project_names(project_dir).name,
        install_dbt_deps=False,  # no packages: dbt Hub is out of reach, macros are in the project
        partial_parse=True,
    )


def profile_config(project_dir: Path = DBT_PROJECT_DIR) -> ProfileConfig:
    """The run's warehouse Connection as the profile the dbt project names (``profile:``)."""
    return ProfileConfig(
        profile_name=project_names(project_dir).profile,
        target_name="warehouse",
        profile_mapping=RunWarehouseProfileMapping(),
    )


def render_config(settings: TransformSettings = SETTINGS) -> RenderConfig:
    """Models, tests and sources rendered as the consumers of :mod:`include.orchestration.consumers`."""
    base = _base_render_config(settings)
    return dataclasses.replace(
        base,
        node_converters=node_converters(base, consumer_options(settings)),
        node_conversion_by_task_group=False,  # Cosmos keeps building each model's group; we build its tasks
        # Cosmos adds its `dbt source freshness` pre-step to the producer whenever it renders sources; it
        # renders none here, but hands every source node to the converter above (a type it does not
        # render goes to its converter), which builds the same source tasks from `base`.
        source_rendering_behavior=(
            SourceRenderingBehavior.NONE if settings.freshness_in_producer else base.source_rendering_behavior
        ),
    )


def _base_render_config(settings: TransformSettings) -> RenderConfig:
    return RenderConfig(
        load_method=LoadMode.DBT_MANIFEST,
        # no test tasks: each model's task gates on its tests (the producer still builds them, see
        # execution_config)
        test_behavior=TestBehavior.NONE if settings.tests_in_model_task else settings.test_behavior,
        source_rendering_behavior=settings.source_rendering,
        enable_mock_profile=False,
        # a test on several models (e.g. daily revenue vs fct_orders) runs once all its models are built
        should_detach_multiple_parents_tests=True,
    )


def consumer_options(settings: TransformSettings = SETTINGS) -> ConsumerOptions:
    """Per node type policies (policies.yml) and the marts' Assets, as the consumers' constructor kwargs."""
    return ConsumerOptions(
        start_from_trigger=settings.consumers_start_from_trigger,
        poke_interval_s=settings.watcher_poke_interval_s,
        policies={
            DbtResourceType.MODEL: task_policy("dbt_model").operator_kwargs(),
            DbtResourceType.TEST: task_policy("dbt_test").operator_kwargs(),
            DbtResourceType.SOURCE: task_policy("dbt_source").operator_kwargs(),
        },
        outlets=MART_ASSETS,
        outlet_policy=task_policy("dbt_mart").operator_kwargs(),
        tests_in_model_task=settings.tests_in_model_task,
    )


def execution_config(settings: TransformSettings = SETTINGS) -> ExecutionConfig:
    producer_args = task_policy("dbt_build").operator_kwargs()
    producer_args["pre_execute"] = functools.partial(_before_build, check_freshness=settings.freshness_in_producer)
    if settings.consumers_start_from_trigger:  # the marts' tasks end in the triggerer: it emits their Assets
        producer_args["post_execute"] = publish_built_outlets
        producer_args["outlets"] = [BUILT_OUTLETS]
    if settings.tests_in_model_task:
        # Without test tasks Cosmos narrows the build to `--resource-type model seed snapshot`; its
        # flags add to these, so the build still runs every test and unit test the model tasks gate on.
        producer_args["dbt_cmd_flags"] = [*producer_args.get("dbt_cmd_flags", []), *TESTS_IN_THE_BUILD]
    return ExecutionConfig(
        execution_mode=settings.execution_mode,
        invocation_mode=settings.invocation_mode,
        dbt_executable_path=str(dbt_executable()),
        # the producer's policy over the group's operator_args (Cosmos creates that task itself)
        setup_operator_args=producer_args,
    )


def _before_build(context: Any, *, check_freshness: bool) -> None:
    """The producer's ``pre_execute``: the tests on several models get their own results published,
    the build is watched for a warehouse that stops answering, and
    (:attr:`TransformSettings.freshness_in_producer`) the sources are checked."""
    watch_detached_tests(context)
    watch_dbt_task(context)
    if check_freshness:
        check_before_build(context)


def operator_args() -> dict[str, Any]:
    """Arguments every dbt task gets; ``full_refresh`` follows the run's param."""
    return {
        "install_deps": False,
        "full_refresh": "{{ params.get('full_refresh', False) }}",
        **task_policy("dbt_model").operator_kwargs(),
    }


def transform_task_group(
    group_id: str = TRANSFORM_GROUP_ID, settings: TransformSettings = SETTINGS, **kwargs: Any
) -> DbtTaskGroup:
    """The dbt stage inside a pipeline DAG (call within a ``@dag`` body)."""
    group = DbtTaskGroup(
        group_id=group_id,
        project_config=project_config(),
        profile_config=profile_config(),
        render_config=render_config(settings),
        execution_config=execution_config(settings),
        operator_args=operator_args(),
        **kwargs,
    )
    release_at_stage_start(list(group.iter_tasks()), group.dag, group)
    _let_the_node_tasks_decide(group)
    return group


def _let_the_node_tasks_decide(group: DbtTaskGroup) -> None:
    """What follows the group waits for the node tasks alone, not for the producer's exit code.

    The producer's ``dbt build`` fails when any node does, and Cosmos's gate after it
    (``dbt_producer_watcher_done``) then holds back what follows the group. The node tasks report
    every result themselves, and clearing a failed node from the grid reruns it and its descendants
    but not the producer: after the data is fixed, that first failed build would keep the run failed
    for good. :data:`PRODUCER_ABSORBED_TASK_ID`, done whatever the gate ended with (so it succeeds even
    when the whole group was upstream_failed), makes the gate no leaf of the group. If the producer
    failed before reporting a node, that node's task fails (and retries on its own), so nothing is
    lost by not waiting for the producer's state.
    """
    from airflow.providers.standard.operators.empty import EmptyOperator

    gate = group.children[f"{group.group_id}.{PRODUCER_WATCHER_DONE_TASK_ID}"]
    absorbed = EmptyOperator(
        task_id=PRODUCER_ABSORBED_TASK_ID,
        task_group=group,
        trigger_rule=TriggerRule.ALL_DONE,
        doc_md=(
            "Done whatever the producer and its gate ended with (green even when nothing before it ran): "
            "what follows the dbt stage waits for the node tasks, which carry every result of the build."
        ),
    )
    gate >> absorbed


def transform_dag(dag_id: str, project_dir: Path = DBT_PROJECT_DIR, **dag_kwargs: Any) -> DbtDag:
    """A transform-only DAG over the same configs (another ``project_dir``: the benchmark's replicas)."""
    dag = DbtDag(
        dag_id=dag_id,
        project_config=project_config(project_dir),
        profile_config=profile_config(project_dir),
        render_config=render_config(),
        execution_config=execution_config(),
        operator_args=operator_args(),
        **dag_kwargs,
    )
    release_at_stage_start(list(dag.tasks), dag)
    return dag
