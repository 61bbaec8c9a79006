"""The shop's OLTP PostgreSQL (Connection ``ecommerce_source``) as a stream of CSV chunks.

Rows leave the source through ``COPY (SELECT ...) TO STDOUT``, in CSV or (for a PostgreSQL
warehouse, whose raw columns have the same types) PostgreSQL's binary COPY format: the server
formats them, Python only regroups the bytes into bounded chunks, so memory stays flat whatever
the table size. Columns are read from the catalog on every run, so a column added in the source shows up in
``raw`` on the next load instead of failing it. One read-only REPEATABLE READ transaction makes the
column list and the rows a single consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from include.ingestion.config import PostgresTable
from include.ingestion.postgres_connection import connect, named_limits
from include.ingestion.tables import CHUNK_BYTES, Column, RawTable

_COPY_FORMATS = {"csv": "csv", "binary": "binary"}


class SourceTableMissing(RuntimeError):
    """The configured table does not exist in the source."""


@dataclass(frozen=True)
class SnapshotClock:
    """The source's own clock at the read snapshot, which bounds the high-water mark.

    ``now`` is the snapshot transaction's start: a cursor after it is future-dated, not a change
    we have seen. ``oldest_open`` is the start of the oldest other transaction open in the database
    at the snapshot (None when none is visible): such a transaction may commit later with a cursor
    stamped ``now()`` at its start, so the mark must stay at or before it to re-read its rows.
    """

    now: datetime
    oldest_open: datetime | None

    @property
    def mark_limit(self) -> datetime:
        """The latest mark this snapshot can vouch for: no later commit carries an earlier ``now()``."""
        return min(self.now, self.oldest_open) if self.oldest_open is not None else self.now


# Other sessions' open transactions; a role sees only its own sessions' xact_start unless it has
# pg_read_all_stats (docs/raw-layer.md). Read in the snapshot's transaction, after its first query.
_CLOCK_SQL = """
SELECT transaction_timestamp(),
       (SELECT min(xact_start) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend')
"""


@contextmanager
def snapshot(entry: PostgresTable) -> Iterator[psycopg.Connection]:
    """A read-only, repeatable-read connection to the entry's source database."""
    conn = connect(entry.conn_id, application_name=f"ingestion:{entry.name}")
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with named_limits(entry.conn_id):
            yield conn
    finally:
        conn.close()


def describe(conn: psycopg.Connection, entry: PostgresTable) -> tuple[RawTable, SnapshotClock]:
    """The raw table mirroring the source table (same column names and types, the entry's key) and
    the snapshot's clock, read in the same round trip."""
    with conn.pipeline():  # BEGIN travels with the queries: one round trip, not three
        described = conn.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """,
            (entry.schema, entry.table),
        )
        clock = conn.execute(_CLOCK_SQL)
    rows = described.fetchall()
    if not rows:
        raise SourceTableMissing(
            f"source '{entry.name}': table {entry.schema}.{entry.table} not found through connection "
            f"'{entry.conn_id}'. Check `table`/`schema` in sources.yml and the connection's database."
        )
    columns = tuple(Column(name, type_) for name, type_ in rows)
    if entry.cursor not in {c.name for c in columns}:
        raise SourceTableMissing(
            f"source '{entry.name}': cursor column '{entry.cursor}' is not a column of {entry.schema}.{entry.table}."
        )
    return RawTable(entry.name, columns, entry.primary_key), SnapshotClock(*clock.fetchone())


def copy_rows(
    conn: psycopg.Connection, entry: PostgresTable, table: RawTable, since: datetime | None, copy_format: str = "csv"
) -> Iterator[bytes]:
    """Chunks (``csv`` or ``binary`` COPY format) of the rows whose cursor is at or after ``since``
    or NULL (all when None): a NULL cursor cannot be compared with a mark, so such rows are read on
    every load (unchanged ones merge as no-ops) rather than never."""
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(name) for name in table.column_names),
        sql.Identifier(entry.schema, entry.table),
    )
    if since is not None:
        query = sql.SQL("{} WHERE {cursor} >= {} OR {cursor} IS NULL").format(
            query, sql.Literal(since), cursor=sql.Identifier(entry.cursor)
        )
    buffer = bytearray()
    with conn.cursor() as cursor:
        statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT {})").format(query, sql.SQL(_COPY_FORMATS[copy_format]))
        with cursor.copy(statement) as copy:
            for row in copy:
                buffer += row
                if len(buffer) >= CHUNK_BYTES:
                    yield bytes(buffer)
                    buffer.clear()
    if buffer:
        yield bytes(buffer)
