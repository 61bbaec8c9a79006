"""Slack alerts reach a real webhook receiver through the provider's hook, and never fail the caller."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from dev.embedded_postgres import find_free_port
from dev.slack_receiver import SlackReceiver
from include.orchestration.alerts import (
    AlertKind,
    PipelineAlert,
    SlackMessage,
    record_failure_cause,
    redact,
    send,
)

TOKEN = "T0TEST/B0TEST/very-secret-token"


def use_slack_connection(monkeypatch, host: str, token: str = TOKEN) -> None:
    """The Airflow way to supply a connection: an AIRFLOW_CONN_<ID> environment variable."""
    body = {"conn_type": "slackwebhook", "host": host, "password": token}
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", json.dumps(body))


@pytest.fixture
def slack(monkeypatch):
    receiver = SlackReceiver(token=TOKEN)
    receiver.base_url = receiver.serve_in_thread()
    use_slack_connection(monkeypatch, receiver.base_url)
    yield receiver
    receiver.shutdown()


@pytest.fixture
def warnings_logged(caplog, capsys):
    """Everything logged at WARNING or above, whether through logging or Airflow's structlog."""
    caplog.set_level(logging.WARNING)
    return lambda: caplog.text + capsys.readouterr().out


def failed_task_context() -> dict:
    ti = SimpleNamespace(
        dag_id="ecommerce_elt",
        task_id="extract_orders",
        try_number=3,
        max_tries=2,
        run_id="manual__1",
        start_date=datetime.now(UTC) - timedelta(seconds=75),
        log_url="http://localhost:8080/log",
    )
    return {"ti": ti, "exception": RuntimeError("source database unreachable")}


def only_attachment(receiver: SlackReceiver) -> dict:
    [message] = receiver.messages
    [attachment] = message["payload"]["attachments"]
    return attachment


def test_failure_alert_names_dag_task_try_error_and_log(slack) -> None:
    PipelineAlert(AlertKind.FAILURE).notify(failed_task_context())
    attachment = only_attachment(slack)
    body = json.dumps(attachment)
    assert attachment["color"] == "#D72C2C"
    for expected in (
        "ecommerce_elt",
        "extract_orders",
        "3 of 3",
        "RuntimeError: source database unreachable",
        "1m 15s",
        "http://localhost:8080/log",
    ):
        assert expected in body
    assert slack.messages[0]["payload"]["text"].endswith("ecommerce_elt.extract_orders failed")


def test_a_recorded_cause_heads_the_alert_scrubbed_and_the_exception_follows(slack) -> None:
    """A watchdog that stopped dbt from another thread: the exception only has dbt's exit code."""
    context = failed_task_context()
    context["exception"] = RuntimeError("dbt command failed. The command returned a non-zero exit code -15.")
    record_failure_cause(context, "Warehouse Connection 'w' failed every probe (https://u:pw@host/x)")
    PipelineAlert(AlertKind.FAILURE).notify(context)
    [detail] = [block["text"]["text"] for block in only_attachment(slack)["blocks"][2:3]]
    assert detail.startswith("```Warehouse Connection 'w' failed every probe (https://***@host/x)\nRuntimeError: dbt")


def test_retry_alert_is_amber(slack) -> None:
    PipelineAlert("retry").notify(failed_task_context())
    assert only_attachment(slack)["color"] == "#E8A33D"


def test_deadline_alert_runs_async_with_the_triggerer_context(slack) -> None:
    context = {
        "dag_run": {
            "dag_id": "ecommerce_elt",
            "dag_run_id": "scheduled__x",
            "queued_at": "2026-11-23T06:00:00Z",
            "state": "running",
        },
        "deadline": {"deadline_time": "2026-11-23T06:30:00Z"},
    }
    asyncio.run(PipelineAlert(AlertKind.DEADLINE).async_notify(context))
    body = json.dumps(only_attachment(slack))
    assert "missed its deadline" in slack.messages[0]["payload"]["text"]
    assert "2026-11-23T06:30:00Z" in body


def test_success_summary_is_sent(slack) -> None:
    assert send(SlackMessage(AlertKind.SUCCESS, "ecommerce_elt succeeded", {"Rows loaded": "1,234"}))
    assert "1,234" in json.dumps(only_attachment(slack))


def test_unreachable_slack_only_warns_and_hides_the_token(monkeypatch, warnings_logged) -> None:
    use_slack_connection(monkeypatch, f"http://127.0.0.1:{find_free_port()}/services")
    PipelineAlert(AlertKind.FAILURE).notify(failed_task_context())  # must not raise
    assert send(SlackMessage(AlertKind.SUCCESS, "done")) is False
    logged = warnings_logged()
    assert logged.count("alert not sent") == 2
    assert "very-secret-token" not in logged


def test_missing_connection_only_warns(warnings_logged) -> None:
    PipelineAlert(AlertKind.FAILURE, slack_webhook_conn_id="no_such_connection").notify(failed_task_context())
    assert "check the 'no_such_connection' connection" in warnings_logged()


def test_wrong_token_only_warns(slack, monkeypatch, warnings_logged) -> None:
    use_slack_connection(monkeypatch, slack.base_url, token="T0/B0/wrong")
    PipelineAlert(AlertKind.FAILURE).notify(failed_task_context())
    assert slack.messages == []
    assert "invalid_token" in warnings_logged()


def test_redact_strips_webhook_paths() -> None:
    assert redact("POST http://h/services/T0/B0/abc failed") == "POST http://h/services/*** failed"
    assert len(redact("x" * 5000)) == 500


def a_real_unique_violation(dsn: str) -> Exception:
    """What psycopg raises on a duplicate key: its DETAIL line quotes the row's key values."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE customers (email text PRIMARY KEY)")
        conn.execute("INSERT INTO customers VALUES ('jane.doe@example.com')")
        try:
            conn.execute("INSERT INTO customers VALUES ('jane.doe@example.com')")
        except psycopg.errors.UniqueViolation as error:
            return error
    raise AssertionError("the duplicate insert did not fail")


@pytest.mark.parametrize("kind", [AlertKind.FAILURE, AlertKind.RETRY])
def test_alert_text_carries_no_credentials_or_row_values(slack, new_database, kind) -> None:
    from urllib.parse import quote

    violation = a_real_unique_violation(new_database("alerts"))
    assert "jane.doe@example.com" in str(violation)  # the driver does quote it
    url = "https://landing-user:Landing-Pa55@files.example.com/marketing"
    landing = RuntimeError(f"Landing location {url} not readable; retried {quote(url, safe='')}")
    for error in (violation, landing):
        context = {**failed_task_context(), "exception": error}
        PipelineAlert(kind).notify(context)
    body = json.dumps([m["payload"] for m in slack.messages])
    assert len(slack.messages) == 2 and "UniqueViolation: duplicate key value" in body
    assert "files.example.com" in body  # where it failed stays readable
    for secret in ("jane.doe@example.com", "Landing-Pa55", quote("Landing-Pa55", safe=""), "landing-user"):
        assert secret not in body, secret
