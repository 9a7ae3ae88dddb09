"""The outbox worker: one ordered stream per destination, batching, backoff, circuit breaker.

Delivery is at-least-once: a batch is claimed, sent, and only then marked delivered, so a crash
between send and mark re-sends it; receivers apply each event once thanks to its idempotency key
(booking event id, FHIR conditional create, e-mail custom arg, SMS lookup before re-send).
A stream never overtakes its own head: a failed batch goes back to the head with a retry time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from vigil.clock import Clock
from vigil.sync.backoff import next_delay
from vigil.sync.breaker import BreakerState, CircuitBreaker
from vigil.sync.connectivity import ConnectivityProbe
from vigil.sync.outcome import BatchResult, Row

log = logging.getLogger(__name__)


class Destination(Protocol):
    """A receiver of one outbox stream."""

    name: str

    @property
    def batch_size(self) -> int:
        """Rows per request."""
        ...

    def deliver(self, rows: Sequence[Row]) -> BatchResult:
        """Send `rows` (in order); say per row what happened. Runs in a worker thread."""
        ...


class Outbox(Protocol):
    """The vigil.store outbox API used here."""

    def claim(self, destination: str, limit: int = 100, *, now: float | None = None,
              lease_s: float = 120.0) -> list[Any]: ...
    def mark_delivered(self, ids: Sequence[int], *, now: float | None = None) -> None: ...
    def mark_failed(self, row_id: int, error: str, retry_at: float) -> None: ...
    def dead_letter(self, row_id: int, reason: str) -> None: ...
    def outbox_stats(self) -> dict[str, Any]: ...


@dataclass
class StreamState:
    """Live state of one destination's stream (reported by `vigil sync status`)."""

    name: str
    breaker: CircuitBreaker
    attempt: int = 0
    next_at: float = 0.0  # monotonic
    last_success_wall: float | None = None
    last_error: str | None = None
    delivered: int = 0
    dead: int = 0
    batches: int = 0
    idle: bool = False  # the last claim found nothing to send


class SyncWorker:
    """Drains every configured destination of the outbox until `stop` is set."""

    def __init__(self, store: Outbox, destinations: Sequence[Destination], *, clock: Clock,
                 sleep: Callable[[float], Awaitable[None]] | None = None, base_backoff_s: float = 1.0,
                 max_backoff_s: float = 300.0, idle_poll_s: float = 1.0, probe: ConnectivityProbe | None = None,
                 breaker_threshold: int = 5, breaker_reset_s: float = 30.0, lease_s: float = 120.0,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.destinations = {d.name: d for d in destinations}
        self.clock = clock
        self._sleep = sleep or asyncio.sleep
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.idle_poll_s = idle_poll_s
        self.probe = probe
        self.lease_s = lease_s
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # one sqlite connection: serialise store calls
        self._first_claim = {d.name: True for d in destinations}
        # outbox_stats scans the outbox (~0.4 s at 190k rows) under the store lock: cache it and keep its
        # duty cycle low so status reports never starve the streams
        self._stats: tuple[float, dict[str, Any]] | None = None
        self._hwm: float | None = None  # see _outbox_wall
        self._hwm_mono = 0.0
        self._wall_lock = threading.Lock()
        self._stats_cost_s = 0.0
        self.streams = {d.name: StreamState(d.name, CircuitBreaker(d.name, clock, failure_threshold=breaker_threshold,
                                                                   reset_s=breaker_reset_s,
                                                                   max_reset_s=max_backoff_s))
                        for d in destinations}

    # ------------------------------------------------------------------ store access (threads)

    def _store(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        with self._lock:
            return fn(*args, **kw)

    def _outbox_wall(self) -> float:
        """Wall time for the outbox's retry and lease stamps: the clock, but never stepping back.

        ``retry_at``/``claimed_at`` are wall seconds in the store. When NTP steps the clock back (a Pi has
        no RTC), rows stamped while it was ahead would wait for the size of the step; this time keeps
        advancing with the monotonic clock from the highest wall time seen instead.
        """
        with self._wall_lock:
            wall, mono = self.clock.wall(), self.clock.monotonic()
            if self._hwm is None:
                self._hwm = wall
            else:
                self._hwm = max(wall, self._hwm + max(0.0, mono - self._hwm_mono))
            self._hwm_mono = mono
            return self._hwm

    def _claim(self, name: str, limit: int) -> list[Any]:
        # The first claim after start takes over rows left in flight by a killed worker at once
        # (only one worker runs: the CLI holds a lock file); later claims respect the lease.
        now = self._outbox_wall()
        lease = self.lease_s
        if self._first_claim[name]:
            lease = 0.0
            head = self._store(self.store.outbox_stats).get(name)  # once per stream; not the status cache
            due = getattr(head, "next_retry_at", None)
            # a stored retry time further ahead than any delay we set (backoff cap, Retry-After <= 1 h) was
            # stamped before the clock stepped back: retry now rather than wait for the size of the step
            if due is not None and due - now > max(self.max_backoff_s, 3600.0):
                log.warning("%s: stored retry time is %.0f s ahead of the clock (clock stepped back?); "
                            "retrying now", name, due - now)
                with self._wall_lock:
                    self._hwm = now = float(due)
        self._first_claim[name] = False
        return list(self._store(self.store.claim, name, limit, now=now, lease_s=lease))

    def _apply(self, st: StreamState, rows: Sequence[Any], res: BatchResult) -> bool:
        """Record a batch result in the store; return True when the whole batch is settled."""
        ids = [r.id for r in rows]
        done = set(res.delivered) | {i for i, _ in res.dead}
        retry = [i for i in ids if i not in done]
        retry_wall = self._outbox_wall()
        with self._lock:
            if res.delivered:
                self.store.mark_delivered(res.delivered, now=self.clock.wall())
            for i, reason in res.dead:
                self.store.dead_letter(i, reason)
                log.warning("%s: event %d dead-lettered: %s", st.name, i, reason)
            if retry:
                st.attempt += 1
                delay = next_delay(st.attempt, res.retry_after_s, base_s=self.base_backoff_s,
                                   cap_s=self.max_backoff_s, rng=self._rng)
                st.next_at = self.clock.monotonic() + delay
                err = res.error or "not acknowledged"
                for i in retry:
                    self.store.mark_failed(i, err, retry_wall + delay)
        st.delivered += len(res.delivered)
        st.dead += len(res.dead)
        st.batches += 1
        if retry:
            st.last_error = res.error or "not acknowledged"
            st.breaker.record_failure()
            log.info("%s: %d event(s) to retry in %.1f s (attempt %d): %s", st.name, len(retry),
                     st.next_at - self.clock.monotonic(), st.attempt, st.last_error)
            return False
        st.attempt = 0
        st.breaker.record_success()
        if res.delivered:
            st.last_success_wall = self.clock.wall()
        return True

    def step(self, name: str) -> int:
        """Claim and deliver one batch of `name` synchronously; return rows claimed (-1 on failure)."""
        dest = self.destinations[name]
        st = self.streams[name]
        rows = self._claim(name, dest.batch_size)
        if not rows:
            return 0
        try:
            res = dest.deliver(rows)
        except Exception as exc:  # noqa: BLE001 - a destination bug must not kill the stream
            log.exception("%s: delivery raised", name)
            res = BatchResult(error=f"{type(exc).__name__}: {exc}")
        return len(rows) if self._apply(st, rows, res) else -1

    # ------------------------------------------------------------------ async loop

    async def _wait(self, seconds: float, stop: asyncio.Event) -> None:
        if seconds <= 0 or stop.is_set():
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for f in (sleeper, stopper):
            f.cancel()

    async def _stream(self, name: str, stop: asyncio.Event) -> None:
        st = self.streams[name]
        while not stop.is_set():
            wait = st.next_at - self.clock.monotonic()
            if wait > 0:
                await self._wait(wait, stop)
                continue
            if not st.breaker.allow():
                await self._wait(max(st.breaker.seconds_until_trial(), 0.01), stop)
                continue
            if st.breaker.state is BreakerState.HALF_OPEN and self.probe is not None:
                online = await asyncio.to_thread(self.probe.check)
                if not online:
                    st.breaker.record_failure()
                    continue
            try:
                n = await asyncio.to_thread(self.step, name)
            except Exception as exc:  # noqa: BLE001 - store trouble: wait and try again
                log.error("%s: store access failed: %s", name, exc)
                st.last_error = f"store: {exc}"
                await self._wait(self.idle_poll_s, stop)
                continue
            st.idle = n == 0
            if n == 0:
                await self._wait(self.idle_poll_s, stop)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every stream until `stop` is set."""
        await asyncio.gather(*(self._stream(n, stop) for n in self.destinations))

    async def drain(self, timeout_s: float = 60.0) -> bool:
        """Run until every stream is empty (testing and benchmarks); False on timeout."""
        stop = asyncio.Event()
        task = asyncio.ensure_future(self.run(stop))
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if await asyncio.to_thread(self.drained):
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            stop.set()
            await task

    # ------------------------------------------------------------------ status

    def outbox_stats(self, *, fresh: bool = False) -> dict[str, Any]:
        """The store's outbox counts, reused while younger than max(1 s, 20 x the cost of the last query)."""
        now = time.monotonic()
        if not fresh and self._stats is not None and now - self._stats[0] < max(1.0, 20 * self._stats_cost_s):
            return self._stats[1]
        t0 = time.monotonic()
        stats = self._store(self.store.outbox_stats)
        self._stats_cost_s = time.monotonic() - t0
        self._stats = (time.monotonic(), stats)
        return stats

    def drained(self) -> bool:
        """True when no configured stream has anything left (asks the store only once every stream is idle)."""
        if not all(st.idle for st in self.streams.values()):
            return False
        stats = self.outbox_stats(fresh=True)
        return all((s.pending + s.inflight) == 0 for n, s in stats.items() if n in self.destinations)

    def status(self) -> dict[str, Any]:
        """Per-destination status: queue depth, oldest age, dead letters, breaker, last success."""
        stats = self.outbox_stats()
        return build_status(stats, {n: stream_view(s) for n, s in self.streams.items()}, self.clock.wall())


def stream_view(st: StreamState) -> dict[str, Any]:
    """The worker-side facts of one stream as JSON."""
    return {"breaker": st.breaker.state.value, "last_success": st.last_success_wall, "last_error": st.last_error,
            "attempt": st.attempt, "delivered_by_worker": st.delivered}


def build_status(stats: dict[str, Any], streams: dict[str, dict[str, Any]], now_wall: float) -> dict[str, Any]:
    """Combine store counts and worker state into the status document (`"v": 1`)."""
    out: dict[str, Any] = {}
    for name in sorted(set(stats) | set(streams)):
        s = stats.get(name)
        w = streams.get(name, {})
        depth = (s.pending + s.inflight) if s else 0
        oldest = s.oldest_pending_wall if s else None
        out[name] = {"queue_depth": depth,
                     "oldest_age_s": round(now_wall - oldest, 1) if oldest is not None else None,
                     "dead_letters": s.dead if s else 0, "delivered": s.delivered if s else 0,
                     "breaker": w.get("breaker", "unknown"), "last_success": w.get("last_success"),
                     "last_error": w.get("last_error") or (s.last_error if s else None)}
    return {"v": 1, "updated": now_wall, "destinations": out}
