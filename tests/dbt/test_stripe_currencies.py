"""A shop that takes yen: Stripe's ``amount`` of a JPY charge is whole yen (a zero-decimal
currency), so raw keeps it as delivered and staging turns it into major units by currency —
on Postgres and on Snowflake (fakesnow), from the Stripe stub through the real extraction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from dev.charge_store import ChargeStore
from dev.stripe_stub import StripeStub
from include.ingestion.pipeline import extract
from include.ingestion.warehouse.snowflake import ProtocolAwareSnowflakeHook
from include.orchestration.dbt_cli import run_dbt
from tests.dbt.conftest import PASSWORDS, snowflake_connection_env

STRIPE_KEY = "sk_test_currencies_5e1b"
CHARGES = [  # (id, currency, amount, amount_refunded) as Stripe sends them; expected major units
    ("ch_jpy", "jpy", 12_500, 2_500, Decimal("12500.00"), Decimal("2500.00")),
    ("ch_krw", "krw", 990, 0, Decimal("990.00"), Decimal("0.00")),
    ("ch_usd", "usd", 12_500, 2_500, Decimal("125.00"), Decimal("25.00")),
    ("ch_kwd", "kwd", 12_340, 0, Decimal("12.34"), Decimal("0.00")),
]


def charge(charge_id: str, currency: str, amount: int, refunded: int, created: int) -> dict:
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_refunded": refunded,
        "currency": currency,
        "status": "succeeded",
        "paid": True,
        "refunded": False,
        "created": created,
        "customer": "cus_1",
        "metadata": {"order_id": "1"},
        "payment_method_details": {"type": "card"},
    }


@pytest.fixture
def env(
    warehouse_postgres: Callable[[str, str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The stub serving the four charges and a Postgres warehouse of its own; yields its DSN."""
    store = ChargeStore(tmp_path / "charges.sqlite")
    store.insert(charge(*spec[:4], 1_790_000_000 + n) for n, spec in enumerate(CHARGES))
    stub = StripeStub(store.path, STRIPE_KEY)
    url = stub.serve_in_thread()
    warehouse_dsn = warehouse_postgres("currencies", PASSWORDS["warehouse"])
    stripe_api = {"conn_type": "http", "host": url, "password": STRIPE_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_STRIPE_API", json.dumps(stripe_api))
    yield warehouse_dsn
    stub.shutdown()


def expected() -> dict[str, tuple]:
    return {c[0]: (c[1], c[4], c[5]) for c in CHARGES}


STAGING = "SELECT charge_id, currency, amount, amount_refunded FROM staging.stg_stripe_charges"


def test_a_zero_decimal_charge_keeps_its_amount_in_raw_and_is_whole_yen_in_staging_on_postgres(
    env: str, tmp_path: Path
) -> None:
    extract("stripe_charges")
    run_dbt(["run", "--select", "stg_stripe_charges"], warehouse="postgres", target_path=tmp_path / "target")

    with psycopg.connect(env) as conn:
        payloads = conn.execute("SELECT id, payload FROM raw.stripe_charges").fetchall()
        raw = {r[0]: (r[1]["amount"], r[1]["amount_refunded"]) for r in payloads}
        staged = {r[0]: tuple(r[1:]) for r in conn.execute(STAGING)}
    assert raw == {c[0]: (c[2], c[3]) for c in CHARGES}
    assert staged == expected()


@pytest.mark.slow  # the fakesnow server and a dbt run on it
def test_a_zero_decimal_charge_is_whole_yen_in_staging_on_snowflake(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakesnow_server: int
) -> None:
    snowflake = snowflake_connection_env(
        f"analytics_{uuid.uuid4().hex[:6]}", host="127.0.0.1", port=fakesnow_server, protocol="http"
    )
    for key, value in snowflake.items():
        monkeypatch.setenv(key, value)
    extract("stripe_charges", warehouse="snowflake")
    run_dbt(["run", "--select", "stg_stripe_charges"], warehouse="snowflake", target_path=tmp_path / "target")

    conn = ProtocolAwareSnowflakeHook(snowflake_conn_id="warehouse_snowflake").get_conn()
    try:
        cursor = conn.cursor()
        cursor.execute(STAGING)
        staged = {r[0]: (r[1], Decimal(r[2]), Decimal(r[3])) for r in cursor.fetchall()}
    finally:
        conn.close()
    assert staged == expected()
