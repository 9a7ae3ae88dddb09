"""Booking signatures, SendGrid e-mail and Twilio SMS destinations against loopback servers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from vigil.clock import SimulatedClock, SystemClock
from vigil.store import RecordStore
from vigil.sync.booking import (
    SIGNATURE_HEADER,
    SignatureError,
    make_event,
    sign_header,
    signature,
    verify_header,
)
from vigil.sync.messaging import SendgridDestination, TwilioDestination
from vigil.sync.outcome import make_session
from vigil.sync.worker import SyncWorker
from vigil.testing.booking_server import booking_server
from vigil.testing.loopback import Fault
from vigil.testing.sendgrid_server import sendgrid_server
from vigil.testing.tls import make_ca_and_server
from vigil.testing.twilio_server import TwilioFault, TwilioServer

pytestmark = pytest.mark.timeout(60)


def test_signature_vector_and_tolerance() -> None:
    # protocols.md §6 (Stripe scheme): secret whsec_test_secret, t=1700000000
    body = b'{"id":"evt_1","type":"test.event"}'
    hexsig = "2fe4f62bc798a97f69a72abde85206891cdeee98de89d44d159b3d88b9570b67"
    assert signature(b"whsec_test_secret", body, 1700000000) == hexsig
    header = f"t=1700000000,v1=deadbeef,v1={hexsig}"
    assert verify_header(b"whsec_test_secret", body, header, now=1700000000 + 299) == 1700000000
    with pytest.raises(SignatureError, match="tolerance"):
        verify_header(b"whsec_test_secret", body, header, now=1700000000 + 301)
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify_header(b"whsec_test_secret", body + b" ", header, now=1700000000)
    with pytest.raises(SignatureError, match="missing"):
        verify_header(b"whsec_test_secret", body, None)


def test_wrong_signature_rejected_by_receiver_and_events_kept(tmp_path: Path) -> None:
    with booking_server(b"right") as srv:
        body = b'{"events":[]}'
        r = requests.post(srv.base_url + "/v1/events", data=body,
                          headers={SIGNATURE_HEADER: sign_header(b"wrong", body)}, timeout=5)
        assert r.status_code == 401 and "no v1 signature matches" in r.json()["error"]
        stale = sign_header(b"right", body, int(time.time()) - 400)
        r = requests.post(srv.base_url + "/v1/events", data=body, headers={SIGNATURE_HEADER: stale}, timeout=5)
        assert r.status_code == 401 and "tolerance" in r.json()["error"]
        store = RecordStore.open(tmp_path / "v.db")
        from vigil.sync.booking import BookingDestination

        ev = make_event("session.started", {"session": "S1"}, source="vigil/room1", wall=time.time())
        store.enqueue("booking", ev["type"], ev, ev["id"])
        store.flush()
        w = SyncWorker(store, [BookingDestination(srv.base_url + "/v1/events", b"wrong", session=make_session())],
                       clock=SystemClock())
        assert w.step("booking") == -1
        st = store.outbox_stats()["booking"]
        assert st.pending == 1 and st.dead == 0 and "401" in (st.last_error or "")  # kept for a fixed secret
        assert srv.app.applied == [] and len(srv.app.signature_failures) == 3
        store.close()


def test_booking_over_tls_with_local_ca(tmp_path: Path) -> None:
    tls = make_ca_and_server(tmp_path / "ca")
    other = make_ca_and_server(tmp_path / "other")
    with booking_server(b"s", ssl_context=tls.server_context()) as srv:
        assert srv.base_url.startswith("https://")
        assert requests.get(srv.base_url + "/health", verify=str(tls.ca_cert), timeout=5).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(srv.base_url + "/health", verify=str(other.ca_cert), timeout=5)
        with pytest.raises(requests.exceptions.SSLError):
            make_session().get(srv.base_url + "/health", timeout=5)  # system CAs do not know ours


def _store_with(tmp_path: Path, dest: str, payloads: list[tuple[str, dict]]) -> RecordStore:
    store = RecordStore.open(tmp_path / "v.db")
    for key, p in payloads:
        store.enqueue(dest, "session.summary", p, key)
    store.flush()
    return store


def test_sendgrid_202_with_message_id_only(tmp_path: Path) -> None:
    mail = {"to": ["doc@example.org"], "subject": "Session S1 summary", "text": "HR 60-95, no alarms."}
    store = _store_with(tmp_path, "email", [("m1", mail), ("m2", {**mail, "subject": "S2"})])
    with sendgrid_server("SG.key") as sg:
        dest = SendgridDestination(sg.base_url, "SG.key", "vigil@example.org", session=make_session())
        clock = SimulatedClock(start_wall=time.time())
        w = SyncWorker(store, [dest], clock=clock)
        sg.faults.push(Fault("status", status=202, body=b""))  # 202 but no X-Message-Id: not proven sent
        assert w.step("email") == -1
        sg.faults.push(Fault("status", status=429, retry_after="30"))
        clock.advance(3600)
        assert w.step("email") == -1
        assert w.streams["email"].next_at - clock.monotonic() >= 30  # Retry-After honoured
        clock.advance(3600)
        assert w.step("email") == 1 and w.step("email") == 1
        assert [m["subject"] for m in sg.app.applied] == ["Session S1 summary", "S2"]
        bad = SendgridDestination(sg.base_url, "SG.wrong", "vigil@example.org", session=make_session())
        store.enqueue("email", "x", mail, "m3")
        store.flush()
        w2 = SyncWorker(store, [bad], clock=clock)
        assert w2.step("email") == -1  # 401 keeps the mail (a key problem, not the mail's)
        assert store.outbox_stats()["email"].dead == 0
    store.close()


def test_sms_checks_before_resending_after_ambiguous_failure(tmp_path: Path) -> None:
    msg = {"to": "+15551234567", "body": "Vigil session S1 ended: 2 alarms, all acknowledged."}
    store = _store_with(tmp_path, "sms", [("sms-1", msg), ("sms-2", {**msg, "to": "+1555"}), ("sms-3", msg)])
    with TwilioServer() as tw:
        dest = TwilioDestination(tw.base_url, tw.account_sid, tw.auth_token, "+15550000000",
                                 session=make_session(), timeout_s=0.5)
        clock = SimulatedClock(start_wall=time.time())
        w = SyncWorker(store, [dest], clock=clock)
        tw.twilio.script(TwilioFault.slow(1.5, processed=True))  # Twilio accepts it, we time out
        assert w.step("sms") == -1
        assert len(tw.twilio.messages) == 1
        clock.advance(600)
        assert w.step("sms") == 1  # the lookup finds it: not sent again
        assert dest.skipped_as_sent == 1 and len(tw.twilio.messages) == 1
        clock.advance(600)
        assert w.step("sms") == 1  # invalid To: 400/21211 → dead letter
        dead = store.dead_letters("sms")
        assert len(dead) == 1 and "21211" in (dead[0][4] or "")
        tw.twilio.script(TwilioFault.rate_limited(5))
        assert w.step("sms") == -1
        clock.advance(600)
        assert w.step("sms") == 1
        assert tw.twilio.duplicates() == [] and len(tw.twilio.messages) == 2
        assert all("[ref " in m["body"] for m in tw.twilio.messages)
    store.close()
