"""Soak results: what the store, the booking platform and the process samples say, checked and printed."""

from __future__ import annotations

import bisect
import json
import sqlite3
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_ALARM_WINDOW_S = 15.0  # an incarnation this long (s) must have raised every expected alarm
# how long a fault must last under a live daemon to expect its technical alarm: a broker or serial link
# loss is seen at once (the socket/pty read fails: measured within 0.01 s); free space is checked every
# StoreWriter.disk_check_s (10 s) and at start-up
DETECT_S: dict[str, float] = {"broker_down": 1.0, "device_disconnected": 1.0, "disk_low": 12.0}
DETECT_AT_START_S = 5.0    # a daemon started on a full disk must say so this soon (1.5 s measured at start-up)
MAX_ALARM_LAG_S = 10.0     # IEC 60601-2-27 / DESIGN §6: an alarm within 10 s of its condition
RSS_MIN_UPTIME_S = 120.0   # only runs at least this long say anything about RSS growth within a run
RSS_WARMUP_S = 20.0
# BLE storms: a stream must be back this soon after the storm ends (or after a daemon started later began):
# the supervisor's backoff reaches 16 s after ~6 failed attempts in a row (cap 30 s), plus a 5 s scan
BLE_RESUME_S = 45.0
BLE_SETTLE_S = 10.0        # after a storm's end, when the fd/RSS sample is compared with the one before it
BLE_WARMUP_S = 10.0        # the "before" sample must be this long after the run started (start-up is not a leak)
FD_SLACK = 3               # more open fds than before a storm by this much is a leak
RSS_STORM_SLACK_MB = 40.0  # more RSS than before a storm by this much is a problem (normal warm-up stays below)
TECHNICAL = ("broker_down", "device_disconnected", "device_stale", "disk_low")


@dataclass
class Incarnation:
    """One run of the daemon between start and SIGKILL/stop.

    Every time here is on CLOCK_MONOTONIC (`time.monotonic()` of the harness), the same clock the daemon
    stamps as `t_mono` on alarm events and waveform chunks; the wall clock is stepped by the clock-jump
    fault and is never used for a duration.
    """

    n: int
    pid: int
    start: float                     # harness monotonic clock
    end: float | None = None
    how: str = "running"             # killed | stopped | crashed | running
    exit_code: int | None = None
    session: str | None = None
    offset_end: float = 0.0          # wall-clock offset (s) the daemon saw when it ended (information only)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (harness monotonic, MB)
    cpu_s: float = 0.0
    fds: list[tuple[float, int]] = field(default_factory=list)  # (harness monotonic, open file descriptors)

    def alive(self, t0: float, t1: float) -> bool:
        """True when this incarnation ran through the whole interval."""
        return self.start <= t0 and (self.end is None or self.end >= t1)


@dataclass
class FaultRun:
    """A fault as it was injected (`start`/`end` on the harness's monotonic clock)."""

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
    alarm_lag_s: list[float]
    tail_window_s: float
    serial_sent: int
    serial_stored: int
    serial_downtime_samples: int
    outbox: dict[str, int]
    rss_max_mb: float
    rss_growth_mb_per_h: float | None
    rss_growth_note: str
    rss_peak_trend_mb_per_h: float | None   # per-run peak RSS against night time, MB per simulated hour
    rss_peak_first_last_mb: tuple[float, float]
    sync_rss_mb: tuple[float, float]
    cpu_percent: dict[str, float]
    problems: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    ble_readings: int = 0                   # SpO2 readings stored from the BLE oximeters
    ble_storms: list[dict[str, Any]] = field(default_factory=list)  # per storm: resume delays, fds, RSS
    ble_stats: dict[str, int] = field(default_factory=dict)         # what the virtual peripherals saw

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


def _alive_for(inc: Incarnation, t0: float, t1: float) -> bool:
    return inc.session is not None and inc.alive(t0, t1)


def _clear_of_storms(inc: Incarnation, faults: list[FaultRun], kind: str = "serial_storm") -> float:
    """When the oximeters were last plugged in for good during `inc` (the end of the last `kind` storm it saw)."""
    end = inc.end if inc.end is not None else float("inf")
    clear = inc.start
    for f in faults:
        if f.kind == kind and not f.note.startswith("skipped") and f.start < end and f.end > inc.start:
            clear = max(clear, f.end)
    return clear


def technical_expectations(faults: list[FaultRun], incs: list[Incarnation], tech: set[tuple[str | None, str]],
                           dev_tech: set[tuple[str | None, str, str]] | None = None,
                           ble_devices: list[str] | None = None) -> list[Expectation]:
    """Technical alarms the faults called for: the daemon alive when a fault began (for its detection time)
    must raise it; for a full disk so must a daemon started while the ballast was there. A BLE storm calls
    for device_disconnected (or device_stale) of every BLE device, from `dev_tech` (session, kind, device)."""
    wanted = {"broker_restart": "broker_down", "disk_full": "disk_low", "serial_storm": "device_disconnected"}
    exp: list[Expectation] = []
    for f in faults:
        if f.kind == "ble_storm" and not f.note.startswith("skipped"):
            for live in [i for i in incs if _alive_for(i, f.start, f.start + DETECT_S["device_disconnected"])]:
                for dev in ble_devices or []:
                    ok = any((live.session, k, dev) in (dev_tech or set())
                             for k in ("device_disconnected", "device_stale"))
                    exp.append(Expectation(f"device_disconnected {dev} (ble_storm at sim {f.at_sim_s:.0f} s)",
                                           live.n, ok))
            continue
        kind = wanted.get(f.kind)
        if kind is None or f.note.startswith("skipped"):
            continue
        due = [i for i in incs if _alive_for(i, f.start, f.start + DETECT_S[kind])]
        if kind == "disk_low":
            due += [i for i in incs if i.session and f.start < i.start and i.start + DETECT_AT_START_S <= f.end
                    and i.alive(i.start, i.start + DETECT_AT_START_S)]
        for live in due:
            ok = (live.session, kind) in tech or (kind == "device_disconnected"
                                                  and (live.session, "device_stale") in tech)
            exp.append(Expectation(f"{kind} ({f.kind} at sim {f.at_sim_s:.0f} s)", live.n, ok))
    return exp


def _sample_at(samples: list[tuple[float, Any]], t: float, *, before: bool) -> Any:
    """The last sample before `t` (before=True) or the first at or after it; None when there is none."""
    if before:
        prior = [v for ts, v in samples if ts < t]
        return prior[-1] if prior else None
    return next((v for ts, v in samples if ts >= t), None)


def ble_storm_checks(faults: list[FaultRun], incs: list[Incarnation], ble_devices: list[str],
                     ble_times: dict[str, list[float]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per BLE storm: how soon each BLE stream was back after it, and the daemon's fds and RSS before and after.

    A stream is back at its first stored reading after the storm's end; the delay counts from the end, or
    from the start of the daemon run that stored it when that run began later (a SIGKILL in between).
    fds compare the most the run held before the storm (from `BLE_WARMUP_S` into the run; another fault
    overlapping the storm's start may have closed some for a moment) with the first sample `BLE_SETTLE_S`
    after its end; RSS compares the last sample before the storm with that one; both in a run that lived
    through the storm. A storm that ended less than `BLE_RESUME_S` before the last daemon run stopped
    is not held against a stream that did not come back (the night ended first).
    """
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    night_end = max((i.end for i in incs if i.end is not None), default=float("inf"))
    for f in faults:
        if f.kind != "ble_storm" or f.note.startswith("skipped"):
            continue
        row: dict[str, Any] = {"at_sim_s": f.at_sim_s, "resumed_s": {}, "fds": None, "rss_mb": None}
        for dev in ble_devices:
            ts = ble_times.get(dev, [])
            k = bisect.bisect_right(ts, f.end)
            if k == len(ts):
                row["resumed_s"][dev] = None
                if night_end - f.end < BLE_RESUME_S:
                    row["note"] = "night ended before the streams were due back"
                    continue
                problems.append(f"{dev}: no reading stored after the BLE storm at sim {f.at_sim_s:.0f} s")
                continue
            t1 = ts[k]
            run = next((i for i in incs if i.start <= t1 and (i.end is None or t1 <= i.end)), None)
            delay = t1 - max(f.end, run.start if run is not None else f.end)
            row["resumed_s"][dev] = round(delay, 2)
            if delay > BLE_RESUME_S:
                problems.append(f"{dev}: stream back {delay:.0f} s after the BLE storm at sim {f.at_sim_s:.0f} s "
                                f"(limit {BLE_RESUME_S:.0f} s)")
        live = next((i for i in incs if i.alive(f.start, f.end + BLE_SETTLE_S)), None)
        if live is not None and f.start - live.start < BLE_WARMUP_S:
            row["note"] = "storm during the daemon's start-up: fds/RSS not compared"
        elif live is not None:
            warm = [x for x in live.fds if x[0] >= live.start + BLE_WARMUP_S], \
                [x for x in live.rss if x[0] >= live.start + BLE_WARMUP_S]
            # the most fds the warmed-up run held before the storm: a fault that overlaps its start (a serial
            # storm closing ports) must not lower the baseline, and a leak shows as more than the run ever had
            prior_fds = [n for t, n in warm[0] if t < f.start]
            fd0 = max(prior_fds) if prior_fds else None
            fd1 = _sample_at(live.fds, f.end + BLE_SETTLE_S, before=False)
            mb0, mb1 = _sample_at(warm[1], f.start, before=True), _sample_at(live.rss, f.end + BLE_SETTLE_S, before=False)
            if fd0 is not None and fd1 is not None:
                row["fds"] = (fd0, fd1)
                if fd1 - fd0 > FD_SLACK:
                    problems.append(f"daemon run {live.n}: {fd1 - fd0} more open fds after the BLE storm at sim "
                                    f"{f.at_sim_s:.0f} s ({fd0} -> {fd1})")
            if mb0 is not None and mb1 is not None:
                row["rss_mb"] = (round(mb0, 1), round(mb1, 1))
                if mb1 - mb0 > RSS_STORM_SLACK_MB:
                    problems.append(f"daemon run {live.n}: RSS {mb0:.0f} -> {mb1:.0f} MB over the BLE storm at sim "
                                    f"{f.at_sim_s:.0f} s")
        rows.append(row)
    return rows, problems


def rss_growth(incs: list[Incarnation]) -> tuple[float | None, str]:
    """RSS growth within a run, MB per hour of uptime, pooled over runs of at least RSS_MIN_UPTIME_S.

    A run shorter than that (a SIGKILL every few minutes) says nothing about a leak; when none is long
    enough the growth is None and the note says why.
    """
    long = [i for i in incs if i.end is not None and i.end - i.start >= RSS_MIN_UPTIME_S]
    pts = [(t - i.start, mb) for i in long for t, mb in i.rss if t - i.start >= RSS_WARMUP_S]
    if not long or len(pts) < 10:
        longest = max((i.end - i.start for i in incs if i.end is not None), default=0.0)
        return None, f"n/a: no run lasted {RSS_MIN_UPTIME_S:.0f} s (longest {longest:.0f} s)"
    up = sum((i.end or i.start) - i.start for i in long)
    slope = statistics.linear_regression([u for u, _ in pts], [mb for _, mb in pts]).slope * 3600
    return slope, (f"{slope:+.1f} MB per hour of uptime (pooled over the {len(long)} run(s) of "
                   f">= {RSS_MIN_UPTIME_S:.0f} s, {up / 60:.0f} min of uptime, after {RSS_WARMUP_S:.0f} s)")


def alarm_lags(con: sqlite3.Connection) -> list[float]:
    """How long after its data arrived each SBP/SpO2 limit alarm was raised (s, monotonic; a lower bound).

    The data is the newest stored reading of that guest and metric with the alarm's value that arrived
    before the raise; a pipeline that falls behind shows here (the condition delay adds for SpO2, whose
    readings come every second, only when the value changed).
    """
    lags: list[float] = []
    rows = con.execute("SELECT session_id, guest, condition, t_mono, value FROM alarm_events WHERE event = 'raised' "
                       "AND (condition LIKE 'sbp_%' OR condition LIKE 'spo2_%') AND value IS NOT NULL").fetchall()
    for sid, mat, cond, t_mono, value in rows:
        (t_data,) = con.execute("SELECT MAX(t_mono) FROM readings WHERE session_id = ? AND mat = ? AND metric = ? "
                                "AND t_mono <= ? AND value = ?", (sid, mat, cond.split("_")[0], t_mono, value)
                                ).fetchone()
        if t_data is not None:
            lags.append(t_mono - t_data)
    return lags


def analyse(*, db: Path, incs: list[Incarnation], faults: list[FaultRun], mats: list[str], ox_mats: list[str],
            ox_devices: list[str], serial_sent: int, booking_applied: list[str],
            booking_received: int, params: dict[str, Any], wall_s: float, commit_interval_s: float,
            sync_rss: list[float], cpu_s: dict[str, float], ble_mats: list[str] | None = None,
            ble_devices: list[str] | None = None, ble_stats: dict[str, int] | None = None) -> SoakReport:
    """Check the night against what had to happen (every duration from monotonic times, see Incarnation)."""
    ble_mats, ble_devices = list(ble_mats or []), list(ble_devices or [])
    con = _connect(db)
    try:
        raised: dict[tuple[str, str], list[tuple[str, float]]] = {}
        counts: dict[str, int] = {}
        tech: set[tuple[str | None, str]] = set()
        for sid, guest, cond, t_mono in con.execute(
                "SELECT session_id, guest, condition, t_mono FROM alarm_events WHERE event = 'raised' ORDER BY id"):
            raised.setdefault((sid, guest), []).append((cond, t_mono))
            counts[cond] = counts.get(cond, 0) + 1
            if cond in TECHNICAL:
                tech.add((sid, cond))
        audit = session_of_audit(con)
        tech |= {(sid, str(d.get("kind"))) for _i, sid, a, d in audit if a == "technical" and d.get("active")}
        dev_tech = {(sid, str(d.get("kind")), str(d.get("device"))) for _i, sid, a, d in audit
                    if a == "technical" and d.get("active")}
        ble_times: dict[str, list[float]] = {d: [] for d in ble_devices}
        if ble_devices:
            marks = ",".join("?" * len(ble_devices))
            for dev, t in con.execute(f"SELECT device_id, t_mono FROM readings WHERE metric = 'spo2' "  # noqa: S608
                                      f"AND device_id IN ({marks}) ORDER BY t_mono", ble_devices):
                ble_times[dev].append(t)
        alarm_lag = alarm_lags(con)
        hole_where: dict[str, int] = {}
        stored, holes = sample_holes(con, hole_where)
        # the last stored sample of every replayed channel on the monotonic clock: its newest chunk's t_mono
        # plus the arrival span of its blocks (wall_end - wall, bounded by its length in samples: steps
        # cannot leak in); a session's loss at a kill is that of its worst channel
        last_mono: dict[str, float] = {}
        worst_where: dict[str, str] = {}
        for sid, dev, ch, t_mono, span, n, fs in con.execute(
                "SELECT session_id, device_id, channel, t_mono, wall_end - wall, n, fs FROM waveform_chunks "
                "WHERE device_id NOT LIKE 'ox-%' AND id IN (SELECT MAX(id) FROM waveform_chunks "
                "WHERE device_id NOT LIKE 'ox-%' GROUP BY session_id, device_id, channel)"):
            end = t_mono + min(max(span, 0.0), n / fs)
            if end < last_mono.get(sid, float("inf")):
                last_mono[sid], worst_where[sid] = end, f"{dev}/{ch}"
        serial_stored = sum(r[0] or 0 for r in con.execute(
            "SELECT SUM(n) FROM waveform_chunks WHERE device_id LIKE 'ox-%' AND channel = 'pleth'"))
        first_ox = dict(con.execute(
            "SELECT session_id, MIN(t_mono) FROM waveform_chunks WHERE device_id LIKE 'ox-%' GROUP BY session_id"))
        outbox_rows = con.execute("SELECT idempotency_key, status FROM outbox WHERE destination = 'booking'").fetchall()
    finally:
        con.close()

    problems: list[str] = []
    exp: list[Expectation] = []
    # clinical: every guest's persistent HR-limit alarm (and SpO2 on the oximeter mats, when the oximeter
    # was left plugged in long enough) in every incarnation
    for inc in incs:
        if inc.session is None or inc.end is None or inc.end - inc.start < MIN_ALARM_WINDOW_S:
            continue
        ox_ok = inc.end - _clear_of_storms(inc, faults) >= MIN_ALARM_WINDOW_S
        ble_ok = inc.end - _clear_of_storms(inc, faults, "ble_storm") >= MIN_ALARM_WINDOW_S
        for mat in mats:
            wants = [("hr_high", mat)] + ([("spo2_low", mat)] if mat in ox_mats and ox_ok else [])
            wants += [("spo2_low", mat)] if mat in ble_mats and ble_ok else []
            for prefix, m in wants:
                hits = [t for c, t in raised.get((inc.session, m), []) if c.startswith(prefix)]
                lat = (min(hits) - inc.start) if hits else None
                exp.append(Expectation(f"{prefix} {m}", inc.n, bool(hits), lat))
    exp += technical_expectations(faults, incs, tech, dev_tech, ble_devices)
    missed = [e for e in exp if not e.raised]
    if missed:
        problems.append(f"{len(missed)} expected alarm(s) not raised: "
                        + "; ".join(f"{e.what} in run {e.incarnation}" for e in missed[:8]))

    # samples: nothing missing inside a stream; at a SIGKILL only the last commit window is lost
    tail: list[float] = []
    over: list[str] = []
    window = commit_interval_s + 1.0
    for inc in incs:
        if inc.how == "killed" and inc.session in last_mono and inc.end is not None:
            tail.append(max(0.0, inc.end - last_mono[inc.session]))
            if tail[-1] > window:
                over.append(f"run {inc.n} {worst_where[inc.session]} {tail[-1]:.1f} s")
    # oximeter samples sent between a run's end and the next run's first stored oximeter sample
    down_s = 0.0
    for a, b in zip(incs, incs[1:], strict=False):
        if a.end is not None and b.session in first_ox:
            down_s += max(0.0, first_ox[b.session] - a.end)
    serial_downtime_samples = int(down_s * 60 * len(ox_devices))
    ble_storms, ble_problems = ble_storm_checks(faults, incs, ble_devices, ble_times)
    problems += ble_problems
    if ble_devices and not any(ble_times.values()):
        problems.append("no reading stored from the BLE oximeters")
    if holes:
        problems.append(f"{holes} samples missing inside streams without a gap record: "
                        + ", ".join(f"{k} {v}" for k, v in sorted(hole_where.items())))
    if alarm_lag and max(alarm_lag) > MAX_ALARM_LAG_S:
        late = sum(x > MAX_ALARM_LAG_S for x in alarm_lag)
        problems.append(f"{late} of {len(alarm_lag)} SBP/SpO2 alarms raised more than {MAX_ALARM_LAG_S:.0f} s after "
                        f"their data arrived (max {max(alarm_lag):.1f} s): the pipeline fell behind")
    if tail and max(tail) > window:
        problems.append(f"up to {max(tail):.2f} s of samples lost at a SIGKILL (window {window:.1f} s; worst "
                        f"channel; {len(over)} of {len(tail)} kills over): " + ", ".join(over[:8]))

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
    growth, growth_note = rss_growth(incs)
    # per-run peak against the time in the night it ran: does a fresh daemon need more as the store grows?
    pk = [(i.start, max(mb for _t, mb in i.rss)) for i in incs if i.rss]
    trend = None
    if len(pk) >= 3 and pk[-1][0] > pk[0][0]:
        speed = float(params.get("speed", 1.0))
        trend = statistics.linear_regression([t for t, _ in pk], [mb for _, mb in pk]).slope * 3600 / speed
    cpu = {k: 100.0 * v / wall_s for k, v in cpu_s.items()} if wall_s > 0 else {}
    return SoakReport(
        params=params, wall_s=wall_s, incarnations=len(incs), kills=sum(i.how == "killed" for i in incs),
        crashes=crashes, faults={k: sum(f.kind == k for f in faults) for k in sorted({f.kind for f in faults})},
        expectations=exp, alarms_raised=dict(sorted(counts.items())), samples_stored=stored, sample_holes=holes,
        tail_loss_s=tail, alarm_lag_s=alarm_lag, tail_window_s=window, serial_sent=serial_sent, serial_stored=serial_stored,
        serial_downtime_samples=serial_downtime_samples, outbox=ob,
        rss_max_mb=max(peaks, default=0.0),
        rss_growth_mb_per_h=growth, rss_growth_note=growth_note, rss_peak_trend_mb_per_h=trend,
        rss_peak_first_last_mb=(peaks[0], peaks[-1]) if peaks else (0.0, 0.0),
        sync_rss_mb=(sync_rss[0], sync_rss[-1]) if sync_rss else (0.0, 0.0),
        cpu_percent=cpu, problems=problems,
        runs=[{"n": i.n, "start": i.start, "s": round((i.end or i.start) - i.start, 1), "how": i.how,
               "session": i.session,
               "rss_max": max((mb for _t, mb in i.rss), default=None),
               "fds_max": max((n for _t, n in i.fds), default=None)} for i in incs],
        ble_readings=sum(len(v) for v in ble_times.values()), ble_storms=ble_storms, ble_stats=dict(ble_stats or {}))


def save_inputs(path: Path, inputs: dict[str, Any]) -> None:
    """Write what `analyse` needs besides the store (runs, faults, counts) so a night can be re-analysed."""
    d = dict(inputs)
    d["incs"] = [i.__dict__ for i in inputs["incs"]]
    d["faults"] = [f.__dict__ for f in inputs["faults"]]
    path.write_text(json.dumps(d))


def reanalyse(run_dir: Path) -> SoakReport:
    """The report of a finished night, recomputed from its run folder (inputs.json and the kept store)."""
    d = json.loads((run_dir / "inputs.json").read_text())
    d["incs"] = [Incarnation(**{**i, "rss": [tuple(x) for x in i["rss"]], "fds": [tuple(x) for x in i.get("fds", [])]})
                 for i in d["incs"]]
    d["faults"] = [FaultRun(**f) for f in d["faults"]]
    db = run_dir / "vigil.db"
    if not db.exists():
        db = run_dir / "state" / "vigil.db"
    return analyse(db=db, **d)


def format_report(r: SoakReport) -> str:
    """The human-readable report."""
    p = r.params
    ble = f", {p['ble']} with a BLE oximeter" if p.get("ble") else ""
    lines = [f"Vigil soak: {p['guests']} guests ({p['serial']} with a serial oximeter{ble}), {p['hours']:g} h simulated "
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
              + (f"   (latency from daemon start: median {statistics.median(lats):.1f} s, max {max(lats):.1f} s)"
                 if lats else ""),
              f"  technical         {len(techn):8d}  {sum(e.raised for e in techn):6d}  {sum(not e.raised for e in techn):6d}",
              "  raised by condition: " + ", ".join(f"{k} {v}" for k, v in r.alarms_raised.items())]
    lag = sorted(r.alarm_lag_s)
    if lag:
        lines.append(f"  SBP/SpO2 alarm after its data: median {statistics.median(lag):.2f} s, 99th percentile "
                     f"{lag[int(0.99 * (len(lag) - 1))]:.1f} s, max {lag[-1]:.1f} s over {len(lag)} raises "
                     f"({sum(x > MAX_ALARM_LAG_S for x in lag)} over {MAX_ALARM_LAG_S:.0f} s)")
    tail = r.tail_loss_s
    lines += ["",
              f"samples stored      {r.samples_stored:,} (holes inside streams without a gap record: {r.sample_holes})",
              f"  lost at SIGKILL   {len(tail)} kills: " + (f"median {statistics.median(tail):.2f} s, max {max(tail):.2f} s "
                                                          f"of data (window {r.tail_window_s:.1f} s)" if tail else "none"),
              f"  serial oximeters  sent {r.serial_sent:,}, stored {r.serial_stored:,}; sent between a daemon's "
              f"death and the next one's first stored sample ~{r.serial_downtime_samples:,}"]
    if p.get("ble"):
        st = r.ble_stats
        lines.append(f"  BLE oximeters     {p['ble']} over HCI: {r.ble_readings:,} SpO2 readings stored; the peripherals "
                     f"sent {st.get('notifications', 0):,} notifications over {st.get('connections', 0)} connections "
                     f"to {st.get('hosts', 0)} daemon runs")
        for b in r.ble_storms:
            back = ", ".join(f"{d} {'never' if v is None else f'{v:.1f} s'}" for d, v in b["resumed_s"].items())
            fds = "n/a" if b["fds"] is None else f"{b['fds'][0]} -> {b['fds'][1]}"
            rss = "n/a" if b["rss_mb"] is None else f"{b['rss_mb'][0]:.0f} -> {b['rss_mb'][1]:.0f} MB"
            lines.append(f"    storm at sim {b['at_sim_s']:.0f} s: back after {back}; daemon fds {fds}, RSS {rss}"
                         + (f" ({b['note']})" if b.get("note") else ""))
    ob = r.outbox
    lines += ["",
              f"outbox (booking)    drained in {p.get('drain_s', 0):.0f} s after the night" + (
                  "" if p.get("drained", True) else " -- NOT drained"),
              f"                    {ob['rows']:,} rows: {ob['delivered']:,} delivered, {ob['pending']} pending, "
              f"{ob['dead']} dead; applied {ob['applied']:,}, applied twice {ob['applied_twice']}, "
              f"delivered but not applied {ob['delivered_not_applied']}, duplicates sent and deduped {ob['duplicates_sent']}"]
    trend = ("" if r.rss_peak_trend_mb_per_h is None else
             f", trend {r.rss_peak_trend_mb_per_h:+.1f} MB per simulated hour over {r.incarnations} runs")
    lines += ["",
              f"daemon RSS          max {r.rss_max_mb:.0f} MB; growth within a run {r.rss_growth_note}",
              f"                    peak per run first/last {r.rss_peak_first_last_mb[0]:.0f}/"
              f"{r.rss_peak_first_last_mb[1]:.0f} MB{trend}",
              f"sync RSS            {r.sync_rss_mb[0]:.0f} -> {r.sync_rss_mb[1]:.0f} MB",
              "CPU (% of one core) " + ", ".join(f"{k} {v:.1f}" for k, v in r.cpu_percent.items()),
              "",
              "RESULT: " + ("PASS" if r.ok else "FAIL")]
    lines += [f"  - {p}" for p in r.problems]
    return "\n".join(lines)
