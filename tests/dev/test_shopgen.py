"""The synthetic shop: the contract's schema, referential integrity, determinism, the special cases,
and days of changes that incremental loads must pick up."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from dev import shopgen
from dev.charge_store import ChargeStore
from dev.shopgen.rows import ORPHAN_ORDER_OFFSET
from dev.shopgen.source_db import COLUMNS, SourceNotEmpty

CONTRACT_TYPES = {
    ("customers", "customer_id"): "bigint",
    ("customers", "email"): "text",
    ("customers", "country_code"): "character",
    ("products", "sku"): "text",
    ("products", "unit_price"): "numeric",
    ("products", "is_active"): "boolean",
    ("orders", "currency"): "character",
    ("orders", "ordered_at"): "timestamp with time zone",
    ("order_items", "quantity"): "integer",
    ("order_items", "discount_amount"): "numeric",
}


class Shop:
    def __init__(self, dsn: str, root: Path) -> None:
        self.dsn, self.charges_db, self.landing = dsn, root / "charges.sqlite", root / "landing"

    def generate(self, seed: int = 42) -> Shop:
        shopgen.generate(
            scale="small", seed=seed, source_dsn=self.dsn, charges_db=self.charges_db, landing_dir=self.landing
        )
        return self

    def query(self, sql: str) -> list[tuple]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql).fetchall()

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for table, columns in COLUMNS.items():
            for row in self.query(f"SELECT {', '.join(columns)} FROM public.{table} ORDER BY 1"):
                digest.update(repr(row).encode())
        for charge in ChargeStore(self.charges_db).all():
            digest.update(repr(sorted(charge.items())).encode())
        for path in sorted(self.landing.iterdir()):
            digest.update(path.name.encode() + path.read_bytes())
        return digest.hexdigest()


@pytest.fixture
def make_shop(new_database: Callable[[str], str], tmp_path: Path) -> Callable[[str], Shop]:
    def make(name: str) -> Shop:
        return Shop(new_database("shop"), tmp_path / name)

    return make


@pytest.fixture
def shop(make_shop: Callable[[str], Shop]) -> Shop:
    return make_shop("a").generate()


def test_tables_have_exactly_the_contract_columns_and_types(shop: Shop) -> None:
    rows = shop.query(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    )
    found: dict[str, list[str]] = {}
    for table, column, _ in rows:
        found.setdefault(table, []).append(column)
    assert found == {table: list(columns) for table, columns in COLUMNS.items()}
    types = {(table, column): data_type for table, column, data_type in rows}
    assert {key: types[key] for key in CONTRACT_TYPES} == CONTRACT_TYPES


def test_foreign_keys_hold_and_sizes_are_the_small_scale(shop: Shop) -> None:
    counts = dict(
        shop.query(
            "SELECT 'customers', count(*) FROM customers UNION ALL SELECT 'orders', count(*) FROM orders "
            "UNION ALL SELECT 'products', count(*) FROM products"
        )
    )
    assert counts == {"customers": 400, "orders": 2000, "products": 60}
    orphans = shop.query(
        "SELECT (SELECT count(*) FROM orders o LEFT JOIN customers c USING (customer_id) WHERE c.customer_id IS NULL),"
        " (SELECT count(*) FROM order_items i LEFT JOIN orders o USING (order_id) WHERE o.order_id IS NULL),"
        " (SELECT count(*) FROM order_items i LEFT JOIN products p USING (product_id) WHERE p.product_id IS NULL)"
    )[0]
    assert orphans == (0, 0, 0)
    assert shop.query("SELECT count(*) FROM orders WHERE updated_at < created_at")[0][0] == 0


def test_the_same_seed_gives_the_same_shop_and_another_seed_another(
    make_shop: Callable[[str], Shop], shop: Shop
) -> None:
    assert make_shop("b").generate(seed=42).fingerprint() == shop.fingerprint()
    assert make_shop("c").generate(seed=43).fingerprint() != shop.fingerprint()


def test_the_data_covers_every_case_the_marts_must_handle(shop: Shop) -> None:
    statuses = {row[0] for row in shop.query("SELECT DISTINCT status FROM orders")}
    assert statuses == {"placed", "shipped", "completed", "returned", "cancelled"}
    assert (
        shop.query(
            "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.order_id)"
        )[0][0]
        > 0
    )
    assert (
        shop.query(
            "SELECT count(*) FROM customers c WHERE NOT EXISTS "
            "(SELECT 1 FROM orders o WHERE o.customer_id = c.customer_id)"
        )[0][0]
        > 0
    )
    charges = ChargeStore(shop.charges_db).all()
    assert {c["status"] for c in charges} == {"succeeded", "failed", "pending"}
    assert any(c["refunded"] for c in charges), "a fully refunded charge"
    assert any(0 < c["amount_refunded"] < c["amount"] for c in charges), "a partial refund"
    assert any(int(c["metadata"]["order_id"]) >= ORPHAN_ORDER_OFFSET for c in charges), "a charge of no order"
    paid_orders = {int(c["metadata"]["order_id"]) for c in charges}
    assert shop.query("SELECT count(*) FROM orders")[0][0] > len(paid_orders & set(range(1, 2001))), "unpaid orders"
    assert len({c["id"] for c in charges}) == len(charges)


def test_marketing_files_have_bad_lines_and_zero_spend(shop: Shop) -> None:
    files = sorted(shop.landing.glob("marketing_spend_*.csv"))
    assert len(files) == 14
    text = "".join(path.read_text() for path in files)
    assert text.count("date,channel,campaign_id,campaign_name,spend,impressions,clicks") == 14
    assert ",tv," in text and ",-4\n" in text and ",0.00," in text


def test_source_not_empty_is_refused(shop: Shop) -> None:
    with pytest.raises(SourceNotEmpty, match="already has"):
        shop.generate()


def test_a_day_of_changes_bumps_updated_at_refunds_late_and_redelivers_a_file(shop: Shop) -> None:
    before_mark = shop.query("SELECT max(updated_at) FROM orders")[0][0]
    charges_before = {c["id"]: c for c in ChargeStore(shop.charges_db).all()}
    files_before = {path.name: path.read_bytes() for path in shop.landing.iterdir()}

    summary = shopgen.apply_changes(1, source_dsn=shop.dsn, charges_db=shop.charges_db, landing_dir=shop.landing)

    assert summary.new_orders > 0 and summary.status_changes > 0 and summary.late_refunds > 0
    changed = shop.query(f"SELECT count(*) FROM orders WHERE updated_at > '{before_mark.isoformat()}'")[0][0]
    assert changed == summary.new_orders + summary.status_changes
    after = {c["id"]: c for c in ChargeStore(shop.charges_db).all()}
    assert len(after) == len(charges_before) + summary.new_charges
    refunded = [c for cid, c in charges_before.items() if after[cid] != c]
    assert len(refunded) == summary.late_refunds
    for old in refunded:
        new = after[old["id"]]
        assert new["amount_refunded"] > old["amount_refunded"]
        assert {k: v for k, v in new.items() if k not in ("amount_refunded", "refunded")} == {
            k: v for k, v in old.items() if k not in ("amount_refunded", "refunded")
        }
        assert summary.now.timestamp() - old["created"] <= timedelta(days=31).total_seconds()
    events = ChargeStore(shop.charges_db).events()  # the stub serves them on /v1/events
    assert sorted(e["data"]["object"]["id"] for e in events) == sorted(c["id"] for c in refunded)
    assert {e["type"] for e in events} == {"charge.refunded"}
    assert all(e["data"]["object"] == after[e["data"]["object"]["id"]] for e in events)
    redelivered, new_file = summary.files_written
    assert files_before[redelivered] != (shop.landing / redelivered).read_bytes()
    assert new_file not in files_before
