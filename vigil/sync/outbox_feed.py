"""What the daemon announces to the cloud: outbox rows queued with the records they announce.

`OutboxFeed` is a pipeline sink of `vigil run`. It never touches the network: every row goes
through ``StoreWriter.submit("enqueue", ...)`` into the same store batch as the alarm events and
readings of that second (transactional outbox); `vigil sync` delivers them. Only destinations that
are configured in ``[sync]`` get rows (an unconfigured one would only grow the queue).

Cadence (issue 6):

* booking: ``session.started/ended``, ``guest.checked_in`` (also for guests a roster adds later) and
  ``guest.checked_out`` at the end,
  ``alarm.raised/acknowledged/escalated/resolved``, ``device.lost/recovered`` as they happen, and a
  ``vitals.summary`` per guest every 5 s (latest values no older than 10 s; cuff BP and SDNN up to
  15 min old). In the FHIR window a BP or SDNN value counts once, in the 5-s slot it arrived in.
* FHIR: one ``vitals_window`` row per guest per ``sync.fhir.vitals_window_s`` (default 60 s) carrying
  its 5-s samples; the EMR gets one Observation per metric per window (median of every sample,
  ``effectivePeriod`` = the window), so no sample is left out of what is charted and one artefact
  does not become the charted value. Sending every 5-s sample as its own Observations would be
  ~864 000 resources (~1 GB of JSON) for a 12-hour, 20-guest night; per minute it is ~72 000, and
  the full 5-s series stays in the store and on the booking stream. A ~10 s ECG strip (5 s either side) for every raised alarm of a guest and a
  routine strip every 15 minutes; a session-summary report per guest at the end.
* e-mail: a plain-text session summary to each guest's responsible clinician (from the roster).

Identities: the FHIR Patient is the roster's guest id; without a roster it is ``<session>-<mat>``
(a session-local identifier: mats are reused by different people, so a mat is never a patient).
No names go into booking events; FHIR carries the display name on the Patient only.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vigil.clock import Clock
from vigil.config import VigilConfig
from vigil.model import AlarmEvent, ChannelKind, Metric, SampleBlock, TechnicalEvent, TechnicalKind
from vigil.sync.booking import make_event

log = logging.getLogger(__name__)

VITALS_EVERY_S = 5.0
VITAL_MAX_AGE_S = 10.0
SLOW_MAX_AGE_S = 900.0  # a cuff BP or an SDNN is repeated on booking summaries for up to 15 min
STRIP_HALF_S = 5.0  # an alarm strip spans 5 s before to 5 s after the alarm
ROUTINE_STRIP_EVERY_S = 900.0
ECG_RING_S = 20.0
SYSTEM_GUEST = "_system"
SERIES_KEYS = ("hr", "spo2", "sbp", "dbp", "qtc", "sdnn")
_ALARM_TYPES = {"raised": "alarm.raised", "acknowledged": "alarm.acknowledged", "escalated": "alarm.escalated",
                "reset": "alarm.resolved"}
_DEVICE_KINDS = (TechnicalKind.DEVICE_DISCONNECTED, TechnicalKind.DEVICE_STALE)


@dataclass
class _Ecg:
    """The last ~20 s of one guest's primary ECG, contiguous (a seq jump starts it again)."""

    fs: float = 0.0
    next_seq: int | None = None
    end_wall: float = 0.0  # wall time of the newest sample
    chunks: deque[np.ndarray] = field(default_factory=deque)
    n: int = 0

    def add(self, block: SampleBlock) -> None:
        scale = block.gain * (1000.0 if block.unit.lower() == "mv" else 1.0)
        if block.fs != self.fs or self.next_seq != block.seq:
            self.chunks.clear()
            self.n = 0
            self.fs = block.fs
        x = np.rint(block.samples.astype(np.float64) * scale).astype(np.int64)
        self.chunks.append(x)
        self.n += len(x)
        self.next_seq = block.end_seq
        self.end_wall = block.wall
        while self.chunks and self.n - len(self.chunks[0]) >= ECG_RING_S * self.fs:
            self.n -= len(self.chunks.popleft())

    def last(self, seconds: float, until_wall: float | None = None) -> tuple[float, list[int]] | None:
        """(start wall, samples µV) of up to `seconds` ending at `until_wall` (default: newest sample)."""
        if self.n == 0 or self.fs <= 0:
            return None
        x = np.concatenate(list(self.chunks))
        end = len(x)
        if until_wall is not None and until_wall < self.end_wall:
            end = max(0, end - int(round((self.end_wall - until_wall) * self.fs)))
        start = max(0, end - int(round(seconds * self.fs)))
        if end - start < 2 * self.fs:  # less than 2 s: not worth a strip
            return None
        start_wall = self.end_wall - (len(x) - start) / self.fs
        return start_wall, x[start:end].tolist()


@dataclass
class _Guest:
    window_start: float | None = None
    series: dict[str, list[float | None]] = field(default_factory=lambda: {k: [] for k in SERIES_KEYS})
    samples: int = 0
    checked_in: bool = False
    next_routine: float = 0.0
    alarms: dict[str, int] = field(default_factory=dict)
    counted: dict[str, float] = field(default_factory=dict)  # t_mono of the last BP/SDNN put in a window


class OutboxFeed:
    """Pipeline sink + timer that queues booking, FHIR and e-mail rows for `vigil sync`."""

    def __init__(self, cfg: VigilConfig, clock: Clock, submit: Callable[..., Any], session_id: str, *,
                 pipeline: Any = None, roster: Callable[[], Any] | None = None,
                 session_start_wall: float | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self._submit = submit
        self.sid = session_id
        self.pipeline = pipeline
        self._roster = roster or (lambda: None)
        self.source = f"vigil/{cfg.site.room}"
        s = cfg.sync
        self.to_booking, self.to_fhir, self.to_email = bool(s.booking), bool(s.fhir), bool(s.sendgrid)
        self.window_samples = max(1, round((s.fhir.vitals_window_s if s.fhir else 60) / VITALS_EVERY_S))
        self.start_wall = session_start_wall if session_start_wall is not None else clock.wall()
        self._guests: dict[str, _Guest] = {}
        self._ecg: dict[str, _Ecg] = {}
        self._strips: list[tuple[float, str, float, str]] = []  # (due mono, mat, alarm wall, reason)
        self._next_vitals = clock.monotonic() + VITALS_EVERY_S
        self.rows: dict[str, int] = {}
        self.closed = False

    @property
    def active(self) -> bool:
        """True when at least one destination is configured."""
        return self.to_booking or self.to_fhir or self.to_email

    # ------------------------------------------------------------------ identities
    def guest_ref(self, mat: str) -> dict[str, Any]:
        """FHIR/booking identity of the guest on `mat`: roster id (+ name), else session-local."""
        roster = self._roster()
        for g in getattr(roster, "guests", None) or []:
            if g.mat == mat:
                return {"id": g.id, "display_name": g.display_name}
        return {"id": f"{self.sid}-{mat}"}

    def _clinician(self, mat: str) -> str | None:
        for g in getattr(self._roster(), "guests", None) or []:
            if g.mat == mat:
                return g.responsible_clinician_email  # type: ignore[no-any-return]
        return None

    # ------------------------------------------------------------------ queueing
    def _put(self, dest: str, etype: str, payload: dict[str, Any], key: str, wall: float) -> None:
        self._submit("enqueue", dest, etype, payload, key, wall=wall)
        self.rows[dest] = self.rows.get(dest, 0) + 1

    def _event(self, etype: str, data: dict[str, Any], wall: float) -> None:
        if self.to_booking:
            ev = make_event(etype, data, source=self.source, wall=wall)
            self._put("booking", etype, ev, ev["id"], wall)

    def _fhir(self, kind: str, extra: dict[str, Any], mat: str, key: str, wall: float) -> None:
        if self.to_fhir:
            payload = {"kind": kind, "session_id": self.sid, "guest": self.guest_ref(mat),
                       "session_start": self.start_wall, **extra}
            self._put("fhir", kind, payload, f"fhir.{self.sid}.{mat}.{key}", wall)

    def _guest(self, mat: str) -> _Guest:
        g = self._guests.get(mat)
        if g is None:
            g = self._guests[mat] = _Guest(next_routine=self.clock.monotonic() + ROUTINE_STRIP_EVERY_S)
        if not g.checked_in:
            g.checked_in = True
            ref = self.guest_ref(mat)
            self._event("guest.checked_in", {"session": self.sid, "guest": ref["id"], "mat": mat}, self.clock.wall())
        return g

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Announce the session and check in the configured guests."""
        self._event("session.started", {"session": self.sid, "room": self.cfg.site.room,
                                        "guests": len(self.cfg.guests)}, self.start_wall)
        for g in self.cfg.guests:
            self._guest(g.mat)

    async def run(self, period_s: float = 1.0) -> None:
        """Call `tick` every `period_s` until cancelled."""
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("outbox feed tick failed")
            await asyncio.sleep(period_s)

    def tick(self) -> None:
        """Vitals every 5 s, FHIR windows every minute, strips that are due."""
        now = self.clock.monotonic()
        for g in self.cfg.guests:  # guests a roster added later are checked in too
            self._guest(g.mat)
        if now >= self._next_vitals:
            self._next_vitals += VITALS_EVERY_S * max(1, math.floor((now - self._next_vitals) / VITALS_EVERY_S) + 1)
            self._vitals(now)
        def ready(item: tuple[float, str, float, str]) -> bool:
            due_at, mat, at_wall, _ = item
            ring = self._ecg.get(mat)
            covered = ring is not None and ring.end_wall >= at_wall + STRIP_HALF_S
            return now >= due_at and (covered or now >= due_at + STRIP_HALF_S)  # late data: wait a little

        due = [s for s in self._strips if ready(s)]
        self._strips = [s for s in self._strips if not ready(s)]
        for _, mat, at_wall, reason in due:
            self._strip(mat, reason, until_wall=at_wall + STRIP_HALF_S)
        for mat, gs in self._guests.items():
            if now >= gs.next_routine:
                gs.next_routine = now + ROUTINE_STRIP_EVERY_S
                self._strip(mat, "routine sample")

    def _vitals(self, now: float) -> None:
        pipe = self.pipeline
        if pipe is None:
            return
        wall = self.clock.wall()
        for mat, state in list(pipe.guests.items()):
            def val(m: Metric, st: Any = state, max_age: float = VITAL_MAX_AGE_S) -> float | None:
                v = st.value(m, now, max_age)
                return None if v is None else round(float(v), 1)

            hr = val(Metric.HR)
            metrics: dict[str, float | None] = {
                "hr": hr if hr is not None else val(Metric.PULSE_RATE), "spo2": val(Metric.SPO2),
                "sbp": val(Metric.SBP, max_age=SLOW_MAX_AGE_S), "dbp": val(Metric.DBP, max_age=SLOW_MAX_AGE_S),
                "qtc": val(Metric.QTC), "sdnn": val(Metric.SDNN, max_age=SLOW_MAX_AGE_S)}
            if all(v is None for v in metrics.values()):
                continue
            g = self._guest(mat)
            self._event("vitals.summary", {"session": self.sid, "guest": self.guest_ref(mat)["id"], "mat": mat,
                                           **metrics}, wall)
            if g.window_start is None:
                g.window_start = wall
            # intermittent values (cuff BP, SDNN) enter the EMR window once, in the slot they arrived in
            for k, m in (("sbp", Metric.SBP), ("dbp", Metric.DBP), ("sdnn", Metric.SDNN)):
                v = state.vitals.get(m)
                if v is None or v.t_mono <= g.counted.get(k, -math.inf):
                    metrics[k] = None
                else:
                    g.counted[k] = v.t_mono
            for k in SERIES_KEYS:
                g.series[k].append(metrics.get(k))
            g.samples += 1
            if g.samples >= self.window_samples:
                self._flush_window(mat, g, wall)

    def _flush_window(self, mat: str, g: _Guest, wall: float) -> None:
        if g.samples and g.window_start is not None:
            start = g.window_start
            self._fhir("vitals_window", {"start_wall": start, "period_s": VITALS_EVERY_S,
                                         "series": {k: v for k, v in g.series.items() if any(x is not None for x in v)}},
                       mat, f"vw{int(round(start * 1000))}", wall)
        g.window_start, g.samples = None, 0
        g.series = {k: [] for k in SERIES_KEYS}

    def _strip(self, mat: str, reason: str, until_wall: float | None = None) -> None:
        ring = self._ecg.get(mat)
        got = ring.last(2 * STRIP_HALF_S, until_wall) if ring is not None else None
        if got is None:
            return
        start_wall, samples = got
        self._fhir("ecg_strip", {"start_wall": start_wall, "fs": ring.fs if ring else 0.0, "lead": "II",
                                 "reason": reason, "samples_uV": samples},
                   mat, f"ecg{int(round(start_wall * 1000))}", self.clock.wall())

    def close(self) -> None:
        """End of session: pending strips and windows, summaries, session.ended."""
        if self.closed:
            return
        self.closed = True
        wall = self.clock.wall()
        for _, mat, at_wall, reason in self._strips:
            self._strip(mat, reason, until_wall=at_wall + STRIP_HALF_S)
        self._strips.clear()
        for mat, g in self._guests.items():
            self._flush_window(mat, g, wall)
            counts = ", ".join(f"{c} x{n}" for c, n in sorted(g.alarms.items())) or "no alarms"
            conclusion = f"Vigil monitoring from {_hhmm(self.start_wall)} to {_hhmm(wall)} UTC: {counts}."
            self._fhir("summary", {"session_end": wall, "conclusion": conclusion}, mat, "summary", wall)
            self._event("guest.checked_out", {"session": self.sid, "guest": self.guest_ref(mat)["id"], "mat": mat}, wall)
            to = self._clinician(mat)
            if self.to_email and to:
                self._put("email", "session.summary",
                          {"to": [to], "subject": f"Vigil session summary, room {self.cfg.site.room}, mat {mat}",
                           "text": conclusion}, f"mail.{self.sid}.{mat}", wall)
        self._event("session.ended", {"session": self.sid, "room": self.cfg.site.room}, wall)

    # ------------------------------------------------------------------ PipelineSink
    def block(self, mat: str, block: SampleBlock) -> None:
        """Keep the last seconds of the primary ECG for strips."""
        if block.kind is ChannelKind.ECG and block.channel == "ecg":
            self._ecg.setdefault(mat, _Ecg()).add(block)

    def alarm(self, event: AlarmEvent) -> None:
        """Booking alarm events; an ECG strip around each raised alarm of a guest."""
        etype = _ALARM_TYPES.get(event.event)
        if event.event == "cleared" and event.state.value != "latched":
            etype = "alarm.resolved"
        if etype is None:
            return
        data: dict[str, Any] = {"session": self.sid, "mat": event.guest, "condition": event.condition,
                                "priority": event.priority.label, "state": event.state.value}
        if event.guest != SYSTEM_GUEST:
            data["guest"] = self.guest_ref(event.guest)["id"]
        if event.operator:
            data["operator"] = event.operator
        if event.event == "escalated":
            data.update({k: event.detail.get(k) for k in ("step", "role", "channel", "outcome")})
        self._event(etype, data, event.wall)
        if event.event == "raised" and event.guest != SYSTEM_GUEST:
            g = self._guest(event.guest)
            g.alarms[event.condition] = g.alarms.get(event.condition, 0) + 1
            for k, (due_at, mat, at_wall, reason) in enumerate(self._strips):
                if mat == event.guest and abs(event.wall - at_wall) < STRIP_HALF_S:  # one strip shows both
                    self._strips[k] = (due_at, mat, at_wall, f"{reason}, {event.condition}")
                    break
            else:
                self._strips.append((event.t_mono + STRIP_HALF_S, event.guest, event.wall,
                                     f"alarm {event.condition}"))

    def technical(self, mat: str | None, event: TechnicalEvent) -> None:
        """device.lost / device.recovered."""
        if event.kind in _DEVICE_KINDS and event.device_id:
            self._event("device.lost" if event.active else "device.recovered",
                        {"session": self.sid, "device": event.device_id, "mat": mat, "kind": event.kind.value},
                        self.clock.wall())

    def reading(self, *a: Any, **k: Any) -> None:
        """Unused."""

    def analysis(self, *a: Any, **k: Any) -> None:
        """Unused."""

    def gap(self, *a: Any, **k: Any) -> None:
        """Unused."""


def _hhmm(wall: float) -> str:
    import time

    return time.strftime("%H:%M", time.gmtime(wall))


def attach(daemon: Any) -> OutboxFeed | None:
    """Create the feed for a started daemon (store, pipeline, roster ready); None when no destination is set."""
    if daemon.writer is None or daemon.session_id is None or daemon.pipeline is None:
        return None
    feed = OutboxFeed(daemon.cfg, daemon.clock, daemon.writer.submit, daemon.session_id, pipeline=daemon.pipeline,
                      roster=lambda: getattr(daemon.roster, "current", None))
    if not feed.active:
        return None
    daemon.pipeline.add_sink(feed)
    feed.start()
    return feed
