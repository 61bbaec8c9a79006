"""The shop's OLTP schema exactly as docs/contract.md fixes it, and bulk loading into it."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

DDL = """
CREATE TABLE public.customers (
    customer_id bigint PRIMARY KEY,
    email text NOT NULL,
    first_name text,
    last_name text,
    country_code char(2),
    created_at timestamptz,
    updated_at timestamptz
);
CREATE TABLE public.products (
    product_id bigint PRIMARY KEY,
    sku text UNIQUE NOT NULL,
    name text NOT NULL,
    category text NOT NULL,
    unit_price numeric(12,2) NOT NULL,
    is_active boolean NOT NULL,
    created_at timestamptz,
    updated_at timestamptz
);
CREATE TABLE public.orders (
    order_id bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers,
    status text NOT NULL,   -- placed | shipped | completed | returned | cancelled
    channel text NOT NULL,  -- organic | paid_search | social | email | affiliate
    currency char(3) NOT NULL DEFAULT 'USD',
    ordered_at timestamptz NOT NULL,
    created_at timestamptz,
    updated_at timestamptz
);
CREATE TABLE public.order_items (
    order_item_id bigint PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES public.orders,
    product_id bigint NOT NULL REFERENCES public.products,
    quantity int NOT NULL CHECK (quantity > 0),
    unit_price numeric(12,2) NOT NULL,
    discount_amount numeric(12,2) NOT NULL DEFAULT 0,
    created_at timestamptz,
    updated_at timestamptz
);
-- incremental extraction reads "updated_at > high-water mark": an OLTP shop would index it too
CREATE INDEX customers_updated_at ON public.customers (updated_at);
CREATE INDEX products_updated_at ON public.products (updated_at);
CREATE INDEX orders_updated_at ON public.orders (updated_at);
CREATE INDEX order_items_updated_at ON public.order_items (updated_at);
CREATE INDEX order_items_order_id ON public.order_items (order_id);
"""

COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id", "email", "first_name", "last_name", "country_code", "created_at", "updated_at"),
    "products": ("product_id", "sku", "name", "category", "unit_price", "is_active", "created_at", "updated_at"),
    "orders": ("order_id", "customer_id", "status", "channel", "currency", "ordered_at", "created_at", "updated_at"),
    "order_items": (
        "order_item_id",
        "order_id",
        "product_id",
        "quantity",
        "unit_price",
        "discount_amount",
        "created_at",
        "updated_at",
    ),
}


class SourceNotEmpty(RuntimeError):
    """The source database already holds shop tables; generating again would mix two shops."""


def create_schema(conn: psycopg.Connection) -> None:
    existing = conn.execute(
        "SELECT string_agg(table_name, ', ') FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_name = ANY(%s)",
        (list(COLUMNS),),
    ).fetchone()[0]
    if existing:
        raise SourceNotEmpty(
            f"the source database already has {existing}: generate into an empty database "
            "(the local stack seeds only once; `make clean-local` starts over)."
        )
    conn.execute(DDL)


def copy_rows(conn: psycopg.Connection, table: str, rows: Iterable[tuple]) -> None:
    columns = ", ".join(COLUMNS[table])
    with conn.cursor().copy(f"COPY public.{table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
