"""High-water marks, kept in the warehouse next to the data they describe (``raw._ingestion_state``).

The mark is upserted in the same session and transaction as the data, so it commits with the rows
it describes or not at all: a failed load can neither skip rows nor advance the mark.
"""

from __future__ import annotations

from include.ingestion.tables import Column, RawTable
from include.ingestion.warehouse.base import WarehouseSession

STATE_TABLE = RawTable(
    "_ingestion_state",
    (Column("source", "text"), Column("cursor_column", "text"), Column("high_water", "text")),
    key=("source",),
)


def high_water(session: WarehouseSession, source: str) -> str | None:
    """The committed mark of ``source`` (text: an ISO timestamp or unix seconds), None before its first load."""
    for row in session.read(STATE_TABLE):
        if row["source"] == source:
            return row["high_water"]
    return None


def set_high_water(session: WarehouseSession, source: str, cursor_column: str, value: str | None) -> None:
    """Write the new mark in the session's transaction; the caller commits it with the data."""
    session.upsert(STATE_TABLE, [(source, cursor_column, value)])
