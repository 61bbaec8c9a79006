"""The dbt manifest Cosmos renders from: where it lives, how it is built, and whether it is current.

Cosmos loads the project with ``LoadMode.DBT_MANIFEST`` so that parsing a DAG file never starts
dbt. The price is a build step: ``dbt parse`` writes ``target/manifest.json`` (``make dbt-manifest``
locally, ``RUN python -m include.orchestration.manifest`` in the Dockerfile). A manifest older
than the project's files would render yesterday's models, so the build records a fingerprint of
every project file and :func:`require_manifest` refuses a manifest whose fingerprint no longer
matches, naming the command that rebuilds it. A rebuild marks the DAG files changed, so a running
DAG processor renders the new manifest at once (it re-parses unchanged files only every
``[dag_processor] min_file_process_interval``, which the stack and the image set to 300 s).

``dbt parse`` needs a profile but no connection: the build writes a throwaway parse-only profile
(no credentials) to a temporary directory. Real runs get their profile from Airflow Connections
through Cosmos profile mappings.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO_ROOT / "include" / "dbt" / "ecommerce"
MANIFEST_PATH = DBT_PROJECT_DIR / "target" / "manifest.json"
FINGERPRINT_PATH = DBT_PROJECT_DIR / "target" / "manifest.fingerprint"
REBUILD_COMMAND = "make dbt-manifest  (or: python -m include.orchestration.manifest)"
# The DAG files that render the manifest. Airflow's DAG processor parses a changed file at once but
# an unchanged one only every ``min_file_process_interval``: a rebuilt manifest marks them changed.
DAG_FILES_DIR = REPO_ROOT / "dags"

# Where dbt's own virtualenv lives: the local set-up (scripts/bootstrap.sh) and the Astro image
# (Dockerfile). dbt never shares Airflow's environment.
DBT_VENV_PATHS = (REPO_ROOT / ".venv-dbt", REPO_ROOT / "dbt_venv", Path("/usr/local/airflow/dbt_venv"))  # local; image
PROJECT_FILE_SUFFIXES = {".sql", ".yml", ".yaml", ".csv", ".md", ".py"}
PROJECT_SKIP_DIRS = {"target", "logs", "dbt_packages"}

# Rendered with the project's own profile name (``dbt_project.yml``'s ``profile``).
PARSE_PROFILE = """\
{profile}:
  target: parse
  outputs:
    parse:
      type: postgres
      host: localhost
      port: 5432
      user: parse_only
      password: ""
      dbname: parse_only
      schema: marts
      threads: 1
"""


class ManifestError(RuntimeError):
    """The manifest is missing or was built from other project files than the ones on disk."""


@dataclass(frozen=True)
class DbtProjectNames:
    """What Cosmos and the profile need to know of a dbt project, read from its ``dbt_project.yml``
    so that another team's project needs no constant changed here."""

    name: str  # dbt_project.yml ``name``
    profile: str  # dbt_project.yml ``profile`` (dbt's default: the project's name)


@functools.cache
def project_names(project_dir: Path = DBT_PROJECT_DIR) -> DbtProjectNames:
    project_file = project_dir / "dbt_project.yml"
    try:
        declared = yaml.safe_load(project_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ManifestError(f"cannot read the dbt project's {project_file}: {error}") from error
    if not isinstance(declared.get("name"), str):
        raise ManifestError(f"{project_file} has no `name:`; dbt needs it, and so does the DAG that renders it.")
    return DbtProjectNames(declared["name"], declared.get("profile") or declared["name"])


def dbt_executable() -> Path:
    """The ``dbt`` of the dbt virtualenv; a clear error when neither known location has one."""
    for venv in DBT_VENV_PATHS:
        candidate = venv / "bin" / "dbt"
        if candidate.exists():
            return candidate
    searched = ", ".join(str(venv) for venv in DBT_VENV_PATHS)
    raise ManifestError(f"no dbt virtualenv found (looked in {searched}): run `make venv` to create .venv-dbt.")


def project_files(project_dir: Path = DBT_PROJECT_DIR) -> list[Path]:
    """Every file that can change what ``dbt parse`` produces, in a stable order."""
    files = []
    for path in project_dir.rglob("*"):
        relative = path.relative_to(project_dir)
        if path.is_file() and path.suffix in PROJECT_FILE_SUFFIXES and not PROJECT_SKIP_DIRS & set(relative.parts):
            files.append(path)
    return sorted(files, key=lambda path: path.relative_to(project_dir).as_posix())


def project_fingerprint(project_dir: Path = DBT_PROJECT_DIR) -> str:
    digest = hashlib.sha256()
    for path in project_files(project_dir):
        digest.update(path.relative_to(project_dir).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def require_manifest(project_dir: Path = DBT_PROJECT_DIR) -> Path:
    """The manifest path, once it is known to describe the project files on disk."""
    manifest = project_dir / MANIFEST_PATH.relative_to(DBT_PROJECT_DIR)
    fingerprint_file = project_dir / FINGERPRINT_PATH.relative_to(DBT_PROJECT_DIR)
    if not manifest.exists():
        raise ManifestError(f"dbt manifest {manifest} is missing: build it with {REBUILD_COMMAND}.")
    recorded = fingerprint_file.read_text().strip() if fingerprint_file.exists() else ""
    if recorded != project_fingerprint(project_dir):
        raise ManifestError(
            f"dbt manifest {manifest} is stale (the dbt project changed since it was built): "
            f"rebuild it with {REBUILD_COMMAND}."
        )
    return manifest


def build_manifest(project_dir: Path = DBT_PROJECT_DIR, dags_dir: Path | None = None) -> Path:
    """Run ``dbt parse`` (no warehouse needed), record the fingerprint of what it parsed, and mark the
    DAG files in ``dags_dir``, when given, changed (:func:`mark_dag_files_changed`)."""
    fingerprint = project_fingerprint(project_dir)
    with tempfile.TemporaryDirectory(prefix="dbt-parse-profile-") as profiles_dir:
        parse_profile = PARSE_PROFILE.format(profile=project_names(project_dir).profile)
        Path(profiles_dir, "profiles.yml").write_text(parse_profile)
        env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_PARTIAL_PARSE": "false"}
        result = subprocess.run(
            [str(dbt_executable()), "parse", "--project-dir", str(project_dir), "--profiles-dir", profiles_dir],
            cwd=project_dir,
            env=env,
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        raise ManifestError(f"`dbt parse` failed for {project_dir}:\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
    (project_dir / FINGERPRINT_PATH.relative_to(DBT_PROJECT_DIR)).write_text(fingerprint + "\n")
    if dags_dir is not None:
        mark_dag_files_changed(dags_dir)
    return project_dir / MANIFEST_PATH.relative_to(DBT_PROJECT_DIR)


def mark_dag_files_changed(dags_dir: Path) -> None:
    """Set the modification time of the DAG files in ``dags_dir`` to now, so a running DAG processor
    re-parses them (and renders the new manifest) at once instead of at its next periodic parse."""
    for path in dags_dir.glob("*.py"):
        path.touch()


def main() -> None:
    try:
        require_manifest()
        print(f"dbt manifest is current: {MANIFEST_PATH.relative_to(REPO_ROOT)}")
    except ManifestError:
        path = build_manifest(dags_dir=DAG_FILES_DIR)
        print(f"dbt manifest built: {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    try:
        main()
    except ManifestError as error:
        sys.exit(f"error: {error}")
