"""Slack alerts for the pipeline, through the Slack provider's webhook notifier.

Four kinds: a task failed, a task will retry, the run succeeded (with its summary), the run missed
its deadline. Messages are Block Kit sections inside a coloured attachment (Slack colours only
attachments), with a plain ``text`` fallback for notifications.

An alert must never hurt the pipeline: a missing, wrong or unreachable ``slack_alerts``
connection logs a warning and the callback returns normally. Webhook tokens sit in the URL path,
so error text is redacted before it is logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

SLACK_CONN_ID = "slack_alerts"
SLACK_TIMEOUT_S = 10
_WEBHOOK_PATH = re.compile(r"/services/[^\s'\"]+")
_ENCODED_WEBHOOK_PATH = re.compile(r"%2Fservices%2F[^\s'\"&]+", re.IGNORECASE)
# scheme://user:pass@ and its URL-encoded form scheme%3A%2F%2Fuser%3Apass%40 (greedy: a password
# may itself hold an encoded @; cutting too much of a URL is the safe side)
_URL_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*(?::|%3A)(?://|%2F%2F))[^\s/'\"<>@]*(@|%40)", re.IGNORECASE)
# psycopg/libpq lines that quote data: DETAIL (key values, failing rows), CONTEXT (a COPY's line)
_DRIVER_DETAIL_LINE = re.compile(r"\b((?:DETAIL|CONTEXT):)[^\n]*")  # to the line's end: also when one-lined
_KEY_VALUES = re.compile(r"Key \(([^)]*)\)=\((?:[^()]|\([^()]*\))*\)")
_FAILING_ROW = re.compile(r"(Failing row contains) \((?:[^()]|\([^()]*\))*\)")
_MAX_ERROR_CHARS = 500
# slack_sdk's retry path logs the full webhook URL, token included; an alert is best effort, so
# it is sent once and a failure is only a warning.
NO_RETRIES: list = []


class AlertKind(str, Enum):
    FAILURE = "failure"
    RETRY = "retry"
    SUCCESS = "success"
    DEADLINE = "deadline"


COLOURS = {
    AlertKind.FAILURE: "#D72C2C",
    AlertKind.RETRY: "#E8A33D",
    AlertKind.DEADLINE: "#E8A33D",
    AlertKind.SUCCESS: "#2EB67D",
}
ICONS = {
    AlertKind.FAILURE: ":red_circle:",
    AlertKind.RETRY: ":large_orange_circle:",
    AlertKind.DEADLINE: ":alarm_clock:",
    AlertKind.SUCCESS: ":large_green_circle:",
}


@dataclass(frozen=True)
class SlackMessage:
    """One alert: a headline, labelled facts and an optional detail block."""

    kind: AlertKind
    headline: str
    facts: dict[str, str] = field(default_factory=dict)
    detail: str | None = None
    link: str | None = None

    @property
    def text(self) -> str:
        return f"{ICONS[self.kind]} {self.headline}"

    def attachments(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{self.text}*"}}]
        if self.facts:
            fields = [{"type": "mrkdwn", "text": f"*{key}*\n{value}"} for key, value in self.facts.items()]
            blocks.extend({"type": "section", "fields": fields[i : i + 10]} for i in range(0, len(fields), 10))
        if self.detail:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{self.detail}```"}})
        if self.link:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{self.link}|Open the log>"}]})
        return [{"color": COLOURS[self.kind], "blocks": blocks}]


def redact(text: str) -> str:
    """Alert-safe error text: no credentials, no row values, capped.

    Slack is outside Airflow's secrets masker, so what an exception carries (a landing URL's
    ``user:pass@``, a psycopg ``DETAIL``/``Key (...)=(...)`` line with a row's values, a webhook
    token in a URL path) is cut here; the task log keeps the full error, where the masker applies.
    """
    cleaned = scrub(text)
    return cleaned if len(cleaned) <= _MAX_ERROR_CHARS else cleaned[: _MAX_ERROR_CHARS - 1] + "…"


def scrub(text: str) -> str:
    """``text`` without URL credentials (plain or URL-encoded), row values or webhook tokens."""
    text = _DRIVER_DETAIL_LINE.sub(r"\1 ***", text)
    text = _KEY_VALUES.sub(r"Key (\1)=(***)", text)
    text = _FAILING_ROW.sub(r"\1 (***)", text)
    text = _URL_USERINFO.sub(r"\1***\2", text)
    return _WEBHOOK_PATH.sub("/services/***", _ENCODED_WEBHOOK_PATH.sub("%2Fservices%2F***", text))


# Why a task failed when its exception cannot say (a watchdog stopped its dbt from another thread,
# so the exception is only dbt's exit code): the task's context carries it to the failure alert.
FAILURE_CAUSE_KEY = "ecommerce_failure_cause"


def record_failure_cause(context: dict[str, Any], cause: str) -> None:
    """``cause`` heads the task's failure or retry alert (the same context reaches its callbacks)."""
    context[FAILURE_CAUSE_KEY] = cause


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def task_message(kind: AlertKind, context: dict[str, Any]) -> SlackMessage:
    """A failure or retry alert from a task callback's context."""
    ti = context["ti"]
    exception = context.get("exception")
    started = getattr(ti, "start_date", None)
    duration = (datetime.now(UTC) - started).total_seconds() if started else 0.0
    verb = "failed" if kind is AlertKind.FAILURE else "will retry"
    facts = {
        "DAG": ti.dag_id,
        "Task": ti.task_id,
        "Try": f"{ti.try_number} of {ti.max_tries + 1}",
        "Duration": format_duration(duration),
        "Run": str(getattr(ti, "run_id", "")),
    }
    error = f"{type(exception).__name__}: {exception}" if exception else None
    lines = [line for line in (context.get(FAILURE_CAUSE_KEY), error) if line]
    summary = redact("\n".join(lines)) if lines else None
    return SlackMessage(kind, f"{ti.dag_id}.{ti.task_id} {verb}", facts, summary, getattr(ti, "log_url", None))


def deadline_message(context: dict[str, Any]) -> SlackMessage:
    """A deadline-miss alert from the triggerer's deadline context."""
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    facts = {
        "DAG": str(run.get("dag_id", "?")),
        "Run": str(run.get("dag_run_id", "?")),
        "Queued at": str(run.get("queued_at", "?")),
        "Deadline": str(deadline.get("deadline_time", "?")),
        "State": str(run.get("state", "?")),
    }
    return SlackMessage(AlertKind.DEADLINE, f"{facts['DAG']} missed its deadline", facts)


class PipelineAlert(SlackWebhookNotifier):
    """A Slack alert of one kind, usable as ``on_failure_callback``/``on_retry_callback``
    (sync, in the task's process) and as a deadline ``AsyncCallback`` (async, in the triggerer)."""

    def __init__(self, kind: AlertKind | str, *, slack_webhook_conn_id: str = SLACK_CONN_ID, **kwargs: Any) -> None:
        super().__init__(
            slack_webhook_conn_id=slack_webhook_conn_id,
            text="",
            timeout=SLACK_TIMEOUT_S,
            retry_handlers=NO_RETRIES,
            **kwargs,
        )
        self.kind = AlertKind(kind)

    def build(self, context: dict[str, Any]) -> SlackMessage:
        return deadline_message(context) if self.kind is AlertKind.DEADLINE else task_message(self.kind, context)

    def notify(self, context: dict[str, Any]) -> None:
        try:
            message = self.build(context)
            self.hook.send(text=message.text, attachments=message.attachments())
        except Exception as error:  # an alert never fails the pipeline
            warn_not_sent(self.log, self.kind, self.slack_webhook_conn_id, error)

    async def async_notify(self, context: dict[str, Any]) -> None:
        try:
            message = self.build(context)
            await self.hook.async_send(text=message.text, attachments=message.attachments())
        except Exception as error:
            warn_not_sent(self.log, self.kind, self.slack_webhook_conn_id, error)


def send(message: SlackMessage, conn_id: str = SLACK_CONN_ID) -> bool:
    """Send a prepared message (the success summary); False, with a warning, when it could not."""
    import logging

    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    try:
        SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=SLACK_TIMEOUT_S, retry_handlers=NO_RETRIES).send(
            text=message.text, attachments=message.attachments()
        )
        return True
    except Exception as error:
        warn_not_sent(logging.getLogger(__name__), message.kind, conn_id, error)
        return False


def warn_not_sent(log: Any, kind: AlertKind, conn_id: str, error: BaseException) -> None:
    log.warning(
        "Slack %s alert not sent (%s: %s). The pipeline goes on; check the '%s' connection.",
        kind.value,
        type(error).__name__,
        redact(str(error)),
        conn_id,
    )


async def alert_deadline_missed(context: dict[str, Any] | None = None, **_: Any) -> None:
    """The deadline ``AsyncCallback``: the triggerer awaits it with the missed run's context."""
    await PipelineAlert(AlertKind.DEADLINE).async_notify(context or {})
