"""A fleet of emulated monitors behind real supervisors and transports, for leak and load runs.

BLE devices are bumble virtual peripherals reached through bleak (`BumbleClient`), spread over two
adapters (each capped at `MAX_LINKS_PER_ADAPTER` links); serial devices are CMS50D+ emulators on
pseudo-terminals and Datex S/5 emulators behind `socket://`. Every device runs under its own
`DeviceSupervisor`, drained by a consumer task that counts what arrives. `churn()` unplugs every device
(radio drop, pty hang-up, socket closed) and plugs it back, so each round is one reconnect per device.

    fleet = await DeviceFleet.start(n_ble=10, n_pty=6, n_socket=4)
    await fleet.wait_streaming(); before = fleet.snapshot()
    await fleet.churn(rounds=5); await fleet.wait_streaming(); after = fleet.snapshot()
    await fleet.close()

`python -m vigil.testing.device_fleet --minutes 60` runs the long version (reconnect rounds every
`--period` seconds) and prints resource snapshots as it goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.clock import SystemClock
from vigil.edge.profiles import get_profile
from vigil.edge.supervisor import DeviceSupervisor
from vigil.edge.transports.base import Stamper
from vigil.model import DeviceState, NumericReading, SampleBlock, TechnicalEvent

BLE_KINDS = ("polar", "hr", "ox", "bp")


@dataclass(frozen=True)
class Snapshot:
    """Process resources at one moment."""

    tasks: int
    fds: int
    threads: int
    rss_mb: float

    def __str__(self) -> str:
        return f"tasks={self.tasks} fds={self.fds} threads={self.threads} rss={self.rss_mb:.1f} MB"


@dataclass
class FleetDevice:
    """One emulated monitor, its supervisor and what its consumer has seen."""

    device_id: str
    kind: str  # "ble" | "pty" | "socket"
    sup: DeviceSupervisor
    unplug: Callable[[], Awaitable[None]]
    plug: Callable[[], Awaitable[None]]
    consumer: asyncio.Task[None] | None = None
    samples: int = 0
    readings: int = 0
    events: int = 0
    extra: list[Any] = field(default_factory=list)


def snapshot() -> Snapshot:
    """Tasks of the running loop, open file descriptors, threads and RSS of this process."""
    import psutil

    gc.collect()
    return Snapshot(len(asyncio.all_tasks()), len(os.listdir("/proc/self/fd")), threading.active_count(),
                    psutil.Process().memory_info().rss / 2**20)


class DeviceFleet:
    """N emulated devices, each under a DeviceSupervisor with a counting consumer."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.devices: list[FleetDevice] = []
        self.air: Any = None
        self._emulators: list[Any] = []
        self.rounds = 0

    @classmethod
    async def start(cls, n_ble: int = 10, n_pty: int = 6, n_socket: int = 4, *, workdir: Path | None = None,
                    backoff_base_s: float = 0.1, backoff_cap_s: float = 0.5, speed: float = 1.0) -> DeviceFleet:
        """Create the emulators and start one supervisor per device."""
        from vigil.edge.transports.ble import BleTransport, reset_adapter_slots
        from vigil.edge.transports.serial import SerialTransport
        from vigil.testing import bumble_backend as bb
        from vigil.testing.cms50_emulator import Cms50Emulator
        from vigil.testing.datex_emulator import DatexEmulator

        fleet = cls(workdir or Path(tempfile.mkdtemp(prefix="vigil-fleet-")))
        reset_adapter_slots()
        fleet.air = air = await bb.VirtualAir().start()
        clock = SystemClock()
        sup_kw: dict[str, Any] = {"backoff_base_s": backoff_base_s, "backoff_cap_s": backoff_cap_s}

        peripheral_types: dict[str, tuple[type[bb.VirtualPeripheral], str, dict[str, Any]]] = {
            "polar": (bb.PolarEcgPeripheral, "polar-h10", {}),
            "hr": (bb.HeartRatePeripheral, "generic-heart-rate", {}),
            "ox": (bb.PulseOximeterPeripheral, "generic-pulse-oximeter", {}),
            "bp": (bb.BloodPressurePeripheral, "generic-blood-pressure", {}),
        }
        for i in range(n_ble):
            kind = BLE_KINDS[i % len(BLE_KINDS)]
            cls_, profile_name, kw = peripheral_types[kind]
            address = f"F2:00:00:00:{i // 256:02X}:{i % 256:02X}"
            per = await air.add(cls_(address, speed=speed, **kw))
            profile = get_profile(profile_name)
            adapter = f"hci{i % 2}"

            def ble_factory(st: Stamper, profile: Any = profile, address: str = address,
                            adapter: str = adapter) -> BleTransport:
                return BleTransport(st.device_id, profile, address, st, backend=bb.BumbleClient,
                                    scanner_backend=bb.BumbleScanner, backend_kwargs={"air": air},
                                    adapter=adapter, scan_timeout_s=2.0, battery_poll_s=5.0)

            async def ble_unplug(per: Any = per) -> None:
                await per.drop_connections()

            async def ble_plug() -> None:
                return None

            sup = DeviceSupervisor(f"ble-{kind}-{i}", profile, ble_factory, clock, **sup_kw)
            fleet.devices.append(FleetDevice(sup.device_id, "ble", sup, ble_unplug, ble_plug, extra=[per]))

        cms_profile = get_profile("contec-cms50d-plus")
        for i in range(n_pty):
            emu = Cms50Emulator(fleet.workdir / f"cms50-{i}", firmware="v46").start()
            emu.garbage_every = 50
            fleet._emulators.append(emu)

            def pty_factory(st: Stamper, emu: Any = emu) -> SerialTransport:
                return SerialTransport(st.device_id, cms_profile, str(emu.link), st)

            async def pty_unplug(emu: Any = emu) -> None:
                emu.unplug()

            async def pty_plug(emu: Any = emu) -> None:
                emu.plug()

            sup = DeviceSupervisor(f"pty-cms50-{i}", cms_profile, pty_factory, clock, **sup_kw)
            fleet.devices.append(FleetDevice(sup.device_id, "pty", sup, pty_unplug, pty_plug, extra=[emu]))

        s5_profile = get_profile("datex-s5")
        for i in range(n_socket):
            s5 = DatexEmulator(heart_rate=60 + i, numerics_interval_s=1.0).start()
            fleet._emulators.append(s5)

            def sock_factory(st: Stamper, s5: Any = s5) -> SerialTransport:
                return SerialTransport(st.device_id, s5_profile, s5.url, st)

            async def sock_unplug(s5: Any = s5) -> None:
                s5.unplug()

            async def sock_plug(s5: Any = s5) -> None:
                s5.plug()

            sup = DeviceSupervisor(f"sock-s5-{i}", s5_profile, sock_factory, clock, **sup_kw)
            fleet.devices.append(FleetDevice(sup.device_id, "socket", sup, sock_unplug, sock_plug, extra=[s5]))

        for d in fleet.devices:
            await d.sup.__aenter__()
            d.consumer = asyncio.create_task(fleet._consume(d), name=f"fleet-consumer-{d.device_id}")
        return fleet

    @staticmethod
    async def _consume(d: FleetDevice) -> None:
        async for out in d.sup:
            if isinstance(out, SampleBlock):
                d.samples += len(out.samples)
            elif isinstance(out, NumericReading):
                d.readings += 1
            elif isinstance(out, TechnicalEvent):
                d.events += 1

    def streaming(self) -> int:
        """How many devices are streaming now."""
        return sum(d.sup.state is DeviceState.STREAMING for d in self.devices)

    async def wait_streaming(self, timeout_s: float = 30.0) -> float:
        """Wait until every device streams and has delivered data since; returns the seconds waited."""
        t0 = time.monotonic()
        marks = {d.device_id: d.samples + d.readings for d in self.devices}
        while True:
            if self.streaming() == len(self.devices) and all(
                    d.samples + d.readings > marks[d.device_id] for d in self.devices):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                late = [d.device_id for d in self.devices if d.sup.state is not DeviceState.STREAMING]
                raise TimeoutError(f"not streaming after {timeout_s:.0f} s: {late}")
            await asyncio.sleep(0.05)

    async def churn(self, rounds: int = 1, down_s: float = 0.3, settle_timeout_s: float = 30.0) -> None:
        """Unplug every device, plug it back after `down_s`, wait until all stream again; `rounds` times."""
        for _ in range(rounds):
            await asyncio.gather(*(d.unplug() for d in self.devices))
            await asyncio.sleep(down_s)
            await asyncio.gather(*(d.plug() for d in self.devices))
            await self.wait_streaming(settle_timeout_s)
            self.rounds += 1

    def totals(self) -> dict[str, int]:
        """Summed counters of all devices."""
        return {"connects": sum(d.sup.connects for d in self.devices),
                "failures": sum(d.sup.failures for d in self.devices),
                "samples": sum(d.samples for d in self.devices),
                "readings": sum(d.readings for d in self.devices),
                "corrupt_frames": sum(d.sup.corrupt_frames for d in self.devices),
                "dropped": sum(int(d.sup.stats()["dropped"]) for d in self.devices),
                "gaps": sum(len(d.sup.gaps) for d in self.devices)}

    async def close(self) -> None:
        """Stop supervisors (bounded), consumers, emulators and the virtual air."""
        for d in self.devices:
            await d.sup.close()
        for d in self.devices:
            if d.consumer is not None:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(d.consumer, 2)
        for emu in self._emulators:
            emu.stop()
        if self.air is not None:
            await self.air.close()


async def _soak(minutes: float, period_s: float, n_ble: int, n_pty: int, n_socket: int) -> int:
    fleet = await DeviceFleet.start(n_ble, n_pty, n_socket)
    try:
        await fleet.wait_streaming(60)
        await fleet.churn(2)
        base = snapshot()
        print(f"devices={len(fleet.devices)} baseline {base}", flush=True)
        end = time.monotonic() + minutes * 60
        worst = base
        while time.monotonic() < end:
            await asyncio.sleep(max(0.0, period_s - 1.0))
            await fleet.churn(1)
            now = snapshot()
            worst = Snapshot(max(worst.tasks, now.tasks), max(worst.fds, now.fds), max(worst.threads, now.threads),
                             max(worst.rss_mb, now.rss_mb))
            print(f"round {fleet.rounds:4d} {now} {fleet.totals()}", flush=True)
        print(f"baseline {base}\nworst    {worst}", flush=True)
        ok = (worst.tasks <= base.tasks + 5 and worst.fds <= base.fds + 5 and worst.threads <= base.threads
              and worst.rss_mb <= base.rss_mb + 30)
        print("OK: no growth beyond the bounds" if ok else "FAIL: resources grew", flush=True)
        return 0 if ok else 1
    finally:
        await fleet.close()


def main(argv: list[str] | None = None) -> int:
    """CLI: long churn run with resource snapshots."""
    ap = argparse.ArgumentParser(prog="python -m vigil.testing.device_fleet", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--period", type=float, default=10.0, help="seconds between reconnect rounds")
    ap.add_argument("--ble", type=int, default=10)
    ap.add_argument("--pty", type=int, default=6)
    ap.add_argument("--socket", type=int, default=4)
    a = ap.parse_args(argv)
    return asyncio.run(_soak(a.minutes, a.period, a.ble, a.pty, a.socket))


if __name__ == "__main__":
    raise SystemExit(main())
