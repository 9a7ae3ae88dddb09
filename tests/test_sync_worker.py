"""Outbox worker against a real record store and the loopback booking server."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from vigil.clock import SystemClock
from vigil.store import RecordStore
from vigil.sync.backoff import full_jitter_delay, next_delay, parse_retry_after
from vigil.sync.booking import BookingDestination, make_event
from vigil.sync.breaker import BreakerState, CircuitBreaker
from vigil.sync.outcome import make_session
from vigil.sync.timescale import ScaledClock
from vigil.sync.worker import SyncWorker
from vigil.testing.booking_server import booking_server
from vigil.testing.loopback import Fault

SECRET = b"whsec_vigil_test"


def _enqueue(store: RecordStore, n: int, start: int = 0, wall: float | None = None) -> list[str]:
    ids = []
    for i in range(start, start + n):
        ev = make_event("vitals.summary", {"mat": "m1", "hr": 60 + i % 40}, source="vigil/room1",
                        wall=wall or time.time(), event_id=f"evt_{i:06d}")
        store.enqueue("booking", ev["type"], ev, ev["id"])
        ids.append(ev["id"])
    store.flush()
    return ids


@pytest.fixture
def store(tmp_path: Path) -> RecordStore:
    s = RecordStore.open(tmp_path / "vigil.db")
    yield s
    s.close()


def test_full_jitter_bounds_and_growth() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        ceiling = min(300.0, 2.0 ** (attempt - 1))
        xs = [full_jitter_delay(attempt, base_s=1.0, cap_s=300.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= x <= ceiling for x in xs)
        assert max(xs) > 0.7 * ceiling  # spread over the whole interval
    assert next_delay(1, 42.0, base_s=1.0, cap_s=300.0, rng=rng) >= 42.0


def test_retry_after_seconds_and_date() -> None:
    assert parse_retry_after("7", 0.0) == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon", 0.0) is None
    assert parse_retry_after(None, 0.0) is None


def test_breaker_cycle() -> None:
    from vigil.clock import SimulatedClock

    clk = SimulatedClock()
    b = CircuitBreaker("x", clk, failure_threshold=3, reset_s=10)
    for _ in range(3):
        assert b.allow()
        b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allow()
    clk.advance(10)
    assert b.allow() and b.state is BreakerState.HALF_OPEN
    b.record_failure()  # trial fails: open again, longer
    assert b.state is BreakerState.OPEN
    clk.advance(10)
    assert not b.allow()
    clk.advance(10)
    assert b.allow()
    b.record_success()
    assert b.state is BreakerState.CLOSED


async def test_outage_one_hour_in_order_exactly_once(store: RecordStore, tmp_path: Path) -> None:
    """1 simulated hour of outage (refused, 503, 429+Retry-After, garbage, drops) while events keep coming."""
    producer = RecordStore.open(tmp_path / "vigil.db")  # the daemon's own connection, as in production
    clock = ScaledClock(scale=1200.0)  # 1 h ≈ 3 s
    with booking_server(SECRET) as srv:
        dest = BookingDestination(srv.base_url + "/v1/events", SECRET, session=make_session(), batch_size=50,
                                  timeout_s=2.0)
        worker = SyncWorker(store, [dest], clock=clock, sleep=clock.sleep, base_backoff_s=1.0,
                            max_backoff_s=300.0, idle_poll_s=1.0, breaker_threshold=3, breaker_reset_s=30.0,
                            rng=random.Random(7))
        stop = asyncio.Event()
        task = asyncio.ensure_future(worker.run(stop))
        expected = _enqueue(producer, 100, 0)
        await asyncio.sleep(0.5)
        assert len(srv.app.applied) == 100
        # outage: the receiver's port is closed for one simulated hour while 400 more events arrive
        srv.down()
        t0 = clock.monotonic()
        n = 100
        while clock.monotonic() - t0 < 3600:
            expected += _enqueue(producer, 20, n)
            n += 20
            await asyncio.sleep(0.15)
        assert worker.streams["booking"].breaker.state is not BreakerState.CLOSED
        assert len(srv.app.applied) == 100
        # back, but flaky: 503, 429 with Retry-After, 200 with garbage, an applied-then-dropped batch
        srv.up()
        srv.faults.push(Fault("status", status=503))
        srv.faults.push(Fault("status", status=429, retry_after="120"))
        srv.faults.push(Fault("garbage"))
        srv.faults.push(Fault("drop_after_apply"))
        srv.faults.push(Fault("status", status=502))
        deadline = time.monotonic() + 30
        while len(srv.app.applied) < len(expected) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await task
        producer.close()
        applied_ids = [e["id"] for e in srv.app.applied]
        assert applied_ids == expected  # all, in order, each once
        assert srv.app.received > len(expected)  # some were received twice and deduplicated
        stats = store.outbox_stats()["booking"]
        assert stats.pending == 0 and stats.inflight == 0 and stats.dead == 0
        assert stats.delivered == len(expected)


async def test_garbage_200_is_not_delivered(store: RecordStore) -> None:
    with booking_server(SECRET) as srv:
        srv.faults.always(Fault("garbage", body=b'{"ok": true}'))
        dest = BookingDestination(srv.base_url + "/v1/events", SECRET, session=make_session())
        worker = SyncWorker(store, [dest], clock=SystemClock())
        _enqueue(store, 5)
        assert await asyncio.to_thread(worker.step, "booking") == -1
        st = store.outbox_stats()["booking"]
        assert st.delivered == 0 and st.pending == 5
        assert "unreadable body" in (st.last_error or "")


async def test_permanent_4xx_and_rejections_are_dead_letters(store: RecordStore) -> None:
    with booking_server(SECRET, reject_types=("device.lost",)) as srv:
        dest = BookingDestination(srv.base_url + "/v1/events", SECRET, session=make_session())
        worker = SyncWorker(store, [dest], clock=SystemClock())
        ev = make_event("device.lost", {"device": "h10"}, source="vigil/room1", wall=time.time(), event_id="evt_x")
        store.enqueue("booking", ev["type"], ev, ev["id"])
        bad = {"type": "not a type", "id": "evt_bad"}  # fails the DomainEvent schema
        store.enqueue("booking", "vitals.summary", bad, "evt_bad")
        _enqueue(store, 2)
        assert await asyncio.to_thread(worker.step, "booking") == 4
        srv.faults.push(Fault("status", status=422, body=b'{"error":"unprocessable"}'))
        _enqueue(store, 1, start=100)
        await asyncio.to_thread(worker.step, "booking")
        dead = store.dead_letters("booking")
        reasons = {key: reason for _i, _d, _t, key, reason in dead}
        assert set(reasons) == {"evt_x", "evt_bad", "evt_000100"}
        assert "unknown type device.lost" in reasons["evt_x"]
        assert "invalid domain event" in reasons["evt_bad"]
        assert reasons["evt_000100"].startswith("HTTP 422")
        assert [e["id"] for e in srv.app.applied] == ["evt_000000", "evt_000001"]
        status = worker.status()["destinations"]["booking"]
        assert status["dead_letters"] == 3 and status["queue_depth"] == 0


def test_status_reuses_recent_outbox_counts_and_drain_asks_the_store_only_when_idle(store: RecordStore) -> None:
    calls = {"n": 0}
    real = store.outbox_stats

    def counting() -> dict:
        calls["n"] += 1
        return real()

    store.outbox_stats = counting  # type: ignore[method-assign]
    with booking_server(SECRET) as srv:
        dest = BookingDestination(srv.base_url + "/v1/events", SECRET, session=make_session(), batch_size=10)
        worker = SyncWorker(store, [dest], clock=SystemClock(), idle_poll_s=0.02)
        _enqueue(store, 25)
        assert not worker.drained() and calls["n"] == 0  # streams not idle yet: no scan of the outbox
        for _ in range(10):
            worker.status()
        assert calls["n"] == 1  # one query serves a second of status reports
        assert worker.status()["destinations"]["booking"]["queue_depth"] == 25
        assert asyncio.run(worker.drain(30))
        assert worker.status()["destinations"]["booking"]["queue_depth"] == 0  # drain refreshed the counts
        assert len(srv.app.applied) == 25


def test_a_backward_clock_step_does_not_stall_delivery(tmp_path: Path) -> None:
    from vigil.clock import SimulatedClock

    with booking_server(SECRET) as srv:
        store = RecordStore.open(tmp_path / "v.db")
        clock = SimulatedClock(start_mono=0.0, start_wall=time.time())
        ids = _enqueue(store, 3)
        dest = BookingDestination(srv.base_url + "/v1/events", SECRET, session=make_session(), timeout_s=2.0)
        w = SyncWorker(store, [dest], clock=clock, max_backoff_s=5.0)
        clock.jump_wall(3600.0)  # the box's clock is an hour ahead while the platform is unreachable
        srv.down()
        assert w.step("booking") == -1
        srv.up()
        clock.jump_wall(-3600.0)  # NTP steps it back
        clock.advance(10.0)  # past the backoff (max 5 s)
        assert w.step("booking") == 3  # delivered now, not an hour later
        assert [e["id"] for e in srv.app.applied] == ids
        # a restarted worker finds rows stamped two hours ahead (clock stepped back while it was down)
        more = _enqueue(store, 2, 3)
        srv.down()
        w2 = SyncWorker(store, [dest], clock=SimulatedClock(start_mono=0.0, start_wall=time.time() + 7200))
        assert w2.step("booking") == -1
        srv.up()
        w3 = SyncWorker(store, [dest], clock=SimulatedClock(start_mono=0.0, start_wall=time.time()))
        assert w3.step("booking") == 2
        assert [e["id"] for e in srv.app.applied] == ids + more
        store.close()
