"""The dashboard's broker link against a real mosquitto: live numbers, broker outage (STALE, BROKER DOWN), recovery."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from vigil.bus import Bus
from vigil.tui.app import Connection, DashboardApp
from vigil.tui.model import RoomView

pytestmark = pytest.mark.timeout(90)
ROOM = "lnk"


def screen_text(app: DashboardApp) -> str:
    return "\n".join(s.text for s in app.screen._compositor.render_strips())  # noqa: SLF001


async def until(pilot: object, cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await pilot.pause(0.2)  # type: ignore[attr-defined]
    raise AssertionError(f"timed out waiting for {what}:\n{screen_text(pilot.app)}")  # type: ignore[attr-defined]


async def _daemon_stand_in(port: int) -> None:
    """Publishes a heartbeat and one guest's vitals twice a second (reconnecting like the daemon)."""
    async with Bus(ROOM, "127.0.0.1", port, backoff_cap_s=0.5) as bus:
        while True:
            bus.publish_status({"state": "running", "room": ROOM, "uptime_s": 1.0, "t": time.time(), "guests": ["G1"]})
            bus.publish_vitals("G1", {"mat": "G1", "t": time.time(), "rhythm": "SINUS", "quality": 1.0,
                                      "quality_flags": [], "beats": 1, "devices": {"d": "streaming"},
                                      "vitals": {"hr": {"value": 77, "age_s": 0.1, "unit": "/min"}}})
            await asyncio.sleep(0.5)


async def test_broker_outage_shows_stale_and_recovers(mosquitto) -> None:
    room = RoomView(ROOM)
    app = DashboardApp(Connection(ROOM, "127.0.0.1", mosquitto.port, operator="ana"), room)
    publisher = asyncio.create_task(_daemon_stand_in(mosquitto.port))
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "HR 77" in screen_text(app) and "broker up" in screen_text(app), 20, "live")
            assert "STALE" not in screen_text(app)
            t0 = time.monotonic()
            mosquitto.server.stop()
            stale = "STALE — no connection to the room's broker"
            # the status bar and the tiles are separate widgets: one refresh may show BROKER DOWN before STALE
            await until(pilot, lambda: "BROKER DOWN" in screen_text(app) and stale in screen_text(app), 15,
                        "BROKER DOWN and STALE")
            text = screen_text(app)
            assert stale in text and "HR 77" not in text
            assert time.monotonic() - t0 < 10
            room.apply(f"vigil/{ROOM}/guest/G1/alarms", {"v": 1, "mat": "G1", "t": time.time(), "alarms": [
                {"condition": "hr_high", "priority": "medium", "state": "active", "since_s": 1, "latching": False,
                 "value": 120, "reason": "", "pause_left_s": None}]}, time.monotonic())
            assert app.selected_alarm() is not None
            await pilot.press("a")  # a command is refused locally while the broker is away, never queued
            await pilot.pause(0.2)
            assert app.sent == []
            mosquitto.restart()
            await until(pilot, lambda: "HR 77" in screen_text(app) and "broker up" in screen_text(app), 30,
                        "recovery after the broker came back")
            assert "STALE" not in screen_text(app)
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher


def test_unknown_operator_is_a_config_error_naming_the_configured_ones(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from vigil.cli import main

    cfg = tmp_path / "config.toml"
    cfg.write_text('[site]\nname = "x"\nroom = "r1"\n[[operators]]\nname = "ana"\n[[operators]]\nname = "ben"\n')
    assert main(["tui", "--config", str(cfg), "--operator", "nobody"]) == 2
    assert "operator 'nobody' is not in [[operators]]" in capsys.readouterr().err
    assert main(["tui", "--config", str(cfg)]) == 2  # two operators: must choose
    assert "choose an operator with --operator NAME (configured: ana, ben)" in capsys.readouterr().err
