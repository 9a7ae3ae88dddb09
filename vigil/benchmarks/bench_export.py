"""Export speed: 1 h of one guest's ECG (MIT-BIH 119 at 360 Hz, replayed through the live pipeline into a
real SQLite store) exported in every format; prints format, seconds, MB and peak RSS growth.

``python -m vigil.benchmarks.bench_export [--minutes 60] [--key] [--keep DIR]``

`build_session` is also what the export tests use to make their stores: real records replayed through
`vigil.edge.pipeline.Pipeline` (ECG analysis + alarm engine) with a `StoreSink` into a `RecordStore`,
optionally with a link loss (blocks dropped: a seq jump, recorded as a gap) and an operator acknowledgement.
"""

from __future__ import annotations

import argparse
import heapq
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_WALL = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC


@dataclass
class GuestSpec:
    """One guest of a built session: a vendored (or given) record replayed as its device(s)."""

    mat: str
    record: str  # path without extension
    name: str = "Test Guest"
    start_s: float = 0.0
    channel: int | str | None = None


@dataclass
class Built:
    """What build_session made."""

    db: Path
    sid: str
    key: bytes | None
    cfg: Any
    alarms: list[Any] = field(default_factory=list)
    gaps: list[tuple[str, str, str, int, int, str]] = field(default_factory=list)


class _SyncWriter:
    """StoreWriter stand-in for a single-threaded build: `submit` calls the store at once."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def submit(self, name: str, *args: Any) -> bool:
        getattr(self.store, name)(*args)
        self.store.maybe_commit()
        return True


def build_session(db: Path, guests: list[GuestSpec], *, seconds: float, key: bytes | None = None,
                  gap: tuple[float, float] | None = None, ack_after_s: float | None = 5.0,
                  escalate: bool = True, loop: bool = False, analysis: bool = True) -> Built:
    """Replay `guests` for `seconds` through the pipeline into the store at `db`; return the session."""
    from vigil.clock import SimulatedClock
    from vigil.config import VigilConfig
    from vigil.edge.pipeline import MemorySink, Pipeline, StoreSink
    from vigil.edge.records import Record, load_record
    from vigil.edge.transports.replay import BlockItem, replay_events, to_output
    from vigil.model import AlarmEvent, GuestInfo, Metric
    from vigil.store import RecordStore

    devices: list[dict[str, Any]] = []
    gcfg: list[dict[str, Any]] = []
    records: dict[str, Any] = {}
    for g in guests:
        rec = load_record(g.record, channel=g.channel, start_s=g.start_s)
        owner = {Metric.SBP: "abp", Metric.DBP: "abp", Metric.MAP: "abp", Metric.PULSE_RATE: "pleth",
                 Metric.SPO2: "pleth"}
        per: dict[str, Record] = {f"{g.mat}-{ch.name}": Record(rec.path, [ch], []) for ch in rec.channels}
        for n in rec.numerics:
            per.get(f"{g.mat}-{owner.get(n.metric, 'ecg')}", per[f"{g.mat}-ecg"]).numerics.append(n)
        records.update(per)
        devices += [{"id": d, "profile": "replay-wfdb", "record": g.record} for d in per]
        gcfg.append({"mat": g.mat, "name": g.name, "devices": list(per), "baseline_qtc_ms": 410})
    cfg = VigilConfig.model_validate({"site": {"name": "test", "room": "room1"}, "devices": devices,
                                      "guests": gcfg, "operators": [{"name": "lead"}]})
    clock = SimulatedClock(start_wall=START_WALL)
    store = RecordStore.open(db, key=key, clock=clock.monotonic)
    sid = store.start_session("room1", clock.wall(), {"site": "test"})
    for g, gc in zip(guests, gcfg, strict=True):
        devs: list[str] = gc["devices"]
        store.upsert_guest(sid, GuestInfo(g.mat, g.name, 410.0, tuple(devs)))
        for d in devs:
            store.upsert_device(sid, d, "replay-wfdb", g.mat)
    mem = MemorySink()
    pipe = Pipeline(cfg, clock, [StoreSink(_SyncWriter(store), sid), mem],
                    analyzer_factory=bool(analysis))
    t0 = clock.monotonic()
    def tagged(i: int, dev: str, rec: Any) -> Any:
        for t, item in replay_events(rec, 0.25, loop):
            yield t, i, dev, item

    streams = [tagged(i, dev, rec) for i, (dev, rec) in enumerate(records.items())]
    next_tick, acked = 0.0, set()
    for t, _i, dev, item in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
        if t > seconds:
            break
        while next_tick <= t:
            clock.set(t0 + next_tick)
            pipe.tick()
            next_tick += 0.1
            if ack_after_s is not None:
                for ev in mem.alarms:
                    if ev.event == "raised" and (ev.guest, ev.condition) not in acked \
                            and clock.monotonic() - ev.t_mono >= ack_after_s:
                        acked.add((ev.guest, ev.condition))
                        pipe.command({"v": 1, "op": "ack", "operator": "lead", "guest": ev.guest,
                                      "condition": ev.condition, "ts": clock.wall(), "nonce": uuid.uuid4().hex})
        clock.set(t0 + t)
        if gap is not None and isinstance(item, BlockItem) and gap[0] <= t < gap[1]:
            continue  # link loss: the block never arrives (the pipeline sees a seq jump)
        pipe.feed(dev, to_output(dev, item, clock.monotonic(), clock.wall()))
    pipe.finish()
    pipe.tick()
    if escalate:  # what the Escalator records for an SMS attempt (no SMS service in a build)
        raised = next((e for e in mem.alarms if e.event == "raised"), None)
        if raised is not None:
            ev = AlarmEvent(raised.guest, raised.condition, raised.priority, "escalated", raised.state,
                            raised.t_mono + 30, raised.wall + 30, None, "unacknowledged 30 s",
                            None, {"step": 1, "contact": "on-call", "channel": "sms", "outcome": "sent"})
            store.add_alarm_event(sid, ev)
            mem.alarms.append(ev)
    store.end_session(sid, clock.wall())
    store.close()
    return Built(db, sid, key, cfg, mem.alarms, mem.gaps)


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def main(argv: list[str] | None = None) -> int:
    """Build a session of `--minutes` of 119 and time every export format."""
    from vigil.datasets import vendored
    from vigil.export.api import export_session
    from vigil.store import RecordStore

    ap = argparse.ArgumentParser(prog="bench_export", description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--key", action="store_true", help="encrypted store (AES-256-GCM chunks)")
    ap.add_argument("--keep", metavar="DIR", help="build and export under DIR (kept)")
    ap.add_argument("--direct", action="store_true",
                    help="build without the pipeline (fast; expert beats, per-minute alarms): for long sessions")
    ap.add_argument("--formats", default="wfdb,edf,csv,fhir,pdf")
    ap.add_argument("--guests", type=int, default=1, help="with --direct: guests in the session (all exported)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as td:
        root = Path(args.keep) if args.keep else Path(td)
        root.mkdir(parents=True, exist_ok=True)
        key = bytes(range(32)) if args.key else None
        t = time.perf_counter()
        db = root / "bench.db"
        if args.direct:
            sid, _n = build_hour_direct(db, args.minutes, key=key, guests=args.guests)
            how, thresholds = "directly (expert beats, per-minute alarms)", None
        else:
            built = build_session(db, [GuestSpec("A1", str(vendored("119")))], seconds=args.minutes * 60, key=key,
                                  loop=True)
            sid, thresholds = built.sid, built.cfg.thresholds_for
            how = f"through the pipeline ({len(built.alarms)} alarm events)"
        print(f"built {args.guests} x {args.minutes:g} min of MIT-BIH 119 (360 Hz) {how} in {time.perf_counter() - t:.1f} s, "
              f"key={'yes' if key else 'no'}; peak RSS so far {_peak_rss_mb():.0f} MB")
        store = RecordStore.open(db, key=key)
        print(f"{'format':>6} {'seconds':>8} {'CPU s':>7} {'MB':>8} {'files':>5} {'peak RSS MB':>11}")
        try:
            for fmt in args.formats.split(","):
                t, cpu = time.perf_counter(), time.process_time()
                res = export_session(store, sid, fmt, root / "out", mat="A1" if args.guests == 1 else None,
                                     operator="bench", thresholds=thresholds)
                dt_s, cpu = time.perf_counter() - t, time.process_time() - cpu
                print(f"{fmt:>6} {dt_s:8.2f} {cpu:7.2f} {res.bytes / 1e6:8.2f} {len(res.files):5d} "
                      f"{_peak_rss_mb():11.0f}")
        finally:
            store.close()
    return 0



def build_hour_direct(db: Path, minutes: float = 60.0, key: bytes | None = None, guests: int = 1) -> tuple[str, int]:
    """A fast long store without the analyser: MIT-BIH 119 looped as 1-s blocks, its expert beat
    annotations as beats, and a ventricular_ectopy alarm (raised/cleared) per minute holding V beats.

    `guests` > 1 adds mats A2, A3, ... with the same signal shifted by a minute per mat. Returns (session id,
    samples stored per guest). Used by the speed guard test (the pipeline takes ~50 s per hour of ECG).
    """
    import numpy as np
    import wfdb

    from vigil.datasets import vendored
    from vigil.model import AlarmEvent, AlarmState, Beat, ChannelKind, GuestInfo, Priority, SampleBlock
    from vigil.store import RecordStore

    rec = wfdb.rdrecord(str(vendored("119")), channels=[0], physical=False)
    fs = float(rec.fs)
    uv = np.round(rec.d_signal[:, 0].astype(np.float64) * (1000.0 / rec.adc_gain[0])).astype(np.int32)
    ann = wfdb.rdann(str(vendored("119")), "atr")
    labels = {"N": "N", "L": "N", "R": "N", "e": "N", "j": "N", "V": "V", "E": "V", "A": "S", "a": "S", "J": "S",
              "S": "S", "F": "F", "/": "Q", "f": "Q", "Q": "Q"}
    beats = [(int(s), labels[sym]) for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in labels]
    total = int(minutes * 60 * fs)
    block = int(fs)  # 1-s blocks (the store cuts 2-s chunks either way)
    store = RecordStore.open(db, key=key, commit_interval_s=10.0, clock=lambda: 0.0)  # one commit, at close
    sid = store.start_session("room1", START_WALL, {"site": "bench"})
    n_rec = len(uv)
    for g in range(guests):
        mat, dev, shift = f"A{g + 1}", f"A{g + 1}-ecg", int(g * 60 * fs)
        store.upsert_guest(sid, GuestInfo(mat, f"Bench Guest {g + 1}", 410.0, (dev,)))
        store.upsert_device(sid, dev, "replay-wfdb", mat)
        for seq in range(0, total, block):
            idx = (np.arange(seq, min(seq + block, total)) + shift) % n_rec
            t_end = (seq + len(idx)) / fs
            store.add_block(sid, mat, SampleBlock(dev, "ecg", ChannelKind.ECG, fs, "uV", 1.0, seq, uv[idx],
                                                  t_end, START_WALL + t_end))
            if seq % (600 * block) == 0:
                store.flush()  # a commit per 10 min of signal keeps the build's memory flat
        out: list[Beat] = []
        minutes_with_v: set[int] = set()
        for lap in range(-n_rec, total + n_rec, n_rec):
            for s, lab in beats:
                pos = lap + s - shift
                if 0 <= pos < total:
                    out.append(Beat(pos, lab))  # type: ignore[arg-type]
                    if lab == "V":
                        minutes_with_v.add(int(pos / fs // 60))
        out.sort(key=lambda b: b.sample)
        store.add_beats(sid, mat, "ecg", out)
        for m in sorted(minutes_with_v):
            w = START_WALL + m * 60 + 30
            for event, state, dt_s in (("raised", AlarmState.ACTIVE, 0.0), ("cleared", AlarmState.INACTIVE, 5.0)):
                store.add_alarm_event(sid, AlarmEvent(mat, "ventricular_ectopy", Priority.LOW, event, state,
                                                      m * 60 + 30 + dt_s, w + dt_s))
        store.flush()
    store.end_session(sid, START_WALL + total / fs)
    store.close()
    return sid, total


if __name__ == "__main__":
    raise SystemExit(main())
