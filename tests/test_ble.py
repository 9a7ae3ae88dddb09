"""BLE through bleak's own BleakClient/BleakScanner API with the bumble backend (real GATT, in-process)."""

from __future__ import annotations

import asyncio

import pytest
from bleak import BleakClient, BleakScanner

from vigil.clock import SystemClock
from vigil.edge.parsers import polar_pmd
from vigil.edge.profiles import get_profile
from vigil.edge.supervisor import DeviceSupervisor
from vigil.edge.transports.base import Stamper
from vigil.edge.transports.ble import BleTransport, reset_adapter_slots, scan
from vigil.model import DeviceState, Metric, NumericReading, SampleBlock, TechnicalEvent, TechnicalKind
from vigil.testing.bumble_backend import (
    BloodPressurePeripheral,
    BumbleClient,
    BumbleScanner,
    HeartRatePeripheral,
    PolarEcgPeripheral,
    PulseOximeterPeripheral,
    VirtualAir,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def air():
    reset_adapter_slots()
    a = await VirtualAir().start()
    yield a
    await a.close()


def transport_factory(air: VirtualAir, profile_name: str, address: str, **kw):
    profile = get_profile(profile_name)

    def make(st: Stamper) -> BleTransport:
        return BleTransport(st.device_id, profile, address, st, backend=BumbleClient, scanner_backend=BumbleScanner,
                            backend_kwargs={"air": air}, scan_timeout_s=1.0, **kw)

    return profile, make


async def run_for(sup: DeviceSupervisor, seconds: float, actions=None) -> list:
    outs: list = []

    async def consume() -> None:
        async for o in sup:
            outs.append(o)

    task = asyncio.create_task(consume())
    if actions:
        await actions()
    else:
        await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return outs


def events(outs: list, kind: TechnicalKind) -> list[bool]:
    return [o.active for o in outs if isinstance(o, TechnicalEvent) and o.kind is kind]


async def test_plain_bleak_api_against_virtual_polar(air: VirtualAir) -> None:
    h10 = await air.add(PolarEcgPeripheral("F1:00:00:00:00:01"))
    found = await BleakScanner.find_device_by_address("F1:00:00:00:00:01", timeout=1.0, backend=BumbleScanner, air=air)
    assert found is not None and found.name == "Polar H10 SIM00001"
    frames: list[bytes] = []
    responses: list[bytes] = []
    async with BleakClient(found, backend=BumbleClient, air=air) as client:
        assert client.mtu_size == 232
        assert await client.read_gatt_char(polar_pmd.PMD_CONTROL) == bytearray(b"\x0f\x05\x00")
        await client.start_notify(polar_pmd.PMD_CONTROL, lambda _c, d: responses.append(bytes(d)))
        await client.start_notify(polar_pmd.PMD_DATA, lambda _c, d: frames.append(bytes(d)))
        await client.write_gatt_char(polar_pmd.PMD_CONTROL, polar_pmd.start_command(), response=True)
        await asyncio.sleep(1.3)
        await client.write_gatt_char(polar_pmd.PMD_CONTROL, polar_pmd.start_command(), response=True)
        await asyncio.sleep(0.05)
        assert (await client.read_gatt_char("2a19")) == bytearray(b"\x55")
    assert [polar_pmd.parse_control_response(r).status for r in responses] == [0, 6]
    assert len(frames) >= 2 and all(len(f) == 10 + 73 * 3 for f in frames)  # 229-byte frames fit the MTU
    first, second = (polar_pmd.parse_frame(f) for f in frames[:2])
    assert len(first.samples) == 73
    assert second.timestamp_ns - first.timestamp_ns == pytest.approx(73 / 130 * 1e9, abs=1e3)
    assert h10.commands[0] == polar_pmd.start_command()


async def test_scan_matches_profiles(air: VirtualAir) -> None:
    await air.add(PolarEcgPeripheral("F1:00:00:00:00:01"))
    await air.add(HeartRatePeripheral("F1:00:00:00:00:02"))
    await air.add(BloodPressurePeripheral("F1:00:00:00:00:03"))
    await air.add(PulseOximeterPeripheral("F1:00:00:00:00:04"))
    found = {d["address"]: d for d in await scan(0.5, BumbleScanner, {"air": air})}
    assert {a: d["profile"] for a, d in found.items()} == {
        "F1:00:00:00:00:01": "polar-h10", "F1:00:00:00:00:02": "generic-heart-rate",
        "F1:00:00:00:00:03": "generic-blood-pressure", "F1:00:00:00:00:04": "generic-pulse-oximeter"}
    assert found["F1:00:00:00:00:01"]["manufacturer_ids"] == [107]
    assert all(d["battery"] is None for d in found.values())  # not asked for: no connections


async def test_scan_reads_battery_levels_of_matched_devices(air: VirtualAir) -> None:
    await air.add(HeartRatePeripheral("F1:00:00:00:00:02", battery=37))
    await air.add(PulseOximeterPeripheral("F1:00:00:00:00:04", battery=91))
    found = {d["address"]: d for d in await scan(0.5, BumbleScanner, {"air": air}, battery=True,
                                                 client_backend=BumbleClient, battery_timeout=3.0)}
    assert {a: d["battery"] for a, d in found.items()} == {"F1:00:00:00:00:02": 37, "F1:00:00:00:00:04": 91}


async def test_polar_ecg_stream_through_supervisor(air: VirtualAir) -> None:
    h10 = await air.add(PolarEcgPeripheral("F1:00:00:00:00:01", speed=4.0, heart_rate=75))
    profile, make = transport_factory(air, "polar-h10", "F1:00:00:00:00:01", battery_poll_s=0.5)
    sup = DeviceSupervisor("h10", profile, make)
    async with sup:
        outs = await run_for(sup, 2.0)
    await asyncio.sleep(0.1)
    assert h10.commands[-1] == polar_pmd.stop_command()  # STOP written when leaving
    blocks = [o for o in outs if isinstance(o, SampleBlock)]
    assert len(blocks) >= 8 and all(b.fs == 130 and b.unit == "uV" and len(b.samples) == 73 for b in blocks)
    assert all(a.end_seq == b.seq for a, b in zip(blocks, blocks[1:], strict=False))
    assert max(int(b.samples.max()) for b in blocks) > 1000
    nums = {o.metric: o.value for o in outs if isinstance(o, NumericReading)}
    assert nums[Metric.HR] == 75 and nums[Metric.BATTERY] == 85 and nums[Metric.RR] == pytest.approx(819 * 1000 / 1024)


async def test_bp_and_oximeter_and_hr_profiles(air: VirtualAir) -> None:
    await air.add(BloodPressurePeripheral("F1:00:00:00:00:03", speed=5.0, reading=(131, 84, 99, 66)))
    ox = await air.add(PulseOximeterPeripheral("F1:00:00:00:00:04", spo2=95, pulse_rate=71, rate_hz=5))
    await air.add(HeartRatePeripheral("F1:00:00:00:00:02", heart_rate=58, speed=5.0))
    sups = []
    for name, addr in (("generic-blood-pressure", "F1:00:00:00:00:03"), ("generic-pulse-oximeter", "F1:00:00:00:00:04"),
                       ("generic-heart-rate", "F1:00:00:00:00:02")):
        profile, make = transport_factory(air, name, addr)
        sups.append(DeviceSupervisor(addr[-2:], profile, make))
    outs: dict[str, list] = {}
    async with sups[0], sups[1], sups[2]:
        async def actions() -> None:
            await asyncio.sleep(1.0)
            ox.sensor_off = True
            await asyncio.sleep(0.6)
            ox.sensor_off = False
            await asyncio.sleep(0.6)

        results = await asyncio.gather(run_for(sups[0], 2.2), run_for(sups[1], 0, actions), run_for(sups[2], 2.2))
        outs = dict(zip(("bp", "ox", "hr"), results, strict=True))
    bp = {o.metric: o.value for o in outs["bp"] if isinstance(o, NumericReading)}
    assert (bp[Metric.SBP], bp[Metric.DBP], bp[Metric.MAP], bp[Metric.PULSE_RATE]) == (131, 84, 99, 66)
    cuff = [o.value for o in outs["bp"] if isinstance(o, NumericReading) and o.metric is Metric.CUFF_PRESSURE]
    assert cuff[:4] == [40, 80, 120, 160]
    assert {o.metric: o.value for o in outs["ox"] if isinstance(o, NumericReading)}[Metric.SPO2] == 95
    assert events(outs["ox"], TechnicalKind.LEAD_OFF) == [True, False]
    assert {o.metric: o.value for o in outs["hr"] if isinstance(o, NumericReading)}[Metric.HR] == 58


async def test_disconnect_storm_reconnects_and_records_gaps(air: VirtualAir) -> None:
    h10 = await air.add(PolarEcgPeripheral("F1:00:00:00:00:01", speed=2.0))
    profile, make = transport_factory(air, "polar-h10", "F1:00:00:00:00:01")
    sup = DeviceSupervisor("h10", profile, make, backoff_base_s=0.05, backoff_cap_s=0.2)

    async def storm() -> None:
        await asyncio.sleep(0.8)
        for _ in range(6):  # six radio drops in quick succession
            await h10.drop_connections()
            await asyncio.sleep(0.35)
        await asyncio.sleep(1.5)
        assert sup.state is DeviceState.STREAMING

    async with sup:
        outs = await run_for(sup, 0, storm)
    disc = events(outs, TechnicalKind.DEVICE_DISCONNECTED)
    assert disc and disc[0] is True and disc[-1] is False
    assert all(a != b for a, b in zip(disc, disc[1:], strict=False))  # strictly alternating, no duplicates
    assert sup.connects >= 4 and h10.connections_seen == sup.connects
    blocks = [o for o in outs if isinstance(o, SampleBlock)]
    seq_jumps = sum(1 for a, b in zip(blocks, blocks[1:], strict=False) if b.seq > a.end_seq)
    assert seq_jumps >= 1 and len(sup.gaps) == seq_jumps
    assert all(b.seq >= a.end_seq for a, b in zip(blocks, blocks[1:], strict=False))  # never overlapping


async def test_out_of_range_goes_lost_then_returns(air: VirtualAir) -> None:
    hr = await air.add(HeartRatePeripheral("F1:00:00:00:00:02", speed=4.0))
    profile, make = transport_factory(air, "generic-heart-rate", "F1:00:00:00:00:02")
    sup = DeviceSupervisor("hr", profile, make, backoff_base_s=0.1, backoff_cap_s=0.4)

    async def walk_away() -> None:
        await asyncio.sleep(0.8)
        await hr.power_off()
        await asyncio.sleep(2.0)
        assert sup.state in (DeviceState.LOST, DeviceState.CONNECTING)
        assert sup.failures >= 2  # re-discovery found nothing, repeatedly, with backoff
        await hr.power_on()
        await asyncio.sleep(2.0)

    async with sup:
        outs = await run_for(sup, 0, walk_away)
    assert events(outs, TechnicalKind.DEVICE_DISCONNECTED) == [True, False]
    assert sup.state is DeviceState.STOPPED


async def test_link_cap_per_adapter(air: VirtualAir) -> None:
    from vigil.edge.transports import ble

    reset_adapter_slots()
    ble.adapter_slots("hci0", limit=2)
    for i in range(3):
        await air.add(HeartRatePeripheral(f"F1:00:00:00:01:0{i}"))
    profile = get_profile("generic-heart-rate")
    ts = [BleTransport(f"d{i}", profile, f"F1:00:00:00:01:0{i}", Stamper(f"d{i}", profile, SystemClock()),
                       backend=BumbleClient, scanner_backend=BumbleScanner, backend_kwargs={"air": air},
                       scan_timeout_s=1.0, slot_timeout_s=0.5) for i in range(3)]
    await ts[0].__aenter__()
    await ts[1].__aenter__()
    from vigil.errors import TransportError

    with pytest.raises(TransportError, match="slots busy"):
        await ts[2].__aenter__()
    await ts[0].__aexit__(None, None, None)
    assert ble.adapter_slots("hci0")._value == 1  # the closed link gave its slot back
    await ts[1].__aexit__(None, None, None)
    assert ble.adapter_slots("hci0")._value == 2
