"""The synthetic shop: the contract's source tables, the Stripe charges and the marketing files.

``generate`` fills an empty source database (``public`` schema of docs/contract.md), the
charge store the Stripe stub serves, and the landing folder, deterministically from a seed.
``apply_changes`` then plays days of business on top — new orders, status changes with bumped
``updated_at``, late refunds, a new spend file and a corrected re-delivery — so incremental loads
have something real to pick up.

Run: ``python -m dev.shopgen generate --scale small --source-dsn URI --charges-db PATH --landing-dir DIR``
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

from dev.charge_store import ChargeStore
from dev.shopgen import marketing
from dev.shopgen.rows import RowFactory, cents, refund
from dev.shopgen.scales import HISTORY_END, SCALES, UTC, Scale, scale_named
from dev.shopgen.source_db import copy_rows, create_schema

__all__ = ["SCALES", "ChangeSummary", "apply_changes", "generate"]


def generate(scale: str, seed: int, source_dsn: str, charges_db: Path, landing_dir: Path) -> None:
    """Fill an empty source database, charge store and landing folder with the shop at ``scale``."""
    size = scale_named(scale)
    rng = random.Random(seed)
    factory = RowFactory(rng)
    charges_db = Path(charges_db)
    if charges_db.exists():
        charges_db.unlink()  # the store mirrors the source: both are generated together
    with psycopg.connect(source_dsn) as conn:
        create_schema(conn)
        prices = _products(conn, factory, size)
        _customers(conn, factory, size)
        _orders(conn, factory, size, prices, ChargeStore(charges_db))
    _marketing_files(Path(landing_dir), rng, size)


def _products(conn: psycopg.Connection, factory: RowFactory, size: Scale) -> list[int]:
    rows = [
        factory.product(product_id, size.history_start - timedelta(days=30))
        for product_id in range(1, size.products + 1)
    ]
    copy_rows(conn, "products", rows)
    return [cents(row[4]) for row in rows]


def _customers(conn: psycopg.Connection, factory: RowFactory, size: Scale) -> None:
    span = size.history_days * 86_400
    rows = (
        factory.customer(
            customer_id, size.history_start + timedelta(seconds=span * (customer_id - 1) // size.customers)
        )
        for customer_id in range(1, size.customers + 1)
    )
    copy_rows(conn, "customers", rows)


def _orders(conn: psycopg.Connection, factory: RowFactory, size: Scale, prices: list[int], store: ChargeStore) -> None:
    """Orders in time order; each goes to a customer who exists by then (the last 8% order nothing)."""
    rng, span = factory.rng, size.history_days * 86_400
    orders, items, charges = [], [], []
    buying_customers = max(1, int(size.customers * 0.92))
    next_item_id = 1
    for order_id in range(1, size.orders + 1):
        ordered_at = size.history_start + timedelta(seconds=span * (order_id - 1) // size.orders + rng.randint(0, 59))
        latest_customer = max(1, min(buying_customers, buying_customers * (order_id) // size.orders + 50))
        order = factory.order(order_id, rng.randint(1, latest_customer), ordered_at, prices, next_item_id)
        next_item_id += len(order.items)
        orders.append(order.row)
        items.extend(order.items)
        charges.extend(factory.charges_for(order, order.row[2], ordered_at))
    for number in range(max(3, size.orders // 200)):
        charges.append(factory.orphan_charge(number, int(size.history_start.timestamp()) + rng.randint(0, span)))
    copy_rows(conn, "orders", orders)
    copy_rows(conn, "order_items", items)
    store.insert(charges)


def _marketing_files(landing_dir: Path, rng: random.Random, size: Scale) -> None:
    first_day = (HISTORY_END - timedelta(days=size.spend_days)).date()
    for offset in range(size.spend_days):
        bad_line = offset // 3 if offset % 3 == 1 else None  # a bad line in every third file
        marketing.write_day(landing_dir, rng, first_day + timedelta(days=offset), size.campaigns_per_channel, bad_line)


# ---------------------------------------------------------------------------------- changes
@dataclass(frozen=True)
class ChangeSummary:
    """What ``apply_changes`` did, so tests can check that exactly this reaches the warehouse."""

    new_customers: int
    new_orders: int
    new_items: int
    status_changes: int
    new_charges: int
    late_refunds: int
    files_written: tuple[str, ...]
    now: datetime


STATUS_MOVES = {"placed": ("shipped", "cancelled"), "shipped": ("completed",), "completed": ("returned",)}


def apply_changes(
    days: int, source_dsn: str, charges_db: Path, landing_dir: Path | None = None, seed: int = 7
) -> ChangeSummary:
    """Play ``days`` days of business on the shop, each after the latest change already in it."""
    totals = {
        "new_customers": 0,
        "new_orders": 0,
        "new_items": 0,
        "status_changes": 0,
        "new_charges": 0,
        "late_refunds": 0,
    }
    files: list[str] = []
    store = ChargeStore(Path(charges_db))
    now = HISTORY_END
    with psycopg.connect(source_dsn) as conn:
        for _ in range(days):
            now, day_totals, day_files = _one_day(conn, store, landing_dir, seed)
            conn.commit()
            for key, value in day_totals.items():
                totals[key] += value
            files.extend(day_files)
    return ChangeSummary(**totals, files_written=tuple(files), now=now)


def _one_day(
    conn: psycopg.Connection, store: ChargeStore, landing_dir: Path | None, seed: int
) -> tuple[datetime, dict[str, int], list[str]]:
    latest, max_ids = _shop_state(conn)
    day_start = latest.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    rng = random.Random(f"{seed}:{day_start.isoformat()}:{max_ids['orders']}")
    factory = RowFactory(rng)
    prices = [
        cents(str(price)) for (price,) in conn.execute("SELECT unit_price FROM public.products ORDER BY product_id")
    ]
    order_count = max(20, max_ids["orders"] // 365)

    new_customers = [
        factory.customer(max_ids["customers"] + n + 1, day_start + timedelta(seconds=n * 60))
        for n in range(max(2, order_count // 5))
    ]
    orders, items, charges = [], [], []
    next_item_id = max_ids["order_items"] + 1
    customer_limit = max_ids["customers"] + len(new_customers)
    for n in range(order_count):
        ordered_at = day_start + timedelta(seconds=3_600 + n * (20 * 3_600 // order_count))
        order = factory.order(
            max_ids["orders"] + n + 1, rng.randint(1, customer_limit), ordered_at, prices, next_item_id
        )
        next_item_id += len(order.items)
        orders.append(order.row)
        items.extend(order.items)
        charges.extend(factory.charges_for(order, order.row[2], ordered_at))
    copy_rows(conn, "customers", new_customers)
    copy_rows(conn, "orders", orders)
    copy_rows(conn, "order_items", items)
    store.insert(charges)

    moved = _move_statuses(conn, rng, day_start, order_count, max_ids["orders"])
    refunds = _late_refunds(store, rng, day_start, order_count)
    files = _day_files(landing_dir, rng, day_start) if landing_dir is not None else []
    totals = {
        "new_customers": len(new_customers),
        "new_orders": len(orders),
        "new_items": len(items),
        "status_changes": moved,
        "new_charges": len(charges),
        "late_refunds": refunds,
    }
    return day_start + timedelta(hours=23), totals, files


def _shop_state(conn: psycopg.Connection) -> tuple[datetime, dict[str, int]]:
    latest = conn.execute(
        "SELECT greatest((SELECT max(updated_at) FROM public.orders), (SELECT max(updated_at) FROM public.customers))"
    ).fetchone()[0]
    max_ids = {
        table: int(conn.execute(f"SELECT coalesce(max({key}), 0) FROM public.{table}").fetchone()[0])
        for table, key in (("customers", "customer_id"), ("orders", "order_id"), ("order_items", "order_item_id"))
    }
    return max(latest.astimezone(UTC), HISTORY_END), max_ids


def _move_statuses(
    conn: psycopg.Connection, rng: random.Random, day_start: datetime, count: int, last_old_order: int
) -> int:
    """Move recent earlier orders along (placed → shipped/cancelled → completed → returned), bumping updated_at."""
    candidates = conn.execute(
        "SELECT order_id, status FROM public.orders"
        " WHERE status = ANY(%s) AND ordered_at >= %s AND order_id <= %s ORDER BY order_id",
        (list(STATUS_MOVES), day_start - timedelta(days=20), last_old_order),
    ).fetchall()
    chosen = rng.sample(candidates, min(len(candidates), count // 2))
    for number, (order_id, status) in enumerate(sorted(chosen)):
        new_status = rng.choice(STATUS_MOVES[status])
        conn.execute(
            "UPDATE public.orders SET status = %s, updated_at = %s WHERE order_id = %s",
            (new_status, day_start + timedelta(seconds=600 + number), order_id),
        )
    return len(chosen)


def _late_refunds(store: ChargeStore, rng: random.Random, day_start: datetime, count: int) -> int:
    """Refund a few paid charges created within the last 30 days (Stripe's refund window here)."""
    window_start = int((day_start - timedelta(days=30)).timestamp())
    recent = [
        c
        for c in store.created_since(window_start)
        if c["status"] == "succeeded" and c["amount_refunded"] < c["amount"]
    ]
    chosen = rng.sample(recent, min(len(recent), max(1, count // 20)))
    refunded_at = int((day_start + timedelta(hours=12)).timestamp())  # the day's clock, for the refund events
    store.replace(
        (refund(charge, charge["amount_refunded"] + max(1, charge["amount"] // 3)) for charge in chosen), at=refunded_at
    )
    return len(chosen)


def _day_files(landing_dir: Path, rng: random.Random, day_start: datetime) -> list[str]:
    """A corrected re-delivery of the latest spend file, then the new day's file."""
    latest = marketing.latest_file(landing_dir)
    written = []
    if latest is not None:
        written.append(marketing.redeliver(rng, latest).name)
    campaigns = marketing.campaigns_per_channel(latest) if latest is not None else 2
    written.append(marketing.write_day(landing_dir, rng, day_start.date(), campaigns, bad_line=None).name)
    return written
