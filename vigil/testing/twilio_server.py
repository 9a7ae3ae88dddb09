"""A Twilio-compatible Messages API on loopback (protocols.md §6) with Twilio-shaped faults.

Contract implemented::

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json   Basic auth AccountSid:AuthToken
         form: To (E.164), From (E.164) | MessagingServiceSid, Body (1..1600)
         -> 201 {"sid": "SM...", "status": "queued", "error_code": null, ...}
         -> 400 {"code": 21211, "message": ..., "more_info": ..., "status": 400}  (bad To, ...)
         -> 401 {"code": 20003, ...}                                             (bad credentials)
    GET  /2010-04-01/Accounts/{AccountSid}/Messages.json?To=...&DateSent>=YYYY-MM-DD
         -> 200 {"messages": [...], "page": 0, ...}   (the "check before re-send" query)

Faults for the next POSTs (``server.twilio.script(...)``): `TwilioFault.error(400, 21211)`,
`.rate_limited(retry_after)` (429/20429, never processed), `.server_error(503, processed=False)`,
`.slow(delay_s, processed=True)` (creates the message, then answers late: a client timeout that is
ambiguous). The generic loopback faults (`server.faults`), `down()`/`up()` (connection refused) also
apply. `duplicates()` lists (To, Body) pairs created more than once. `tls=True` serves HTTPS with a
certificate signed by a throw-away local CA (`ca_file`).
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import json
import re
import secrets
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.testing.loopback import App, LoopbackServer, Reply
from vigil.testing.tls import make_ca_and_server

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")


@dataclass(frozen=True)
class TwilioFault:
    """A Twilio-shaped fault for one POST."""

    kind: str  # error | rate_limited | server_error | slow
    status: int = 400
    code: int | None = None
    retry_after: float | None = None
    delay_s: float = 0.0
    processed: bool = False

    @classmethod
    def error(cls, status: int = 400, code: int = 21211) -> TwilioFault:
        """A 4xx with a Twilio error code (not processed)."""
        return cls("error", status, code)

    @classmethod
    def rate_limited(cls, retry_after: float = 1.0) -> TwilioFault:
        """429 / 20429 with Retry-After (not processed; safe to retry)."""
        return cls("rate_limited", 429, 20429, retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 503, processed: bool = False) -> TwilioFault:
        """500/503; `processed=True` creates the message anyway (ambiguous for the client)."""
        return cls("server_error", status, 20500, processed=processed)

    @classmethod
    def slow(cls, delay_s: float, processed: bool = True) -> TwilioFault:
        """Answer after `delay_s` (longer than the client's timeout = ambiguous)."""
        return cls("slow", 201, delay_s=delay_s, processed=processed)


class TwilioApp(App):
    """The Messages resource of one account."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []  # every request: method, t (time.monotonic), outcome
        self._faults: collections.deque[TwilioFault] = collections.deque()
        self._lock = threading.Lock()

    def script(self, *faults: TwilioFault) -> None:
        """Apply these faults to the next POSTs, in order."""
        with self._lock:
            self._faults.extend(faults)

    def duplicates(self) -> list[tuple[str, str]]:
        """(To, Body) pairs that were created more than once."""
        with self._lock:
            c = collections.Counter((m["to"], m["body"]) for m in self.messages)
        return [k for k, n in c.items() if n > 1]

    @staticmethod
    def _err(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
        return Reply.json(status, {"code": code, "message": message, "status": status,
                                   "more_info": f"https://www.twilio.com/docs/errors/{code}"}, headers)

    def _authorised(self, headers: dict[str, str], sid: str) -> bool:
        auth = headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return False
        try:
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return False
        return sid == self.account_sid and user == self.account_sid and secrets.compare_digest(pw, self.auth_token)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        """Route one request."""
        url = urllib.parse.urlsplit(path)
        m = _PATH.match(url.path)
        rec: dict[str, Any] = {"method": method, "t": time.monotonic(), "outcome": None}
        with self._lock:
            self.requests.append(rec)
        if not m:
            rec["outcome"] = 404
            return self._err(404, 20404, "The requested resource was not found")
        if not self._authorised(headers, m.group(1)):
            rec["outcome"] = 401
            return self._err(401, 20003, "Authenticate")
        if method == "GET":
            rec["outcome"] = 200
            return self._list(urllib.parse.parse_qs(url.query))
        if method != "POST":
            return self._err(405, 20004, "Method not allowed")
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
        rec["to"] = form.get("To")
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            rec["fault"] = fault.kind
            if fault.kind == "error":
                rec["outcome"] = fault.status
                return self._err(fault.status, fault.code or 21211, "injected error")
            if fault.kind == "rate_limited":
                rec["outcome"] = 429
                return self._err(429, 20429, "Too Many Requests",
                                 {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None)
            if fault.kind == "server_error":
                if fault.processed:
                    self._create(form)
                rec["outcome"] = fault.status
                return self._err(fault.status, fault.code or 20500, "Internal Server Error")
            if fault.kind == "slow":
                created = self._create(form) if fault.processed else None
                time.sleep(fault.delay_s)
                rec["outcome"] = 201 if created else 503
                return Reply.json(201, created) if created else self._err(503, 20500, "slow and failed")
        to, frm, text = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        if not E164.match(to):
            rec["outcome"] = 400
            return self._err(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not (E164.match(frm) or form.get("MessagingServiceSid")):
            rec["outcome"] = 400
            return self._err(400, 21606, "The 'From' phone number provided is not a valid message-capable number")
        if not text or len(text) > 1600:
            rec["outcome"] = 400
            return self._err(400, 21602 if not text else 21617, "Message body is required or too long")
        rec["outcome"] = 201
        return Reply.json(201, self._create(form))

    def _create(self, form: dict[str, str]) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        msg = {"sid": "SM" + secrets.token_hex(16), "account_sid": self.account_sid, "to": form.get("To"),
               "from": form.get("From"), "body": form.get("Body", ""), "status": "queued", "error_code": None,
               "error_message": None, "num_segments": "1", "direction": "outbound-api",
               "date_created": now.strftime("%a, %d %b %Y %H:%M:%S +0000"), "date_sent": None,
               "api_version": "2010-04-01", "created_mono": time.monotonic()}
        with self._lock:
            self.messages.append(msg)
        return {k: v for k, v in msg.items() if k != "created_mono"}

    def _list(self, q: dict[str, list[str]]) -> Reply:
        to = q.get("To", [None])[0]
        since = q.get("DateSent>", [None])[0] or q.get("DateSent>=", [None])[0]
        with self._lock:
            msgs = [dict(m) for m in self.messages if to is None or m["to"] == to]
        if since:
            day = dt.datetime.strptime(since[:10], "%Y-%m-%d").replace(tzinfo=dt.UTC)
            msgs = [m for m in msgs if dt.datetime.strptime(m["date_created"], "%a, %d %b %Y %H:%M:%S +0000")
                    .replace(tzinfo=dt.UTC) >= day]
        for m in msgs:
            m.pop("created_mono", None)
        msgs.reverse()  # newest first, as Twilio lists them
        return Reply.json(200, {"messages": msgs, "page": 0, "page_size": 50, "first_page_uri": None,
                                "next_page_uri": None, "previous_page_uri": None, "uri": ""})


class TwilioServer:
    """Loopback Twilio: `with TwilioServer() as tw: tw.base_url, tw.account_sid, tw.auth_token, tw.twilio`."""

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None, tls: bool = False) -> None:
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        self.twilio = TwilioApp(self.account_sid, self.auth_token)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_file: Path | None = None
        ctx = None
        if tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="vigil-twilio-ca-")
            files = make_ca_and_server(Path(self._tmp.name), name="vigil-twilio")
            ctx, self.ca_file = files.server_context(), files.ca_cert
        self.server = LoopbackServer(self.twilio, name="twilio", ssl_context=ctx)

    @property
    def base_url(self) -> str:
        """Base URL to put in TwilioSettings.base_url."""
        return self.server.base_url

    def start(self) -> TwilioServer:
        """Serve in the background."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop and remove the CA folder."""
        self.server.stop()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> TwilioServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def posts(self) -> list[dict[str, Any]]:
        """Every POST seen, in order."""
        return [r for r in self.twilio.requests if r["method"] == "POST"]

    def dump(self) -> str:
        """JSON of the stored messages (debugging)."""
        return json.dumps(self.twilio.messages, indent=1, default=str)
