"""Stripe charges (Connection ``stripe_api``: host = API base URL, password = secret key).

Pages ``GET /v1/charges`` newest first with ``starting_after``, optionally from ``created[gte]``.
Rate limits and server errors are retried the way Stripe asks (``Stripe-Should-Retry``,
``Retry-After``), with exponential backoff otherwise, and each request gives up after a bounded
time, so a stuck API fails the task instead of hanging it. A rejected key fails at once and names
the connection. The key only ever travels in the ``Authorization`` header; it is never logged.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from airflow.providers.http.hooks.http import HttpHook

from include.ingestion.config import StripeCharges
from include.ingestion.tables import Column, RawTable, csv_chunks

log = logging.getLogger(__name__)

COLUMNS = (Column("id", "text"), Column("created", "bigint"), Column("payload", "jsonb"))
PAGE_SIZE = 100  # Stripe's maximum
_RETRYABLE_STATUS = frozenset({409, 429, 500, 502, 503, 504})


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

    def charges(self, created_gte: int | None = None) -> Iterator[dict[str, Any]]:
        """Every charge (created at or after ``created_gte`` when given), newest first, each once."""
        params: dict[str, Any] = {"limit": PAGE_SIZE}
        if created_gte is not None:
            params["created[gte]"] = created_gte
        while True:
            page = self.get("/v1/charges", params)
            yield from page["data"]
            if not page["has_more"] or not page["data"]:
                return
            params["starting_after"] = page["data"][-1]["id"]

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
            return response.json()
        should_retry = response.headers.get("Stripe-Should-Retry")
        retryable = should_retry == "true" or (should_retry != "false" and response.status_code in _RETRYABLE_STATUS)
        reason = f"HTTP {response.status_code} {_error_type(response)}"
        if not retryable:
            raise StripeApiError(f"Stripe {path} via connection '{self._conn_id}' failed: {reason}")
        return reason, _retry_after(response)


def raw_table(entry: StripeCharges) -> RawTable:
    """``raw.<name>``: the charge id, ``created`` as Stripe sends it, and the whole charge as ``payload``."""
    return RawTable(entry.raw_table, COLUMNS, entry.primary_key)


def charge_rows(entry: StripeCharges, created_gte: int | None, retry: RetryPolicy = RetryPolicy()) -> Iterator[bytes]:
    """CSV chunks of ``raw.stripe_charges`` rows: id, created, the whole charge as JSON."""
    client = StripeClient(entry.conn_id, retry)
    rows = ((c["id"], c["created"], json.dumps(c, separators=(",", ":"))) for c in client.charges(created_gte))
    yield from csv_chunks(rows)


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
