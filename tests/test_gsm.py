"""GSM modem sender against a simulated modem on a pty and on socket://."""

from __future__ import annotations

import time

import pytest

from vigil.alarms.gsm import GsmSender
from vigil.config import ModemSettings
from vigil.testing.gsm_modem import SimulatedModem

TO = "+41790000001"


def sender(modem: SimulatedModem, timeout_s: float = 1.0) -> GsmSender:
    return GsmSender(ModemSettings(port=modem.port, parity="N", timeout_s=timeout_s), command_timeout_s=0.8)


@pytest.mark.parametrize("transport", ["pty", "socket"])
def test_send_ok(transport):
    with SimulatedModem("ok", transport) as m:
        r = sender(m).send(TO, "VIGIL r1 HIGH asystole mat m01 (ref:abc123)", "abc123")
        assert r.ok and r.outcome == "sent" and r.message_id == "1"
        assert m.messages == [(TO, "VIGIL r1 HIGH asystole mat m01 (ref:abc123)")]
        assert m.commands[:4] == ["AT", "ATE0", "AT+CMGF=1", f'AT+CMGS="{TO}"']
        r2 = sender(m).send(TO, "second", "x")
        assert r2.ok and r2.message_id == "2"


def test_garbage_and_unsolicited_lines_are_skipped():
    with SimulatedModem("garbage") as m:
        r = sender(m).send(TO, "hello", "r")
        assert r.ok and r.message_id == "1" and m.messages == [(TO, "hello")]


def test_cms_error_is_reported_with_meaning():
    with SimulatedModem("cms_error:331") as m:
        r = sender(m).send(TO, "hello", "r")
    assert not r.ok and r.outcome == "modem_error"
    assert r.detail == {"cms_error": 331, "meaning": "no network service"}


def test_cmgs_error_without_prompt():
    with SimulatedModem("cmgs_error") as m:
        r = sender(m).send(TO, "hello", "r")
    assert not r.ok and r.outcome == "modem_error" and "ERROR" in r.error


def test_result_timeout():
    with SimulatedModem("no_result") as m:
        t0 = time.monotonic()
        r = sender(m, timeout_s=1.0).send(TO, "hello", "r")
        dt = time.monotonic() - t0
    assert not r.ok and r.outcome == "timeout" and "1 s" in r.error
    assert 1.0 <= dt < 3.0


def test_slow_result_within_timeout():
    with SimulatedModem("slow:0.5") as m:
        r = sender(m, timeout_s=2.0).send(TO, "hello", "r")
    assert r.ok


@pytest.mark.parametrize("mode", ["silent", "garbage_only"])
def test_silent_or_garbled_modem_times_out(mode):
    with SimulatedModem(mode) as m:
        r = sender(m).send(TO, "hello", "r")
    assert not r.ok and r.outcome == "timeout" and "AT" in r.error


def test_absent_and_unplugged_port():
    r = GsmSender(ModemSettings(port="/dev/nonexistent-modem", timeout_s=1)).send(TO, "x", "r")
    assert not r.ok and r.outcome == "unavailable" and "cannot open" in r.error
    m = SimulatedModem("ok").start()
    port = m.port
    m.unplug()
    r = GsmSender(ModemSettings(port=port, timeout_s=1), command_timeout_s=0.5).send(TO, "x", "r")
    assert not r.ok and r.outcome in ("unavailable", "timeout")


def test_non_gsm7_text_is_sanitised_and_cut():
    with SimulatedModem("ok") as m:
        r = sender(m).send(TO, "Herzfrequenz → hoch " + "x" * 300, "r")
        assert r.ok
        assert len(m.messages[0][1]) == 160 and "→" not in m.messages[0][1]
