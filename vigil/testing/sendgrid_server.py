"""Loopback SendGrid-style mail API: ``POST /v3/mail/send`` → 202 + ``X-Message-Id``.

Checks the Bearer key and the JSON shape; errors as ``{"errors": [{"message", "field", "help"}]}``.
Dedupes on ``custom_args.vigil_key``: `received` counts every accepted request, `applied` the mails
that would really go out.
"""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any

from vigil.testing.loopback import App, LoopbackServer, Reply


class SendgridApp(App):
    """State of the fake mail API."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.received = 0
        self.applied: list[dict[str, Any]] = []
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _error(status: int, message: str, field: str | None = None) -> Reply:
        return Reply.json(status, {"errors": [{"message": message, "field": field, "help": None}]})

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        """Route one request."""
        if path != "/v3/mail/send" or method != "POST":
            return self._error(404, "not found")
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(401, "The provided authorization grant is invalid, expired, or revoked")
        try:
            mail = json.loads(body)
            to = [t["email"] for p in mail["personalizations"] for t in p["to"]]
            assert to and mail["from"]["email"] and mail["subject"] and mail["content"][0]["value"]
        except (ValueError, KeyError, TypeError, IndexError, AssertionError):
            return self._error(400, "The mail is malformed", "personalizations")
        if any("@" not in t for t in to):
            return self._error(400, "Does not contain a valid address.", "personalizations.0.to.0.email")
        key = str(mail.get("custom_args", {}).get("vigil_key", "")) or secrets.token_hex(8)
        with self._lock:
            self.received += 1
            msg_id = self._keys.get(key)
            if msg_id is None:
                msg_id = secrets.token_urlsafe(16)
                self._keys[key] = msg_id
                self.applied.append(mail)
        return Reply(202, b"", {"X-Message-Id": msg_id})


def sendgrid_server(api_key: str, **kw: Any) -> LoopbackServer:
    """A loopback SendGrid-style server (use as a context manager)."""
    return LoopbackServer(SendgridApp(api_key), name="sendgrid", **kw)
