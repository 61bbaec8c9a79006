"""Bringing another dbt project: a differently shaped one (seeds, a snapshot, an ephemeral model, a
model in a nested folder, its own project and profile names) renders through the same
``transform_dag`` as the shop's project with no constant changed, and builds through the real
scheduler on the embedded stack."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from include.orchestration.manifest import build_manifest, project_names

BYO_PROJECT = Path(__file__).with_name("byo_dbt_project")
DAG_ID = "byo_regions_transform"
DAG_FILE = '''"""Test only: another team's dbt project through the project's transform_dag."""
from pathlib import Path

import pendulum
from airflow.sdk import Param

from include.orchestration.transform import transform_dag

byo = transform_dag(
    "{dag_id}", project_dir=Path("{project_dir}"), schedule=None, catchup=False,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), default_args={{"retries": 0}},
    params={{"warehouse": Param(None, type=["null", "string"]), "full_refresh": Param(False, type="boolean")}},
)
'''


@pytest.fixture(scope="module")
def byo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project (dbt writes target/ and logs/ beside it) with its manifest built."""
    project = tmp_path_factory.mktemp("byo") / "byo_regions"
    shutil.copytree(BYO_PROJECT, project)
    build_manifest(project)
    return project


def test_names_come_from_the_dbt_project(byo_project: Path) -> None:
    assert project_names(byo_project).name == "byo_regions"
    assert project_names(byo_project).profile == "byo_profile"


def test_renders_seeds_snapshots_and_nested_models(byo_project: Path) -> None:
    from include.orchestration.transform import transform_dag

    dag = transform_dag("byo_render_probe", project_dir=byo_project, schedule=None)
    tasks = dag.task_dict
    assert {
        "countries.seed",
        "countries.test",
        "countries_snapshot_snapshot",
        "stg_countries.run",
        "stg_countries.test",
        "fct_europe_countries.run",
        "fct_europe_countries.test",
    } <= set(tasks), sorted(tasks)
    # the seed's tests gate what reads it; an ephemeral model is inlined by dbt, so its task runs nothing
    assert "countries.test" in tasks["stg_countries.run"].upstream_task_ids
    assert "countries.test" in tasks["countries_snapshot_snapshot"].upstream_task_ids
    assert type(tasks["int_regions_run"]).__name__ == "EmptyOperator"
    assert "int_regions_run" in tasks["fct_europe_countries.run"].upstream_task_ids


@pytest.fixture(scope="module")
def byo_stack(byo_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from dev.airflow_client import wait_for_dag
    from dev.embedded_postgres import find_free_port
    from dev.stack import LocalStack, StackLayout

    root = tmp_path_factory.mktemp("byo_stack")
    dags = root / "dags"
    dags.mkdir()
    (dags / "byo_regions.py").write_text(DAG_FILE.format(dag_id=DAG_ID, project_dir=byo_project))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", "False")
        stack = LocalStack(StackLayout(root / "local"), airflow_port=find_free_port(), dags_folder=dags)
        stack.up("small", with_airflow=True)
        try:
            wait_for_dag(f"http://127.0.0.1:{stack.ports.airflow}", DAG_ID)
            yield stack
        finally:
            stack.down()


@pytest.mark.slow
def test_builds_through_the_scheduler(byo_stack) -> None:
    from dev.airflow_client import task_states, trigger, wait_for_run

    base_url = f"http://127.0.0.1:{byo_stack.ports.airflow}"
    run_id = trigger(base_url, DAG_ID, {"warehouse": "postgres"})
    state = wait_for_run(base_url, DAG_ID, run_id, timeout_s=600)
    assert state == "success", task_states(base_url, DAG_ID, run_id)
    with psycopg.connect(byo_stack.warehouse_dsn()) as conn:
        europe = conn.execute("SELECT country_code, countries_in_region FROM byo.fct_europe_countries ORDER BY 1")
        assert europe.fetchall() == [("DE", 2), ("FR", 2)]
        snapshot = conn.execute("SELECT count(*) FROM byo.countries_snapshot WHERE dbt_valid_to IS NULL")
        assert snapshot.fetchone()[0] == 4
