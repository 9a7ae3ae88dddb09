"""PHI never appears in logs: the daemon and `vigil sync` run at DEBUG on a config and a booking roster
full of guest names (alarms raised, roster changed, a malformed roster), and every log line is scanned."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from vigil.datasets import VENDORED_RECORDS
from vigil.store import RecordStore
from vigil.testing.booking_server import booking_server

# unusual tokens so that a hit can only come from the config/roster
CONFIG_NAMES = ["Zephyrine Quaxley", "Barnaby Oxtoby-Lune", "Ottilie Fenwright", "Casimir Drabblewick"]
ROSTER_NAMES = ["Ignatius Pemberwick", "Hortensia Glimmerbay"]
BAD_ROSTER_NAME = "Thaddeus Vornholt"
KEY_HEX = "5a" * 32
SECRET = b"booking-secret-for-phi-test"


def _tokens(names: list[str]) -> list[str]:
    return sorted({t for n in names for t in re.split(r"[ -]", n) if len(t) > 3})


def _config(tmp: Path, port: int, base_url: str) -> Path:
    devices = [("A1", "119", "replay-wfdb", ""), ("A2", "203", "replay-wfdb", ""),
               ("A3", "v221l", "replay-wfdb", "start_s = 280\n"), ("A4", "bidmc_04", "replay-bidmc", "")]
    text = (f'[site]\nname = "t"\nroom = "r"\n[store]\npath = "{tmp / "vigil.db"}"\nkey_file = "store.key"\n'
            f'min_free_mb = 1\n[mqtt]\nport = {port}\n[alarms]\nsound_enabled = false\n'
            f'[sync.booking]\nurl = "{base_url}/v1/events"\nroster_url = "{base_url}/v1/rooms/r/roster"\n'
            'secret_file = "booking.secret"\n')
    for mat, rec, profile, extra in devices:
        text += (f'[[devices]]\nid = "dev-{mat}"\nprofile = "{profile}"\nrecord = "{VENDORED_RECORDS / rec}"\n'
                 f"{extra}")
    for (mat, *_), name in zip(devices, CONFIG_NAMES, strict=True):
        text += f'[[guests]]\nmat = "{mat}"\nname = "{name}"\ndevices = ["dev-{mat}"]\n'
    for fname, data in (("store.key", KEY_HEX.encode()), ("booking.secret", SECRET)):
        (tmp / fname).write_bytes(data)
        (tmp / fname).chmod(0o600)
    path = tmp / "config.toml"
    path.write_text(text)
    return path


def _roster(names: list[str], mats: list[str]) -> dict:
    return {"v": 1, "room": "r", "session_id": None,
            "guests": [{"id": f"g{i}", "mat": m, "display_name": n}
                       for i, (n, m) in enumerate(zip(names, mats, strict=True))]}


def test_no_guest_name_in_daemon_or_sync_logs_at_debug(tmp_path: Path, mosquitto) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CREDENTIALS_DIRECTORY", "VIGIL_LOG_LEVEL")}
    with booking_server(SECRET) as srv:
        srv.app.set_roster(_roster(ROSTER_NAMES, ["A1", "A2"]))
        cfg = _config(tmp_path, mosquitto.port, srv.base_url)
        daemon = subprocess.Popen([sys.executable, "-m", "vigil", "-vv", "run", "--config", str(cfg),
                                   "--duration", "10", "--speed", "4"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(2.0)
        sync = subprocess.Popen([sys.executable, "-m", "vigil", "-vv", "sync", "--config", str(cfg),
                                 "--roster-interval", "0.5"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            time.sleep(3.0)
            srv.app.set_roster(_roster(list(reversed(ROSTER_NAMES)), ["A1", "A3"]))  # changed roster
            time.sleep(2.0)
            srv.app.set_roster(_roster([BAD_ROSTER_NAME], ["bad mat!"]))  # malformed: logged as an error
            d_out, d_err = daemon.communicate(timeout=60)
            time.sleep(1.0)
            sync.send_signal(signal.SIGTERM)
            s_out, s_err = sync.communicate(timeout=30)
        finally:
            for p in (daemon, sync):
                if p.poll() is None:
                    p.kill()
                    p.communicate()
    assert daemon.returncode == 0, d_err[-2000:]
    assert sync.returncode == 0, s_err[-2000:]
    logs = {"daemon": d_out + d_err, "sync": s_out + s_err}
    # the run really exercised the paths: DEBUG output, an alarm, roster pulls, changes and errors
    assert " DEBUG " in logs["daemon"] and " DEBUG " in logs["sync"]
    assert "roster applied from bus" in logs["daemon"]  # the roster's names went through the daemon
    assert "roster" in logs["sync"].lower() and re.search(r"ERROR .*roster", logs["sync"])
    tokens = _tokens(CONFIG_NAMES + ROSTER_NAMES + [BAD_ROSTER_NAME])
    (tmp_path / "daemon.log").write_text(logs["daemon"])
    (tmp_path / "sync.log").write_text(logs["sync"])
    for who, text in logs.items():
        hits = [t for t in tokens if t.lower() in text.lower()]
        assert hits == [], f"PHI in {who} logs: {hits}"
    # waveforms and PHI are encrypted at rest (store.key_file set): no name in the SQLite files either
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("vigil.db*"))
    assert raw and not [t for t in _tokens(CONFIG_NAMES) if t.encode() in raw]
    store = RecordStore.open(tmp_path / "vigil.db", key=bytes.fromhex(KEY_HEX))
    try:
        (session,) = store.sessions()
        names = {g.display_name for g in store.guests(session.id)}
        alarms = list(store.alarm_events(session.id))
    finally:
        store.close()
    assert alarms, "no alarm was raised: the alarm path was not exercised"
    assert names & set(CONFIG_NAMES + ROSTER_NAMES)  # the names were there to leak, sealed in the store
