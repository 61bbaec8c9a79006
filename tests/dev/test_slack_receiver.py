"""The local Slack stand-in answers like Slack and keeps what it received."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from dev.slack_receiver import SlackReceiver


@pytest.fixture
def receiver(tmp_path):
    receiver = SlackReceiver(token="T0/B0/secret", log_file=tmp_path / "messages.jsonl")
    base_url = receiver.serve_in_thread()
    yield receiver, base_url
    receiver.shutdown()


def post(url: str, payload: dict) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_known_token_is_accepted_and_recorded(receiver, tmp_path) -> None:
    slack, base_url = receiver
    assert post(f"{base_url}/T0/B0/secret", {"text": "hello"}) == (200, "ok")
    assert [m["payload"] for m in slack.messages] == [{"text": "hello"}]
    logged = [json.loads(line) for line in (tmp_path / "messages.jsonl").read_text().splitlines()]
    assert logged[0]["payload"] == {"text": "hello"}


def test_wrong_token_is_refused_like_slack(receiver) -> None:
    slack, base_url = receiver
    assert post(f"{base_url}/T0/B0/wrong", {"text": "x"}) == (403, "invalid_token")
    assert slack.messages == []


def test_messages_endpoint_lists_payloads(receiver) -> None:
    _slack, base_url = receiver
    post(f"{base_url}/T0/B0/secret", {"blocks": [{"type": "section"}]})
    root = base_url.rsplit("/services", 1)[0]
    with urllib.request.urlopen(f"{root}/messages", timeout=5) as response:
        assert json.loads(response.read()) == [{"blocks": [{"type": "section"}]}]
