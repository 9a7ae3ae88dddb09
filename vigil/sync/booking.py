"""Booking platform: signed domain events posted in batches, and the request signature.

Signature (same scheme as Stripe webhooks, reference protocols.md §6):
``Vigil-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, f"{t}." + raw body)>``; receivers accept any
``v1`` that matches in constant time and reject when ``|now - t| > 300 s``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vigil.errors import SyncError
from vigil.sync.outcome import BatchResult, Kind, Row, classify_status, retry_after_from

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Vigil-Signature"
TOLERANCE_S = 300
EVENT_TYPES = ("session.started", "session.ended", "guest.checked_in", "guest.checked_out",
               "alarm.raised", "alarm.acknowledged", "alarm.escalated", "alarm.resolved",
               "vitals.summary", "export.created", "device.lost", "device.recovered")


class SignatureError(SyncError):
    """A Vigil-Signature header is missing, malformed, stale or does not match."""


def signature(secret: bytes, body: bytes, t: int) -> str:
    """Hex HMAC-SHA256 of ``f"{t}.".encode() + body`` with `secret`."""
    return hmac.new(secret, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign_header(secret: bytes, body: bytes, t: int | None = None) -> str:
    """The ``Vigil-Signature`` header value for `body` at time `t` (now by default)."""
    t = int(time.time()) if t is None else int(t)
    return f"t={t},v1={signature(secret, body, t)}"


def verify_header(secret: bytes, body: bytes, header: str | None, *, now: float | None = None,
                  tolerance_s: float = TOLERANCE_S) -> int:
    """Check a ``Vigil-Signature`` header; return its timestamp or raise SignatureError saying why."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    t: int | None = None
    sigs: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                t = int(value)
            except ValueError:
                raise SignatureError(f"{SIGNATURE_HEADER}: timestamp {value!r} is not an integer") from None
        elif key == "v1":
            sigs.append(value)
    if t is None or not sigs:
        raise SignatureError(f"{SIGNATURE_HEADER}: needs t=<unix> and at least one v1=<hex>")
    expected = signature(secret, body, t)
    if not any(hmac.compare_digest(expected, s) for s in sigs):
        raise SignatureError(f"{SIGNATURE_HEADER}: no v1 signature matches the body")
    now = time.time() if now is None else now
    if abs(now - t) > tolerance_s:
        raise SignatureError(f"{SIGNATURE_HEADER}: timestamp {t} is {abs(now - t):.0f} s from now "
                             f"(tolerance {tolerance_s:.0f} s)")
    return t


class DomainEvent(BaseModel):
    """``{type, id, timestamp, source, data}`` as posted to the booking platform."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(pattern=r"^[a-z_]+\.[a-z_]+$")
    id: str = Field(min_length=1, max_length=128)
    timestamp: str  # RFC 3339 UTC
    source: str = Field(min_length=1)
    data: dict[str, Any] = {}


def make_event(event_type: str, data: dict[str, Any], *, source: str, wall: float,
               event_id: str | None = None) -> dict[str, Any]:
    """A booking domain event dict (id defaults to a fresh ``evt_<uuid4>``); use its id as idempotency key."""
    from vigil.sync.fhir_mapping import iso

    ev = DomainEvent(type=event_type, id=event_id or f"evt_{uuid.uuid4().hex}", timestamp=iso(wall),
                     source=source, data=data)
    return ev.model_dump()


class _Result(BaseModel):
    id: str
    status: Literal["applied", "duplicate", "rejected"]
    reason: str | None = None


class _BatchAnswer(BaseModel):
    results: list[_Result]


class BookingDestination:
    """POSTs ``{"events": [...]}`` to the booking events URL with a Vigil-Signature."""

    name = "booking"

    def __init__(self, url: str, secret: bytes, *, session: Any, batch_size: int = 100, timeout_s: float = 10.0,
                 now: Callable[[], float] = time.time) -> None:
        self.url = url
        self.batch_size = batch_size
        self._secret = secret
        self._session = session
        self._timeout = timeout_s
        self._now = now

    def deliver(self, rows: Sequence[Row]) -> BatchResult:
        """Send one batch; each event is applied once by the receiver thanks to its id."""
        import requests

        res = BatchResult()
        events: list[dict[str, Any]] = []
        by_id: dict[str, int] = {}
        for row in rows:
            try:
                ev = DomainEvent.model_validate(row.payload)
            except ValidationError as exc:
                res.dead.append((row.id, f"invalid domain event: {exc.errors()[0]['msg']}"))
                continue
            events.append(ev.model_dump())
            by_id[ev.id] = row.id
        if not events:
            return res
        body = json.dumps({"events": events}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign_header(self._secret, body, int(self._now())),
                   "Idempotency-Key": hashlib.sha256(",".join(by_id).encode()).hexdigest()[:32]}
        pending = list(by_id.values())
        try:
            r = self._session.post(self.url, data=body, headers=headers, timeout=self._timeout)
        except requests.exceptions.RequestException as exc:
            res.retry, res.error, res.ambiguous = pending, f"network: {type(exc).__name__}", True
            return res
        kind = classify_status(r.status_code)
        if kind is Kind.RETRY:
            res.retry, res.error = pending, f"HTTP {r.status_code}"
            res.retry_after_s = retry_after_from(r.headers, self._now())
            return res
        if kind is Kind.DEAD:
            reason = f"HTTP {r.status_code}: {r.text[:200]}"
            if r.status_code in (401, 403):  # a wrong secret is not the events' fault: keep them
                res.retry, res.error = pending, reason
            else:
                res.dead += [(i, reason) for i in pending]
            return res
        try:
            answer = _BatchAnswer.model_validate_json(r.content)
        except ValidationError:
            res.retry, res.error = pending, f"HTTP {r.status_code} with an unreadable body (not counted as delivered)"
            return res
        seen: dict[str, _Result] = {x.id: x for x in answer.results}
        for ev_id, row_id in by_id.items():
            x = seen.get(ev_id)
            if x is None:
                res.retry.append(row_id)
                res.error = "receiver did not acknowledge every event"
            elif x.status == "rejected":
                res.dead.append((row_id, f"rejected: {x.reason or 'no reason given'}"))
            else:
                res.delivered.append(row_id)
        return res
