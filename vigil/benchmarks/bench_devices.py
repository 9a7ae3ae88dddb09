"""Device benchmarks: parser throughput, and CPU and latency per streaming device.

1. Parser throughput: every parser on representative packets (spec golden vectors, emulator-encoded
   frames), single-threaded: packets/s, µs per packet, samples/s; also parse + stamp (what runs per
   notification on the event loop).
2. CPU per streaming device, Vigil side only:
   - Polar H10 ECG 130 Hz (73-sample PMD frames, ~1.8/s, plus HR 1/s): the real `BleTransport`
     notification callbacks driven by a timer in place of the radio → supervisor → consumer.
   - CMS50D+ pleth 60 Hz on pseudo-terminals through the real `SerialTransport` (pyserial, event-loop
     reader); the bytes are written by a separate process, so only the reading side is measured.
   CPU % = process CPU seconds / wall seconds (100 % = one core); latency = arrival at the consumer
   minus the write (serial) or the notification (BLE) time.
3. Polar H10 over bleak + bumble: the whole in-process stack including the virtual controller, the
   link and the peripheral (an upper bound, BlueZ is not in it); latency is measured from the device
   timestamp of a frame's last sample, so it includes the 73-sample (0.56 s) frame accumulation.

Run: ``python -m vigil.benchmarks.bench_devices [--seconds 10] [--devices 20]`` (or ``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PACKETS_PER_S = 60  # CMS50D+ live packets per second (one pleth sample each)
BATCH = 3  # packets per write, like the emulator (20 writes/s)


# --------------------------------------------------------------------------- packets

def _h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def _ecg_wave(n: int, start: int = 0) -> list[int]:
    """A synthetic ECG in µV (R spike + T wave + wander) at 130 Hz."""
    out = []
    for k in range(start, start + n):
        t = k / 130.0
        phase = (t * 72 / 60.0) % 1.0
        out.append(int(1200 * math.exp(-((phase - 0.3) / 0.015) ** 2) + 150 * math.exp(-((phase - 0.6) / 0.06) ** 2)
                       + 30 * math.sin(2 * math.pi * 0.25 * t)))
    return out


def pmd_delta_frame(samples: list[int], last_ns: int, block: int = 24) -> bytes:
    """A delta-compressed PMD ECG frame (frame type 0x80): 14-bit reference, blocks of `block` deltas."""
    from vigil.edge.parsers.polar_pmd import EPOCH_2000_NS

    out = bytearray((0,)) + (last_ns - EPOCH_2000_NS).to_bytes(8, "little") + bytes((0x80,))
    out += (samples[0] & 0xFFFF).to_bytes(2, "little")
    deltas = [b - a for a, b in zip(samples, samples[1:], strict=False)]
    for i in range(0, len(deltas), block):
        chunk = deltas[i:i + block]
        width = max(2, max(abs(d) for d in chunk).bit_length() + 1)
        bits = 0
        for k, d in enumerate(chunk):
            bits |= (d & ((1 << width) - 1)) << (k * width)
        out += bytes((width, len(chunk))) + bits.to_bytes(math.ceil(width * len(chunk) / 8), "little")
    return bytes(out)


def cms50_chunk(k0: int, n: int = BATCH, classic: bool = False) -> bytes:
    """`n` consecutive CMS50D+ live packets (4.6+ protocol, or the classic 5-byte one)."""
    from vigil.edge.parsers import cms50d

    out = bytearray()
    for k in range(k0, k0 + n):
        s = cms50d.OxiSample(pleth=k % 100, pulse_rate=72.0, spo2=97.0, signal=6, bar=3, beep=False,
                             finger_out=False, searching=False, pi=None if classic else 2.5)
        out += cms50d.encode_classic(s) if classic else cms50d.encode_v46(s)
    return bytes(out)


def packet_sets() -> list[tuple[str, str, str, list[bytes], int]]:
    """(parser, kind, description, packets, samples per packet); kind is "packet" or "stream"."""
    from vigil.edge.parsers import datex_s5, polar_pmd

    t = 1_700_000_000 * 10**9
    ecg = _ecg_wave(73 * 40)
    pmd0 = [polar_pmd.ecg_frame(ecg[i * 73:(i + 1) * 73], t + i * 561_538_461) for i in range(40)]
    pmd_delta = [pmd_delta_frame(ecg[i * 73:(i + 1) * 73], t + i * 561_538_461) for i in range(40)]
    s5_wave = [datex_s5.frame(datex_s5.waveform_record([(datex_s5.WAVE_ECG1, [(k * 7) % 200 - 100 for k in range(75)])]))
               for _ in range(4)]
    s5_num = [datex_s5.frame(datex_s5.numerics_record({"ecg": {"hr": 72}, "nibp": {"sys": 120, "dia": 80, "mean": 93},
                                                        "spo2": {"spo2": 97, "pr": 72}}, 1_700_000_000))]
    return [
        ("heart_rate", "packet", "HRM 0x2A37 with RR (6 B)", [_h("164b33032803")], 0),
        ("blood_pressure", "packet", "BPM 0x2A35 kPa+time+pulse+user+status (19 B)",
         [_h("1e780050005d00ea070b1a0a00004800010400")], 0),
        ("cuff_pressure", "packet", "ICP 0x2A36 (7 B)", [_h("003800ff07ff07")], 0),
        ("plx_spot_check", "packet", "PLX spot-check 0x2A5E (19 B)", [_h("0facf3bef5e8070b1d170839204022000066e3")], 0),
        ("plx_continuous", "packet", "PLX continuous 0x2A5F (12 B)", [_h("1c5f005a00200000000057f0")], 0),
        ("battery", "packet", "Battery 0x2A19 (1 B)", [b"\x55"], 0),
        ("polar_pmd_ecg", "packet", f"PMD ECG type 0, 73 samples ({len(pmd0[0])} B)", pmd0, 73),
        ("polar_pmd_ecg", "packet", f"PMD ECG delta, 73 samples (~{len(pmd_delta[0])} B)", pmd_delta, 73),
        ("cms50d_v46", "stream", "CMS50D+ 4.6, 3 packets per read (27 B)",
         [cms50_chunk(k * BATCH) for k in range(40)], BATCH),
        ("cms50d_classic", "stream", "CMS50D+ classic, 3 packets per read (15 B)",
         [cms50_chunk(k * BATCH, classic=True) for k in range(40)], BATCH),
        ("datex_s5", "stream", f"S/5 ECG1 waveform record, 75 samples ({len(s5_wave[0])} B)", s5_wave, 75),
        ("datex_s5", "stream", f"S/5 displayed-values record ({len(s5_num[0])} B)", s5_num, 0),
    ]


# --------------------------------------------------------------------------- 1. parsers

def parser_throughput(repeats: int = 7, run_s: float = 0.05) -> list[dict[str, Any]]:
    """Best of `repeats` runs of about `run_s` CPU seconds per packet set (thread CPU time, so other processes
    on the machine do not count); also parse + stamp."""
    from vigil.clock import SystemClock
    from vigil.edge.parsers.registry import packet_parser, stream_parser
    from vigil.edge.profiles import get_profile
    from vigil.edge.transports.base import Stamper

    profiles = {"polar_pmd_ecg": "polar-h10", "cms50d_v46": "contec-cms50d-plus",
                "cms50d_classic": "contec-cms50d-plus", "datex_s5": "datex-s5", "heart_rate": "generic-heart-rate",
                "plx_continuous": "generic-pulse-oximeter", "plx_spot_check": "generic-pulse-oximeter",
                "blood_pressure": "generic-blood-pressure", "cuff_pressure": "generic-blood-pressure",
                "battery": "generic-heart-rate"}
    rows = []
    for name, kind, desc, packets, samples in packet_sets():
        size = sum(len(p) for p in packets) / len(packets)
        best: list[float] = []
        for stamp in (False, True):
            stamper = Stamper("bench", get_profile(profiles[name]), SystemClock())
            parse: Callable[[bytes], Any] = packet_parser(name) if kind == "packet" else stream_parser(name).feed
            t0 = time.thread_time()
            loops = 0
            while time.thread_time() - t0 < run_s / 5:  # calibrate: loops per run
                for p in packets:
                    parse(p)
                loops += 1
            loops = max(1, loops * 5)
            per_packet = math.inf
            for _ in range(repeats):
                t0 = time.thread_time()
                for _ in range(loops):
                    for p in packets:
                        items = parse(p)
                        if stamp:
                            stamper.stamp(items)
                per_packet = min(per_packet, (time.thread_time() - t0) / (loops * len(packets)))
            best.append(per_packet)
        rows.append({"parser": name, "desc": desc, "bytes": size, "pps": 1 / best[0], "us": 1e6 * best[0],
                     "us_stamped": 1e6 * best[1], "msps": samples / best[0] / 1e6})
    return rows


# --------------------------------------------------------------------------- 2a. BLE callbacks on a timer

async def ble_timer_cpu(devices: int, seconds: float) -> dict[str, float]:
    """N Polar H10 transports whose notifications come from a timer; CPU and queueing latency."""
    from vigil.clock import SystemClock
    from vigil.edge.parsers import polar_pmd
    from vigil.edge.parsers.registry import packet_parser
    from vigil.edge.profiles import get_profile
    from vigil.edge.supervisor import DeviceSupervisor
    from vigil.edge.transports.ble import BleTransport
    from vigil.model import SampleBlock

    profile = get_profile("polar-h10")
    frame_s = 73 / 130.0
    ecg = _ecg_wave(73 * 50)
    sent: dict[tuple[str, int], float] = {}  # (device, seq of frame end) -> notification time
    lat: list[float] = []

    class TimerRadio(BleTransport):
        """BleTransport whose notifications come from a timer instead of the radio."""

        async def open(self) -> None:
            self._tasks.append(asyncio.create_task(self._radio()))

        async def _radio(self) -> None:
            on_ecg = self._callback(packet_parser("polar_pmd_ecg"))
            on_hr = self._callback(packet_parser("heart_rate"))
            k = 0
            next_t = time.monotonic() + (hash(self.device_id) % 1000) / 1000 * frame_s
            next_hr = next_t
            while True:
                await asyncio.sleep(max(0.0, next_t - time.monotonic()))
                j = (k // 73) % 50
                k += 73
                sent[(self.device_id, k)] = time.monotonic()
                on_ecg(None, bytearray(polar_pmd.ecg_frame(ecg[j * 73:(j + 1) * 73], time.time_ns())))
                if next_t >= next_hr:
                    on_hr(None, bytearray(b"\x16\x48\x55\x03"))
                    next_hr += 1.0
                next_t += frame_s

        async def close(self) -> None:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()

    sups = [DeviceSupervisor(f"h10-{i}", profile,
                             lambda st: TimerRadio(st.device_id, profile, "00:00:00:00:00:00", st), SystemClock())
            for i in range(devices)]
    counts = {"samples": 0}

    async def consume(sup: DeviceSupervisor) -> None:
        async for out in sup:
            if isinstance(out, SampleBlock):
                counts["samples"] += len(out.samples)
                t_sent = sent.pop((out.device_id, out.end_seq), None)
                if t_sent is not None:
                    lat.append(time.monotonic() - t_sent)

    for s in sups:
        await s.__aenter__()
    consumers = [asyncio.create_task(consume(s)) for s in sups]
    await asyncio.sleep(1.0)  # warm-up
    lat.clear()
    n0, c0, w0 = counts["samples"], time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall, n = time.process_time() - c0, time.monotonic() - w0, counts["samples"] - n0
    for s in sups:
        await s.close()
    await asyncio.gather(*consumers, return_exceptions=True)
    return _cpu_row(devices, cpu, wall, n, lat)


def _cpu_row(devices: int, cpu: float, wall: float, samples: int, lat: list[float]) -> dict[str, float]:
    lat_ms = sorted(x * 1000 for x in lat) or [math.nan]
    return {"devices": devices, "cpu_pct": 100 * cpu / wall, "cpu_pct_dev": 100 * cpu / wall / devices,
            "sps_dev": samples / wall / devices, "lat_p50": statistics.median(lat_ms),
            "lat_p95": lat_ms[min(len(lat_ms) - 1, int(0.95 * len(lat_ms)))], "lat_max": lat_ms[-1]}


# --------------------------------------------------------------------------- 2b. serial ptys, writer process

def _writer(devices: int, seconds: float, out: str) -> None:
    """Child process: N ptys streaming CMS50D+ 4.6 packets at 60/s; send times saved to `out` (JSON)."""
    import tty

    pairs = []
    for _ in range(devices):
        master, slave = os.openpty()
        tty.setraw(slave)
        pairs.append((master, slave))
    print(json.dumps([os.ttyname(s) for _m, s in pairs]), flush=True)
    sys.stdin.readline()  # the parent has opened every port
    chunks = [cms50_chunk(k * BATCH) for k in range(100)]
    period = BATCH / PACKETS_PER_S
    t_end = time.monotonic() + seconds
    sends: list[float] = []  # time of write j (same for every device)
    j = 0
    next_t = time.monotonic()
    while next_t < t_end:
        now = time.monotonic()
        if next_t > now:
            time.sleep(next_t - now)
        sends.append(time.monotonic())
        for master, _s in pairs:
            with contextlib.suppress(OSError):
                os.write(master, chunks[j % 100])
        j += 1
        next_t += period
    Path(out).write_text(json.dumps(sends))
    time.sleep(0.3)


async def serial_pty_cpu(devices: int, seconds: float) -> dict[str, float]:
    """N CMS50D+ on ptys read by SerialTransport under supervisors; bytes written by a child process."""
    import tempfile

    from vigil.clock import SystemClock
    from vigil.edge.profiles import get_profile
    from vigil.edge.supervisor import DeviceSupervisor
    from vigil.edge.transports.base import Stamper
    from vigil.edge.transports.serial import SerialTransport
    from vigil.model import SampleBlock

    profile = get_profile("contec-cms50d-plus")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "sends.json")
        child = subprocess.Popen([sys.executable, "-m", "vigil.benchmarks.bench_devices", "--writer",
                                  str(devices), str(seconds + 2.0), out],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdin is not None
            ports = json.loads(child.stdout.readline())
            recv: list[tuple[int, float]] = []  # (end_seq, arrival)
            counts = {"samples": 0}

            def factory(port: str) -> Callable[[Stamper], SerialTransport]:
                return lambda st: SerialTransport(st.device_id, profile, port, st)

            sups = [DeviceSupervisor(f"ox-{i}", profile, factory(p), SystemClock()) for i, p in enumerate(ports)]

            async def consume(sup: DeviceSupervisor) -> None:
                async for o in sup:
                    if isinstance(o, SampleBlock):
                        counts["samples"] += len(o.samples)
                        recv.append((o.end_seq, time.monotonic()))

            for s in sups:
                await s.__aenter__()
            consumers = [asyncio.create_task(consume(s)) for s in sups]
            await asyncio.sleep(0.2)
            child.stdin.write("go\n")
            child.stdin.flush()
            await asyncio.sleep(1.0)  # warm-up
            recv.clear()
            n0, c0, w0 = counts["samples"], time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            cpu, wall, n = time.process_time() - c0, time.monotonic() - w0, counts["samples"] - n0
            got = list(recv)
            for s in sups:
                await s.close()
            await asyncio.gather(*consumers, return_exceptions=True)
            await asyncio.to_thread(child.wait, 30)
            sends = json.loads(Path(out).read_text())
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    # sample seq s (0-based) was in write s // BATCH; a block ending at end_seq completes write (end_seq-1)//BATCH
    lat = [t - sends[(end - 1) // BATCH] for end, t in got if (end - 1) // BATCH < len(sends)]
    return _cpu_row(devices, cpu, wall, n, lat)


# --------------------------------------------------------------------------- 3. whole BLE stack over bumble

async def ble_bumble_cpu(devices: int, seconds: float) -> dict[str, float]:
    """N virtual Polar H10 over bleak + bumble (in-process radio and peripherals) + supervisors."""
    from vigil.clock import SystemClock
    from vigil.edge.parsers.items import Wave
    from vigil.edge.profiles import get_profile
    from vigil.edge.supervisor import DeviceSupervisor
    from vigil.edge.transports.base import Stamper
    from vigil.edge.transports.ble import BleTransport, reset_adapter_slots
    from vigil.model import SampleBlock
    from vigil.testing.bumble_backend import BumbleClient, BumbleScanner, PolarEcgPeripheral, VirtualAir

    reset_adapter_slots()
    air = await VirtualAir().start()
    profile = get_profile("polar-h10")
    device_time: dict[tuple[str, int], float] = {}  # (device, end seq) -> device time of the last sample (s)

    def tracking(st: Stamper) -> Stamper:
        """Remember each ECG block's device timestamp (the block itself carries arrival times only)."""
        stamp = st.stamp

        def stamp_and_track(items: list[Any]) -> list[Any]:
            outs = stamp(items)
            waves = [it for it in items if isinstance(it, Wave) and it.device_time_ns is not None]
            blocks = [o for o in outs if isinstance(o, SampleBlock)]
            for w, b in zip(waves, blocks, strict=False):
                device_time[(b.device_id, b.end_seq)] = w.device_time_ns / 1e9  # type: ignore[operator]
            return outs

        st.stamp = stamp_and_track  # type: ignore[method-assign]
        return st

    sups = []
    for i in range(devices):
        address = f"F3:00:00:00:00:{i:02X}"
        await air.add(PolarEcgPeripheral(address))

        def factory(st: Stamper, address: str = address, i: int = i) -> BleTransport:
            return BleTransport(st.device_id, profile, address, st, backend=BumbleClient, scanner_backend=BumbleScanner,
                                backend_kwargs={"air": air}, adapter=f"hci{i // 7}", scan_timeout_s=3.0)

        sup = DeviceSupervisor(f"h10-{i}", profile, factory, SystemClock())
        tracking(sup.stamper)
        sups.append(sup)
    lat: list[float] = []
    counts = {"samples": 0}

    async def consume(sup: DeviceSupervisor) -> None:
        async for o in sup:
            if isinstance(o, SampleBlock):
                counts["samples"] += len(o.samples)
                t_dev = device_time.pop((o.device_id, o.end_seq), None)
                if t_dev is not None:
                    lat.append(time.time() - t_dev)

    for s in sups:
        await s.__aenter__()
    consumers = [asyncio.create_task(consume(s)) for s in sups]
    try:
        deadline = time.monotonic() + 30
        while counts["samples"] < 73 * devices and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        lat.clear()
        n0, c0, w0 = counts["samples"], time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall, n = time.process_time() - c0, time.monotonic() - w0, counts["samples"] - n0
    finally:
        for s in sups:
            await s.close()
        await asyncio.gather(*consumers, return_exceptions=True)
        await air.close()
    return _cpu_row(devices, cpu, wall, n, lat)


# --------------------------------------------------------------------------- report

def main(argv: list[str]) -> int:
    """Print the device benchmark tables."""
    if argv and argv[0] == "--writer":
        _writer(int(argv[1]), float(argv[2]), argv[3])
        return 0
    ap = argparse.ArgumentParser(prog="python -m vigil.benchmarks.bench_devices")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per streaming scenario")
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--ble-devices", type=int, default=10, help="virtual Polar straps over bumble")
    a = ap.parse_args(argv)

    print("Parser throughput (one core, thread CPU time, best of 7 runs; the parser alone, and parse + stamp into model types)")
    print(f"{'parser':<16} {'input':<48} {'B':>5} {'packets/s':>11} {'µs/pkt':>8} {'+stamp µs':>10} {'Msamples/s':>11}")
    for r in parser_throughput():
        print(f"{r['parser']:<16} {r['desc']:<48} {r['bytes']:>5.0f} {r['pps']:>11,.0f} {r['us']:>8.2f} "
              f"{r['us_stamped']:>10.2f} {r['msps']:>11.2f}")

    print(f"\nCPU per streaming device ({a.seconds:g} s measured after 1 s warm-up; CPU % of one core)")
    print(f"{'scenario':<58} {'dev':>4} {'samples/s/dev':>14} {'CPU %':>7} {'CPU %/dev':>10} "
          f"{'lat p50 ms':>11} {'p95':>7} {'max':>7}")
    scenarios: list[tuple[str, Callable[[], Any]]] = [
        ("Polar H10 ECG 130 Hz + HR: BleTransport callbacks on a timer", lambda: ble_timer_cpu(a.devices, a.seconds)),
        ("CMS50D+ pleth 60 Hz: SerialTransport on ptys (writer process)", lambda: serial_pty_cpu(a.devices, a.seconds)),
        ("Polar H10 via bleak+bumble, whole stack incl. virtual radio",
         lambda: ble_bumble_cpu(a.ble_devices, a.seconds)),
    ]
    for label, run in scenarios:
        r = asyncio.run(run())
        print(f"{label:<58} {r['devices']:>4.0f} {r['sps_dev']:>14.1f} {r['cpu_pct']:>7.2f} {r['cpu_pct_dev']:>10.3f} "
              f"{r['lat_p50']:>11.2f} {r['lat_p95']:>7.2f} {r['lat_max']:>7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
