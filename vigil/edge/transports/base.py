"""The one narrow transport interface, and the stamping of parser items into model types.

A transport is ONE connection to one device::

    async with transport:                 # connect, subscribe, send start commands
        async for out in transport:       # SampleBlock | NumericReading | TechnicalEvent
            ...
                                          # leaving the block stops streaming and disconnects

`__anext__` raises `TransportError` when the link is lost and `StopAsyncIteration` when the source
ends cleanly (a replay reaching the end). Transports never retry: reconnection, backoff and staleness
belong to `vigil.edge.supervisor.DeviceSupervisor`, which calls a factory for each new attempt.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import numpy as np

from vigil.clock import Clock
from vigil.edge.clockmap import ClockMap
from vigil.edge.parsers.items import Condition, Item, Numeric, Wave
from vigil.edge.profiles import Profile
from vigil.errors import TransportError
from vigil.model import NumericReading, SampleBlock, TechnicalEvent

log = logging.getLogger(__name__)

Output = SampleBlock | NumericReading | TechnicalEvent


@dataclass(frozen=True, slots=True)
class Gap:
    """Samples of one channel that never arrived: [from_seq, to_seq)."""

    device_id: str
    channel: str
    from_seq: int
    to_seq: int
    reason: str


class _ChannelState:
    __slots__ = ("next_seq", "last_device_ns", "last_arrival", "gap_pending", "clockmap")

    def __init__(self) -> None:
        self.next_seq = 0
        self.last_device_ns: int | None = None
        self.last_arrival: float | None = None
        self.gap_pending = False
        self.clockmap = ClockMap()


class Stamper:
    """Turns parser items into model outputs: device id, clocks, per-channel `seq`, gaps, conditions.

    Owned by the supervisor and shared by successive connections, so sequence numbers continue across
    reconnects and the time lost while disconnected appears as a jump in `seq` (never padded).
    """

    def __init__(self, device_id: str, profile: Profile, clock: Clock, max_gaps: int = 1000) -> None:
        self.device_id = device_id
        self.profile = profile
        self.clock = clock
        self._channels: dict[str, _ChannelState] = {}
        self._conditions: dict[str, bool] = {}
        self.gaps: deque[Gap] = deque(maxlen=max_gaps)
        self.unknown_channel_samples = 0

    def mark_gap(self) -> None:
        """The link was lost: the next block of every channel accounts for the time that passed."""
        for st in self._channels.values():
            st.gap_pending = True

    def channel_state(self, name: str) -> _ChannelState:
        """Per-channel bookkeeping (created on first use)."""
        st = self._channels.get(name)
        if st is None:
            st = self._channels[name] = _ChannelState()
        return st

    def stamp(self, items: list[Item]) -> list[Output]:
        """Convert items that arrived now."""
        now, wall = self.clock.monotonic(), self.clock.wall()
        out: list[Output] = []
        for it in items:
            if isinstance(it, Numeric):
                out.append(NumericReading(self.device_id, it.metric, it.value, now, wall, it.flags))
            elif isinstance(it, Wave):
                block = self._block(it, now, wall)
                if block is not None:
                    out.append(block)
            elif isinstance(it, Condition):
                prev = self._conditions.get(it.kind.value)
                self._conditions[it.kind.value] = it.active
                if prev != it.active and (prev is not None or it.active):
                    out.append(TechnicalEvent(it.kind, it.active, now, self.device_id, it.detail))
        return out

    def _block(self, w: Wave, now: float, wall: float) -> SampleBlock | None:
        ch = self.profile.channel(w.channel)
        if ch is None:
            self.unknown_channel_samples += len(w.samples)
            return None
        n = len(w.samples)
        if n == 0:
            return None
        st = self.channel_state(w.channel)
        missing = 0
        reason = ""
        if w.device_time_ns is not None:
            first_ns = w.device_time_ns - round((n - 1) * 1e9 / ch.fs)
            if st.last_device_ns is not None:
                steps = (first_ns - st.last_device_ns) * ch.fs / 1e9
                if steps > 1.5 and steps < ch.fs * 86400:
                    missing = round(steps) - 1
                    reason = "device time jump"
                elif steps < -ch.fs * 2:  # device clock went backwards (reset): re-learn, no jump
                    st.clockmap.reset()
                    if st.gap_pending and st.last_arrival is not None:
                        missing = max(0, round((now - st.last_arrival) * ch.fs) - n)
                        reason = "reconnect"
            st.last_device_ns = w.device_time_ns
            st.clockmap.update(w.device_time_ns / 1e9, now)
        elif st.gap_pending and st.last_arrival is not None:
            missing = max(0, round((now - st.last_arrival) * ch.fs) - n)
            reason = "reconnect"
        st.gap_pending = False
        if missing > 0:
            self.gaps.append(Gap(self.device_id, w.channel, st.next_seq, st.next_seq + missing, reason))
            st.next_seq += missing
        seq = st.next_seq
        st.next_seq += n
        st.last_arrival = now
        return SampleBlock(self.device_id, w.channel, ch.kind, ch.fs, ch.unit, ch.gain, seq,
                           np.asarray(w.samples, dtype=np.int32), now, wall)


_END = object()


class QueueTransport:
    """Base for transports fed by callbacks: outputs go through a queue; `fail()` ends the iteration."""

    def __init__(self, device_id: str, maxsize: int = 10_000) -> None:
        self.device_id = device_id
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.parse_errors = 0

    @property
    def corrupt_frames(self) -> int:
        """Corrupt frames dropped on this connection: packet parse errors plus the stream parser's count."""
        parser = getattr(self, "parser", None)
        corrupt = getattr(parser, "corrupt", 0)
        return self.parse_errors + (corrupt if isinstance(corrupt, int) else 0)

    async def open(self) -> None:
        """Connect and start streaming."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop streaming and disconnect (must not raise)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Output:
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[return-value]

    def put(self, outputs: list[Output]) -> None:
        """Queue outputs (drops, counted, when the consumer is far behind)."""
        for o in outputs:
            try:
                self._queue.put_nowait(o)
            except asyncio.QueueFull:
                self.dropped += 1

    def fail(self, why: str) -> None:
        """The link is lost: the consumer gets TransportError after the queued outputs."""
        self._force(TransportError(f"{self.device_id}: {why}"))

    def end(self) -> None:
        """The source ended cleanly."""
        self._force(_END)

    def _force(self, item: object) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self.dropped += 1


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0, rng: float | None = None) -> float:
    """Exponential backoff with "equal jitter": uniform in [top/2, top] (AWS Architecture Blog, 2015)."""
    import random

    top = min(cap, base * math.pow(2.0, max(0, attempt)))
    return top * (0.5 + 0.5 * (random.random() if rng is None else rng))
