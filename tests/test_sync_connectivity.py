"""Connectivity probe against real loopback servers going down and up; the worker does not hammer a dead uplink."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from vigil.clock import SystemClock
from vigil.store import RecordStore
from vigil.sync.booking import BookingDestination, make_event
from vigil.sync.connectivity import ConnectivityProbe, tcp_probe
from vigil.sync.outcome import make_session
from vigil.sync.worker import SyncWorker
from vigil.testing.booking_server import BookingApp, booking_server
from vigil.testing.loopback import App, Fault, LoopbackServer

pytestmark = pytest.mark.timeout(60)
SECRET = b"probe-secret"


def test_tcp_probe_follows_a_server_going_down_and_up() -> None:
    with LoopbackServer(App(), name="uplink") as srv:
        assert tcp_probe("127.0.0.1", srv.port, 1.0)
        srv.down()
        t0 = time.monotonic()
        assert not tcp_probe("127.0.0.1", srv.port, 1.0)
        assert time.monotonic() - t0 < 0.5  # refused at once, no waiting for the timeout
        srv.up()
        assert tcp_probe("127.0.0.1", srv.port, 1.0)


def test_probe_caches_its_answer_and_logs_transitions_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vigil.sync.connectivity")
    with LoopbackServer(App(), name="uplink") as srv:
        probe = ConnectivityProbe(f"http://127.0.0.1:{srv.port}/health", timeout_s=1.0, cache_s=0.3)
        assert probe.online is None
        assert probe.check() is True and probe.online is True
        srv.down()
        assert probe.check() is True  # cached for 0.3 s: no new connection attempt
        time.sleep(0.35)
        assert probe.check() is False and probe.online is False
        assert probe.check() is False
        srv.up()
        time.sleep(0.35)
        assert probe.check() is True
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == [f"connectivity to 127.0.0.1:{srv.port} is up", f"connectivity to 127.0.0.1:{srv.port} is down",
                    f"connectivity to 127.0.0.1:{srv.port} is up"]


def test_probe_url_ports_and_bad_urls() -> None:
    assert (ConnectivityProbe("https://emr.example.org/fhir").port, ConnectivityProbe("http://x.example/").port) == (443, 80)
    assert ConnectivityProbe("https://127.0.0.1:8443/x").port == 8443
    with pytest.raises(ValueError, match="no host"):
        ConnectivityProbe("not a url")


async def test_open_breaker_asks_the_probe_before_any_trial_request(tmp_path: Path) -> None:
    store = RecordStore.open(tmp_path / "v.db")
    for i in range(3):
        ev = make_event("vitals.summary", {"i": i}, source="vigil/t1", wall=1_700_000_000.0 + i, event_id=f"evt_{i}")
        store.enqueue("booking", ev["type"], ev, ev["id"])
    store.flush()
    uplink = LoopbackServer(App(), name="uplink").start()
    uplink.down()  # the uplink is gone
    with booking_server(SECRET) as bk:
        bk.faults.always(Fault("status", 503))
        probe = ConnectivityProbe(f"http://127.0.0.1:{uplink.port}/", timeout_s=0.5, cache_s=0.05)
        dest = BookingDestination(bk.base_url + "/v1/events", SECRET, session=make_session(), timeout_s=2.0)
        worker = SyncWorker(store, [dest], clock=SystemClock(), base_backoff_s=0.02, max_backoff_s=0.2,
                            idle_poll_s=0.05, probe=probe, breaker_threshold=2, breaker_reset_s=0.1)
        stop = asyncio.Event()
        task = asyncio.ensure_future(worker.run(stop))
        try:
            await asyncio.sleep(1.5)
            # two failures opened the breaker; every trial since then was stopped by the probe
            assert bk.requests_seen == 2
            assert worker.streams["booking"].breaker.trips >= 3 and probe.online is False
            st = worker.status()["destinations"]["booking"]
            assert st["queue_depth"] == 3 and st["breaker"] in ("open", "half_open") and st["delivered"] == 0
            uplink.up()
            bk.faults.always(None)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and worker.outbox_stats(fresh=True)["booking"].delivered < 3:  # locked
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task
            uplink.stop()
        app = bk.app
        assert isinstance(app, BookingApp)
        assert [e["id"] for e in app.applied] == ["evt_0", "evt_1", "evt_2"]
        assert probe.online is True and worker.streams["booking"].breaker.state.value == "closed"
    store.close()
