"""PDF report for the clinician (matplotlib, imported here only): one file per guest, A4 landscape.

1. Summary: guest, session and export times, devices, beats, ECG stored; then the alarm table: one row
   per raised alarm with its priority, value, acknowledgement (time, operator), escalation attempts
   and when it cleared (continued on further pages when long).
2. Trends: HR, SpO2, SBP and QTc against time with the guest's threshold bands (warning = yellow,
   critical = red) from the config's thresholds.
3. ECG strips around each raised alarm (7 s before, 3 s after), three per page, drawn at 25 mm/s and
   10 mm/mV on the standard red grid (1 mm minor, 5 mm major lines), with each beat's label above it
   and the alarm onset marked. Strips are clipped at the grid edge like paper, never rescaled.

Times are UTC. At most `MAX_STRIPS` strips per guest (the rest are counted on the summary page).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vigil.export.common import ExportContext
from vigil.export.reader import (
    SampleClock,
    Stream,
    alarms_in,
    beats_in,
    iter_beats,
    plan_streams,
    read_window,
)
from vigil.model import AlarmEvent

MM = 1 / 25.4  # inch
PAGE_W, PAGE_H = 297.0, 210.0  # A4 landscape, mm
STRIP_W_MM, STRIP_H_MM = 250.0, 50.0  # 10 s at 25 mm/s; 5 mV at 10 mm/mV
SPEED_MM_S, GAIN_MM_MV = 25.0, 10.0
STRIP_BEFORE_S, STRIP_AFTER_S = 7.0, 3.0
STRIPS_PER_PAGE = 3
MAX_STRIPS = 60
ROWS_PER_PAGE = 33
GRID_MINOR = "#f5b7b1"  # 1 mm
GRID_MAJOR = "#e74c3c"  # 5 mm
BAND_WARN, BAND_CRIT = "#fff3b0", "#f8c4c4"


def utc(wall: float | None, seconds: bool = True) -> str:
    """``YYYY-MM-DD HH:MM:SS`` UTC (or an empty string)."""
    if wall is None:
        return ""
    t = dt.datetime.fromtimestamp(wall, tz=dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


@dataclass
class AlarmRow:
    """One raised alarm and what happened to it."""

    raised: AlarmEvent
    acked: AlarmEvent | None = None
    cleared: float | None = None
    escalations: list[AlarmEvent] = field(default_factory=list)
    latched: bool = False


def alarm_rows(events: list[AlarmEvent]) -> list[AlarmRow]:
    """Group transitions per raised alarm (a new raise of the same condition opens a new row)."""
    rows: list[AlarmRow] = []
    open_: dict[str, AlarmRow] = {}
    for ev in sorted(events, key=lambda e: e.wall):  # stable: same-time transitions keep their recorded order
        if ev.event == "raised":
            row = AlarmRow(ev)
            rows.append(row)
            open_[ev.condition] = row
            continue
        row2 = open_.get(ev.condition)
        if row2 is None:
            continue
        if ev.event in ("acknowledged", "reset") and row2.acked is None:
            row2.acked = ev
        elif ev.event == "escalated":
            row2.escalations.append(ev)
        elif ev.event == "latched":
            row2.latched = True
        elif ev.event == "cleared" and row2.cleared is None:
            row2.cleared = ev.wall
    return rows


def _page(fig_cls: Any) -> Any:
    return fig_cls(figsize=(PAGE_W * MM, PAGE_H * MM))


def _header(fig: Any, title: str, sub: str) -> None:
    fig.text(12 / PAGE_W, 1 - 10 / PAGE_H, title, fontsize=13, weight="bold", va="top")
    fig.text(12 / PAGE_W, 1 - 17 / PAGE_H, sub, fontsize=8, va="top", color="#444444")
    fig.text(1 - 12 / PAGE_W, 6 / PAGE_H, "Vigil is a monitoring aid, not a certified medical device.",
             fontsize=6, ha="right", color="#666666")


def _table(fig: Any, top_mm: float, header: list[str], rows: list[list[str]], widths: list[int],
           line_mm: float = 5.0) -> None:
    """A ruled table drawn as one monospace text line per row (fast for long alarm lists)."""
    def line(cells: list[str]) -> str:
        return "  ".join(c[:w].ljust(w) for c, w in zip(cells, widths, strict=True))

    x = 14 / PAGE_W
    y = top_mm
    if header:
        fig.text(x, 1 - y / PAGE_H, line(header), family="monospace", fontsize=7, weight="bold", va="top")
        y += line_mm
    if not rows:
        fig.text(x, 1 - y / PAGE_H, "none", fontsize=8, va="top")
        return
    from matplotlib.lines import Line2D

    for i, r in enumerate(rows):
        fig.text(x, 1 - (y + i * line_mm) / PAGE_H, line(r), family="monospace", fontsize=7, va="top")
    ys = [y - 1.2 + i * line_mm for i in range(len(rows) + 1)]
    for yy in ys:
        fig.add_artist(Line2D([x, 1 - 12 / PAGE_W], [1 - yy / PAGE_H] * 2, lw=0.3, color="#999999"))


def _summary_rows(ctx: ExportContext, mat: str, streams: list[Stream], clock: SampleClock) -> list[list[str]]:
    g = ctx.guest(mat)
    devices = [f"{d} ({p})" for d, p, m in ctx.store.devices(ctx.sid) if m == mat]
    labels: dict[str, int] = {}
    for b in iter_beats(ctx.store, ctx.sid, mat):
        w = clock.wall_of(b.sample)
        if w is not None and (ctx.from_wall is None or w >= ctx.from_wall) and (ctx.to_wall is None or w <= ctx.to_wall):
            labels[b.label] = labels.get(b.label, 0) + 1
    ecg = [st for st in streams if st.kind == "ecg"]
    hours = sum(s.n / s.fs for s in ecg[0].segments) / 3600 if ecg else 0.0
    gaps = sum(len(st.segments) - 1 for st in ecg[:1])
    rng = f"{utc(ctx.from_wall) or 'session start'} to {utc(ctx.to_wall) or 'session end'}"
    return [["Guest", f"{g.display_name or '(no name stored)'}, mat {mat}"],
            ["Baseline QTc", f"{g.baseline_qtc_ms:.0f} ms" if g.baseline_qtc_ms else "not given"],
            ["Session", f"{ctx.sid} (room {ctx.session.room})"],
            ["Session times (UTC)", f"{utc(ctx.session.started_wall)} to {utc(ctx.session.ended_wall) or 'running'}"],
            ["Exported range", rng],
            ["Devices", ", ".join(devices) or "none recorded"],
            ["ECG stored", f"{hours:.2f} h in {gaps + 1 if ecg else 0} continuous segment(s)"
             + (f" ({gaps} gap(s), not padded)" if gaps else "")],
            ["Beats", ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) or "none"]]


def _alarm_table_rows(rows: list[AlarmRow]) -> list[list[str]]:
    out = []
    for r in rows:
        ev = r.raised
        ack = ""
        if r.acked is not None:
            ack = f"{utc(r.acked.wall)[11:]} ({r.acked.wall - ev.wall:.0f} s) {r.acked.operator or ''}".strip()
        esc = "; ".join(f"{e.detail.get('contact', '?')} {e.detail.get('channel', '')} {e.detail.get('outcome', '')}"
                        .strip() for e in r.escalations)
        value = "" if ev.value is None or (isinstance(ev.value, float) and math.isnan(ev.value)) else f"{ev.value:g}"
        out.append([utc(ev.wall), ev.condition, ev.priority.label, value, ack or "not acknowledged",
                    esc or "-", (utc(r.cleared)[11:] if r.cleared else "active") + (" latched" if r.latched else "")])
    return out


def _trend_series(ctx: ExportContext, mat: str, clock: SampleClock) -> dict[str, tuple[list[float], list[float]]]:
    series: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in ("hr", "pulse", "spo2", "sbp", "qtc")}
    for _m, r in ctx.store.readings(ctx.sid, mat, from_wall=ctx.from_wall, to_wall=ctx.to_wall):
        key = {"hr": "pulse", "pulse_rate": "pulse", "spo2": "spo2", "sbp": "sbp"}.get(r.metric.value)
        if key and math.isfinite(r.value):
            series[key][0].append(r.wall)
            series[key][1].append(r.value)
    for _m, ms in ctx.store.measurements(ctx.sid, mat):
        if ms.metric.value not in ("hr", "qtc") or not math.isfinite(ms.value):
            continue
        w = clock.wall_of(ms.sample)
        if w is None or (ctx.from_wall is not None and w < ctx.from_wall) or (ctx.to_wall is not None and w > ctx.to_wall):
            continue
        series[ms.metric.value][0].append(w)
        series[ms.metric.value][1].append(ms.value)
    if not series["hr"][0]:
        series["hr"] = series["pulse"]
    return series


def _bands(ax: Any, band: Any, lo: float, hi: float) -> None:
    """Shade warning (yellow) and critical (red) zones of a threshold band."""
    if band is None:
        return
    wl, wh, cl, ch = band.warning_low, band.warning_high, band.critical_low, band.critical_high
    if ch is not None:
        ax.axhspan(ch, max(hi, ch + 1), color=BAND_CRIT, zorder=0)
    if wh is not None:
        ax.axhspan(wh, ch if ch is not None else max(hi, wh + 1), color=BAND_WARN, zorder=0)
    if cl is not None:
        ax.axhspan(min(lo, cl - 1), cl, color=BAND_CRIT, zorder=0)
    if wl is not None:
        ax.axhspan(cl if cl is not None else min(lo, wl - 1), wl, color=BAND_WARN, zorder=0)


def _trend_page(fig: Any, ctx: ExportContext, mat: str, clock: SampleClock) -> None:
    import matplotlib.dates as mdates

    from vigil.config import Thresholds

    series = _trend_series(ctx, mat, clock)
    th = ctx.thresholds(mat) if ctx.thresholds else Thresholds()  # seed table when no config was given
    spec = [("hr", "HR (/min)", (20, 200)), ("spo2", "SpO2 (%)", (70, 100)), ("sbp", "SBP (mmHg)", (60, 220)),
            ("qtc", "QTc (ms)", (300, 650))]
    t_lo = ctx.from_wall if ctx.from_wall is not None else ctx.session.started_wall
    ends = [seg.wall_stop for seg in clock.segments] + [t for k in series for t in series[k][0][-1:]]
    t_hi = ctx.to_wall if ctx.to_wall is not None else (ctx.session.ended_wall or max(ends or [t_lo + 60]))
    fmt = "%H:%M:%S" if t_hi - t_lo < 1200 else "%H:%M"
    top, h, gap = 22.0, 36.0, 9.0
    for i, (key, label, (lo_i, hi_i)) in enumerate(spec):
        lo, hi = float(lo_i), float(hi_i)
        ax = fig.add_axes((20 / PAGE_W, 1 - (top + (i + 1) * h + i * gap) / PAGE_H, 265 / PAGE_W, h / PAGE_H))
        t, v = series[key]
        if len(t) > 6000:  # thin very long series for the page (every k-th point)
            k = math.ceil(len(t) / 6000)
            t, v = t[::k], v[::k]
        if v:
            lo, hi = min(lo, min(v) - 5), max(hi, max(v) + 5)
            times = [dt.datetime.fromtimestamp(x, tz=dt.UTC) for x in t]
            ax.plot(times, v, "-" if key in ("hr",) else ".-", color="#1f3b73", lw=0.7, ms=2)
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#888888")
        _bands(ax, getattr(th, key, None) if th is not None else None, lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, lw=0.3, color="#bbbbbb")
        ax.set_xlim(dt.datetime.fromtimestamp(t_lo, tz=dt.UTC), dt.datetime.fromtimestamp(t_hi, tz=dt.UTC))
        ax.xaxis.set_major_formatter(mdates.DateFormatter(fmt, tz=dt.UTC))


def _grid(ax: Any, x0: float, y0: float) -> None:
    """ECG paper at (x0, y0) mm on the page: 1 mm minor and 5 mm major lines (one path per line weight)."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MPath

    for major, colour, lw in ((False, GRID_MINOR, 0.25), (True, GRID_MAJOR, 0.6)):
        verts: list[tuple[float, float]] = []
        for x in range(int(STRIP_W_MM) + 1):
            if (x % 5 == 0) == major:
                verts += [(x0 + x, y0), (x0 + x, y0 + STRIP_H_MM)]
        for y in range(int(STRIP_H_MM) + 1):
            if (y % 5 == 0) == major:
                verts += [(x0, y0 + y), (x0 + STRIP_W_MM, y0 + y)]
        codes = [MPath.MOVETO, MPath.LINETO] * (len(verts) // 2)
        patch = PathPatch(MPath(verts, codes), fill=False, edgecolor=colour, lw=lw, zorder=0 + major)
        patch.set_transform(ax.transData)
        ax.add_artist(patch)  # not add_patch: the limits are fixed, skip its slow data-limit update


def _page_axes(fig: Any) -> Any:
    """One axes over the whole page in millimetres (origin bottom left)."""
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, PAGE_W)
    ax.set_ylim(0, PAGE_H)
    ax.set_axis_off()
    return ax


def _strip(ax: Any, slot: int, ctx: ExportContext, mat: str, ev: AlarmEvent, ecg: list[Stream]) -> bool:
    """Draw one strip in slot 0..2 of a page axes (mm); False when no ECG was stored around the alarm."""
    win = read_window(ctx.store, ctx.sid, ecg, ev.wall - STRIP_BEFORE_S, ev.wall + STRIP_AFTER_S, ecg[0].channel)
    if win is None or len(win[1]) == 0:
        return False
    seg, x = win
    to_mv = seg.gain * {"uV": 1e-3, "µV": 1e-3, "mV": 1.0}.get(seg.unit, 1e-3)
    mv = x.astype(float) * to_mv
    t0 = ev.wall - STRIP_BEFORE_S
    t_first = seg.wall_start - t0  # seconds from the strip's left edge
    xs = (t_first + np.arange(len(mv)) / seg.fs) * SPEED_MM_S
    ys = (mv - float(np.median(mv))) * GAIN_MM_MV + STRIP_H_MM / 2
    x0, y0 = 24.0, PAGE_H - (28 + slot * 60 + STRIP_H_MM)
    _grid(ax, x0, y0)
    keep = (xs >= 0) & (xs <= STRIP_W_MM)
    ax.plot(x0 + xs[keep], y0 + np.clip(ys[keep], 0, STRIP_H_MM), color="black", lw=0.6, zorder=2)
    onset = x0 + STRIP_BEFORE_S * SPEED_MM_S
    ax.plot([onset, onset], [y0, y0 + STRIP_H_MM], color="#0050ff", lw=1.4, ls=(0, (4, 2)), zorder=5)
    by_label: dict[str, list[float]] = {}
    for b in beats_in(ctx.store, ctx.sid, mat, seg.channel, seg.seq_lo, seg.seq_hi):
        by_label.setdefault(b.label, []).append(x0 + (t_first + (b.sample - seg.seq_lo) / seg.fs) * SPEED_MM_S)
    for label, xs_b in by_label.items():  # one marker collection per label (fast): the letter above each beat
        ax.scatter(xs_b, [y0 + STRIP_H_MM - 2.5] * len(xs_b), marker=f"$\\mathrm{{{label}}}$", s=18, lw=0,
                   color="#c0392b" if label != "N" else "#1f3b73", zorder=4, clip_on=False)
    ax.text(x0, y0 + STRIP_H_MM + 1.5,
             f"{utc(ev.wall)} UTC  {ev.condition} ({ev.priority.label}) raised"
             + (f", value {ev.value:g}" if ev.value is not None and not math.isnan(ev.value) else "")
             + f"   |   {seg.channel}, 25 mm/s, 10 mm/mV, {seg.fs:g} Hz; dashed line = alarm onset",
             fontsize=7, va="bottom")
    return True


def export_guest(ctx: ExportContext, mat: str, dest: Path) -> list[Path]:
    """Write ``<mat>_report.pdf``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    streams = plan_streams(ctx.store, ctx.sid, mat, ctx.from_wall, ctx.to_wall)
    clock = SampleClock(streams)
    ecg = [st for st in streams if st.kind == "ecg"]
    events = alarms_in(ctx.store, ctx.sid, mat, ctx.from_wall, ctx.to_wall)
    rows = alarm_rows(events)
    strips = [r.raised for r in rows][:MAX_STRIPS] if ecg else []
    ctx.progress.add_total(3 + len(strips))
    path = dest / f"{mat}_report.pdf"
    title = f"Vigil session report - mat {mat}"
    sub = f"session {ctx.sid}, room {ctx.session.room}; session date {utc(ctx.session.started_wall)[:10]}; times UTC"
    with PdfPages(path, metadata={"Title": title, "Creator": "vigil export"}) as pdf:
        table = _alarm_table_rows(rows)
        header = ["raised (UTC)", "condition", "priority", "value", "acknowledged", "escalations", "cleared"]
        widths = [19, 20, 8, 7, 30, 34, 16]
        fig = _page(Figure)
        _header(fig, title, sub)
        _table(fig, 26, [], _summary_rows(ctx, mat, streams, clock), [20, 120])
        fig.text(12 / PAGE_W, 1 - 72 / PAGE_H, f"Alarms: {len(rows)} raised"
                 + (f" (ECG strips for the first {MAX_STRIPS})" if len(rows) > MAX_STRIPS else ""),
                 fontsize=10, weight="bold", va="top")
        first = 22
        _table(fig, 80, header, table[:first], widths)
        pdf.savefig(fig)
        ctx.progress.advance(1)
        for i in range(first, len(table), ROWS_PER_PAGE):
            fig = _page(Figure)
            _header(fig, title + " - alarms (continued)", sub)
            _table(fig, 26, header, table[i:i + ROWS_PER_PAGE], widths)
            pdf.savefig(fig)
        fig = _page(Figure)
        _header(fig, title + " - trends", sub + "; bands: yellow = warning, red = critical limits")
        _trend_page(fig, ctx, mat, clock)
        pdf.savefig(fig)
        ctx.progress.advance(1)
        for i in range(0, len(strips), STRIPS_PER_PAGE):
            fig = _page(Figure)
            _header(fig, title + " - ECG strips", sub)
            drawn = 0
            ax = _page_axes(fig)
            for j, ev in enumerate(strips[i:i + STRIPS_PER_PAGE]):
                drawn += _strip(ax, j, ctx, mat, ev, ecg)
                ctx.progress.advance(1)
            if drawn:
                pdf.savefig(fig)
    return [path]
