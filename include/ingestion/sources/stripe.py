"""Stripe charges (Connection ``stripe_api``: host = API base URL, password = secret key).

Pages ``GET /v1/charges`` newest first with ``starting_after``, optionally from ``created[gte]``;
an incremental load then reads ``GET /v1/events`` (``charge.*``) since its own mark, so a refund or
dispute of a charge older than the re-read window still reaches raw without a full reload. A 200
that is not a Stripe list (not JSON, no ``data``, an item without ``id``/``created``) fails naming
the connection and the page; NUL characters, which no warehouse column can hold, are removed from a
charge with a warning naming it, so one such charge cannot block every load.

A listing longer than a page is split into windows of ``created`` listed side by side
(``concurrent_requests`` of the source): each window is ``[a, b)`` with Stripe's ``created[gte]`` and
``created[lt]``, the oldest has no lower end and the newest no upper end beyond the first page, so
together they hold every charge exactly once whatever the few one-item requests that place the
windows found (``created`` never changes). With one request at a time, the next page is fetched
while the caller writes the current one (the cursor of a page is the last id of the one before, so
one page ahead is as far as a single listing can run).
Rate limits and server errors are retried the way Stripe asks (``Stripe-Should-Retry``,
``Retry-After``), with exponential backoff otherwise, and each request gives up after a bounded
time, so a stuck API fails the task instead of hanging it. A rejected key fails at once and names
the connection. The key only ever travels in the ``Authorization`` header; it is never logged.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import msgspec
import requests
from airflow.providers.http.hooks.http import HttpHook

from include.ingestion.config import MAX_CONCURRENT_REQUESTS, StripeCharges
from include.ingestion.tables import Column, RawTable, csv_chunks

log = logging.getLogger(__name__)

COLUMNS = (Column("id", "text"), Column("created", "bigint"), Column("payload", "jsonb"))
PAGE_SIZE = 100  # Stripe's maximum
EVENT_TYPES = "charge.*"  # refunded, updated, refund.updated, dispute.*: every change to a charge
EVENT_RETENTION_S = 30 * 86_400  # Stripe lists events of the last 30 days only
_RETRYABLE_STATUS = frozenset({409, 429, 500, 502, 503, 504})
_WINDOWS_PER_REQUEST = 4  # windows per request in flight: a window of few charges frees its worker early


class StripeAuthError(RuntimeError):
    """The API key was rejected (401/403): retrying cannot help."""


class StripeApiError(RuntimeError):
    """Stripe answered with an error that is not retryable, or kept failing past the retry budget."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long one request may keep retrying; Stripe's own clients back off similarly."""

    max_attempts: int = 10
    budget_s: float = 120.0
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    timeout_s: float = 30.0

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay_s)
        delay = min(self.base_delay_s * 2 ** (attempt - 1), self.max_delay_s)
        return delay * (0.5 + random.random() / 2)  # jitter: concurrent clients don't retry in lockstep


class StripeClient:
    """A minimal Stripe list client on the requests session of the provider's ``HttpHook``."""

    def __init__(self, conn_id: str, retry: RetryPolicy = RetryPolicy()) -> None:
        hook = HttpHook(method="GET", http_conn_id=conn_id)
        self._session = hook.get_conn()
        self._base_url = hook.base_url.rstrip("/")
        secret = hook.get_connection(conn_id).password
        if not secret:
            raise StripeAuthError(f"connection '{conn_id}' has no password: set it to the Stripe secret key.")
        self._session.headers["Authorization"] = f"Bearer {secret}"
        self._conn_id = conn_id
        self._retry = retry

    def charges(self, created_gte: int | None = None, concurrent_requests: int = 1) -> Iterator[dict[str, Any]]:
        """Every charge (created at or after ``created_gte`` when given), each once: newest first with
        one request at a time, else in windows of ``created`` listed side by side
        (:meth:`_list_in_windows`). Requests run on helper threads while the caller works on what came:
        the caller must not use this client until the listing ends."""
        path = "/v1/charges"
        filters = {} if created_gte is None else {"created[gte]": created_gte}
        if concurrent_requests > 1:
            items = self._list_in_windows(path, filters, min(concurrent_requests, MAX_CONCURRENT_REQUESTS))
        else:
            items = self._list(path, filters, read_ahead=True)
        for item in items:
            yield self._checked_charge(item, path)

    def events(self, created_gte: int | None = None) -> Iterator[dict[str, Any]]:
        """Charge events (``charge.*``: refunds, updates, disputes) created at or after ``created_gte``,
        newest first: how a change to a charge older than the re-read window is found."""
        params: dict[str, Any] = {"type": EVENT_TYPES}
        if created_gte is not None:
            params["created[gte]"] = created_gte
        for event in self._list("/v1/events", params):
            data = event.get("data")
            obj = data.get("object") if isinstance(data, dict) else None
            if not isinstance(obj, dict) or not isinstance(event.get("created"), int):
                raise self._malformed("/v1/events", f"event {event.get('id')!r} has no `created` or `data.object`")
            yield event

    def newest_event_created(self) -> int | None:
        """``created`` of the newest charge event, None when there is none."""
        newest = next(self.events(), None)
        return None if newest is None else newest["created"]

    def charge_of(self, event: dict[str, Any]) -> dict[str, Any]:
        """The charge an event is about: its ``data.object`` for charge events, otherwise (a refund's
        or dispute's event) the charge as it is now, retrieved by the object's ``charge`` id."""
        obj = event["data"]["object"]
        if obj.get("object", "charge") == "charge":
            return self._checked_charge(obj, f"/v1/events ({event.get('id')})")
        charge_id = obj.get("charge")
        if not isinstance(charge_id, str):
            raise self._malformed("/v1/events", f"event {event.get('id')!r} names no charge")
        return self._checked_charge(self.get(f"/v1/charges/{charge_id}", {}), f"/v1/charges/{charge_id}")

    def _list(self, path: str, filters: dict[str, Any], *, read_ahead: bool = False) -> Iterator[dict[str, Any]]:
        """Every item of a Stripe list endpoint, page by page with ``starting_after``; with
        ``read_ahead``, each page is requested on a helper thread as soon as the one before has come."""
        for page in self._pages(path, filters, read_ahead=read_ahead):
            yield from page

    def _pages(self, path: str, filters: dict[str, Any], *, read_ahead: bool = False) -> Iterator[list[dict[str, Any]]]:
        """The pages of a listing, each non-empty, following ``starting_after`` from the one in ``filters``."""
        fetch = _in_background if read_ahead else functools.partial
        params: dict[str, Any] = {"limit": PAGE_SIZE, **filters}
        pending = fetch(self._page, path, dict(params))
        while True:
            data, has_more = pending()
            if has_more and data:
                params["starting_after"] = data[-1]["id"]
                pending = fetch(self._page, path, dict(params))
            if data:
                yield data
            if not has_more or not data:
                return

    def _list_in_windows(
        self, path: str, filters: dict[str, Any], concurrent_requests: int
    ) -> Iterator[dict[str, Any]]:
        """Every item of a ``created``-filtered listing, ``concurrent_requests`` windows of ``created``
        listed at once. The first page is listed as usual; when there is more, the rest is split into
        the rest of the first page's oldest second (``created[gte]`` that second, after its cursor) and
        windows ``[a, b)`` below it down to the filter's own lower end, or none: what the one-item
        probes of :meth:`_oldest_bound` found only places the boundaries, never what is listed."""
        first, has_more = self._page(path, {"limit": PAGE_SIZE, **filters})
        if not has_more or not first:
            yield from first
            return
        newest, oldest = (self._checked_charge(item, path)["created"] for item in (first[0], first[-1]))
        lower = filters.get("created[gte]")
        windows: list[dict[str, Any]] = [{**filters, "created[gte]": oldest, "starting_after": first[-1]["id"]}]
        start = lower if lower is not None else self._oldest_bound(path, filters, oldest, max(1, newest - oldest))
        parts = concurrent_requests * _WINDOWS_PER_REQUEST
        bounds = sorted({start + (oldest - start) * i // parts for i in range(parts)} | {oldest})
        for below, above in reversed(list(itertools.pairwise(bounds))):  # newest first
            windows.append({**filters, "created[gte]": below, "created[lt]": above})
        if lower is None:  # the oldest window has no lower end: a charge older than the probes saw is still listed
            del windows[-1]["created[gte]"]
        yield from first
        yield from _listed_side_by_side(self._pages, path, windows, concurrent_requests)

    def _oldest_bound(self, path: str, filters: dict[str, Any], below: int, step: int) -> int:
        """About the ``created`` of the oldest item before ``below`` (at or before it): steps back by
        ``step``, four times further each time, while an item older than the step exists, then halves
        the last step three times. One-item requests; only the windows' balance depends on it."""
        older = below
        while self._any_before(path, filters, below - step):
            older, step = below - step, step * 4
        none_before = below - step
        for _ in range(3):
            middle = (none_before + older) // 2
            if middle in (none_before, older):
                break
            if self._any_before(path, filters, middle):
                older = middle
            else:
                none_before = middle
        return none_before

    def _any_before(self, path: str, filters: dict[str, Any], created_lt: int) -> bool:
        data, _ = self._page(path, {**filters, "limit": 1, "created[lt]": created_lt})
        return bool(data)

    def _page(self, path: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """One page's items and its ``has_more``, checked."""
        where = f"{path} page after {params.get('starting_after') or 'the start'}"
        page = self.get(path, params)
        data = page.get("data")
        if not isinstance(data, list) or not isinstance(page.get("has_more"), bool):
            raise self._malformed(where, "the list has no `data` array or `has_more` flag")
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise self._malformed(where, f"an item has no `id`: {str(item)[:120]}")
        return data, page["has_more"]

    def _checked_charge(self, charge: dict[str, Any], where: str) -> dict[str, Any]:
        """The charge, which has the fields raw relies on."""
        if not isinstance(charge.get("id"), str) or not isinstance(charge.get("created"), int):
            raise self._malformed(where, f"charge {charge.get('id')!r} has no string `id` or integer `created`")
        return charge

    def _malformed(self, where: str, problem: str) -> StripeApiError:
        return StripeApiError(
            f"Stripe {where} via connection '{self._conn_id}' sent a malformed response: {problem}. "
            f"Check that the connection's host ({self._base_url}) is the Stripe API, not a proxy or another service."
        )

    def get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """One GET with Stripe's retry rules; raises once retrying cannot help or the budget is spent."""
        started = time.monotonic()
        for attempt in range(1, self._retry.max_attempts + 1):
            outcome = self._attempt(path, params)
            if isinstance(outcome, dict):
                return outcome
            reason, retry_after = outcome
            delay = self._retry.backoff(attempt, retry_after)
            if attempt == self._retry.max_attempts or time.monotonic() - started + delay > self._retry.budget_s:
                break
            log.warning("Stripe %s: %s; retry %d in %.1fs", path, reason, attempt, delay)
            time.sleep(delay)
        raise StripeApiError(
            f"Stripe {path} via connection '{self._conn_id}' still failing after {attempt} attempts "
            f"in {time.monotonic() - started:.0f}s: {reason}"
        )

    def _attempt(self, path: str, params: dict[str, Any]) -> dict[str, Any] | tuple[str, float | None]:
        """The decoded body, or (why, Retry-After seconds) when the request should be retried."""
        try:
            response = self._session.get(self._base_url + path, params=params, timeout=self._retry.timeout_s)
        except (requests.ConnectionError, requests.Timeout) as exc:
            return f"network error ({type(exc).__name__})", None
        if response.status_code in (401, 403):
            raise StripeAuthError(
                f"Stripe rejected the secret key of connection '{self._conn_id}' (HTTP {response.status_code}, "
                f"{_error_type(response)}): set the connection's password to a valid key for {self._base_url}."
            )
        if response.ok:
            try:
                body = msgspec.json.decode(response.content)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise self._malformed(
                    f"{path} (params {params})",
                    f"HTTP {response.status_code} with a body that is not a JSON object "
                    f"(Content-Type {response.headers.get('Content-Type')!r})",
                )
            return body
        should_retry = response.headers.get("Stripe-Should-Retry")
        retryable = should_retry == "true" or (should_retry != "false" and response.status_code in _RETRYABLE_STATUS)
        reason = f"HTTP {response.status_code} {_error_type(response)}"
        if not retryable:
            raise StripeApiError(f"Stripe {path} via connection '{self._conn_id}' failed: {reason}")
        return reason, _retry_after(response)


def _in_background(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """``fn(*args)`` started on a daemon thread; the returned callable waits for its result (or
    raises its exception). A listing abandoned mid-way (its load failed) leaves at most one request
    running, which cannot hold up the end of the process."""
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="stripe-read-ahead", daemon=True).start()
    return future.result


WINDOW_THREAD = "stripe-window"  # the name of a window worker's thread
_DONE = object()  # a window worker has no window left


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def _listed_side_by_side(
    pages: Callable[[str, dict[str, Any]], Iterator[list[dict[str, Any]]]],
    path: str,
    windows: list[dict[str, Any]],
    workers: int,
) -> Iterator[dict[str, Any]]:
    """The items of every window, ``workers`` daemon threads each listing one window after another
    (in the order given). A bounded queue of pages keeps memory flat when the caller is slower
    than the API. The first error of any window is raised here and stops the others at their next
    page; a listing abandoned mid-way (its load failed) does the same, so it leaves at most one
    request per worker running, none of which can hold up the end of the process."""
    pending = collections.deque(windows)
    # room for every worker's last page, error and end after the caller stopped reading (below)
    results: queue.Queue[Any] = queue.Queue(maxsize=4 * workers)
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_list_windows, args=(pages, path, pending, results, stop), name=WINDOW_THREAD, daemon=True
        )
        for _ in range(min(workers, len(windows)))
    ]
    for thread in threads:
        thread.start()
    ended = 0
    try:
        while ended < len(threads):
            result = results.get()
            if result is _DONE:
                ended += 1
            elif isinstance(result, _Failed):
                raise result.error
            else:
                yield from result
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):  # unblock workers waiting to put: each then sees `stop`
            while True:
                results.get_nowait()


def _list_windows(
    pages: Callable[[str, dict[str, Any]], Iterator[list[dict[str, Any]]]],
    path: str,
    pending: collections.deque[dict[str, Any]],
    results: queue.Queue[Any],
    stop: threading.Event,
) -> None:
    """One worker: the pages of window after window into ``results``, then :data:`_DONE`."""
    try:
        while not stop.is_set():
            try:
                window = pending.popleft()
            except IndexError:  # no window left
                return
            for page in pages(path, window):
                results.put(page)
                if stop.is_set():
                    return
    except BaseException as exc:
        results.put(_Failed(exc))
    finally:
        results.put(_DONE)


def charge_row(charge: dict[str, Any]) -> tuple[str, int, str]:
    """The ``raw`` row of a charge: id, ``created`` and the whole charge as compact JSON, without NUL
    characters (see :func:`without_nul`). JSON writes every NUL as the escape ``\\u0000``, so only a
    charge whose JSON holds that text is walked for them."""
    payload = msgspec.json.encode(charge)
    if b"\\u0000" in payload:
        charge = without_nul(charge)
        payload = msgspec.json.encode(charge)
    return charge["id"], charge["created"], payload.decode()


def without_nul(charge: dict[str, Any]) -> dict[str, Any]:
    """The charge with NUL characters removed from its strings, with a warning naming the charge
    and the fields. Neither Postgres ``jsonb`` nor ``text`` can hold a NUL, so one charge with a NUL
    in its metadata would otherwise fail every load; dropping the character keeps the charge."""
    fields: list[str] = []

    def clean(value: Any, path: str) -> Any:
        if isinstance(value, str):
            if "\x00" in value:
                fields.append(path)
                return value.replace("\x00", "")
            return value
        if isinstance(value, dict):
            return {clean(k, path): clean(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    cleaned = clean(charge, "")
    if fields:
        log.warning(
            "Stripe charge %s: removed NUL characters from %s (a warehouse cannot store them)",
            charge.get("id"),
            ", ".join(fields),
        )
    return cleaned


@dataclass
class EventWindow:
    """The events reconciliation of one load: read events from ``since``; ``newest`` is the
    ``created`` of the newest event read (the next mark), left as it was when none came."""

    since: int | None
    newest: int | None = None


def raw_table(entry: StripeCharges) -> RawTable:
    """``raw.<name>``: the charge id, ``created`` as Stripe sends it, and the whole charge as ``payload``."""
    return RawTable(entry.raw_table, COLUMNS, entry.primary_key)


def charge_rows(
    entry: StripeCharges, created_gte: int | None, events: EventWindow | None = None, retry: RetryPolicy = RetryPolicy()
) -> Iterator[bytes]:
    """CSV chunks of ``raw.stripe_charges`` rows: id, created, the whole charge as JSON — the
    charges created since ``created_gte``, then (with ``events``) those changed since its mark."""
    client = StripeClient(entry.conn_id, retry)
    yield from csv_chunks(_charges_and_changes(client, created_gte, events, entry.concurrent_requests))


def _charges_and_changes(
    client: StripeClient, created_gte: int | None, events: EventWindow | None, concurrent_requests: int = 1
) -> Iterator[tuple[str, int, str]]:
    """Each charge's row once: the listed window first, then the newest state (events come newest
    first) of every other charge an event touched — one row per key, as a merge needs."""
    if events is not None and created_gte is None:
        # A full listing reads every charge as it is now: only the mark is needed, taken before the
        # listing so a change made while it runs is read again next time rather than missed.
        events.newest = client.newest_event_created()
        events = None
    seen: set[str] = set()
    for charge in client.charges(created_gte, concurrent_requests):
        row = charge_row(charge)
        seen.add(row[0])
        yield row
    if events is None:
        return
    if events.since is not None and events.since < time.time() - EVENT_RETENTION_S:
        log.warning(
            "Stripe events since %s are older than Stripe keeps them (30 days): some refunds may be "
            "missed; run the source once with full_refresh to be sure.",
            events.since,
        )
    for event in client.events(events.since):
        events.newest = max(event["created"], events.newest or event["created"])
        row = charge_row(client.charge_of(event))
        if row[0] not in seen:
            seen.add(row[0])
            yield row


def _retry_after(response: requests.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def _error_type(response: requests.Response) -> str:
    """Stripe's ``error.type`` (and code), which never echoes the key; the raw body might."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        return "(no JSON body)"
    return "/".join(str(error[k]) for k in ("type", "code") if error.get(k)) or "(no error type)"
