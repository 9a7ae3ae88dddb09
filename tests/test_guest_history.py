"""Per-guest session history (per-minute trends, recent alarm events) and how a late dashboard seeds from it."""

from __future__ import annotations

import pytest

from vigil.edge.history import STEP_S, GuestHistory
from vigil.tui.model import RoomView

ROOM = "r1"
T0 = 1_700_000_040.0  # a minute boundary


def _v(hr: float | None = None, spo2: float | None = None, sbp: float | None = None, sbp_age: float = 0.0) -> dict:
    out: dict = {}
    if hr is not None:
        out["hr"] = {"value": hr, "age_s": 0.5}
    if spo2 is not None:
        out["spo2"] = {"value": spo2, "age_s": 0.5}
    if sbp is not None:
        out["sbp"] = {"value": sbp, "age_s": sbp_age}
    return out


def _event(cond: str, event: str, wall: float, **detail: object) -> dict:
    return {"guest": "A1", "condition": cond, "priority": "high", "event": event, "state": "active",
            "t_mono": 0.0, "wall": wall, "operator": None, "reason": "", "value": None, "detail": dict(detail)}


def test_minutes_close_with_the_median_and_old_cuff_readings_are_not_repeated() -> None:
    h = GuestHistory()
    closed = [h.add_vitals(T0 + s, _v(hr=60 + (s % 3), sbp=120, sbp_age=s)) for s in range(0, 120)]
    assert closed.count(True) == 1 and closed[60]  # the first sample of the second minute closes the first
    assert list(h.trends["hr"]) == [(T0 + STEP_S / 2, 61.0)]
    assert list(h.trends["sbp"]) == [(T0 + STEP_S / 2, 120.0)]  # only while younger than a minute
    h.add_vitals(T0 + 120, _v(hr=90))
    assert [v for _, v in h.trends["hr"]] == [61.0, 61.0]
    assert len(h.trends["sbp"]) == 1  # minute 2 had only readings older than a minute
    assert h.trends["spo2"] == type(h.trends["spo2"])()  # never measured: no points


def test_a_backward_clock_step_restarts_the_series_instead_of_interleaving_it() -> None:
    h = GuestHistory()
    for s in range(0, 180, 5):
        h.add_vitals(T0 + s, _v(hr=70))
    h.add_vitals(T0 - 3600, _v(hr=80))
    h.add_vitals(T0 - 3600 + 60, _v(hr=80))
    ts = [t for t, _ in h.trends["hr"]]
    assert ts == sorted(ts) and ts[-1] < T0  # strictly increasing after the step


def test_history_is_bounded() -> None:
    h = GuestHistory(keep_minutes=10, keep_events=5)
    for m in range(30):
        h.add_vitals(T0 + 60 * m, _v(hr=70))
        h.add_event(_event("hr_high", "raised", T0 + 60 * m))
    p = h.payload("A1", T0 + 1800)
    assert len(p["trends"]["hr"]) == 10 and len(p["events"]) == 5
    assert p["step_s"] == STEP_S and p["events"][-1]["wall"] == T0 + 60 * 29


def test_a_late_dashboard_prepends_the_retained_history_once_without_duplicates() -> None:
    h = GuestHistory()
    for s in range(0, 600, 1):
        h.add_vitals(T0 + s, _v(hr=70 + s // 60))
    h.add_event(_event("vt", "raised", T0 + 100))
    h.add_event(_event("vt", "escalated", T0 + 130, contact="Dr A", step="on_call", channel="cloud",
                       outcome="sent"))
    h.add_event(_event("vt", "acknowledged", T0 + 590))
    retained = {"v": 1, **h.payload("A1", T0 + 600)}

    room = RoomView(ROOM)
    # the dashboard starts at T0+590: one live event and one live vitals message before the retained history
    room.apply(f"vigil/{ROOM}/alarms/events", _event("vt", "acknowledged", T0 + 590), now=1.0)
    room.apply(f"vigil/{ROOM}/guest/A1/vitals", {"v": 1, "mat": "A1", "t": T0 + 601, "vitals": _v(hr=99)}, now=1.0)
    room.apply(f"vigil/{ROOM}/guest/A1/history", retained, now=1.1)
    g = room.guests["A1"]
    hr = list(g.trends["hr"])
    assert hr[-1][1] == 99 and [v for _, v in hr[:-1]] == [70.0 + m for m in range(9)]
    assert [t for t, _ in hr] == sorted(t for t, _ in hr)
    assert [(e.condition, e.event) for e in g.history] == [("vt", "raised"), ("vt", "escalated"),
                                                           ("vt", "acknowledged")]  # not twice
    assert room.escalation_stage("A1", "vt") == "on_call Dr A via cloud: sent"
    # a later retained update (every minute) does not add anything again
    room.apply(f"vigil/{ROOM}/guest/A1/history", retained, now=60.0)
    assert len(g.history) == 3 and len(g.trends["hr"]) == len(hr)


@pytest.mark.parametrize("bad", [{"trends": {"hr": [["x", 1]]}}, {"events": [{"guest": "A1"}]}, {"trends": 5}])
def test_a_malformed_history_message_is_ignored(bad: dict) -> None:
    room = RoomView(ROOM)
    assert room.apply(f"vigil/{ROOM}/guest/A1/history", {"v": 1, **bad}, now=0.0) is None
    g = room.guest("A1")
    assert list(g.trends["hr"]) == [] and not g.seeded  # a later good message still seeds
    good = {"v": 1, "trends": {"hr": [[T0, 70.0]]}, "events": []}
    assert room.apply(f"vigil/{ROOM}/guest/A1/history", good, now=1.0) == "A1"
    assert list(g.trends["hr"]) == [(T0, 70.0)]
