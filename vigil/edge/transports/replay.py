"""A recorded signal (WFDB or BIDMC CSV) played as a live device.

The schedule is pure: `replay_events(record)` yields `(t, item)` in record time, where `t` is the
moment the item would arrive from a real device (the end of a sample block; the time of a numeric).
Two players consume it:

* `ReplayTransport` — the asyncio transport for the daemon: sleeps until each item is due at
  `speed` × real time on the injected clock and stamps it with that clock.
* `replay_fast(...)` — a synchronous generator for `vigil replay` and tests: "as fast as
  possible", advancing a `SimulatedClock` to each item's due time.

Blocks are `block_s` long (0.25 s by default, like a BLE ECG strap); `seq` counts samples from the
start of the replay and continues across loops, so the stream never shows a false gap.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from vigil.clock import Clock, SimulatedClock
from vigil.edge.records import Record, RecordChannel, load_record
from vigil.model import Metric, NumericReading, SampleBlock

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BlockItem:
    """A block of one channel: samples [seq, seq + len) of the replay."""

    channel: RecordChannel
    seq: int
    start: int  # index into channel.samples
    n: int  # number of samples


@dataclass(frozen=True, slots=True)
class NumericItem:
    """A numeric reading of the replay."""

    metric: Metric
    value: float


ReplayItem = BlockItem | NumericItem


def _channel_events(ch: RecordChannel, block_s: float, loop: bool, order: int) -> Iterator[tuple[float, int, int, ReplayItem]]:
    block = max(1, round(ch.fs * block_s))
    total = len(ch.samples)
    seq = 0
    while True:
        for start in range(0, total, block):
            n = min(block, total - start)
            seq_end = seq + n
            yield seq_end / ch.fs, 0, order, BlockItem(ch, seq, start, n)
            seq = seq_end
        if not loop or total == 0:
            return


def _numeric_events(rec: Record, loop: bool) -> Iterator[tuple[float, int, int, ReplayItem]]:
    period = rec.duration_s
    k = 0
    while True:
        for num in rec.numerics:
            if num.t <= period:
                yield num.t + k * period, 1, 0, NumericItem(num.metric, num.value)
        k += 1
        if not loop or period <= 0 or not rec.numerics:
            return


def replay_events(rec: Record, block_s: float = 0.25, loop: bool = False) -> Iterator[tuple[float, ReplayItem]]:
    """The device's arrivals in record time: blocks at their last sample, numerics at their time."""
    streams = [_channel_events(ch, block_s, loop, i) for i, ch in enumerate(rec.channels)]
    streams.append(_numeric_events(rec, loop))
    for t, _kind, _order, item in heapq.merge(*streams, key=lambda e: (e[0], e[1], e[2])):
        yield t, item


def to_output(device_id: str, item: ReplayItem, t_mono: float, wall: float) -> SampleBlock | NumericReading:
    """Stamp one replay item as the model type a real device would produce."""
    if isinstance(item, BlockItem):
        ch = item.channel
        return SampleBlock(device_id, ch.name, ch.kind, ch.fs, ch.unit, ch.gain, item.seq,
                           ch.samples[item.start:item.start + item.n], t_mono, wall)
    return NumericReading(device_id, item.metric, item.value, t_mono, wall)


class ReplayTransport:
    """Plays a loaded record on `clock` at `speed` × real time (async transport contract)."""

    def __init__(self, device_id: str, record: Record, clock: Clock, *, speed: float = 1.0, loop: bool = True,
                 block_s: float = 0.25) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.device_id = device_id
        self.record = record
        self.clock = clock
        self.speed = speed
        self.loop = loop
        self.block_s = block_s
        self._events: Iterator[tuple[float, ReplayItem]] | None = None
        self._t0 = 0.0
        self.delivered = 0

    async def __aenter__(self) -> Self:
        self._events = replay_events(self.record, self.block_s, self.loop)
        self._t0 = self.clock.monotonic()
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._events = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SampleBlock | NumericReading:
        if self._events is None:
            raise StopAsyncIteration
        try:
            t, item = next(self._events)
        except StopIteration:
            raise StopAsyncIteration from None
        due = self._t0 + t / self.speed
        while True:
            now = self.clock.monotonic()
            if now >= due:
                break
            await asyncio.sleep(due - now)
        self.delivered += 1
        return to_output(self.device_id, item, self.clock.monotonic(), self.clock.wall())


def replay_fast(device_id: str, record: Record, clock: SimulatedClock, *, loop: bool = False,
                block_s: float = 0.25, until_s: float | None = None) -> Iterator[SampleBlock | NumericReading]:
    """As fast as possible: advance `clock` to each arrival and yield it (stops at `until_s` record seconds)."""
    t0 = clock.monotonic()
    for t, item in replay_events(record, block_s, loop):
        if until_s is not None and t > until_s:
            return
        clock.set(t0 + t)
        yield to_output(device_id, item, clock.monotonic(), clock.wall())


def open_record(path: str | Path, channel: int | str | None = None, start_s: float = 0.0,
                cuff_interval_s: float = 60.0) -> Record:
    """Load a record for replay (RecordError names the file and the reason)."""
    return load_record(path, channel=channel, start_s=start_s, cuff_interval_s=cuff_interval_s)
