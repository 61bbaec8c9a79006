"""Fixtures the pipeline drill modules share; each module brings its own ``stack``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from dev.airflow_client import wait_for_dag
from dev.embedded_postgres import find_free_port
from dev.stack import LocalStack, StackLayout
from tests.dbt.conftest import fast_policies_file

DAG_ID = "ecommerce_elt"
RUN_DEADLINE_MINUTES = 0.25  # every drill run takes longer, so each one misses it and alerts


@contextmanager
def drill_stack(root: Path, **env: str) -> Iterator[LocalStack]:
    """The `small` stack the pipeline drills run on: only drill-triggered runs, fast policies, and
    ``env`` for every component (e.g. a TransformSettings switch)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", "False")
        patch.setenv("ECOMMERCE_POLICIES_FILE", str(fast_policies_file(root, RUN_DEADLINE_MINUTES)))
        for name, value in env.items():
            patch.setenv(name, value)
        local = LocalStack(StackLayout(root / "local"), airflow_port=find_free_port())
        local.up("small", with_airflow=True)
        try:
            wait_for_dag(f"http://127.0.0.1:{local.ports.airflow}", DAG_ID)
            yield local
        finally:
            local.down()


@pytest.fixture
def teleported_order(stack: LocalStack) -> Iterator[None]:
    """One source order with a status the contract does not know, so stg_orders' test fails."""
    with psycopg.connect(stack.source_dsn()) as conn:
        (status,) = conn.execute("SELECT status FROM public.orders WHERE order_id = 1").fetchone()
        conn.execute("UPDATE public.orders SET status = 'teleported', updated_at = now() WHERE order_id = 1")
    yield
    with psycopg.connect(stack.source_dsn()) as conn:
        conn.execute("UPDATE public.orders SET status = %s, updated_at = now() WHERE order_id = 1", (status,))
