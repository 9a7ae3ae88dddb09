"""`vigil replay SOURCE`: run a record or a stored session through the live pipeline on a simulated clock.

* SOURCE = a record (WFDB base path / .hea / .mat, or a BIDMC CSV): its signals become one guest with
  one device per signal (ECG + PLETH + ABP for challenge2015 records) and run through the same
  `vigil.edge.pipeline.Pipeline` (ECG analysis + alarm engine) as the daemon, as fast as possible.
  ``--json`` prints one line per alarm event {"t", "condition", "priority", "event"} where t is seconds
  from the record's start; "raised"/"cleared" mark presence, "latched" lines show latching separately.
* SOURCE = a record store file (SQLite) with ``--session ID`` (default: the latest session): re-run
  that session's stored waveforms and readings under ``--config`` and print the alarm burden
  (raised alarms per guest-hour by condition and priority).

Alarm settings (thresholds, conditions, operators) come from ``--config``; without it the defaults.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELP = "run a record or stored session through the live pipeline on a simulated clock"

DEFAULT_MAT = "r1"
_DEVICE_OK = re.compile(r"[^A-Za-z0-9_.-]")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add replay's arguments."""
    parser.add_argument("source", metavar="SOURCE", help="record path (WFDB/.mat/BIDMC CSV) or record store file")
    parser.add_argument("--config", "-c", metavar="FILE", help="config.toml whose alarm settings apply")
    parser.add_argument("--until", type=float, metavar="SECONDS", help="stop after this many seconds of record")
    parser.add_argument("--json", action="store_true", help="one JSON line per alarm event (record) / burden JSON")
    parser.add_argument("--session", metavar="ID", help="stored session id (store SOURCE; default: latest)")
    parser.add_argument("--channel", metavar="NAME|INDEX", help="record signal to use as the primary ECG")


@dataclass
class ReplayResult:
    """Alarm events of one replay (t relative to the record/session start)."""

    events: list[Any]
    t0: float
    duration_s: float
    guest_seconds: dict[str, float] = field(default_factory=dict)
    pipeline: Any = None

    def lines(self) -> list[dict[str, Any]]:
        """The --json lines."""
        return [{"t": round(e.t_mono - self.t0, 3), "condition": e.condition, "priority": e.priority.label,
                 "event": e.event} for e in self.events]


def default_config() -> Any:
    """A config with default alarm settings and no devices."""
    from vigil.config import VigilConfig

    return VigilConfig.model_validate({"site": {"name": "replay", "room": "replay"}})


def is_store(path: Path) -> bool:
    """True when `path` is an SQLite file (a record store)."""
    try:
        with path.open("rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def record_setup(cfg: Any, path: str | Path, channel: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Config with one guest wearing one device per signal of the record, and the split records."""
    from vigil.config import GuestConfig
    from vigil.edge.records import Record, load_record
    from vigil.model import Metric

    rec = load_record(path, channel=channel, ecg_leads=2)  # the 2nd lead feeds the VT stage's spectral detector
    stem = _DEVICE_OK.sub("_", Path(str(path)).name.split(".")[0])[:40] or "rec"
    per: dict[str, Record] = {}
    for ch in rec.channels:
        per[f"{stem}-{ch.name}"] = Record(rec.path, [ch], [])
    owner = {Metric.SBP: "abp", Metric.DBP: "abp", Metric.MAP: "abp", Metric.PULSE_RATE: "pleth", Metric.SPO2: "pleth"}
    for n in rec.numerics:
        dev = f"{stem}-{owner.get(n.metric, 'ecg')}"
        per.get(dev, per[f"{stem}-ecg"]).numerics.append(n)
    devices = [{"id": d, "profile": "replay-wfdb", "record": str(path), "loop": False} for d in per]
    base = cfg.guests[0] if cfg.guests else None
    guest = GuestConfig(mat=base.mat if base else DEFAULT_MAT, name="replay", devices=list(per),
                        baseline_qtc_ms=base.baseline_qtc_ms if base else None,
                        thresholds=base.thresholds if base else None, conditions=base.conditions if base else {})
    data = cfg.model_dump(exclude={"source_path"})
    data["devices"], data["guests"] = devices, [guest.model_dump()]
    new = type(cfg).model_validate(data)
    new.source_path = cfg.source_path
    return new, per


def replay_record(path: str | Path, cfg: Any = None, until: float | None = None,
                  channel: str | None = None) -> ReplayResult:
    """Run a record through the live pipeline on a SimulatedClock; return its alarm events."""
    from vigil.clock import SimulatedClock
    from vigil.edge.pipeline import MemorySink, run_replay

    cfg2, records = record_setup(cfg or default_config(), path, channel)
    clock = SimulatedClock()
    sink = MemorySink()
    t0 = clock.monotonic()
    pipe = run_replay(cfg2, clock, duration_s=until, sinks=[sink], records=records)
    dur = until if until is not None else max(r.duration_s for r in records.values())
    return ReplayResult(sink.alarms, t0, dur, {cfg2.guests[0].mat: dur}, pipe)


def replay_session(store_path: str | Path, cfg: Any = None, session: str | None = None,
                   until: float | None = None) -> ReplayResult:
    """Re-run a stored session (waveforms + readings) under `cfg`'s alarm settings."""
    from vigil.clock import SimulatedClock
    from vigil.config import GuestConfig
    from vigil.edge.pipeline import MemorySink, Pipeline
    from vigil.errors import VigilError
    from vigil.store import RecordStore
    from vigil.store.crypto import load_key

    cfg = cfg or default_config()
    key = load_key(cfg, cfg.store.key_file) if cfg.store.key_file else None
    store = RecordStore.open(str(store_path), key=key)
    try:
        sessions = store.sessions()
        if not sessions:
            raise VigilError(f"{store_path}: no stored sessions")
        info = next((s for s in sessions if s.id == session), None) if session else sessions[-1]
        if info is None:
            raise VigilError(f"{store_path}: no session {session!r}")
        sid = info.id
        by_mat: dict[str, list[str]] = {}
        for dev, _profile, mat in store.devices(sid):
            if mat:
                by_mat.setdefault(mat, []).append(_DEVICE_OK.sub("_", dev))
        for g in store.guests(sid):
            by_mat.setdefault(g.mat, [])
        baseline = {g.mat: g.baseline_qtc_ms for g in store.guests(sid)}
        guests = []
        for mat, devs in sorted(by_mat.items()):
            base = cfg.guest(mat)
            guests.append(GuestConfig(mat=mat, name="replay", devices=devs,
                                      baseline_qtc_ms=base.baseline_qtc_ms if base and base.baseline_qtc_ms
                                      else baseline.get(mat),
                                      thresholds=base.thresholds if base else None,
                                      conditions=base.conditions if base else {}).model_dump())
        data = cfg.model_dump(exclude={"source_path"})
        data["devices"] = [{"id": d, "profile": "replay-wfdb", "record": "stored"} for devs in by_mat.values()
                           for d in devs]
        data["guests"] = guests
        cfg2 = type(cfg).model_validate(data)
        items: list[tuple[float, int, str, Any]] = []
        for i, blk in enumerate(store.iter_chunks(sid)):
            items.append((blk.t_mono, i, blk.device_id, blk))
        for i, (_mat, r) in enumerate(store.readings(sid)):
            items.append((r.t_mono, 1_000_000_000 + i, r.device_id, r))
    finally:
        store.close()
    items.sort(key=lambda x: (x[0], x[1]))
    clock = SimulatedClock()
    sink = MemorySink()
    pipe = Pipeline(cfg2, clock, [sink])
    start = items[0][0] if items else 0.0
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    next_tick = 0.0
    for t_abs, _, dev, item in items:
        t = t_abs - start
        if until is not None and t > until:
            break
        while next_tick <= t:
            clock.set(next_tick)
            pipe.tick()
            next_tick += 0.1
        clock.set(t)
        mat = pipe.mat_of(_DEVICE_OK.sub("_", dev))
        if mat:
            first.setdefault(mat, t)
            last[mat] = t
        pipe.feed(_DEVICE_OK.sub("_", dev), item)
    pipe.finish()
    pipe.tick()
    guest_s = {m: max(last[m] - first[m], 0.0) for m in first}
    return ReplayResult(sink.alarms, 0.0, clock.monotonic(), guest_s, pipe)


def burden(result: ReplayResult) -> dict[str, Any]:
    """Raised alarms per guest-hour by condition and priority."""
    hours = sum(result.guest_seconds.values()) / 3600.0
    raised = [e for e in result.events if e.event == "raised" and e.guest != "_system"]
    by_cond = Counter((e.condition, e.priority.label) for e in raised)
    by_prio = Counter(e.priority.label for e in raised)
    per_h = (lambda n: round(n / hours, 3)) if hours > 0 else (lambda n: None)
    return {"guest_hours": round(hours, 4), "raised": len(raised), "per_guest_hour": per_h(len(raised)),
            "by_priority": {p: {"count": n, "per_guest_hour": per_h(n)} for p, n in sorted(by_prio.items())},
            "by_condition": [{"condition": c, "priority": p, "count": n, "per_guest_hour": per_h(n)}
                             for (c, p), n in sorted(by_cond.items(), key=lambda kv: (-kv[1], kv[0]))]}


def run(args: argparse.Namespace) -> int:
    """Replay SOURCE and print alarm events (record) or the alarm burden (stored session)."""
    from vigil.config import load_config

    cfg = load_config(args.config) if args.config else default_config()
    src = Path(args.source)
    if is_store(src):
        res = replay_session(src, cfg, args.session, args.until)
        b = burden(res)
        if args.json:
            print(json.dumps(b))
            return 0
        print(f"guest-hours {b['guest_hours']:.3f}  raised alarms {b['raised']}  per guest-hour {b['per_guest_hour']}")
        print(f"{'condition':<26}{'priority':<10}{'count':>7}{'per g-h':>10}")
        for row in b["by_condition"]:
            print(f"{row['condition']:<26}{row['priority']:<10}{row['count']:>7}{row['per_guest_hour']!s:>10}")
        return 0
    res = replay_record(src, cfg, args.until, args.channel)
    out = sys.stdout
    if args.json:
        for line in res.lines():
            out.write(json.dumps(line) + "\n")
        return 0
    print(f"{'t (s)':>9}  {'priority':<8} {'event':<13} condition")
    for line in res.lines():
        print(f"{line['t']:>9.2f}  {line['priority']:<8} {line['event']:<13} {line['condition']}")
    n = sum(1 for e in res.events if e.event == "raised")
    print(f"{n} alarm(s) raised in {res.duration_s:.1f} s of record")
    return 0
