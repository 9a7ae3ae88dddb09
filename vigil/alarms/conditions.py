"""Alarm conditions: stable ids, default priority/delay/latching, per-guest overrides, threshold checks.

Condition ids are part of the public contract (stored in ``alarm_events``, shown on the dashboard,
used in ``[alarms.conditions.<id>]`` and ``[[guests]].conditions.<id>``). Never rename one.

Physiological limits overlap on purpose: a heart rate of 130 bpm holds both ``hr_high`` (medium)
and ``hr_high_critical`` (high); the dashboard and the sound show the highest priority present.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from vigil.config import Band, Thresholds, VigilConfig
from vigil.errors import ConfigError
from vigil.model import Metric, Priority, TechnicalKind

Kind = Literal["physiological", "arrhythmia", "technical"]

SYSTEM_GUEST = "_system"  # pseudo-guest that owns box-wide technical conditions (broker, disk, sound...)
MAX_HR_ALARM_DELAY_S = 10.0  # IEC 60601-2-27 / DESIGN §6: total HR alarm delay must stay <= 10 s


@dataclass(frozen=True, slots=True)
class ConditionSpec:
    """Default behaviour of one alarm condition."""

    id: str
    priority: Priority
    kind: Kind
    latching: bool = False
    delay_s: float = 0.0
    description: str = ""
    enabled: bool = True


def _spec(cid: str, prio: Priority, kind: Kind, latching: bool = False, delay: float = 0.0,
          text: str = "") -> ConditionSpec:
    return ConditionSpec(cid, prio, kind, latching, delay, text)


H, M, L = Priority.HIGH, Priority.MEDIUM, Priority.LOW

# Delays of threshold conditions marked -1 are taken from AlarmSettings (hr_delay_s, spo2_delay_s, qtc_delay_s).
CATALOG: dict[str, ConditionSpec] = {s.id: s for s in [
    _spec("hr_high", M, "physiological", delay=-1, text="heart rate above the warning limit"),
    _spec("hr_low", M, "physiological", delay=-1, text="heart rate below the warning limit"),
    _spec("hr_high_critical", H, "physiological", delay=-1, text="heart rate above the critical limit"),
    _spec("hr_low_critical", H, "physiological", delay=-1, text="heart rate below the critical limit"),
    _spec("qtc_high", M, "physiological", delay=-1, text="QTc above the warning limit"),
    _spec("qtc_critical", H, "physiological", delay=-1, text="QTc above the critical limit"),
    _spec("qtc_rise", H, "physiological", delay=-1, text="QTc risen more than qtc_rise_ms over the guest's baseline"),
    _spec("sbp_high", M, "physiological", text="systolic BP above the warning limit"),
    _spec("sbp_low", M, "physiological", text="systolic BP below the warning limit"),
    _spec("sbp_high_critical", H, "physiological", text="systolic BP above the critical limit"),
    _spec("sbp_low_critical", H, "physiological", text="systolic BP below the critical limit"),
    _spec("spo2_low", M, "physiological", delay=-1, text="SpO2 below the warning limit"),
    _spec("spo2_low_critical", H, "physiological", delay=-1, text="SpO2 below the critical limit"),
    # life-threatening arrhythmias: fixed ids, high, latching
    _spec("asystole", H, "arrhythmia", latching=True, text="no QRS for >= 4 s"),
    _spec("vf", H, "arrhythmia", latching=True, text="ventricular fibrillation/flutter >= 4 s"),
    _spec("vt", H, "arrhythmia", latching=True,
          text=">= 5 ventricular beats at > 100 bpm (3 with a changed pulse), checked against the pulse wave"),
    _spec("brady_extreme", H, "arrhythmia", latching=True, text="HR < 40 bpm for 5 beats"),
    _spec("tachy_extreme", H, "arrhythmia", latching=True, text="HR > 140 bpm for 17 beats"),
    _spec("af", M, "arrhythmia", text="atrial fibrillation/flutter onset"),
    _spec("pause", M, "arrhythmia", text="pause (missing beat / sinus pause)"),
    _spec("ventricular_ectopy", L, "arrhythmia", text="couplets, bigeminy or trigeminy"),
    # technical
    _spec("device_stale", M, "technical", text="a monitor stopped delivering data"),
    _spec("device_disconnected", M, "technical", text="a monitor is disconnected"),
    _spec("lead_off", M, "technical", text="ECG lead off"),
    _spec("poor_signal", L, "technical", delay=10.0, text="ECG signal quality too poor to analyse"),
    _spec("low_battery", L, "technical", text="monitor battery low"),
    _spec("broker_down", M, "technical", text="local MQTT broker unreachable (dashboards blind)"),
    _spec("disk_low", L, "technical", text="record store disk nearly full"),
    _spec("store_failed", M, "technical", text="record store write failed"),
    _spec("escalation_channel_failed", M, "technical", text="an SMS escalation attempt failed"),
    _spec("sound_failed", M, "technical", text="the local alarm sound could not be played"),
    _spec("alarm_system_fault", M, "technical", text="internal alarm system fault"),
]}

# RhythmEpisode label -> condition id (labels not listed raise nothing; BRADY/TACHY are covered by HR limits)
RHYTHM_CONDITIONS: dict[str, str] = {
    "ASYSTOLE": "asystole", "VF": "vf", "VT": "vt", "BRADY_EXTREME": "brady_extreme",
    "TACHY_EXTREME": "tachy_extreme", "AF": "af", "AFL": "af", "PAUSE": "pause",
    "COUPLET": "ventricular_ectopy", "BIGEMINY": "ventricular_ectopy", "TRIGEMINY": "ventricular_ectopy",
}

TECHNICAL_CONDITIONS: dict[TechnicalKind, str] = {k: k.value for k in TechnicalKind}

# metric -> (Thresholds attribute, condition id prefix)
_BANDED: dict[Metric, str] = {Metric.HR: "hr", Metric.SBP: "sbp", Metric.SPO2: "spo2", Metric.QTC: "qtc"}


def _delay_default(cid: str, cfg: VigilConfig) -> float:
    a = cfg.alarms
    if cid.startswith("hr_"):
        return a.hr_delay_s
    if cid.startswith("spo2_"):
        return a.spo2_delay_s
    if cid.startswith("qtc_"):
        return a.qtc_delay_s
    return 0.0


def effective_spec(cfg: VigilConfig, mat: str, cid: str) -> ConditionSpec:
    """Default spec of `cid` with alarms.conditions then guests[mat].conditions overrides applied."""
    base = CATALOG[cid]
    if base.delay_s < 0:
        base = replace(base, delay_s=_delay_default(cid, cfg))
    guest = cfg.guest(mat)
    for layer in (cfg.alarms.conditions.get(cid), guest.conditions.get(cid) if guest else None):
        if layer is None:
            continue
        fields = layer.model_dump(exclude_unset=True)
        if "enabled" in fields:
            base = replace(base, enabled=layer.enabled)
        if fields.get("priority") is not None:
            base = replace(base, priority=Priority.parse(layer.priority or "high"))
        if fields.get("delay_s") is not None:
            base = replace(base, delay_s=float(layer.delay_s or 0.0))
        if fields.get("latching") is not None:
            base = replace(base, latching=bool(layer.latching))
    return base


def validate_alarm_config(cfg: VigilConfig) -> None:
    """Refuse condition overrides the engine cannot honour (unknown ids, HR delay > 10 s); raise ConfigError."""
    problems: list[tuple[str, int | None, str]] = []
    layers = [("alarms.conditions", cfg.alarms.conditions)]
    layers += [(f"guests[{i}].conditions", g.conditions) for i, g in enumerate(cfg.guests)]
    for where, conds in layers:
        for cid, settings in conds.items():
            if cid not in CATALOG:
                problems.append((f"{where}.{cid}", None, f"unknown alarm condition {cid!r}; known: {', '.join(sorted(CATALOG))}"))
                continue
            if cid.startswith("hr_") and settings.delay_s is not None and settings.delay_s > MAX_HR_ALARM_DELAY_S:
                problems.append((f"{where}.{cid}.delay_s", None,
                                  f"HR alarm delay {settings.delay_s} s exceeds {MAX_HR_ALARM_DELAY_S} s (IEC 60601-2-27)"))
    for i, g in enumerate(cfg.guests):
        try:
            cfg.thresholds_for(g.mat)
        except ValueError as exc:  # pydantic ValidationError subclasses ValueError
            problems.append((f"guests[{i}].thresholds", None, f"contradictory limits after merging: {exc}"))
    if problems:
        raise ConfigError("alarm configuration refused: " + "; ".join(f"{k}: {m}" for k, _, m in problems), problems)


def band_conditions(prefix: str, band: Band, value: float) -> dict[str, bool]:
    """Which banded conditions of `prefix` (hr/sbp/spo2/qtc) `value` holds; NaN holds none of them."""
    out: dict[str, bool] = {}
    bad = math.isnan(value)

    def side(cid: str, limit: float | None, above: bool) -> None:
        if cid in CATALOG and limit is not None:
            out[cid] = (not bad) and (value > limit if above else value < limit)

    side(f"{prefix}_high", band.warning_high, True)
    side(f"{prefix}_low", band.warning_low, False)
    side(f"{prefix}_high_critical" if prefix != "qtc" else "qtc_critical", band.critical_high, True)
    side(f"{prefix}_low_critical", band.critical_low, False)
    return out


def metric_conditions(metric: Metric, value: float, thresholds: Thresholds,
                      baseline_qtc_ms: float | None = None) -> dict[str, bool]:
    """Condition ids decided by one numeric value, each with whether it is present."""
    prefix = _BANDED.get(metric)
    if prefix is None:
        return {}
    out = band_conditions(prefix, getattr(thresholds, prefix), value)
    if metric is Metric.QTC and baseline_qtc_ms is not None:
        out["qtc_rise"] = (not math.isnan(value)) and value - baseline_qtc_ms > thresholds.qtc_rise_ms
    return out
