"""A TCP proxy in front of a warehouse that can stop answering, for drills of a hung warehouse.

It relays bytes both ways until told to stall, or until a client sends bytes holding a chosen
pattern (a statement's text on Postgres's wire, ``/queries/v1/query-request`` on Snowflake's HTTP):
from then on it answers nothing, as a paused server or a network partition behind a live
TCP peer does. Connections stay open (the kernel still acknowledges, so TCP keepalives see a live
peer), new ones are accepted and held without a word, and what clients send is swallowed.
:meth:`FaultProxy.heal` closes every held connection and relays again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

_CHUNK = 65536


@dataclass
class FaultProxy:
    """Relays ``127.0.0.1:<port>`` to ``upstream_host:upstream_port``.

    :param stall_on: bytes that, once a client sends them, make the proxy stall, or a test of what a
        client sent (e.g. :func:`snowflake_statement_holding`); None: only :meth:`stall`.
    :attr stalled_at: when it last began to stall (``time.time()``).
    """

    upstream_host: str
    upstream_port: int
    stall_on: bytes | Callable[[bytes], bool] | None = None
    port: int = 0
    stalled: threading.Event = field(default_factory=threading.Event)
    stalled_at: float | None = None
    _listener: socket.socket | None = None
    _held: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FaultProxy:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()
        return self

    def stall(self) -> None:
        if not self.stalled.is_set():
            self.stalled_at = time.time()
        self.stalled.set()

    def heal(self) -> None:
        """Relay again; the connections held while stalled are closed (their clients see a reset)."""
        self.stall_on = None
        with self._lock:
            held, self._held = self._held, []
            self.stalled.clear()
        for sock in held:
            _close(sock)

    def close(self) -> None:
        if self._listener is not None:
            _close(self._listener)
        self.heal()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            self._hold(client)
            if self.stalled.is_set():
                continue  # accepted, never answered
            try:
                upstream = socket.create_connection((self.upstream_host, self.upstream_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            self._hold(upstream)
            threading.Thread(target=self._relay, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._relay, args=(upstream, client, False), daemon=True).start()

    def _hold(self, sock: socket.socket) -> None:
        with self._lock:  # (closed ones dropped: a long drill opens many)
            self._held = [*(held for held in self._held if held.fileno() != -1), sock]

    def _relay(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        while True:
            try:
                data = source.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                if not self.stalled.is_set():  # a stalled peer never closes either
                    _close(target)
                return
            if from_client and self._stalls_on(data):
                self.stall()
            if self.stalled.is_set():
                continue  # swallowed
            try:
                target.sendall(data)
            except OSError:
                return

    def _stalls_on(self, data: bytes) -> bool:
        if self.stall_on is None:
            return False
        return self.stall_on(data) if callable(self.stall_on) else self.stall_on in data


def snowflake_statement_holding(marker: bytes) -> Callable[[bytes], bool]:
    """A :attr:`FaultProxy.stall_on` test for the Snowflake connector's HTTP: a query request whose
    statement holds ``marker``, in any case (the connector gzips request bodies)."""

    def holds(data: bytes) -> bool:
        head, separator, body = data.partition(b"\r\n\r\n")
        if not separator or b"/queries/v1/query-request" not in head:
            return False
        try:
            text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body)
        except zlib.error:
            text = body
        return marker.lower() in text.lower()

    return holds


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
