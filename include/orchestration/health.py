"""Source health checks: the pipeline's first tasks, so an outage fails fast with a clear message
instead of half-way through an extraction.

One check per distinct source the ``sources.yml`` entries read from (a database connection, an
API connection, a landing location), each a plain function of a connection id or URL.

They also fail configuration that passes ``sources.yml`` validation but cannot run, naming the
entry, the key and the fix:

- ``cursor``: must be a timestamp column of the source table (read from the catalog);
- ``primary_key``: the source table must have a unique index (or primary key) on those columns
  or a subset of them, else raw would get duplicates or a merge would fail cryptically;
- ``file_pattern``: no file at all in the landing location matching it is a mistake (or a
  location that never received a file) and fails; files that match but were all loaded before
  are "no new files", which the extraction reports as zero rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from include.ingestion.config import MarketingCsv, PostgresTable, SourceConfig, StripeCharges
from include.orchestration.alerts import scrub


class SourceUnhealthy(RuntimeError):
    """A source cannot be read; the message names the connection and what to check."""


@dataclass(frozen=True)
class HealthCheck:
    name: str  # becomes the task id suffix: check_<name>
    run: Callable[[], str]


def check_postgres(conn_id: str, entries: Sequence[PostgresTable] = ()) -> str:
    """The database answers (within policies.yml's connect timeout), and each entry read through it
    has a declared pool, a timestamp cursor and a unique key in the source's catalog."""
    from include.ingestion.postgres_connection import connect

    try:
        conn = connect(conn_id, application_name="health_check")
    except Exception as error:
        raise SourceUnhealthy(
            f"Source database '{conn_id}' is unreachable ({type(error).__name__}: {one_line(error)}). "
            f"Check that the database is up and the connection's host, port, login and password."
        ) from error
    with conn:
        version = conn.execute("SELECT version()").fetchone()[0]
        problems = [problem for entry in entries for problem in entry_problems(conn, entry)]
    if problems:
        raise SourceUnhealthy(" ".join(problems))
    return f"{conn_id}: {version}"


TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone")


def entry_problems(conn: Any, entry: PostgresTable) -> list[str]:
    """What keeps ``entry`` from running, one sentence each naming the key and the fix."""
    where = f"sources.yml source '{entry.name}'"
    problems: list[str] = []
    table = f"{entry.schema}.{entry.table}"
    columns = dict(conn.execute(_COLUMN_TYPES, (entry.schema, entry.table)).fetchall())
    if not columns:
        return [*problems, f"{where}: table {table} does not exist through '{entry.conn_id}': fix `table`/`schema`."]
    cursor_type = columns.get(entry.cursor)
    if cursor_type not in TIMESTAMP_TYPES:
        found = f"is {cursor_type}" if cursor_type else "is not a column"
        problems.append(
            f"{where}: `cursor` {entry.cursor!r} {found} of {table}; it must be a timestamp column bumped on "
            f"every change (e.g. updated_at timestamptz): set `cursor` to one."
        )
    missing = [column for column in entry.primary_key if column not in columns]
    if missing:
        problems.append(
            f"{where}: `primary_key` column(s) {', '.join(missing)} are not columns of {table}: fix `primary_key`."
        )
    elif not conn.execute(_UNIQUE_ON_SUBSET, (entry.schema, entry.table, list(entry.primary_key))).fetchone()[0]:
        problems.append(
            f"{where}: `primary_key` ({', '.join(entry.primary_key)}) is not unique in {table} (no primary key or "
            f"unique index on those columns), so raw would get duplicate or conflicting rows: set `primary_key` to "
            f"the table's key, or add a unique index on it in the source."
        )
    return problems


_COLUMN_TYPES = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
"""
# A unique, non-partial, valid index whose key columns are all among the configured key: then the
# configured key is unique too.
_UNIQUE_ON_SUBSET = """
SELECT EXISTS (
    SELECT 1 FROM pg_index i
    JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
      AND i.indexprs IS NULL
      AND (SELECT array_agg(a.attname::text) FROM pg_attribute a
           WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey[0:i.indnkeyatts - 1])) <@ %s::text[]
)
"""


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


def check_landing(landing_url_variable: str, file_pattern: str, conn_id: str | None = None, source: str = "?") -> str:
    from airflow.sdk import ObjectStoragePath, Variable

    raw_url = Variable.get(landing_url_variable)
    url = scrub(raw_url)  # the Variable may hold user:password@; messages go to logs and Slack
    try:
        location = ObjectStoragePath(raw_url, conn_id=conn_id)
        files = list(location.glob(file_pattern))
    except Exception as error:
        raise SourceUnhealthy(
            f"Landing location {url} (Variable '{landing_url_variable}') is not readable "
            f"({type(error).__name__}: {scrub(one_line(error))}). Check the URL and its storage connection."
        ) from error
    if not location.exists():
        raise SourceUnhealthy(
            f"Landing location {url} (Variable '{landing_url_variable}') does not exist: create it or fix the Variable."
        )
    if not files:
        present = sorted(path.name for path in location.iterdir())[:5]
        raise SourceUnhealthy(
            f"sources.yml source '{source}': `file_pattern` {file_pattern!r} matches no file in {url} "
            f"(present: {', '.join(present) or 'none'}), so the load would succeed with no data: fix `file_pattern`, "
            f"or deliver the first file before enabling the source."
        )
    return f"{url}: readable, {len(files)} file(s) matching {file_pattern}"


def health_checks(sources: tuple[SourceConfig, ...]) -> tuple[HealthCheck, ...]:
    """One check per distinct source the entries read from, in a stable order."""
    checks: dict[str, HealthCheck] = {}
    for entry in sources:
        if isinstance(entry, PostgresTable):
            tables = tuple(e for e in sources if isinstance(e, PostgresTable) and e.conn_id == entry.conn_id)
            checks.setdefault(entry.conn_id, HealthCheck(entry.conn_id, _bind(check_postgres, entry.conn_id, tables)))
        elif isinstance(entry, StripeCharges):
            checks.setdefault(entry.conn_id, HealthCheck(entry.conn_id, _bind(check_stripe, entry.conn_id)))
        elif isinstance(entry, MarketingCsv):
            name = f"{entry.name}_landing"
            run = _bind(check_landing, entry.landing_url_variable, entry.file_pattern, entry.conn_id, entry.name)
            checks.setdefault(name, HealthCheck(name, run))
    return tuple(checks.values())


def one_line(error: BaseException, limit: int = 300) -> str:
    """Driver errors span lines; a task log line and an alert want one."""
    return " ".join(str(error).split())[:limit]


def _bind(function: Callable[..., str], *args: object) -> Callable[[], str]:
    return lambda: function(*args)
