"""A small threaded HTTP(S) server on loopback with fault injection, the base of the test receivers.

Faults (``server.faults.push(...)`` for the next requests, or ``server.faults.always(...)``):
``refuse`` is done by ``server.down()`` / ``server.up()`` (the port really closes); ``status`` answers
e.g. 500/502/503 or 429 with ``Retry-After``; ``slow`` delays the answer; ``timeout`` holds the
request longer than any sane client timeout; ``garbage`` answers 200 with a non-JSON body;
``drop_after_apply`` applies the request and then closes the connection without answering (the
client sees an ambiguous failure and will send the same thing again).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Fault:
    """One injected fault."""

    kind: str  # status | slow | timeout | garbage | drop_after_apply
    status: int = 503
    retry_after: str | None = None
    delay_s: float = 0.0
    body: bytes = b""


@dataclass
class Reply:
    """What a handler answers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> Reply:
        """A JSON reply."""
        return cls(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})


class FaultPlan:
    """Faults to apply to the coming requests (queue first, then the persistent one)."""

    def __init__(self) -> None:
        self._queue: collections.deque[Fault] = collections.deque()
        self._always: Fault | None = None
        self._lock = threading.Lock()

    def push(self, fault: Fault, times: int = 1) -> None:
        """Apply `fault` to the next `times` requests."""
        with self._lock:
            self._queue.extend([fault] * times)

    def always(self, fault: Fault | None) -> None:
        """Apply `fault` to every request (None clears)."""
        with self._lock:
            self._always = fault

    def clear(self) -> None:
        """Remove all faults."""
        with self._lock:
            self._queue.clear()
            self._always = None

    def next(self) -> Fault | None:
        """The fault for this request, if any."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            return self._always


class App:
    """Override `handle`; the server calls it for each request not short-circuited by a fault."""

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        """Answer one request."""
        return Reply(404)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.server.name, *args)

    def _any(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        srv = self.server
        srv.requests_seen += 1
        fault = srv.faults.next()
        if fault is not None:
            if fault.kind in ("slow", "timeout"):
                time.sleep(fault.delay_s if fault.kind == "slow" else max(fault.delay_s, 30.0))
                if fault.kind == "timeout":
                    self.close_connection = True
                    return
            elif fault.kind == "status":
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return self._send(Reply(fault.status, fault.body or b'{"error":"injected"}',
                                        {"Content-Type": "application/json", **extra}))
            elif fault.kind == "garbage":
                return self._send(Reply(200, fault.body or b"<html>proxy says hello</html>",
                                        {"Content-Type": "application/json"}))
        try:
            reply = srv.app.handle(self.command, self.path, headers, body)
        except Exception:  # noqa: BLE001 - a test server answers 500 like a real one
            log.exception("%s handler failed", srv.name)
            reply = Reply(500, b'{"error":"internal"}')
        if fault is not None and fault.kind == "drop_after_apply":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any


class LoopbackServer(ThreadingHTTPServer):
    """HTTP(S) server on 127.0.0.1 in a background thread; `down()`/`up()` refuse connections for real."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, app: App, *, name: str = "loopback", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.app = app
        self.name = name
        self.faults = FaultPlan()
        self.requests_seen = 0
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        self._ssl = ssl_context
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """http(s)://127.0.0.1:<port>."""
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(5)
            self._thread = None
        self.server_close()

    def down(self) -> None:
        """Close the listening socket and every open connection: clients now get "connection refused"."""
        self.stop()
        with self.conn_lock:
            conns = list(self.connections)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def up(self) -> None:
        """Listen again on the same port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.socket = self._ssl.wrap_socket(sock, server_side=True) if self._ssl else sock
        self.start()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
