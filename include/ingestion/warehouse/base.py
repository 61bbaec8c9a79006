"""The one small interface every warehouse writer implements.

A load is: open a session (which first makes sure the raw tables exist and have every source
column) → stage every table's rows → merge them into ``raw`` by key → commit. Nothing a session
does is visible in ``raw`` before its commit, and the merges and the high-water mark commit together, so a
failure anywhere leaves ``raw`` exactly as it was; a merge only touches rows whose data changed, so
a rerun of the same rows changes nothing. Stage everything before the first merge (on Snowflake,
staging is DDL, which would commit an open transaction).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from include.ingestion.tables import RawTable

RAW_SCHEMA = "raw"


@dataclass(frozen=True)
class ReplaceScope:
    """Rows of ``raw`` whose ``column`` is in ``values`` are replaced by the staged ones, not merged.

    Used where a delivery owns a set of rows (a re-delivered file replaces its own rejects, including
    the ones that are gone from the new delivery).
    """

    column: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class StagedCursor:
    """The staged rows' cursor against the source's clock (``until``): what the mark may take and
    what it must not. ``future_keys`` are a few keys (as text) of the future-dated rows, newest first."""

    newest: Any  # largest cursor at or before ``until``; None when none
    future: int = 0  # rows whose cursor is after ``until``: loaded, but no mark may follow them
    future_max: Any = None
    future_keys: tuple[str, ...] = ()
    nulls: int = 0  # rows with a NULL cursor: read on every load, no mark can cover them


FUTURE_KEY_EXAMPLES = 5


class WarehouseSession(ABC):
    """One load's connection and transaction. Nothing in ``raw`` changes before :meth:`commit`."""

    def __init__(self, batch_id: str, loaded_at: datetime) -> None:
        self.batch_id = batch_id
        self.loaded_at = loaded_at

    @abstractmethod
    def stage(self, table: RawTable, chunks: Iterable[bytes], copy_format: str = "csv") -> int:
        """Append rows (``table.columns`` order, CSV or PostgreSQL binary COPY) to staging; rows staged."""

    @abstractmethod
    def staged_max(self, table: RawTable, column: str) -> Any:
        """Largest ``column`` among the staged rows (the new high-water mark), None when none."""

    @abstractmethod
    def staged_cursor(self, table: RawTable, column: str, until: Any) -> StagedCursor:
        """The staged ``column`` against ``until`` in one query (a second one, for example keys, only
        when future-dated rows were staged)."""

    @abstractmethod
    def has_rows(self, table: RawTable) -> bool:
        """Whether raw ``table`` held a row when the session began. Asked before the source read: a
        raw table emptied behind its high-water mark must be loaded in full. Answered from a round
        trip the session makes anyway."""

    @abstractmethod
    def merge(self, table: RawTable, replace: ReplaceScope | None = None) -> int:
        """Upsert the staged rows into ``raw`` by key; rows inserted or actually changed."""

    @abstractmethod
    def upsert(self, table: RawTable, rows: Sequence[Sequence[Any]]) -> int:
        """Merge a few rows given as values (bookkeeping, such as a high-water mark) by key, without
        staging: a temporary table per bookkeeping row would cost more than the rows of a small load."""

    @abstractmethod
    def read(self, table: RawTable) -> list[dict[str, Any]]:
        """All rows of a small bookkeeping table (state, landed files), as committed or merged here."""

    @abstractmethod
    def commit(self) -> None:
        """Make every merge of this session visible at once."""


class Warehouse(ABC):
    """A warehouse reached through one Airflow Connection."""

    name: str
    conn_id: str
    # What stage() takes from a PostgreSQL source's COPY TO STDOUT: ``csv`` everywhere; ``binary``
    # where the warehouse is PostgreSQL itself (no text formatting and parsing).
    source_copy_format: str = "csv"

    @abstractmethod
    def connect(self) -> Any:
        """A new DB-API connection on the warehouse's Connection (closing it twice is harmless)."""

    @abstractmethod
    def probe(self, within_s: int) -> None:
        """One round trip on a new connection (log in, ``SELECT 1``), every wait capped at
        ``within_s``; raises when the warehouse does not answer in time (the watchdog's probe)."""

    @abstractmethod
    def relation(self, schema: str, identifier: str) -> str:
        """``schema.identifier`` as dbt's default quoting for this warehouse writes it in SQL."""

    @abstractmethod
    def session(
        self, batch_id: str, tables: Sequence[RawTable], connection: Any = None
    ) -> AbstractContextManager[WarehouseSession]:
        """A session over ``tables``, which exist with every column on entry; it rolls back and closes
        when the block raises or ends without commit.

        Missing tables and columns are created first and committed on their own; one connection
        serves both, because opening one (TLS/SCRAM, a server process) is most of a small load's cost.
        ``connection`` (from :meth:`connect`, which a loader may call on a helper thread while it reads
        the source) is used instead of a new one; the session closes it either way.
        """


def staging_name(table: RawTable) -> str:
    return f"_stage_{table.name}"
