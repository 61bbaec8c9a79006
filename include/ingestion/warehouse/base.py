"""The one small interface every warehouse writer implements.

A load is: make sure the raw tables exist (and have every source column) → open a session →
stage rows into session-private tables → merge them into ``raw`` by key → commit. Staging never
touches ``raw``; the merges and the high-water mark commit together, so a failure anywhere leaves
``raw`` exactly as it was and a rerun of the same rows changes nothing.
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


class WarehouseSession(ABC):
    """One load's connection and transaction. Nothing in ``raw`` changes before :meth:`commit`."""

    def __init__(self, batch_id: str, loaded_at: datetime) -> None:
        self.batch_id = batch_id
        self.loaded_at = loaded_at

    @abstractmethod
    def stage(self, table: RawTable, chunks: Iterable[bytes]) -> int:
        """Append CSV rows (``table.columns`` order) to the session's staging table; rows staged."""

    @abstractmethod
    def staged_max(self, table: RawTable, column: str) -> Any:
        """Largest ``column`` among the staged rows (the new high-water mark), None when none."""

    @abstractmethod
    def merge(self, table: RawTable, replace: ReplaceScope | None = None) -> int:
        """Upsert the staged rows into ``raw`` by key; rows inserted or actually changed."""

    @abstractmethod
    def read(self, table: RawTable) -> list[dict[str, Any]]:
        """All rows of a small bookkeeping table (state, landed files), as committed or merged here."""

    @abstractmethod
    def commit(self) -> None:
        """Make every merge of this session visible at once."""


class Warehouse(ABC):
    """A warehouse reached through one Airflow Connection."""

    name: str

    @abstractmethod
    def ensure_tables(self, tables: Sequence[RawTable]) -> None:
        """Create missing raw tables and add columns new in the source (committed on its own)."""

    @abstractmethod
    def session(self, batch_id: str) -> AbstractContextManager[WarehouseSession]:
        """A session that rolls back and closes when the block raises or ends without commit."""


def staging_name(table: RawTable) -> str:
    return f"_stage_{table.name}"

