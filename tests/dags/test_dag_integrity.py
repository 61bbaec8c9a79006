"""Every DAG imports cleanly and carries what operators rely on: tags, an owner, retries, docs."""

from __future__ import annotations

from functools import cache

import pytest
from airflow.models import DagBag

from tests.conftest import REPO_ROOT


@cache
def dag_bag() -> DagBag:
    return DagBag(dag_folder=str(REPO_ROOT / "dags"))


def dag_ids() -> list[str]:
    return sorted(dag_bag().dags)


def test_no_import_errors() -> None:
    assert dag_bag().import_errors == {}


def test_the_pipeline_dag_is_there() -> None:
    assert "ecommerce_elt" in dag_ids()


@pytest.mark.parametrize("dag_id", dag_ids())
def test_dag_has_tags_owner_retries_and_docs(dag_id: str) -> None:
    dag = dag_bag().dags[dag_id]
    assert dag.tags, f"{dag_id} has no tags"
    assert dag.doc_md and dag.doc_md.strip(), f"{dag_id} has no doc_md"
    assert dag.default_args.get("retries", 0) >= 2, f"{dag_id}: default_args['retries'] must be >= 2"
    owners = {task.owner for task in dag.tasks}
    assert "airflow" not in owners, f"{dag_id} has tasks owned by the default 'airflow' user"


def producers(dag_id: str) -> list:
    return [task for task in dag_bag().dags[dag_id].tasks if "Producer" in type(task).__name__]


def test_both_dbt_builds_share_one_single_slot_pool() -> None:
    """ecommerce_elt's dbt stage and dbt_transform build the same models into the same target/:
    a one-slot pool, declared where both the Astro path and the local stack import pools, keeps
    them from building at once."""
    from dev.airflow_settings import load_settings

    pools = {pool.name: pool.slots for pool in load_settings(REPO_ROOT / "airflow_settings.yaml").pools}
    builds = producers("ecommerce_elt") + producers("dbt_transform")
    assert len(builds) == 2, builds
    assert {task.pool for task in builds} == {"dbt_build"}
    assert pools.get("dbt_build") == 1


def test_dbt_transform_alerts_slack_on_failure_and_retry() -> None:
    from include.orchestration.alerts import AlertKind, PipelineAlert

    for task in dag_bag().dags["dbt_transform"].tasks:
        kinds = {
            callback.kind
            for attribute in ("on_failure_callback", "on_retry_callback")
            for callback in _callbacks(getattr(task, attribute))
            if isinstance(callback, PipelineAlert)
        }
        assert kinds == {AlertKind.FAILURE, AlertKind.RETRY}, task.task_id


def _callbacks(value: object) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] if value else []
