"""Source health checks: the pipeline's first tasks, so an outage fails fast with a clear message
instead of half-way through an extraction.

One check per distinct source the ``sources.yml`` entries read from (a database connection, an
API connection, a landing location), each a plain function of a connection id or URL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from include.ingestion.config import MarketingCsv, PostgresTable, SourceConfig, StripeCharges


class SourceUnhealthy(RuntimeError):
    """A source cannot be read; the message names the connection and what to check."""


@dataclass(frozen=True)
class HealthCheck:
    name: str  # becomes the task id suffix: check_<name>
    run: Callable[[], str]


def check_postgres(conn_id: str) -> str:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    try:
        version = PostgresHook(postgres_conn_id=conn_id).get_first("SELECT version()")[0]
    except Exception as error:
        raise SourceUnhealthy(
            f"Source database '{conn_id}' is unreachable ({type(error).__name__}: {one_line(error)}). "
            f"Check that the database is up and the connection's host, port, login and password."
        ) from error
    return f"{conn_id}: {version}"


def check_stripe(conn_id: str) -> str:
    from include.ingestion.sources.stripe import StripeApiError, StripeAuthError, StripeClient

    try:
        page = StripeClient(conn_id).get("/v1/charges", {"limit": 1})
    except StripeAuthError:
        raise
    except StripeApiError as error:
        raise SourceUnhealthy(f"Stripe is not answering through connection '{conn_id}': {error}") from error
    except Exception as error:
        raise SourceUnhealthy(
            f"Stripe is not answering through connection '{conn_id}' ({type(error).__name__}: {one_line(error)}). "
            f"Check the connection's host (the API base URL)."
        ) from error
    return f"{conn_id}: answering ({len(page['data'])} charge on the first page)"


def check_landing(landing_url_variable: str, file_pattern: str, conn_id: str | None = None) -> str:
    from airflow.sdk import ObjectStoragePath, Variable

    url = Variable.get(landing_url_variable)
    try:
        location = ObjectStoragePath(url, conn_id=conn_id)
        files = list(location.glob(file_pattern))
    except Exception as error:
        raise SourceUnhealthy(
            f"Landing location {url} (Variable '{landing_url_variable}') is not readable "
            f"({type(error).__name__}: {one_line(error)}). Check the URL and its storage connection."
        ) from error
    if not location.exists():
        raise SourceUnhealthy(
            f"Landing location {url} (Variable '{landing_url_variable}') does not exist: create it or fix the Variable."
        )
    return f"{url}: readable, {len(files)} file(s) matching {file_pattern}"


def health_checks(sources: tuple[SourceConfig, ...]) -> tuple[HealthCheck, ...]:
    """One check per distinct source the entries read from, in a stable order."""
    checks: dict[str, HealthCheck] = {}
    for entry in sources:
        if isinstance(entry, PostgresTable):
            checks.setdefault(entry.conn_id, HealthCheck(entry.conn_id, _bind(check_postgres, entry.conn_id)))
        elif isinstance(entry, StripeCharges):
            checks.setdefault(entry.conn_id, HealthCheck(entry.conn_id, _bind(check_stripe, entry.conn_id)))
        elif isinstance(entry, MarketingCsv):
            name = f"{entry.name}_landing"
            run = _bind(check_landing, entry.landing_url_variable, entry.file_pattern, entry.conn_id)
            checks.setdefault(name, HealthCheck(name, run))
    return tuple(checks.values())


def one_line(error: BaseException, limit: int = 300) -> str:
    """Driver errors span lines; a task log line and an alert want one."""
    return " ".join(str(error).split())[:limit]


def _bind(function: Callable[..., str], *args: object) -> Callable[[], str]:
    return lambda: function(*args)
