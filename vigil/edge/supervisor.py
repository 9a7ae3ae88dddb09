"""Device supervisor: owns one device's connection state, reconnection and technical conditions.

States: CONNECTING → STREAMING ⇄ STALE; link loss → LOST → (backoff) → CONNECTING; STOPPED at close.
Technical events: DEVICE_STALE while no data for `stale_after_s` (from the profile); DEVICE_DISCONNECTED
while the link is down; LOW_BATTERY when a battery reading falls below the threshold (hysteresis +5 %);
LEAD_OFF passes through from the parsers (the device said so). Everything reaches the consumer through
one async iterator::

    async with DeviceSupervisor(device_id, profile, factory, clock) as sup:
        async for out in sup:   # SampleBlock | NumericReading | TechnicalEvent
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

from vigil.clock import Clock, SystemClock
from vigil.edge.profiles import Profile
from vigil.edge.transports.base import Gap, Output, Stamper, backoff_delay
from vigil.errors import TransportError
from vigil.model import DeviceState, Metric, NumericReading, TechnicalEvent, TechnicalKind

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 10.0  # close() gives up waiting for a task that ignores cancellation after this


async def cancel_and_wait(task: asyncio.Task[None], timeout_s: float = CLOSE_TIMEOUT_S, interval_s: float = 0.1,
                          hold: Callable[[], bool] | None = None) -> bool:
    """Cancel `task` until it is done, for at most `timeout_s`; True when it finished.

    One `cancel()` is not always enough: on Python 3.11 `asyncio.wait_for` swallows a cancellation
    that lands while its inner future completes (CPython gh-86296, fixed in 3.12), so cancel again
    every `interval_s` instead of awaiting the task unboundedly, except while `hold()` is true (the
    task is doing its own orderly shutdown, which a second cancellation would cut short).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    task.cancel()
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            return False
        await asyncio.wait({task}, timeout=min(interval_s, left))
        if not task.done() and not (hold is not None and hold()):
            task.cancel()
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.exception()  # retrieved: no "exception was never retrieved" warning
    return True


class Transport(Protocol):
    """What the supervisor needs of a transport (see vigil/edge/transports/base.py)."""

    async def __aenter__(self) -> Transport: ...
    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None: ...
    def __aiter__(self) -> Transport: ...
    async def __anext__(self) -> Output: ...


TransportFactory = Callable[[Stamper], Transport]


class DeviceSupervisor:
    """Runs connect → stream → reconnect for one device and yields its outputs."""

    def __init__(self, device_id: str, profile: Profile, factory: TransportFactory, clock: Clock | None = None,
                 stale_after_s: float | None = None, low_battery_percent: float = 15.0,
                 backoff_base_s: float = 0.5, backoff_cap_s: float = 30.0, maxsize: int = 10_000) -> None:
        self.device_id = device_id
        self.profile = profile
        self.factory = factory
        self.clock = clock or SystemClock()
        self.stale_after_s = stale_after_s or profile.stale_after_s
        self.low_battery_percent = low_battery_percent
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.stamper = Stamper(device_id, profile, self.clock)
        self.state = DeviceState.CONNECTING
        self.connects = 0
        self.failures = 0
        self.dropped = 0
        # called with every sample block and numeric as it arrives, before it waits in the queue (the daemon
        # stores data here, so a consumer running behind never holds unstored data)
        self.on_arrival: Callable[[Output], None] | None = None
        self._out: asyncio.Queue[Output | None] = asyncio.Queue(maxsize)
        self._task: asyncio.Task[None] | None = None
        self._active: dict[TechnicalKind, bool] = {}
        self._ended = False
        self._streamed = False
        self._transport: Transport | None = None
        self._closing = False
        self._disconnecting = False  # inside a transport's orderly close: do not cancel it again
        self._corrupt_closed = 0  # corrupt frames of finished connections
        self._dropped_closed = 0  # outputs dropped by finished connections' queues

    # -- public
    @property
    def gaps(self) -> list[Gap]:
        """Gaps recorded so far (most recent last; bounded)."""
        return list(self.stamper.gaps)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"supervisor-{self.device_id}")
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def corrupt_frames(self) -> int:
        """Corrupt frames/packets dropped by the parsers, over all connections so far."""
        return self._corrupt_closed + _count(self._transport, "corrupt_frames")

    def stats(self) -> dict[str, Any]:
        """Counters for status reports: state, connects, failures, corrupt frames, drops, gaps."""
        return {"state": self.state.value, "connects": self.connects, "failures": self.failures,
                "corrupt_frames": self.corrupt_frames,
                "dropped": self.dropped + self._dropped_closed + _count(self._transport, "dropped"),
                "gaps": len(self.stamper.gaps)}

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the device (disconnects) and end the iteration; returns within ~`timeout_s`."""
        self._closing = True  # also stops the run loop if a transport swallowed the cancellation
        task, self._task = self._task, None
        if task is not None and not await cancel_and_wait(task, timeout_s, hold=lambda: self._disconnecting):
            log.error("%s: supervisor did not stop within %.0f s; abandoned", self.device_id, timeout_s)
        self.state = DeviceState.STOPPED
        self._end()

    def _end(self) -> None:
        """Wake the consumer with the end marker (dropping the oldest output if the queue is full)."""
        while True:
            try:
                self._out.put_nowait(None)
                return
            except asyncio.QueueFull:
                self._out.get_nowait()
                self.dropped += 1

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Output:
        if self._ended and self._out.empty():
            raise StopAsyncIteration
        item = await self._out.get()
        if item is None:
            self._ended = True
            raise StopAsyncIteration
        return item

    # -- internals
    def _emit(self, out: Output) -> None:
        """Queue an output; when the consumer is far behind, data is dropped (counted), conditions never."""
        if self.on_arrival is not None and not isinstance(out, TechnicalEvent):
            try:
                self.on_arrival(out)
            except Exception:
                log.exception("%s: arrival hook failed", self.device_id)
        while True:
            try:
                self._out.put_nowait(out)
                return
            except asyncio.QueueFull:
                self.dropped += 1
                if not isinstance(out, TechnicalEvent):
                    return
                self._out.get_nowait()  # make room: the oldest output goes, the condition stays

    def _condition(self, kind: TechnicalKind, active: bool, detail: str = "") -> None:
        if self._active.get(kind, False) == active:
            return
        self._active[kind] = active
        self._emit(TechnicalEvent(kind, active, self.clock.monotonic(), self.device_id, detail))

    def _set_state(self, state: DeviceState) -> None:
        if state != self.state:
            log.info("%s: %s -> %s", self.device_id, self.state.value, state.value)
            self.state = state

    def _forward(self, out: Output) -> None:
        if isinstance(out, NumericReading) and out.metric is Metric.BATTERY and out.value == out.value:
            if out.value < self.low_battery_percent:
                self._condition(TechnicalKind.LOW_BATTERY, True, f"battery {out.value:.0f} %")
            elif out.value >= self.low_battery_percent + 5:
                self._condition(TechnicalKind.LOW_BATTERY, False)
        if isinstance(out, TechnicalEvent):
            if self._active.get(out.kind, False) == out.active:
                return
            self._active[out.kind] = out.active
        self._emit(out)

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                self._set_state(DeviceState.CONNECTING)
                clean_end = await self._session()
                if self._closing:
                    return
                if clean_end:
                    self._set_state(DeviceState.STOPPED)
                    self._end()
                    return
                self.failures += 1
                self._set_state(DeviceState.LOST)
                self._condition(TechnicalKind.DEVICE_DISCONNECTED, True, "link lost")
                self._condition(TechnicalKind.DEVICE_STALE, False)
                self.stamper.mark_gap()
                attempt = 0 if self._streamed else attempt + 1
                delay = backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s)
                log.info("%s: reconnecting in %.2f s (attempt %d)", self.device_id, delay, attempt + 1)
                await asyncio.sleep(delay)
        finally:
            self._set_state(DeviceState.STOPPED)

    async def _session(self) -> bool:
        """One connection; True when the source ended cleanly, False when the link failed."""
        self._streamed = False
        inbox: asyncio.Queue[Output | BaseException | None] = asyncio.Queue()

        async def pump(transport: Transport) -> None:
            try:
                async for out in transport:
                    inbox.put_nowait(out)
                inbox.put_nowait(None)
            except (TransportError, OSError) as exc:
                inbox.put_nowait(exc)
            except Exception as exc:  # a transport bug is a failed link, not a dead supervisor
                log.exception("%s: transport failed", self.device_id)
                inbox.put_nowait(exc)

        transport: Transport | None = None
        try:
            transport = self.factory(self.stamper)
            self._transport = transport
            await transport.__aenter__()  # a transport closes itself when its connect fails
            pump_task: asyncio.Task[None] | None = None
            try:
                self.connects += 1
                pump_task = asyncio.create_task(pump(transport), name=f"pump-{self.device_id}")
                return await self._drain(inbox)
            finally:
                # orderly teardown: close() waits for it instead of cancelling it again
                self._disconnecting = True
                try:
                    if pump_task is not None and not await cancel_and_wait(pump_task, CLOSE_TIMEOUT_S / 2):
                        log.error("%s: transport reader ignores cancellation", self.device_id)
                    await transport.__aexit__(None, None, None)
                finally:
                    self._disconnecting = False
        except (TransportError, OSError) as exc:
            log.info("%s: connect failed: %s", self.device_id, exc)
            return False
        except Exception:
            log.exception("%s: connect failed", self.device_id)
            return False
        finally:
            if transport is not None:
                self._corrupt_closed += _count(transport, "corrupt_frames")
                self._dropped_closed += _count(transport, "dropped")
            self._transport = None

    async def _drain(self, inbox: asyncio.Queue[Output | BaseException | None]) -> bool:
        """Forward a connection's outputs, watching for staleness; True at a clean end."""
        while not self._closing:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel and hang close()
                async with asyncio.timeout(self.stale_after_s):
                    item = await inbox.get()
            except TimeoutError:
                if self.state is DeviceState.STREAMING or self.state is DeviceState.CONNECTING:
                    self._set_state(DeviceState.STALE)
                    self._condition(TechnicalKind.DEVICE_STALE, True, f"no data for {self.stale_after_s:g} s")
                continue
            if item is None:
                return True
            if isinstance(item, BaseException):
                log.info("%s: link lost: %s", self.device_id, item)
                return False
            if self.state is not DeviceState.STREAMING:
                self._set_state(DeviceState.STREAMING)
                self._condition(TechnicalKind.DEVICE_STALE, False)
                self._condition(TechnicalKind.DEVICE_DISCONNECTED, False)
                self._streamed = True
            self._forward(item)
        return True


def _count(transport: object, name: str) -> int:
    """An integer counter of a transport (0 when it has none)."""
    value = getattr(transport, name, 0) if transport is not None else 0
    return value if isinstance(value, int) else 0
