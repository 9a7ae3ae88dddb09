"""A simulated hour-long outage of every receiver at once (booking, FHIR, SendGrid, Twilio) while events keep
coming; after a flaky recovery each receiver has every event once, booking/e-mail/SMS in order."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from vigil.store import RecordStore
from vigil.sync import fhir_mapping as fm
from vigil.sync.booking import BookingDestination, make_event
from vigil.sync.fhir import FhirDestination
from vigil.sync.messaging import SendgridDestination, TwilioDestination
from vigil.sync.oauth import ClientCredentials
from vigil.sync.outcome import make_session
from vigil.sync.timescale import ScaledClock
from vigil.sync.worker import SyncWorker
from vigil.testing.booking_server import BookingApp, booking_server
from vigil.testing.fhir_server import SekmetProcess, fhir_gateway
from vigil.testing.loopback import Fault
from vigil.testing.sendgrid_server import SendgridApp, sendgrid_server
from vigil.testing.twilio_server import TwilioFault, TwilioServer

pytestmark = pytest.mark.timeout(180)
SECRET = b"outage-secret"
WALL = 1_700_000_000.0


class Producer:
    """Writes one round of rows per call, as the daemon would."""

    def __init__(self, store: RecordStore, session: str) -> None:
        self.store = store
        self.session = session
        self.k = 0
        self.booking: list[str] = []
        self.mails: list[str] = []
        self.sms: list[str] = []
        self.windows = 0

    def round(self) -> None:
        k = self.k
        ev = make_event("vitals.summary", {"k": k}, source="vigil/t1", wall=WALL + k, event_id=f"evt_{k}")
        self.store.enqueue("booking", ev["type"], ev, ev["id"])
        self.booking.append(ev["id"])
        self.store.enqueue("fhir", "vitals_window", {
            "kind": "vitals_window", "session_id": self.session, "guest": {"id": f"G{k % 3}"},
            "session_start": WALL, "start_wall": WALL + 60 * k, "period_s": 5.0, "series": {"hr": [60 + k % 40] * 12}},
            f"fhir_{k}")
        self.windows += 1
        if k % 4 == 0:
            subject = f"summary {k}"
            self.store.enqueue("email", "session.summary", {"to": ["doc@example.org"], "subject": subject,
                                                            "text": "ok"}, f"mail_{k}")
            self.mails.append(subject)
            body = f"session note {k}"
            self.store.enqueue("sms", "session.summary", {"to": "+15551234567", "body": body}, f"sms_{k}")
            self.sms.append(body)
        self.store.flush()
        self.k += 1


def _observations(sekmet: SekmetProcess, session: str) -> int:
    total = 0
    for g in range(3):
        r = requests.get(f"{sekmet.base_url}/Observation?_count=1&encounter.identifier="
                         f"{fm.ENCOUNTER_SYSTEM}|{session}.G{g}", timeout=10)
        total += int(r.json()["total"])
    return total


async def test_hour_long_outage_of_every_receiver(tmp_path: Path) -> None:
    session = f"OUT{int(time.time())}"
    with SekmetProcess() as sek, booking_server(SECRET) as bk, fhir_gateway(sek.base_url) as gw, \
            sendgrid_server("SG.key") as sg, TwilioServer() as tw:
        producer_store = RecordStore.open(tmp_path / "vigil.db")  # the daemon's connection
        store = RecordStore.open(tmp_path / "vigil.db")  # vigil sync's
        prod = Producer(producer_store, session)
        http = make_session()
        auth = ClientCredentials(gw.base_url + "/oauth/token", "vigil", "s3cret", session=http)
        dests: list[Any] = [
            BookingDestination(bk.base_url + "/v1/events", SECRET, session=http, batch_size=20, timeout_s=2.0),
            FhirDestination(gw.base_url + "/fhir", session=http, auth=auth, batch_size=20, timeout_s=10.0),
            SendgridDestination(sg.base_url, "SG.key", "vigil@example.org", session=http, timeout_s=2.0),
            TwilioDestination(tw.base_url, tw.account_sid, tw.auth_token, "+15550000000", session=http,
                              timeout_s=2.0)]
        clock = ScaledClock(scale=1200.0)  # 1 h ~ 3 s
        worker = SyncWorker(store, dests, clock=clock, sleep=clock.sleep, base_backoff_s=1.0, max_backoff_s=300.0,
                            idle_poll_s=1.0, breaker_threshold=3, breaker_reset_s=30.0, rng=random.Random(11))
        stop = asyncio.Event()
        task = asyncio.ensure_future(worker.run(stop))
        try:
            for _ in range(8):
                prod.round()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(tw.twilio.messages) < len(prod.sms):
                await asyncio.sleep(0.05)
            # every receiver goes away (ports closed) for one simulated hour; rows keep coming
            for srv in (bk, gw, sg, tw.server):
                srv.down()
            t0 = clock.monotonic()
            while clock.monotonic() - t0 < 3600:
                prod.round()
                await asyncio.sleep(0.15)
            assert all(worker.streams[n].breaker.state.value != "closed" for n in ("booking", "fhir", "email", "sms"))
            for srv in (bk, gw, sg, tw.server):
                srv.up()
            # a flaky recovery: 5xx, 429 + Retry-After, garbage 200s, applied-then-dropped requests
            bk.faults.push(Fault("status", status=503))
            bk.faults.push(Fault("status", status=429, retry_after="120"))
            bk.faults.push(Fault("garbage"))
            bk.faults.push(Fault("drop_after_apply"))
            gw.faults.push(Fault("status", status=502))
            gw.faults.push(Fault("drop_after_apply"))  # sekmet applied the Bundle; the answer is lost
            sg.faults.push(Fault("status", status=503))
            sg.faults.push(Fault("drop_after_apply"))
            tw.twilio.script(TwilioFault.server_error(503, processed=True))  # sent, but the client saw a 503
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                stats = worker.outbox_stats(fresh=True)  # under the worker's store lock: its thread shares the connection
                if all(stats[n].pending + stats[n].inflight == 0 for n in ("booking", "fhir", "email", "sms")):
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await task
            producer_store.close()
        stats = store.outbox_stats()
        store.close()
        assert all(stats[n].dead == 0 and stats[n].pending == 0 for n in ("booking", "fhir", "email", "sms"))
        booking = bk.app
        mail = sg.app
        assert isinstance(booking, BookingApp) and isinstance(mail, SendgridApp)
        assert [e["id"] for e in booking.applied] == prod.booking and booking.received > len(prod.booking)
        assert [m["subject"] for m in mail.applied] == prod.mails and mail.received > len(prod.mails)
        bodies = [m["body"].split(" [ref ")[0] for m in tw.twilio.messages]
        assert bodies == prod.sms and tw.twilio.duplicates() == []
        assert dests[3].skipped_as_sent == 1  # the 503-but-sent SMS was found at Twilio, not sent again
        assert _observations(sek, session) == prod.windows  # one HR Observation per window, none twice
        assert prod.k > 8 + 15  # events really kept coming during the outage
