"""The status bar keeps the daemon's answer to a command visible at any terminal width.

On an 80-column terminal the guest view has no alarm panel, so the status bar is the only place where
the facilitator sees whether an ack/pause was accepted or REFUSED; it used to be cut away behind the
sync summary and the operator name.
"""

from __future__ import annotations

import time

import pytest

from vigil.tui import render
from vigil.tui.app import Connection, DashboardApp, GuestScreen
from vigil.tui.model import Reply, RoomView

ROOM = "sb"
NOW = 1000.0
BUSY_SYNC = {"destinations": {"fhir": {"queue_depth": 1234, "dead_letters": 3, "breaker": "half_open"}}}
OK = Reply(True, "ok", "pause", ["sbp_high", "vt"], "id1", NOW - 1.0)
REFUSED = Reply(False, "bad signature", "ack", [], "id2", NOW - 1.0)


def busy_room(reply: Reply | None) -> RoomView:
    """A running room whose status bar is long: 5 h uptime and a degraded sync with a deep queue."""
    room = RoomView(ROOM)
    room.broker_connected = True
    room.status, room.status_received = {"v": 1, "state": "running", "uptime_s": 5 * 3600}, NOW - 0.4
    room.sync = BUSY_SYNC
    if reply is not None:
        room.replies.append(reply)
    return room


def answer_text(reply: Reply) -> str:
    words = f"{reply.op}: {'ok' if reply.ok else 'REFUSED'} {reply.reason}"
    return words + (" (" + ",".join(reply.affected) + ")" if reply.affected else "")


@pytest.mark.parametrize("reply", [OK, REFUSED], ids=["ok", "refused"])
def test_the_answer_is_shown_whole_at_80_columns(reply: Reply) -> None:
    line = render.status_bar(busy_room(reply), 80, NOW, "facilitator", night=True, large=True, wall=0).plain
    assert len(line) == 80 and line.endswith(" --:--:--"), line
    assert answer_text(reply) in line, line
    assert line.startswith(" broker up │ daemon ok hb 0.4s"), line  # connection and heartbeat are never left out
    assert "…" not in line  # what was left out went whole (flags, uptime, operator, sync), nothing is cut


def test_segments_are_left_out_least_important_first() -> None:
    order = ["NIGHT", " up 5h", "op facilitator", "sync degraded"]  # flags, uptime, operator, sync
    seen_full = False
    for width in range(40, 201):
        line = render.status_bar(busy_room(REFUSED), width, NOW, "facilitator", night=True, large=True,
                                 wall=0).plain
        assert len(line) == width
        present = [s in line for s in order]
        # once a segment is shown, every more important one is shown too
        assert present == sorted(present), (width, line)
        if width >= len(" broker up │ daemon ok hb 0.4s │ ack: REFUSED bad signature ") + 9:
            assert answer_text(REFUSED) in line, (width, line)
        else:
            assert "ack: REFUSED" in line or "…" in line, (width, line)  # cut visibly, never silently
        seen_full |= all(present)
    assert seen_full  # at 200 columns nothing is left out


def test_nothing_is_left_out_without_an_answer_or_when_it_fits() -> None:
    narrow = render.status_bar(busy_room(None), 80, NOW, "facilitator", wall=0).plain
    assert " up 5h" in narrow and "sync degraded q 1234 dead 3" in narrow and narrow.count("…") == 1  # cut as before
    expired = Reply(True, "ok", "ack", ["vt"], "id3", NOW - render.REPLY_SHOW_S - 0.1)
    assert render.status_bar(busy_room(expired), 80, NOW, "facilitator", wall=0).plain == narrow
    wide = render.status_bar(busy_room(OK), 160, NOW, "facilitator", night=True, wall=0).plain
    for part in (" up 5h", "sync degraded q 1234 dead 3", "op facilitator NIGHT", answer_text(OK)):
        assert part in wide, wide


async def test_guest_view_at_80_columns_shows_the_refusal() -> None:
    room = RoomView(ROOM)
    app = DashboardApp(Connection(ROOM, operator="facilitator"), room, connect=False)

    def heartbeat() -> None:  # the daemon's 1 Hz status, so the bar says "daemon ok" however slow this runs
        room.apply(f"vigil/{ROOM}/status", {"v": 1, "state": "running", "uptime_s": 5 * 3600, "guests": ["M01"]},
                   time.monotonic())

    async with app.run_test(size=(80, 24)) as pilot:
        room.broker_connected = True
        heartbeat()
        room.apply(f"vigil/{ROOM}/sync/status", {"v": 1, **BUSY_SYNC}, time.monotonic())
        app.push_screen(GuestScreen("M01"))
        await pilot.pause(0.3)
        assert isinstance(app.screen, GuestScreen)
        room.apply(f"vigil/{ROOM}/cmd/facilitator/reply", {"v": 1, "ok": False, "reason": "bad signature",
                                                            "op": "ack", "id": "x1"}, time.monotonic())
        deadline = time.monotonic() + 5
        status = ""
        while time.monotonic() < deadline:
            heartbeat()
            await pilot.pause(0.1)
            status = app.screen._compositor.render_strips()[0].text  # noqa: SLF001
            if "REFUSED" in status:
                break
        assert "ack: REFUSED bad signature" in status, status
        assert status.startswith(" broker up │ daemon ok"), status
