"""Run dbt outside Cosmos with the same profile Cosmos would use: docs generation, benchmarks, tests.

The profile comes from the warehouse Connection through the same Cosmos profile mapping as the
DAG tasks (secrets as environment variables, never written to the file), so a plain ``dbt build``
here and the Cosmos tasks talk to the same warehouse in the same way.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from include.orchestration.manifest import DBT_PROJECT_DIR, dbt_executable, project_names
from include.orchestration.profiles import warehouse_profile_mapping
from include.orchestration.watchdog import stop_process_group, watch_warehouse
from include.warehouses import WAREHOUSES

TARGET_NAME = "warehouse"


class DbtCommandFailed(RuntimeError):
    """dbt exited non-zero; the message carries the end of its output."""


def run_dbt(
    args: list[str],
    warehouse: str = "postgres",
    project_dir: Path = DBT_PROJECT_DIR,
    target_path: Path | None = None,
    timeout: float | None = None,
) -> str:
    """Run ``dbt <args>`` against ``warehouse``; returns dbt's output, raises on failure.

    Artifacts go to ``target_path``, by default ``target/cli/`` of the project: never over
    ``target/manifest.json``, the parse-only manifest Cosmos renders the DAGs from (a build's
    manifest is profile-specific), while dbt's partial-parse state still carries over between runs.
    ``timeout`` (seconds) ends a dbt that outlives it: :class:`subprocess.TimeoutExpired`, dbt killed.
    A warehouse that stops answering ends it sooner (:mod:`include.orchestration.watchdog`), with
    :class:`DbtCommandFailed` naming the Connection.
    """
    mapping = warehouse_profile_mapping(warehouse)
    target_path = target_path or project_dir / "target" / "cli"
    with tempfile.TemporaryDirectory(prefix="dbt-profile-") as profiles_dir:
        Path(profiles_dir, "profiles.yml").write_text(
            mapping.get_profile_file_contents(project_names(project_dir).profile, TARGET_NAME)
        )
        command = [
            str(dbt_executable()),
            *args,
            "--project-dir",
            str(project_dir),
            "--profiles-dir",
            profiles_dir,
            "--target-path",
            str(target_path),
        ]
        env = {**os.environ, **mapping.env_vars, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        process = subprocess.Popen(
            command,
            cwd=project_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # the watchdog and the timeout stop dbt with what it started
        )
        watchdog = watch_warehouse(WAREHOUSES[warehouse].load_writer(), lambda: process)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process_group(process)
            process.communicate()
            raise
        finally:
            watchdog.close()
    if watchdog.cause is not None:
        raise DbtCommandFailed(f"`dbt {' '.join(args)}` on {warehouse} was stopped: {watchdog.cause}")
    if process.returncode != 0:
        raise DbtCommandFailed(f"`dbt {' '.join(args)}` on {warehouse} failed:\n{stdout[-6000:]}{stderr[-2000:]}")
    return stdout
