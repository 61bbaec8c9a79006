"""`astro dev parse` passes: runs the Astro CLI's own integrity test the way the CLI does.

It runs in a subprocess because that file monkeypatches ``os.getenv`` and
``BaseHook.get_connection`` for the whole interpreter, which would leak into the other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_astro_dag_integrity_passes(tmp_path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ".astro/test_dag_integrity_default.py"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
