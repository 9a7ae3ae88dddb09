"""`vigil sync` killed with SIGKILL 20 times while draining to all four receivers at once (booking, FHIR via the
OAuth gateway, SendGrid, Twilio): nothing is lost, nothing is applied twice."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from vigil.store import RecordStore
from vigil.sync import fhir_mapping as fm
from vigil.sync.booking import make_event
from vigil.testing.booking_server import BookingApp, booking_server
from vigil.testing.fhir_server import GatewayApp, SekmetProcess, fhir_gateway
from vigil.testing.loopback import Fault
from vigil.testing.sendgrid_server import SendgridApp, sendgrid_server
from vigil.testing.twilio_server import TwilioServer

pytestmark = pytest.mark.timeout(240)
SECRET = b"kill-secret"
WALL = 1_700_000_000.0


def _config(folder: Path, bk: str, gw: str, sg: str, tw: TwilioServer) -> Path:
    for name, value in (("b.secret", SECRET.decode()), ("f.secret", "s3cret"), ("sg.key", "SG.kill"),
                        ("tw.token", tw.auth_token)):
        (folder / name).write_text(value)
        (folder / name).chmod(0o600)
    cfg = folder / "config.toml"
    cfg.write_text(f"""
[site]
name = "t"
room = "room1"
[store]
path = "vigil.db"
[mqtt]
port = 1
[escalation.twilio]
base_url = "{tw.base_url}"
account_sid = "{tw.account_sid}"
from_number = "+15550000000"
auth_token_file = "tw.token"
timeout_s = 5.0
[sync.booking]
url = "{bk}/v1/events"
secret_file = "b.secret"
batch_size = 20
[sync.fhir]
base_url = "{gw}/fhir"
token_url = "{gw}/oauth/token"
client_id = "vigil"
client_secret_file = "f.secret"
[sync.sendgrid]
base_url = "{sg}"
api_key_file = "sg.key"
from_email = "vigil@example.org"
""")
    return cfg


def _fill(folder: Path, session: str) -> tuple[list[str], int, list[str], list[str]]:
    store = RecordStore.open(folder / "vigil.db")
    booking, mails, sms = [], [], []
    windows = 0
    for k in range(1200):
        ev = make_event("vitals.summary", {"k": k}, source="vigil/room1", wall=WALL + k, event_id=f"evt_{k:05d}")
        store.enqueue("booking", ev["type"], ev, ev["id"])
        booking.append(ev["id"])
        if k % 4 == 0:
            store.enqueue("fhir", "vitals_window", {
                "kind": "vitals_window", "session_id": session, "guest": {"id": f"G{k % 3}"}, "session_start": WALL,
                "start_wall": WALL + 60 * k, "period_s": 5.0, "series": {"hr": [70] * 12, "spo2": [97] * 12}},
                f"fhir_{k}")
            windows += 1
        if k % 30 == 0:
            store.enqueue("email", "session.summary", {"to": ["doc@example.org"], "subject": f"s{k}", "text": "."},
                          f"mail_{k}")
            mails.append(f"s{k}")
            store.enqueue("sms", "session.summary", {"to": "+15551234567", "body": f"n{k}"}, f"sms_{k}")
            sms.append(f"n{k}")
    store.close()
    return booking, windows, mails, sms


def test_sigkill_twenty_times_across_all_receivers(tmp_path: Path) -> None:
    rng = random.Random(5)
    session = f"K{int(time.time())}"
    with SekmetProcess() as sek, booking_server(SECRET) as bk, fhir_gateway(sek.base_url) as gw, \
            sendgrid_server("SG.kill") as sg, TwilioServer() as tw:
        for srv in (bk, gw, sg, tw.server):
            srv.faults.always(Fault("slow", delay_s=0.03))  # every request is in flight for a while
        cfg = _config(tmp_path, bk.base_url, gw.base_url, sg.base_url, tw)
        booking, windows, mails, sms = _fill(tmp_path, session)

        def seen() -> int:
            return bk.requests_seen + gw.requests_seen + sg.requests_seen + tw.server.requests_seen

        for _ in range(20):
            p = subprocess.Popen([sys.executable, "-m", "vigil", "sync", "--config", str(cfg)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            start = seen()
            deadline = time.monotonic() + 30
            while seen() == start and time.monotonic() < deadline:  # wait until it is delivering
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.2))
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        bka, sga, gwa = bk.app, sg.app, gw.app
        assert isinstance(bka, BookingApp) and isinstance(sga, SendgridApp) and isinstance(gwa, GatewayApp)
        assert len(bka.applied) < len(booking)  # the kills really interrupted the drain
        for srv in (bk, gw, sg, tw.server):
            srv.faults.clear()
        done = subprocess.run([sys.executable, "-m", "vigil", "sync", "--drain", "--config", str(cfg)],
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        assert [e["id"] for e in bka.applied] == booking and bka.received > len(booking)
        assert [m["subject"] for m in sga.applied] == mails
        assert [m["body"].split(" [ref ")[0] for m in tw.twilio.messages] == sms and tw.twilio.duplicates() == []
        counted = sum(int(requests.get(f"{sek.base_url}/Observation?_count=1&encounter.identifier="
                                       f"{fm.ENCOUNTER_SYSTEM}|{session}.G{g}", timeout=10).json()["total"])
                      for g in range(3))
        assert counted == 2 * windows  # HR + SpO2 per window, none twice
