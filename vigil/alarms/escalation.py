"""Escalation ladder: SMS to on-call / backup contacts when an alarm stays unacknowledged.

`Escalator.on_event` consumes the engine's AlarmEvents; `tick()` (called from the alarm loop) fires
due ladder steps and drains finished send attempts. Sending happens in a thread pool: the alarm
loop never waits on the network or the modem. Channel order per message: cloud (Twilio) first when
online, then the GSM modem; offline: the modem only. Every attempt becomes an ``escalated``
AlarmEvent with {contact, role, step, channel, outcome, message_id, error, latency_s} and an audit
row. When every channel failed for a message, ``on_channel_state(False, reason)`` is called (the
daemon raises ``escalation_channel_failed`` and makes the local sound louder); the next delivered
message calls ``on_channel_state(True, "")``.

Timers run on the injected Clock from the moment the alarm was raised (or re-sounded after an audio
pause); acknowledgement, reset, clear (non-latched), ALARM OFF and audio pause stop them.
De-duplication: one message per (contact, guest, condition, step). Rate limit: at most one message
per contact every ``min_interval_per_contact_s``; messages held back meanwhile are merged into one.
"""

from __future__ import annotations

import logging
import queue
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vigil.alarms.audit import AuditSink
from vigil.alarms.sms import SmsResult, SmsSender
from vigil.clock import Clock
from vigil.config import Contact, LadderStep, VigilConfig
from vigil.model import AlarmEvent, AlarmState, Priority

log = logging.getLogger(__name__)

STEP_ROLES: dict[str, tuple[str, ...]] = {"on_call": ("on_call",), "backup": ("backup", "clinician")}
_STOP_EVENTS = {"acknowledged", "reset", "off", "paused"}


@dataclass
class _Track:
    guest: str
    condition: str
    priority: Priority
    base: float  # clock time the ladder counts from
    raised_wall: float
    steps_done: set[str] = field(default_factory=set)


@dataclass
class _Outgoing:
    contact: Contact
    items: list[tuple[_Track, str]]  # (alarm, step) carried by this message
    queued_at: float


class Escalator:
    """Ladder timers per alarm, per-contact de-duplication and rate limiting, channel fallback."""

    def __init__(self, cfg: VigilConfig, clock: Clock, emit: Callable[[AlarmEvent], None], *,
                 cloud: SmsSender | None = None, gsm: SmsSender | None = None,
                 online: Callable[[], bool] = lambda: True,
                 on_channel_state: Callable[[bool, str], None] | None = None,
                 audit: AuditSink | None = None, executor: Executor | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self._emit = emit
        self.cloud, self.gsm = cloud, gsm
        self.online = online
        self.on_channel_state = on_channel_state
        self._audit = audit
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="vigil-sms")
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._sent_keys: set[tuple[str, str, str, str]] = set()
        self._last_sent: dict[str, float] = {}
        self._held: dict[str, _Outgoing] = {}
        self._results: queue.SimpleQueue[tuple[_Outgoing, list[SmsResult], float, float]] = queue.SimpleQueue()
        self._channel_ok = True
        self.in_flight = 0

    def close(self) -> None:
        """Wait for sends in flight and stop the worker pool (if we own it)."""
        if self._own_executor:
            self.executor.shutdown(wait=True)

    # ------------------------------------------------------------------ alarm events
    def on_event(self, ev: AlarmEvent) -> None:
        """Start, restart or stop the ladder of one alarm from its transitions."""
        key = (ev.guest, ev.condition)
        if ev.event == "escalated":
            return
        if ev.event in ("raised", "resumed", "reminder") and ev.state in (AlarmState.ACTIVE, AlarmState.LATCHED):
            tr = self._tracks.get(key)
            if tr is None or ev.event == "raised":
                self._tracks[key] = _Track(ev.guest, ev.condition, ev.priority, ev.t_mono, ev.wall,
                                           tr.steps_done if tr else set())
            else:
                tr.base = ev.t_mono  # re-sounded after a pause: count again from now
            return
        if ev.event in _STOP_EVENTS or (ev.event == "cleared" and ev.state is not AlarmState.LATCHED):
            self._tracks.pop(key, None)

    def ladder(self, priority: Priority) -> LadderStep:
        """Timers configured for `priority`."""
        e = self.cfg.escalation
        return {Priority.HIGH: e.high, Priority.MEDIUM: e.medium, Priority.LOW: e.low}[priority]

    # ------------------------------------------------------------------ timers
    def tick(self) -> None:
        """Fire due ladder steps, flush held messages, report finished attempts. Never blocks."""
        now = self.clock.monotonic()
        for tr in list(self._tracks.values()):
            lad = self.ladder(tr.priority)
            for step, after in (("on_call", lad.on_call_after_s), ("backup", lad.backup_after_s)):
                if after is not None and step not in tr.steps_done and now - tr.base >= after:
                    tr.steps_done.add(step)
                    self._fire(tr, step, now)
        for name, out in list(self._held.items()):
            if now - self._last_sent.get(name, -1e18) >= self.cfg.escalation.min_interval_per_contact_s:
                del self._held[name]
                self._submit(out, now)
        self._drain()

    def _fire(self, tr: _Track, step: str, now: float) -> None:
        contacts = [c for c in self.cfg.escalation.contacts if c.role in STEP_ROLES[step] and c.phone]
        if not contacts:
            self._record(tr, step, None, SmsResult(False, "none", "no_contact", error=f"no {step} contact with a phone"),
                         now, 0.0)
            return
        for c in contacts:
            dedup = (c.name, tr.guest, tr.condition, step)
            if dedup in self._sent_keys:
                continue
            self._sent_keys.add(dedup)
            held = self._held.get(c.name)
            if held is not None:
                held.items.append((tr, step))
                continue
            out = _Outgoing(c, [(tr, step)], now)
            if now - self._last_sent.get(c.name, -1e18) < self.cfg.escalation.min_interval_per_contact_s:
                self._held[c.name] = out
                self._record(tr, step, c, SmsResult(False, "none", "rate_limited_held",
                                                    error="merged into the next message to this contact"), now, 0.0)
                continue
            self._submit(out, now)

    def _body(self, out: _Outgoing, ref: str) -> str:
        room = self.cfg.site.room
        parts = []
        for tr, _ in out.items:
            since = time.strftime("%H:%M:%S", time.gmtime(tr.raised_wall))
            parts.append(f"{tr.priority.label.upper()} {tr.condition} mat {tr.guest} since {since}Z")
        return f"VIGIL {room}: " + "; ".join(parts) + f" - unacknowledged. ref:{ref}"

    def _submit(self, out: _Outgoing, now: float) -> None:
        self._last_sent[out.contact.name] = now
        ref = secrets.token_hex(4)
        body = self._body(out, ref)
        self.in_flight += 1
        t_req = time.monotonic()
        fut = self.executor.submit(self._deliver, out.contact.phone or "", body, ref)
        fut.add_done_callback(lambda f: self._results.put(
            (out, f.result() if not f.exception() else [SmsResult(False, "none", "error", error=str(f.exception()))],
             now, t_req)))

    def _deliver(self, to: str, body: str, ref: str) -> list[SmsResult]:
        """Worker thread: try the channels in order until one delivers."""
        order: list[SmsSender] = []
        if self.cloud is not None and self.online():
            order.append(self.cloud)
        if self.gsm is not None:
            order.append(self.gsm)
        if not order:
            return [SmsResult(False, "none", "unavailable", error="no SMS channel configured or reachable")]
        results = []
        for sender in order:
            try:
                r = sender.send(to, body, ref)
            except Exception as exc:  # a sender must not kill the worker
                r = SmsResult(False, getattr(sender, "channel", "?"), "error", error=repr(exc))
            results.append(r)
            if r.ok:
                break
        return results

    def _drain(self) -> None:
        while True:
            try:
                out, results, queued, t_req = self._results.get_nowait()
            except queue.Empty:
                return
            self.in_flight -= 1
            now = self.clock.monotonic()
            latency = time.monotonic() - t_req
            for tr, step in out.items:
                for r in results:
                    self._record(tr, step, out.contact, r, now, latency)
            delivered = any(r.ok for r in results)
            if not delivered:
                reason = "; ".join(f"{r.channel}: {r.outcome} {r.error}".strip() for r in results)[:300]
                log.error("SMS escalation failed on every channel (%s)", reason)
                self._channel_ok = False
                self._notify(False, reason)  # every failed message re-asserts the technical alarm
            elif not self._channel_ok:
                self._channel_ok = True
                self._notify(True, "")

    def _notify(self, ok: bool, reason: str) -> None:
        if self.on_channel_state is not None:
            try:
                self.on_channel_state(ok, reason)
            except Exception:
                log.exception("channel state callback failed")

    def _record(self, tr: _Track, step: str, contact: Contact | None, r: SmsResult, now: float,
                latency: float) -> None:
        detail: dict[str, Any] = {"step": step, "contact": contact.name if contact else None,
                                  "role": contact.role if contact else None, "channel": r.channel,
                                  "outcome": r.outcome, "ok": r.ok, "message_id": r.message_id,
                                  "attempts": r.attempts, "latency_s": round(latency, 3)}
        if r.error:
            detail["error"] = r.error
        if r.detail:
            detail["channel_detail"] = r.detail
        ev = AlarmEvent(guest=tr.guest, condition=tr.condition, priority=tr.priority, event="escalated",
                        state=AlarmState.ACTIVE, t_mono=now, wall=self.clock.wall(),
                        reason=f"{step} via {r.channel}: {r.outcome}", detail=detail)
        try:
            self._emit(ev)
        except Exception:
            log.exception("escalation event consumer failed")
        if self._audit is not None:
            try:
                self._audit("escalation", "alarm.escalated", {"guest": tr.guest, "condition": tr.condition, **detail})
            except Exception:
                log.exception("audit write failed (escalation)")

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Test helper: wait (real time) until no send is in flight, draining results."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._drain()
            if self.in_flight == 0:
                return True
            time.sleep(0.01)
        return False
