"""FHIR export: one R4 transaction Bundle (JSON) per guest, built with the sync mapping and validated.

Contents, all through `vigil.sync.fhir_mapping` (the same resources `vigil sync` sends to the EMR):
Patient + Encounter; vital-sign Observations once per minute (the median of that minute's HR, SpO2,
SBP/DBP, QTc and SDNN values); a ~10 s lead ECG strip (``valueSampledData`` in uV) around every raised
alarm (7 s before, 3 s after); and a session-summary DiagnosticReport. The guest's identifier is the
booking roster id when the cached roster (``roster.json`` next to the store) names the same guest on
that mat, else ``vigil-<session>-<mat>``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from vigil.export.common import ExportContext
from vigil.export.reader import SampleClock, alarms_in, iter_beats, plan_streams, read_window

STRIP_BEFORE_S, STRIP_AFTER_S = 7.0, 3.0
MAX_STRIPS = 200  # per guest (bounded file size on a noisy night); the rest are counted in the summary
_READING_KEYS = {"spo2": "spo2", "sbp": "sbp", "dbp": "dbp", "hr": "hr"}
_MEASURE_KEYS = {"hr": "hr", "qtc": "qtc", "sdnn": "sdnn"}


def guest_ref(ctx: ExportContext, mat: str) -> dict[str, Any]:
    """``{"id", "display_name"}`` for the mapping (roster id when the cached roster agrees)."""
    from vigil.sync.roster import ROSTER_FILE, load_cache

    g = ctx.guest(mat)
    roster = load_cache(ctx.store.path.parent / ROSTER_FILE)
    rid = None
    if roster is not None:
        rid = next((r.id for r in roster.guests if r.mat == mat and r.display_name == g.display_name), None)
    out: dict[str, Any] = {"id": rid or f"vigil-{ctx.sid}-{mat}"}
    if g.display_name:
        out["display_name"] = g.display_name
    return out


def _in(ctx: ExportContext, w: float | None) -> bool:
    return w is not None and (ctx.from_wall is None or w >= ctx.from_wall) and (ctx.to_wall is None or w <= ctx.to_wall)


def minute_vitals(ctx: ExportContext, mat: str, clock: SampleClock) -> dict[int, dict[str, float]]:
    """{minute start (Unix s): {metric: median}} over the range."""
    buckets: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _m, r in ctx.store.readings(ctx.sid, mat, from_wall=ctx.from_wall, to_wall=ctx.to_wall):
        key = _READING_KEYS.get(r.metric.value) or ("pulse" if r.metric.value == "pulse_rate" else None)
        if key and math.isfinite(r.value):
            buckets[int(r.wall // 60) * 60][key].append(r.value)
    for _m, ms in ctx.store.measurements(ctx.sid, mat):
        key = _MEASURE_KEYS.get(ms.metric.value)
        if key is None or not math.isfinite(ms.value):
            continue
        w = clock.wall_of(ms.sample)
        if _in(ctx, w):
            assert w is not None
            buckets[int(w // 60) * 60][key].append(ms.value)
    out: dict[int, dict[str, float]] = {}
    for minute, metrics in sorted(buckets.items()):
        if "hr" not in metrics and "pulse" in metrics:  # no ECG: the monitor's pulse rate
            metrics["hr"] = metrics["pulse"]
        out[minute] = {k: float(statistics.median(v)) for k, v in metrics.items() if k != "pulse"}
    return out


def summary_text(ctx: ExportContext, mat: str, clock: SampleClock, alarms: list[Any], ecg_seconds: float,
                 strips: int, strips_dropped: int) -> str:
    """Plain-text conclusion of the session report."""
    labels: Counter[str] = Counter()
    for b in iter_beats(ctx.store, ctx.sid, mat):
        if _in(ctx, clock.wall_of(b.sample)):
            labels[b.label] += 1
    raised = Counter(ev.condition for ev in alarms if ev.event == "raised")
    acks = sum(1 for ev in alarms if ev.event in ("acknowledged", "reset"))
    esc = sum(1 for ev in alarms if ev.event == "escalated")
    eps: Counter[str] = Counter(ep.label for _m, ep in ctx.store.episodes(ctx.sid, mat)
                                if _in(ctx, clock.wall_of(ep.start)))
    parts = [f"Vigil monitoring of mat {mat}: {ecg_seconds / 3600:.2f} h of ECG stored.",
             f"Beats: {sum(labels.values())} ({', '.join(f'{k} {v}' for k, v in sorted(labels.items())) or 'none'}).",
             "Alarms raised: " + (", ".join(f"{c} x{n}" for c, n in sorted(raised.items())) or "none")
             + f"; {acks} acknowledged, {esc} escalation attempts.",
             "Rhythm episodes: " + (", ".join(f"{k} x{n}" for k, n in sorted(eps.items())) or "none") + ".",
             f"ECG strips attached: {strips}" + (f" ({strips_dropped} more alarms without a strip)." if strips_dropped
                                                 else ".")]
    return " ".join(parts)


def export_guest(ctx: ExportContext, mat: str, dest: Path) -> list[Path]:
    """Write ``<mat>_fhir_bundle.json``; every resource is validated (R4B) first."""
    from vigil.sync.fhir_mapping import bundle_for_payloads, validate_bundle

    streams = plan_streams(ctx.store, ctx.sid, mat, ctx.from_wall, ctx.to_wall)
    clock = SampleClock(streams)
    guest = guest_ref(ctx, mat)
    ecg_streams = [st for st in streams if st.kind == "ecg"]
    ecg_seconds = sum(seg.n / seg.fs for st in ecg_streams[:1] for seg in st.segments)
    start = ctx.from_wall if ctx.from_wall is not None else ctx.session.started_wall
    end = ctx.to_wall if ctx.to_wall is not None else (ctx.session.ended_wall or max(
        [seg.wall_stop for st in streams for seg in st.segments] or [start]))
    base = {"session_id": ctx.sid, "guest": guest, "session_start": ctx.session.started_wall}
    if ctx.session.ended_wall is not None:
        base["session_end"] = ctx.session.ended_wall
    payloads: list[dict[str, Any]] = [{**base, "kind": "encounter"}]
    vitals = minute_vitals(ctx, mat, clock)
    ctx.progress.add_total(len(vitals) + 10)
    for minute, metrics in vitals.items():
        payloads.append({**base, "kind": "vitals", "wall": float(minute), "metrics": metrics})
        ctx.progress.advance(1)
    alarms = alarms_in(ctx.store, ctx.sid, mat, ctx.from_wall, ctx.to_wall)
    strips = dropped = 0
    for ev in alarms:
        if ev.event != "raised":
            continue
        if strips >= MAX_STRIPS:
            dropped += 1
            continue
        win = read_window(ctx.store, ctx.sid, ecg_streams, ev.wall - STRIP_BEFORE_S, ev.wall + STRIP_AFTER_S,
                          ecg_streams[0].channel) if ecg_streams else None
        if win is None or len(win[1]) == 0:
            continue
        seg, x = win
        to_uv = seg.gain * {"uV": 1.0, "µV": 1.0, "mV": 1000.0}.get(seg.unit, 1.0)
        uv = (x.astype(float) * to_uv).round().astype(int).tolist()
        payloads.append({**base, "kind": "ecg_strip", "start_wall": seg.wall_start, "fs": seg.fs,
                         "samples_uV": uv, "lead": "II",
                         "reason": f"alarm {ev.condition} ({ev.priority.label}) raised"})
        strips += 1
    payloads.append({**base, "kind": "summary", "session_start": start, "session_end": end,
                     "conclusion": summary_text(ctx, mat, clock, alarms, ecg_seconds, strips, dropped)})
    bundle = bundle_for_payloads(payloads)
    validate_bundle(bundle)
    ctx.progress.advance(10)
    path = dest / f"{mat}_fhir_bundle.json"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(bundle, f, separators=(",", ":"))
    return [path]
