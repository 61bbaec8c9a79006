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
