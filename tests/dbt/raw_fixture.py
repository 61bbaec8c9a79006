"""A small, deterministic `raw` layer for the dbt tests — TO BE REPLACED by ``include.ingestion``.

Why it exists: the dbt project is built in parallel with the extract-load layer, and its tests need
`raw` tables exactly as docs/raw-layer.md fixes them (names, columns, types, load columns) on both
warehouses. Once ``include.ingestion`` lands, the tests load `raw` with it from the synthetic shop
(``dev.shopgen``) instead, and this module goes away. It is deliberately dumb: it writes
whole tables (truncate + insert) from Python rows that carry their own ``_loaded_at``, so a test
can change a row and give it a newer load time, exactly what an incremental extraction does.

The data includes every case the contract defines: refunds (partial, full, late), failed and
pending charges, charges whose ``metadata.order_id`` matches no order or is not a number,
cancelled orders, orders without lines, customers without counted orders, zero spend, and
orders near midnight UTC (``order_date`` must be the UTC date).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

STATUSES = ("placed", "shipped", "completed", "returned", "cancelled")
CHANNELS = ("organic", "paid_search", "social", "email", "affiliate")
CATEGORIES = ("apparel", "home", "outdoor", "toys")
UTC = UTC
EPOCH_START = datetime(2026, 1, 1, tzinfo=UTC)

SCALES = {"tiny": 40, "small": 300, "medium": 3000}  # customers; orders ≈ 4× customers

# (table, [(column, postgres type, snowflake type)]) in docs/raw-layer.md's order
LOAD_COLUMNS = [("_loaded_at", "timestamptz", "timestamp_tz"), ("_batch_id", "text", "varchar")]
TABLES: dict[str, list[tuple[str, str, str]]] = {
    "customers": [
        ("customer_id", "bigint", "bigint"),
        ("email", "text", "varchar"),
        ("first_name", "text", "varchar"),
        ("last_name", "text", "varchar"),
        ("country_code", "char(2)", "varchar(2)"),
        ("created_at", "timestamptz", "timestamp_tz"),
        ("updated_at", "timestamptz", "timestamp_tz"),
    ],
    "products": [
        ("product_id", "bigint", "bigint"),
        ("sku", "text", "varchar"),
        ("name", "text", "varchar"),
        ("category", "text", "varchar"),
        ("unit_price", "numeric(12,2)", "number(12,2)"),
        ("is_active", "boolean", "boolean"),
        ("created_at", "timestamptz", "timestamp_tz"),
        ("updated_at", "timestamptz", "timestamp_tz"),
    ],
    "orders": [
        ("order_id", "bigint", "bigint"),
        ("customer_id", "bigint", "bigint"),
        ("status", "text", "varchar"),
        ("channel", "text", "varchar"),
        ("currency", "char(3)", "varchar(3)"),
        ("ordered_at", "timestamptz", "timestamp_tz"),
        ("created_at", "timestamptz", "timestamp_tz"),
        ("updated_at", "timestamptz", "timestamp_tz"),
    ],
    "order_items": [
        ("order_item_id", "bigint", "bigint"),
        ("order_id", "bigint", "bigint"),
        ("product_id", "bigint", "bigint"),
        ("quantity", "integer", "integer"),
        ("unit_price", "numeric(12,2)", "number(12,2)"),
        ("discount_amount", "numeric(12,2)", "number(12,2)"),
        ("created_at", "timestamptz", "timestamp_tz"),
        ("updated_at", "timestamptz", "timestamp_tz"),
    ],
    "stripe_charges": [("id", "text", "varchar"), ("created", "bigint", "bigint"), ("payload", "jsonb", "variant")],
    "marketing_spend": [
        ("date", "date", "date"),
        ("channel", "text", "varchar"),
        ("campaign_id", "text", "varchar"),
        ("campaign_name", "text", "varchar"),
        ("spend", "numeric(14,2)", "number(14,2)"),
        ("impressions", "bigint", "bigint"),
        ("clicks", "bigint", "bigint"),
        ("_source_file", "text", "varchar"),
        ("_source_line", "integer", "integer"),
    ],
    "marketing_spend_rejects": [
        ("_source_file", "text", "varchar"),
        ("_source_line", "integer", "integer"),
        ("raw_line", "text", "varchar"),
        ("reason", "text", "varchar"),
    ],
}


def columns(table: str) -> list[str]:
    return [name for name, _, _ in TABLES[table] + LOAD_COLUMNS]


@dataclass
class RawData:
    """Rows of every raw table as dicts (``payload`` as a Python dict), load columns included."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {name: [] for name in TABLES})

    def rows(self, table: str) -> list[dict[str, Any]]:
        return self.tables[table]


def synthesize(scale: str = "small", seed: int = 7) -> RawData:  # noqa: C901 - one branch per hostile row kind
    rng = random.Random(seed)
    n_customers = SCALES[scale]
    loaded_at = EPOCH_START + timedelta(days=60)
    load = {"_loaded_at": loaded_at, "_batch_id": "fixture-1"}
    data = RawData()

    for pid in range(1, 21):
        created = EPOCH_START + timedelta(hours=pid)
        data.rows("products").append(
            {
                "product_id": pid,
                "sku": f"SKU-{pid:04d}",
                "name": f"Product {pid}",
                "category": CATEGORIES[pid % len(CATEGORIES)],
                "unit_price": Decimal(rng.randint(199, 19999)) / 100,
                "is_active": pid % 7 != 0,
                "created_at": created,
                "updated_at": created,
                **load,
            }
        )
    prices = {p["product_id"]: p["unit_price"] for p in data.rows("products")}

    order_id = item_id = charge_no = 0
    for cid in range(1, n_customers + 1):
        created = EPOCH_START + timedelta(minutes=37 * cid)
        data.rows("customers").append(
            {
                "customer_id": cid,
                "email": f"customer{cid}@example.com",
                "first_name": f"First{cid}",
                "last_name": f"Last{cid}",
                "country_code": rng.choice(["US", "DE", "FR", "GB", "NL"]),
                "created_at": created,
                "updated_at": created,
                **load,
            }
        )
        for _ in range(rng.choice([0, 1, 2, 3, 4, 5, 6, 9])):  # some customers never order
            order_id += 1
            # minutes close to midnight UTC on purpose: order_date must be the UTC date
            ordered_at = EPOCH_START + timedelta(days=rng.randint(0, 45), minutes=rng.choice([5, 300, 1430, 1439]))
            status = rng.choices(STATUSES, weights=[2, 2, 6, 1, 1])[0]
            data.rows("orders").append(
                {
                    "order_id": order_id,
                    "customer_id": cid,
                    "status": status,
                    "channel": rng.choice(CHANNELS),
                    "currency": "USD",
                    "ordered_at": ordered_at,
                    "created_at": ordered_at,
                    "updated_at": ordered_at,
                    **load,
                }
            )
            net_cents = 0
            for _ in range(rng.choice([0, 1, 1, 2, 3])):  # some orders have no lines
                item_id += 1
                pid = rng.randint(1, 20)
                quantity = rng.randint(1, 4)
                discount = Decimal(rng.choice([0, 0, 0, 150, 500])) / 100
                data.rows("order_items").append(
                    {
                        "order_item_id": item_id,
                        "order_id": order_id,
                        "product_id": pid,
                        "quantity": quantity,
                        "unit_price": prices[pid],
                        "discount_amount": discount,
                        "created_at": ordered_at,
                        "updated_at": ordered_at,
                        **load,
                    }
                )
                net_cents += int(quantity * prices[pid] * 100 - discount * 100)
            for kind in rng.choices(["ok", "ok", "ok", "partial", "full", "failed", "pending", "none"], k=1):
                if kind == "none" or net_cents <= 0:
                    continue
                if kind == "failed":  # a failed attempt, then a successful one
                    charge_no += 1
                    data.rows("stripe_charges").append(
                        _charge(charge_no, order_id, cid, ordered_at, net_cents, 0, "failed", load)
                    )
                    kind = "ok"
                refunded = {"partial": net_cents // 3, "full": net_cents}.get(kind, 0)
                status = "pending" if kind == "pending" else "succeeded"
                charge_no += 1
                data.rows("stripe_charges").append(
                    _charge(charge_no, order_id, cid, ordered_at, net_cents, refunded, status, load)
                )

    # charges that pay no known order: kept in raw and staging, counted in no mart
    for metadata_order_id in (str(order_id + 1000), "not-a-number", None):
        charge_no += 1
        orphan = _charge(charge_no, None, 1, EPOCH_START, 4200, 0, "succeeded", load)
        orphan["payload"]["metadata"] = {} if metadata_order_id is None else {"order_id": metadata_order_id}
        data.rows("stripe_charges").append(orphan)

    for day in range(0, 46):
        spend_date = (EPOCH_START + timedelta(days=day)).date()
        for channel in CHANNELS:
            if rng.random() < 0.2:
                continue  # not every channel spends every day
            for campaign in range(1, rng.randint(1, 3) + 1):
                spend = Decimal(rng.choice([0, rng.randint(100, 90000)])) / 100
                data.rows("marketing_spend").append(
                    {
                        "date": spend_date,
                        "channel": channel,
                        "campaign_id": f"{channel}-{campaign}",
                        "campaign_name": f"{channel} campaign {campaign}",
                        "spend": spend,
                        "impressions": rng.randint(0, 50000),
                        "clicks": rng.randint(0, 900),
                        "_source_file": f"marketing_spend_{spend_date.isoformat()}.csv",
                        "_source_line": campaign + 1,
                        **load,
                    }
                )
    data.rows("marketing_spend_rejects").append(
        {
            "_source_file": "marketing_spend_2026-01-03.csv",
            "_source_line": 9,
            "raw_line": "2026-01-03,tv,x,TV,-5,1,1",
            "reason": "unknown channel 'tv'; negative spend",
            **load,
        }
    )
    return data


def _charge(
    number: int,
    order_id: int | None,
    customer_id: int,
    at: datetime,
    amount: int,
    refunded: int,
    status: str,
    load: dict[str, Any],
) -> dict[str, Any]:
    created = int(at.timestamp()) + 60
    payload = {
        "id": f"ch_{number:08d}",
        "object": "charge",
        "amount": amount,
        "amount_refunded": refunded,
        "currency": "usd",
        "status": status,
        "paid": status == "succeeded",
        "refunded": refunded >= amount,
        "created": created,
        "customer": f"cus_{customer_id:06d}",
        "metadata": {"order_id": str(order_id)} if order_id is not None else {},
        "payment_method_details": {"type": "card"},
    }
    return {"id": payload["id"], "created": created, "payload": payload, **load}


def apply_one_day_of_changes(data: RawData, seed: int = 11) -> datetime:
    """Late refunds, status changes (incl. cancellations), new lines and a new order, each row
    stamped with a newer ``_loaded_at``, as an incremental extraction would write them."""
    rng = random.Random(seed)
    loaded_at = max(row["_loaded_at"] for rows in data.tables.values() for row in rows) + timedelta(days=1)
    load = {"_loaded_at": loaded_at, "_batch_id": "fixture-2"}
    succeeded = [
        c
        for c in data.rows("stripe_charges")
        if c["payload"]["status"] == "succeeded"
        and c["payload"]["amount_refunded"] == 0
        and c["payload"]["metadata"].get("order_id", "").isdigit()
    ]
    for charge in rng.sample(succeeded, k=max(1, len(succeeded) // 10)):
        charge["payload"]["amount_refunded"] = charge["payload"]["amount"] // 2
        charge.update(load)
    orders = data.rows("orders")
    for order in rng.sample(orders, k=max(1, len(orders) // 10)):
        order["status"] = rng.choice(["returned", "cancelled", "completed"])
        order["updated_at"] = loaded_at
        order.update(load)
    lines = data.rows("order_items")
    for line in rng.sample(lines, k=max(1, len(lines) // 20)):
        line["quantity"] += 1
        line["updated_at"] = loaded_at
        line.update(load)
    new_id = max(o["order_id"] for o in orders) + 1
    orders.append(
        {
            **orders[0],
            "order_id": new_id,
            "status": "placed",
            "ordered_at": loaded_at,
            "created_at": loaded_at,
            "updated_at": loaded_at,
            **load,
        }
    )
    customer = data.rows("customers")[1]
    customer["email"] = "changed@example.com"
    customer.update(load)
    return loaded_at


# ---------------------------------------------------------------- loaders


def load_postgres(dsn: str, data: RawData) -> None:
    """(Re)create the raw tables on a Postgres warehouse and write every row."""
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS raw")
        for table, spec in TABLES.items():
            ddl = ", ".join(
                f"{name} {pg_type}" + (" NOT NULL" if name.startswith("_loaded") or name == "_batch_id" else "")
                for name, pg_type, _ in spec + LOAD_COLUMNS
            )
            conn.execute(f"CREATE TABLE IF NOT EXISTS raw.{table} ({ddl})")
            conn.execute(f"TRUNCATE raw.{table}")
            names = columns(table)
            with conn.cursor().copy(f"COPY raw.{table} ({', '.join(names)}) FROM STDIN") as copy:
                for row in data.rows(table):
                    copy.write_row([Jsonb(row[n]) if n == "payload" else row[n] for n in names])


def load_snowflake(connect_kwargs: dict[str, Any], data: RawData) -> None:
    """The same on Snowflake (or fakesnow), in multi-row INSERTs; ``payload`` through PARSE_JSON."""
    import snowflake.connector

    with snowflake.connector.connect(**connect_kwargs) as conn:
        cursor = conn.cursor()
        cursor.execute("CREATE SCHEMA IF NOT EXISTS raw")
        for table, spec in TABLES.items():
            ddl = ", ".join(f"{name} {sf_type}" for name, _, sf_type in spec + LOAD_COLUMNS)
            cursor.execute(f"CREATE OR REPLACE TABLE raw.{table} ({ddl})")
            names = columns(table)
            types = {name: sf_type for name, _, sf_type in spec + LOAD_COLUMNS}
            rows = data.rows(table)
            for start in range(0, len(rows), 500):
                values = ", ".join(
                    "(" + ", ".join(_sf_literal(row[n], types[n]) for n in names) + ")"
                    for row in rows[start : start + 500]
                )
                select = ", ".join(
                    f"parse_json(column{i + 1})" if types[n] == "variant" else f"column{i + 1}"
                    for i, n in enumerate(names)
                )
                cursor.execute(f"INSERT INTO raw.{table} ({', '.join(names)}) SELECT {select} FROM VALUES {values}")


def _sf_literal(value: Any, sf_type: str) -> str:
    if value is None:
        return "NULL"
    if sf_type == "variant":
        value = json.dumps(value)
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, Decimal)):
        return f"{value}::{sf_type}"
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamp_tz"
    if isinstance(value, date):
        return f"'{value.isoformat()}'::date"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"
