"""The Stripe charges of the synthetic shop, in one SQLite file.

The generator (``dev.shopgen``) writes it and the Stripe stub (``dev.stripe_stub``)
serves it. SQLite because both are separate processes, the stub must see the generator's later
changes (late refunds) without a restart, and an index on ``(created, id)`` gives Stripe's
newest-first paging for free.
"""

from __future__ import annotations

import json
import sqlite3
import time
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
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_newest_first ON events (created DESC, id DESC);
"""
LISTS = ("charges", "events")  # the tables ``page`` serves, each with id, created and body
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

    def replace(self, charges: Iterable[dict[str, Any]], at: int | None = None) -> int:
        """Overwrite existing charges (refunds change ``amount_refunded`` and ``refunded``) and record
        Stripe's event for each change, created at ``at`` (unix seconds; now when not given)."""
        created = int(time.time()) if at is None else at
        changed = 0
        with self.connect() as connection:
            for charge in charges:
                row = connection.execute("SELECT body FROM charges WHERE id = ?", (charge["id"],)).fetchone()
                if row is None:
                    continue
                body = json.dumps(charge, separators=(",", ":"))
                connection.execute("UPDATE charges SET body = ? WHERE id = ?", (body, charge["id"]))
                changed += 1
                self._record_event(connection, json.loads(row[0]), charge, created)
        return changed

    @staticmethod
    def _record_event(
        connection: sqlite3.Connection, before: dict[str, Any], after: dict[str, Any], created: int
    ) -> None:
        """``charge.refunded`` when the refunded amount grew, else ``charge.updated``; ids sort by
        insertion so events of one second keep their order."""
        refunded_more = after.get("amount_refunded", 0) > before.get("amount_refunded", 0)
        kind = "charge.refunded" if refunded_more else "charge.updated"
        number = int(connection.execute("SELECT count(*) FROM events").fetchone()[0]) + 1
        event = {
            "id": f"evt_{number:024d}",
            "object": "event",
            "created": created,
            "type": kind,
            "livemode": False,
            "data": {"object": after},
        }
        connection.execute(
            "INSERT INTO events (id, created, type, body) VALUES (?, ?, ?, ?)",
            (event["id"], created, kind, json.dumps(event, separators=(",", ":"))),
        )

    def events(self) -> list[dict[str, Any]]:
        """Every event, newest first."""
        with self.connect() as connection:
            rows = connection.execute("SELECT body FROM events ORDER BY created DESC, id DESC").fetchall()
        return [json.loads(row[0]) for row in rows]

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

    def page(
        self, query: ChargeQuery, table: str = "charges", type_glob: str | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page in Stripe's order (newest first) and whether more follow in that direction;
        ``table`` is charges or events (``type_glob`` filters events by type, ``*`` a wildcard)."""
        if table not in LISTS:
            raise ValueError(f"no list {table!r}: one of {LISTS}")
        conditions, params = self._created_filter(query.created or {})
        if type_glob is not None:
            conditions.append("type GLOB ?")
            params.append(type_glob)
        with self.connect() as connection:
            if query.starting_after or query.ending_before:
                cursor_id = query.starting_after or query.ending_before
                row = connection.execute(f"SELECT created, id FROM {table} WHERE id = ?", (cursor_id,)).fetchone()
                if row is None:
                    raise UnknownCharge(cursor_id)
                comparison = "<" if query.starting_after else ">"
                conditions.append(f"(created, id) {comparison} (?, ?)")
                params.extend(row)
            where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
            # ending_before pages towards newer charges: read them oldest first, then flip.
            order = (
                "created ASC, id ASC" if query.ending_before and not query.starting_after else "created DESC, id DESC"
            )
            rows = connection.execute(
                f"SELECT body FROM {table} {where} ORDER BY {order} LIMIT ?", (*params, query.limit + 1)
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
