"""Snowflake warehouse writer (Connection ``warehouse_snowflake``).

Staging: CSV chunks are written to local files of bounded size, ``PUT`` to a temporary stage and
``COPY INTO`` a temporary all-``VARCHAR`` table (so the loader never guesses a type); the merge casts
them to the raw table's types. All of a session's staging happens before its transaction, because
Snowflake commits an open transaction on any DDL (and a temporary table is DDL).

The merge is an ``UPDATE ... FROM`` of changed rows plus an ``INSERT`` of new keys inside one
``BEGIN ... COMMIT``, rather than a ``MERGE`` statement: it is what ``MERGE`` does, but the local
emulator (fakesnow 0.12) cannot run ``MERGE`` inside an explicit transaction, and the transaction
is what keeps the data and its high-water mark together. Unquoted identifiers, as dbt reads them.
"""

from __future__ import annotations

import logging
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

from include.ingestion.tables import LOAD_COLUMNS, Column, RawTable
from include.ingestion.warehouse.base import (
    RAW_SCHEMA,
    ReplaceScope,
    Warehouse,
    WarehouseSession,
    staging_name,
)

log = logging.getLogger(__name__)

FILE_BYTES = 64 << 20  # local file size per PUT: few round trips, bounded disk and memory
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_CSV_FORMAT = "FILE_FORMAT = (TYPE = CSV FIELD_OPTIONALLY_ENCLOSED_BY = '\"' EMPTY_FIELD_AS_NULL = TRUE)"
_TYPES = (  # PostgreSQL type (format_type spelling, by prefix) → Snowflake type
    ("timestamp with time zone", "TIMESTAMP_TZ"),
    ("timestamp without time zone", "TIMESTAMP_NTZ"),
    ("numeric(", None),  # keeps precision and scale
    ("numeric", "NUMBER(38,9)"),
    ("bigint", "NUMBER(38,0)"),
    ("integer", "NUMBER(38,0)"),
    ("smallint", "NUMBER(38,0)"),
    ("boolean", "BOOLEAN"),
    ("date", "DATE"),
    ("double precision", "FLOAT"),
    ("real", "FLOAT"),
    ("jsonb", "VARIANT"),
    ("json", "VARIANT"),
)


def snowflake_type(pg_type: str) -> str:
    """The Snowflake type for a PostgreSQL one; text-like and unknown types become VARCHAR."""
    for prefix, mapped in _TYPES:
        if pg_type.startswith(prefix):
            return mapped or "NUMBER" + pg_type[len("numeric") :]
    return "VARCHAR"


class ProtocolAwareSnowflakeHook(SnowflakeHook):
    """The provider's hook, plus the ``protocol`` extra it does not forward (``http`` for a local fakesnow)."""

    def _get_conn_params(self) -> dict[str, Any]:
        params = dict(super()._get_conn_params())
        protocol = self.get_connection(self.get_conn_id()).extra_dejson.get("protocol")
        if protocol:
            params["protocol"] = protocol
        return params


class SnowflakeWarehouse(Warehouse):
    name = "snowflake"

    def __init__(self, conn_id: str = "warehouse_snowflake") -> None:
        self.conn_id = conn_id

    def connect(self) -> Any:
        return ProtocolAwareSnowflakeHook(snowflake_conn_id=self.conn_id).get_conn()

    @contextmanager
    def session(self, batch_id: str, tables: Sequence[RawTable], connection: Any = None) -> Iterator[SnowflakeSession]:
        conn = connection or self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA}")  # DDL autocommits in Snowflake
            for table in tables:
                _ensure_table(cursor, table)
            with tempfile.TemporaryDirectory(prefix="snowflake-stage-") as spool:
                session = SnowflakeSession(conn.cursor(), batch_id, datetime.now(UTC), Path(spool))
                try:
                    yield session
                finally:
                    session.close()
        finally:
            conn.close()


class SnowflakeSession(WarehouseSession):
    def __init__(self, cursor: Any, batch_id: str, loaded_at: datetime, spool: Path) -> None:
        super().__init__(batch_id, loaded_at)
        self._cursor = cursor
        self._spool = spool
        self._staged: dict[str, RawTable] = {}
        self._in_transaction = False
        self._files = 0
        self._stage = f"_ingestion_files_{uuid.uuid4().hex[:12]}"  # temporary; unique even where stages are shared

    def stage(self, table: RawTable, chunks: Iterable[bytes], copy_format: str = "csv") -> int:
        if copy_format != "csv":
            raise ValueError(f"Snowflake stages CSV, not {copy_format!r}")
        if self._in_transaction:
            raise RuntimeError("stage every table before the first merge: DDL would commit the open transaction")
        stage = staging_name(table)
        if not self._staged:
            self._cursor.execute(f"CREATE TEMPORARY STAGE {self._stage}")
        if stage not in self._staged:
            columns = ", ".join(f"{_ident(c.name)} VARCHAR" for c in table.columns)
            self._cursor.execute(f"CREATE TEMPORARY TABLE {stage} ({columns})")
            self._staged[stage] = table
        if not self._put_files(stage, chunks):
            return 0
        self._cursor.execute(f"COPY INTO {stage} FROM @{self._stage}/{stage}/ {_CSV_FORMAT} PURGE = TRUE")
        return sum(int(row[3]) for row in self._cursor.fetchall())  # rows_loaded per file

    def staged_max(self, table: RawTable, column: str) -> Any:
        (cast,) = (_typed(c) for c in table.columns if c.name == column)
        self._cursor.execute(f"SELECT max({cast}) FROM {staging_name(table)}")
        return self._cursor.fetchone()[0]

    def merge(self, table: RawTable, replace: ReplaceScope | None = None) -> int:
        return self._run_merge(table, _merge_statements(table, replace, staging_name(table)))

    def _run_merge(self, table: RawTable, statements: list[str]) -> int:
        if not self._in_transaction:
            self._cursor.execute("BEGIN")
            self._in_transaction = True
        params = {"loaded_at": self.loaded_at.isoformat(), "batch_id": self.batch_id}
        changed = 0
        for statement in statements:
            self._cursor.execute(statement, params)
            changed += self._cursor.rowcount or 0
        log.info("raw.%s: %d rows merged", table.name, changed)
        return changed

    def upsert(self, table: RawTable, rows: Sequence[Sequence[Any]]) -> int:
        selects = (
            "SELECT " + ", ".join(f"{_literal(v)} AS {_ident(c.name)}" for c, v in zip(table.columns, row, strict=True))
            for row in rows
        )
        return self._run_merge(table, _merge_statements(table, None, "(" + " UNION ALL ".join(selects) + ")"))

    def read(self, table: RawTable) -> list[dict[str, Any]]:
        self._cursor.execute(f"SELECT * FROM {RAW_SCHEMA}.{table.name}")
        names = [d[0].lower() for d in self._cursor.description]
        return [dict(zip(names, row, strict=True)) for row in self._cursor.fetchall()]

    def commit(self) -> None:
        if self._in_transaction:
            self._cursor.execute("COMMIT")
            self._in_transaction = False

    def close(self) -> None:
        """Roll back what was not committed; the temporary stage and tables end with the session."""
        if self._in_transaction:
            self._cursor.execute("ROLLBACK")
            self._in_transaction = False

    def _put_files(self, stage: str, chunks: Iterable[bytes]) -> int:
        """Spool chunks into files of about FILE_BYTES and PUT each; the number of files put."""
        put = 0
        handle, path = None, None
        for chunk in chunks:
            if handle is None:
                self._files += 1
                path = self._spool / f"{stage}_{self._files:05d}.csv"
                handle = path.open("wb")
            handle.write(chunk)
            if handle.tell() >= FILE_BYTES:
                handle.close()
                put += self._put(stage, path)
                handle = None
        if handle is not None:
            handle.close()
            put += self._put(stage, path)
        return put

    def _put(self, stage: str, path: Path | None) -> int:
        assert path is not None
        self._cursor.execute(f"PUT 'file://{path}' @{self._stage}/{stage}/")
        path.unlink()
        return 1


def _merge_statements(table: RawTable, replace: ReplaceScope | None, rows: str) -> list[str]:
    """Delete replaced rows, update changed ones, insert new keys, from ``rows`` (a staging table or a
    subquery of VARCHAR columns named like the table's)."""
    raw, key = f"{RAW_SCHEMA}.{table.name}", [_ident(k) for k in table.key]
    typed = "(SELECT " + ", ".join(f"{_typed(c)} AS {_ident(c.name)}" for c in table.columns)
    typed += f" FROM {rows})"
    joined = " AND ".join(f"r.{k} = s.{k}" for k in key)
    non_key = [_ident(c.name) for c in table.columns if c.name not in table.key]
    load = "CAST(%(loaded_at)s AS TIMESTAMP_TZ), %(batch_id)s"
    statements = []
    if replace:
        values = ", ".join(_literal(v) for v in replace.values) or "NULL"
        statements.append(
            f"DELETE FROM {raw} AS r WHERE r.{_ident(replace.column)} IN ({values}) "
            f"AND NOT EXISTS (SELECT 1 FROM {typed} AS s WHERE {joined})"
        )
    if non_key:
        sets = ", ".join(f"{n} = s.{n}" for n in non_key)
        differs = " OR ".join(f"r.{n} IS DISTINCT FROM s.{n}" for n in non_key)
        statements.append(
            f"UPDATE {raw} AS r SET {sets}, _loaded_at = CAST(%(loaded_at)s AS TIMESTAMP_TZ), "
            f"_batch_id = %(batch_id)s FROM {typed} AS s WHERE {joined} AND ({differs})"
        )
    every = ", ".join([*(_ident(c.name) for c in table.columns), *(c.name for c in LOAD_COLUMNS)])
    data = ", ".join(f"s.{_ident(c.name)}" for c in table.columns)
    statements.append(
        f"INSERT INTO {raw} ({every}) SELECT {data}, {load} FROM {typed} AS s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {raw} AS r WHERE {joined})"
    )
    return statements


def _ensure_table(cursor: Any, table: RawTable) -> None:
    raw = f"{RAW_SCHEMA}.{table.name}"
    definition = ", ".join(
        [f"{_ident(c.name)} {snowflake_type(c.type)}" for c in table.columns]
        + [f"{c.name} {snowflake_type(c.type)} NOT NULL" for c in LOAD_COLUMNS]
        + [f"PRIMARY KEY ({', '.join(_ident(k) for k in table.key)})"]
    )
    cursor.execute(f"CREATE TABLE IF NOT EXISTS {raw} ({definition})")
    cursor.execute(
        "SELECT lower(column_name) FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (RAW_SCHEMA.upper(), table.name.upper()),
    )
    existing = {row[0] for row in cursor.fetchall()}
    for column in (*table.columns, *LOAD_COLUMNS):
        if column.name not in existing:
            log.info("raw.%s: adding column %s, new in the source", table.name, column.name)
            cursor.execute(f"ALTER TABLE {raw} ADD COLUMN {_ident(column.name)} {snowflake_type(column.type)}")


def _typed(column: Column) -> str:
    """The staged VARCHAR value cast to the raw column's type."""
    target = snowflake_type(column.type)
    name = _ident(column.name)
    return f"PARSE_JSON({name})" if target == "VARIANT" else f"CAST({name} AS {target})"


def _ident(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"column {name!r} cannot be written to Snowflake unquoted; rename it in the source")
    return name


def _literal(value: Any) -> str:
    """A SQL string literal for statements run with pyformat parameters (hence ``%%``)."""
    return "NULL" if value is None else "'" + str(value).replace("'", "''").replace("%", "%%") + "'"
