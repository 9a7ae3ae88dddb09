"""Pilot tests of the dashboard's key paths against real parts: mosquitto on a free loopback port, the
daemon (`vigil run`) replaying Challenge 2015 v221l (a true VT alarm), and the loopback Twilio server
that receives the escalation SMS. Commands are HMAC-signed by the dashboard and audited by the daemon."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from vigil.config import parse_config
from vigil.datasets import VENDORED_RECORDS
from vigil.store import RecordStore
from vigil.testing.twilio_server import TwilioServer
from vigil.tui.app import ConfirmOff, DashboardApp, GuestScreen
from vigil.tui.model import RoomView

pytestmark = pytest.mark.timeout(150)


def screen_text(app: DashboardApp) -> str:
    return "\n".join(s.text for s in app.screen._compositor.render_strips())  # noqa: SLF001


def status_text(app: DashboardApp) -> str:
    """The status bar's line as drawn."""
    return screen_text(app).split("\n")[0]


def panel_text(app: DashboardApp) -> str:
    """The alarm panel as drawn (from its ' ALARMS n' title line down)."""
    text = screen_text(app)
    i = text.find(" ALARMS ")
    return text[i:] if i >= 0 else ""


def _secret(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _config(tmp: Path, port: int, tw: TwilioServer) -> Path:
    _secret(tmp / "ana.secret", secrets.token_hex(16).encode())
    _secret(tmp / "twilio.token", tw.auth_token.encode())
    text = f"""
[site]
name = "pilot"
room = "p1"
[store]
path = "{tmp / 'vigil.db'}"
min_free_mb = 1
[mqtt]
port = {port}
[alarms]
sound_enabled = false
[escalation]
high = {{ on_call_after_s = 2, backup_after_s = 600 }}
min_interval_per_contact_s = 0
contacts = [{{ name = "Dr Oncall", role = "on_call", phone = "+41790000001" }}]
[escalation.twilio]
base_url = "{tw.base_url}"
account_sid = "{tw.account_sid}"
from_number = "+41780000000"
auth_token_file = "twilio.token"
[[operators]]
name = "ana"
secret_file = "ana.secret"
may_alarm_off = true
[[devices]]
id = "rec-v"
profile = "replay-wfdb"
record = "{VENDORED_RECORDS / 'v221l'}"
speed = 10.0
start_s = 266
loop = true
[[guests]]
mat = "V1"
name = "Pilot Guest"
devices = ["rec-v"]
"""
    path = tmp / "config.toml"
    path.write_text(text)
    return path


async def until(pilot: object, cond: Callable[[], bool], timeout: float, what: str) -> None:
    pause: Callable[[float], Awaitable[None]] = pilot.pause  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await pause(0.2)
    app = pilot.app  # type: ignore[attr-defined]
    evs = [(e.condition, e.event, e.state) for e in app.room.events][-15:]
    raise AssertionError(f"timed out waiting for {what}; alarms {app.room.active_alarms()}; events {evs}")


async def test_alarm_ack_pause_off_and_escalation_through_the_dashboard(tmp_path: Path, mosquitto) -> None:
    from vigil.commands.tui import connection

    with TwilioServer() as tw:
        cfg_path = _config(tmp_path, mosquitto.port, tw)
        cfg = parse_config(cfg_path.read_text(), cfg_path)
        daemon = subprocess.Popen([sys.executable, "-m", "vigil", "run", "--config", str(cfg_path)],
                                  stdout=subprocess.DEVNULL, stderr=open(tmp_path / "daemon.log", "wb"),  # noqa: SIM115
                                  env={**os.environ, "VIGIL_LOG_LEVEL": "INFO"})
        try:
            conn = connection(cfg, "ana")
            assert conn.secret is not None  # type: ignore[attr-defined]
            room = RoomView.from_config(cfg)
            app = DashboardApp(conn, room)  # type: ignore[arg-type]
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: room.daemon_state(time.monotonic()) == "running"
                            and room.broker_connected, 40, "the daemon's heartbeat")
                await until(pilot, lambda: "HR " in screen_text(app) and room.guests["V1"].ecg.fs is not None,
                            20, "live numbers and ECG")
                assert "V1 Pilot Guest" in screen_text(app)

                def vt() -> object:
                    return next((a for a in room.active_alarms() if a.condition == "vt"), None)

                # 1. the replayed VT raises a high-priority alarm: tile and panel show it
                await until(pilot, lambda: vt() is not None, 60, "the VT alarm")
                await until(pilot, lambda: "!!! HIGH vt" in screen_text(app) and " vt " in panel_text(app), 5,
                            "the VT alarm on the tile and in the panel")
                # 2. unacknowledged for 2 s: escalation to the on-call contact arrives over the bus
                await until(pilot, lambda: room.escalation_stage("V1", "vt") != "", 30, "the escalation entry")
                stage = room.escalation_stage("V1", "vt")
                assert stage == "on_call Dr Oncall via cloud: sent", stage
                await until(pilot, lambda: "esc: on_call Dr Oncall" in screen_text(app), 5, "escalation on screen")
                assert [m["to"] for m in tw.twilio.messages][:1] == ["+41790000001"]
                assert "vt mat V1" in tw.twilio.messages[0]["body"]
                # select the VT row
                idx = room.active_alarms().index(vt())  # type: ignore[arg-type]
                for _ in range(idx):
                    await pilot.press("down")
                assert app.selected_alarm().condition == "vt"
                # 3. pause audio for 2 min: the daemon answers, the tile says PAUSED with the time left
                await pilot.press("p")
                await until(pilot, lambda: bool(room.replies) and room.replies[-1].op == "pause", 10, "the pause reply")
                reply = room.replies[-1]
                assert reply.ok and "vt" in reply.affected and reply.id == app.sent[-1]["id"]
                await until(pilot, lambda: getattr(vt(), "state", "") == "audio_paused", 10, "PAUSED state")
                await until(pilot, lambda: "PAUSED 1:5" in screen_text(app) or "PAUSED 2:00" in screen_text(app),
                            5, "PAUSED on screen")
                # the answer is drawn at the next redraw tick after it arrives, which may come after PAUSED was drawn
                # (the guest's alarms message can arrive, and be painted, first): wait for it, in both places
                await until(pilot, lambda: "pause: ok" in status_text(app) and "pause: ok" in panel_text(app), 5,
                            "the pause reply on the status bar and the alarm panel")
                # 4. ALARM OFF asks first; 'n' sends nothing, 'y' switches it off and leaves a reminder
                n_sent = len(app.sent)
                idx = room.active_alarms().index(vt())  # type: ignore[arg-type]
                app.alarm_cursor = idx
                await pilot.press("o")
                await pilot.pause(0.3)
                assert isinstance(app.screen, ConfirmOff)
                await pilot.press("n")
                await pilot.pause(0.3)
                assert len(app.sent) == n_sent
                await pilot.press("o")
                await pilot.pause(0.3)
                await pilot.press("y")
                await until(pilot, lambda: room.replies[-1].op == "off", 10, "the off reply")
                assert room.replies[-1].ok
                await until(pilot, lambda: getattr(vt(), "state", "") == "alarm_off", 10, "ALARM OFF state")
                await until(pilot, lambda: "ALARM OFF (reminder" in screen_text(app), 5, "the OFF reminder")
                # 5. resume, then acknowledge
                app.alarm_cursor = room.active_alarms().index(vt())  # type: ignore[arg-type]
                await pilot.press("r")
                await until(pilot, lambda: room.replies[-1].op == "resume", 10, "the resume reply")
                assert room.replies[-1].ok
                # the 34-s segment loops (3.4 s at 10x): the next VT raises the resumed condition again
                await until(pilot, lambda: getattr(vt(), "state", "") in ("active", "latched", "audio_paused"), 40,
                            "VT again (the guest-wide 2-min audio pause still applies)")
                app.alarm_cursor = room.active_alarms().index(vt())  # type: ignore[arg-type]
                await pilot.press("a")
                await until(pilot, lambda: room.replies[-1].op == "ack", 10, "the ack reply")
                assert room.replies[-1].ok and room.replies[-1].affected == ["vt"]
                await until(pilot, lambda: vt() is None or getattr(vt(), "state", "") == "acknowledged", 10,
                            "acknowledged or reset")
                # 6. the guest view shows the alarm history with the escalation and who did what
                await pilot.press("right")
                app.alarm_cursor = 0
                await pilot.press("g")
                await pilot.pause(0.5)
                assert isinstance(app.screen, GuestScreen) and app.screen.mat == "V1"
                text = screen_text(app)
                assert "alarm history" in text and "escalated on_call Dr Oncall via cloud: sent" in text
                assert "by ana" in text
                # the strip is labelled with the daemon's beats (v221l's VT segment: ventricular beats)
                labels = {lab for _, lab in room.guest("V1").ecg.beats}
                assert "V" in labels, labels
                # the daemon's retained guest history arrived and merged without doubling any event
                g = room.guest("V1")
                keys = [(e.condition, e.event, e.wall) for e in g.history]
                assert g.seeded and len(keys) == len(set(keys)), keys
                await pilot.press("escape")
                await pilot.pause(0.2)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    store = RecordStore.open(tmp_path / "vigil.db")
    try:
        actions = [(e.actor, e.action) for e in store.audit_entries() if e.actor == "ana"]
    finally:
        store.close()
    for op in ("pause", "off", "resume", "ack"):
        assert ("ana", f"command.{op}") in actions, actions
    assert not [a for a in actions if a[1] == "command.refused"]  # every signed command was accepted
