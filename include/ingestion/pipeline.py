"""``extract(source_name)``: the one function an Airflow extraction task calls.

It reads the ``sources.yml`` entry, streams the source's rows into the chosen warehouse's staging,
merges them into ``raw`` and advances the high-water mark in one transaction, and returns a
:class:`LoadReport` (small, JSON-friendly: fine as an XCom). Connections are resolved by id through
Airflow's hooks; nothing here knows about DAGs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.ingestion.config import (
    SOURCES_FILE,
    LoadMode,
    MarketingCsv,
    PostgresTable,
    SourceConfig,
    StripeCharges,
    load_source_config,
    source_entry,
)
from include.ingestion.state import STATE_TABLE, high_water, set_high_water
from include.ingestion.tables import RawTable, csv_chunks
from include.ingestion.warehouse.base import ReplaceScope, StagedCursor, Warehouse, WarehouseSession
from include.warehouses import warehouse as warehouse_spec

if TYPE_CHECKING:
    from include.ingestion.sources.postgres import SnapshotClock

log = logging.getLogger(__name__)

__all__ = ["LoadReport", "extract", "load_source_config"]


@dataclass(frozen=True)
class LoadReport:
    """What one extraction did. Every row read is either loaded or rejected
    (``rows_read == rows_loaded + rows_rejected``); ``rows_merged`` counts the loaded rows that were
    inserted or actually changed in raw (a re-read or re-delivered row that is unchanged is loaded,
    not merged). ``rows_loaded`` left out means every row read that was not rejected."""

    source: str
    warehouse: str
    batch_id: str
    mode: str
    rows_read: int
    rows_merged: int
    rows_rejected: int
    previous_high_water: str | None
    high_water: str | None
    duration_s: float
    files: tuple[str, ...] = field(default=())
    rows_loaded: int | None = None
    future_rows: int = 0  # rows whose cursor is after the source's clock: loaded, but the mark stays behind

    def __post_init__(self) -> None:
        if self.rows_loaded is None:
            object.__setattr__(self, "rows_loaded", self.rows_read - self.rows_rejected)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Run:
    """The arguments every per-kind loader gets."""

    warehouse: Warehouse
    batch_id: str
    full_refresh: bool


def extract(
    source_name: str,
    *,
    warehouse: str | Warehouse = "postgres",
    full_refresh: bool = False,
    batch_id: str | None = None,
    config_path: Path = SOURCES_FILE,
) -> LoadReport:
    """Load one ``sources.yml`` entry into ``raw``; raises (leaving raw untouched) on any failure.

    ``batch_id`` should identify the task try (e.g. ``f"{run_id}/{task_id}/{try_number}"``); it is
    written to ``_batch_id`` of every row the load inserts or changes.
    """
    entry = source_entry(source_name, config_path)
    target = warehouse_spec(warehouse).load_writer() if isinstance(warehouse, str) else warehouse
    run = _Run(target, batch_id or f"{source_name}-{uuid.uuid4().hex[:12]}", full_refresh)
    started = time.monotonic()
    report = _LOADERS[type(entry)](entry, run)
    report = LoadReport(**{**report.as_dict(), "duration_s": round(time.monotonic() - started, 3)})
    log.info(
        "%s → %s.raw.%s: %s, read %d, merged %d, rejected %d, high-water %s → %s in %.2fs",
        source_name,
        target.name,
        entry.raw_table,
        report.mode,
        report.rows_read,
        report.rows_merged,
        report.rows_rejected,
        report.previous_high_water,
        report.high_water,
        report.duration_s,
    )
    return report


@contextmanager
def _opened_meanwhile(connect: Callable[[], Any]) -> Iterator[Future[Any]]:
    """``connect()`` runs on a helper thread while the block goes on; the connection is closed on
    the way out (a session that took it has closed it already: closing twice is harmless)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="connect") as helper:
        opening = helper.submit(connect)
        try:
            yield opening
        finally:
            if opening.exception() is None:  # waits for it; a failed connect has nothing to close
                opening.result().close()


def _is_full(entry: SourceConfig, run: _Run, previous: str | None) -> bool:
    return run.full_refresh or entry.mode is LoadMode.FULL or previous is None


def _usable_mark(session: WarehouseSession, table: RawTable, previous: str | None) -> str | None:
    """The stored mark, or None (a full load) when raw ``table`` is empty though a mark exists: the
    table was truncated or dropped, and an incremental load would bring back only recent rows."""
    if previous is not None and not session.has_rows(table):
        log.warning(
            "raw.%s is empty but raw._ingestion_state keeps its high-water mark %s (the table was truncated "
            "or dropped): loading it in full, as with full_refresh, so its history comes back",
            table.name,
            previous,
        )
        return None
    return previous


def _unless_future(entry: PostgresTable, previous: str | None, clock: SnapshotClock) -> str | None:
    """The mark, or None (a full load) when it is after the source's clock, as one an older loader
    took from a future-dated row is: the rows changed since were skipped, and only a full read finds them."""
    if previous is None or _comparable(datetime.fromisoformat(previous), clock.now) <= clock.now:
        return previous
    log.warning(
        "source '%s': high-water mark %s is after the source's clock %s: loading raw.%s in full, as with "
        "full_refresh, to pick up the rows an incremental read from it skipped",
        entry.name,
        previous,
        clock.now.isoformat(),
        entry.raw_table,
    )
    return None


def _comparable(value: datetime, reference: datetime) -> datetime:
    """``value`` as aware UTC when ``reference`` is aware (a ``timestamp without time zone`` cursor
    is UTC: sessions run with TimeZone=UTC)."""
    if value.tzinfo is None and reference.tzinfo is not None:
        return value.replace(tzinfo=UTC)
    return value


def _postgres_mark(
    entry: PostgresTable, cursor: StagedCursor, clock: SnapshotClock, previous: str | None
) -> str | None:
    """The newest staged cursor, but never after the source's clock at the snapshot nor after the
    start of a transaction still open then (it may commit rows stamped earlier than our newest)."""
    _warn_unmarkable(entry, cursor, clock)
    if cursor.newest is None:
        return previous
    limit = clock.mark_limit
    if cursor.newest.tzinfo is None:
        limit = limit.astimezone(UTC).replace(tzinfo=None)
    if limit < cursor.newest:
        log.info(
            "source '%s': high-water mark held at %s, when a source transaction still open began, not %s",
            entry.name,
            limit.isoformat(),
            cursor.newest.isoformat(),
        )
        return limit.isoformat()
    return cursor.newest.isoformat()


def _warn_unmarkable(entry: PostgresTable, cursor: StagedCursor, clock: SnapshotClock) -> None:
    """Name the rows no mark can follow: future-dated and NULL cursors (loaded all the same)."""
    if cursor.future:
        log.warning(
            "source '%s': %d row(s) of %s.%s have %s after the source's clock %s (newest %s; keys e.g. %s): "
            "loaded, but the high-water mark does not follow them. Fix the rows' %s in the source.",
            entry.name,
            cursor.future,
            entry.schema,
            entry.table,
            entry.cursor,
            clock.now.isoformat(),
            cursor.future_max,
            "; ".join(cursor.future_keys),
            entry.cursor,
        )
    if cursor.nulls:
        log.warning(
            "source '%s': %d row(s) of %s.%s have a NULL %s: they are re-read on every load. "
            "Set %s in the source (e.g. a NOT NULL DEFAULT now()).",
            entry.name,
            cursor.nulls,
            entry.schema,
            entry.table,
            entry.cursor,
            entry.cursor,
        )


def _merge_with_mark(session: WarehouseSession, table: RawTable, source: str, cursor: str, mark: str | None) -> int:
    """Merge the staged rows and write the new high-water mark, then commit both at once."""
    merged = session.merge(table)
    set_high_water(session, source, cursor, mark)
    session.commit()
    return merged


@contextmanager
def _postgres_connections(entry: PostgresTable, warehouse: Warehouse) -> Iterator[tuple[Any, Future[Any]]]:
    """The source's snapshot connection, and the warehouse's being opened meanwhile on a helper
    thread: opening a connection (a server process, SCRAM) is most of a small load's time."""
    from include.ingestion.sources import postgres as source

    with _opened_meanwhile(warehouse.connect) as warehouse_conn, source.snapshot(entry) as conn:
        yield conn, warehouse_conn


def _load_postgres(entry: PostgresTable, run: _Run) -> LoadReport:
    from include.ingestion.sources import postgres as source

    with _postgres_connections(entry, run.warehouse) as (conn, warehouse_conn):
        table, clock = source.describe(conn, entry)
        with run.warehouse.session(run.batch_id, [STATE_TABLE, table], warehouse_conn.result()) as session:
            previous = high_water(session, entry.name)
            kept = _unless_future(entry, _usable_mark(session, table, previous), clock)
            full = _is_full(entry, run, kept)
            since = None if full else datetime.fromisoformat(kept) - timedelta(seconds=entry.overlap_seconds)
            copy_format = run.warehouse.source_copy_format
            read = session.stage(table, source.copy_rows(conn, entry, table, since, copy_format), copy_format)
            staged = session.staged_cursor(table, entry.cursor, clock.now)
            mark = _postgres_mark(entry, staged, clock, kept)
            merged = _merge_with_mark(session, table, entry.name, entry.cursor, mark)
    return LoadReport(
        entry.name,
        run.warehouse.name,
        run.batch_id,
        "full" if full else "incremental",
        read,
        merged,
        0,
        previous,
        mark,
        0.0,
        future_rows=staged.future,
    )


def _load_stripe(entry: StripeCharges, run: _Run) -> LoadReport:
    from include.ingestion.sources import stripe as source

    table = source.raw_table(entry)
    with run.warehouse.session(run.batch_id, [STATE_TABLE, table]) as session:
        previous = high_water(session, entry.name)
        full = _is_full(entry, run, _usable_mark(session, table, previous))
        since = None if full else int(previous) - entry.reread_days * 86_400
        events_mark = high_water(session, _events_state_key(entry))
        events = source.EventWindow(None if events_mark is None else int(events_mark))
        read = session.stage(table, source.charge_rows(entry, created_gte=since, events=events))
        newest = session.staged_max(table, entry.cursor)
        mark = str(max(int(newest), int(previous or 0))) if newest is not None else previous
        events_mark = str(events.newest) if events.newest is not None else events_mark
        set_high_water(session, _events_state_key(entry), "event.created", events_mark)
        merged = _merge_with_mark(session, table, entry.name, entry.cursor, mark)
    return LoadReport(
        entry.name,
        run.warehouse.name,
        run.batch_id,
        "full" if full else "incremental",
        read,
        merged,
        0,
        previous,
        mark,
        0.0,
    )


def _events_state_key(entry: StripeCharges) -> str:
    """The second mark of a Stripe source: the newest event read, so refunds and disputes of charges
    older than the re-read window are found through ``/v1/events`` without a full reload."""
    return f"{entry.name}.events"


def _load_marketing(entry: MarketingCsv, run: _Run) -> LoadReport:
    from include.ingestion.sources import marketing_csv as source

    spend, rejects = source.spend_table(entry), source.rejects_table(entry)
    full = run.full_refresh or entry.mode is LoadMode.FULL
    with run.warehouse.session(run.batch_id, [source.LANDED_FILES, spend, rejects]) as session:
        landed = {row["file_name"]: row["checksum"] for row in session.read(source.LANDED_FILES)}
        deliveries = list(source.pending_deliveries(entry, landed, everything=full))
        names = tuple(d.name for d in deliveries)
        key_positions = tuple(spend.column_names.index(k) for k in spend.key)
        session.stage(spend, csv_chunks(source.latest_rows(deliveries, key_positions)))
        session.stage(rejects, csv_chunks(r for d in deliveries for r in d.rejects))
        files = ((d.name, d.checksum, len(d.rows), len(d.rejects)) for d in deliveries)
        session.stage(source.LANDED_FILES, csv_chunks(files))
        merged = session.merge(spend)
        session.merge(rejects, replace=ReplaceScope("_source_file", names))
        session.merge(source.LANDED_FILES)
        session.commit()
    return LoadReport(
        entry.name,
        run.warehouse.name,
        run.batch_id,
        "full" if full else "incremental",
        sum(len(d.rows) + len(d.rejects) for d in deliveries),
        merged,
        sum(len(d.rejects) for d in deliveries),
        None,
        None,
        0.0,
        names,
        rows_loaded=sum(len(d.rows) for d in deliveries),
    )


_LOADERS: dict[type, Callable[..., LoadReport]] = {
    PostgresTable: _load_postgres,
    StripeCharges: _load_stripe,
    MarketingCsv: _load_marketing,
}
