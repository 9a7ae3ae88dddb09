"""Loopback booking platform: checks Vigil-Signature, dedupes events by id, serves a room roster.

``POST /v1/events`` — body ``{"events": [...]}``; 401 on a bad signature; answers
``{"results": [{"id", "status": "applied"|"duplicate"|"rejected", "reason"?}]}``.
``GET /v1/rooms/<room>/roster`` — the roster set with `set_roster` (ETag / If-None-Match → 304).
Counts `received` (every event seen, duplicates included), `applied` (in arrival order), `posts` and `bytes_in`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from vigil.sync.booking import SIGNATURE_HEADER, SignatureError, verify_header
from vigil.testing.loopback import App, LoopbackServer, Reply


class BookingApp(App):
    """State of the fake booking platform."""

    def __init__(self, secret: bytes, *, reject_types: tuple[str, ...] = ()) -> None:
        self.secret = secret
        self.reject_types = reject_types
        self.applied: list[dict[str, Any]] = []
        self.applied_ids: set[str] = set()
        self.received = 0
        self.bytes_in = 0  # request bodies of POST /v1/events (what went on the wire)
        self.posts = 0
        self.signature_failures: list[str] = []
        self.roster: Any = None
        self.roster_raw: bytes | None = None
        self._lock = threading.Lock()

    def set_roster(self, roster: Any) -> None:
        """Serve `roster` (a JSON-able object) from now on."""
        self.roster_raw = json.dumps(roster).encode()

    def set_roster_raw(self, raw: bytes) -> None:
        """Serve raw bytes (for malformed-roster tests)."""
        self.roster_raw = raw

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        """Route one request."""
        if method == "POST" and path == "/v1/events":
            return self._events(headers, body)
        if method == "GET" and path.startswith("/v1/rooms/") and path.endswith("/roster"):
            if self.roster_raw is None:
                return Reply.json(404, {"error": "no roster for this room"})
            etag = '"' + hashlib.sha256(self.roster_raw).hexdigest()[:16] + '"'
            if headers.get("if-none-match") == etag:
                return Reply(304, b"", {"ETag": etag})
            return Reply(200, self.roster_raw, {"Content-Type": "application/json", "ETag": etag})
        if method in ("GET", "HEAD") and path == "/health":
            return Reply.json(200, {"ok": True})
        return Reply.json(404, {"error": f"no route {method} {path}"})

    def _events(self, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            self.bytes_in += len(body)
            self.posts += 1
        try:
            verify_header(self.secret, body, headers.get(SIGNATURE_HEADER.lower()))
        except SignatureError as exc:
            self.signature_failures.append(str(exc))
            return Reply.json(401, {"error": str(exc)})
        try:
            events = json.loads(body)["events"]
            assert isinstance(events, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            return Reply.json(400, {"error": "body must be {\"events\": [...]}"})
        results: list[dict[str, Any]] = []
        with self._lock:
            for ev in events:
                self.received += 1
                ev_id = ev.get("id") if isinstance(ev, dict) else None
                if not ev_id or not isinstance(ev.get("type"), str):
                    results.append({"id": str(ev_id), "status": "rejected", "reason": "missing id or type"})
                elif ev["type"] in self.reject_types:
                    results.append({"id": ev_id, "status": "rejected", "reason": f"unknown type {ev['type']}"})
                elif ev_id in self.applied_ids:
                    results.append({"id": ev_id, "status": "duplicate"})
                else:
                    self.applied_ids.add(ev_id)
                    self.applied.append(ev)
                    results.append({"id": ev_id, "status": "applied"})
        return Reply.json(200, {"results": results})


def booking_server(secret: bytes, **kw: Any) -> LoopbackServer:
    """A started-on-enter loopback booking server (`with booking_server(b"s") as srv:`)."""
    app = BookingApp(secret, reject_types=kw.pop("reject_types", ()))
    return LoopbackServer(app, name="booking", **kw)
