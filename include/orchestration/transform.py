"""The dbt stage as Cosmos renders it: one task per model with its tests right after it.

Both the pipeline's task group (``dags/ecommerce_elt.py``) and the transform-only ``DbtDag``
(``dags/dbt_transform.py``) are built here from the same configs, so they cannot drift apart:

- project: rendered from ``target/manifest.json`` (``LoadMode.DBT_MANIFEST``), so parsing a DAG
  never runs dbt; :func:`require_manifest` refuses a missing or stale manifest by name;
- profile: the run's warehouse Connection (:class:`RunWarehouseProfileMapping`);
- render: tests after each model (a failing test stops that model's descendants only), sources as
  freshness-check tasks;
- execution: dbt from its own virtualenv; retries and timeouts per node type from policies.yml;
- each mart's task also updates a stable Asset (:data:`MART_ASSETS`) the consumers schedule on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import airflow  # noqa: F401  (cosmos.constants needs Airflow initialised first)
from airflow.sdk import Asset
from cosmos import DbtDag, DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, SourceRenderingBehavior, TestBehavior

from include.orchestration.manifest import DBT_PROJECT_DIR, dbt_executable, project_names, require_manifest
from include.orchestration.policies import task_policy
from include.orchestration.profiles import RunWarehouseProfileMapping

TRANSFORM_GROUP_ID = "transform"
MARTS = ("fct_orders", "dim_customers", "fct_daily_revenue", "fct_marketing_performance")
# Warehouse-independent names for the marts: a run on either warehouse updates the same Asset.
MART_ASSETS = {mart: Asset(name=f"ecommerce.marts.{mart}", uri=f"ecommerce://marts/{mart}") for mart in MARTS}


@dataclass(frozen=True)
class TransformSettings:
    """The knobs of the dbt stage; one switch for the execution mode (see README, performance)."""

    execution_mode: ExecutionMode = ExecutionMode.WATCHER
    invocation_mode: InvocationMode = InvocationMode.SUBPROCESS
    test_behavior: TestBehavior = TestBehavior.AFTER_EACH
    source_rendering: SourceRenderingBehavior = SourceRenderingBehavior.ALL
    # How often a model/test sensor looks for its node's result; Cosmos's 10 s default adds up to
    # 10 s per lineage level to the stage, a lookup costs one XCom query.
    watcher_poke_interval_s: int = 2
    # Sensors poke in their own task process instead of deferring to the triggerer. A deferred
    # sensor costs a second task start (DAG parse included) on resume, and Airflow 3.3 can fail a
    # resumed task on a stale executor event (apache/airflow#72716, #71580: "Failed to report
    # terminal task state ... 404", seen here). The price: a worker slot per waiting sensor, at most
    # the width of the lineage at once. Poking sensors conclude as Cosmos's trigger does when a node
    # has no status (:func:`_conclude_from_a_successful_build`); tests on several models never get one.
    watcher_sensors_deferrable: bool = False


SETTINGS = TransformSettings()


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
    return RenderConfig(
        load_method=LoadMode.DBT_MANIFEST,
        test_behavior=settings.test_behavior,
        source_rendering_behavior=settings.source_rendering,
        enable_mock_profile=False,
        # a test on several models (e.g. daily revenue vs fct_orders) runs once all its models are built
        should_detach_multiple_parents_tests=True,
    )


def execution_config(settings: TransformSettings = SETTINGS) -> ExecutionConfig:
    return ExecutionConfig(
        execution_mode=settings.execution_mode,
        invocation_mode=settings.invocation_mode,
        dbt_executable_path=str(dbt_executable()),
    )


def operator_args() -> dict[str, Any]:
    """Arguments every dbt task gets; ``full_refresh`` follows the run's param."""
    return {
        "install_deps": False,
        "full_refresh": "{{ params.get('full_refresh', False) }}",
        **task_policy("dbt_model").operator_kwargs(),
    }


def transform_task_group(group_id: str = TRANSFORM_GROUP_ID, **kwargs: Any) -> DbtTaskGroup:
    """The dbt stage inside a pipeline DAG (call within a ``@dag`` body)."""
    group = DbtTaskGroup(
        group_id=group_id,
        project_config=project_config(),
        profile_config=profile_config(),
        render_config=render_config(),
        execution_config=execution_config(),
        operator_args=operator_args(),
        **kwargs,
    )
    apply_node_policies(group.children.values() if hasattr(group, "children") else [])
    return group


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
    apply_node_policies(dag.tasks)
    return dag


def node_type(task: Any) -> str:
    """The policies.yml task type of a rendered Cosmos task, from its operator class."""
    name = type(task).__name__
    if "Producer" in name:
        return "dbt_build"
    if "Test" in name:
        return "dbt_test"
    if "Source" in name:
        return "dbt_source"
    return "dbt_model"


def apply_node_policies(tasks: Any) -> None:
    """Per node type retries/timeouts, and the stable mart Assets on the marts' run tasks."""
    for task in _flatten(tasks):
        for key, value in task_policy(node_type(task)).operator_kwargs().items():
            setattr(task, key, value)
        if hasattr(task, "poke_interval"):  # the watcher's sensors
            task.poke_interval = SETTINGS.watcher_poke_interval_s
            task.deferrable = SETTINGS.watcher_sensors_deferrable
            _conclude_from_a_successful_build(task)
        mart = _mart_of(task)
        if mart is not None:
            task.outlets = [*task.outlets, MART_ASSETS[mart]]


def _conclude_from_a_successful_build(sensor: Any) -> None:
    """A poking sensor with no node status concludes as Cosmos 1.15.1's trigger does
    (``NODE_NOT_RUN``): once the producer's ``dbt build`` succeeded, the node did not fail. Its poke
    path would wait until the timeout instead, e.g. for every test on several models."""
    undecided = sensor._handle_no_dbt_node_status

    def handle_no_status(producer_task_state: str | None, try_number: int, context: Any) -> bool:
        if producer_task_state == "success":
            return True
        return undecided(producer_task_state, try_number, context)

    sensor._handle_no_dbt_node_status = handle_no_status


def _mart_of(task: Any) -> str | None:
    if node_type(task) != "dbt_model":
        return None
    parts = task.task_id.split(".")  # "<group>.<model>.run", or "<model>_run" for a model without tests
    for mart in MARTS:
        if parts[-2:] == [mart, "run"] or parts[-1] == f"{mart}_run":
            return mart
    return None


def _flatten(nodes: Any) -> list[Any]:
    tasks = []
    for node in nodes:
        if hasattr(node, "children"):
            tasks.extend(_flatten(node.children.values()))
        else:
            tasks.append(node)
    return tasks
