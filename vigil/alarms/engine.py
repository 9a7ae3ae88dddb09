"""The alarm engine: IEC 60601-1-8 condition states per (guest, condition), deterministic under a Clock.

Inputs are analysis outputs, device readings, technical events, pulsatility of pleth/ABP waves and
operator commands; every transition is handed to ``emit`` as an `AlarmEvent` (the daemon stores it
in ``alarm_events`` + the audit log and publishes it on MQTT). No I/O, no threads, no network: the
caller drives it from one loop and calls `tick()` at least a few times a second.

State of one condition (derived from its flags, see `_Cond.state`):

* INACTIVE      - not present (or present but still inside its condition delay)
* ACTIVE        - present for at least its delay; sounds and escalates
* ACKNOWLEDGED  - an operator acknowledged it; silent until the condition ends (then INACTIVE)
* AUDIO_PAUSED  - silent until ``pause_until``; re-sounds ("resumed") if still present then
* ALARM_OFF     - switched off by an operator with ``may_alarm_off``; "reminder" every alarm_off_reminder_s
* LATCHED       - a latching condition ended without acknowledgement; sounds until acknowledged ("reset")

Event names: raised, cleared, latched, acknowledged, reset, paused, resumed, off, reminder, vetoed
is audited (not emitted). "raised"/"cleared" mark presence; "latched" follows "cleared" of an
unacknowledged latching condition.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from vigil.alarms.audit import AuditSink
from vigil.alarms.commands import Command, CommandAuthenticator, CommandRefused, CommandResult
from vigil.alarms.conditions import (
    CATALOG,
    RHYTHM_CONDITIONS,
    SYSTEM_GUEST,
    ConditionSpec,
    effective_spec,
    metric_conditions,
    validate_alarm_config,
)
from vigil.clock import Clock
from vigil.config import VigilConfig
from vigil.model import (
    AlarmEvent,
    AlarmState,
    AnalysisOutput,
    Beat,
    Measurement,
    Metric,
    NumericReading,
    Priority,
    QualityReport,
    RhythmEpisode,
    TechnicalEvent,
    TechnicalKind,
)
from vigil.signal.vt import VtStage

log = logging.getLogger(__name__)

PULSE_FRESH_S = 5.0  # a pulsatility report older than this is ignored by the fusion rules
QUALITY_WINDOW_S = 5.0  # ECG quality averaged over this window for the VT artefact veto
POOR_QUALITY = 0.5  # mean quality below this = artefact-laden ECG
ANALYSIS_HR_PREFERRED_S = 10.0  # device HR readings are ignored while analysis HR is this fresh

Emit = Callable[[AlarmEvent], None]


@dataclass(frozen=True, slots=True)
class AlarmStatus:
    """One alarm condition that is not INACTIVE, as shown on the dashboard."""

    guest: str
    condition: str
    priority: Priority
    state: AlarmState
    since: float  # t_mono when it was raised
    latching: bool
    value: float | None = None
    reason: str = ""
    pause_until: float | None = None


@dataclass(eq=False)
class _Cond:
    guest: str
    spec: ConditionSpec
    present: bool = False
    pending_since: float | None = None
    raised: bool = False
    latched: bool = False
    acked: bool = False
    off: bool = False
    pause_until: float | None = None
    next_reminder: float | None = None
    raised_at: float = 0.0
    value: float | None = None
    reason: str = ""
    sources: set[str] = field(default_factory=set)
    vetoed: str | None = None

    @property
    def cid(self) -> str:
        return self.spec.id

    def state(self, now: float) -> AlarmState:
        """IEC state derived from the flags."""
        if self.off:
            return AlarmState.ALARM_OFF
        if not (self.raised or self.latched):
            return AlarmState.INACTIVE
        if self.acked:
            return AlarmState.ACKNOWLEDGED
        if self.pause_until is not None and now < self.pause_until:
            return AlarmState.AUDIO_PAUSED
        return AlarmState.LATCHED if self.latched and not self.raised else AlarmState.ACTIVE


class AlarmEngine:
    """Alarm conditions of every guest, their states, and operator commands."""

    def __init__(self, cfg: VigilConfig, clock: Clock, emit: Emit, *, audit: AuditSink | None = None,
                 secrets: dict[str, bytes] | None = None) -> None:
        validate_alarm_config(cfg)
        self.cfg = cfg
        self.clock = clock
        self._emit_cb = emit
        self._audit = audit
        self.auth = CommandAuthenticator(cfg, secrets)
        self._conds: dict[tuple[str, str], _Cond] = {}
        # present, not yet raised (delay running or vetoed); a dict keeps insertion order so replays are deterministic
        self._pending: dict[_Cond, None] = {}
        self._paused: set[_Cond] = set()
        self._off: set[_Cond] = set()
        self._guest_pause: dict[str, tuple[float, Priority]] = {}
        self._pulse: dict[tuple[str, str], tuple[bool, float]] = {}
        self._quality: dict[str, deque[tuple[float, float, tuple[str, ...]]]] = {}
        self._analysis_hr_at: dict[str, float] = {}
        self._vt: dict[str, VtStage] = {}  # VT confirmation against the pulse waves (vigil.signal.vt)
        self._device_guest = {d: g.mat for g in cfg.guests for d in g.devices}

    # ------------------------------------------------------------------ helpers
    def _now(self) -> float:
        return self.clock.monotonic()

    def _cond(self, guest: str, cid: str) -> _Cond:
        key = (guest, cid)
        c = self._conds.get(key)
        if c is None:
            c = _Cond(guest, effective_spec(self.cfg, guest, cid))
            self._conds[key] = c
        return c

    def _emit(self, c: _Cond, event: str, now: float, reason: str = "", operator: str | None = None,
              detail: dict[str, Any] | None = None) -> None:
        ev = AlarmEvent(guest=c.guest, condition=c.cid, priority=c.spec.priority, event=event,
                        state=c.state(now), t_mono=now, wall=self.clock.wall(), operator=operator,
                        reason=reason, value=c.value, detail=detail or {})
        try:
            self._emit_cb(ev)
        except Exception:  # a broken consumer must never stop the alarm engine
            log.exception("alarm event consumer failed for %s/%s", c.cid, event)

    def _audit_row(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        if self._audit is None:
            return
        try:
            self._audit(actor, action, detail)
        except Exception:
            log.exception("audit write failed (%s)", action)

    def guest_of(self, device_id: str | None) -> str:
        """Mat of the guest wearing `device_id`, or the system pseudo-guest."""
        return self._device_guest.get(device_id or "", SYSTEM_GUEST)

    # ------------------------------------------------------------------ presence & state machine
    def _set_present(self, guest: str, cid: str, present: bool, value: float | None = None,
                     reason: str = "") -> None:
        c = self._cond(guest, cid)
        if value is not None:
            c.value = value
        if reason:
            c.reason = reason
        c.present = present
        self._update(c, self._now())

    def _veto(self, c: _Cond, now: float) -> str | None:
        """Fusion rules: why a present arrhythmia must not be raised (yet), or None."""
        if c.cid in ("asystole", "vf"):
            for kind in ("pleth", "abp"):
                p = self._pulse.get((c.guest, kind))
                if p and p[0] and now - p[1] <= PULSE_FRESH_S:
                    return f"pulsatile {kind} contradicts {c.cid}"
        if c.cid == "vt":
            fresh = [p[0] for (g, _), p in self._pulse.items() if g == c.guest and now - p[1] <= PULSE_FRESH_S]
            pulseless = bool(fresh) and not any(fresh)  # one pulsatile wave (ABP or pleth) means a pulse
            stage = self._vt.get(c.guest)
            why = stage.veto(now, pulseless) if stage is not None else None
            if why is not None:
                return why
            q = self._quality.get(c.guest)
            if q:
                recent = [v for t, v, _ in q if now - t <= QUALITY_WINDOW_S]
                if recent and sum(recent) / len(recent) < POOR_QUALITY and not pulseless:
                    return "artefact-laden ECG cannot raise VT alone"
        return None

    def _update(self, c: _Cond, now: float) -> None:
        if c.present and c.spec.enabled:
            if c.raised:
                self._pending.pop(c, None)
                return
            if c.pending_since is None:
                c.pending_since = now
            veto = self._veto(c, now) if c.spec.kind == "arrhythmia" else None
            if veto is not None:
                if c.vetoed != veto:
                    c.vetoed = veto
                    self._audit_row("system", "alarm.vetoed", {"guest": c.guest, "condition": c.cid, "reason": veto})
                self._pending[c] = None
                return
            c.vetoed = None
            if now - c.pending_since >= c.spec.delay_s - 1e-9:
                self._pending.pop(c, None)
                self._raise(c, now)
            else:
                self._pending[c] = None
        else:
            c.pending_since = None
            c.vetoed = None
            self._pending.pop(c, None)
            if c.raised:
                self._clear(c, now)

    def _raise(self, c: _Cond, now: float) -> None:
        c.raised, c.raised_at, c.acked = True, now, False
        detail: dict[str, Any] = {"delay_s": c.spec.delay_s, "latching": c.spec.latching}
        if c.latched:
            c.latched = False
            detail["was_latched"] = True
        gp = self._guest_pause.get(c.guest)
        if c.pause_until is None and gp and now < gp[0]:
            if c.spec.priority > gp[1]:
                detail["break_through"] = True
            else:
                c.pause_until = gp[0]
                self._paused.add(c)
        if c.off:
            detail["suppressed"] = "alarm_off"
        self._emit(c, "raised", now, c.reason or c.spec.description, detail=detail)

    def _clear(self, c: _Cond, now: float) -> None:
        c.raised = False
        if c.spec.latching and not c.acked and not c.off:
            c.latched = True
            self._emit(c, "cleared", now, "condition ended", detail={"latched": True})
            self._emit(c, "latched", now, "latching alarm awaits acknowledgement")
            return
        c.acked = False
        c.pause_until = None
        self._paused.discard(c)
        self._emit(c, "cleared", now, "condition ended")

    # ------------------------------------------------------------------ inputs
    def on_analysis(self, mat: str, output: AnalysisOutput, t_mono: float | None = None) -> None:
        """Feed one output of the streaming ECG analyser of guest `mat`."""
        now = self._now()
        if isinstance(output, Measurement):
            if output.metric is Metric.HR:
                self._analysis_hr_at[mat] = now
            self._metric(mat, output.metric, output.value)
        elif isinstance(output, RhythmEpisode):
            cid = RHYTHM_CONDITIONS.get(output.label)
            if cid == "vt":
                self._vt_stage(mat).on_vt(output.start, output.end is None, now)
                c = self._cond(mat, "vt")
                if output.end is not None and "rhythm" not in c.sources and not c.present and c.spec.delay_s == 0:
                    self._vt_source(mat, "rhythm", True, f"rhythm {output.label}")  # reported only once ended
                self._vt_source(mat, "rhythm", output.end is None, f"rhythm {output.label}")
            elif cid is not None:
                c = self._cond(mat, cid)
                if output.end is not None and not c.present and c.spec.delay_s == 0:
                    # an episode reported only once it ended (couplet, pause): it was present meanwhile
                    self._set_present(mat, cid, True, reason=f"rhythm {output.label}")
                self._set_present(mat, cid, output.end is None, reason=f"rhythm {output.label}")
        elif isinstance(output, QualityReport):
            self._on_quality(mat, output, now)
        elif isinstance(output, Beat):
            stage = self._vt_stage(mat)
            if stage.on_beat(output.sample, now, output.rhythm_label):  # V beats that count toward VT
                self._vt_source(mat, "vt_stage", stage.candidate, "ventricular run with a changed pulse")

    def _vt_source(self, mat: str, source: str, on: bool, reason: str) -> None:
        """VT is present while the rhythm tracker or the VT stage (vigil.signal.vt) says so."""
        c = self._cond(mat, "vt")
        (c.sources.add if on else c.sources.discard)(source)
        self._set_present(mat, "vt", bool(c.sources), reason=reason)

    def _vt_stage(self, mat: str) -> VtStage:
        stage = self._vt.get(mat)
        if stage is None:
            stage = self._vt[mat] = VtStage()
        return stage

    def on_pulse_wave(self, mat: str, kind: str, samples: Any, fs: float, t_mono: float) -> None:
        """Feed pleth/ABP samples (physical units, ending at `t_mono`) to the VT confirmation stage."""
        self._vt_stage(mat).feed_pulse(kind, samples, fs, t_mono)

    def on_ecg_wave(self, mat: str, samples: Any, fs: float, t_mono: float, channel: str = "ecg") -> None:
        """Feed ECG samples (µV, ending at `t_mono`) of one ECG channel to the VT stage's spectral detector."""
        stage = self._vt_stage(mat)
        if stage.feed_ecg(samples, fs, t_mono, channel):
            self._vt_source(mat, "spectral", stage.spectral, "fast, spectrally pure wide-complex ECG")

    def _on_quality(self, mat: str, q: QualityReport, now: float) -> None:
        self._vt_stage(mat).on_quality(now, q.flags)
        dq = self._quality.setdefault(mat, deque(maxlen=64))
        dq.append((now, q.quality, q.flags))
        while dq and now - dq[0][0] > 2 * QUALITY_WINDOW_S:
            dq.popleft()
        lead = self._cond(mat, "lead_off")
        (lead.sources.add if "lead_off" in q.flags else lead.sources.discard)("quality")
        self._set_present(mat, "lead_off", bool(lead.sources))
        poor = q.quality < POOR_QUALITY and "lead_off" not in q.flags
        self._set_present(mat, "poor_signal", poor, value=round(q.quality, 3))

    def _metric(self, mat: str, metric: Metric, value: float) -> None:
        guest = self.cfg.guest(mat)
        for cid, present in metric_conditions(metric, value, self.cfg.thresholds_for(mat),
                                              guest.baseline_qtc_ms if guest else None).items():
            self._set_present(mat, cid, present, value=value)

    def on_reading(self, mat: str, reading: NumericReading) -> None:
        """Feed one device reading (SpO2, SBP, device HR, battery) of guest `mat`."""
        now = self._now()
        if reading.metric is Metric.HR:
            at = self._analysis_hr_at.get(mat)
            if at is not None and now - at <= ANALYSIS_HR_PREFERRED_S:
                return  # ECG analysis is the HR source while it is alive
            self._metric(mat, Metric.HR, reading.value)
        elif reading.metric in (Metric.SPO2, Metric.SBP):
            self._metric(mat, reading.metric, reading.value)
        elif reading.metric is Metric.BATTERY and reading.value == reading.value:
            c = self._cond(mat, "low_battery")
            src = reading.device_id
            (c.sources.add if reading.value < self.cfg.alarms.low_battery_percent else c.sources.discard)(src)
            self._set_present(mat, "low_battery", bool(c.sources), value=reading.value)

    def on_technical(self, mat: str | None, event: TechnicalEvent) -> None:
        """Feed a technical condition starting or ending (per device, or box-wide when mat is None)."""
        guest = mat if mat is not None else self.guest_of(event.device_id)
        cid = event.kind.value
        if event.kind is TechnicalKind.STORE_FAILED and cid not in CATALOG:
            cid = "alarm_system_fault"
        c = self._cond(guest, cid)
        src = event.device_id or "system"
        (c.sources.add if event.active else c.sources.discard)(src)
        self._set_present(guest, cid, bool(c.sources), reason=event.detail or cid)

    def on_waveform_pulsatile(self, mat: str, kind: Literal["pleth", "abp"] | str, pulsatile: bool,
                              t_mono: float | None = None) -> None:
        """Record whether the pleth/ABP wave of `mat` is pulsatile (fusion veto of asystole/VF/VT)."""
        now = self._now()
        self._pulse[(mat, kind)] = (pulsatile, now)
        for c in [c for c in self._pending if c.guest == mat and c.spec.kind == "arrhythmia"]:
            self._update(c, now)

    # ------------------------------------------------------------------ timers
    def tick(self) -> None:
        """Advance timers: condition delays, vetoes that expired, pause expiry, ALARM OFF reminders."""
        now = self._now()
        for c in list(self._pending):
            self._update(c, now)
        for c in list(self._paused):
            if c.pause_until is not None and now >= c.pause_until:
                c.pause_until = None
                self._paused.discard(c)
                if (c.raised or c.latched) and not c.acked and not c.off:
                    self._emit(c, "resumed", now, "audio pause expired")
        for g, (until, _) in list(self._guest_pause.items()):
            if now >= until:
                del self._guest_pause[g]
        for c in list(self._off):
            if c.next_reminder is not None and now >= c.next_reminder:
                c.next_reminder = now + self.cfg.alarms.alarm_off_reminder_s
                self._emit(c, "reminder", now, "alarm is switched off")

    # ------------------------------------------------------------------ commands
    def command(self, cmd: Any) -> CommandResult:
        """Apply an operator command dict (ack/pause/off/resume); refusals are audited with the reason."""
        try:
            parsed = self.auth.check(cmd, self.clock.wall())
            self._check_target(parsed)
        except CommandRefused as exc:
            op = cmd.get("op") if isinstance(cmd, dict) else None
            self._audit_row(exc.operator or "unknown", "command.refused",
                            {"reason": exc.reason, "op": op if isinstance(op, str) else None})
            log.warning("alarm command refused: %s", exc.reason)
            return CommandResult(False, exc.reason, op if isinstance(op, str) else None, exc.operator)
        affected = self._apply(parsed)
        self._audit_row(parsed.operator, f"command.{parsed.op}",
                        {"guest": parsed.guest, "condition": parsed.condition, "affected": list(affected),
                         "duration_s": parsed.duration_s})
        return CommandResult(True, "ok" if affected else "nothing to apply", parsed.op, parsed.operator,
                             tuple(affected))

    def _check_target(self, cmd: Command) -> None:
        known_guest = cmd.guest == SYSTEM_GUEST or self.cfg.guest(cmd.guest) is not None or any(
            g == cmd.guest for g, _ in self._conds)
        if not known_guest:
            raise CommandRefused("unknown guest", cmd.operator)
        if cmd.condition is not None and cmd.condition not in CATALOG:
            raise CommandRefused("unknown condition", cmd.operator)
        if cmd.op == "off" and cmd.condition is None:
            raise CommandRefused("ALARM OFF needs a condition", cmd.operator)

    def _targets(self, cmd: Command) -> Iterable[_Cond]:
        if cmd.condition is not None:
            return [self._cond(cmd.guest, cmd.condition)]
        return [c for (g, _), c in self._conds.items() if g == cmd.guest]

    def _apply(self, cmd: Command) -> list[str]:
        now = self._now()
        done: list[str] = []
        if cmd.op == "ack":
            for c in self._targets(cmd):
                if c.latched and not c.raised:
                    c.latched = False
                    c.pause_until = None
                    self._paused.discard(c)
                    self._emit(c, "reset", now, "latched alarm acknowledged", cmd.operator)
                    done.append(c.cid)
                elif c.raised and not c.acked:
                    c.acked = True
                    c.pause_until = None
                    self._paused.discard(c)
                    self._emit(c, "acknowledged", now, "acknowledged by operator", cmd.operator)
                    done.append(c.cid)
        elif cmd.op == "pause":
            until = now + (cmd.duration_s or self.cfg.alarms.audio_pause_s)
            targets = [c for c in self._targets(cmd) if (c.raised or c.latched) and not c.acked and not c.off]
            if cmd.condition is None:
                top = max((c.spec.priority for c in targets), default=Priority.LOW)
                self._guest_pause[cmd.guest] = (until, top)
            for c in targets:
                c.pause_until = until
                self._paused.add(c)
                self._emit(c, "paused", now, f"audio paused for {until - now:.0f} s", cmd.operator,
                           {"until_mono": until})
                done.append(c.cid)
        elif cmd.op == "off":
            for c in self._targets(cmd):
                if not c.off:
                    c.off, c.next_reminder = True, now + self.cfg.alarms.alarm_off_reminder_s
                    c.latched = False if not c.raised else c.latched
                    self._off.add(c)
                    self._emit(c, "off", now, "alarm switched off", cmd.operator)
                    done.append(c.cid)
        elif cmd.op == "resume":
            if cmd.condition is None:
                self._guest_pause.pop(cmd.guest, None)
            for c in self._targets(cmd):
                if c.off or (c.pause_until is not None):
                    c.off, c.next_reminder, c.pause_until = False, None, None
                    self._off.discard(c)
                    self._paused.discard(c)
                    self._emit(c, "resumed", now, "resumed by operator", cmd.operator)
                    done.append(c.cid)
                    self._update(c, now)
        return done

    # ------------------------------------------------------------------ queries
    def active(self, mat: str | None = None) -> list[AlarmStatus]:
        """Conditions not INACTIVE, highest priority first, then oldest first."""
        now = self._now()
        out = []
        for (g, _), c in self._conds.items():
            if mat is not None and g != mat:
                continue
            st = c.state(now)
            if st is AlarmState.INACTIVE:
                continue
            out.append(AlarmStatus(g, c.cid, c.spec.priority, st, c.raised_at, c.spec.latching, c.value,
                                   c.reason, c.pause_until))
        out.sort(key=lambda s: (-int(s.priority), s.since, s.guest, s.condition))
        return out

    def sounding_priority(self) -> Priority | None:
        """Priority the local sound must play now (ACTIVE or LATCHED conditions), or None."""
        now = self._now()
        prios = [c.spec.priority for c in self._conds.values()
                 if c.state(now) in (AlarmState.ACTIVE, AlarmState.LATCHED)]
        return max(prios) if prios else None

    def state(self, mat: str, cid: str) -> AlarmState:
        """Current state of one condition (INACTIVE when never seen)."""
        c = self._conds.get((mat, cid))
        return c.state(self._now()) if c else AlarmState.INACTIVE
