"""Drain the outbox backlog of a 12-hour, 20-guest night against the local servers.

Workload (defaults): booking gets ``vitals.summary`` every 5 s per guest plus session, check-in,
alarm (raised/acknowledged/resolved, ~1 alarm per guest-hour) and device events; the EMR (sekmet-fhir
behind the OAuth gateway) gets a vitals sample every 5 min per guest, one ~10 s ECG strip per alarm
and a summary report per guest; SendGrid one summary mail per guest; Twilio one SMS per guest.
`vigil sync --drain` runs as its own process; we report time, events/s and its peak RSS (psutil).
Targets (issue 6): < 5 min and < 150 MB.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

WALL0 = 1_700_000_000.0


def fill_outbox(db: Path, hours: float, guests: int) -> dict[str, int]:
    """Write the night's outbox rows; return counts per destination."""
    from vigil.store import RecordStore
    from vigil.sync.booking import make_event

    store = RecordStore.open(db)
    counts: dict[str, int] = {}
    n = 0

    def put(dest: str, etype: str, payload: dict[str, Any], key: str) -> None:
        nonlocal n
        store.enqueue(dest, etype, payload, key, wall=WALL0)
        counts[dest] = counts.get(dest, 0) + 1
        n += 1
        if n % 5000 == 0:
            store.flush()

    def ev(etype: str, data: dict[str, Any], wall: float, eid: str) -> None:
        put("booking", etype, make_event(etype, data, source="vigil/room1", wall=wall, event_id=eid), eid)

    sid = "S-bench"
    seconds = int(hours * 3600)
    end = WALL0 + seconds
    ev("session.started", {"session": sid}, WALL0, "evt_session_start")
    gl = [{"id": f"G{g:02d}", "display_name": f"Guest {g}"} for g in range(guests)]
    for g in gl:
        ev("guest.checked_in", {"session": sid, "guest": g["id"]}, WALL0, f"evt_checkin_{g['id']}")
    alarm_every = 3600  # one alarm per guest-hour
    for t in range(0, seconds, 5):
        wall = WALL0 + t
        for i, g in enumerate(gl):
            hr = 70 + 15 * math.sin(t / 900 + i)
            ev("vitals.summary", {"session": sid, "guest": g["id"], "hr": round(hr, 1), "spo2": 97, "sbp": 122,
                                  "dbp": 78, "qtc": 440}, wall, f"evt_v_{g['id']}_{t}")
            base = {"session_id": sid, "guest": g, "session_start": WALL0}
            if t % 300 == 0:
                put("fhir", "vitals", {**base, "kind": "vitals", "wall": wall,
                                       "metrics": {"hr": round(hr, 1), "spo2": 97, "sbp": 122, "dbp": 78,
                                                   "qtc": 440, "sdnn": 42}}, f"fhir_v_{g['id']}_{t}")
            if (t + 97 * i) % alarm_every == 0:
                aid = f"A_{g['id']}_{t}"
                for k, kind in enumerate(("raised", "acknowledged", "resolved")):
                    ev(f"alarm.{kind}", {"alarm": aid, "guest": g["id"], "condition": "hr_high"}, wall + 10 * k,
                       f"evt_{aid}_{kind}")
                put("fhir", "ecg_strip", {**base, "kind": "ecg_strip", "start_wall": wall - 5, "fs": 130.0,
                                          "lead": "II", "reason": f"alarm {aid}",
                                          "samples_uV": [int(800 * math.exp(-((j % 100) - 50) ** 2 / 8)) for j in range(1300)]},
                    f"fhir_ecg_{aid}")
    for g in gl:
        put("fhir", "summary", {"session_id": sid, "guest": g, "session_start": WALL0, "session_end": end,
                                "kind": "summary", "conclusion": "Bench session."}, f"fhir_sum_{g['id']}")
        put("email", "session.summary", {"to": ["doc@example.org"], "subject": f"Session {sid} {g['id']}",
                                         "text": "Summary."}, f"mail_{g['id']}")
        put("sms", "session.summary", {"to": "+15551234567", "body": f"Session {sid} ended for {g['id']}"},
            f"sms_{g['id']}")
    ev("session.ended", {"session": sid}, end, "evt_session_end")
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


def run(hours: float, guests: int) -> dict[str, Any]:
    """Fill, drain with `vigil sync --drain`, verify the receivers; return the measurements."""
    import psutil

    from vigil.testing.booking_server import BookingApp, booking_server
    from vigil.testing.fhir_server import GatewayApp, SekmetProcess, fhir_gateway
    from vigil.testing.sendgrid_server import SendgridApp, sendgrid_server
    from vigil.testing.twilio_server import TwilioServer

    with tempfile.TemporaryDirectory(prefix="vigil-bench-sync-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        counts = fill_outbox(folder / "vigil.db", hours, guests)
        fill_s = time.perf_counter() - t0
        with SekmetProcess() as sek, booking_server(b"bench-secret") as bk, \
                fhir_gateway(sek.base_url) as gw, sendgrid_server("SG.bench") as sg, TwilioServer() as tw:
            cfg = _write_config(folder, bk.base_url, gw.base_url, sg.base_url, tw)
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "vigil", "sync", "--drain", "--config", str(cfg)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            ps = psutil.Process(proc.pid)
            peak = 0
            while proc.poll() is None:
                try:
                    peak = max(peak, ps.memory_info().rss)
                except psutil.Error:
                    break
                time.sleep(0.1)
            elapsed = time.perf_counter() - t0
            err = proc.stderr.read() if proc.stderr else ""
            if proc.returncode != 0:
                raise RuntimeError(f"vigil sync --drain failed ({proc.returncode}): {err[-2000:]}")
            bka = cast(BookingApp, bk.app)
            gwa = cast(GatewayApp, gw.app)
            sga = cast(SendgridApp, sg.app)
            return {"counts": counts, "total": sum(counts.values()), "fill_s": fill_s, "elapsed_s": elapsed,
                    "peak_rss_mb": peak / 2**20, "booking_applied": len(bka.applied),
                    "booking_received": bka.received, "fhir_transactions": gwa.transactions,
                    "emails": len(sga.applied), "sms": len(tw.twilio.messages)}


def main(argv: list[str]) -> int:
    """Print the drain benchmark."""
    ap = argparse.ArgumentParser(prog="bench_sync")
    ap.add_argument("--hours", type=float, default=12.0)
    ap.add_argument("--guests", type=int, default=20)
    args = ap.parse_args(argv)
    r = run(args.hours, args.guests)
    c = r["counts"]
    print(f"Backlog of a {args.hours:g} h night, {args.guests} guests: {r['total']} outbox events "
          f"(booking {c.get('booking', 0)}, fhir {c.get('fhir', 0)}, email {c.get('email', 0)}, "
          f"sms {c.get('sms', 0)}); filled in {r['fill_s']:.1f} s")
    print(f"{'drain time s':>12} {'events/s':>9} {'peak RSS MB':>12} {'target':>22}")
    ok = r["elapsed_s"] < 300 and r["peak_rss_mb"] < 150
    print(f"{r['elapsed_s']:>12.1f} {r['total'] / r['elapsed_s']:>9.0f} {r['peak_rss_mb']:>12.1f} "
          f"{'< 300 s, < 150 MB: ' + ('met' if ok else 'MISSED'):>22}")
    print(f"receivers: booking applied {r['booking_applied']} (received {r['booking_received']}), "
          f"FHIR transactions {r['fhir_transactions']}, emails {r['emails']}, SMS {r['sms']}")
    complete = (r["booking_applied"] == c.get("booking", 0) and r["emails"] == c.get("email", 0)
                and r["sms"] == c.get("sms", 0))
    if not complete:
        print("ERROR: not every event reached its receiver")
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
