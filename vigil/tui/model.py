"""The dashboard's view-model: pure state built from bus messages, independent of Textual.

`RoomView.apply(topic, payload, now)` folds one decoded MQTT message (docs/INTERFACES.md "Bus topic
tree") into the state; widgets only read it. `now` is the dashboard's monotonic clock, so staleness
("no update for > 3 s") is decided here and tested without a terminal.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.edge.history import TREND_METRICS as HISTORY_TREND_METRICS

STALE_S = 3.0  # no message for longer than this: the numbers are hidden behind "STALE"
OLD_VALUE_S = 3.0  # HR/SpO2 older than this are dimmed and shown with their age, never as live
OLD_QTC_S = 30.0  # QTc comes every ~10 s: older than this it is dimmed and shown with its age
ECG_KEEP_S = 12.0  # seconds of waveform kept per guest (sweep + guest-view strip)
TREND_KEEP = 6 * 3600  # points per trend (1/s for the 6 h of a long session)
HISTORY_KEEP = 200
SYSTEM = "_system"  # pseudo-guest of box-wide technical alarms
PRIORITY_RANK = {"high": 3, "medium": 2, "low": 1}
TREND_METRICS = HISTORY_TREND_METRICS  # one list: the daemon keeps history for exactly what the guest view plots

# IEC 60601-1-8 visual alarm signals: high 1.4–2.8 Hz, medium 0.4–0.8 Hz, low constant
FLASH_HZ = {"high": 2.0, "medium": 0.6}
PRIORITY_SYMBOL = {"high": "!!!", "medium": "!!", "low": "!"}
PRIORITY_WORD = {"high": "HIGH", "medium": "MED", "low": "LOW"}


def flash_on(priority: str | None, t: float) -> bool:
    """Whether a tile of `priority` is in the bright half of its flash cycle at time `t` (50 % duty)."""
    hz = FLASH_HZ.get(priority or "")
    if hz is None:
        return True
    return (t * hz) % 1.0 < 0.5


@dataclass(slots=True)
class Vital:
    """One numeric as last published, with the local time it arrived."""

    value: float | None
    age_s: float  # age when published by the daemon
    unit: str
    received: float  # dashboard monotonic time

    def age(self, now: float) -> float:
        """Age of the reading now (daemon age + time since the message arrived)."""
        return self.age_s + max(0.0, now - self.received)


@dataclass(slots=True)
class ActiveAlarm:
    """One entry of guest/<mat>/alarms."""

    mat: str
    condition: str
    priority: str
    state: str
    onset_wall: float | None
    latching: bool
    value: float | None
    reason: str
    pause_left_s: float | None
    received: float

    @property
    def rank(self) -> int:
        """3 high, 2 medium, 1 low."""
        return PRIORITY_RANK.get(self.priority, 0)

    def pause_left(self, now: float) -> float | None:
        """Seconds of audio pause left now, if paused."""
        if self.pause_left_s is None:
            return None
        return max(0.0, self.pause_left_s - (now - self.received))


@dataclass(slots=True)
class EventView:
    """One alarms/events message (transitions and escalation attempts)."""

    mat: str
    condition: str
    priority: str
    event: str
    state: str
    wall: float
    operator: str | None
    reason: str
    detail: dict[str, Any]


class EcgBuffer:
    """The most recent decimated ECG of one guest, indexed in bus-sample units; gaps are NaN, never filled."""

    def __init__(self, keep_s: float = ECG_KEEP_S) -> None:
        self.keep_s = keep_s
        self.fs: float | None = None
        self.decimation = 1
        self.samples: npt.NDArray[np.float64] = np.empty(0)
        self.end_index = 0  # absolute bus-sample index one past the newest sample
        self.version = 0
        self.received: float | None = None
        self.beats: deque[tuple[int, str]] = deque(maxlen=400)  # (bus-sample index, label), optional on the bus

    def add_beats(self, beats: list[Any]) -> None:
        """Beat labels carried by a frame as [[device seq, label], ...] (optional field)."""
        start = self.end_index - len(self.samples)
        for b in beats:
            idx = int(b[0]) // self.decimation
            if idx >= start and (not self.beats or idx > self.beats[-1][0]):
                self.beats.append((idx, str(b[1])[:1]))

    def add(self, seq: int, fs: float, decimation: int, samples: list[int], now: float) -> None:
        """Append one frame; a jump in seq leaves NaN, a change of rate or a backwards jump restarts."""
        if not samples or fs <= 0:
            return
        decimation = max(1, int(decimation))
        start = seq // decimation
        x = np.asarray(samples, dtype=np.float64)
        keep = int(self.keep_s * fs)
        if self.fs != fs or self.decimation != decimation or start < self.end_index - len(self.samples) \
                or start + len(x) <= self.end_index - len(self.samples):
            self.samples, self.end_index = np.empty(0), start
            self.beats.clear()
        self.fs, self.decimation = fs, decimation
        if start > self.end_index:
            gap = start - self.end_index
            if gap >= keep:
                self.samples = np.empty(0)
            else:
                self.samples = np.concatenate((self.samples, np.full(gap, np.nan)))
            self.end_index = start
        elif start < self.end_index:  # overlap (a re-sent frame): keep only the new part
            x = x[self.end_index - start:]
        self.samples = np.concatenate((self.samples, x))[-keep:]
        self.end_index += len(x)
        self.version += 1
        self.received = now


@dataclass
class GuestView:
    """Everything the dashboard shows about one guest."""

    mat: str
    name: str = ""
    baseline_qtc: float | None = None
    bands: dict[str, tuple[float | None, float | None, float | None, float | None]] = field(default_factory=dict)
    vitals: dict[str, Vital] = field(default_factory=dict)
    vitals_received: float | None = None
    rhythm: str | None = None
    quality: float | None = None
    quality_flags: tuple[str, ...] = ()
    devices: dict[str, str] = field(default_factory=dict)
    beats: int = 0
    alarms: list[ActiveAlarm] = field(default_factory=list)
    ecg: EcgBuffer = field(default_factory=EcgBuffer)
    trends: dict[str, deque[tuple[float, float]]] = field(
        default_factory=lambda: {m: deque(maxlen=TREND_KEEP) for m in TREND_METRICS})
    history: deque[EventView] = field(default_factory=lambda: deque(maxlen=HISTORY_KEEP))
    seeded: bool = False  # trends/history from the daemon's retained guest history taken (once)
    version: int = 0

    @property
    def label(self) -> str:
        """Display name, else the mat."""
        return self.name or self.mat

    def stale(self, now: float) -> bool:
        """True when no vitals message arrived for more than STALE_S (or never)."""
        return self.vitals_received is None or now - self.vitals_received > STALE_S

    def value(self, metric: str) -> float | None:
        """Latest finite value of `metric`, else None."""
        v = self.vitals.get(metric)
        if v is None or v.value is None or not math.isfinite(v.value):
            return None
        return v.value

    def heart_rate(self) -> tuple[str, float | None]:
        """("HR", value) from ECG analysis, else ("PR", pulse rate) from an oximeter/cuff."""
        hr = self.value("hr")
        if hr is not None:
            return "HR", hr
        pr = self.value("pulse_rate")
        return ("PR", pr) if pr is not None else ("HR", None)

    def top_alarm(self) -> ActiveAlarm | None:
        """The highest-priority alarm that still asks for attention (not off), oldest first."""
        live = [a for a in self.alarms if a.state != "alarm_off"]
        if not live:
            return None
        return sorted(live, key=lambda a: (-a.rank, a.onset_wall or 0.0))[0]

    def battery(self) -> float | None:
        """Battery % if any device reports it."""
        return self.value("battery")


@dataclass
class Reply:
    """The daemon's answer to one of our commands."""

    ok: bool
    reason: str
    op: str | None
    affected: list[str]
    id: str | None
    received: float


@dataclass
class RoomView:
    """The whole room as seen over the bus."""

    room: str
    guests: dict[str, GuestView] = field(default_factory=dict)
    status: dict[str, Any] | None = None
    status_received: float | None = None
    sync: dict[str, Any] | None = None
    sync_received: float | None = None
    broker_connected: bool = False
    broker_error: str = ""
    events: deque[EventView] = field(default_factory=lambda: deque(maxlen=HISTORY_KEEP))
    escalations: dict[tuple[str, str], list[EventView]] = field(default_factory=dict)
    replies: deque[Reply] = field(default_factory=lambda: deque(maxlen=20))
    system_alarms: dict[str, ActiveAlarm] = field(default_factory=dict)  # box-wide ("_system"), from events
    version: int = 0

    # ------------------------------------------------------------------ set-up
    @classmethod
    def from_config(cls, cfg: Any) -> RoomView:
        """A view with the configured guests (names, baselines, threshold bands) in config order."""
        room = cls(cfg.site.room)
        for g in cfg.guests:
            gv = room.guest(g.mat)
            gv.name = g.name
            gv.baseline_qtc = g.baseline_qtc_ms
            th = cfg.thresholds_for(g.mat)
            for m in TREND_METRICS:
                b = getattr(th, m)
                gv.bands[m] = (b.critical_low, b.warning_low, b.warning_high, b.critical_high)
        return room

    def guest(self, mat: str) -> GuestView:
        """The guest on `mat`, created on first sight."""
        g = self.guests.get(mat)
        if g is None:
            g = self.guests[mat] = GuestView(mat)
        return g

    # ------------------------------------------------------------------ messages
    def apply(self, topic: str, payload: dict[str, Any], now: float) -> str | None:
        """Fold one decoded message into the view; returns the mat it touched, "" for room-wide, None if ignored."""
        parts = topic.split("/")
        if len(parts) < 3 or parts[1] != self.room:
            return None
        rest = parts[2:]
        try:
            if rest == ["status"]:
                self.status, self.status_received = payload, now
                for mat in payload.get("guests") or []:
                    self.guest(str(mat))
                return self._bump("")
            if rest == ["sync", "status"]:
                self.sync, self.sync_received = payload, now
                return self._bump("")
            if rest == ["roster"]:
                self._roster(payload)
                return self._bump("")
            if rest == ["alarms", "events"]:
                return self._bump(self._event(payload, now))
            if len(rest) == 3 and rest[0] == "guest":
                mat, kind = rest[1], rest[2]
                if kind == "vitals":
                    self._vitals(mat, payload, now)
                elif kind == "ecg":
                    ecg = self.guest(mat).ecg
                    ecg.add(int(payload["seq"]), float(payload["fs"]), int(payload.get("decimation", 1)),
                            payload.get("samples") or [], now)
                    if payload.get("beats"):
                        ecg.add_beats(payload["beats"])
                    return mat  # waveform frames do not bump the version (the sweep has its own)
                elif kind == "alarms":
                    self._alarms(mat, payload, now)
                elif kind == "history":
                    self._seed(mat, payload)
                else:
                    return None
                return self._bump(mat)
            if len(rest) == 3 and rest[0] == "cmd" and rest[2] == "reply":
                self.replies.append(Reply(bool(payload.get("ok")), str(payload.get("reason", "")),
                                          payload.get("op"), list(payload.get("affected") or []),
                                          payload.get("id"), now))
                return self._bump("")
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return None

    def _bump(self, mat: str) -> str:
        self.version += 1
        if mat:
            self.guest(mat).version += 1
        return mat

    def _roster(self, payload: dict[str, Any]) -> None:
        for g in payload.get("guests") or []:
            mat = g.get("mat")
            if not mat:
                continue
            gv = self.guest(str(mat))
            if g.get("display_name"):
                gv.name = str(g["display_name"])
            if g.get("baseline_qtc_ms") is not None:
                gv.baseline_qtc = float(g["baseline_qtc_ms"])

    def _vitals(self, mat: str, payload: dict[str, Any], now: float) -> None:
        g = self.guest(mat)
        vitals: dict[str, Vital] = {}
        wall = payload.get("t")
        for name, v in (payload.get("vitals") or {}).items():
            value = v.get("value")
            value = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
            age = float(v.get("age_s") or 0.0)
            vitals[name] = Vital(value, age, str(v.get("unit", "")), now)
            if name in g.trends and value is not None and isinstance(wall, int | float):
                t = float(wall) - age  # when it was measured
                tr = g.trends[name]
                if not tr or t > tr[-1][0] + 1e-6:
                    tr.append((t, value))
        g.vitals = vitals
        g.vitals_received = now
        g.rhythm = payload.get("rhythm")
        q = payload.get("quality")
        g.quality = float(q) if isinstance(q, int | float) else None
        g.quality_flags = tuple(payload.get("quality_flags") or ())
        g.devices = {str(k): str(v) for k, v in (payload.get("devices") or {}).items()}
        g.beats = int(payload.get("beats") or 0)

    def _alarms(self, mat: str, payload: dict[str, Any], now: float) -> None:
        g = self.guest(mat)
        t = payload.get("t")
        out = []
        for a in payload.get("alarms") or []:
            since = a.get("since_s")
            onset = float(t) - float(since) if isinstance(t, int | float) and isinstance(since, int | float) else None
            out.append(ActiveAlarm(mat, str(a["condition"]), str(a.get("priority", "low")), str(a.get("state", "")),
                                   onset, bool(a.get("latching")), a.get("value"), str(a.get("reason") or ""),
                                   a.get("pause_left_s"), now))
        g.alarms = out

    def _seed(self, mat: str, payload: dict[str, Any]) -> None:
        """Trends and alarm history from before this dashboard started (the daemon's retained guest history).

        Taken once per guest; only what is older than the first live point or event is prepended, so
        nothing is shown twice.
        """
        g = self.guest(mat)
        if g.seeded:
            return
        trends = payload.get("trends") or {}
        if not isinstance(trends, dict):
            raise ValueError("history trends is not an object")
        points = {name: [(float(t), float(v)) for t, v in pts] for name, pts in trends.items() if name in g.trends}
        first_event = g.history[0].wall if g.history else math.inf
        older = [self._event_view(p) for p in payload.get("events") or []
                 if float(p.get("wall") or 0.0) < first_event]  # parsed in full before anything changes
        g.seeded = True
        for name, pts in points.items():
            tr = g.trends[name]
            first_live = tr[0][0] if tr else math.inf
            keep = list(tr)
            tr.clear()
            tr.extend([p for p in pts if p[0] < first_live] + keep)
        live = list(g.history)
        g.history.clear()
        g.history.extend(older + live)
        by_alarm: dict[tuple[str, str], list[EventView]] = {}
        for ev in older:
            if ev.event == "escalated":
                by_alarm.setdefault((ev.mat, ev.condition), []).append(ev)
        for key, evs in by_alarm.items():
            self.escalations.setdefault(key, [])[:0] = evs

    @staticmethod
    def _event_view(p: dict[str, Any]) -> EventView:
        return EventView(str(p["guest"]), str(p["condition"]), str(p.get("priority", "low")), str(p["event"]),
                         str(p.get("state", "")), float(p.get("wall") or 0.0), p.get("operator"),
                         str(p.get("reason") or ""), dict(p.get("detail") or {}))

    def _event(self, p: dict[str, Any], now: float) -> str:
        ev = self._event_view(p)
        self.events.append(ev)
        if ev.mat == SYSTEM and ev.event != "escalated":
            self._system_event(ev, now)
        mat = ev.mat if ev.mat != SYSTEM else ""
        if mat:
            self.guest(mat).history.append(ev)
        if ev.event == "escalated":
            self.escalations.setdefault((ev.mat, ev.condition), []).append(ev)
        return mat

    def _system_event(self, ev: EventView, now: float) -> None:
        """Box-wide conditions (broker down, store failed, ...) have no retained topic: follow their events."""
        if ev.state == "inactive":
            self.system_alarms.pop(ev.condition, None)
            return
        cur = self.system_alarms.get(ev.condition)
        onset = cur.onset_wall if cur is not None and ev.event != "raised" else ev.wall
        self.system_alarms[ev.condition] = ActiveAlarm(SYSTEM, ev.condition, ev.priority, ev.state, onset, False,
                                                       None, ev.reason, None, now)

    # ------------------------------------------------------------------ derived
    def active_alarms(self) -> list[ActiveAlarm]:
        """Every active alarm of the room (box-wide ones too), by priority (high first) then onset (oldest first)."""
        all_ = [a for g in self.guests.values() for a in g.alarms] + list(self.system_alarms.values())
        return sorted(all_, key=lambda a: (-a.rank, a.onset_wall if a.onset_wall is not None else math.inf,
                                           a.mat, a.condition))

    def escalation_stage(self, mat: str, condition: str, *, channel: bool = True) -> str:
        """Latest escalation attempt of one alarm as "on_call Dr A via cloud: sent" (empty if none)."""
        evs = self.escalations.get((mat, condition))
        if not evs:
            return ""
        d = evs[-1].detail
        who = d.get("contact") or d.get("role") or "nobody"
        step = d.get("step") or "?"
        outcome = d.get("outcome") or ("sent" if d.get("ok") else "failed")
        via = d.get("channel")
        return f"{step} {who}" + (f" via {via}" if channel and via and via != "none" else "") + f": {outcome}"

    def daemon_state(self, now: float) -> str:
        """'running', 'stopped', 'offline' (last will), 'stale' (> STALE_S silent) or 'unknown'."""
        if self.status is None or self.status_received is None:
            return "unknown"
        state = str(self.status.get("state", "unknown"))
        if state != "running":
            return state
        return "stale" if now - self.status_received > STALE_S else "running"

    def room_stale(self, now: float) -> bool:
        """True when the room's numbers must not be shown as live (broker down or heartbeat silent)."""
        return not self.broker_connected or self.daemon_state(now) != "running"

    def sync_summary(self) -> tuple[str, int, int]:
        """(state, outbox depth, dead letters) from sync/status: state online|offline|degraded|n/a."""
        if not self.sync:
            return "n/a", 0, 0
        dests = self.sync.get("destinations") or {}
        depth = sum(int(d.get("queue_depth") or 0) for d in dests.values())
        dead = sum(int(d.get("dead_letters") or 0) for d in dests.values())
        breakers = [d.get("breaker") for d in dests.values()]
        probe = (self.sync.get("worker") or {}).get("online")
        if probe is False:
            state = "offline"
        elif not dests:
            state = "online"
        elif all(b == "open" for b in breakers):
            state = "offline"
        elif any(b in ("open", "half_open") for b in breakers):
            state = "degraded"
        else:
            state = "online"
        return state, depth, dead

    def ordered_guests(self) -> list[GuestView]:
        """Guests in the order first configured or seen."""
        return list(self.guests.values())
