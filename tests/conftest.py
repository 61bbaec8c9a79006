"""Fixtures shared by the whole suite: one embedded PostgreSQL per test session, and the ``stack`` marker.

Tests get fresh databases from it (``new_database``) instead of sharing state, so they can run in
any order. The server is the same ``EmbeddedPostgres`` the local stack runs: real PostgreSQL 16.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration once, on first import: give the test session a throwaway home
# (SQLite metadata DB, this repo's dags/ and plugins/) before any test module imports Airflow.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="airflow-test-home-")
    atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from dev.airflow_settings import ConnectionSpec  # noqa: E402 (after the env above)
from dev.embedded_postgres import EmbeddedPostgres, find_free_port  # noqa: E402

_database_numbers = itertools.count(1)

# Fixtures that start a service of the embedded local stack. A test that uses one, directly or
# through another fixture, is marked ``stack``: ``pytest -m "not stack"`` runs what needs none.
STACK_FIXTURES = frozenset({"postgres_server", "fakesnow_server", "s3_endpoint", "stack", "byo_stack"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-postgres"), find_free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def new_database(postgres_server: EmbeddedPostgres) -> Callable[[str], str]:
    """Factory: ``new_database("source")`` creates an empty database and returns its libpq URI."""

    def create(prefix: str = "db") -> str:
        name = f"{prefix}_{next(_database_numbers)}"
        postgres_server.ensure_database(name)
        return postgres_server.dsn(name)

    return create


@pytest.fixture
def warehouse_postgres(postgres_server: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], str]:
    """Factory: ``warehouse_postgres("prefix", password)`` creates a database owned by a
    ``warehouse`` login, sets it as the ``warehouse_postgres`` Connection the Airflow way
    (``AIRFLOW_CONN_*``) and returns its libpq URI."""

    def create(prefix: str, password: str) -> str:
        database = f"{prefix}_{next(_database_numbers)}"
        postgres_server.ensure_role("warehouse", password)
        postgres_server.ensure_database(database, owner="warehouse")
        spec = ConnectionSpec(
            "warehouse_postgres",
            "postgres",
            postgres_server.host,
            postgres_server.port,
            database,
            "warehouse",
            password,
        )
        monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_POSTGRES", spec.to_env_value())
        return postgres_server.dsn(database, "warehouse", password)

    return create


@pytest.fixture(scope="session")
def fakesnow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``fakesnow -s -p PORT``, the same command the local stack runs."""
    import snowflake.connector

    port = find_free_port()
    log = (tmp_path_factory.mktemp("fakesnow") / "server.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "fakesnow"), "-s", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while True:  # wait until it answers a login, not a fixed time
        try:
            snowflake.connector.connect(
                user="probe",
                password="x",
                account="local",
                host="127.0.0.1",
                port=port,
                protocol="http",
                login_timeout=2,
            ).close()
            break
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield port
    server.terminate()
    server.wait(timeout=10)
