"""Snapshot-style tests: the dashboard rendered headless at 80×24 and 160×48 from deterministic bus input.

The screen text is read from Textual's compositor (what a terminal would show, cell by cell).
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from vigil.tui.app import Connection, DashboardApp, GuestScreen
from vigil.tui.model import RoomView

ROOM = "snap"


def screen_text(app: DashboardApp) -> list[str]:
    """The screen as lines of text."""
    return [s.text for s in app.screen._compositor.render_strips()]  # noqa: SLF001


def feed(room: RoomView, n: int, names: bool = True) -> None:
    """Deterministic messages for n guests: vitals, 1 s of ECG, a high alarm on guest 3, a heartbeat."""
    now = time.monotonic()
    wall = time.time()
    mats = [f"M{i + 1:02d}" for i in range(n)]
    room.broker_connected = True
    room.apply(f"vigil/{ROOM}/status", {"v": 1, "state": "running", "uptime_s": 321, "guests": mats}, now)
    fs = 120.0
    t = np.arange(int(fs)) / fs
    beat = (np.exp(-((t % 0.8) - 0.4) ** 2 / 0.0004) * 1200).astype(int).tolist()
    for i, mat in enumerate(mats):
        g = room.guest(mat)
        if names:
            g.name = f"Guest {i + 1:02d} Name"
        g.bands = {"hr": (40, 50, 100, 120), "spo2": (85, 90, None, None), "sbp": (80, 90, 150, 180),
                   "qtc": (None, None, 450, 500)}
        g.baseline_qtc = 430.0
        room.apply(f"vigil/{ROOM}/guest/{mat}/vitals", {
            "v": 1, "mat": mat, "t": wall, "rhythm": "SINUS", "quality": 0.95, "quality_flags": [], "beats": 99,
            "devices": {f"d{i}": "streaming"},
            "vitals": {"hr": {"value": 60 + i, "age_s": 0.3, "unit": "/min"},
                       "spo2": {"value": 96, "age_s": 0.3, "unit": "%"},
                       "sbp": {"value": 121, "age_s": 30, "unit": "mm[Hg]"},
                       "dbp": {"value": 79, "age_s": 30, "unit": "mm[Hg]"},
                       "qtc": {"value": 452, "age_s": 4, "unit": "ms"}}}, now)
        room.apply(f"vigil/{ROOM}/guest/{mat}/ecg", {"v": 1, "mat": mat, "seq": 0, "fs": fs, "decimation": 1,
                                                    "unit": "uV", "t": wall, "samples": beat}, now)
    room.apply(f"vigil/{ROOM}/guest/M03/alarms", {"v": 1, "mat": "M03", "t": wall, "alarms": [
        {"condition": "vt", "priority": "high", "state": "active", "since_s": 4.0, "latching": True, "value": None,
         "reason": "VT", "pause_left_s": None}]}, now)


async def run(size: tuple[int, int], n: int, names: bool = True) -> tuple[DashboardApp, list[str]]:
    room = RoomView(ROOM)
    app = DashboardApp(Connection(ROOM, operator="ana"), room, connect=False)
    async with app.run_test(size=size) as pilot:
        feed(room, n, names)
        await pilot.pause(0.6)
        lines = screen_text(app)
    return app, lines


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_four_guests_show_names_numbers_alarm_and_status(size: tuple[int, int]) -> None:
    _, lines = await run(size, 4)
    w, h = size
    assert len(lines) == h and all(len(x) <= w for x in lines)
    text = "\n".join(lines)
    for i in range(4):
        assert f"M{i + 1:02d} Guest {i + 1:02d} Name" in text  # never cut at these sizes
        assert f"HR {60 + i}" in text
    assert text.count("SpO2 96") == 4 and len(re.findall(r"BP 121/79 3[012]s", text)) == 4  # 30 s old when sent
    assert text.count("QTc 452 Δ+22") == 4 and text.count("SINUS") == 4
    assert "!!! HIGH vt" in text  # priority symbol + word: readable without colour
    assert text.count(" OK") >= 3
    status = lines[0]
    assert "broker up" in status and "daemon ok" in status and "sync n/a" in status and "op ana" in status
    panel = [x for x in lines if "M03" in x and "vt" in x and "ACTIVE" in x]
    assert panel and panel[0].lstrip().startswith(">!!! HIGH")
    assert any(ch in text for ch in "⡇⢸⣿⠁")  # an ECG trace is drawn
    assert "STALE" not in text


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_twenty_guests_fit(size: tuple[int, int]) -> None:
    _, lines = await run(size, 20)
    w, h = size
    assert len(lines) == h and all(len(x) <= w for x in lines)
    text = "\n".join(lines)
    for i in range(20):
        assert f"M{i + 1:02d}" in text
        assert (f"HR{60 + i}" in text) or (f"HR {60 + i}" in text)
    if size == (160, 48):
        for i in range(20):
            assert f"M{i + 1:02d} Guest {i + 1:02d} Name" in text  # full names on the big screen
        assert text.count("BP 121/79") == 20
    else:
        assert text.count("121/79") == 20  # compact tiles keep the numbers
        m03 = next(x for x in lines if "M03" in x and "!!! HIGH vt" in x)
        assert "M03 Guest" in m03 and "…" in m03  # names cut visibly, never silently
    assert "!!! HIGH vt" in text


async def test_stale_banner_replaces_the_numbers() -> None:
    room = RoomView(ROOM)
    app = DashboardApp(Connection(ROOM), room, connect=False)
    async with app.run_test(size=(80, 24)) as pilot:
        feed(room, 4)
        await pilot.pause(0.4)
        assert "HR 60" in "\n".join(screen_text(app))
        room.status_received = time.monotonic() - 5.0  # heartbeat silent for 5 s
        await pilot.pause(0.6)
        text = "\n".join(screen_text(app))
        assert "STALE — no heartbeat from the daemon" in text
        assert "HR 60" not in text and "SpO2 96" not in text and "daemon STALE" in text
        # one guest silent while the daemon lives: only that tile goes stale
        room.status_received = time.monotonic()
        room.guests["M02"].vitals_received = time.monotonic() - 4.0
        await pilot.pause(0.6)
        text = "\n".join(screen_text(app))
        assert "HR 60" in text and "HR 61" not in text and text.count("STALE") == 1
        room.broker_connected = False
        room.broker_error = "connection refused"
        await pilot.pause(0.6)
        text = "\n".join(screen_text(app))
        assert "no connection to the room's broker" in text and "BROKER DOWN" in text and "HR 60" not in text


async def test_keys_night_large_guest_view_and_off_confirmation() -> None:
    room = RoomView(ROOM)
    app = DashboardApp(Connection(ROOM), room, connect=False)
    async with app.run_test(size=(100, 30)) as pilot:
        feed(room, 4)
        await pilot.pause(0.4)
        await pilot.press("n")
        await pilot.pause(0.3)
        assert app.palette.name == "night" and "NIGHT" in screen_text(app)[0]
        assert "#c06000" in app.export_screenshot().lower()  # amber text
        await pilot.press("L")
        await pilot.pause(0.3)
        text = "\n".join(screen_text(app))
        assert "LARGE" in text and "┏━┓" in text
        await pilot.press("o")  # ALARM OFF asks first; n keeps alarming
        await pilot.pause(0.3)
        assert "Switch ALARM OFF for vt of M03 Guest 03 Name?" in "\n".join(screen_text(app))
        await pilot.press("n")
        await pilot.pause(0.2)
        assert app.sent == []
        await pilot.press("enter")  # guest view of the selected alarm's guest
        await pilot.pause(0.4)
        assert isinstance(app.screen, GuestScreen) and app.screen.mat == "M03"
        text = "\n".join(screen_text(app))
        for label in ("HR /min", "SpO2 %", "SBP mmHg", "QTc ms", "lim 40/50/100/120", "alarm history", "ECG (last"):
            assert label in text, label
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, GuestScreen)


async def test_tiles_flash_at_iec_rates_on_screen() -> None:
    """Sample the running app's screen for 5 s: the high badge blinks at ~2 Hz, the medium one at ~0.6 Hz."""
    room = RoomView(ROOM)
    app = DashboardApp(Connection(ROOM), room, connect=False)
    async with app.run_test(size=(80, 24)) as pilot:
        feed(room, 4)
        room.apply(f"vigil/{ROOM}/guest/M01/alarms", {"v": 1, "mat": "M01", "t": time.time(), "alarms": [
            {"condition": "hr_high", "priority": "medium", "state": "active", "since_s": 4.0, "latching": False,
             "value": 111, "reason": "", "pause_left_s": None}]}, time.monotonic())
        await pilot.pause(0.5)
        lit: dict[str, list[bool]] = {"!!! HIGH": [], "!! MED": []}
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5.0:
            room.status_received = time.monotonic()  # keep the room live while sampling
            for g in room.guests.values():
                g.vitals_received = time.monotonic()
            strips = app.screen._compositor.render_strips()  # noqa: SLF001
            for word in lit:
                seg = next(s for strip in strips[:12] for s in strip if s.text.startswith(word))
                lit[word].append(bool(seg.style and seg.style.bgcolor is not None and not seg.style.reverse))
            await pilot.pause(0.04)
        elapsed = time.monotonic() - t0

    def hz(xs: list[bool]) -> float:
        return sum(a != b for a, b in zip(xs, xs[1:], strict=False)) / 2 / elapsed

    print("flash Hz", hz(lit["!!! HIGH"]), hz(lit["!! MED"]))
    assert 1.4 <= hz(lit["!!! HIGH"]) <= 2.8, hz(lit["!!! HIGH"])
    assert 0.4 <= hz(lit["!! MED"]) <= 0.8, hz(lit["!! MED"])


async def test_tile_selection_and_click_open_that_guest() -> None:
    room = RoomView(ROOM)
    app = DashboardApp(Connection(ROOM), room, connect=False)
    async with app.run_test(size=(80, 24)) as pilot:
        feed(room, 4)
        await pilot.pause(0.4)
        await pilot.press("right", "right", "right")  # M04 has no alarm; enter would open M03's
        await pilot.press("g")
        await pilot.pause(0.3)
        assert isinstance(app.screen, GuestScreen) and app.screen.mat == "M04"
        await pilot.press("escape")
        await pilot.pause(0.2)
        # 2×2 grid below the status bar: the top-right tile is M02
        await pilot.click("Tiles", offset=(60, 3))
        await pilot.pause(0.3)
        assert isinstance(app.screen, GuestScreen) and app.screen.mat == "M02"


async def test_alarm_off_reminder_event_pops_up() -> None:
    from vigil.bus import encode

    room = RoomView(ROOM)
    app = DashboardApp(Connection(ROOM), room, connect=False)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        feed(room, 4)
        app.on_bus_message(f"vigil/{ROOM}/alarms/events", encode({
            "guest": "M02", "condition": "qtc_high", "priority": "medium", "event": "reminder",
            "state": "alarm_off", "t_mono": 1.0, "wall": time.time(), "operator": None,
            "reason": "ALARM OFF still active", "detail": {}}))
        await pilot.pause(0.5)
        # the toast sits at the bottom right, its text after a "▌" edge, wrapped over lines
        toast = " ".join(line.rsplit("▌", 1)[1].strip() for line in screen_text(app) if "▌" in line)
        assert "ALARM OFF is still on: qtc_high of M02 (r resumes it)" in " ".join(toast.split()), toast


async def test_a_redraw_tick_after_the_screens_are_gone_is_ignored() -> None:
    """The redraw timer can fire once more while the app shuts down (seen in a full `make test`:
    ``ScreenStackError: No screens on stack`` from `_tick`); that tick must do nothing."""
    room = RoomView(ROOM)
    feed(room, 2)
    app = DashboardApp(Connection(ROOM), room, connect=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        ticks = app.ticks
    assert not app.screen_stack
    app._tick()  # the late tick
    assert app.ticks == ticks
