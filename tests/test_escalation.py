"""Escalation ladder timing and channel fallback with the loopback Twilio server and a pty GSM modem."""

from __future__ import annotations

import pytest

from vigil.alarms.audit import MemoryAudit
from vigil.alarms.cloud_sms import TwilioSender
from vigil.alarms.engine import AlarmEngine
from vigil.alarms.escalation import Escalator
from vigil.alarms.gsm import GsmSender
from vigil.clock import SimulatedClock
from vigil.config import ModemSettings, TwilioSettings, parse_config
from vigil.model import (
    AlarmEvent,
    AlarmState,
    Metric,
    NumericReading,
    RhythmEpisode,
    TechnicalEvent,
    TechnicalKind,
)
from vigil.testing.gsm_modem import SimulatedModem
from vigil.testing.twilio_server import TwilioFault, TwilioServer

CFG = """
[site]
name = "t"
room = "r1"

[escalation]
min_interval_per_contact_s = 60

[[escalation.contacts]]
name = "oncall1"
role = "on_call"
phone = "+41790000001"

[[escalation.contacts]]
name = "backup1"
role = "backup"
phone = "+41790000002"

[[guests]]
mat = "m01"
name = "G"

[[operators]]
name = "bob"
"""

ON_CALL, BACKUP = "+41790000001", "+41790000002"


class Rig:
    def __init__(self, tw: TwilioServer | None, modem: SimulatedModem | None, online=True, timeout_s=2.0,
                 ca_file=None):
        self.cfg = parse_config(CFG)
        self.clock = SimulatedClock()
        self.events: list[AlarmEvent] = []
        self.audit = MemoryAudit()
        self.channel_states: list[tuple[bool, str]] = []
        self.engine = AlarmEngine(self.cfg, self.clock, self._on_event, audit=self.audit)
        cloud = None
        if tw is not None:
            ts = TwilioSettings(base_url=tw.base_url, account_sid=tw.account_sid, from_number="+41780000000",
                                auth_token_file="unused", timeout_s=timeout_s)
            cloud = TwilioSender(ts, tw.auth_token, sleep=lambda s: None, ca_file=ca_file)
        gsm = None
        if modem is not None:
            gsm = GsmSender(ModemSettings(port=modem.port, timeout_s=1.0), command_timeout_s=0.5)
        self.esc = Escalator(self.cfg, self.clock, self.events.append, cloud=cloud, gsm=gsm,
                             online=lambda: online, on_channel_state=self._on_channel, audit=self.audit)

    def _on_event(self, ev: AlarmEvent) -> None:
        self.events.append(ev)
        self.esc.on_event(ev)

    def _on_channel(self, ok: bool, reason: str) -> None:
        self.channel_states.append((ok, reason))
        self.engine.on_technical(None, TechnicalEvent(TechnicalKind.ESCALATION_CHANNEL_FAILED, not ok,
                                                      self.clock.monotonic(), detail=reason[:80]))

    def run_to(self, t: float, step: float = 1.0) -> None:
        while self.clock.monotonic() + step <= t + 1e-9:
            self.clock.advance(step)
            self.engine.tick()
            self.esc.tick()
        assert self.esc.wait_idle(20)

    def escalations(self):
        return [e for e in self.events if e.event == "escalated"]


@pytest.fixture
def tw():
    with TwilioServer() as server:
        yield server


def test_high_ladder_on_call_at_30s_backup_at_90s(tw):
    rig = Rig(tw, None)
    rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
    rig.run_to(29)
    assert tw.twilio.messages == []
    rig.run_to(30)
    assert [m["to"] for m in tw.twilio.messages] == [ON_CALL]
    body = tw.twilio.messages[0]["body"]
    assert "HIGH vf mat m01" in body and "G" not in body.split("VIGIL")[0]
    esc = rig.escalations()
    assert len(esc) == 1 and esc[0].detail["outcome"] == "sent" and esc[0].detail["channel"] == "cloud"
    assert esc[0].t_mono == pytest.approx(30.0) and esc[0].detail["message_id"].startswith("SM")
    rig.run_to(89)
    assert len(tw.twilio.messages) == 1
    rig.run_to(90)
    assert [m["to"] for m in tw.twilio.messages] == [ON_CALL, BACKUP]
    rig.run_to(400)
    assert len(tw.twilio.messages) == 2  # de-duplicated: each step once
    assert "alarm.escalated" in rig.audit.actions()
    rig.esc.close()


def test_ack_before_timer_stops_ladder(tw):
    rig = Rig(tw, None)
    rig.engine.on_analysis("m01", RhythmEpisode("VT", 0, None), 0.0)
    rig.run_to(20)
    assert rig.engine.command({"op": "ack", "operator": "bob", "guest": "m01"}).ok
    rig.run_to(200)
    assert tw.twilio.messages == [] and rig.escalations() == []
    rig.esc.close()


def test_medium_ladder_120_300(tw):
    rig = Rig(tw, None)
    rig.engine.on_reading("m01", NumericReading("x", Metric.SPO2, 88, 0, 0))
    rig.run_to(6 + 119, step=1.0)  # 6 s condition delay, then 120 s
    assert tw.twilio.messages == []
    rig.run_to(126)
    assert [m["to"] for m in tw.twilio.messages] == [ON_CALL]
    rig.run_to(306)
    assert [m["to"] for m in tw.twilio.messages] == [ON_CALL, BACKUP]
    rig.esc.close()


def test_pause_suspends_and_resounding_restarts_timer(tw):
    rig = Rig(tw, None)
    rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
    rig.run_to(10)
    rig.engine.command({"op": "pause", "operator": "bob", "guest": "m01"})
    rig.run_to(129)  # pause of 120 s ends at 130
    assert tw.twilio.messages == []
    rig.run_to(159)
    assert tw.twilio.messages == []
    rig.run_to(160)  # 30 s after re-sounding
    assert len(tw.twilio.messages) == 1
    rig.esc.close()


def test_latched_alarm_keeps_escalating(tw):
    rig = Rig(tw, None)
    rig.engine.on_analysis("m01", RhythmEpisode("ASYSTOLE", 0, None), 0.0)
    rig.run_to(8)
    rig.engine.on_analysis("m01", RhythmEpisode("ASYSTOLE", 0, 2000), 0.0)
    assert rig.engine.state("m01", "asystole") is AlarmState.LATCHED
    rig.run_to(30)
    assert len(tw.twilio.messages) == 1
    rig.esc.close()


def test_cloud_rejects_then_gsm_delivers(tw):
    with SimulatedModem("ok") as modem:
        rig = Rig(tw, modem)
        tw.twilio.script(TwilioFault.error(400, 21614))
        rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
        rig.run_to(30)
        esc = rig.escalations()
        assert [(e.detail["channel"], e.detail["outcome"]) for e in esc] == [("cloud", "rejected"), ("gsm", "sent")]
        assert esc[0].detail["channel_detail"]["code"] == 21614
        assert modem.messages and modem.messages[0][0] == ON_CALL
        assert rig.channel_states == []  # the message got through
        rig.esc.close()


def test_auth_failure_falls_back_to_gsm(tw):
    with SimulatedModem("ok") as modem:
        rig = Rig(tw, modem)
        rig.esc.cloud.session.auth = (tw.account_sid, "wrong-token")
        rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
        rig.run_to(30)
        assert [(e.detail["channel"], e.detail["outcome"]) for e in rig.escalations()] == [
            ("cloud", "auth_failed"), ("gsm", "sent")]
        rig.esc.close()


def test_offline_goes_straight_to_gsm(tw):
    with SimulatedModem("ok") as modem:
        rig = Rig(tw, modem, online=False)
        rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
        rig.run_to(30)
        assert tw.posts() == [] and len(modem.messages) == 1
        rig.esc.close()


def test_every_channel_failing_raises_technical_alarm_without_crash(tw):
    tw.server.down()  # connection refused
    rig = Rig(tw, None)
    rig.esc.gsm = GsmSender(ModemSettings(port="/dev/absent-modem", timeout_s=1))
    rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
    rig.run_to(31)
    outcomes = [(e.detail["channel"], e.detail["outcome"]) for e in rig.escalations()]
    assert outcomes == [("cloud", "unavailable"), ("gsm", "unavailable")]
    assert rig.channel_states and rig.channel_states[0][0] is False
    st = rig.engine.state("_system", "escalation_channel_failed")
    assert st is AlarmState.ACTIVE
    rig.esc.close()


def test_ambiguous_timeout_checks_before_resend(tw):
    rig = Rig(tw, None, timeout_s=0.5)
    tw.twilio.script(TwilioFault.slow(1.5, processed=True))  # created, answer arrives after the client gave up
    rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
    rig.run_to(30)
    esc = rig.escalations()
    assert [e.detail["outcome"] for e in esc] == ["sent_verified"]
    assert len(tw.twilio.messages) == 1 and tw.twilio.duplicates() == []
    assert [r["method"] for r in tw.twilio.requests] == ["POST", "GET"]
    rig.esc.close()


def test_5xx_not_processed_is_resent_once(tw):
    rig = Rig(tw, None)
    tw.twilio.script(TwilioFault.server_error(503, processed=False))
    rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
    rig.run_to(30)
    assert [r["method"] for r in tw.twilio.requests] == ["POST", "GET", "POST"]
    assert len(tw.twilio.messages) == 1
    assert rig.escalations()[0].detail["attempts"] == 2
    rig.esc.close()


def test_5xx_but_processed_is_not_duplicated(tw):
    rig = Rig(tw, None)
    tw.twilio.script(TwilioFault.server_error(500, processed=True))
    rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
    rig.run_to(30)
    assert len(tw.twilio.messages) == 1 and tw.twilio.duplicates() == []
    assert rig.escalations()[0].detail["outcome"] == "sent_verified"
    rig.esc.close()


def test_429_retry_after_then_sent(tw):
    waits: list[float] = []
    rig = Rig(tw, None)
    rig.esc.cloud._sleep = waits.append
    tw.twilio.script(TwilioFault.rate_limited(2), TwilioFault.rate_limited(3))
    rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
    rig.run_to(30)
    assert waits == [2.0, 3.0]
    assert [r["outcome"] for r in tw.posts()] == [429, 429, 201]
    assert rig.escalations()[0].detail["outcome"] == "sent"
    rig.esc.close()


def test_rate_limit_per_contact_merges_messages(tw):
    rig = Rig(tw, None)
    rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
    rig.run_to(10)
    rig.engine.on_analysis("m01", RhythmEpisode("ASYSTOLE", 0, None), 0.0)
    rig.run_to(30)  # VF on-call SMS
    rig.run_to(40)  # asystole on-call due, but < 60 s since the last message: held
    assert len(tw.twilio.messages) == 1
    held = [e for e in rig.escalations() if e.detail["outcome"] == "rate_limited_held"]
    assert len(held) == 1 and held[0].condition == "asystole"
    rig.run_to(90)  # at 90: VF backup (other contact) and the held on-call message (60 s after the first)
    to_oncall = [m for m in tw.twilio.messages if m["to"] == ON_CALL]
    assert len(to_oncall) == 2 and "asystole" in to_oncall[1]["body"]
    rig.esc.close()


def test_tls_with_local_ca():
    with TwilioServer(tls=True) as tw:
        rig = Rig(tw, None, ca_file=str(tw.ca_file))
        assert tw.base_url.startswith("https://")
        rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
        rig.run_to(30)
        assert rig.escalations()[0].detail["outcome"] == "sent" and len(tw.twilio.messages) == 1
        rig.esc.close()
    with TwilioServer(tls=True) as tw:  # without trusting the CA the channel is unavailable, never crashes
        rig = Rig(tw, None)
        rig.engine.on_analysis("m01", RhythmEpisode("VF", 0, None), 0.0)
        rig.run_to(30)
        e = rig.escalations()[0]
        assert e.detail["outcome"] == "unavailable" and "TLS" in e.detail["error"]
        rig.esc.close()
