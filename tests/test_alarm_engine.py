"""Alarm engine state machine under a simulated clock."""

from __future__ import annotations

import os
import time

import pytest

from vigil.alarms.audit import MemoryAudit
from vigil.alarms.commands import sign
from vigil.alarms.engine import AlarmEngine
from vigil.clock import SimulatedClock
from vigil.config import parse_config
from vigil.errors import ConfigError
from vigil.model import (
    AlarmEvent,
    AlarmState,
    Measurement,
    Metric,
    NumericReading,
    Priority,
    QualityReport,
    RhythmEpisode,
    TechnicalEvent,
    TechnicalKind,
)

BASE = """
[site]
name = "test"
room = "r1"

[alarms]
hr_delay_s = 4

[[devices]]
id = "ecg1"
profile = "polar-h10"

[[devices]]
id = "ox1"
profile = "cms50d"

[[guests]]
mat = "m01"
name = "Guest One"
devices = ["ecg1", "ox1"]
baseline_qtc_ms = 420

[[guests]]
mat = "m02"
name = "Guest Two"

[[operators]]
name = "anna"
may_alarm_off = true

[[operators]]
name = "bob"

[[operators]]
name = "carl"
secret_file = "carl.key"
"""


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "carl.key").write_bytes(b"s3cret-carl")
    os.chmod(tmp_path / "carl.key", 0o600)
    cfgfile = tmp_path / "config.toml"
    cfgfile.write_text(BASE)
    from vigil.config import load_config
    cfg = load_config(cfgfile)
    clock = SimulatedClock()
    events: list[AlarmEvent] = []
    audit = MemoryAudit()
    eng = AlarmEngine(cfg, clock, events.append, audit=audit)
    return eng, clock, events, audit


def hr(v: float) -> Measurement:
    return Measurement(Metric.HR, v, 0)


def feed_hr(eng, clock, value, seconds, step=1.0):
    t = 0.0
    while t < seconds:
        eng.on_analysis("m01", hr(value), clock.monotonic())
        eng.tick()
        clock.advance(step)
        t += step


def names(events, cid=None):
    return [(e.condition, e.event) for e in events if cid is None or e.condition == cid]


def test_hr_delay_then_raise_and_clear(setup):
    eng, clock, events, _ = setup
    eng.on_analysis("m01", hr(130), 0.0)  # above warning 100 and critical 120
    clock.advance(3.9)
    eng.tick()
    assert events == []  # 4 s condition delay not elapsed
    clock.advance(0.1)
    eng.tick()
    assert sorted(names(events)) == [("hr_high", "raised"), ("hr_high_critical", "raised")]
    ev = next(e for e in events if e.condition == "hr_high_critical")
    assert ev.priority is Priority.HIGH and ev.state is AlarmState.ACTIVE and ev.value == 130
    assert ev.t_mono == pytest.approx(4.0)
    act = eng.active("m01")
    assert [a.condition for a in act] == ["hr_high_critical", "hr_high"]  # ordered by priority
    assert eng.sounding_priority() is Priority.HIGH
    events.clear()
    eng.on_analysis("m01", hr(110), 0.0)  # critical ends, warning stays
    assert names(events) == [("hr_high_critical", "cleared")]
    assert eng.state("m01", "hr_high_critical") is AlarmState.INACTIVE  # HR limits do not latch
    assert eng.sounding_priority() is Priority.MEDIUM


def test_transient_shorter_than_delay_does_not_alarm(setup):
    eng, clock, events, _ = setup
    eng.on_analysis("m01", hr(35), 0.0)
    clock.advance(3.0)
    eng.tick()
    eng.on_analysis("m01", hr(70), 0.0)
    clock.advance(10.0)
    eng.tick()
    assert events == []


def test_latching_asystole_and_ack(setup):
    eng, clock, events, audit = setup
    eng.on_analysis("m01", RhythmEpisode("ASYSTOLE", 0, None), 0.0)
    assert names(events) == [("asystole", "raised")]
    clock.advance(6)
    eng.on_analysis("m01", RhythmEpisode("ASYSTOLE", 0, 1500), 0.0)
    assert names(events)[1:] == [("asystole", "cleared"), ("asystole", "latched")]
    assert eng.state("m01", "asystole") is AlarmState.LATCHED
    assert eng.sounding_priority() is Priority.HIGH  # latched still sounds
    events.clear()
    r = eng.command({"op": "ack", "operator": "bob", "guest": "m01"})
    assert r.ok and r.affected == ("asystole",)
    assert names(events) == [("asystole", "reset")] and events[0].operator == "bob"
    assert eng.state("m01", "asystole") is AlarmState.INACTIVE
    assert "command.ack" in audit.actions()


def test_ack_of_present_alarm_then_clear_does_not_latch(setup):
    eng, clock, events, _ = setup
    eng.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
    eng.command({"op": "ack", "operator": "bob", "guest": "m01", "condition": "vf"})
    assert eng.state("m01", "vf") is AlarmState.ACKNOWLEDGED
    assert eng.sounding_priority() is None
    eng.on_analysis("m01", RhythmEpisode("VF", 0, 10), 0.0)
    assert names(events)[-1] == ("vf", "cleared")
    assert eng.state("m01", "vf") is AlarmState.INACTIVE


def test_pause_expiry_resounds_and_high_breaks_through(setup):
    eng, clock, events, _ = setup
    eng.on_reading("m01", NumericReading("ox1", Metric.SPO2, 88, 0, 0))  # medium, 6 s delay
    clock.advance(6)
    eng.tick()
    assert eng.state("m01", "spo2_low") is AlarmState.ACTIVE
    r = eng.command({"op": "pause", "operator": "bob", "guest": "m01"})
    assert r.ok and r.affected == ("spo2_low",)
    assert eng.state("m01", "spo2_low") is AlarmState.AUDIO_PAUSED
    assert eng.sounding_priority() is None
    # another medium condition during the pause stays paused
    eng.on_reading("m01", NumericReading("ox1", Metric.SBP, 160, 0, 0))
    assert eng.state("m01", "sbp_high") is AlarmState.AUDIO_PAUSED
    # a new higher-priority condition breaks through
    events.clear()
    eng.on_analysis("m01", RhythmEpisode("VT", 0, None), 0.0)
    raised = [e for e in events if e.condition == "vt"][0]
    assert raised.state is AlarmState.ACTIVE and raised.detail.get("break_through") is True
    assert eng.sounding_priority() is Priority.HIGH
    # expiry after 120 s re-sounds the paused ones
    clock.advance(119)
    eng.tick()
    assert eng.state("m01", "spo2_low") is AlarmState.AUDIO_PAUSED
    clock.advance(1)
    eng.tick()
    assert ("spo2_low", "resumed") in names(events) and eng.state("m01", "spo2_low") is AlarmState.ACTIVE


def test_alarm_off_needs_permission_and_reminds(setup):
    eng, clock, events, audit = setup
    r = eng.command({"op": "off", "operator": "bob", "guest": "m01", "condition": "spo2_low"})
    assert not r.ok and "may not" in r.reason
    assert audit.rows[-1][1] == "command.refused"
    r = eng.command({"op": "off", "operator": "anna", "guest": "m01", "condition": "spo2_low"})
    assert r.ok
    eng.on_reading("m01", NumericReading("ox1", Metric.SPO2, 80, 0, 0))
    clock.advance(6)
    eng.tick()
    assert eng.state("m01", "spo2_low") is AlarmState.ALARM_OFF
    assert eng.state("m01", "spo2_low_critical") is AlarmState.ACTIVE  # only the named condition is off
    events.clear()
    clock.advance(600)
    eng.tick()
    assert names(events) == [("spo2_low", "reminder")]
    clock.advance(600)
    eng.tick()
    assert names(events).count(("spo2_low", "reminder")) == 2
    eng.command({"op": "resume", "operator": "bob", "guest": "m01", "condition": "spo2_low"})
    assert eng.state("m01", "spo2_low") is AlarmState.ACTIVE


def test_commands_refused_and_audited(setup):
    eng, clock, events, audit = setup
    bad = [
        ("not a dict", "malformed"),
        ({"op": "ack", "guest": "m01"}, "missing operator"),
        ({"op": "ack", "operator": "mallory", "guest": "m01"}, "unknown operator"),
        ({"op": "explode", "operator": "bob", "guest": "m01"}, "malformed"),
        ({"op": "ack", "operator": "bob", "guest": "m99"}, "unknown guest"),
        ({"op": "ack", "operator": "bob", "guest": "m01", "condition": "nope"}, "unknown condition"),
        ({"op": "ack", "operator": "carl", "guest": "m01"}, "unsigned"),
        ({"op": "pause", "operator": "bob", "guest": "m01", "duration_s": 1e9}, "duration_s"),
    ]
    for cmd, why in bad:
        r = eng.command(cmd)
        assert not r.ok and why in r.reason, (cmd, r.reason)
    refused = [row for row in audit.rows if row[1] == "command.refused"]
    assert len(refused) == len(bad)
    assert refused[2][0] == "mallory" and refused[2][2]["reason"] == "unknown operator"


def test_signed_commands_freshness_and_replay(setup):
    eng, clock, events, audit = setup
    eng.on_analysis("m01", RhythmEpisode("ASYSTOLE", 0, None), 0.0)
    now = clock.wall()
    good = sign({"op": "ack", "operator": "carl", "guest": "m01", "ts": now, "nonce": "abcdef0123"}, b"s3cret-carl")
    forged = sign({"op": "ack", "operator": "carl", "guest": "m01", "ts": now, "nonce": "abcdef0124"}, b"wrong")
    assert eng.command(forged).reason == "bad signature"
    tampered = dict(good, guest="m02")
    assert eng.command(tampered).reason == "bad signature"
    stale = sign({"op": "ack", "operator": "carl", "guest": "m01", "ts": now - 120, "nonce": "abcdef0125"},
                 b"s3cret-carl")
    assert "stale" in eng.command(stale).reason
    assert eng.state("m01", "asystole") is AlarmState.ACTIVE
    r = eng.command(good)
    assert r.ok and eng.state("m01", "asystole") is AlarmState.ACKNOWLEDGED
    assert eng.command(good).reason == "replayed nonce"


def test_fusion_pulsatile_wave_vetoes_asystole(setup):
    eng, clock, events, audit = setup
    eng.on_waveform_pulsatile("m01", "pleth", True, 0.0)
    eng.on_analysis("m01", RhythmEpisode("ASYSTOLE", 0, None), 0.0)
    assert events == []
    assert "alarm.vetoed" in audit.actions()
    clock.advance(1)
    eng.on_waveform_pulsatile("m01", "pleth", False, 1.0)  # pulse gone too: real asystole
    assert names(events) == [("asystole", "raised")]


def test_fusion_stale_pulse_report_stops_vetoing(setup):
    eng, clock, events, _ = setup
    eng.on_waveform_pulsatile("m01", "abp", True, 0.0)
    eng.on_analysis("m01", RhythmEpisode("ASYSTOLE", 0, None), 0.0)
    clock.advance(4.9)
    eng.tick()
    assert events == []
    clock.advance(0.2)  # ABP report now older than 5 s: the veto lapses
    eng.tick()
    assert names(events) == [("asystole", "raised")]


def test_noisy_ecg_cannot_raise_vt_alone(setup):
    eng, clock, events, _ = setup
    for _ in range(5):
        eng.on_analysis("m01", QualityReport(0, 0.2, ("noise",)), 0.0)
        clock.advance(1)
    eng.on_analysis("m01", RhythmEpisode("VT", 0, None), 0.0)
    eng.tick()
    assert ("vt", "raised") not in names(events)
    eng.on_waveform_pulsatile("m01", "abp", False, 0.0)  # no pulse: corroborated
    assert ("vt", "raised") in names(events)


def test_clean_ecg_raises_vt(setup):
    eng, clock, events, _ = setup
    for _ in range(5):
        eng.on_analysis("m01", QualityReport(0, 0.95), 0.0)
        clock.advance(1)
    eng.on_analysis("m01", RhythmEpisode("VT", 0, None), 0.0)
    assert names(events) == [("vt", "raised")]


def test_technical_events_per_device_and_system(setup):
    eng, clock, events, _ = setup
    eng.on_technical(None, TechnicalEvent(TechnicalKind.DEVICE_STALE, True, 0.0, device_id="ox1"))
    assert events[-1].guest == "m01" and events[-1].condition == "device_stale"
    eng.on_technical(None, TechnicalEvent(TechnicalKind.BROKER_DOWN, True, 0.0))
    assert events[-1].guest == "_system" and events[-1].priority is Priority.MEDIUM
    eng.on_technical(None, TechnicalEvent(TechnicalKind.DEVICE_STALE, False, 0.0, device_id="ox1"))
    assert names(events)[-1] == ("device_stale", "cleared")


def test_quality_lead_off_and_poor_signal_delay(setup):
    eng, clock, events, _ = setup
    for _ in range(9):
        eng.on_analysis("m01", QualityReport(0, 0.1), 0.0)
        clock.advance(1)
        eng.tick()
    assert ("poor_signal", "raised") not in names(events)
    clock.advance(1)
    eng.tick()
    assert ("poor_signal", "raised") in names(events)
    eng.on_analysis("m01", QualityReport(0, 0.0, ("lead_off",)), 0.0)
    assert ("lead_off", "raised") in names(events)


def test_qtc_rise_over_baseline(setup):
    eng, clock, events, _ = setup
    eng.on_analysis("m01", Measurement(Metric.QTC, 470, 0), 0.0)  # +50 over 420: qtc_high only
    clock.advance(60)
    eng.tick()
    assert names(events) == [("qtc_high", "raised")]
    eng.on_analysis("m01", Measurement(Metric.QTC, 490, 0), 0.0)  # +70 > 60
    clock.advance(60)
    eng.tick()
    assert ("qtc_rise", "raised") in names(events) and ("qtc_critical", "raised") not in names(events)


def test_guest_condition_overrides(tmp_path):
    text = BASE + """
[alarms.conditions.spo2_low]
delay_s = 2.0

[guests.conditions.hr_high]
enabled = false
"""
    # guests.conditions applies to the last [[guests]] table (m02)
    cfg = parse_config(text)
    clock = SimulatedClock()
    events: list[AlarmEvent] = []
    eng = AlarmEngine(cfg, clock, events.append)
    eng.on_analysis("m02", hr(110), 0.0)
    eng.on_reading("m02", NumericReading("x", Metric.SPO2, 88, 0, 0))
    clock.advance(4)
    eng.tick()
    assert names(events) == [("spo2_low", "raised")]


def test_contradictory_or_unsafe_config_refused():
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + "\n[alarms.thresholds.hr]\nwarning_low = 60\nwarning_high = 50\n")
    assert "warning_low" in str(e.value)
    with pytest.raises(ConfigError):
        parse_config(BASE + "\n[alarms.thresholds.hr]\ncritical_high = 110\nwarning_high = 130\n")
    cfg = parse_config(BASE + "\n[alarms.conditions.hr_low]\ndelay_s = 30\n")
    with pytest.raises(ConfigError) as e:
        AlarmEngine(cfg, SimulatedClock(), lambda e: None)
    assert "10" in str(e.value)
    cfg = parse_config(BASE + "\n[alarms.conditions.hr_hgih]\ndelay_s = 3\n")
    with pytest.raises(ConfigError) as e:
        AlarmEngine(cfg, SimulatedClock(), lambda e: None)
    assert "unknown alarm condition 'hr_hgih'" in str(e.value)


def test_consumer_exception_does_not_break_engine(setup):
    eng, clock, _, _ = setup
    eng._emit_cb = lambda ev: (_ for _ in ()).throw(RuntimeError("boom"))
    eng.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
    assert eng.state("m01", "vf") is AlarmState.ACTIVE


def test_tick_cost_many_guests(setup):
    eng, clock, _, _ = setup
    for g in range(20):
        for v in (130, 35):
            eng.on_analysis(f"g{g}", hr(v), 0.0)
    t0 = time.perf_counter()
    for _ in range(100):
        clock.advance(0.1)
        eng.tick()
    assert (time.perf_counter() - t0) / 100 < 0.002


def test_episode_reported_only_when_closed_still_alarms(setup):
    eng, clock, events, _ = setup
    eng.on_analysis("m01", RhythmEpisode("PAUSE", 100, 900), 0.0)
    assert names(events) == [("pause", "raised"), ("pause", "cleared")]
    events.clear()
    eng.on_analysis("m01", RhythmEpisode("VT", 100, 900), 0.0)  # latching: stays latched for ack
    assert names(events) == [("vt", "raised"), ("vt", "cleared"), ("vt", "latched")]
