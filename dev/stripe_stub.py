"""A local server that speaks Stripe's charges API over the synthetic shop's charges.

It answers ``GET /v1/charges`` and ``GET /v1/charges/<id>`` the way Stripe documents them (paging
with ``starting_after``/``ending_before``, ``created[gt|gte|lt|lte]`` filters, newest first, Stripe's
error bodies), checks the secret key, and can misbehave on purpose so retries are exercised:
a share of ``429`` (with ``Retry-After`` and ``Stripe-Should-Retry``), a share of ``500``, added
latency, a malformed 200 (not JSON, no ``data``, an item without ``id``/``created``) and a NUL in
served metadata — set at start or at runtime through ``POST /_stub/faults``. ``GET /v1/events``
lists the ``charge.refunded``/``charge.updated`` events the store recorded for each change. The official ``stripe``
library works against it (``stripe.api_base = <url>``).

Run: ``python -m dev.stripe_stub --port 12111 --charges-db charges.sqlite --api-key sk_test_x``
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dev.charge_store import CREATED_OPERATORS, ChargeQuery, ChargeStore, UnknownCharge

MAX_LIMIT = 100
DEFAULT_LIMIT = 10
RETRY_AFTER_S = 1


@dataclass
class Faults:
    """How often the stub fails on purpose, and how slow it is."""

    rate_429: float = 0.0
    rate_500: float = 0.0
    latency_ms: int = 0
    malformed: str = ""  # every 200 of a list broken one way: one of MALFORMATIONS
    nul_in_metadata: bool = False  # served charges carry a NUL character in metadata.note

    def validated(self) -> Faults:
        for name in ("rate_429", "rate_500"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.malformed not in MALFORMATIONS:
            raise ValueError(f"malformed must be one of {', '.join(repr(m) for m in MALFORMATIONS)}")
        return self


MALFORMATIONS = ("", "non_json", "no_data", "no_id", "no_created")
NON_JSON_BODY = b"<html><body>502 Bad Gateway</body></html>"


class NotJson(Exception):
    """Answer this request with a 200 whose body is not JSON (a proxy's error page)."""


class StubError(Exception):
    """An error answered with Stripe's error body."""

    def __init__(self, status: HTTPStatus, error: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(error.get("message", ""))
        self.status, self.error, self.headers = status, error, headers or {}


class StripeStub:
    """The stub's state: the charge store, the key it accepts, the fault switches."""

    def __init__(self, charges_db: Path, api_key: str, faults: Faults | None = None, seed: int = 0) -> None:
        self.store = ChargeStore(charges_db)
        self.api_key = api_key
        self.faults = (faults or Faults()).validated()
        self._random = random.Random(seed)
        self.injected = {429: 0, 500: 0}  # faults served so far: tests prove the retries were exercised
        self._lock = threading.Lock()
        self.charge_queries: list[ChargeQuery] = []  # each charges page asked for, in order
        self._asked = threading.Condition(self._lock)
        self._in_flight = 0
        self.peak_in_flight = 0  # the most API requests served at once: tests see a client's concurrency
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ serving
    def serve_in_thread(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Bind, serve in a daemon thread, return the API base URL (for ``stripe.api_base``)."""
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        bound_host, bound_port = self._server.server_address[:2]
        return f"http://{bound_host}:{bound_port}"

    def serve_forever(self, port: int, host: str = "127.0.0.1") -> None:
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.serve_forever()

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults.validated()

    # ------------------------------------------------------------------ API
    def authenticate(self, authorization: str | None) -> None:
        presented = _presented_key(authorization)
        if presented != self.api_key:
            shown = f"{presented[:8]}{'*' * 4}{presented[-4:]}" if presented and len(presented) > 12 else "****"
            message = "You did not provide an API key." if not presented else f"Invalid API Key provided: {shown}"
            raise StubError(HTTPStatus.UNAUTHORIZED, {"type": "invalid_request_error", "message": message})

    def inject_fault(self) -> None:
        """Sleep the configured latency, then maybe fail like Stripe does under load."""
        with self._lock:
            faults, draw = self.faults, self._random.random()
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if draw < faults.rate_429:
            self.injected[429] += 1
            raise StubError(
                HTTPStatus.TOO_MANY_REQUESTS,
                {
                    "type": "invalid_request_error",
                    "code": "rate_limit",
                    "message": "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
                },
                {"Retry-After": str(RETRY_AFTER_S), "Stripe-Should-Retry": "true"},
            )
        if draw < faults.rate_429 + faults.rate_500:
            self.injected[500] += 1
            raise StubError(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"type": "api_error", "message": "An unknown error occurred (stub fault injection)."},
                {"Stripe-Should-Retry": "true"},
            )

    def wait_for_charges_page(self, starting_after: str | None, timeout_s: float) -> bool:
        """Whether a client asked for the charges page after ``starting_after`` within ``timeout_s``:
        how a test sees what a client requests while it is still working on the page before."""
        with self._asked:
            return self._asked.wait_for(
                lambda: any(q.starting_after == starting_after for q in self.charge_queries), timeout_s
            )

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Counts an API request while it is served (latency included), for :attr:`peak_in_flight`."""
        with self._lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def list_charges(self, params: dict[str, list[str]]) -> dict[str, Any]:
        query = parse_list_query(params)
        with self._asked:
            self.charge_queries.append(query)
            self._asked.notify_all()
        try:
            charges, has_more = self.store.page(query)
        except UnknownCharge as missing:
            raise StubError(
                HTTPStatus.BAD_REQUEST,
                {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "param": "starting_after" if query.starting_after else "ending_before",
                    "message": f"No such charge: '{missing.args[0]}'",
                },
            ) from None
        return self.malform({"object": "list", "data": charges, "has_more": has_more, "url": "/v1/charges"})

    def list_events(self, params: dict[str, list[str]]) -> dict[str, Any]:
        """``GET /v1/events``: one record per change to a charge, ``type`` filter with ``*``."""
        query = parse_list_query({k: v for k, v in params.items() if k != "type"})
        type_glob = params["type"][-1] if params.get("type") else None
        try:
            events, has_more = self.store.page(query, table="events", type_glob=type_glob)
        except UnknownCharge as missing:
            raise StubError(
                HTTPStatus.BAD_REQUEST,
                {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "param": "starting_after",
                    "message": f"No such event: '{missing.args[0]}'",
                },
            ) from None
        for event in events:
            event["data"]["object"] = self._with_faults(event["data"]["object"])
        return {"object": "list", "data": events, "has_more": has_more, "url": "/v1/events"}

    def malform(self, page: dict[str, Any]) -> dict[str, Any]:
        """The page as the ``malformed``/``nul_in_metadata`` switches break it."""
        with self._lock:
            kind = self.faults.malformed
        page["data"] = [self._with_faults(charge) for charge in page["data"]]
        if kind == "non_json":
            raise NotJson()
        if kind == "no_data":
            del page["data"]
        elif kind in ("no_id", "no_created") and page["data"]:
            del page["data"][0][kind.removeprefix("no_")]
        return page

    def _with_faults(self, charge: dict[str, Any]) -> dict[str, Any]:
        if self.faults.nul_in_metadata:
            charge = {**charge, "metadata": {**charge.get("metadata", {}), "note": "gift\x00wrap"}}
        return charge

    def retrieve_charge(self, charge_id: str) -> dict[str, Any]:
        charge = self.store.get(charge_id)
        if charge is None:
            raise StubError(
                HTTPStatus.NOT_FOUND,
                {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "param": "id",
                    "message": f"No such charge: '{charge_id}'",
                },
            )
        return charge


def parse_list_query(params: dict[str, list[str]]) -> ChargeQuery:
    """Validate ``GET /v1/charges`` parameters as Stripe does (400 with the parameter's name)."""

    def one(name: str) -> str | None:
        values = params.get(name)
        return values[-1] if values else None

    limit_text = one("limit")
    limit = DEFAULT_LIMIT
    if limit_text is not None:
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise _invalid("limit", f"Invalid integer: {limit_text}; limit must be between 1 and {MAX_LIMIT}.")
        limit = int(limit_text)
    created: dict[str, int] = {}
    for name in params:
        if name == "created" or (name.startswith("created[") and name.endswith("]")):
            operator = "eq" if name == "created" else name[len("created[") : -1]
            if operator != "eq" and operator not in CREATED_OPERATORS:
                raise _invalid(name, f"Received unknown parameter: {name}")
            value = one(name) or ""
            if not value.lstrip("-").isdigit():
                raise _invalid(name, f"Invalid integer: {value}")
            created[operator] = int(value)
    starting_after, ending_before = one("starting_after"), one("ending_before")
    if starting_after and ending_before:
        raise _invalid("ending_before", "You may only specify one of these parameters: starting_after, ending_before.")
    return ChargeQuery(limit=limit, created=created, starting_after=starting_after, ending_before=ending_before)


def _invalid(param: str, message: str) -> StubError:
    return StubError(HTTPStatus.BAD_REQUEST, {"type": "invalid_request_error", "param": param, "message": message})


def _presented_key(authorization: str | None) -> str | None:
    """The key from ``Bearer <key>`` or HTTP basic ``<key>:`` (both accepted by Stripe)."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value).decode().partition(":")[0]
        except ValueError:
            return None
    return None


def _handler_for(stub: StripeStub) -> type[BaseHTTPRequestHandler]:  # noqa: C901 - one branch per route and fault switch of the stub
    class Handler(BaseHTTPRequestHandler):
        server_version = "stripe-stub"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/_stub/health":
                return self._send(HTTPStatus.OK, {"ok": True, "charges": stub.store.count()})
            if url.path == "/_stub/faults":
                return self._send(HTTPStatus.OK, asdict(stub.faults))
            self._api(lambda: self._route_api(url.path, parse_qs(url.query)))

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/_stub/faults":
                return self._api(lambda: self._not_found(self.path))
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                faults = Faults(**{**asdict(stub.faults), **body})
                stub.set_faults(faults)
            except (TypeError, ValueError) as bad:
                return self._send(
                    HTTPStatus.BAD_REQUEST, {"error": {"type": "invalid_request_error", "message": str(bad)}}
                )
            self._send(HTTPStatus.OK, asdict(stub.faults))

        def _route_api(self, path: str, params: dict[str, list[str]]) -> dict[str, Any]:
            stub.authenticate(self.headers.get("Authorization"))
            with stub.serving():
                stub.inject_fault()
                if path == "/v1/charges":
                    return stub.list_charges(params)
                if path == "/v1/events":
                    return stub.list_events(params)
                if path.startswith("/v1/charges/") and path.count("/") == 3:
                    return stub.retrieve_charge(path.rsplit("/", 1)[1])
                return self._not_found(path)

        @staticmethod
        def _not_found(path: str) -> dict[str, Any]:
            raise StubError(
                HTTPStatus.NOT_FOUND,
                {"type": "invalid_request_error", "message": f"Unrecognized request URL (GET: {path})."},
            )

        def _api(self, answer: Any) -> None:
            try:
                self._send(HTTPStatus.OK, answer())
            except StubError as error:
                self._send(error.status, {"error": error.error}, error.headers)
            except NotJson:
                self._send(HTTPStatus.OK, NON_JSON_BODY, content_type="text/html")

        def _send(
            self,
            status: HTTPStatus,
            body: dict[str, Any] | bytes,
            headers: dict[str, str] | None = None,
            content_type: str = "application/json",
        ) -> None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Request-Id", f"req_{uuid.uuid4().hex[:14]}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # request lines would be noise in the stack's logs; errors are in the bodies

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--charges-db", type=Path, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--rate-500", type=float, default=0.0)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    faults = Faults(args.rate_429, args.rate_500, args.latency_ms)
    stub = StripeStub(args.charges_db, args.api_key, faults, seed=args.seed)
    print(f"Stripe stub on http://{args.host}:{args.port} serving {args.charges_db}", flush=True)
    stub.serve_forever(args.port, args.host)


if __name__ == "__main__":
    main()
