"""Operators with their own broker login: a mosquitto with a password file and ACLs, the dashboard logging in as
the operator (`--username/--password-file`), its signed command reaching the daemon's side, and a wrong password
shown as a broker outage (numbers hidden)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from vigil.alarms.commands import CommandAuthenticator
from vigil.bus import Bus
from vigil.config import parse_config
from vigil.edge.broker import find_mosquitto, free_port, port_open
from vigil.tui.app import DashboardApp
from vigil.tui.model import RoomView

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd missing")]
ROOM = "r1"


def _secret(path: Path, data: str) -> None:
    path.write_text(data)
    path.chmod(0o600)


def _screen(app: DashboardApp) -> str:
    return "\n".join(s.text for s in app.screen._compositor.render_strips())  # noqa: SLF001


async def _until(pilot: object, cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await pilot.pause(0.2)  # type: ignore[attr-defined]
    raise AssertionError(f"timed out waiting for {what}:\n{_screen(pilot.app)}")  # type: ignore[attr-defined]


@pytest.fixture
def auth_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    """mosquitto with users daemon (everything) and ana (read the room, write only cmd/ana)."""
    d = tmp_path / "broker"
    d.mkdir()
    pw = d / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "daemon", "dpass"], check=True, capture_output=True)
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "ana", "apass"], check=True, capture_output=True)
    acl = d / "acl"
    acl.write_text(f"user daemon\ntopic readwrite vigil/#\nuser ana\ntopic read vigil/{ROOM}/#\n"
                   f"topic write vigil/{ROOM}/cmd/ana\n")
    port = free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\nacl_file {acl}\n"
                    "persistence false\nlog_dest stderr\n" + ("user root\n" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen([find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def _stand_in(port: int, got: list[dict]) -> None:
    """The daemon's side: heartbeat, vitals, one alarm; collects commands."""
    def on_message(topic: str, payload: bytes) -> None:
        got.append(json.loads(payload))

    async with Bus(ROOM, "127.0.0.1", port, username="daemon", password="dpass", subscriptions=[f"vigil/{ROOM}/cmd/+"],
                   on_message=on_message) as bus:
        while True:
            bus.publish_status({"state": "running", "room": ROOM, "uptime_s": 1.0, "t": time.time(), "guests": ["G1"]})
            bus.publish_vitals("G1", {"mat": "G1", "t": time.time(), "rhythm": "SINUS", "quality": 1.0,
                                      "quality_flags": [], "beats": 1, "devices": {},
                                      "vitals": {"hr": {"value": 88, "age_s": 0.1, "unit": "/min"}}})
            bus.publish_guest_alarms("G1", {"mat": "G1", "t": time.time(), "alarms": [
                {"condition": "hr_high", "priority": "medium", "state": "active", "since_s": 2.0, "latching": False,
                 "value": 118, "reason": "", "pause_left_s": None}]})
            await asyncio.sleep(0.5)


def _cfg(tmp: Path, port: int) -> object:
    _secret(tmp / "ana.secret", secrets.token_hex(16))
    _secret(tmp / "ana.mqtt", "apass\n")
    _secret(tmp / "bad.mqtt", "wrong\n")
    text = (f'[site]\nname = "t"\nroom = "{ROOM}"\n[mqtt]\nport = {port}\n'
            '[[operators]]\nname = "ana"\nsecret_file = "ana.secret"\n[[guests]]\nmat = "G1"\nname = "Gee One"\n')
    (tmp / "config.toml").write_text(text)
    return parse_config(text, tmp / "config.toml")


async def test_operator_login_signed_command_and_wrong_password(tmp_path: Path, auth_broker: int) -> None:
    from vigil.commands.tui import connection

    cfg = _cfg(tmp_path, auth_broker)
    got: list[dict] = []
    daemon = asyncio.create_task(_stand_in(auth_broker, got))
    try:
        conn = connection(cfg, "ana", username="ana", password_file="ana.mqtt")
        room = RoomView.from_config(cfg)
        app = DashboardApp(conn, room)  # type: ignore[arg-type]
        async with app.run_test(size=(80, 24)) as pilot:
            await _until(pilot, lambda: "HR 88" in _screen(app) and "hr_high" in _screen(app), 20, "live data as ana")
            await pilot.press("a")
            await _until(pilot, lambda: any(c.get("op") == "ack" for c in got), 10, "the command at the daemon")
        cmd = next(c for c in got if c.get("op") == "ack")
        assert cmd["operator"] == "ana" and cmd["guest"] == "G1" and cmd["condition"] == "hr_high"
        parsed = CommandAuthenticator(cfg).check(cmd, time.time())  # type: ignore[arg-type]  # the engine's check
        assert (parsed.op, parsed.operator, parsed.guest) == ("ack", "ana", "G1")
        # a wrong broker password: never "live", the banner says the broker is unreachable
        bad = connection(cfg, "ana", username="ana", password_file="bad.mqtt")
        app2 = DashboardApp(bad, RoomView.from_config(cfg))  # type: ignore[arg-type]
        async with app2.run_test(size=(80, 24)) as pilot:
            await _until(pilot, lambda: app2.room.broker_error != "", 15, "the refused login")
            await pilot.pause(0.5)
            text = _screen(app2)
            assert "STALE — no connection to the room's broker" in text and "HR 88" not in text
            assert "BROKER DOWN" in text
            assert "authori" in app2.room.broker_error.lower(), app2.room.broker_error
    finally:
        daemon.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await daemon
