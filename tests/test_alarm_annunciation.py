"""Annunciator: engine -> sound player and escalation, failures fed back as technical alarms."""

from __future__ import annotations

import time

from vigil.alarms.annunciation import Annunciator
from vigil.alarms.engine import AlarmEngine
from vigil.alarms.player import make_sink
from vigil.clock import SimulatedClock
from vigil.config import parse_config
from vigil.model import AlarmState, Priority, RhythmEpisode

CFG = '[site]\nname="t"\nroom="r1"\n[[guests]]\nmat="m01"\nname="G"\n[[operators]]\nname="bob"\n'


def _rig(sink_spec):
    cfg = parse_config(CFG)
    clock = SimulatedClock()
    events = []
    eng = AlarmEngine(cfg, clock, lambda e: (events.append(e), ann.alarm(e)))
    ann = Annunciator.from_config(cfg, clock, eng, events.append, sound_sink=make_sink(sink_spec))
    return cfg, clock, eng, ann, events


def test_sound_follows_engine_and_stops_on_ack(tmp_path):
    _, clock, eng, ann, _ = _rig(f"file:{tmp_path}")
    try:
        eng.on_analysis("m01", RhythmEpisode("VF", 0, None))
        ann.tick()
        deadline = time.time() + 5
        while not list(tmp_path.glob("*high.wav")) and time.time() < deadline:
            time.sleep(0.02)
        assert list(tmp_path.glob("*high.wav"))
        eng.command({"op": "ack", "operator": "bob", "guest": "m01"})
        ann.tick()
        assert ann.player._priority is None
    finally:
        ann.close()


def test_no_sound_card_raises_sound_failed_technical_alarm():
    _, clock, eng, ann, events = _rig("aplay:default")
    try:
        eng.on_analysis("m01", RhythmEpisode("VF", 0, None))
        deadline = time.time() + 20
        while eng.state("_system", "sound_failed") is not AlarmState.ACTIVE and time.time() < deadline:
            ann.tick()
            time.sleep(0.05)
        assert eng.state("_system", "sound_failed") is AlarmState.ACTIVE
        ev = [e for e in events if e.condition == "sound_failed"][0]
        assert ev.priority is Priority.MEDIUM and "aplay" in ev.reason
    finally:
        ann.close()


def test_escalation_without_contacts_is_recorded_not_silent(tmp_path):
    _, clock, eng, ann, events = _rig("null")
    try:
        eng.on_analysis("m01", RhythmEpisode("VF", 0, None))
        for _ in range(31):
            clock.advance(1)
            eng.tick()
            ann.tick()
        esc = [e for e in events if e.event == "escalated"]
        assert esc and esc[0].detail["outcome"] == "no_contact"
    finally:
        ann.close()
