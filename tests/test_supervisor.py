"""DeviceSupervisor unit tests: backoff, staleness, disconnect conditions, bounded close, counters.

The transport here is a scripted connection built on the real `QueueTransport` base and the real
CMS50D+ 4.6 stream parser and `Stamper`; only the link itself (connect/drop) is driven by the test.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from vigil.clock import SystemClock
from vigil.edge.parsers import cms50d
from vigil.edge.parsers.registry import stream_parser
from vigil.edge.profiles import get_profile
from vigil.edge.supervisor import DeviceSupervisor, cancel_and_wait
from vigil.edge.transports.base import QueueTransport, Stamper, backoff_delay
from vigil.errors import TransportError
from vigil.model import DeviceState, Metric, NumericReading, SampleBlock, TechnicalEvent, TechnicalKind

pytestmark = pytest.mark.timeout(30)

PROFILE = get_profile("contec-cms50d-plus")  # pleth 60 Hz + SpO2/PR numerics


def packet(k: int, spo2: int = 97) -> bytes:
    """One CMS50D+ 4.6 live packet (pleth sample + numerics)."""
    s = cms50d.OxiSample(pleth=50 + k % 40, pulse_rate=72.0, spo2=float(spo2), signal=6, bar=3, beep=False,
                         finger_out=False, searching=False, pi=2.5)
    return cms50d.encode_v46(s)


class FakeDevice:
    """The far end: decides whether connects succeed and holds the current link."""

    def __init__(self) -> None:
        self.fail_connects = 0  # the next N connects are refused
        self.hang_connect = False  # connects never complete
        self.swallow_cancels = 0  # the reader swallows this many cancellations (3.11 wait_for bug)
        self.raise_in_read: BaseException | None = None  # a transport bug on the next read
        self.connect_times: list[float] = []
        self.links: list[FakeLink] = []
        self.closed = 0
        self.last_sent = math.nan

    def factory(self, stamper: Stamper) -> FakeLink:
        """The supervisor's transport factory."""
        return FakeLink(self, stamper)

    @property
    def link(self) -> FakeLink | None:
        """The open link, if any."""
        return self.links[-1] if self.links and not self.links[-1].is_closed else None


class FakeLink(QueueTransport):
    """One scripted connection feeding bytes through the real stream parser."""

    def __init__(self, dev: FakeDevice, stamper: Stamper) -> None:
        super().__init__(stamper.device_id)
        self.dev = dev
        self.stamper = stamper
        self.parser = stream_parser("cms50d_v46")
        self.is_closed = False

    async def open(self) -> None:
        self.dev.connect_times.append(time.monotonic())
        if self.dev.hang_connect:
            await asyncio.Event().wait()
        if self.dev.fail_connects > 0:
            self.dev.fail_connects -= 1
            raise TransportError("connection refused")
        self.dev.links.append(self)

    async def close(self) -> None:
        self.is_closed = True
        self.dev.closed += 1

    async def __anext__(self):  # type: ignore[no-untyped-def]
        while True:
            try:
                if self.dev.raise_in_read is not None:
                    exc, self.dev.raise_in_read = self.dev.raise_in_read, None
                    raise exc
                return await super().__anext__()
            except asyncio.CancelledError:
                if self.dev.swallow_cancels > 0:
                    self.dev.swallow_cancels -= 1
                    continue
                raise

    def send(self, data: bytes) -> None:
        """Bytes arrive from the device."""
        self.put(self.stamper.stamp(self.parser.feed(data)))


async def pump_bytes(dev: FakeDevice, stop: asyncio.Event, per_tick: int = 3, tick_s: float = 0.05,
                     garbage: bytes = b"") -> None:
    """Stream packets (60/s) to whatever link is open until `stop`."""
    k = 0
    while not stop.is_set():
        link = dev.link
        if link is not None:
            chunk = b"".join(packet(k + i) for i in range(per_tick))
            link.send(chunk + garbage)
            dev.last_sent = time.monotonic()
            k += per_tick
        await asyncio.sleep(tick_s)


class Collector:
    """Consumes a supervisor in the background and keeps every output with its arrival time."""

    def __init__(self, sup: DeviceSupervisor) -> None:
        self.sup = sup
        self.outs: list[tuple[float, object]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for o in self.sup:
            self.outs.append((time.monotonic(), o))

    def events(self, kind: TechnicalKind) -> list[bool]:
        return [o.active for _t, o in self.outs if isinstance(o, TechnicalEvent) and o.kind is kind]

    def event_times(self, kind: TechnicalKind, active: bool) -> list[float]:
        return [t for t, o in self.outs if isinstance(o, TechnicalEvent) and o.kind is kind and o.active is active]

    def blocks(self) -> list[SampleBlock]:
        return [o for _t, o in self.outs if isinstance(o, SampleBlock)]


async def wait_until(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def test_backoff_delay_bounds() -> None:
    assert backoff_delay(0, 0.5, 30, rng=0.0) == 0.25 and backoff_delay(0, 0.5, 30, rng=1.0) == 0.5
    assert backoff_delay(3, 0.5, 30, rng=1.0) == 4.0
    assert backoff_delay(20, 0.5, 30, rng=0.0) == 15.0 and backoff_delay(20, 0.5, 30, rng=1.0) == 30.0


async def test_reconnect_backoff_grows_then_resets_after_streaming() -> None:
    dev = FakeDevice()
    dev.fail_connects = 5
    sup = DeviceSupervisor("ox", PROFILE, dev.factory, SystemClock(), stale_after_s=5,
                           backoff_base_s=0.04, backoff_cap_s=0.32)
    stop = asyncio.Event()
    async with sup:
        col = Collector(sup)
        feeder = asyncio.create_task(pump_bytes(dev, stop))
        # the state changes before the collector task has read the events queued with it: wait for the clear too
        await wait_until(lambda: len(dev.connect_times) == 6 and sup.state is DeviceState.STREAMING
                         and False in col.events(TechnicalKind.DEVICE_DISCONNECTED))
        assert sup.failures == 5 and sup.connects == 1
        assert col.events(TechnicalKind.DEVICE_DISCONNECTED) == [True, False]  # raised once, not per attempt
        await asyncio.sleep(0.2)
        dev.link.fail("radio drop")  # type: ignore[union-attr]
        await wait_until(lambda: len(dev.connect_times) == 7 and sup.state is DeviceState.STREAMING)
        stop.set()
        await feeder
    await col.task
    gaps = [b - a for a, b in zip(dev.connect_times, dev.connect_times[1:], strict=False)]
    # equal jitter: attempt k waits uniform [top/2, top], top = min(cap, base * 2**k); k grows 1, 2, 3, 4, 4
    tops = [0.08, 0.16, 0.32, 0.32, 0.32]
    for g, top in zip(gaps[:5], tops, strict=True):
        assert top / 2 - 0.005 <= g <= top + 0.06, (gaps, tops)
    assert gaps[1] + gaps[2] > gaps[0] * 2  # it does grow
    # after a connection that streamed, the count starts again: attempt 0 waits [base/2, base] (+ stream time)
    assert col.events(TechnicalKind.DEVICE_DISCONNECTED) == [True, False, True, False]
    assert sup.failures == 6 and sup.connects == 2 and sup.state is DeviceState.STOPPED


async def test_stale_timer_raises_and_clears_device_stale() -> None:
    dev = FakeDevice()
    sup = DeviceSupervisor("ox", PROFILE, dev.factory, SystemClock(), stale_after_s=0.3)
    stop = asyncio.Event()
    async with sup:
        col = Collector(sup)
        feeder = asyncio.create_task(pump_bytes(dev, stop))
        await asyncio.sleep(0.5)
        assert sup.state is DeviceState.STREAMING
        stop.set()
        await feeder
        last_data = dev.last_sent  # the last bytes left the device here; they arrived at or after it
        await asyncio.sleep(0.8)
        assert sup.state is DeviceState.STALE
        stop.clear()
        feeder = asyncio.create_task(pump_bytes(dev, stop))
        await asyncio.sleep(0.3)
        assert sup.state is DeviceState.STREAMING
        stop.set()
        await feeder
    await col.task
    assert col.events(TechnicalKind.DEVICE_STALE) == [True, False]
    (raised,) = col.event_times(TechnicalKind.DEVICE_STALE, True)
    assert 0.3 <= raised - last_data <= 0.6  # no data for stale_after_s, not before (upper: scheduling slack)
    assert col.events(TechnicalKind.DEVICE_DISCONNECTED) == []  # stale is not lost: the link stayed up
    assert sup.connects == 1 and sup.failures == 0


async def test_connected_but_silent_goes_stale_without_disconnect() -> None:
    dev = FakeDevice()
    sup = DeviceSupervisor("ox", PROFILE, dev.factory, SystemClock(), stale_after_s=0.2)
    async with sup:
        col = Collector(sup)
        await asyncio.sleep(0.5)
        assert sup.state is DeviceState.STALE
    await col.task
    assert col.events(TechnicalKind.DEVICE_STALE) == [True]
    stale = next(o for _t, o in col.outs if isinstance(o, TechnicalEvent))
    assert stale.device_id == "ox" and "0.2 s" in stale.detail


async def test_disconnect_raises_technical_condition_and_records_gap() -> None:
    dev = FakeDevice()
    sup = DeviceSupervisor("ox", PROFILE, dev.factory, SystemClock(), stale_after_s=5,
                           backoff_base_s=0.4, backoff_cap_s=0.4)
    stop = asyncio.Event()
    async with sup:
        col = Collector(sup)
        feeder = asyncio.create_task(pump_bytes(dev, stop))
        await asyncio.sleep(0.5)
        dev.link.fail("unplugged")  # type: ignore[union-attr]
        await asyncio.sleep(0.1)
        assert sup.state is DeviceState.LOST
        disc = [o for _t, o in col.outs if isinstance(o, TechnicalEvent)]
        assert [(e.kind, e.active, e.device_id) for e in disc] == [
            (TechnicalKind.DEVICE_DISCONNECTED, True, "ox")]
        await wait_until(lambda: sup.state is DeviceState.STREAMING)
        await asyncio.sleep(0.3)
        stop.set()
        await feeder
    await col.task
    assert col.events(TechnicalKind.DEVICE_DISCONNECTED) == [True, False]
    (gap,) = sup.gaps
    assert gap.reason == "reconnect" and gap.channel == "pleth"
    lost_s = (gap.to_seq - gap.from_seq) / 60
    assert 0.15 <= lost_s <= 0.6  # backoff [0.2, 0.4] s plus a tick of the feeder
    blocks = col.blocks()
    jumps = [b.seq - a.end_seq for a, b in zip(blocks, blocks[1:], strict=False) if b.seq != a.end_seq]
    assert jumps == [gap.to_seq - gap.from_seq]  # the gap is a seq jump, never padded or overlapping
    assert dev.closed == 2  # both connections were closed


async def test_corrupt_frames_are_counted_across_connections() -> None:
    dev = FakeDevice()
    sup = DeviceSupervisor("ox", PROFILE, dev.factory, SystemClock(), stale_after_s=5,
                           backoff_base_s=0.02, backoff_cap_s=0.02)
    stop = asyncio.Event()
    async with sup:
        col = Collector(sup)
        # every 3-packet chunk is followed by a truncated packet, which the parser drops on the next sync byte
        feeder = asyncio.create_task(pump_bytes(dev, stop, garbage=b"\x01\x80\x80"))
        await asyncio.sleep(0.5)
        first = dev.link
        assert first is not None and first.parser.corrupt >= 5
        first.fail("unplugged")
        await wait_until(lambda: dev.link is not None and dev.link is not first)
        await asyncio.sleep(0.4)
        second = dev.link
        assert second is not None and second.parser.corrupt >= 4
        assert sup.corrupt_frames == first.parser.corrupt + second.parser.corrupt
        stop.set()
        await feeder
    await col.task
    stats = sup.stats()
    assert stats["corrupt_frames"] == first.corrupt_frames + second.corrupt_frames
    assert stats["connects"] == 2 and stats["failures"] == 1 and stats["gaps"] == len(sup.gaps)
    good = sum(len(b.samples) for b in col.blocks())
    assert good == first.parser.frames + second.parser.frames  # every good frame still got through
    spo2 = [o.value for _t, o in col.outs if isinstance(o, NumericReading) and o.metric is Metric.SPO2]
    assert spo2 and set(spo2) == {97.0}


async def test_transport_bugs_are_link_failures_not_a_dead_supervisor() -> None:
    dev = FakeDevice()
    dev.raise_in_read = RuntimeError("bug in a transport")
    sup = DeviceSupervisor("ox", PROFILE, dev.factory, SystemClock(), stale_after_s=5,
                           backoff_base_s=0.02, backoff_cap_s=0.05)
    calls = {"n": 0}

    def flaky_factory(st: Stamper) -> FakeLink:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("bad line settings")  # the factory itself throws once
        return dev.factory(st)

    sup.factory = flaky_factory
    stop = asyncio.Event()
    async with sup:
        col = Collector(sup)
        feeder = asyncio.create_task(pump_bytes(dev, stop))
        await wait_until(lambda: sup.state is DeviceState.STREAMING, 3)
        assert sup._task is not None and not sup._task.done()
        stop.set()
        await feeder
    await col.task
    assert calls["n"] == 3 and sup.failures == 2
    assert col.events(TechnicalKind.DEVICE_DISCONNECTED) == [True, False]


@pytest.mark.parametrize("where", ["connecting", "streaming", "backoff", "swallowed-cancel"])
async def test_close_returns_promptly_and_ends_iteration(where: str) -> None:
    dev = FakeDevice()
    sup = DeviceSupervisor("ox", PROFILE, dev.factory, SystemClock(), stale_after_s=5,
                           backoff_base_s=30, backoff_cap_s=30)
    stop = asyncio.Event()
    feeder = asyncio.create_task(pump_bytes(dev, stop))
    if where == "connecting":
        dev.hang_connect = True
    elif where == "backoff":
        dev.fail_connects = 1  # then a 15-30 s backoff sleep
    await sup.__aenter__()
    col = Collector(sup)
    await asyncio.sleep(0.3)
    if where == "swallowed-cancel":
        dev.swallow_cancels = 3  # the reader ignores the first three cancellations
    expected = {"connecting": DeviceState.CONNECTING, "backoff": DeviceState.LOST}.get(where, DeviceState.STREAMING)
    assert sup.state is expected
    t0 = time.monotonic()
    await asyncio.wait_for(sup.close(), 5)
    took = time.monotonic() - t0
    stop.set()
    await feeder
    assert took < 1.0, took
    await asyncio.wait_for(col.task, 1)  # the consumer's `async for` ended
    assert sup.state is DeviceState.STOPPED
    if where in ("streaming", "swallowed-cancel"):
        assert dev.closed == 1 and dev.swallow_cancels == 0
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(("supervisor-", "pump-"))]


async def test_close_gives_up_on_a_task_that_never_stops() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    t0 = time.monotonic()
    assert await cancel_and_wait(task, timeout_s=0.3) is False
    assert 0.25 <= time.monotonic() - t0 < 0.6
    release.set()
    assert await cancel_and_wait(task, timeout_s=1) is True


async def test_low_battery_hysteresis_and_lead_off_passthrough() -> None:
    dev = FakeDevice()
    sup = DeviceSupervisor("ox", PROFILE, dev.factory, SystemClock(), stale_after_s=5, low_battery_percent=15)
    from vigil.edge.parsers.items import Condition, Numeric

    async with sup:
        col = Collector(sup)
        await wait_until(lambda: dev.link is not None)
        link = dev.link
        assert link is not None
        for pct in (40, 14, 12, 17, 19, 20, 50, 10):
            link.put(link.stamper.stamp([Numeric(Metric.BATTERY, float(pct))]))
        link.put(link.stamper.stamp([Numeric(Metric.BATTERY, math.nan)]))  # unknown level: no change
        for active in (True, True, False):
            link.put(link.stamper.stamp([Condition(TechnicalKind.LEAD_OFF, active, "finger out")]))
        await asyncio.sleep(0.1)
    await col.task
    # below 15 % raises; it clears only at >= 20 % (15 + 5), not at 17 or 19
    assert col.events(TechnicalKind.LOW_BATTERY) == [True, False, True]
    assert col.events(TechnicalKind.LEAD_OFF) == [True, False]


async def test_technical_events_survive_a_full_output_queue() -> None:
    dev = FakeDevice()
    sup = DeviceSupervisor("ox", PROFILE, dev.factory, SystemClock(), stale_after_s=0.3, maxsize=50)
    stop = asyncio.Event()
    async with sup:  # nobody consumes: the queue fills with data, then the device goes silent
        feeder = asyncio.create_task(pump_bytes(dev, stop, per_tick=30, tick_s=0.01))
        await asyncio.sleep(0.3)
        stop.set()
        await feeder
        await asyncio.sleep(0.6)
        assert sup.state is DeviceState.STALE and sup.dropped > 0
        drained = []
        while not sup._out.empty():
            drained.append(sup._out.get_nowait())
    stale = [o for o in drained if isinstance(o, TechnicalEvent) and o.kind is TechnicalKind.DEVICE_STALE]
    assert [e.active for e in stale] == [True]


async def test_clean_end_of_source_stops_and_ends_iteration() -> None:
    dev = FakeDevice()
    sup = DeviceSupervisor("ox", PROFILE, dev.factory, SystemClock(), stale_after_s=5)
    async with sup:
        col = Collector(sup)
        await wait_until(lambda: dev.link is not None)
        link = dev.link
        assert link is not None
        link.send(packet(0) + packet(1))
        link.end()
        await asyncio.wait_for(col.task, 2)
        assert sup.state is DeviceState.STOPPED and sup.connects == 1 and sup.failures == 0
    assert len(col.blocks()) == 1 and col.events(TechnicalKind.DEVICE_DISCONNECTED) == []
