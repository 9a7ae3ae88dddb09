"""Drain the outbox backlog of a 12-hour, 20-guest night against the local servers.

Workload (defaults): the rows are written by the daemon's own producer, `vigil.sync.outbox_feed.OutboxFeed`,
driven second by second on a simulated clock with 20 guests (HR, SpO2 and ECG every second, QTc every
10 s, BP every 5 min, one ~1 min alarm per guest-hour): booking gets ``vitals.summary`` every 5 s per
guest plus session, check-in and alarm events; the EMR (sekmet-fhir behind the OAuth gateway) gets
a ``vitals_window`` per guest-minute (twelve 5-s samples -> one median Observation per metric), a
~10 s ECG strip per alarm and every 15 min, and a summary report per guest; SendGrid one summary mail
per guest; Twilio one SMS per guest (added here: the feed sends none).
`vigil sync --drain` runs as its own process; we report time, events/s, its peak RSS (psutil) and the
bytes each receiver got. Targets (issue 6): < 5 min and < 150 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

WALL0 = 1_700_000_000.0
ALARM_EVERY_S = 3600  # one alarm per guest-hour
ALARM_LASTS_S = 60


def _ecg_second(fs: int = 130) -> Any:
    """One second of a synthetic ECG in µV (a QRS-like bump on a small baseline wave)."""
    import numpy as np

    t = np.arange(fs) / fs
    x = 1000 * np.exp(-((t - 0.4) ** 2) / (2 * 0.012 ** 2)) + 150 * np.exp(-((t - 0.7) ** 2) / (2 * 0.05 ** 2))
    return (x - 60).round().astype(np.int32)


def fill_outbox(db: Path, hours: float, guests: int, fhir_window_s: int = 60) -> dict[str, int]:
    """Write the night's outbox rows through OutboxFeed; return counts per destination."""
    from vigil.clock import SimulatedClock
    from vigil.config import parse_config
    from vigil.edge.pipeline import GuestState, Vital
    from vigil.model import AlarmEvent, AlarmState, ChannelKind, Metric, Priority, SampleBlock
    from vigil.store import RecordStore
    from vigil.sync.outbox_feed import OutboxFeed
    from vigil.sync.roster import Roster, RosterGuest

    mats = [f"M{g:02d}" for g in range(guests)]
    cfg = parse_config("\n".join(
        ['[site]', 'name = "bench"', 'room = "room1"',
         '[sync.booking]', 'url = "http://127.0.0.1:1"', 'secret_file = "x"',
         '[sync.fhir]', 'base_url = "http://127.0.0.1:1/fhir"', f'vitals_window_s = {fhir_window_s}',
         '[sync.sendgrid]', 'api_key_file = "x"', 'from_email = "vigil@example.org"']
        + [line for m in mats for line in ("[[guests]]", f'mat = "{m}"', f'name = "Guest {m}"')]) + "\n")
    roster = Roster(room="room1", session_id="B-bench", guests=[
        RosterGuest(id=f"G{i:02d}", mat=m, display_name=f"Guest {i}", baseline_qtc_ms=None, thresholds=None,
                    responsible_clinician_email="doc@example.org")
        for i, m in enumerate(mats)])
    clock = SimulatedClock(start_wall=WALL0)
    store = RecordStore.open(db)

    def submit(method: str, *a: Any, **k: Any) -> bool:
        getattr(store, method)(*a, **k)
        return True

    class Pipe:
        guests = {m: GuestState(m) for m in mats}

    feed = OutboxFeed(cfg, clock, submit, "S-bench", pipeline=Pipe(), roster=lambda: roster)
    feed.start()
    ecg = _ecg_second()
    seconds = int(hours * 3600)
    seq = 0
    for t in range(seconds):
        now, wall = clock.monotonic(), clock.wall()
        for i, m in enumerate(mats):
            st = Pipe.guests[m]
            phase = (t + 97 * i) % ALARM_EVERY_S
            hr = 70 + 15 * math.sin(t / 900 + i) + (60 if phase < ALARM_LASTS_S else 0)
            st.vitals[Metric.HR] = Vital(round(hr, 1), now, "analysis")
            st.vitals[Metric.SPO2] = Vital(97.0 - (t + i) % 3, now, "ox")
            if t % 10 == 0:
                st.vitals[Metric.QTC] = Vital(430.0 + (t // 10 + i) % 20, now, "analysis")
            if t % 300 == 0:
                st.vitals[Metric.SBP] = Vital(120.0 + i % 7, now, "cuff")
                st.vitals[Metric.DBP] = Vital(78.0 + i % 5, now, "cuff")
                st.vitals[Metric.SDNN] = Vital(42.0 + i % 9, now, "analysis")
            feed.block(m, SampleBlock(f"ecg-{m}", "ecg", ChannelKind.ECG, 130.0, "uV", 1.0, seq, ecg, now, wall))
            if phase in (0, 10, ALARM_LASTS_S):
                event, state = {0: ("raised", AlarmState.ACTIVE), 10: ("acknowledged", AlarmState.ACKNOWLEDGED),
                                ALARM_LASTS_S: ("cleared", AlarmState.INACTIVE)}[phase]
                feed.alarm(AlarmEvent(m, "hr_high_critical", Priority.HIGH, event, state, now, wall,
                                      operator="ana" if event == "acknowledged" else None))
        seq += 130
        clock.advance(1.0)
        feed.tick()
        if t % 60 == 0:
            store.flush()
    feed.close()
    counts = dict(feed.rows)
    for m in mats:
        store.enqueue("sms", "session.summary", {"to": "+15551234567", "body": f"Session S-bench ended for {m}"},
                      f"sms_{m}", wall=clock.wall())
    counts["sms"] = len(mats)
    store.flush()
    store.close()
    return counts


def _write_config(folder: Path, booking: str, fhir: str, sendgrid: str, tw: Any) -> Path:
    for name, value in (("booking.secret", "bench-secret"), ("fhir.secret", "s3cret"), ("sg.key", "SG.bench"),
                        ("twilio.token", tw.auth_token)):
        p = folder / name
        p.write_text(value)
        p.chmod(0o600)
    cfg = folder / "config.toml"
    cfg.write_text(f"""
[site]
name = "bench"
room = "room1"
[store]
path = "vigil.db"
[mqtt]
port = 1
[escalation.twilio]
base_url = "{tw.base_url}"
account_sid = "{tw.account_sid}"
from_number = "+15550000000"
auth_token_file = "twilio.token"
[sync.booking]
url = "{booking}/v1/events"
secret_file = "booking.secret"
batch_size = 200
[sync.fhir]
base_url = "{fhir}/fhir"
token_url = "{fhir}/oauth/token"
client_id = "vigil"
client_secret_file = "fhir.secret"
[sync.sendgrid]
base_url = "{sendgrid}"
api_key_file = "sg.key"
from_email = "vigil@example.org"
""")
    return cfg


def run(hours: float, guests: int, fhir_window_s: int = 60) -> dict[str, Any]:
    """Fill, drain with `vigil sync --drain`, verify the receivers; return the measurements."""
    import psutil

    from vigil.testing.booking_server import BookingApp, booking_server
    from vigil.testing.fhir_server import GatewayApp, SekmetProcess, fhir_gateway
    from vigil.testing.sendgrid_server import SendgridApp, sendgrid_server
    from vigil.testing.twilio_server import TwilioServer

    with tempfile.TemporaryDirectory(prefix="vigil-bench-sync-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        counts = fill_outbox(folder / "vigil.db", hours, guests, fhir_window_s)
        fill_s = time.perf_counter() - t0
        with SekmetProcess() as sek, booking_server(b"bench-secret") as bk, \
                fhir_gateway(sek.base_url) as gw, sendgrid_server("SG.bench") as sg, TwilioServer() as tw:
            cfg = _write_config(folder, bk.base_url, gw.base_url, sg.base_url, tw)
            t0 = time.perf_counter()
            recv0 = time.process_time()  # this process serves booking, SendGrid, Twilio and the FHIR gateway
            proc = subprocess.Popen([sys.executable, "-m", "vigil", "sync", "--drain", "--config", str(cfg)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            ps = psutil.Process(proc.pid)
            peak = 0
            cpu = 0.0
            load0 = os.getloadavg()[0]
            while proc.poll() is None:
                try:
                    peak = max(peak, ps.memory_info().rss)
                    t = ps.cpu_times()
                    cpu = t.user + t.system
                except psutil.Error:
                    break
                time.sleep(0.1)
            load1 = os.getloadavg()[0]
            recv_cpu = time.process_time() - recv0
            sek_cpu = 0.0
            if sek.proc is not None:
                with contextlib.suppress(psutil.Error):
                    st = psutil.Process(sek.proc.pid).cpu_times()
                    sek_cpu = st.user + st.system
            elapsed = time.perf_counter() - t0
            wall_end = time.time()
            err = proc.stderr.read() if proc.stderr else ""
            if proc.returncode != 0:
                raise RuntimeError(f"vigil sync --drain failed ({proc.returncode}): {err[-2000:]}")
            bka = cast(BookingApp, bk.app)
            gwa = cast(GatewayApp, gw.app)
            sga = cast(SendgridApp, sg.app)
            return {"counts": counts, "total": sum(counts.values()), "fill_s": fill_s, "elapsed_s": elapsed,
                    "peak_rss_mb": peak / 2**20, "booking_applied": len(bka.applied),
                    "booking_received": bka.received, "booking_posts": bka.posts, "booking_bytes": bka.bytes_in,
                    "fhir_transactions": gwa.transactions, "fhir_bytes": gwa.bytes_in, "fhir_entries": gwa.entries,
                    "emails": len(sga.applied), "sms": len(tw.twilio.messages),
                    "sync_cpu_s": cpu, "sekmet_cpu_s": sek_cpu, "receivers_cpu_s": recv_cpu, "load": (load0, load1),
                    "done_after_s": _done_after(folder / "sync-status.json", wall_end - elapsed)}


def _done_after(status_file: Path, wall_start: float) -> dict[str, float]:
    """Seconds from the start of the drain to each destination's last success (from sync-status.json)."""
    import json

    try:
        dests = json.loads(status_file.read_text())["destinations"]
    except (OSError, ValueError, KeyError):
        return {}
    return {n: d["last_success"] - wall_start for n, d in dests.items() if d.get("last_success")}


def main(argv: list[str]) -> int:
    """Print the drain benchmark."""
    ap = argparse.ArgumentParser(prog="bench_sync")
    ap.add_argument("--hours", type=float, default=12.0)
    ap.add_argument("--guests", type=int, default=20)
    ap.add_argument("--fhir-window", type=int, default=60, help="sync.fhir.vitals_window_s of the producer")
    args = ap.parse_args(argv)
    r = run(args.hours, args.guests, args.fhir_window)
    c = r["counts"]
    print(f"Backlog of a {args.hours:g} h night, {args.guests} guests, FHIR vitals window {args.fhir_window} s: "
          f"{r['total']} outbox events "
          f"(booking {c.get('booking', 0)}, fhir {c.get('fhir', 0)}, email {c.get('email', 0)}, "
          f"sms {c.get('sms', 0)}); filled in {r['fill_s']:.1f} s")
    print(f"{'drain time s':>12} {'events/s':>9} {'peak RSS MB':>12} {'target':>22}")
    ok = r["elapsed_s"] < 300 and r["peak_rss_mb"] < 150
    print(f"{r['elapsed_s']:>12.1f} {r['total'] / r['elapsed_s']:>9.0f} {r['peak_rss_mb']:>12.1f} "
          f"{'< 300 s, < 150 MB: ' + ('met' if ok else 'MISSED'):>22}")
    print(f"receivers: booking applied {r['booking_applied']} (received {r['booking_received']}), "
          f"FHIR transactions {r['fhir_transactions']}, emails {r['emails']}, SMS {r['sms']}")
    print(f"on the wire: booking {r['booking_posts']} POSTs, {r['booking_bytes'] / 1e6:.1f} MB; "
          f"FHIR {r['fhir_transactions']} transactions, {r['fhir_entries']} entries, {r['fhir_bytes'] / 1e6:.1f} MB")
    print(f"CPU: vigil sync {r['sync_cpu_s']:.0f} s, sekmet {r['sekmet_cpu_s']:.0f} s, "
          f"other receivers + FHIR gateway {r['receivers_cpu_s']:.0f} s; "
          f"1-min load average {r['load'][0]:.1f} at start, {r['load'][1]:.1f} at end ({os.cpu_count()} CPUs)")
    print("per destination, drained after: " + ", ".join(f"{n} {t:.0f} s" for n, t in sorted(r["done_after_s"].items())))
    complete = (r["booking_applied"] == c.get("booking", 0) and r["emails"] == c.get("email", 0)
                and r["sms"] == c.get("sms", 0))
    if not complete:
        print("ERROR: not every event reached its receiver")
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
