"""CSV export: numerics (device readings and analysis measurements), beats, rhythm episodes and alarms.

Streamed row by row. Times are UTC ISO 8601 plus Unix seconds; analysis values (beats, HR, QTc ...)
are placed in time through the ECG chunks' arrival times (see `vigil.export.reader`).
"""

from __future__ import annotations

import csv
import heapq
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vigil.export.common import ExportContext, iso
from vigil.export.reader import SampleClock, alarms_in, iter_beats, plan_streams


def _in_range(ctx: ExportContext, wall: float | None) -> bool:
    if wall is None:
        return False
    return (ctx.from_wall is None or wall >= ctx.from_wall) and (ctx.to_wall is None or wall <= ctx.to_wall)


def _num(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(round(float(v), 6))


def numeric_rows(ctx: ExportContext, mat: str, clock: SampleClock) -> Iterator[tuple[float, list[Any]]]:
    """(wall, row) of readings and measurements, merged in time order."""
    from vigil.store.records import dumps

    def readings() -> Iterator[tuple[float, list[Any]]]:
        for _m, r in ctx.store.readings(ctx.sid, mat, from_wall=ctx.from_wall, to_wall=ctx.to_wall):
            yield r.wall, [iso(r.wall), f"{r.wall:.3f}", mat, r.device_id, r.metric.value, _num(r.value),
                           r.metric.unit, ",".join(r.flags), ""]

    def measurements() -> Iterator[tuple[float, list[Any]]]:
        for _m, ms in ctx.store.measurements(ctx.sid, mat):
            w = clock.wall_of(ms.sample)
            if not _in_range(ctx, w):
                continue
            assert w is not None
            yield w, [iso(w), f"{w:.3f}", mat, f"analysis:{ms.channel}", ms.metric.value, _num(ms.value),
                      ms.metric.unit, "", dumps(ms.detail) if ms.detail else ""]

    yield from heapq.merge(readings(), measurements(), key=lambda t: t[0])


def export_guest(ctx: ExportContext, mat: str, dest: Path) -> list[Path]:
    """Write <mat>_numerics.csv, <mat>_beats.csv, <mat>_episodes.csv and <mat>_alarms.csv."""
    streams = plan_streams(ctx.store, ctx.sid, mat, ctx.from_wall, ctx.to_wall)
    clock = SampleClock(streams)
    files = []
    p = dest / f"{mat}_numerics.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["time_utc", "unix_s", "mat", "source", "metric", "value", "unit", "flags", "detail"])
        for n, (_t, row) in enumerate(numeric_rows(ctx, mat, clock)):
            w.writerow(row)
            if n % 1000 == 0:
                ctx.progress.advance(1000)
    files.append(p)
    p = dest / f"{mat}_beats.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["time_utc", "unix_s", "mat", "channel", "sample", "label"])
        for n, b in enumerate(iter_beats(ctx.store, ctx.sid, mat)):
            t = clock.wall_of(b.sample)
            if _in_range(ctx, t):
                assert t is not None
                w.writerow([iso(t), f"{t:.3f}", mat, b.channel, b.sample, b.label])
            if n % 1000 == 0:
                ctx.progress.advance(1000)
    files.append(p)
    p = dest / f"{mat}_episodes.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["start_utc", "end_utc", "duration_s", "mat", "channel", "label", "start_sample", "end_sample"])
        for _m, ep in ctx.store.episodes(ctx.sid, mat):
            t0 = clock.wall_of(ep.start)
            t1 = clock.wall_of(ep.end) if ep.end is not None else None
            if t0 is None or not (_in_range(ctx, t0) or _in_range(ctx, t1)):
                continue
            w.writerow([iso(t0), iso(t1) if t1 is not None else "", f"{t1 - t0:.3f}" if t1 is not None else "",
                        mat, ep.channel, ep.label, ep.start, "" if ep.end is None else ep.end])
    files.append(p)
    p = dest / f"{mat}_alarms.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["time_utc", "unix_s", "mat", "condition", "priority", "event", "state", "operator", "value",
                    "reason"])
        for ev in alarms_in(ctx.store, ctx.sid, mat, ctx.from_wall, ctx.to_wall):
            w.writerow([iso(ev.wall), f"{ev.wall:.3f}", mat, ev.condition, ev.priority.label, ev.event,
                        ev.state.value, ev.operator or "", _num(ev.value), ev.reason])
    files.append(p)
    return files
