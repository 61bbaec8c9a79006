"""The Stripe charges of the synthetic shop, in one SQLite file.

The generator (``include.dev.shopgen``) writes it and the Stripe stub (``include.dev.stripe_stub``)
serves it. SQLite because both are separate processes, the stub must see the generator's later
changes (late refunds) without a restart, and an index on ``(created, id)`` gives Stripe's
newest-first paging for free.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    id TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_newest_first ON charges (created DESC, id DESC);
"""
CREATED_OPERATORS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass(frozen=True)
class ChargeQuery:
    """One ``GET /v1/charges`` page request, already validated."""

    limit: int = 10
    created: dict[str, int] | None = None  # operator (gt|gte|lt|lte|eq) -> unix seconds
    starting_after: str | None = None
    ending_before: str | None = None


class UnknownCharge(LookupError):
    """A cursor (``starting_after``/``ending_before``) names a charge that does not exist."""


class ChargeStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30)
        try:
            connection.executescript(SCHEMA)
            with connection:
                yield connection
        finally:
            connection.close()

    def insert(self, charges: Iterable[dict[str, Any]]) -> int:
        with self.connect() as connection:
            cursor = connection.executemany(
                "INSERT INTO charges (id, created, body) VALUES (?, ?, ?)",
                ((c["id"], c["created"], json.dumps(c, separators=(",", ":"))) for c in charges),
            )
            return cursor.rowcount

    def replace(self, charges: Iterable[dict[str, Any]]) -> int:
        """Overwrite existing charges (refunds change ``amount_refunded`` and ``refunded``)."""
        with self.connect() as connection:
            cursor = connection.executemany(
                "UPDATE charges SET body = ? WHERE id = ?",
                ((json.dumps(c, separators=(",", ":")), c["id"]) for c in charges),
            )
            return cursor.rowcount

    def get(self, charge_id: str) -> dict[str, Any] | None:
        with self.connect() as connection:
            row = connection.execute("SELECT body FROM charges WHERE id = ?", (charge_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def all(self) -> list[dict[str, Any]]:
        """Every charge, newest first."""
        with self.connect() as connection:
            rows = connection.execute("SELECT body FROM charges ORDER BY created DESC, id DESC").fetchall()
        return [json.loads(row[0]) for row in rows]

    def created_since(self, created_gte: int) -> list[dict[str, Any]]:
        with self.connect() as connection:
            rows = connection.execute(
                "SELECT body FROM charges WHERE created >= ? ORDER BY created, id", (created_gte,)
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def count(self) -> int:
        with self.connect() as connection:
            return int(connection.execute("SELECT count(*) FROM charges").fetchone()[0])

    def page(self, query: ChargeQuery) -> tuple[list[dict[str, Any]], bool]:
        """One page in Stripe's order (newest first) and whether more follow in that direction."""
        conditions, params = self._created_filter(query.created or {})
        with self.connect() as connection:
            if query.starting_after or query.ending_before:
                cursor_id = query.starting_after or query.ending_before
                row = connection.execute("SELECT created, id FROM charges WHERE id = ?", (cursor_id,)).fetchone()
                if row is None:
                    raise UnknownCharge(cursor_id)
                comparison = "<" if query.starting_after else ">"
                conditions.append(f"(created, id) {comparison} (?, ?)")
                params.extend(row)
            where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
            # ending_before pages towards newer charges: read them oldest first, then flip.
            order = "created ASC, id ASC" if query.ending_before and not query.starting_after else "created DESC, id DESC"
            rows = connection.execute(
                f"SELECT body FROM charges {where} ORDER BY {order} LIMIT ?", (*params, query.limit + 1)
            ).fetchall()
        charges = [json.loads(row[0]) for row in rows[: query.limit]]
        if order.startswith("created ASC"):
            charges.reverse()
        return charges, len(rows) > query.limit

    @staticmethod
    def _created_filter(created: dict[str, int]) -> tuple[list[str], list[Any]]:
        conditions: list[str] = []
        params: list[Any] = []
        for operator, value in created.items():
            conditions.append(f"created {CREATED_OPERATORS.get(operator, '=')} ?")
            params.append(value)
        return conditions, params
