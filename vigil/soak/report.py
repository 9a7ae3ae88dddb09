"""Soak results: what the store, the booking platform and the process samples say, checked and printed."""

from __future__ import annotations

import json
import sqlite3
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_ALARM_WINDOW_S = 15.0  # an incarnation this long (wall) must have raised every expected alarm
DETECT_S = 3.0             # a fault must last this long under a live daemon to expect its technical alarm


@dataclass
class Incarnation:
    """One run of the daemon between start and SIGKILL/stop."""

    n: int
    pid: int
    start: float                     # harness wall clock
    end: float | None = None
    how: str = "running"             # killed | stopped | crashed | running
    exit_code: int | None = None
    session: str | None = None
    offset_end: float = 0.0          # wall-clock offset (s) the daemon saw when it ended
    rss: list[tuple[float, float]] = field(default_factory=list)  # (harness wall, MB)
    cpu_s: float = 0.0

    def alive(self, t0: float, t1: float) -> bool:
        """True when this incarnation ran through the whole interval."""
        return self.start <= t0 and (self.end is None or self.end >= t1)


@dataclass
class FaultRun:
    """A fault as it was injected."""

    kind: str
    at_sim_s: float
    start: float
    end: float
    params: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class Expectation:
    """An alarm that had to be raised, and whether it was."""

    what: str
    incarnation: int
    raised: bool
    latency_s: float | None = None


@dataclass
class SoakReport:
    """Everything the soak measured; `ok` is the verdict."""

    params: dict[str, Any]
    wall_s: float
    incarnations: int
    kills: int
    crashes: int
    faults: dict[str, int]
    expectations: list[Expectation]
    alarms_raised: dict[str, int]
    samples_stored: int
    sample_holes: int
    tail_loss_s: list[float]
    tail_window_s: float
    serial_sent: int
    serial_stored: int
    serial_downtime_samples: int
    outbox: dict[str, int]
    rss_max_mb: float
    rss_growth_mb_per_h: float | None
    rss_peak_first_last_mb: tuple[float, float]
    sync_rss_mb: tuple[float, float]
    cpu_percent: dict[str, float]
    problems: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    def to_json(self) -> str:
        """The report as JSON (for the run folder)."""
        d = {k: v for k, v in self.__dict__.items() if k != "expectations"}
        d["expectations"] = [e.__dict__ for e in self.expectations]
        d["ok"] = self.ok
        return json.dumps(d, indent=1, default=str)


# --------------------------------------------------------------------------- store queries

def _connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def session_of_audit(con: sqlite3.Connection) -> list[tuple[int, str | None, str, dict[str, Any]]]:
    """Audit rows as (id, session, action, detail); a row belongs to the session of the last "start"."""
    out: list[tuple[int, str | None, str, dict[str, Any]]] = []
    current: str | None = None
    for rid, action, detail in con.execute("SELECT id, action, detail FROM audit ORDER BY id"):
        try:
            d = json.loads(detail) if detail else {}
        except (ValueError, TypeError):
            d = {}
        if action == "start":
            current = d.get("session")
        out.append((rid, current, action, d))
    return out


def sample_holes(con: sqlite3.Connection, where: dict[str, int] | None = None) -> tuple[int, int]:
    """(samples stored, samples missing inside a stream that no gap record explains); `where` gets them per device."""
    stored = 0
    holes = 0
    gaps: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
    for sid, dev, ch, a, b in con.execute("SELECT session_id, device_id, channel, from_seq, to_seq FROM gaps"):
        gaps.setdefault((sid, dev, ch), []).append((a, b))
    prev: tuple[str, str, str] | None = None
    end = 0
    for sid, dev, ch, seq, n in con.execute(
            "SELECT session_id, device_id, channel, seq, n FROM waveform_chunks ORDER BY session_id, device_id, channel, seq"):
        key = (sid, dev, ch)
        stored += n
        if key == prev and seq > end:
            covered = any(a <= end and b >= seq for a, b in gaps.get(key, []))
            if not covered:
                holes += seq - end
                if where is not None:
                    where[f"{dev}/{ch}"] = where.get(f"{dev}/{ch}", 0) + seq - end
        prev, end = key, seq + n
    return stored, holes


def analyse(*, db: Path, incs: list[Incarnation], faults: list[FaultRun], mats: list[str], ox_mats: list[str],
            ox_devices: list[str], serial_sent: int, booking_applied: list[str],
            booking_received: int, params: dict[str, Any], wall_s: float, commit_interval_s: float,
            sync_rss: list[float], cpu_s: dict[str, float]) -> SoakReport:
    """Check the night against what had to happen."""
    con = _connect(db)
    try:
        started = dict(con.execute("SELECT id, started_wall FROM sessions").fetchall())
        raised: dict[tuple[str, str], list[tuple[str, float]]] = {}
        counts: dict[str, int] = {}
        for sid, guest, cond, wall in con.execute(
                "SELECT session_id, guest, condition, wall FROM alarm_events WHERE event = 'raised' ORDER BY id"):
            raised.setdefault((sid, guest), []).append((cond, wall))
            counts[cond] = counts.get(cond, 0) + 1
        audit = session_of_audit(con)
        hole_where: dict[str, int] = {}
        stored, holes = sample_holes(con, hole_where)
        last_wall = dict(con.execute(
            "SELECT session_id, MAX(wall_end) FROM waveform_chunks WHERE device_id NOT LIKE 'ox-%' GROUP BY session_id"))
        serial_stored = sum(r[0] or 0 for r in con.execute(
            "SELECT SUM(n) FROM waveform_chunks WHERE device_id LIKE 'ox-%' AND channel = 'pleth'"))
        first_ox = dict(con.execute(
            "SELECT session_id, MIN(wall) FROM waveform_chunks WHERE device_id LIKE 'ox-%' GROUP BY session_id"))
        outbox_rows = con.execute("SELECT idempotency_key, status FROM outbox WHERE destination = 'booking'").fetchall()
    finally:
        con.close()

    problems: list[str] = []
    exp: list[Expectation] = []
    # clinical: every guest's persistent HR-limit alarm (and SpO2 on the oximeter mats) in every incarnation
    for inc in incs:
        if inc.session is None or inc.end is None or inc.end - inc.start < MIN_ALARM_WINDOW_S:
            continue
        t_start = started.get(inc.session)
        for mat in mats:
            wants = [("hr_high", mat)] + ([("spo2_low", mat)] if mat in ox_mats else [])
            for prefix, m in wants:
                hits = [w for c, w in raised.get((inc.session, m), []) if c.startswith(prefix)]
                lat = (min(hits) - t_start) if hits and t_start is not None else None
                exp.append(Expectation(f"{prefix} {m}", inc.n, bool(hits), lat))
    # technical: broker down, disk low, oximeter disconnects under a live daemon
    tech = {(sid, d.get("kind")) for _i, sid, a, d in audit if a == "technical" and d.get("active")}
    wanted = {"broker_restart": "broker_down", "disk_full": "disk_low", "serial_storm": "device_disconnected"}
    for f in faults:
        kind = wanted.get(f.kind)
        if kind is None or f.note.startswith("skipped"):
            continue
        live = next((i for i in incs if i.session and i.alive(f.start, f.start + DETECT_S)), None)
        if live is None:
            continue
        ok = (live.session, kind) in tech or (kind == "device_disconnected" and (live.session, "device_stale") in tech)
        exp.append(Expectation(f"{kind} ({f.kind} at sim {f.at_sim_s:.0f} s)", live.n, ok))
    missed = [e for e in exp if not e.raised]
    if missed:
        problems.append(f"{len(missed)} expected alarm(s) not raised: "
                        + "; ".join(f"{e.what} in run {e.incarnation}" for e in missed[:8]))

    # samples: nothing missing inside a stream; at a SIGKILL only the last commit window is lost
    tail: list[float] = []
    for inc in incs:
        if inc.how == "killed" and inc.session in last_wall and inc.end is not None:
            tail.append(max(0.0, inc.end + inc.offset_end - last_wall[inc.session]))
    window = commit_interval_s + 1.0
    # oximeter samples sent between a run's end and the next run's first stored oximeter sample
    down_s = 0.0
    for a, b in zip(incs, incs[1:], strict=False):
        if a.end is not None and b.session in first_ox:
            down_s += max(0.0, first_ox[b.session] - (a.end + a.offset_end))
    serial_downtime_samples = int(down_s * 60 * len(ox_devices))
    if holes:
        problems.append(f"{holes} samples missing inside streams without a gap record: "
                        + ", ".join(f"{k} {v}" for k, v in sorted(hole_where.items())))
    if tail and max(tail) > window:
        problems.append(f"up to {max(tail):.2f} s of samples lost at a SIGKILL (window {window:.1f} s)")

    # outbox: every delivered row applied exactly once, nothing left behind
    status: dict[str, int] = {}
    for _k, st in outbox_rows:
        status[st] = status.get(st, 0) + 1
    delivered = {k for k, st in outbox_rows if st == "delivered"}
    applied = set(booking_applied)
    ob = {"rows": len(outbox_rows), "delivered": len(delivered), "pending": status.get("pending", 0),
          "inflight": status.get("inflight", 0), "dead": status.get("dead", 0), "applied": len(booking_applied),
          "applied_twice": len(booking_applied) - len(applied), "delivered_not_applied": len(delivered - applied),
          "applied_not_in_outbox": len(applied - {k for k, _ in outbox_rows}),
          "duplicates_sent": booking_received - len(booking_applied)}
    if ob["applied_twice"] or ob["delivered_not_applied"] or ob["applied_not_in_outbox"]:
        problems.append(f"outbox not exactly-once: {ob}")
    if ob["pending"] or ob["inflight"] or ob["dead"]:
        problems.append(f"outbox not drained at the end: {ob['pending']} pending, {ob['inflight']} in flight, "
                        f"{ob['dead']} dead")
    if not outbox_rows:
        problems.append("the daemon queued no booking events: exactly-once was not exercised")

    crashes = sum(i.how == "crashed" for i in incs)
    if crashes:
        problems.append(f"the daemon died on its own {crashes} time(s)")
    if not stored:
        problems.append("no samples stored")

    peaks = [max(mb for _t, mb in i.rss) for i in incs if i.rss]
    # growth: RSS against uptime pooled over every run (after a 20 s warm-up), as MB per hour of uptime
    pts = [(t - i.start, mb) for i in incs for t, mb in i.rss if t - i.start >= 20.0]
    growth = None
    if len(pts) >= 10 and max(u for u, _ in pts) - min(u for u, _ in pts) >= 20.0:
        growth = statistics.linear_regression([u for u, _ in pts], [mb for _, mb in pts]).slope * 3600
    cpu = {k: 100.0 * v / wall_s for k, v in cpu_s.items()} if wall_s > 0 else {}
    return SoakReport(
        params=params, wall_s=wall_s, incarnations=len(incs), kills=sum(i.how == "killed" for i in incs),
        crashes=crashes, faults={k: sum(f.kind == k for f in faults) for k in sorted({f.kind for f in faults})},
        expectations=exp, alarms_raised=dict(sorted(counts.items())), samples_stored=stored, sample_holes=holes,
        tail_loss_s=tail, tail_window_s=window, serial_sent=serial_sent, serial_stored=serial_stored,
        serial_downtime_samples=serial_downtime_samples, outbox=ob,
        rss_max_mb=max(peaks, default=0.0),
        rss_growth_mb_per_h=growth,
        rss_peak_first_last_mb=(peaks[0], peaks[-1]) if peaks else (0.0, 0.0),
        sync_rss_mb=(sync_rss[0], sync_rss[-1]) if sync_rss else (0.0, 0.0),
        cpu_percent=cpu, problems=problems,
        runs=[{"n": i.n, "s": round((i.end or i.start) - i.start, 1), "how": i.how, "session": i.session,
               "rss_max": max((mb for _t, mb in i.rss), default=None)} for i in incs])


def format_report(r: SoakReport) -> str:
    """The human-readable report."""
    p = r.params
    lines = [f"Vigil soak: {p['guests']} guests ({p['serial']} with a serial oximeter), {p['hours']:g} h simulated "
             f"at {p['speed']:g}x in {r.wall_s / 60:.1f} min wall, seed {p['seed']}",
             "",
             f"faults injected     {sum(r.faults.values())}: " + ", ".join(f"{k} {v}" for k, v in r.faults.items()),
             f"daemon runs         {r.incarnations} ({r.kills} SIGKILLed, {r.crashes} died on their own)"]
    clin = [e for e in r.expectations if e.what.startswith(("hr_high", "spo2_low"))]
    techn = [e for e in r.expectations if e not in clin]
    lats = [e.latency_s for e in clin if e.latency_s is not None]
    lines += ["",
              "alarms              expected  raised  missed",
              f"  clinical          {len(clin):8d}  {sum(e.raised for e in clin):6d}  {sum(not e.raised for e in clin):6d}"
              + (f"   (latency from session start: median {statistics.median(lats):.1f} s, max {max(lats):.1f} s)"
                 if lats else ""),
              f"  technical         {len(techn):8d}  {sum(e.raised for e in techn):6d}  {sum(not e.raised for e in techn):6d}",
              "  raised by condition: " + ", ".join(f"{k} {v}" for k, v in r.alarms_raised.items())]
    tail = r.tail_loss_s
    lines += ["",
              f"samples stored      {r.samples_stored:,} (holes inside streams without a gap record: {r.sample_holes})",
              f"  lost at SIGKILL   {len(tail)} kills: " + (f"median {statistics.median(tail):.2f} s, max {max(tail):.2f} s "
                                                          f"of data (window {r.tail_window_s:.1f} s)" if tail else "none"),
              f"  serial oximeters  sent {r.serial_sent:,}, stored {r.serial_stored:,}; sent between a daemon's "
              f"death and the next one's first stored sample ~{r.serial_downtime_samples:,}"]
    ob = r.outbox
    lines += ["",
              f"outbox (booking)    drained in {p.get('drain_s', 0):.0f} s after the night" + (
                  "" if p.get("drained", True) else " -- NOT drained"),
              f"                    {ob['rows']:,} rows: {ob['delivered']:,} delivered, {ob['pending']} pending, "
              f"{ob['dead']} dead; applied {ob['applied']:,}, applied twice {ob['applied_twice']}, "
              f"delivered but not applied {ob['delivered_not_applied']}, duplicates sent and deduped {ob['duplicates_sent']}"]
    growth = ("n/a" if r.rss_growth_mb_per_h is None else
              f"{r.rss_growth_mb_per_h:+.1f} MB per hour of uptime (all runs pooled, after 20 s)")
    lines += ["",
              f"daemon RSS          max {r.rss_max_mb:.0f} MB; growth within a run {growth}; "
              f"peak first/last run {r.rss_peak_first_last_mb[0]:.0f}/{r.rss_peak_first_last_mb[1]:.0f} MB",
              f"sync RSS            {r.sync_rss_mb[0]:.0f} -> {r.sync_rss_mb[1]:.0f} MB",
              "CPU (% of one core) " + ", ".join(f"{k} {v:.1f}" for k, v in r.cpu_percent.items()),
              "",
              "RESULT: " + ("PASS" if r.ok else "FAIL")]
    lines += [f"  - {p}" for p in r.problems]
    return "\n".join(lines)
