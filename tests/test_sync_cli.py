"""`vigil sync` as a separate process: SIGKILL mid-batch, roster over MQTT, status, missing secrets."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from vigil.store import RecordStore
from vigil.sync.booking import make_event
from vigil.testing.booking_server import booking_server
from vigil.testing.loopback import Fault
from vigil.testing.sendgrid_server import sendgrid_server

pytestmark = pytest.mark.timeout(150)
SECRET = b"whsec_cli_secret"


def _config(folder: Path, booking_url: str, *, mqtt_port: int = 1, sendgrid_url: str | None = None,
            write_secrets: bool = True, batch: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if write_secrets:
        for name, value in (("booking.secret", SECRET), ("sendgrid.key", b"SG.test")):
            p = folder / name
            p.write_bytes(value)
            p.chmod(0o600)
    text = f"""
[site]
name = "Test site"
room = "room1"

[store]
path = "vigil.db"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[sync.booking]
url = "{booking_url}/v1/events"
roster_url = "{booking_url}/v1/rooms/room1/roster"
secret_file = "booking.secret"
batch_size = {batch}
"""
    if sendgrid_url:
        text += f"""
[sync.sendgrid]
base_url = "{sendgrid_url}"
api_key_file = "sendgrid.key"
from_email = "vigil@example.org"
"""
    cfg = folder / "config.toml"
    cfg.write_text(text)
    return cfg


def _sync(cfg: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vigil", "sync", "--config", str(cfg), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "VIGIL_LOG_LEVEL": "INFO"})


def _fill(folder: Path, n: int) -> list[str]:
    store = RecordStore.open(folder / "vigil.db")
    ids = []
    for i in range(n):
        ev = make_event("vitals.summary", {"mat": f"m{i % 20}", "hr": 70}, source="vigil/room1",
                        wall=time.time(), event_id=f"evt_{i:06d}")
        store.enqueue("booking", ev["type"], ev, ev["id"])
        ids.append(ev["id"])
    store.close()
    return ids


def test_missing_secret_stops_sync_with_a_clear_message(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "http://127.0.0.1:9", write_secrets=False)
    p = _sync(cfg)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 78
    assert "sync.booking.secret_file" in err and "booking.secret" in err and "not found" in err
    assert "monitoring daemon is not affected" in err


def test_sigkill_mid_batch_twenty_times_nothing_lost_nothing_twice(tmp_path: Path) -> None:
    rng = random.Random(3)
    with booking_server(SECRET) as srv:
        srv.faults.always(Fault("slow", delay_s=0.03))  # every batch is in flight for a while
        cfg = _config(tmp_path, srv.base_url)
        expected = _fill(tmp_path, 3000)
        kills = 0
        for _ in range(20):
            p = _sync(cfg)
            start = srv.app.received
            deadline = time.monotonic() + 20
            while srv.app.received == start and time.monotonic() < deadline:  # wait until it is delivering
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.15))
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            p.stdout.close()  # type: ignore[union-attr]
            p.stderr.close()  # type: ignore[union-attr]
            kills += 1
        assert kills == 20
        assert 0 < len(srv.app.applied) < len(expected)  # the kills really interrupted the drain
        srv.faults.clear()
        p = _sync(cfg, "--drain")
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
        applied = [e["id"] for e in srv.app.applied]
        assert applied == expected  # nothing lost, nothing applied twice, in order
        assert srv.app.received > len(expected)  # kills after sending caused real re-deliveries
        st = subprocess.run([sys.executable, "-m", "vigil", "sync", "status", "--json", "--config", str(cfg)],
                            capture_output=True, text=True, timeout=60)
        status = json.loads(st.stdout)["destinations"]["booking"]
        assert status["queue_depth"] == 0 and status["dead_letters"] == 0 and status["delivered"] == 3000


def _subscribe(port: int, topic: str) -> tuple[paho.Client, list[dict]]:
    got: list[dict] = []
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"t-{random.random()}")
    c.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    c.connect("127.0.0.1", port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    return c, got


def _wait(pred, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


ROSTER = {"v": 1, "room": "room1", "session_id": "S1",
          "guests": [{"id": "G1", "mat": "m1", "display_name": "Ann", "devices": ["h10-1"], "baseline_qtc_ms": 420}],
          "on_call": [{"name": "Dr On Call", "role": "on_call", "phone": "+15551234567"}]}


def test_roster_change_reaches_subscriber_and_status_shows_dead_letters(tmp_path: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    with booking_server(SECRET, reject_types=("device.lost",)) as srv, sendgrid_server("SG.test") as sg:
        srv.app.set_roster(ROSTER)
        cfg = _config(tmp_path, srv.base_url, mqtt_port=mosquitto.port, sendgrid_url=sg.base_url)
        store = RecordStore.open(tmp_path / "vigil.db")
        ev = make_event("device.lost", {"device": "h10-1"}, source="vigil/room1", wall=time.time(), event_id="evt_l")
        store.enqueue("booking", ev["type"], ev, ev["id"])
        store.enqueue("email", "session.summary", {"to": ["doc@example.org"], "subject": "Session S1",
                                                   "text": "No alarms."}, "mail-S1")
        store.enqueue("email", "session.summary", {"to": ["not-an-address"], "subject": "x", "text": "y"}, "mail-bad")
        store.close()
        roster_client, rosters = _subscribe(mosquitto.port, "vigil/room1/roster")
        status_client, statuses = _subscribe(mosquitto.port, "vigil/room1/sync/status")
        p = _sync(cfg, "--roster-interval", "0.2")
        try:
            assert _wait(lambda: any(r.get("guests") and r["guests"][0]["id"] == "G1" for r in rosters))
            # a new guest and a new threshold override, while sync keeps running
            changed = json.loads(json.dumps(ROSTER))
            changed["guests"].append({"id": "G2", "mat": "m2", "display_name": "Bo",
                                      "thresholds": {"hr": {"warning_high": 110, "critical_high": 130}}})
            srv.app.set_roster(changed)
            assert _wait(lambda: any(len(r.get("guests", [])) == 2 for r in rosters))
            last = rosters[-1]
            assert last["guests"][1]["thresholds"]["hr"]["critical_high"] == 130
            cache = json.loads((tmp_path / "roster.json").read_text())
            assert [g["id"] for g in cache["guests"]] == ["G1", "G2"]
            assert (tmp_path / "roster.json").stat().st_mode & 0o077 == 0
            # a malformed roster is rejected; the last good one stays in force
            srv.app.set_roster_raw(b'{"v": 1, "room": "room1", "guests": [{"id": "G3"}]}')
            n = len(rosters)
            time.sleep(1.0)
            assert len(rosters) == n
            assert json.loads((tmp_path / "roster.json").read_text())["guests"][1]["id"] == "G2"
            # status on MQTT and on the command line shows the dead letters
            assert _wait(lambda: bool(statuses) and statuses[-1]["destinations"].get("email", {}).get("dead_letters") == 1
                         and statuses[-1]["destinations"]["booking"]["dead_letters"] == 1)
            st = subprocess.run([sys.executable, "-m", "vigil", "sync", "status", "--config", str(cfg)],
                                capture_output=True, text=True, timeout=60)
            assert st.returncode == 0
            lines = {ln.split()[0]: ln.split() for ln in st.stdout.splitlines()[1:] if ln.strip()}
            assert lines["email"][1:5] == ["0", "-", "1", "closed"]
            assert len(sg.app.applied) == 1 and sg.app.applied[0]["subject"] == "Session S1"
        finally:
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=30)
            roster_client.loop_stop()
            status_client.loop_stop()
        assert p.returncode == 0
        assert "malformed roster" in err and "guests.0.mat" in err
        assert "Ann" not in err and "Bo" not in err  # no PHI in logs
