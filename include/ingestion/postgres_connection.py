"""Connections to PostgreSQL, source or warehouse, from Airflow Connections.

The source snapshot (:mod:`include.ingestion.sources.postgres`), the warehouse writer
(:mod:`include.ingestion.warehouse.postgres`) and the health checks all connect here, with the
session limits of ``policies.yml`` (``connections:``) and errors that name the Connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook

from include.orchestration.policies import ConnectionLimits, airflow_connection_limits, connection_limits


def connect(conn_id: str, application_name: str = "ingestion", within_s: int | None = None) -> psycopg.Connection:
    """A psycopg 3 connection from an Airflow Connection, via the provider's hook.

    Session settings travel in the startup packet (``options``), not as statements: no round trip,
    and no transaction is open when the connection is handed over. ``within_s`` caps every wait of
    the session (:meth:`ConnectionLimits.within`), e.g. for a probe.
    """
    options = f"-c TimeZone=UTC -c application_name={application_name}"
    return LimitedPostgresHook(postgres_conn_id=conn_id, options=options, within_s=within_s).get_conn()


_LIMIT_KEYS = frozenset(f.name for f in fields(ConnectionLimits))


class SessionLimitExceeded(RuntimeError):
    """A statement hit its Connection's ``lock_timeout`` or ``statement_timeout`` and was cancelled;
    the message names the Connection, the limit and the fix. The transaction was rolled back."""


_LIMIT_HIT = {
    "canceling statement due to lock timeout": "lock_timeout",
    "canceling statement due to statement timeout": "statement_timeout",
}


@contextmanager
def named_limits(conn_id: str) -> Iterator[None]:
    """Turns psycopg's cancelled-statement errors into one that names the Connection and its limit."""
    try:
        yield
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as error:
        limit = _LIMIT_HIT.get(error.diag.message_primary or "")
        if limit is None:  # a NOWAIT lock, a cancel by hand: psycopg's own message says it
            raise
        seconds = getattr(airflow_connection_limits(conn_id), limit)
        waited = "for a lock another session holds" if limit == "lock_timeout" else "running"
        raise SessionLimitExceeded(
            f"Connection '{conn_id}': a statement waited longer than its {limit} ({seconds} s) {waited}, and was "
            f"cancelled; the transaction was rolled back, so nothing was written and a retry starts over. Find "
            f"the session that holds it in pg_stat_activity / pg_locks, or raise `{limit}` in the Connection's "
            f"extras or under connections.{conn_id} in policies.yml."
        ) from error


class LimitedPostgresHook(PostgresHook):
    """The provider's hook with the session limits of policies.yml (``connections:``), so a network
    partition or a lock queue fails the task within seconds to minutes, not at its
    ``execution_timeout``. The Connection's extras may set the same keys; they win."""

    ignored_extra_options = PostgresHook.ignored_extra_options | _LIMIT_KEYS  # not libpq options as spelt

    def __init__(self, *args: Any, within_s: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.within_s = within_s

    def _create_connection(self, conn_args: dict[str, Any]) -> Any:
        limits = connection_limits(self.get_conn_id(), self.connection.extra_dejson)
        if self.within_s is not None:
            limits = limits.within(self.within_s)
        return super()._create_connection({**conn_args, **session_limits(limits, conn_args.get("options"))})


def session_limits(limits: ConnectionLimits, options: str | None = None) -> dict[str, Any]:
    """libpq connection parameters for ``limits``; the server-side timeouts join ``options``."""
    server = f"-c statement_timeout={limits.statement_timeout}s -c lock_timeout={limits.lock_timeout}s"
    return {
        "connect_timeout": limits.connect_timeout,
        "keepalives": 1,
        "keepalives_idle": limits.keepalives_idle,
        "keepalives_interval": limits.keepalives_interval,
        "keepalives_count": limits.keepalives_count,
        "options": f"{options} {server}" if options else server,
    }
