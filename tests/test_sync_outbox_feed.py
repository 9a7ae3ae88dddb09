"""The daemon's outbox feed: what is queued for booking, FHIR and e-mail, at what cadence (real store)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vigil.clock import SimulatedClock
from vigil.config import parse_config
from vigil.edge.pipeline import Pipeline
from vigil.model import AlarmEvent, AlarmState, ChannelKind, Metric, NumericReading, Priority, SampleBlock
from vigil.store import RecordStore
from vigil.sync import fhir_mapping as fm
from vigil.sync.outbox_feed import OutboxFeed
from vigil.sync.roster import parse_roster

CONFIG = """
[site]
name = "t"
room = "t1"
[[devices]]
id = "ecg1"
profile = "polar-h10"
address = "AA:BB:CC:DD:EE:FF"
[[devices]]
id = "ox1"
profile = "cms50d"
port = "/dev/null"
[[guests]]
mat = "G1"
name = "Config Name"
devices = ["ecg1", "ox1"]
[sync.booking]
url = "http://127.0.0.1:1/v1/events"
secret_file = "b.secret"
[sync.fhir]
base_url = "http://127.0.0.1:1/fhir"
[sync.sendgrid]
base_url = "http://127.0.0.1:1"
api_key_file = "sg.key"
from_email = "vigil@example.org"
"""

ROSTER = {"v": 1, "room": "t1", "session_id": "B-7",
          "guests": [{"id": "P-100", "mat": "G1", "display_name": "Roster Name", "devices": ["ecg1", "ox1"],
                      "responsible_clinician_email": "doc@example.org"}]}


def _rows(store: RecordStore, dest: str) -> list[Any]:
    return list(store.claim(dest, 100_000, now=2e9, lease_s=0.0))


def _run(tmp_path: Path, seconds: int, alarm_at: float | None = None, roster: Any = None,
         cfg_text: str = CONFIG) -> tuple[RecordStore, OutboxFeed, SimulatedClock]:
    cfg = parse_config(cfg_text, tmp_path / "config.toml")
    clock = SimulatedClock()
    store = RecordStore.open(tmp_path / "vigil.db")

    def submit(method: str, *a: Any, **k: Any) -> bool:
        getattr(store, method)(*a, **k)
        return True

    pipe = Pipeline(cfg, clock, engine=False, analyzer_factory=False)
    feed = OutboxFeed(cfg, clock, submit, "S1", pipeline=pipe, roster=lambda: roster)
    pipe.add_sink(feed)
    feed.start()
    seq = 0
    for s in range(seconds):
        t = clock.monotonic()
        hr = 60.0 + s % 12  # 60..71 over each minute: the minute median is 65.5
        pipe.feed("ecg1", NumericReading("ecg1", Metric.HR, hr, t, clock.wall()))
        pipe.feed("ox1", NumericReading("ox1", Metric.SPO2, 99.0 if s % 12 == 5 else 95.0, t, clock.wall()))
        pipe.feed("ecg1", SampleBlock("ecg1", "ecg", ChannelKind.ECG, 130.0, "uV", 1.0, seq,
                                      np.full(130, s, dtype=np.int32), t, clock.wall()))
        seq += 130
        if alarm_at is not None and s == alarm_at:
            feed.alarm(AlarmEvent("G1", "hr_high", Priority.MEDIUM, "raised", AlarmState.ACTIVE, t, clock.wall()))
        clock.advance(1.0)
        feed.tick()
    return store, feed, clock


def test_booking_gets_vitals_every_5_s_and_fhir_one_window_per_minute(tmp_path: Path) -> None:
    store, feed, clock = _run(tmp_path, 120, roster=parse_roster(json.dumps(ROSTER)))
    feed.close()
    store.flush()
    booking = _rows(store, "booking")
    types = [r.event_type for r in booking]
    assert types[:2] == ["session.started", "guest.checked_in"] and types[-2:] == ["guest.checked_out", "session.ended"]
    vitals = [r.payload for r in booking if r.event_type == "vitals.summary"]
    assert len(vitals) == 24  # 120 s / 5 s
    walls = [fm.iso(1_700_000_000.0 + 5 * (i + 1)) for i in range(24)]
    assert [v["timestamp"] for v in vitals] == walls
    assert vitals[0]["data"]["guest"] == "P-100" and "Roster Name" not in json.dumps([r.payload for r in booking])
    assert len({r.idempotency_key for r in booking}) == len(booking)
    fhir = _rows(store, "fhir")
    windows = [r.payload for r in fhir if r.event_type == "vitals_window"]
    assert len(windows) == 2 and all(len(w["series"]["hr"]) == 12 for w in windows)
    assert windows[1]["start_wall"] - windows[0]["start_wall"] == 60.0
    obs = fm.resources_for_payload(windows[0])
    for r in obs:
        fm.validate_resource(r)
    by_code = {o["code"]["coding"][0]["code"]: o for o in obs if o["resourceType"] == "Observation"}
    assert set(by_code) == {"8867-4", "2708-6"}
    hr_vals = windows[0]["series"]["hr"]
    assert by_code["8867-4"]["valueQuantity"]["value"] == pytest.approx(float(np.median(hr_vals)))
    assert by_code["2708-6"]["valueQuantity"]["value"] == 95.0  # one 99 % spike does not move the median
    assert by_code["8867-4"]["method"]["text"] == "median of 12 samples taken every 5 s"
    period = by_code["8867-4"]["effectivePeriod"]
    assert period == {"start": fm.iso(windows[0]["start_wall"]), "end": fm.iso(windows[0]["start_wall"] + 60)}
    assert obs[0]["identifier"][0]["value"] == "P-100"  # the Patient is the roster guest
    summary = [r.payload for r in fhir if r.event_type == "summary"]
    assert len(summary) == 1 and "no alarms" in summary[0]["conclusion"]
    mails = _rows(store, "email")
    assert [m.payload["to"] for m in mails] == [["doc@example.org"]]
    store.close()


def test_an_alarm_gets_a_10_s_strip_centred_on_it_and_a_booking_event(tmp_path: Path) -> None:
    store, feed, _ = _run(tmp_path, 40, alarm_at=20)
    feed.close()
    store.flush()
    strips = [r.payload for r in _rows(store, "fhir") if r.event_type == "ecg_strip"]
    assert len(strips) == 1
    strip = strips[0]
    assert strip["reason"] == "alarm hr_high" and len(strip["samples_uV"]) == 1300
    # samples hold the second they were recorded in: 5 s before to 5 s after the alarm at s=20
    assert strip["samples_uV"][0] == 16 and strip["samples_uV"][-1] == 25
    alarm_wall = 1_700_000_000.0 + 20
    assert strip["start_wall"] == pytest.approx(alarm_wall - 4.0, abs=1.0)  # block wall = arrival of its last sample
    obs = fm.resources_for_payload(strip)[-1]
    fm.validate_resource(obs)
    assert obs["code"]["coding"][0]["code"] == "131330" and obs["valueSampledData"]["period"] == pytest.approx(7.692308)
    booking = _rows(store, "booking")
    raised = [r.payload for r in booking if r.event_type == "alarm.raised"]
    assert len(raised) == 1 and raised[0]["data"]["condition"] == "hr_high" and raised[0]["data"]["guest"] == "S1-G1"
    summary = [r.payload for r in _rows(store, "fhir") if r.event_type == "summary"]
    assert "hr_high x1" in summary[0]["conclusion"]
    store.close()


def test_routine_strips_every_15_minutes_and_nothing_for_unconfigured_destinations(tmp_path: Path) -> None:
    text = CONFIG.split("[sync.booking]")[0] + "[sync.fhir]\nbase_url = \"http://127.0.0.1:1/fhir\"\n"
    store, feed, _ = _run(tmp_path, 1900, cfg_text=text)
    store.flush()
    strips = [r.payload for r in _rows(store, "fhir") if r.event_type == "ecg_strip"]
    assert [s["reason"] for s in strips] == ["routine sample", "routine sample"]
    assert math.isclose(strips[1]["start_wall"] - strips[0]["start_wall"], 900.0, abs_tol=1.0)
    assert _rows(store, "booking") == [] and _rows(store, "email") == []
    assert len([r for r in _rows(store, "fhir") if r.event_type == "vitals_window"]) == 1900 // 60
    store.close()


def test_fhir_window_length_follows_the_config(tmp_path: Path) -> None:
    text = CONFIG.replace('base_url = "http://127.0.0.1:1/fhir"', 'base_url = "http://127.0.0.1:1/fhir"\nvitals_window_s = 300')
    store, feed, _ = _run(tmp_path, 600, cfg_text=text)
    store.flush()
    windows = [r.payload for r in _rows(store, "fhir") if r.event_type == "vitals_window"]
    assert [len(w["series"]["hr"]) for w in windows] == [60, 60]
    assert windows[1]["start_wall"] - windows[0]["start_wall"] == 300.0
    obs = fm.resources_for_payload(windows[0])
    hr = next(o for o in obs if o.get("code", {}).get("coding", [{}])[0].get("code") == "8867-4")
    assert hr["method"]["text"] == "median of 60 samples taken every 5 s"
    store.close()


def test_a_cuff_reading_counts_once_in_the_emr_but_stays_on_booking_summaries(tmp_path: Path) -> None:
    cfg = parse_config(CONFIG, tmp_path / "config.toml")
    clock = SimulatedClock()
    store = RecordStore.open(tmp_path / "vigil.db")

    def submit(method: str, *a: Any, **k: Any) -> bool:
        getattr(store, method)(*a, **k)
        return True

    pipe = Pipeline(cfg, clock, engine=False, analyzer_factory=False)
    feed = OutboxFeed(cfg, clock, submit, "S1", pipeline=pipe)
    pipe.add_sink(feed)
    for s in range(130):
        if s == 3:
            for m, v in ((Metric.SBP, 131.0), (Metric.DBP, 84.0)):
                pipe.feed("ox1", NumericReading("ox1", m, v, clock.monotonic(), clock.wall()))
        pipe.feed("ecg1", NumericReading("ecg1", Metric.HR, 70.0, clock.monotonic(), clock.wall()))
        clock.advance(1.0)
        feed.tick()
    store.flush()
    windows = [r.payload for r in _rows(store, "fhir") if r.event_type == "vitals_window"]
    assert len(windows) == 2
    assert [x for x in windows[0]["series"]["sbp"] if x is not None] == [131.0] and "sbp" not in windows[1]["series"]
    bp = [o for o in fm.resources_for_payload(windows[0]) if o.get("code", {}).get("coding", [{}])[0].get("code") == "85354-9"]
    assert len(bp) == 1 and bp[0]["method"]["text"] == "single sample (samples taken every 5 s)"
    summaries = [r.payload["data"] for r in _rows(store, "booking") if r.event_type == "vitals.summary"]
    assert all(v["sbp"] == 131.0 and v["dbp"] == 84.0 for v in summaries)  # within 15 min of the reading
    store.close()
