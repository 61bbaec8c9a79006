"""The data contract's marts computed in plain Python over the `raw` tables — an independent oracle.

Written from docs/contract.md alone (no SQL, nothing shared with the dbt project), so the
dbt marts can be compared with it row for row, cents exact. Money is ``Decimal``; dates are UTC.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")
ROAS_PLACES = Decimal("0.000001")

MART_COLUMNS: dict[str, list[str]] = {
    "fct_orders": [
        "order_id",
        "customer_id",
        "ordered_at",
        "order_date",
        "status",
        "channel",
        "item_count",
        "gross_amount",
        "discount_amount",
        "net_amount",
        "amount_paid",
        "is_fully_paid",
    ],
    "dim_customers": [
        "customer_id",
        "email",
        "country_code",
        "first_ordered_at",
        "last_ordered_at",
        "order_count",
        "lifetime_value",
    ],
    "fct_daily_revenue": ["order_date", "order_count", "gross_amount", "discount_amount", "net_amount", "amount_paid"],
    "fct_marketing_performance": [
        "spend_date",
        "channel",
        "spend",
        "impressions",
        "clicks",
        "attributed_orders",
        "attributed_revenue",
        "roas",
    ],
}
MART_KEYS = {
    "fct_orders": ["order_id"],
    "dim_customers": ["customer_id"],
    "fct_daily_revenue": ["order_date"],
    "fct_marketing_performance": ["spend_date", "channel"],
}


@dataclass(frozen=True)
class Raw:
    """Rows of the raw tables as dicts (payload parsed to a dict)."""

    tables: dict[str, list[dict[str, Any]]]


def read_marts_postgres(dsn: str) -> dict[str, list[tuple]]:
    """The dbt marts as built, in the oracle's column order and key order."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        return {
            mart: conn.execute(
                f"SELECT {', '.join(columns)} FROM marts.{mart} ORDER BY {', '.join(MART_KEYS[mart])}"
            ).fetchall()
            for mart, columns in MART_COLUMNS.items()
        }


def read_marts_snowflake(conn_id: str = "warehouse_snowflake") -> dict[str, list[tuple]]:
    """The marts as fakesnow holds them. Its server sends a NULL timestamp as the epoch (the value
    ``IS NULL`` there, but arrives as 1970-01-01), so each column comes with its ``IS NULL`` flag."""
    from include.ingestion.warehouse.snowflake import ProtocolAwareSnowflakeHook

    conn = ProtocolAwareSnowflakeHook(snowflake_conn_id=conn_id).get_conn()
    try:
        cursor = conn.cursor()
        marts = {}
        for mart, columns in MART_COLUMNS.items():
            selected = ", ".join(f"{column}, {column} IS NULL" for column in columns)
            cursor.execute(f"SELECT {selected} FROM marts.{mart} ORDER BY {', '.join(MART_KEYS[mart])}")
            marts[mart] = [
                tuple(
                    None if is_null else _comparable(value) for value, is_null in zip(row[::2], row[1::2], strict=True)
                )
                for row in cursor.fetchall()
            ]
        return marts
    finally:
        conn.close()


def _comparable(value: object) -> object:
    """Snowflake NUMBER(p,0) comes back as int where Postgres gives Decimal; compare values."""
    return Decimal(value) if isinstance(value, int) and not isinstance(value, bool) else value


def comparable_marts(marts: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """Postgres marts in the form :func:`read_marts_snowflake` returns."""
    return {mart: [tuple(_comparable(v) for v in row) for row in rows] for mart, rows in marts.items()}


def read_raw_postgres(dsn: str) -> Raw:
    import psycopg
    from psycopg.rows import dict_row

    tables = {}
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        for table in ("customers", "orders", "order_items", "stripe_charges", "marketing_spend"):
            tables[table] = conn.execute(f"SELECT * FROM raw.{table}").fetchall()
    for charge in tables["stripe_charges"]:
        if isinstance(charge["payload"], str):
            charge["payload"] = json.loads(charge["payload"])
    return Raw(tables)


def paid(charge: dict[str, Any]) -> Decimal:
    """paid(charge) = (amount − amount_refunded) in major units when status = 'succeeded', else 0:
    / 100, or / 1 for Stripe's zero-decimal currencies (JPY, KRW, ...), / 1000 for three-decimal ones."""
    if charge["status"] != "succeeded":
        return Decimal(0)
    return (Decimal(charge["amount"]) - Decimal(charge["amount_refunded"])) / minor_units_per_major(charge["currency"])


ZERO_DECIMAL = frozenset(
    ("bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf")
)
THREE_DECIMAL = frozenset(("bhd", "jod", "kwd", "omr", "tnd"))


def minor_units_per_major(currency: str) -> int:
    """Stripe's list: ``amount`` of a JPY charge is yen, of a USD charge cents, of a KWD charge fils."""
    currency = currency.lower()
    return 1 if currency in ZERO_DECIMAL else 1000 if currency in THREE_DECIMAL else 100


def expected_marts(raw: Raw) -> dict[str, list[tuple]]:  # noqa: C901 - the contract's four marts, each written out as the contract says
    """Every mart as a list of tuples in MART_COLUMNS order, sorted by its key."""
    orders = {row["order_id"]: row for row in raw.tables["orders"]}

    amount_paid: dict[int, Decimal] = defaultdict(Decimal)
    for row in raw.tables["stripe_charges"]:
        charge = row["payload"]
        order_ref = (charge.get("metadata") or {}).get("order_id")
        if order_ref is not None and str(order_ref).isdigit() and int(order_ref) in orders:
            amount_paid[int(order_ref)] += paid(charge)

    lines: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line in raw.tables["order_items"]:
        lines[line["order_id"]].append(line)

    fct_orders = []
    for order_id, order in orders.items():
        items = lines.get(order_id, [])
        gross = sum((Decimal(i["quantity"]) * i["unit_price"] for i in items), Decimal(0))
        discount = sum((i["discount_amount"] for i in items), Decimal(0))
        net = gross - discount
        paid_total = amount_paid.get(order_id, Decimal(0))
        fct_orders.append(
            (
                order_id,
                order["customer_id"],
                order["ordered_at"],
                order["ordered_at"].astimezone(UTC).date(),
                order["status"],
                order["channel"],
                sum(i["quantity"] for i in items),
                _money(gross),
                _money(discount),
                _money(net),
                _money(paid_total),
                paid_total >= net,
            )
        )
    counted = [o for o in fct_orders if o[4] != "cancelled"]

    per_customer: dict[int, list[tuple]] = defaultdict(list)
    for order in counted:
        per_customer[order[1]].append(order)
    dim_customers = []
    for customer in raw.tables["customers"]:
        mine = per_customer.get(customer["customer_id"], [])
        dim_customers.append(
            (
                customer["customer_id"],
                customer["email"],
                (customer["country_code"] or None) and customer["country_code"].strip(),
                min((o[2] for o in mine), default=None),
                max((o[2] for o in mine), default=None),
                len(mine),
                _money(sum((o[10] for o in mine), Decimal(0))),
            )
        )

    per_date: dict[Any, list[tuple]] = defaultdict(list)
    for order in counted:
        per_date[order[3]].append(order)
    daily = [
        (day, len(rows), *(_money(sum((o[i] for o in rows), Decimal(0))) for i in (7, 8, 9, 10)))
        for day, rows in per_date.items()
    ]

    spend: dict[tuple, list[Decimal | int]] = {}
    for row in raw.tables["marketing_spend"]:
        totals = spend.setdefault((row["date"], row["channel"]), [Decimal(0), 0, 0])
        totals[0] += row["spend"]
        totals[1] += row["impressions"]
        totals[2] += row["clicks"]
    attributed: dict[tuple, list[tuple]] = defaultdict(list)
    for order in counted:
        attributed[(order[3], order[5])].append(order)
    marketing = []
    for (day, channel), (spent, impressions, clicks) in spend.items():
        matched = attributed.get((day, channel), [])
        revenue = _money(sum((o[10] for o in matched), Decimal(0)))
        roas = None if spent == 0 else (revenue / spent).quantize(ROAS_PLACES, rounding=ROUND_HALF_UP)
        marketing.append((day, channel, _money(spent), impressions, clicks, len(matched), revenue, roas))

    return {
        "fct_orders": sorted(fct_orders),
        "dim_customers": sorted(dim_customers),
        "fct_daily_revenue": sorted(daily),
        "fct_marketing_performance": sorted(marketing),
    }


def _money(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)
