"""Serial devices on pseudo-terminals / sockets through the real pyserial transport and the supervisor."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from vigil.edge.profiles import get_profile
from vigil.edge.supervisor import DeviceSupervisor
from vigil.edge.transports.base import Stamper
from vigil.edge.transports.serial import SerialTransport, line_settings, resolve_port
from vigil.errors import TransportError
from vigil.model import DeviceState, Metric, NumericReading, SampleBlock, TechnicalEvent, TechnicalKind
from vigil.testing.cms50_emulator import Cms50Emulator
from vigil.testing.datex_emulator import DatexEmulator

pytestmark = pytest.mark.timeout(60)


async def collect(sup: DeviceSupervisor, seconds: float) -> list:
    out: list = []

    async def run() -> None:
        async for o in sup:
            out.append(o)

    task = asyncio.create_task(run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return out


def events(outs: list, kind: TechnicalKind) -> list[bool]:
    return [o.active for o in outs if isinstance(o, TechnicalEvent) and o.kind is kind]


@pytest.fixture
def cms50(tmp_path: Path):
    emu = Cms50Emulator(tmp_path / "cms50", firmware="v46", keepalive_timeout_s=1.0).start()
    yield emu
    emu.stop()


async def test_cms50_v46_streams_with_keepalive(cms50: Cms50Emulator) -> None:
    profile = get_profile("contec-cms50d-plus")
    # keep-alive every 15 s × 0.03 = 0.45 s; the emulator stops 1.0 s after the last start
    sup = DeviceSupervisor("ox1", profile, lambda st: SerialTransport("ox1", profile, str(cms50.link), st,
                                                                      keepalive_scale=0.03))
    async with sup:
        outs = await collect(sup, 3.0)
    blocks = [o for o in outs if isinstance(o, SampleBlock)]
    n = sum(len(b.samples) for b in blocks)
    assert 150 <= n <= 200, n  # ~60 Hz for ~3 s, never stopped by the 1 s firmware timeout
    assert all(b.fs == 60 and b.channel == "pleth" for b in blocks)
    seqs = [(b.seq, b.end_seq) for b in blocks]
    assert all(a[1] == b[0] for a, b in zip(seqs, seqs[1:], strict=False))  # contiguous
    nums = {o.metric: o.value for o in outs if isinstance(o, NumericReading)}
    assert nums[Metric.SPO2] == 97 and nums[Metric.PULSE_RATE] == 72 and nums[Metric.PI] == 2.5
    await asyncio.sleep(0.2)  # the emulator reads the STOP written at close
    assert cms50.starts >= 5 and cms50.stops == 1
    assert events(outs, TechnicalKind.DEVICE_STALE) == []


async def test_cms50_v46_without_keepalive_goes_stale(cms50: Cms50Emulator) -> None:
    profile = get_profile("contec-cms50d-plus")
    sup = DeviceSupervisor("ox1", profile, lambda st: SerialTransport("ox1", profile, str(cms50.link), st,
                                                                      keepalive_scale=100), stale_after_s=0.5)
    async with sup:
        outs = await collect(sup, 2.2)
        assert sup.state is DeviceState.STALE
    assert events(outs, TechnicalKind.DEVICE_STALE) == [True]


async def test_cms50_unplug_replug_reconnects_with_gap(cms50: Cms50Emulator) -> None:
    profile = get_profile("contec-cms50d-plus")
    sup = DeviceSupervisor("ox1", profile, lambda st: SerialTransport("ox1", profile, str(cms50.link), st,
                                                                      keepalive_scale=0.03),
                           backoff_base_s=0.1, backoff_cap_s=0.2)
    outs: list = []

    async def run() -> None:
        async for o in sup:
            out_append(o)

    out_append = outs.append
    async with sup:
        task = asyncio.create_task(run())
        await asyncio.sleep(1.0)
        cms50.unplug()
        await asyncio.sleep(0.8)
        assert sup.state in (DeviceState.LOST, DeviceState.CONNECTING)
        cms50.plug()
        await asyncio.sleep(1.5)
        assert sup.state is DeviceState.STREAMING
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert events(outs, TechnicalKind.DEVICE_DISCONNECTED) == [True, False]
    assert sup.connects == 2 and sup.failures >= 1
    gaps = sup.gaps
    assert len(gaps) == 1 and gaps[0].reason == "reconnect"
    assert 25 <= gaps[0].to_seq - gaps[0].from_seq <= 80  # ~0.8-1.2 s at 60 Hz lost
    blocks = [o for o in outs if isinstance(o, SampleBlock)]
    jumps = [b.seq - a.end_seq for a, b in zip(blocks, blocks[1:], strict=False) if b.seq != a.end_seq]
    assert jumps == [gaps[0].to_seq - gaps[0].from_seq]


async def test_cms50_classic_parity_override_and_corruption(tmp_path: Path) -> None:
    profile = get_profile("contec-cms50d-plus-classic")  # the shipped profile (8O1 on the wire; ptys need N)
    assert profile.line is not None and profile.line.parity == "O" and profile.line.xonxoff and not profile.commands
    emu = Cms50Emulator(tmp_path / "c", firmware="classic").start()
    emu.garbage_every = 30
    emu.spo2, emu.pulse_rate = 93, 130
    try:
        holder: list[SerialTransport] = []

        def factory(st: Stamper) -> SerialTransport:
            t = SerialTransport("ox2", profile, str(emu.link), st, line={"baudrate": 19200, "parity": "N", "xonxoff": True})
            holder.append(t)
            return t

        sup = DeviceSupervisor("ox2", profile, factory)
        async with sup:
            outs = await collect(sup, 1.5)
    finally:
        emu.stop()
    nums = {o.metric: o.value for o in outs if isinstance(o, NumericReading)}
    assert nums[Metric.SPO2] == 93 and nums[Metric.PULSE_RATE] == 130
    parser = holder[0].parser
    assert parser.frames >= 60 and parser.corrupt >= 2
    assert holder[0].settings.baudrate == 19200 and holder[0].settings.parity == "N"


async def test_cms50_finger_out_raises_lead_off(cms50: Cms50Emulator) -> None:
    profile = get_profile("contec-cms50d-plus")
    sup = DeviceSupervisor("ox1", profile, lambda st: SerialTransport("ox1", profile, str(cms50.link), st,
                                                                      keepalive_scale=0.03))
    async with sup:
        task = asyncio.create_task(collect(sup, 2.0))
        await asyncio.sleep(0.6)
        cms50.finger_out = True
        await asyncio.sleep(0.6)
        cms50.finger_out = False
        outs = await task
    assert events(outs, TechnicalKind.LEAD_OFF) == [True, False]
    assert any(isinstance(o, NumericReading) and o.metric is Metric.SPO2 and math.isnan(o.value) for o in outs)


async def test_datex_over_socket_with_profile_parity_e() -> None:
    emu = DatexEmulator(heart_rate=75, spo2=96, numerics_interval_s=0.3).start()
    emu.corrupt_every = 7
    profile = get_profile("datex-s5")
    assert line_settings(profile).parity == "E"  # socket:// ignores parity; ptys here would reject it
    holder: list[SerialTransport] = []

    def factory(st: Stamper) -> SerialTransport:
        holder.append(SerialTransport("s5", profile, emu.url, st))
        return holder[-1]

    sup = DeviceSupervisor("s5", profile, factory, backoff_base_s=0.1, backoff_cap_s=0.2)
    try:
        async with sup:
            task = asyncio.create_task(collect(sup, 3.0))
            await asyncio.sleep(1.2)
            emu.unplug()
            await asyncio.sleep(0.5)
            emu.plug()
            outs = await task
    finally:
        emu.stop()
    nums = [o for o in outs if isinstance(o, NumericReading)]
    assert {o.metric: o.value for o in nums}[Metric.HR] == 75
    assert {o.metric: o.value for o in nums if "nibp" in o.flags}[Metric.SBP] == 120
    assert {o.metric: o.value for o in nums}[Metric.SPO2] == 96
    blocks = [o for o in outs if isinstance(o, SampleBlock)]
    assert blocks and all(b.fs == 300 and b.unit == "uV" for b in blocks)
    assert max(max(b.samples) for b in blocks) == 1000  # 100 × 10 µV R-peak
    assert events(outs, TechnicalKind.DEVICE_DISCONNECTED) == [True, False]
    assert sum(t.parser.corrupt for t in holder) >= 1
    assert [r[0] for r in emu.requests[:2]] == [0, 1]  # numerics request, then ECG waveform request


def test_resolve_port() -> None:
    assert resolve_port("/dev/ttyUSB0") == "/dev/ttyUSB0"
    with pytest.raises(TransportError, match="no USB serial device 10c4:ea60"):
        resolve_port("usb:10c4:ea60")
    with pytest.raises(TransportError):
        resolve_port("usb:zz:ea60")


async def test_open_missing_port_fails_cleanly(tmp_path: Path) -> None:
    profile = get_profile("contec-cms50d-plus")
    from vigil.clock import SystemClock

    t = SerialTransport("x", profile, str(tmp_path / "nope"), Stamper("x", profile, SystemClock()))
    with pytest.raises(TransportError, match="cannot open"):
        async with t:
            pass
