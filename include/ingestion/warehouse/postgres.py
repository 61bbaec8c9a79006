"""PostgreSQL warehouse writer (Connection ``warehouse_postgres``).

Staging is ``COPY ... FROM STDIN`` into a temporary table (no WAL, no indexes: the fastest way
into PostgreSQL); the merge is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE ... IS DISTINCT
FROM``, so a row whose data did not change keeps its ``_loaded_at`` and ``_batch_id`` and a rerun
writes nothing. Staging and merges share the session's single transaction.

When the raw table is empty (a first load), merging would only copy every staged row a second
time, so the rows are copied straight into the raw table instead, under a lock, in the same
transaction: half the work for the load that moves the most rows. The load columns default to the
session's batch (the transaction's start time and the connection's ``ingestion.batch_id``
setting), which is what lets COPY fill them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from include.ingestion.postgres_connection import connect, named_limits
from include.ingestion.tables import LOAD_COLUMNS, RawTable
from include.ingestion.warehouse.base import (
    FUTURE_KEY_EXAMPLES,
    RAW_SCHEMA,
    ReplaceScope,
    StagedCursor,
    Warehouse,
    WarehouseSession,
    staging_name,
)

log = logging.getLogger(__name__)

# The load columns' defaults: the writing session's batch, set on its connection by _start.
# transaction_timestamp(), not a setting cast to timestamptz: parsing a timestamp per row made
# every COPY into raw markedly slower (docs/performance.md).
_LOAD_DEFAULTS = {
    "_loaded_at": sql.SQL("transaction_timestamp()"),
    "_batch_id": sql.SQL("current_setting('ingestion.batch_id')"),
}
_COPY_FORMATS = {"csv": "csv", "binary": "binary"}
# Serialises raw DDL across concurrent extraction tasks (CREATE ... IF NOT EXISTS races otherwise).
_DDL_LOCK_KEY = 0x7261775F646466  # "raw_ddl"


class PostgresWarehouse(Warehouse):
    name = "postgres"
    source_copy_format = "binary"  # raw columns have the source's exact types, so binary COPY fits

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id

    def connect(self) -> psycopg.Connection:
        return connect(self.conn_id)

    def probe(self, within_s: int) -> None:
        with connect(self.conn_id, application_name="warehouse_probe", within_s=within_s) as conn:
            conn.execute("SELECT 1").fetchone()

    def relation(self, schema: str, identifier: str) -> str:
        return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, identifier))  # dbt-postgres quotes

    @contextmanager
    def session(
        self, batch_id: str, tables: Sequence[RawTable], connection: psycopg.Connection | None = None
    ) -> Iterator[PostgresSession]:
        conn = connection or self.connect()
        try:
            with named_limits(self.conn_id):
                yield PostgresSession(conn, batch_id, _start(conn, batch_id, tables), tables)
        finally:
            conn.close()  # an uncommitted transaction is rolled back by the server


class PostgresSession(WarehouseSession):
    def __init__(
        self, conn: psycopg.Connection, batch_id: str, loaded_at: datetime, tables: Sequence[RawTable] = ()
    ) -> None:
        super().__init__(batch_id, loaded_at)
        self._conn = conn
        self._unprobed = list(tables)  # has_rows() answers come with the first read()'s round trip
        self._has_rows: dict[str, bool] = {}
        self._direct: dict[str, bool] = {}  # table → staged straight into raw (it was empty)
        self._staged_rows: dict[str, int] = {}

    def stage(self, table: RawTable, chunks: Iterable[bytes], copy_format: str = "csv") -> int:
        if table.name not in self._direct:
            self._direct[table.name] = self._prepare_staging(table)
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
            self._staged(table), _names(table.column_names), sql.SQL(_COPY_FORMATS[copy_format])
        )
        with self._conn.cursor() as cursor:
            with cursor.copy(copy_sql) as copy:
                for chunk in chunks:
                    copy.write(chunk)
            rows = cursor.rowcount
        self._staged_rows[table.name] = self._staged_rows.get(table.name, 0) + rows
        return rows

    def staged_max(self, table: RawTable, column: str) -> Any:
        query = sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column), self._staged(table))
        return self._conn.execute(query).fetchone()[0]

    def staged_cursor(self, table: RawTable, column: str, until: Any) -> StagedCursor:
        cursor, staged = sql.Identifier(column), self._staged(table)
        summary = sql.SQL(
            "SELECT max({c}) FILTER (WHERE {c} <= %(until)s), count({c}) FILTER (WHERE {c} > %(until)s),"
            " max({c}), count(*) - count({c}) FROM {staged}"
        ).format(c=cursor, staged=staged)
        newest, future, future_max, nulls = self._conn.execute(summary, {"until": until}).fetchone()
        if not future:
            return StagedCursor(newest, nulls=nulls)
        keys = sql.SQL("SELECT concat_ws(', ', {key}) FROM {staged} WHERE {c} > %(until)s ORDER BY {c} DESC LIMIT {n}")
        examples = self._conn.execute(
            keys.format(key=_names(table.key), staged=staged, c=cursor, n=FUTURE_KEY_EXAMPLES), {"until": until}
        )
        return StagedCursor(newest, future, future_max, tuple(row[0] for row in examples), nulls)

    def has_rows(self, table: RawTable) -> bool:
        if table.name not in self._has_rows:
            self._probe([table])
        return self._has_rows[table.name]

    def _probe(self, tables: Sequence[RawTable]) -> None:
        """Look whether each raw table has a row, in one query."""
        looks = sql.SQL(", ").join(sql.SQL("EXISTS (SELECT FROM {})").format(_raw(t)) for t in tables)
        found = self._conn.execute(sql.SQL("SELECT {}").format(looks)).fetchone()
        self._has_rows.update(zip((t.name for t in tables), found, strict=True))

    def _staged(self, table: RawTable) -> sql.Identifier:
        """Where ``table``'s rows were staged: its temporary table, or raw itself on a first load."""
        return _raw(table) if self._direct[table.name] else sql.Identifier(staging_name(table))

    def merge(self, table: RawTable, replace: ReplaceScope | None = None) -> int:
        if self._direct[table.name]:
            merged, deleted = self._staged_rows[table.name], 0
        else:
            deleted = self._delete_replaced(table, replace) if replace else 0
            staged = sql.SQL("SELECT {} FROM {}").format(_names(table.column_names), self._staged(table))
            with self._conn.cursor() as cursor:
                cursor.execute(_merge_sql(table, staged))
                merged = cursor.rowcount
        log.info("raw.%s: %d rows merged, %d replaced rows removed", table.name, merged, deleted)
        return merged + deleted

    def upsert(self, table: RawTable, rows: Sequence[Sequence[Any]]) -> int:
        row = sql.SQL("({})").format(
            sql.SQL(", ").join(sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(c.type)) for c in table.columns)
        )
        values = sql.SQL("VALUES {}").format(sql.SQL(", ").join([row] * len(rows)))
        with self._conn.cursor() as cursor:
            cursor.execute(_merge_sql(table, values), [value for r in rows for value in r])
            return cursor.rowcount

    def _prepare_staging(self, table: RawTable) -> bool:
        """True when the raw table is empty and takes the COPY directly: then other writers are
        locked out (readers go on) and it is looked at again. A table with rows needs no lock: its
        rows go to a temporary table, created in the same round trip as the first look (and left
        unused, at the cost of one cheap statement, by a first load)."""
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in table.columns
        )
        create = sql.SQL("CREATE TEMPORARY TABLE {} ({})").format(sql.Identifier(staging_name(table)), columns)
        has_rows = sql.SQL("SELECT EXISTS (SELECT FROM {})").format(_raw(table))
        with self._conn.pipeline():
            self._conn.execute(create)
            looked = self._conn.execute(has_rows)
        if looked.fetchone()[0]:
            return False
        self._conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(_raw(table)))
        return not self._conn.execute(has_rows).fetchone()[0]

    def read(self, table: RawTable) -> list[dict[str, Any]]:
        """The rows; the first read also probes the session's tables for has_rows(), in its round trip."""
        probes, self._unprobed = self._unprobed, []
        with self._conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
            with self._conn.pipeline():
                cursor.execute(sql.SQL("SELECT * FROM {}").format(_raw(table)))
                if probes:
                    self._probe(probes)
            return list(cursor.fetchall())

    def commit(self) -> None:
        self._conn.commit()

    def _delete_replaced(self, table: RawTable, replace: ReplaceScope) -> int:
        key = _names(table.key)
        query = sql.SQL(
            "DELETE FROM {raw} AS r WHERE r.{column} = ANY(%s) AND ({r_key}) NOT IN (SELECT {key} FROM {stage})"
        ).format(
            raw=_raw(table),
            column=sql.Identifier(replace.column),
            r_key=sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(k)) for k in table.key),
            key=key,
            stage=sql.Identifier(staging_name(table)),
        )
        with self._conn.cursor() as cursor:
            cursor.execute(query, (list(replace.values),))
            return cursor.rowcount


def _merge_sql(table: RawTable, rows: sql.Composable) -> sql.Composed:
    """Insert new keys of ``rows`` (a query of the data columns), update changed rows; the load
    columns take their defaults (this batch)."""
    data = table.column_names
    non_key = [name for name in data if name not in table.key]
    if non_key:
        sets = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in non_key]
        sets += [sql.SQL("{} = DEFAULT").format(sql.Identifier(c.name)) for c in LOAD_COLUMNS]
        on_conflict = sql.SQL("DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})").format(
            sets=sql.SQL(", ").join(sets),
            old=sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(n)) for n in non_key),
            new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(n)) for n in non_key),
        )
    else:
        on_conflict = sql.SQL("DO NOTHING")
    return sql.SQL("INSERT INTO {raw} AS r ({data}) {rows} ON CONFLICT ({key}) {on_conflict}").format(
        raw=_raw(table),
        data=_names(data),
        rows=rows,
        key=_names(table.key),
        on_conflict=on_conflict,
    )


def _start(conn: psycopg.Connection, batch_id: str, tables: Sequence[RawTable]) -> datetime:
    """Set the session's batch and complete the raw tables; the usual run is one round trip.

    The batch settings are the connection's (one connection serves one batch), not the
    transaction's, so a commit of missing tables keeps them. Returns the load's start time.
    ``ingestion.loaded_at`` is the default of raw tables created before ``_loaded_at`` defaulted to
    ``transaction_timestamp()``: the same value unless tables were just completed.
    """
    with conn.pipeline():
        # pg_catalog, not information_schema.columns (tens of milliseconds); IN with a placeholder
        # per name, not = ANY(list): a list parameter costs each task process a regex compile.
        present = conn.execute(
            sql.SQL(
                "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname IN ({}) AND a.attnum > 0 AND NOT a.attisdropped"
            ).format(sql.SQL(", ").join([sql.Placeholder()] * len(tables))),
            (RAW_SCHEMA, *(t.name for t in tables)),
        )
        batch = conn.execute(
            "SELECT set_config('ingestion.batch_id', %s, false),"
            " set_config('ingestion.loaded_at', transaction_timestamp()::text, false), transaction_timestamp()",
            (batch_id,),
        )
    wanted = {(t.name, c.name) for t in tables for c in (*t.columns, *LOAD_COLUMNS)}
    if wanted - {tuple(row) for row in present.fetchall()}:
        _complete_tables(conn, tables)
    return batch.fetchone()[-1]


def _complete_tables(conn: psycopg.Connection, tables: Sequence[RawTable]) -> None:
    """Create missing raw tables and columns, committed on their own."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_KEY,))
    if conn.execute("SELECT to_regnamespace(%s)", (RAW_SCHEMA,)).fetchone()[0] is None:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(RAW_SCHEMA)))
    for table in tables:
        _ensure_table(conn, table)
    conn.commit()


def _ensure_table(conn: psycopg.Connection, table: RawTable) -> None:
    columns = [*table.columns, *LOAD_COLUMNS]
    definition = sql.SQL(", ").join(
        [sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in table.columns]
        + [
            sql.SQL("{} {} NOT NULL DEFAULT {}").format(sql.Identifier(c.name), sql.SQL(c.type), _LOAD_DEFAULTS[c.name])
            for c in LOAD_COLUMNS
        ]
        + [sql.SQL("PRIMARY KEY ({})").format(_names(table.key))]
    )
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(_raw(table), definition))
    existing = {
        row[0]
        for row in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (f"{RAW_SCHEMA}.{table.name}",),
        )
    }
    for column in columns:
        if column.name not in existing:
            log.info("raw.%s: adding column %s %s, new in the source", table.name, column.name, column.type)
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    _raw(table), sql.Identifier(column.name), sql.SQL(column.type)
                )
            )


def _raw(table: RawTable) -> sql.Identifier:
    return sql.Identifier(RAW_SCHEMA, table.name)


def _names(names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)
