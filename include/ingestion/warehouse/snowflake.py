"""Snowflake warehouse writer (Connection ``warehouse_snowflake``).

Staging: CSV chunks are written to local files of bounded size, ``PUT`` to a temporary stage and
``COPY INTO`` a temporary all-``VARCHAR`` table (so the loader never guesses a type); the merge casts
them to the raw table's types. All of a session's staging happens before its transaction, because
Snowflake commits an open transaction on any DDL (and a temporary table is DDL).

The merge is an ``UPDATE ... FROM`` of changed rows plus an ``INSERT`` of new keys inside one
``BEGIN ... COMMIT``, rather than a ``MERGE`` statement: it is what ``MERGE`` does, but the local
emulator (fakesnow 0.12) cannot run ``MERGE`` inside an explicit transaction, and the transaction
is what keeps the data and its high-water mark together.

Identifiers are quoted in upper case (what Snowflake folds an unquoted name to, so dbt's unquoted
references find them) and a reserved word such as ``order`` still works as a column; values travel
as bind parameters, never as literals built here, because Snowflake reads ``\\`` as an escape
inside a string literal.
"""

from __future__ import annotations

import logging
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

from include.ingestion.tables import LOAD_COLUMNS, Column, RawTable
from include.ingestion.warehouse.base import (
    FUTURE_KEY_EXAMPLES,
    RAW_SCHEMA,
    ReplaceScope,
    StagedCursor,
    Warehouse,
    WarehouseSession,
    staging_name,
)
from include.orchestration.policies import ConnectionLimits, connection_limits

log = logging.getLogger(__name__)

FILE_BYTES = 64 << 20  # local file size per PUT: few round trips, bounded disk and memory
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
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
    """The provider's hook, plus the ``protocol`` extra it does not forward (``http`` for a local
    fakesnow) and the connector's timeouts; ``within_s`` caps them all, one request's included (a probe)."""

    def __init__(self, *args: Any, within_s: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.within_s = within_s

    def _get_conn_params(self) -> dict[str, Any]:
        params = dict(super()._get_conn_params())
        extras = self.get_connection(self.get_conn_id()).extra_dejson
        protocol = extras.get("protocol")
        if protocol:
            params["protocol"] = protocol
        limits = connection_limits(self.get_conn_id(), extras)
        if self.within_s is not None:
            return {**params, **connector_timeouts(limits.within(self.within_s)), "socket_timeout": self.within_s}
        timeouts = connector_timeouts(limits)
        return {**params, **{key: extras.get(key, value) for key, value in timeouts.items()}}


def connector_timeouts(limits: ConnectionLimits) -> dict[str, int]:
    """The connector's timeouts from policies.yml's ``connections:`` (the Connection's extras may
    set ``login_timeout``/``network_timeout`` themselves): an unreachable or silent Snowflake fails
    the load within them instead of at the task's ``execution_timeout``."""
    return {"login_timeout": limits.connect_timeout, "network_timeout": limits.statement_timeout}


class SnowflakeWarehouse(Warehouse):
    name = "snowflake"

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id

    def connect(self) -> Any:
        return ProtocolAwareSnowflakeHook(snowflake_conn_id=self.conn_id).get_conn()

    def probe(self, within_s: int) -> None:
        conn = ProtocolAwareSnowflakeHook(snowflake_conn_id=self.conn_id, within_s=within_s).get_conn()
        try:
            conn.cursor().execute("SELECT 1").fetchone()
        finally:
            conn.close()

    def relation(self, schema: str, identifier: str) -> str:
        return f"{schema}.{identifier}"  # dbt-snowflake does not quote: both fold to upper case

    @contextmanager
    def session(self, batch_id: str, tables: Sequence[RawTable], connection: Any = None) -> Iterator[SnowflakeSession]:
        conn = connection or self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA}")  # DDL autocommits in Snowflake
            has_rows = {table.name: _ensure_table(cursor, table) for table in tables}
            with tempfile.TemporaryDirectory(prefix="snowflake-stage-") as spool:
                session = SnowflakeSession(conn.cursor(), batch_id, datetime.now(UTC), Path(spool), has_rows)
                try:
                    yield session
                finally:
                    session.close()
        finally:
            conn.close()


class SnowflakeSession(WarehouseSession):
    def __init__(
        self, cursor: Any, batch_id: str, loaded_at: datetime, spool: Path, has_rows: dict[str, bool] | None = None
    ) -> None:
        super().__init__(batch_id, loaded_at)
        self._cursor = cursor
        self._has_rows = has_rows or {}  # raw table → had a row at the session's start (from _ensure_table)
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
            self._cursor.execute(f"CREATE TEMPORARY TABLE {_ident(stage)} ({columns})")
            self._staged[stage] = table
        if not self._put_files(stage, chunks):
            return 0
        self._cursor.execute(f"COPY INTO {_ident(stage)} FROM @{self._stage}/{stage}/ {_CSV_FORMAT} PURGE = TRUE")
        return sum(int(row[3]) for row in self._cursor.fetchall())  # rows_loaded per file

    def staged_max(self, table: RawTable, column: str) -> Any:
        (cast,) = (_typed(c) for c in table.columns if c.name == column)
        self._cursor.execute(f"SELECT max({cast}) FROM {_ident(staging_name(table))}")
        return self._cursor.fetchone()[0]

    def staged_cursor(self, table: RawTable, column: str, until: datetime) -> StagedCursor:
        (target,) = (c for c in table.columns if c.name == column)
        cast, staged = _typed(target), _ident(staging_name(table))
        naive = snowflake_type(target.type) == "TIMESTAMP_NTZ"
        params = {"until": (until.astimezone(UTC).replace(tzinfo=None) if naive else until).isoformat()}
        bound = f"CAST(%(until)s AS {snowflake_type(target.type)})"
        self._cursor.execute(
            f"SELECT MAX(CASE WHEN {cast} <= {bound} THEN {cast} END),"
            f" COALESCE(SUM(CASE WHEN {cast} > {bound} THEN 1 ELSE 0 END), 0), MAX({cast}),"
            f" COALESCE(SUM(CASE WHEN {cast} IS NULL THEN 1 ELSE 0 END), 0) FROM {staged}",
            params,
        )
        newest, future, future_max, nulls = self._cursor.fetchone()
        if not future:
            return StagedCursor(newest, nulls=int(nulls))
        key = ", ".join(_ident(k) for k in table.key)
        self._cursor.execute(
            f"SELECT CONCAT_WS(', ', {key}) FROM {staged} WHERE {cast} > {bound} ORDER BY {cast} DESC"
            f" LIMIT {FUTURE_KEY_EXAMPLES}",
            params,
        )
        examples = tuple(row[0] for row in self._cursor.fetchall())
        return StagedCursor(newest, int(future), future_max, examples, int(nulls))

    def has_rows(self, table: RawTable) -> bool:
        return self._has_rows[table.name]

    def merge(self, table: RawTable, replace: ReplaceScope | None = None) -> int:
        return self._run_merge(table, _merge_statements(table, replace, _ident(staging_name(table))))

    def _run_merge(self, table: RawTable, statements: _Statements) -> int:
        if not self._in_transaction:
            self._cursor.execute("BEGIN")
            self._in_transaction = True
        params = {"loaded_at": self.loaded_at.isoformat(), "batch_id": self.batch_id, **statements.params}
        changed = 0
        for statement in statements.sql:
            self._cursor.execute(statement, params)
            changed += self._cursor.rowcount or 0
        log.info("raw.%s: %d rows merged", table.name, changed)
        return changed

    def upsert(self, table: RawTable, rows: Sequence[Sequence[Any]]) -> int:
        values: dict[str, Any] = {}
        selects = []
        for row in rows:
            names = [_bind(values, None if v is None else str(v)) for v in row]
            selects.append(
                "SELECT "
                + ", ".join(f"{name} AS {_ident(c.name)}" for c, name in zip(table.columns, names, strict=True))
            )
        return self._run_merge(table, _merge_statements(table, None, "(" + " UNION ALL ".join(selects) + ")", values))

    def read(self, table: RawTable) -> list[dict[str, Any]]:
        self._cursor.execute(f"SELECT * FROM {_raw(table)}")
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


@dataclass(frozen=True)
class _Statements:
    """Statements run in order with one set of bind parameters (pyformat names)."""

    sql: list[str]
    params: dict[str, Any] = field(default_factory=dict)


def _bind(params: dict[str, Any], value: Any) -> str:
    """Add ``value`` to ``params`` under a new name; the placeholder that binds it."""
    name = f"v{len(params)}"
    params[name] = value
    return f"%({name})s"


def _merge_statements(
    table: RawTable, replace: ReplaceScope | None, rows: str, bound: dict[str, Any] | None = None
) -> _Statements:
    """Delete replaced rows, update changed ones, insert new keys, from ``rows`` (a staging table or a
    subquery of VARCHAR columns named like the table's, whose placeholders ``bound`` binds)."""
    raw, key = _raw(table), [_ident(k) for k in table.key]
    typed = "(SELECT " + ", ".join(f"{_typed(c)} AS {_ident(c.name)}" for c in table.columns)
    typed += f" FROM {rows})"
    joined = " AND ".join(f"r.{k} = s.{k}" for k in key)
    non_key = [_ident(c.name) for c in table.columns if c.name not in table.key]
    loaded_at, batch_id = (_ident(c.name) for c in LOAD_COLUMNS)
    load = "CAST(%(loaded_at)s AS TIMESTAMP_TZ), %(batch_id)s"
    statements: list[str] = []
    params = dict(bound or {})
    if replace:
        values = ", ".join(_bind(params, v) for v in replace.values) or "NULL"
        statements.append(
            f"DELETE FROM {raw} AS r WHERE r.{_ident(replace.column)} IN ({values}) "
            f"AND NOT EXISTS (SELECT 1 FROM {typed} AS s WHERE {joined})"
        )
    if non_key:
        sets = ", ".join(f"{n} = s.{n}" for n in non_key)
        differs = " OR ".join(f"r.{n} IS DISTINCT FROM s.{n}" for n in non_key)
        statements.append(
            f"UPDATE {raw} AS r SET {sets}, {loaded_at} = CAST(%(loaded_at)s AS TIMESTAMP_TZ), "
            f"{batch_id} = %(batch_id)s FROM {typed} AS s WHERE {joined} AND ({differs})"
        )
    every = ", ".join(_ident(c.name) for c in (*table.columns, *LOAD_COLUMNS))
    data = ", ".join(f"s.{_ident(c.name)}" for c in table.columns)
    statements.append(
        f"INSERT INTO {raw} ({every}) SELECT {data}, {load} FROM {typed} AS s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {raw} AS r WHERE {joined})"
    )
    return _Statements(statements, params)


def _ensure_table(cursor: Any, table: RawTable) -> bool:
    """Create the raw table or add its missing columns; whether it has a row (asked in the column
    look-up's round trip: a raw table emptied behind its high-water mark must be loaded in full)."""
    raw = _raw(table)
    definition = ", ".join(
        [f"{_ident(c.name)} {snowflake_type(c.type)}" for c in table.columns]
        + [f"{_ident(c.name)} {snowflake_type(c.type)} NOT NULL" for c in LOAD_COLUMNS]
        + [f"PRIMARY KEY ({', '.join(_ident(k) for k in table.key)})"]
    )
    cursor.execute(f"CREATE TABLE IF NOT EXISTS {raw} ({definition})")
    cursor.execute(
        f"SELECT lower(column_name), (SELECT COUNT(*) FROM (SELECT 1 FROM {raw} LIMIT 1))"
        " FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (RAW_SCHEMA.upper(), table.name.upper()),
    )
    looked = cursor.fetchall()
    existing = {row[0] for row in looked}
    for column in (*table.columns, *LOAD_COLUMNS):
        if column.name not in existing:
            log.info("raw.%s: adding column %s, new in the source", table.name, column.name)
            cursor.execute(f"ALTER TABLE {raw} ADD COLUMN {_ident(column.name)} {snowflake_type(column.type)}")
    return bool(looked and looked[0][1])


def _typed(column: Column) -> str:
    """The staged VARCHAR value cast to the raw column's type."""
    target = snowflake_type(column.type)
    name = _ident(column.name)
    return f"PARSE_JSON({name})" if target == "VARIANT" else f"CAST({name} AS {target})"


def _raw(table: RawTable) -> str:
    return f"{RAW_SCHEMA}.{_ident(table.name)}"


def _ident(name: str) -> str:
    """``name`` quoted, upper case: a reserved word (``order``, ``start``) is an identifier too, and
    the unquoted references of dbt (folded to upper case) find it. Only lower_snake_case names are
    taken, whole (``fullmatch``: ``$`` would let a trailing newline through), since a quoted name
    with other characters would differ from what dbt's unquoted name means."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a lower_snake_case identifier, so it cannot be written to Snowflake under the "
            "name dbt reads; rename the column or table in the source"
        )
    return f'"{name.upper()}"'
