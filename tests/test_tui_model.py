"""Dashboard view-model, braille rendering, grid layout and tile renderers: pure, no terminal."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.tui import braille, render
from vigil.tui.layout import GAP, grid_for
from vigil.tui.model import STALE_S, EcgBuffer, RoomView, flash_on

ROOM = "r1"


def vitals(mat: str, hr: float | None = 72, spo2: float | None = 97, t: float = 1_700_000_000.0,
           **extra: dict) -> dict:
    v = {"hr": {"value": hr, "age_s": 0.4, "unit": "/min"}, "spo2": {"value": spo2, "age_s": 0.4, "unit": "%"},
         "sbp": {"value": 118, "age_s": 42, "unit": "mm[Hg]"}, "dbp": {"value": 76, "age_s": 42, "unit": "mm[Hg]"},
         "qtc": {"value": 471, "age_s": 5, "unit": "ms"}, "battery": {"value": 64, "age_s": 20, "unit": "%"}}
    v.update(extra)
    return {"v": 1, "mat": mat, "t": t, "vitals": v, "rhythm": "SINUS", "quality": 0.9, "quality_flags": [],
            "beats": 10, "devices": {f"d-{mat}": "streaming"}}


def alarm(cond: str, prio: str, since: float, state: str = "active") -> dict:
    return {"condition": cond, "priority": prio, "state": state, "since_s": since, "latching": False,
            "value": 130.0, "reason": "", "pause_left_s": 90.0 if state == "audio_paused" else None}


def test_vitals_status_and_staleness() -> None:
    room = RoomView(ROOM)
    assert room.apply(f"vigil/{ROOM}/guest/A1/vitals", vitals("A1"), now=100.0) == "A1"
    g = room.guests["A1"]
    assert g.heart_rate() == ("HR", 72) and g.value("spo2") == 97 and g.value("sbp") == 118
    assert g.vitals["sbp"].age(110.0) == pytest.approx(52.0)  # daemon age + time since arrival
    assert not g.stale(100.0 + STALE_S) and g.stale(100.0 + STALE_S + 0.1)
    assert room.apply("vigil/other-room/guest/A1/vitals", vitals("A1", hr=40), now=101.0) is None
    assert g.value("hr") == 72
    # no heartbeat yet, then running, then silent for > 3 s, then the last will
    room.broker_connected = True
    assert room.daemon_state(100.0) == "unknown" and room.room_stale(100.0)
    room.apply(f"vigil/{ROOM}/status", {"v": 1, "state": "running", "guests": ["A1", "B2"]}, now=100.0)
    assert room.daemon_state(102.0) == "running" and not room.room_stale(102.0)
    assert "B2" in room.guests  # guests announced by the heartbeat get a tile
    assert room.daemon_state(103.5) == "stale" and room.room_stale(103.5)
    room.apply(f"vigil/{ROOM}/status", {"v": 1, "state": "offline"}, now=104.0)
    assert room.daemon_state(104.0) == "offline"
    room.broker_connected = False
    assert room.room_stale(104.0)


def test_pulse_rate_is_used_when_there_is_no_ecg_heart_rate() -> None:
    room = RoomView(ROOM)
    room.apply(f"vigil/{ROOM}/guest/A1/vitals", vitals("A1", hr=None, pulse_rate={"value": 88, "age_s": 1,
                                                                                "unit": "/min"}), 0.0)
    assert room.guests["A1"].heart_rate() == ("PR", 88)


def test_alarm_order_is_priority_then_onset_and_escalation_stage() -> None:
    room = RoomView(ROOM)
    t = 1_700_000_000.0
    room.apply(f"vigil/{ROOM}/guest/A1/alarms", {"v": 1, "mat": "A1", "t": t, "alarms": [
        alarm("hr_high", "medium", 50), alarm("poor_signal", "low", 500)]}, 0.0)
    room.apply(f"vigil/{ROOM}/guest/B2/alarms", {"v": 1, "mat": "B2", "t": t, "alarms": [
        alarm("vt", "high", 5), alarm("spo2_low", "medium", 80)]}, 0.0)
    room.apply(f"vigil/{ROOM}/guest/C3/alarms", {"v": 1, "mat": "C3", "t": t, "alarms": [alarm("vf", "high", 9)]}, 0.0)
    order = [(a.mat, a.condition) for a in room.active_alarms()]
    assert order == [("C3", "vf"), ("B2", "vt"), ("B2", "spo2_low"), ("A1", "hr_high"), ("A1", "poor_signal")]
    assert room.active_alarms()[0].onset_wall == pytest.approx(t - 9)
    assert room.escalation_stage("B2", "vt") == ""
    ev = {"v": 1, "guest": "B2", "condition": "vt", "priority": "high", "event": "escalated", "state": "active",
          "t_mono": 1.0, "wall": t, "operator": None, "reason": "on_call via twilio: delivered",
          "detail": {"step": "on_call", "contact": "Dr Oncall", "role": "on_call", "channel": "twilio",
                     "outcome": "delivered", "ok": True}}
    assert room.apply(f"vigil/{ROOM}/alarms/events", ev, 0.0) == "B2"
    assert room.escalation_stage("B2", "vt") == "on_call Dr Oncall via twilio: delivered"
    assert [e.event for e in room.guests["B2"].history] == ["escalated"]
    # an alarm switched off is not the tile's top alarm
    room.apply(f"vigil/{ROOM}/guest/C3/alarms", {"v": 1, "mat": "C3", "t": t, "alarms": [
        alarm("vf", "high", 9, state="alarm_off")]}, 0.0)
    assert room.guests["C3"].top_alarm() is None


def test_sync_summary_and_replies() -> None:
    room = RoomView(ROOM)
    assert room.sync_summary() == ("n/a", 0, 0)
    room.apply(f"vigil/{ROOM}/sync/status", {"v": 1, "updated": 1.0, "destinations": {
        "booking": {"queue_depth": 3, "dead_letters": 1, "breaker": "open"},
        "fhir": {"queue_depth": 4, "dead_letters": 0, "breaker": "closed"}}}, 0.0)
    assert room.sync_summary() == ("degraded", 7, 1)
    room.apply(f"vigil/{ROOM}/sync/status", {"v": 1, "updated": 1.0, "worker": {"online": False},
                                             "destinations": {}}, 0.0)
    assert room.sync_summary()[0] == "offline"
    room.apply(f"vigil/{ROOM}/cmd/ana/reply", {"v": 1, "ok": False, "reason": "bad signature", "op": "ack",
                                               "affected": [], "id": "x1"}, 5.0)
    assert room.replies[-1].reason == "bad signature" and room.replies[-1].id == "x1"


def test_ecg_buffer_keeps_gaps_as_gaps() -> None:
    e = EcgBuffer(keep_s=2.0)
    e.add(seq=0, fs=100.0, decimation=3, samples=list(range(50)), now=0.0)
    assert e.end_index == 50 and len(e.samples) == 50
    e.add(seq=3 * 60, fs=100.0, decimation=3, samples=[1] * 10, now=0.1)  # 10 samples lost
    assert e.end_index == 70
    assert np.isnan(e.samples[50:60]).all() and (e.samples[60:] == 1).all()
    e.add(seq=3 * 70, fs=100.0, decimation=3, samples=[2] * 300, now=0.2)
    assert len(e.samples) == 200 and e.end_index == 370  # only keep_s kept
    e.add(seq=3 * 10_000, fs=100.0, decimation=3, samples=[5] * 4, now=0.3)  # gap longer than kept: restart
    assert len(e.samples) == 4 and e.end_index == 10_004


def _transitions(priority: str, seconds: float = 10.0, step: float = 0.005) -> int:
    t = np.arange(0, seconds, step)
    on = np.array([flash_on(priority, x) for x in t])
    return int(np.count_nonzero(on[1:] != on[:-1]))


def test_flash_rates_follow_iec_60601_1_8() -> None:
    # one on+off cycle = 2 transitions
    high_hz = _transitions("high") / 2 / 10.0
    med_hz = _transitions("medium") / 2 / 10.0
    assert 1.4 <= high_hz <= 2.8 and high_hz == pytest.approx(2.0, abs=0.1)
    assert 0.4 <= med_hz <= 0.8 and med_hz == pytest.approx(0.6, abs=0.1)
    assert _transitions("low") == 0  # low priority: constant


def test_braille_pack_bits_and_sweep_cursor() -> None:
    grid = np.zeros((4, 2), dtype=bool)
    grid[0, 0] = grid[3, 1] = True
    assert braille.pack(grid) == [chr(0x2800 + 0x01 + 0x80)]
    x = np.sin(np.arange(400) / 20.0) * 1000
    rows = braille.sweep(x, end_index=400, width=20, height=2, spp=5)
    assert len(rows) == 2 and all(len(r) == 20 for r in rows)
    # the cursor: newest sample in dot column (399 // 5) % 40 = 39; the 2 columns after it are blank
    cols = np.array([[ord(c) - 0x2800 for c in r] for r in rows])
    blank_cell = (39 + 1) % 40 // 2  # dot column 0 and 1 -> cell 0
    assert (cols[:, blank_cell] == 0).all()
    assert (cols[:, 19] != 0).any()  # data right before the cursor
    # NaN (a gap) draws nothing
    gap = x.copy()
    gap[-100:] = np.nan
    rows = braille.sweep(gap, end_index=400, width=20, height=2, spp=5)
    cols = np.array([[ord(c) - 0x2800 for c in r] for r in rows])
    assert (cols[:, 10:20] == 0).all()


def test_trend_draws_band_lines_and_values() -> None:
    t = np.arange(0, 100.0)
    rows = braille.trend(t, np.full(100, 70.0), 0, 100, 20, 2, 40, 130, bands=(50, 100))
    assert len(rows) == 2 and all(len(r) == 20 for r in rows)
    assert all(any(c != "\u2800" for c in r) for r in rows)


@pytest.mark.parametrize(("n", "w", "h"), [(4, 80, 18), (20, 80, 19), (20, 160, 40), (12, 120, 30), (4, 160, 40)])
def test_grid_fits_every_guest_in_the_area(n: int, w: int, h: int) -> None:
    g = grid_for(n, w, h)
    assert g.cols * g.rows >= n
    assert g.cols * g.tile_w + (g.cols - 1) * GAP <= w and g.rows * g.tile_h <= h
    assert g.tile_h >= 3 and g.tile_w >= 18


def test_grid_prefers_full_tiles() -> None:
    assert (grid_for(4, 80, 18).cols, grid_for(4, 80, 18).rows) == (2, 2)
    assert (grid_for(4, 160, 40).cols, grid_for(4, 160, 40).rows) == (2, 2)


def _guest_room(state: str = "active") -> RoomView:
    room = RoomView(ROOM)
    room.broker_connected = True
    room.apply(f"vigil/{ROOM}/status", {"v": 1, "state": "running", "guests": ["A1"]}, 0.0)
    room.apply(f"vigil/{ROOM}/guest/A1/vitals", vitals("A1", hr=131), 0.0)
    room.apply(f"vigil/{ROOM}/guest/A1/alarms", {"v": 1, "mat": "A1", "t": 1.0, "alarms": [
        alarm("hr_high_critical", "high", 3, state=state)]}, 0.0)
    g = room.guests["A1"]
    g.name, g.baseline_qtc = "Guest Name", 440.0
    g.bands["hr"] = (40, 50, 100, 120)
    return room


def test_tile_text_numbers_badge_and_flash() -> None:
    room = _guest_room()
    g = room.guests["A1"]
    lit = render.tile(g, 40, 8, 1.0, False, flash_t=0.0)
    dark = render.tile(g, 40, 8, 1.0, False, flash_t=0.25)
    lines = lit.plain.split("\n")
    assert len(lines) == 8 and all(len(line) == 40 for line in lines)
    assert lines[0].startswith("A1 Guest Name") and lines[0].rstrip().endswith("!!! HIGH hr_high_critical")
    assert "HR 131" in lines[1] and "SpO2 97" in lines[1] and "BP 118/76 43s" in lines[1]  # 42 s old when sent, 1 s ago
    assert "QTc 471 Δ+31" in lines[2] and "SINUS" in lines[2]
    assert "bat 64%" in lines[-1] and "sig 90%" in lines[-1]
    assert lit.plain == dark.plain  # the word stays, only the colour flashes
    assert lit.spans != dark.spans
    # acknowledged: steady (no flash), word ACK
    acked = _guest_room("acknowledged").guests["A1"]
    a = render.tile(acked, 40, 8, 1.0, False, flash_t=0.0)
    b = render.tile(acked, 40, 8, 1.0, False, flash_t=0.25)
    assert "ACK" in a.plain.split("\n")[0] and a.spans == b.spans


def test_tile_hides_numbers_when_stale() -> None:
    room = _guest_room()
    g = room.guests["A1"]
    text = render.tile(g, 40, 8, STALE_S + 1.0, False).plain
    assert "STALE" in text and "131" not in text and "97" not in text
    text = render.tile(g, 40, 8, 1.0, True).plain  # room stale (heartbeat or broker lost)
    assert "STALE" in text and "131" not in text


def test_compact_tile_and_large_digits() -> None:
    room = _guest_room()
    g = room.guests["A1"]
    small = render.tile(g, 19, 3, 1.0, False).plain.split("\n")
    assert len(small) == 3 and all(len(x) == 19 for x in small)
    assert small[1].startswith("HR131 S97 118/76")
    big = render.tile(g, 40, 10, 1.0, False, large=True).plain
    assert "━━┓" in big and "┏━┓" in big  # "131" and "97" in seven-segment glyphs


def test_long_names_are_cut_with_an_ellipsis() -> None:
    room = _guest_room()
    g = room.guests["A1"]
    g.name = "A Really Very Long Display Name Indeed"
    head = render.tile(g, 30, 4, 1.0, False).plain.split("\n")[0]
    assert "…" in head and head.rstrip().endswith("hr_high_critical") and len(head) == 30


def test_box_wide_alarms_follow_their_events() -> None:
    room = RoomView(ROOM)

    def ev(event: str, state: str, wall: float) -> dict:
        return {"v": 1, "guest": "_system", "condition": "broker_down", "priority": "medium", "event": event,
                "state": state, "t_mono": 0.0, "wall": wall, "operator": None, "reason": "", "detail": {}}

    room.apply(f"vigil/{ROOM}/alarms/events", ev("raised", "active", 1000.0), 1.0)
    (a,) = room.active_alarms()
    assert (a.mat, a.condition, a.state, a.onset_wall) == ("_system", "broker_down", "active", 1000.0)
    room.apply(f"vigil/{ROOM}/alarms/events", ev("acknowledged", "acknowledged", 1005.0), 2.0)
    assert room.active_alarms()[0].state == "acknowledged" and room.active_alarms()[0].onset_wall == 1000.0
    text = render.alarm_panel(room, 80, 4, 2.0, 0).plain
    assert "BOX broker_down" in text and "ACK" in text
    room.apply(f"vigil/{ROOM}/alarms/events", ev("cleared", "inactive", 1010.0), 3.0)
    assert room.active_alarms() == [] and "_system" not in room.guests


def test_beat_labels_sit_under_their_beats_in_the_strip() -> None:
    room = RoomView(ROOM)
    fs = 100.0
    x = np.zeros(800)
    beats = []
    for k, s in enumerate(range(50, 800, 100)):
        x[s] = 1500.0
        beats.append([s * 2, "V" if k == 3 else "N"])  # device numbering, decimation 2
    room.apply(f"vigil/{ROOM}/guest/A1/ecg", {"v": 1, "mat": "A1", "seq": 0, "fs": fs, "decimation": 2,
                                             "samples": x.astype(int).tolist(), "beats": beats}, 0.0)
    e = room.guests["A1"].ecg
    assert [b[1] for b in e.beats] == ["N", "N", "N", "V", "N", "N", "N", "N"]
    rows = braille.strip(e.samples, 40, 2)
    labels = render.beat_row(e.beats, e.end_index, len(e.samples), 40).plain
    spike_cells = sorted({i for r in rows for i, c in enumerate(r) if (ord(c) - 0x2800) & 0x09})  # top dot row
    label_cells = [i for i, c in enumerate(labels) if c != " "]
    assert label_cells == spike_cells and labels[label_cells[3]] == "V"


def test_old_readings_are_dimmed_with_their_age_never_shown_as_live() -> None:
    room = _guest_room()
    g = room.guests["A1"]
    fresh = render.tile(g, 40, 8, 1.0, False).plain.split("\n")[1]
    assert "HR 131 " in fresh and "(" not in fresh.split("BP")[0]
    # the daemon still publishes every second, but the oximeter/ECG values stopped updating 5 s ago
    old = vitals("A1", hr=131, qtc={"value": 471, "age_s": 45, "unit": "ms"})
    old["vitals"]["hr"]["age_s"] = old["vitals"]["spo2"]["age_s"] = 5.0
    room.apply(f"vigil/{ROOM}/guest/A1/vitals", old, 10.0)
    nums = render.tile(g, 40, 8, 10.0, False).plain.split("\n")
    assert "HR 131(5s)" in nums[1] and "SpO2 97(5s)" in nums[1]
    assert "QTc 471 Δ+31(45s)" in nums[2]
    compact = render.tile(g, 19, 3, 10.0, False).plain.split("\n")[1]
    assert compact.startswith("HR131? S97?")
    big = render.tile(g, 40, 10, 10.0, False, large=True).plain
    assert "5s old" in big
