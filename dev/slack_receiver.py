"""A local stand-in for Slack's incoming-webhook endpoint.

It answers like Slack (``200 ok`` for a known token, ``403 invalid_token`` otherwise) and keeps
every message, so alerts can be read locally (``GET /messages``) and asserted in drills. Messages
are also appended to a JSON-lines file when one is given, so they survive a restart.

Run: ``python -m dev.slack_receiver --port 3030 --token T0/B0/x --log .local/slack.jsonl``
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

WEBHOOK_PREFIX = "/services/"


class SlackReceiver:
    """Holds the received messages; ``serve_in_thread`` runs it for tests and the local stack."""

    def __init__(self, token: str | None = None, log_file: Path | None = None) -> None:
        self.token = token
        self.log_file = log_file
        self._messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._messages)

    def record(self, token: str, payload: dict[str, Any]) -> None:
        entry = {"received_at": time.time(), "token_ok": True, "payload": payload}
        with self._lock:
            self._messages.append(entry)
            if self.log_file is not None:
                with self.log_file.open("a") as sink:
                    sink.write(json.dumps(entry) + "\n")

    def serve_in_thread(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Bind, start serving in a daemon thread, return the webhook base URL."""
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        bound_host, bound_port = self._server.server_address[:2]
        return f"http://{bound_host}:{bound_port}{WEBHOOK_PREFIX.rstrip('/')}"

    def serve_forever(self, port: int, host: str = "127.0.0.1") -> None:
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.serve_forever()

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _handler_for(receiver: SlackReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if not self.path.startswith(WEBHOOK_PREFIX):
                return self._reply(HTTPStatus.NOT_FOUND, "no_service")
            token = self.path[len(WEBHOOK_PREFIX) :]
            if receiver.token is not None and token != receiver.token:
                return self._reply(HTTPStatus.FORBIDDEN, "invalid_token")
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                return self._reply(HTTPStatus.BAD_REQUEST, "invalid_payload")
            receiver.record(token, payload)
            self._reply(HTTPStatus.OK, "ok")

        def do_GET(self) -> None:
            if self.path == "/health":
                return self._reply(HTTPStatus.OK, "ok")
            if self.path == "/messages":
                body = json.dumps([m["payload"] for m in receiver.messages])
                return self._reply(HTTPStatus.OK, body, "application/json")
            self._reply(HTTPStatus.NOT_FOUND, "no_service")

        def _reply(self, status: HTTPStatus, body: str, content_type: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # keep webhook tokens out of logs
            return

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", help="accepted webhook token (path after /services/); any if omitted")
    parser.add_argument("--log", type=Path, help="append received messages to this JSON-lines file")
    args = parser.parse_args()
    SlackReceiver(args.token, args.log).serve_forever(args.port, args.host)


if __name__ == "__main__":
    main()
