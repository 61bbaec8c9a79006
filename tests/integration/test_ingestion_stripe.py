"""Stripe charges → raw.stripe_charges through the ``stripe_api`` connection, against the Stripe stub.

The stub serves the generator's charge store over Stripe's HTTP API with real fault injection, and
the warehouse is the embedded PostgreSQL: exactness under 429/500s, late refunds within the
re-read window, and a wrong key failing at once with the connection's name.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from include.dev.airflow_settings import ConnectionSpec
from include.dev.charge_store import ChargeStore
from include.dev.embedded_postgres import EmbeddedPostgres
from include.dev.shopgen.rows import refund
from include.dev.stripe_stub import Faults, StripeStub
from include.ingestion.pipeline import extract
from include.ingestion.sources.stripe import StripeAuthError

STRIPE_KEY = "sk_test_ingestion_3c1f9a7e5b"
WAREHOUSE_PASSWORD = "wh-Stripe-Pa55-71d0"
NOW = 1_790_000_000


@dataclass
class Setup:
    stub: StripeStub
    store: ChargeStore
    warehouse_dsn: str


def charge(number: int, created: int, amount_refunded: int = 0) -> dict:
    return {"id": f"ch_{number:08d}", "object": "charge", "amount": 1_000 + number, "amount_refunded": amount_refunded,
            "currency": "usd", "status": "succeeded", "paid": True, "refunded": False, "created": created,
            "customer": "cus_1", "metadata": {"order_id": str(number)}, "payment_method_details": {"type": "card"}}  # fmt: skip


@pytest.fixture
def setup(postgres_server: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    store = ChargeStore(tmp_path / "charges.sqlite")
    # 450 charges over 90 days up to NOW: some well outside the 30-day re-read window
    store.insert(charge(n, NOW - (450 - n) * 17_280) for n in range(450))
    stub = StripeStub(store.path, STRIPE_KEY, seed=1)
    url = stub.serve_in_thread()
    database = f"ing_stripe_{uuid.uuid4().hex[:8]}"
    postgres_server.ensure_role("warehouse", WAREHOUSE_PASSWORD)
    postgres_server.ensure_database(database, owner="warehouse")
    warehouse = ConnectionSpec("warehouse_postgres", "postgres", postgres_server.host, postgres_server.port,
                               database, "warehouse", WAREHOUSE_PASSWORD)  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_POSTGRES", warehouse.to_env_value())
    monkeypatch.setenv("AIRFLOW_CONN_STRIPE_API", json.dumps({"conn_type": "http", "host": url, "password": STRIPE_KEY}))
    yield Setup(stub, store, postgres_server.dsn(database, "warehouse", WAREHOUSE_PASSWORD))
    stub.shutdown()


def raw_charges(dsn: str) -> dict[str, dict]:
    with psycopg.connect(dsn) as conn:
        return {row[0]: row[1] for row in conn.execute("SELECT id, payload FROM raw.stripe_charges")}


def test_faults_still_give_exactly_the_stubs_charges_and_a_rerun_changes_nothing(setup: Setup) -> None:
    setup.stub.set_faults(Faults(rate_429=0.2, rate_500=0.2))
    extract("stripe_charges")
    loaded = raw_charges(setup.warehouse_dsn)
    assert loaded == {c["id"]: c for c in setup.store.all()}
    assert setup.stub.injected[429] > 0 and setup.stub.injected[500] > 0

    report = extract("stripe_charges")
    assert report.rows_merged == 0
    assert raw_charges(setup.warehouse_dsn) == loaded


def test_a_late_refund_inside_the_window_is_picked_up(setup: Setup) -> None:
    extract("stripe_charges")
    recent = max(setup.store.all(), key=lambda c: c["created"])
    setup.store.replace([refund(recent, 300)])

    report = extract("stripe_charges")

    assert report.rows_merged == 1
    assert raw_charges(setup.warehouse_dsn)[recent["id"]]["amount_refunded"] == 300


def test_a_wrong_key_fails_at_once_naming_the_connection_and_hiding_the_key(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk_test_wrong_0000000000"
    url = json.loads(__import__("os").environ["AIRFLOW_CONN_STRIPE_API"])["host"]
    monkeypatch.setenv("AIRFLOW_CONN_STRIPE_API", json.dumps({"conn_type": "http", "host": url, "password": wrong}))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StripeAuthError, match="stripe_api") as failure:
        extract("stripe_charges")
    assert wrong not in str(failure.value) and wrong not in caplog.text
    assert setup.stub.injected == {429: 0, 500: 0}
