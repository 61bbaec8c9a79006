"""Stripe charges → raw.stripe_charges through the ``stripe_api`` connection, against the Stripe stub.

The stub serves the generator's charge store over Stripe's HTTP API with real fault injection, and
the warehouse is the embedded PostgreSQL: exactness under 429/500s, late refunds within the
re-read window, and a wrong key failing at once with the connection's name.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import fakesnow
import psycopg
import pytest

from dev.charge_store import ChargeStore
from dev.shopgen.rows import refund
from dev.stripe_stub import Faults, StripeStub
from include.ingestion.pipeline import extract
from include.ingestion.sources.stripe import (
    PAGE_SIZE,
    WINDOW_THREAD,
    RetryPolicy,
    StripeApiError,
    StripeAuthError,
    StripeClient,
)
from include.ingestion.warehouse.snowflake import ProtocolAwareSnowflakeHook
from tests.dbt.conftest import snowflake_connection_env

STRIPE_KEY = "sk_test_ingestion_3c1f9a7e5b"
WAREHOUSE_PASSWORD = "wh-Stripe-Pa55-71d0"
NOW = 1_790_000_000


@dataclass
class Setup:
    stub: StripeStub
    store: ChargeStore
    warehouse_dsn: str


def charge(number: int, created: int, amount_refunded: int = 0) -> dict:
    return {
        "id": f"ch_{number:08d}",
        "object": "charge",
        "amount": 1_000 + number,
        "amount_refunded": amount_refunded,
        "currency": "usd",
        "status": "succeeded",
        "paid": True,
        "refunded": False,
        "created": created,
        "customer": "cus_1",
        "metadata": {"order_id": str(number)},
        "payment_method_details": {"type": "card"},
    }


@pytest.fixture
def setup(
    warehouse_postgres: Callable[[str, str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Setup]:
    store = ChargeStore(tmp_path / "charges.sqlite")
    # 450 charges over 90 days up to NOW: some well outside the 30-day re-read window
    store.insert(charge(n, NOW - (450 - n) * 17_280) for n in range(450))
    stub = StripeStub(store.path, STRIPE_KEY, seed=1)
    url = stub.serve_in_thread()
    warehouse_dsn = warehouse_postgres("ing_stripe", WAREHOUSE_PASSWORD)
    monkeypatch.setenv(
        "AIRFLOW_CONN_STRIPE_API", json.dumps({"conn_type": "http", "host": url, "password": STRIPE_KEY})
    )
    yield Setup(stub, store, warehouse_dsn)
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


@pytest.fixture(params=["postgres", "snowflake"])
def warehouse(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The warehouse a test loads into: the embedded Postgres, or in-process fakesnow."""
    if request.param == "postgres":
        yield "postgres"
        return
    for key, value in snowflake_connection_env(f"stripe_{uuid.uuid4().hex[:6]}").items():
        monkeypatch.setenv(key, value)
    with fakesnow.patch():
        yield "snowflake"


def raw_state(setup: Setup, warehouse: str) -> tuple[dict[str, dict], dict[str, str]]:
    """raw.stripe_charges (id → payload) and raw._ingestion_state (source → mark) of ``warehouse``."""
    if warehouse == "postgres":
        with psycopg.connect(setup.warehouse_dsn) as conn:
            marks = dict(conn.execute("SELECT source, high_water FROM raw._ingestion_state").fetchall())
        return raw_charges(setup.warehouse_dsn), marks
    conn = ProtocolAwareSnowflakeHook(snowflake_conn_id="warehouse_snowflake").get_conn()
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT id, payload FROM raw.stripe_charges")
        charges = {row[0]: json.loads(row[1]) for row in cursor.fetchall()}
        cursor.execute("SELECT source, high_water FROM raw._ingestion_state")
        return charges, dict(cursor.fetchall())
    finally:
        conn.close()


def test_the_text_of_a_nul_escape_is_kept_and_only_real_nul_characters_are_removed(
    setup: Setup, warehouse: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a charge whose JSON holds ``\\u0000`` is searched for NULs: a backslash followed by
    ``u0000`` in a string is text to keep, next to a real NUL in the same charge; quotes, backslashes
    and characters outside ASCII arrive as sent in either warehouse."""
    hostile = charge(9_001, NOW - 5)
    hostile["metadata"] = {"path": "C:\\u0000dir", "note": "gift\x00wrap", "backslashes": "\\\\u0000"}
    plain = charge(9_002, NOW - 6)
    plain["metadata"] = {"path": "C:\\u0000dir", "name": 'Zoë "Ö", \\N 😀'}
    setup.store.insert([hostile, plain])
    caplog.set_level(logging.WARNING)

    extract("stripe_charges", warehouse=warehouse)

    loaded, _ = raw_state(setup, warehouse)
    assert loaded[hostile["id"]]["metadata"] == {"path": "C:\\u0000dir", "note": "giftwrap", "backslashes": "\\\\u0000"}
    assert loaded[plain["id"]] == plain
    assert f"Stripe charge {hostile['id']}: removed NUL characters from metadata.note" in caplog.text
    assert plain["id"] not in caplog.text


def test_a_refund_older_than_the_reread_window_arrives_through_events_and_a_rerun_merges_nothing(
    setup: Setup, warehouse: str
) -> None:
    extract("stripe_charges", warehouse=warehouse)
    oldest = min(setup.store.all(), key=lambda c: c["created"])
    assert oldest["created"] < NOW - 30 * 86_400 - 86_400  # outside the re-read window
    setup.store.replace([refund(oldest, 250)], at=NOW + 60)

    report = extract("stripe_charges", warehouse=warehouse)

    assert (report.mode, report.rows_merged) == ("incremental", 1)
    loaded, marks = raw_state(setup, warehouse)
    assert loaded == {c["id"]: c for c in setup.store.all()}
    assert loaded[oldest["id"]]["amount_refunded"] == 250
    assert marks["stripe_charges.events"] == str(NOW + 60)
    assert extract("stripe_charges", warehouse=warehouse).rows_merged == 0


@pytest.mark.parametrize(
    ("malformed", "problem"),
    [
        ("non_json", r"/v1/charges .* body that is not a JSON object"),
        ("no_data", r"/v1/charges page after the start .* no `data` array"),
        ("no_id", r"/v1/charges page after the start .* an item has no `id`"),
        ("no_created", r"/v1/charges .* charge 'ch_\d+' has no string `id` or integer `created`"),
    ],
)
def test_a_malformed_200_fails_naming_the_connection_and_the_page_and_loads_nothing(
    setup: Setup, malformed: str, problem: str
) -> None:
    setup.stub.set_faults(Faults(malformed=malformed))
    with pytest.raises(StripeApiError, match=problem) as failure:
        extract("stripe_charges")
    assert "connection 'stripe_api'" in str(failure.value) and "Check that the connection's host" in str(failure.value)
    with psycopg.connect(setup.warehouse_dsn) as conn:
        assert conn.execute(
            "SELECT to_regclass('raw.stripe_charges') IS NULL OR NOT EXISTS (SELECT 1 FROM raw.stripe_charges)"
        ).fetchone()[0]


def test_a_nul_in_metadata_is_stripped_with_a_warning_and_every_charge_loads(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.stub.set_faults(Faults(nul_in_metadata=True))
    caplog.set_level(logging.WARNING)

    extract("stripe_charges")

    loaded = raw_charges(setup.warehouse_dsn)
    expected = {c["id"]: {**c, "metadata": {**c["metadata"], "note": "giftwrap"}} for c in setup.store.all()}
    assert loaded == expected
    assert "removed NUL characters from metadata.note" in caplog.text


def test_the_next_page_is_requested_while_the_caller_still_works_on_this_one(setup: Setup) -> None:
    charges = StripeClient("stripe_api").charges()
    first_page = [next(charges) for _ in range(PAGE_SIZE)]

    # the listing is suspended inside the first page, yet the second is already asked for
    assert setup.stub.wait_for_charges_page(first_page[-1]["id"], timeout_s=10)
    listed = [c["id"] for c in first_page + list(charges)]
    assert sorted(listed) == sorted(c["id"] for c in setup.store.all())


def test_a_truncated_raw_table_is_loaded_in_full_despite_its_mark(setup: Setup) -> None:
    first = extract("stripe_charges")
    with psycopg.connect(setup.warehouse_dsn) as conn:
        conn.execute("TRUNCATE raw.stripe_charges")

    reload = extract("stripe_charges")

    assert (reload.mode, reload.previous_high_water, reload.rows_read) == ("full", first.high_water, 450)
    assert raw_charges(setup.warehouse_dsn) == {c["id"]: c for c in setup.store.all()}


def test_a_dispute_event_on_an_old_charge_loads_the_charge_as_it_is_now(setup: Setup) -> None:
    """A dispute event's ``data.object`` is the dispute, not the charge: the charge is retrieved."""
    extract("stripe_charges")
    oldest = min(setup.store.all(), key=lambda c: c["created"])
    disputed = {**oldest, "disputed": True}
    about = {"id": "dp_1", "object": "dispute", "charge": oldest["id"], "amount": 500}
    dispute = {
        "id": "evt_dispute_1",
        "object": "event",
        "created": NOW + 120,
        "type": "charge.dispute.created",
        "data": {"object": about},
    }
    with setup.store.connect() as conn:  # a dispute changes the charge without a charge.* event of its own
        conn.execute("UPDATE charges SET body = ? WHERE id = ?", (json.dumps(disputed), oldest["id"]))
        conn.execute(
            "INSERT INTO events (id, created, type, body) VALUES (?, ?, ?, ?)",
            (dispute["id"], dispute["created"], dispute["type"], json.dumps(dispute)),
        )

    report = extract("stripe_charges")

    assert report.rows_merged == 1
    assert raw_charges(setup.warehouse_dsn) == {c["id"]: c for c in setup.store.all()}


@pytest.fixture
def stub_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Iterable[dict]], StripeStub]]:
    """A stub serving just the given charges, behind the ``stripe_api`` connection."""
    stubs: list[StripeStub] = []

    def start(charges: Iterable[dict]) -> StripeStub:
        store = ChargeStore(tmp_path / f"charges-{len(stubs)}.sqlite")
        store.insert(charges)
        stub = StripeStub(store.path, STRIPE_KEY, seed=1)
        url = stub.serve_in_thread()
        monkeypatch.setenv(
            "AIRFLOW_CONN_STRIPE_API", json.dumps({"conn_type": "http", "host": url, "password": STRIPE_KEY})
        )
        stubs.append(stub)
        return stub

    yield start
    for stub in stubs:
        stub.shutdown()


def _over_years(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [charge(n, NOW - rng.randrange(3 * 365 * 86_400)) for n in range(count)] + [charge(count, 1)]


# Charges by `created`, and the listing's lower end: where windows could lose or repeat a charge.
SHAPES: dict[str, Callable[[], tuple[list[dict], int | None]]] = {
    # more than a page in one second: every window below the first page's second is empty
    "all in one second": lambda: ([charge(n, NOW) for n in range(450)], None),
    # crowded seconds straddle the first page's end and the windows' edges
    "crowded seconds": lambda: (
        [charge(n, NOW - n % 4 - (n % 3) * 86_400) for n in range(600)] + [charge(600 + n, NOW - n) for n in range(50)],
        None,
    ),
    # three years of charges and one from 1970: the oldest window must reach it
    "years and one from 1970": lambda: (_over_years(700, seed=7), None),
    # an incremental listing of more than a page: its lower end is the re-read window's, inclusive
    "from a lower end": lambda: (
        _over_years(700, seed=8)
        + [charge(800 + n, NOW - 30 * 86_400 + n - 2) for n in range(5)]
        + [charge(900 + n, NOW - n * 10_000) for n in range(250)],
        NOW - 30 * 86_400,
    ),
}


@pytest.mark.parametrize("concurrent_requests", [4, 8])
@pytest.mark.parametrize("shape", SHAPES)
def test_windows_of_created_list_every_charge_exactly_once(
    stub_of: Callable[[Iterable[dict]], StripeStub], shape: str, concurrent_requests: int
) -> None:
    charges, created_gte = SHAPES[shape]()
    stub = stub_of(charges)

    listed = [c["id"] for c in StripeClient("stripe_api").charges(created_gte, concurrent_requests)]

    expected = [c["id"] for c in charges if created_gte is None or c["created"] >= created_gte]
    assert sorted(listed) == sorted(expected)  # each once: a charge in two windows would show twice
    assert any("lt" in query.created for query in stub.charge_queries)  # listed in windows, not in one listing


def test_windows_are_listed_side_by_side_and_a_load_with_them_is_exact(setup: Setup) -> None:
    setup.stub.set_faults(Faults(latency_ms=20))

    report = extract("stripe_charges")  # sources.yml: concurrent_requests 4

    assert setup.stub.peak_in_flight >= 2
    assert report.rows_read == 450
    assert raw_charges(setup.warehouse_dsn) == {c["id"]: c for c in setup.store.all()}


def _window_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == WINDOW_THREAD]


def test_a_window_that_keeps_failing_fails_the_listing_and_ends_every_window_worker(setup: Setup) -> None:
    charges = StripeClient("stripe_api", RetryPolicy(max_attempts=2, base_delay_s=0.01)).charges(None, 4)
    for _ in range(PAGE_SIZE):  # the first page, listed before the windows start
        next(charges)
    setup.stub.set_faults(Faults(rate_500=1.0))

    with pytest.raises(StripeApiError, match=r"/v1/charges via connection 'stripe_api' still failing after 2 attempts"):
        list(charges)

    for thread in _window_threads():
        thread.join(timeout=30)
    assert not _window_threads()


def test_an_abandoned_listing_ends_its_window_workers(setup: Setup) -> None:
    charges = StripeClient("stripe_api").charges(None, 4)
    for _ in range(PAGE_SIZE + 1):  # into the windows
        next(charges)
    assert _window_threads()

    charges.close()  # as a failed load leaves it

    for thread in _window_threads():
        thread.join(timeout=30)
    assert not _window_threads()
