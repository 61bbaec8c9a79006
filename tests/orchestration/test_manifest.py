"""The manifest guard: a missing or stale manifest is refused with the command that rebuilds it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from include.orchestration.manifest import (
    DBT_PROJECT_DIR,
    ManifestError,
    build_manifest,
    project_fingerprint,
    require_manifest,
)


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "ecommerce"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs"))
    (copy / "target").mkdir()
    return copy


def test_the_repository_manifest_is_current() -> None:
    assert require_manifest().exists()


def test_a_missing_manifest_names_the_rebuild_command(project_copy: Path) -> None:
    with pytest.raises(ManifestError, match="missing.*make dbt-manifest"):
        require_manifest(project_copy)


def test_a_changed_model_makes_the_manifest_stale(project_copy: Path) -> None:
    (project_copy / "target" / "manifest.json").write_text("{}")
    (project_copy / "target" / "manifest.fingerprint").write_text(project_fingerprint(project_copy))
    assert require_manifest(project_copy)

    model = project_copy / "models" / "marts" / "fct_orders.sql"
    model.write_text(model.read_text() + "\n-- edited\n")
    with pytest.raises(ManifestError, match="stale.*make dbt-manifest"):
        require_manifest(project_copy)


def test_build_output_does_not_count_as_a_project_change(project_copy: Path) -> None:
    before = project_fingerprint(project_copy)
    (project_copy / "logs").mkdir()
    (project_copy / "logs" / "dbt.log").write_text("noise")
    (project_copy / "target" / "run_results.json").write_text("{}")
    assert project_fingerprint(project_copy) == before


def test_a_rebuilt_manifest_marks_the_dag_files_changed(project_copy: Path, tmp_path: Path) -> None:
    """The DAG processor re-parses an unchanged file only every ``min_file_process_interval``: a
    new manifest must reach the DAGs at once, through the DAG files' modification time."""
    dags = tmp_path / "dags"
    dags.mkdir()
    dag_file, other = dags / "pipeline.py", dags / "README.md"
    for path in (dag_file, other):
        path.write_text("# a file\n")
        os.utime(path, (1_000_000_000, 1_000_000_000))

    manifest = build_manifest(project_copy, dags_dir=dags)

    assert require_manifest(project_copy) == manifest
    assert dag_file.stat().st_mtime >= manifest.stat().st_mtime
    assert other.stat().st_mtime == 1_000_000_000
