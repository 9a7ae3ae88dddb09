"""Messaging destinations: SendGrid-style e-mail and Twilio-style SMS (session summaries).

E-mail (``email`` stream): ``POST {base}/v3/mail/send`` with a Bearer key; success is **202 with an
``X-Message-Id`` header**; errors are ``{"errors": [{"message", "field", "help"}]}``. The outbox key
travels in ``custom_args.vigil_key`` so a receiver (and the loopback one) can dedupe.

SMS (``sms`` stream): ``POST {base}/2010-04-01/Accounts/{sid}/Messages.json`` (form, Basic auth) →
201. Twilio has no idempotency key, so every body carries ``[ref <key8>]`` and, before (re)sending,
we list ``Messages.json?To=..&DateSent>=<day>`` and skip the send when that ref is already there
(a timeout or a kill after Twilio accepted must not text the clinician twice).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from vigil.sync.outcome import BatchResult, Kind, Row, classify_status, retry_after_from

log = logging.getLogger(__name__)


def _errors_text(r: Any) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return "; ".join(str(e.get("message")) + (f" ({e['field']})" if e.get("field") else "")
                         for e in body["errors"] if isinstance(e, dict))[:300]
    if isinstance(body, dict) and "code" in body:
        return f"{body.get('code')}: {body.get('message')}"[:300]
    return r.text[:200]


class SendgridDestination:
    """One e-mail per outbox row: payload ``{"to": [emails], "subject", "text"}``."""

    name = "email"
    batch_size = 1

    def __init__(self, base_url: str, api_key: str, from_email: str, *, session: Any, timeout_s: float = 10.0) -> None:
        self.url = base_url.rstrip("/") + "/v3/mail/send"
        self._key = api_key
        self.from_email = from_email
        self._session = session
        self._timeout = timeout_s

    def deliver(self, rows: Sequence[Row]) -> BatchResult:
        """Send each row; only 202 + X-Message-Id counts as delivered."""
        import requests

        res = BatchResult()
        for row in rows:
            p = row.payload
            to = p.get("to")
            if isinstance(to, str):
                to = [to]
            if not to or not p.get("subject") or not p.get("text"):
                res.dead.append((row.id, "email payload needs to, subject and text"))
                continue
            body = {"personalizations": [{"to": [{"email": e} for e in to]}],
                    "from": {"email": self.from_email}, "subject": str(p["subject"]),
                    "content": [{"type": "text/plain", "value": str(p["text"])}],
                    "custom_args": {"vigil_key": row.idempotency_key}}
            try:
                r = self._session.post(self.url, json=body, timeout=self._timeout,
                                       headers={"Authorization": f"Bearer {self._key}"})
            except requests.exceptions.RequestException as exc:
                res.retry.append(row.id)
                res.error, res.ambiguous = f"network: {type(exc).__name__}", True
                break
            kind = classify_status(r.status_code)
            if r.status_code == 202 and r.headers.get("X-Message-Id"):
                res.delivered.append(row.id)
            elif kind is Kind.DEAD and r.status_code not in (401, 403):
                res.dead.append((row.id, f"HTTP {r.status_code}: {_errors_text(r)}"))
            else:
                res.retry.append(row.id)
                res.error = (f"HTTP {r.status_code}: {_errors_text(r)}" if r.status_code != 202
                             else "202 without X-Message-Id (not counted as delivered)")
                res.retry_after_s = retry_after_from(r.headers, time.time())
                break
        return res


def sms_ref(idempotency_key: str) -> str:
    """Short reference put in an SMS body to recognise it when listing sent messages."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:8]


class TwilioDestination:
    """One SMS per outbox row: payload ``{"to": "+E164", "body": str}``."""

    name = "sms"
    batch_size = 1

    def __init__(self, base_url: str, account_sid: str, auth_token: str, from_number: str, *, session: Any,
                 timeout_s: float = 10.0) -> None:
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = (account_sid, auth_token)
        self.from_number = from_number
        self._session = session
        self._timeout = timeout_s
        self.lookups = 0
        self.skipped_as_sent = 0

    def _already_sent(self, to: str, ref: str, created_wall: float) -> bool | None:
        """Is a message with this ref to `to` already at Twilio? None when we cannot tell."""
        import requests

        day = dt.datetime.fromtimestamp(created_wall - 86400, tz=dt.UTC).strftime("%Y-%m-%d")
        self.lookups += 1
        try:
            r = self._session.get(self.url, params={"To": to, "DateSent>": day}, auth=self._auth, timeout=self._timeout)
            if r.status_code != 200:
                return None
            return any(f"[ref {ref}]" in str(m.get("body", "")) for m in r.json().get("messages", []))
        except (requests.exceptions.RequestException, ValueError, AttributeError):
            return None

    def deliver(self, rows: Sequence[Row]) -> BatchResult:
        """Check, then send; 201 with a sid is delivered; 429 retries after Retry-After; 4xx dead."""
        import requests

        res = BatchResult()
        for row in rows:
            to, text = row.payload.get("to"), row.payload.get("body")
            if not isinstance(to, str) or not isinstance(text, str) or not text:
                res.dead.append((row.id, "sms payload needs to and body"))
                continue
            ref = sms_ref(row.idempotency_key)
            sent = self._already_sent(to, ref, getattr(row, "created_wall", time.time()))
            if sent is None:
                res.retry.append(row.id)
                res.error = "cannot check whether the SMS was already sent; not re-sending blindly"
                break
            if sent:
                self.skipped_as_sent += 1
                res.delivered.append(row.id)
                continue
            body = f"{text} [ref {ref}]"
            try:
                r = self._session.post(self.url, data={"To": to, "From": self.from_number, "Body": body},
                                       auth=self._auth, timeout=self._timeout)
            except requests.exceptions.RequestException as exc:
                res.retry.append(row.id)
                res.error, res.ambiguous = f"network: {type(exc).__name__}", True
                break
            kind = classify_status(r.status_code)
            ok = False
            if r.status_code == 201:
                try:
                    ok = str(r.json().get("sid", "")).startswith("SM")
                except (ValueError, AttributeError):
                    ok = False
            if ok:
                res.delivered.append(row.id)
            elif kind is Kind.DEAD and r.status_code not in (401, 403):
                res.dead.append((row.id, f"HTTP {r.status_code}: {_errors_text(r)}"))
            else:
                res.retry.append(row.id)
                res.error = f"HTTP {r.status_code}: {_errors_text(r)}"
                res.retry_after_s = retry_after_from(r.headers, time.time())
                break
        return res
