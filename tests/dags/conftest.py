"""Fixtures the pipeline drill modules share; each module brings its own ``stack``."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from dev.stack import LocalStack


@pytest.fixture
def teleported_order(stack: LocalStack) -> Iterator[None]:
    """One source order with a status the contract does not know, so stg_orders' test fails."""
    with psycopg.connect(stack.source_dsn()) as conn:
        (status,) = conn.execute("SELECT status FROM public.orders WHERE order_id = 1").fetchone()
        conn.execute("UPDATE public.orders SET status = 'teleported', updated_at = now() WHERE order_id = 1")
    yield
    with psycopg.connect(stack.source_dsn()) as conn:
        conn.execute("UPDATE public.orders SET status = %s, updated_at = now() WHERE order_id = 1", (status,))
