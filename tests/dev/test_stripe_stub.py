"""The Stripe stub speaks Stripe's charges API: paging, filters, auth, errors, fault switches, and
the official ``stripe`` library and the project's own client both read every charge exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from dev.charge_store import ChargeStore
from dev.stripe_stub import Faults, StripeStub

API_KEY = "sk_test_stub_key_0123456789"
CHARGES = 1_257  # not a multiple of any page size: the last page is partial


def make_charge(number: int) -> dict[str, Any]:
    # Several charges share a `created` second: paging must order by (created, id) to be exact.
    return {
        "id": f"ch_{number:06d}",
        "object": "charge",
        "amount": 100 + number,
        "amount_refunded": 0,
        "currency": "usd",
        "status": "succeeded",
        "paid": True,
        "refunded": False,
        "created": 1_700_000_000 + number // 3,
        "customer": "cus_1",
        "metadata": {"order_id": str(number)},
        "payment_method_details": {"type": "card"},
    }


@pytest.fixture
def store(tmp_path: Path) -> ChargeStore:
    charge_store = ChargeStore(tmp_path / "charges.sqlite")
    charge_store.insert(make_charge(number) for number in range(CHARGES))
    return charge_store


@pytest.fixture
def stub(store: ChargeStore) -> Iterator[tuple[StripeStub, str]]:
    server = StripeStub(store.path, API_KEY, seed=3)
    url = server.serve_in_thread()
    yield server, url
    server.shutdown()


def get(url: str, path: str, key: str | None = API_KEY, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.get(url + path, params=params, headers=headers, timeout=10)


def walk(url: str, **params: Any) -> list[str]:
    ids, cursor = [], None
    while True:
        page = get(url, "/v1/charges", limit=100, **params, **({"starting_after": cursor} if cursor else {})).json()
        assert page["object"] == "list" and page["url"] == "/v1/charges"
        ids += [charge["id"] for charge in page["data"]]
        if not page["has_more"]:
            return ids
        cursor = page["data"][-1]["id"]


def newest_first(store: ChargeStore) -> list[str]:
    return [c["id"] for c in sorted(store.all(), key=lambda c: (c["created"], c["id"]), reverse=True)]


def test_paging_with_starting_after_visits_every_charge_once_newest_first(stub, store) -> None:
    _, url = stub
    assert walk(url) == newest_first(store)


def test_default_limit_is_ten_and_ending_before_pages_back(stub, store) -> None:
    _, url = stub
    first = get(url, "/v1/charges").json()
    assert len(first["data"]) == 10 and first["has_more"]
    second = get(url, "/v1/charges", starting_after=first["data"][-1]["id"]).json()
    back = get(url, "/v1/charges", ending_before=second["data"][0]["id"]).json()
    assert [c["id"] for c in back["data"]] == [c["id"] for c in first["data"]]
    assert back["has_more"] is False


def test_created_filters(stub, store) -> None:
    _, url = stub
    everything = store.all()
    since = 1_700_000_000 + 300
    expected = [
        c["id"]
        for c in sorted(everything, key=lambda c: (c["created"], c["id"]), reverse=True)
        if c["created"] >= since
    ]
    assert walk(url, **{"created[gte]": since}) == expected
    between = walk(url, **{"created[gt]": since, "created[lte]": since + 5})
    assert {store.get(cid)["created"] for cid in between} == set(range(since + 1, since + 6))
    assert {store.get(cid)["created"] for cid in walk(url, created=since)} == {since}


@pytest.mark.parametrize(
    ("params", "param"),
    [({"limit": 101}, "limit"), ({"limit": "x"}, "limit"), ({"starting_after": "ch_missing"}, "starting_after")],
)
def test_bad_parameters_get_stripe_errors(stub, params, param) -> None:
    _, url = stub
    response = get(url, "/v1/charges", **params)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == param


def test_a_wrong_key_is_401_and_the_key_is_not_echoed(stub) -> None:
    _, url = stub
    wrong = "sk_test_wrong_key_abcdefghijkl"
    response = get(url, "/v1/charges", key=wrong)
    assert response.status_code == 401
    assert wrong not in response.text and "Invalid API Key" in response.text
    assert get(url, "/v1/charges", key=None).status_code == 401
    basic = requests.get(url + "/v1/charges", auth=(API_KEY, ""), timeout=10)
    assert basic.status_code == 200


def test_retrieve_one_charge(stub, store) -> None:
    _, url = stub
    assert get(url, "/v1/charges/ch_000007").json() == store.get("ch_000007")
    assert get(url, "/v1/charges/ch_nope").status_code == 404


def test_fault_switches_send_429_and_500_the_way_stripe_does(stub) -> None:
    server, url = stub
    server.set_faults(Faults(rate_429=1.0))
    limited = get(url, "/v1/charges")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1" and limited.headers["Stripe-Should-Retry"] == "true"
    assert limited.json()["error"]["code"] == "rate_limit"
    requests.post(url + "/_stub/faults", json={"rate_429": 0.0, "rate_500": 1.0}, timeout=10).raise_for_status()
    failing = get(url, "/v1/charges")
    assert failing.status_code == 500 and failing.json()["error"]["type"] == "api_error"
    assert failing.headers["Stripe-Should-Retry"] == "true" and failing.headers["Request-Id"].startswith("req_")
    assert requests.post(url + "/_stub/faults", json={"rate_500": 2}, timeout=10).status_code == 400


def test_latency_is_added(stub) -> None:
    server, url = stub
    server.set_faults(Faults(latency_ms=300))
    started = time.perf_counter()
    get(url, "/v1/charges")
    assert time.perf_counter() - started >= 0.3


def test_the_official_stripe_library_lists_every_charge_despite_faults(stub, store, monkeypatch) -> None:
    server, url = stub
    server.set_faults(Faults(rate_429=0.15, rate_500=0.15))
    monkeypatch.setattr(stripe, "api_base", url)
    monkeypatch.setattr(stripe, "api_key", API_KEY)
    monkeypatch.setattr(stripe, "max_network_retries", 10)
    monkeypatch.setattr("stripe._http_client.HTTPClient._sleep_time_seconds", lambda *args, **kwargs: 0.01)
    ids = [charge.id for charge in stripe.Charge.list(limit=100).auto_paging_iter()]
    assert ids == newest_first(store)
    assert server.injected[429] and server.injected[500]
    assert stripe.Charge.retrieve("ch_000001").amount == 101


def test_the_project_client_pages_through_30_percent_faults(stub, store, monkeypatch) -> None:
    from include.ingestion.sources.stripe import RetryPolicy, StripeClient

    server, url = stub
    server.set_faults(Faults(rate_429=0.15, rate_500=0.15))
    monkeypatch.setenv("AIRFLOW_CONN_STRIPE_TEST", json.dumps({"conn_type": "http", "host": url, "password": API_KEY}))
    client = StripeClient("stripe_test", RetryPolicy(max_attempts=20, base_delay_s=0.01, max_delay_s=0.05))
    assert [charge["id"] for charge in client.charges()] == newest_first(store)
    assert server.injected[429] and server.injected[500]


def test_every_change_to_a_charge_is_an_event_listed_newest_first_with_paging(stub, store) -> None:
    _, url = stub
    changed = [{**store.get(f"ch_{n:06d}"), "amount_refunded": 10} for n in range(150)]
    store.replace(changed[:100], at=1_800_000_000)
    store.replace([{**changed[0], "metadata": {"order_id": "7"}}], at=1_800_000_100)  # not a refund
    store.replace(changed[100:], at=1_800_000_200)

    events, cursor = [], None
    while True:
        after = {"starting_after": cursor} if cursor else {}
        page = get(url, "/v1/events", type="charge.*", limit=100, **after).json()
        events += page["data"]
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    assert len(events) == 151 and len({e["id"] for e in events}) == 151
    assert [e["created"] for e in events] == sorted((e["created"] for e in events), reverse=True)
    assert {e["type"] for e in events if e["created"] != 1_800_000_100} == {"charge.refunded"}
    updated = [e for e in events if e["type"] == "charge.updated"]
    assert [(e["created"], e["data"]["object"]["metadata"]) for e in updated] == [(1_800_000_100, {"order_id": "7"})]
    since = get(url, "/v1/events", **{"created[gt]": 1_800_000_100, "limit": 100}).json()["data"]
    assert {e["data"]["object"]["id"] for e in since} == {c["id"] for c in changed[100:]}
    assert get(url, "/v1/events", type="charge.dispute.*").json()["data"] == []


@pytest.mark.parametrize("kind", ["non_json", "no_data", "no_id", "no_created"])
def test_the_malformed_switch_breaks_a_200_one_way(stub, kind: str) -> None:
    server, url = stub
    server.set_faults(Faults(malformed=kind))
    response = get(url, "/v1/charges", limit=3)
    assert response.status_code == 200
    if kind == "non_json":
        assert response.headers["Content-Type"] == "text/html" and not response.text.startswith("{")
        return
    page = response.json()
    if kind == "no_data":
        assert "data" not in page
    else:
        assert kind.removeprefix("no_") not in page["data"][0] and kind.removeprefix("no_") in page["data"][1]
    assert requests.post(url + "/_stub/faults", json={"malformed": "sometimes"}, timeout=10).status_code == 400


def test_the_nul_switch_puts_a_nul_in_served_metadata(stub) -> None:
    server, url = stub
    server.set_faults(Faults(nul_in_metadata=True))
    response = get(url, "/v1/charges", limit=2)
    assert '"gift\\u0000wrap"' in response.text
    assert all(c["metadata"]["note"] == "gift\x00wrap" for c in response.json()["data"])
