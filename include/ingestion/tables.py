"""What sources hand to warehouse writers: a raw table's shape and its rows as CSV bytes.

One representation for every source and warehouse: CSV in the dialect both PostgreSQL's
``COPY ... (FORMAT csv)`` and Snowflake's ``COPY INTO ... TYPE = CSV`` read. Postgres sources pass
the server's own ``COPY TO STDOUT`` bytes straight through (no per-value Python work, which is
what keeps a table move near the speed of a raw COPY pipe); Python sources (Stripe, CSV files)
encode their rows with :func:`csv_chunks`. Chunks are bounded, so memory never grows with a table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Column:
    """A column and its PostgreSQL type as ``format_type()`` spells it (the Snowflake writer maps it)."""

    name: str
    type: str


@dataclass(frozen=True)
class RawTable:
    """A table in the warehouse's ``raw`` schema: its data columns and merge key.

    The load columns (``_loaded_at``, ``_batch_id``) are not listed: every writer adds them.
    """

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def __post_init__(self) -> None:
        missing = set(self.key) - set(self.column_names)
        if missing:
            raise ValueError(f"raw.{self.name}: key columns {sorted(missing)} are not among its columns")


LOAD_COLUMNS = (Column("_loaded_at", "timestamp with time zone"), Column("_batch_id", "text"))


def csv_chunks(rows: Iterable[Sequence[Any]], chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Encode rows as CSV chunks of about ``chunk_bytes``.

    ``None`` is an unquoted empty field (NULL for both warehouses) and every string is quoted, so an
    empty string stays distinguishable from NULL; Python 3.11's csv module cannot express that.
    """
    buffer: list[str] = []
    size = 0
    for row in rows:
        line = ",".join(_field(value) for value in row) + "\n"
        buffer.append(line)
        size += len(line)
        if size >= chunk_bytes:
            yield "".join(buffer).encode()
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode()


def _field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = str(value)
    return '"' + text.replace('"', '""') + '"'
