"""The Celery shape's configuration, without starting it: each worker sees only its own copy of
the project, the broker and queues are the deployment's, and the LocalExecutor stack is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dev.celery_shape import DBT_QUEUE, copy_project
from dev.stack import REPO_ROOT, LocalStack, StackLayout


def test_a_workers_copy_holds_the_image_and_no_build_output(tmp_path: Path) -> None:
    copy = copy_project(REPO_ROOT, REPO_ROOT / "dags", tmp_path / "project")

    assert (copy / "dags" / "ecommerce_elt.py").exists() and (copy / "plugins" / "airflow_local_settings.py").exists()
    target = copy / "include" / "dbt" / "ecommerce" / "target"
    assert {p.name for p in target.iterdir()} <= {"manifest.json", "manifest.fingerprint"}
    assert not list(copy.rglob("__pycache__")) and not (copy / "include" / "dbt" / "docs").exists()
    assert (copy / ".venv-dbt").is_symlink()


def test_workers_run_from_their_own_copies_with_the_deployments_queues(tmp_path: Path) -> None:
    stack = LocalStack(StackLayout(tmp_path / "local"), airflow_port=18080, executor="celery")
    env = stack.airflow_env()

    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://127.0.0.1:{stack.ports.redis}/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["AIRFLOW__COSMOS__WATCHER_DBT_EXECUTION_QUEUE"] == DBT_QUEUE
    assert [w.queues for w in stack.workers] == [(DBT_QUEUE,), ("default",)]
    folders = set()
    for worker in stack.workers:
        worker_env = stack.worker_env(worker)
        project = stack.worker_dir(worker) / "project"
        assert worker_env["PYTHONPATH"] == str(project)
        assert worker_env["AIRFLOW__CORE__DAGS_FOLDER"] == str(project / "dags")
        assert stack.celery_worker(worker).cwd == project
        folders.add(project)
    assert len(folders) == len(stack.workers) and not any(str(REPO_ROOT) in str(f) for f in folders)


def test_the_default_stack_is_localexecutor_and_reads_ports_saved_before_the_broker(tmp_path: Path) -> None:
    layout = StackLayout(tmp_path / "local")
    layout.root.mkdir(parents=True)
    layout.ports_file.write_text(json.dumps({"postgres": 1, "stripe": 2, "slack": 3, "snowflake": 4, "airflow": 5}))
    stack = LocalStack(layout, airflow_port=18080)

    assert stack.airflow_env()["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert "AIRFLOW__CELERY__BROKER_URL" not in stack.airflow_env()
    assert [p.name for p in stack.all_processes() if "worker" in p.name or "redis" in p.name] == []
    assert stack.ports.postgres == 1 and stack.ports.redis == 0


def test_an_unknown_executor_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="executor must be one of"):
        LocalStack(StackLayout(tmp_path / "local"), executor="kubernetes")


def test_the_docs_plugin_reads_where_the_docs_task_writes(tmp_path: Path) -> None:
    stack = LocalStack(StackLayout(tmp_path / "local"), airflow_port=18080)
    served = json.loads(stack.airflow_env()["AIRFLOW__COSMOS__DBT_DOCS_PROJECTS"])["ecommerce"]
    assert served["dir"] == str(stack.layout.landing_dir / "dbt-docs" / "ecommerce")
    assert stack.settings.variables["ecommerce_docs_url"] == "file://" + served["dir"]
