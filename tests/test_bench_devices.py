"""Fast guard for `make bench` devices section: its inputs decode correctly and each scenario measures data."""

from __future__ import annotations

import pytest

from vigil.benchmarks import bench_devices as bench
from vigil.edge.parsers import polar_pmd
from vigil.edge.parsers.registry import packet_parser, stream_parser

pytestmark = pytest.mark.timeout(60)


def test_bench_packets_decode_to_what_they_encode() -> None:
    ecg = bench._ecg_wave(73)
    frame = polar_pmd.parse_frame(bench.pmd_delta_frame(ecg, 1_700_000_000 * 10**9))
    assert frame.compressed and [s[0] for s in frame.samples] == ecg
    assert len(bench.pmd_delta_frame(ecg, 1_700_000_000 * 10**9)) < len(polar_pmd.ecg_frame(ecg, 1_700_000_000 * 10**9)) / 2
    for name, kind, _desc, packets, samples in bench.packet_sets():
        parse = packet_parser(name) if kind == "packet" else stream_parser(name).feed
        items = [it for p in packets for it in parse(p)]
        assert items, name
        waves = [it for it in items if hasattr(it, "samples")]
        assert sum(len(w.samples) for w in waves) == samples * len(packets), name


def test_parser_throughput_rows() -> None:
    rows = bench.parser_throughput(repeats=1, run_s=0.005)
    assert len(rows) == len(bench.packet_sets())
    assert all(r["pps"] > 1000 and r["us_stamped"] > 0 for r in rows)


async def test_ble_timer_scenario_streams_at_130_hz() -> None:
    r = await bench.ble_timer_cpu(devices=4, seconds=2.0)
    # samples arrive in 73-sample frames: over 2 s each device delivers 3 or 4 frames (110-146 samples/s)
    assert 100 <= r["sps_dev"] <= 160 and r["lat_p50"] < 50 and 0 < r["cpu_pct"] < 100


async def test_serial_pty_scenario_streams_at_60_hz() -> None:
    r = await bench.serial_pty_cpu(devices=2, seconds=1.5)
    assert 50 <= r["sps_dev"] <= 70 and r["lat_p50"] < 100 and 0 < r["cpu_pct"] < 100
