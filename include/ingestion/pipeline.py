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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

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
from include.ingestion.warehouse.base import ReplaceScope, Warehouse, WarehouseSession

log = logging.getLogger(__name__)

__all__ = ["LoadReport", "extract", "load_source_config", "warehouse_for"]


@dataclass(frozen=True)
class LoadReport:
    """What one extraction did; ``rows_merged`` counts rows inserted or actually changed in raw."""

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

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Run:
    """The arguments every per-kind loader gets."""

    warehouse: Warehouse
    batch_id: str
    full_refresh: bool


def warehouse_for(name: str) -> Warehouse:
    """The writer for a warehouse name (``postgres`` | ``snowflake``) on its contract Connection."""
    if name == "postgres":
        from include.ingestion.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse()
    if name == "snowflake":
        from include.ingestion.warehouse.snowflake import SnowflakeWarehouse

        return SnowflakeWarehouse()
    raise ValueError(f"unknown warehouse {name!r}: choose 'postgres' or 'snowflake' (Variable ecommerce_warehouse)")


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
    target = warehouse_for(warehouse) if isinstance(warehouse, str) else warehouse
    run = _Run(target, batch_id or f"{source_name}-{uuid.uuid4().hex[:12]}", full_refresh)
    started = time.monotonic()
    report = _LOADERS[type(entry)](entry, run)
    report = LoadReport(**{**report.as_dict(), "duration_s": round(time.monotonic() - started, 3)})
    log.info(
        "%s → %s.raw.%s: %s, read %d, merged %d, rejected %d, high-water %s → %s in %.2fs",
        source_name, target.name, entry.raw_table, report.mode, report.rows_read, report.rows_merged,
        report.rows_rejected, report.previous_high_water, report.high_water, report.duration_s,
    )  # fmt: skip
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
        table = source.describe(conn, entry)
        with run.warehouse.session(run.batch_id, [STATE_TABLE, table], warehouse_conn.result()) as session:
            previous = high_water(session, entry.name)
            full = _is_full(entry, run, previous)
            since = None if full else datetime.fromisoformat(previous) - timedelta(seconds=entry.overlap_seconds)
            copy_format = run.warehouse.source_copy_format
            read = session.stage(table, source.copy_rows(conn, entry, table, since, copy_format), copy_format)
            newest = session.staged_max(table, entry.cursor)
            mark = newest.isoformat() if newest is not None else previous
            merged = _merge_with_mark(session, table, entry.name, entry.cursor, mark)
    return LoadReport(
        entry.name, run.warehouse.name, run.batch_id, "full" if full else "incremental",
        read, merged, 0, previous, mark, 0.0,
    )  # fmt: skip


def _load_stripe(entry: StripeCharges, run: _Run) -> LoadReport:
    from include.ingestion.sources import stripe as source

    table = source.raw_table(entry)
    with run.warehouse.session(run.batch_id, [STATE_TABLE, table]) as session:
        previous = high_water(session, entry.name)
        full = _is_full(entry, run, previous)
        since = None if full else int(previous) - entry.reread_days * 86_400
        read = session.stage(table, source.charge_rows(entry, created_gte=since))
        newest = session.staged_max(table, entry.cursor)
        mark = str(max(int(newest), int(previous or 0))) if newest is not None else previous
        merged = _merge_with_mark(session, table, entry.name, entry.cursor, mark)
    return LoadReport(
        entry.name, run.warehouse.name, run.batch_id, "full" if full else "incremental",
        read, merged, 0, previous, mark, 0.0,
    )  # fmt: skip


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
        entry.name, run.warehouse.name, run.batch_id, "full" if full else "incremental",
        sum(len(d.rows) + len(d.rejects) for d in deliveries), merged, sum(len(d.rejects) for d in deliveries),
        None, None, 0.0, names,
    )  # fmt: skip


_LOADERS: dict[type, Callable[..., LoadReport]] = {
    PostgresTable: _load_postgres,
    StripeCharges: _load_stripe,
    MarketingCsv: _load_marketing,
}
