"""The ``stack`` marker follows the fixtures a test uses, so ``-m "not stack"`` is the group that
needs no service and ``-m stack`` the one that starts the embedded stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _collected(marker_expression: str, folder: str) -> set[str]:
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            marker_expression,
            folder,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return {line.split("::", 1)[0] for line in listed if "::" in line}


@pytest.mark.slow
def test_tests_that_start_a_service_are_marked_stack_and_the_others_are_not() -> None:
    with_services = _collected("stack", "tests/ingestion")
    without = _collected("not stack", "tests/ingestion")

    assert {"tests/ingestion/test_postgres.py", "tests/ingestion/test_stripe.py"} <= with_services
    assert {"tests/ingestion/test_config.py", "tests/ingestion/test_marketing_rows.py"} <= without
    assert "tests/ingestion/test_config.py" not in with_services
    assert "tests/ingestion/test_postgres.py" not in without
