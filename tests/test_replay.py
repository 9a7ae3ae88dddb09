"""Replayed and simulated monitors: units, timing, seq continuity, numerics, cuff readings, bad records."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vigil.clock import SimulatedClock, SystemClock
from vigil.edge.records import load_record
from vigil.edge.transports.replay import ReplayTransport, replay_fast
from vigil.errors import RecordError
from vigil.model import Metric, NumericReading, SampleBlock


def test_wfdb_ecg_is_microvolt_integers_matching_physical(vendored_records) -> None:
    import wfdb

    rec = load_record(vendored_records / "119")
    ecg = rec.channel("ecg")
    assert ecg is not None and ecg.source_name == "MLII" and ecg.fs == 360 and ecg.unit == "uV"
    phys = wfdb.rdrecord(str(vendored_records / "119"), channels=[0], sampto=5000).p_signal[:, 0]
    assert ecg.samples.dtype == np.int32
    assert np.array_equal(ecg.samples[:5000], np.round(phys * 1000).astype(np.int32))


def test_channel_selection_by_name_and_index(vendored_records) -> None:
    by_name = load_record(vendored_records / "119", channel="V1").channel("ecg")
    by_index = load_record(vendored_records / "119", channel=1).channel("ecg")
    assert by_name is not None and by_index is not None
    assert by_name.source_name == by_index.source_name == "V1"
    assert np.array_equal(by_name.samples, by_index.samples)
    with pytest.raises(RecordError, match=r"no signal named 'V5'.*MLII"):
        load_record(vendored_records / "119", channel="V5")


def test_mat_record_has_ecg_pleth_abp(vendored_records) -> None:
    rec = load_record(vendored_records / "v221l")
    assert [(c.name, c.source_name, c.fs) for c in rec.channels] == [
        ("ecg", "II", 250.0), ("pleth", "PLETH", 250.0), ("abp", "ABP", 250.0)]
    assert rec.duration_s == pytest.approx(330.0)


async def test_speed_n_times_gives_the_right_sample_count(vendored_records) -> None:
    rec = load_record(vendored_records / "119")
    speed = 20.0
    t = ReplayTransport("d1", rec, SystemClock(), speed=speed, loop=False)
    n = 0
    seqs: list[int] = []
    async with t:
        t0 = time.monotonic()

        async def consume() -> None:
            nonlocal n
            async for out in t:
                assert isinstance(out, SampleBlock)
                seqs.append(out.seq)
                n += len(out.samples)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(consume(), 1.5)
        elapsed = time.monotonic() - t0
    expected = elapsed * speed * 360
    assert abs(n - expected) <= 3 * 90  # within a few 0.25-s blocks of 20× real time
    assert seqs == list(range(0, 90 * len(seqs), 90))  # contiguous, device-like 0.25 s blocks


def test_loop_keeps_seq_contiguous_and_restarts_the_signal(vendored_records) -> None:
    rec = load_record(vendored_records / "bidmc_04", duration_s=20)
    clock = SimulatedClock()
    blocks = [o for o in replay_fast("b", rec, clock, loop=True, until_s=45) if isinstance(o, SampleBlock)]
    for ch in ("ecg", "pleth", "abp"):
        bs = [b for b in blocks if b.channel == ch]
        assert all(a.end_seq == b.seq for a, b in zip(bs, bs[1:], strict=False))
        joined = np.concatenate([b.samples for b in bs])
        src = rec.channel(ch).samples  # type: ignore[union-attr]
        assert np.array_equal(joined[len(src):2 * len(src)], src)  # second pass is the record again
    assert clock.monotonic() == pytest.approx(45.0, abs=0.25)


def test_bidmc_numerics_arrive_at_1_hz_with_the_recorded_values(vendored_records) -> None:
    rec = load_record(vendored_records / "bidmc_04")
    clock = SimulatedClock(start_mono=100.0)
    spo2 = [o for o in replay_fast("b", rec, clock, until_s=60)
            if isinstance(o, NumericReading) and o.metric is Metric.SPO2]
    times = np.array([o.t_mono for o in spo2])
    assert len(spo2) == 61 and np.allclose(np.diff(times), 1.0)
    csv = np.genfromtxt(vendored_records / "bidmc_04_Numerics.csv", delimiter=",", skip_header=1)
    assert [o.value for o in spo2] == list(csv[:61, 4])


@pytest.mark.parametrize("name", ["v221l", "bidmc_04"])
def test_cuff_readings_from_abp_are_plausible(vendored_records, name: str) -> None:
    rec = load_record(vendored_records / name, cuff_interval_s=30)
    abp = rec.channel("abp")
    assert abp is not None
    x = abp.physical()
    cuff = {(n.t, n.metric): n.value for n in rec.numerics if n.metric in (Metric.SBP, Metric.DBP, Metric.MAP)}
    times = sorted({t for t, _ in cuff})
    assert len(times) >= int(rec.duration_s // 30) - 1
    assert np.allclose(np.diff(times), 30.0)
    for t in times:
        seg = x[int((t - 8) * abp.fs):int(t * abp.fs)]
        sbp, dbp, mean = cuff[(t, Metric.SBP)], cuff[(t, Metric.DBP)], cuff[(t, Metric.MAP)]
        assert seg.min() - 1 <= dbp < mean < sbp <= seg.max() + 1
        assert dbp <= np.median(seg) <= sbp and sbp - dbp >= 10
        assert abs(sbp - np.percentile(seg, 95)) < 20, (t, sbp)  # beat maxima sit near the top
        assert abs(dbp - np.percentile(seg, 5)) < 20, (t, dbp)
        assert abs(mean - seg.mean()) < 1.0


def test_pulse_rate_from_pleth_matches_the_monitor_and_the_arterial_line(vendored_records) -> None:
    from vigil.edge.records import load_bidmc, pulse_rate_from_pleth

    rec = load_bidmc(vendored_records / "bidmc_04")  # no derivation: the monitor's own PULSE numerics
    pleth = rec.channel("pleth")
    assert pleth is not None
    ours = {n.t: n.value for n in pulse_rate_from_pleth(pleth.physical(), pleth.fs)}
    monitor = {n.t: n.value for n in rec.numerics if n.metric is Metric.PULSE_RATE}
    common = sorted(set(ours) & set(monitor))
    assert len(common) > 250
    assert np.median([abs(ours[t] - monitor[t]) for t in common]) < 2.0

    vt = load_record(vendored_records / "v221l", duration_s=60)
    abp = vt.channel("abp")
    assert abp is not None
    from_abp = np.median([n.value for n in pulse_rate_from_pleth(abp.physical(), abp.fs)])
    from_pleth = np.median([n.value for n in vt.numerics if n.metric is Metric.PULSE_RATE])
    assert abs(from_abp - from_pleth) < 3


def test_unreadable_records_name_the_file_and_the_reason(tmp_path, vendored_records) -> None:
    with pytest.raises(RecordError, match=r"nothere\.hea: header file not found"):
        load_record(tmp_path / "nothere")
    shutil.copy(vendored_records / "119.hea", tmp_path / "119.hea")
    with pytest.raises(RecordError, match=r"119\.dat: signal file named in 119\.hea not found"):
        load_record(tmp_path / "119")
    (tmp_path / "119.dat").write_bytes((vendored_records / "119.dat").read_bytes()[:3000])
    with pytest.raises(RecordError, match=r"119\.dat: truncated signal file: 3000 bytes"):
        load_record(tmp_path / "119")
    (tmp_path / "bad.hea").write_text("this is not a header\n")
    with pytest.raises(RecordError, match=r"bad\.hea: unreadable WFDB header"):
        load_record(tmp_path / "bad")
    (tmp_path / "x_Signals.csv").write_text("hello,world\n1,2\n")
    with pytest.raises(RecordError, match=r"x_Signals\.csv: not a BIDMC CSV"):
        load_record(tmp_path / "x")
    (tmp_path / "y_Signals.csv").write_text("Time [s], II\n0,0.1\n0.008,abc,7\n")
    with pytest.raises(RecordError, match=r"y_Signals\.csv"):
        load_record(tmp_path / "y")


def test_simulated_ecg_runs_at_the_chosen_heart_rate() -> None:
    import scipy.signal as sps

    from vigil.edge.transports.simulated import simulated_record

    rec = simulated_record(heart_rate=96, fs=250, duration_s=30)
    ecg = rec.channel("ecg")
    assert ecg is not None and ecg.unit == "uV" and len(ecg.samples) == 30 * 250
    y = ecg.physical()
    peaks, _ = sps.find_peaks(y, distance=int(0.3 * 250), height=0.5 * y.max())
    rate = 60.0 * 250 / np.median(np.diff(peaks))
    assert abs(rate - 96) < 4


def _verdicts(tracker, x: np.ndarray, block: int = 62) -> list[bool]:
    return [v for i in range(0, len(x), block) if (v := tracker.feed(x[i:i + block])) is not None]


@pytest.mark.parametrize(("record", "name", "share"), [("bidmc_04", "pleth", 1.0), ("bidmc_04", "abp", 1.0),
                                                      ("v221l", "abp", 0.9), ("v221l", "pleth", 0.5)])
def test_pulsatility_of_real_waves_and_of_noise(vendored_records, record: str, name: str, share: float) -> None:
    from vigil.edge.pipeline import Pulsatility

    rec = load_record(vendored_records / record, duration_s=60)
    ch = rec.channel(name)
    assert ch is not None
    x = ch.physical()
    verdicts = _verdicts(Pulsatility(ch.fs, name), x)
    assert len(verdicts) >= 30 and sum(verdicts) >= share * len(verdicts), (sum(verdicts), len(verdicts))
    stopped = x.copy()
    stopped[-int(4 * ch.fs):] = np.median(x)  # the pulse stops for the last 4 s (verdicts come once a second)
    assert not _verdicts(Pulsatility(ch.fs, name), stopped)[-1]
    rng = np.random.default_rng(1)
    for sd in (0.05 * x.std(), x.std(), 3 * x.std()):  # a loose sensor: noise of any size is no pulse
        noise = rng.normal(x.mean(), sd, len(x))
        assert not any(_verdicts(Pulsatility(ch.fs, name), noise))


def _bidmc_pipeline(records: Path, seconds: float, *, engine: bool) -> tuple[Any, Any, list[Any]]:
    """A pipeline (no analysis) with one guest on replayed bidmc_04 and that record's outputs, all at once."""
    from vigil.config import parse_config
    from vigil.edge.pipeline import MemorySink, Pipeline

    cfg = parse_config('[site]\nname = "t"\nroom = "r"\n[[devices]]\nid = "d"\nprofile = "replay-bidmc"\n'
                       f'record = "{records / "bidmc_04"}"\n[[guests]]\nmat = "M"\nname = "x"\n'
                       'devices = ["d"]\n')
    clock = SimulatedClock()
    mem = MemorySink()
    pipe = Pipeline(cfg, clock, [mem], analyzer_factory=None, engine=None if not engine else True)
    rec = load_record(records / "bidmc_04", duration_s=seconds)
    return pipe, mem, list(replay_fast("d", rec, clock, until_s=seconds))


def test_pipeline_records_seq_jumps_as_gaps_and_keeps_vitals(vendored_records) -> None:
    pipe, mem, outs = _bidmc_pipeline(vendored_records, 20, engine=False)
    ecg = [o for o in outs if isinstance(o, SampleBlock) and o.channel == "ecg"]
    dropped = set(range(10, 14))  # four blocks lost on the link
    for o in outs:
        if isinstance(o, SampleBlock) and o.channel == "ecg" and ecg.index(o) in dropped:
            continue
        pipe.feed("d", o)
    assert mem.gaps == [("M", "d", "ecg", ecg[10].seq, ecg[14].seq, "seq jump")]
    g = pipe.guests["M"]
    assert g.value(Metric.SPO2) == 93.0 and g.ecg_seq == ecg[-1].end_seq
    pipe.feed("unknown-device", outs[0])  # unassigned devices are ignored, not an error


def test_pipeline_raises_a_system_fault_while_analysis_runs_behind_the_data(vendored_records) -> None:
    """Data that reaches the alarm path > 10 s after it arrived raises alarm_system_fault until it catches up."""
    from vigil.edge.pipeline import LAG_SOURCE
    from vigil.model import TechnicalKind

    pipe, mem, every = _bidmc_pipeline(vendored_records, 40, engine=True)
    outs = [o for o in every if isinstance(o, SampleBlock)]
    late = [o for o in outs if o.t_mono < 5.0]
    for o in late:  # 5 s of data arriving at 0-5 s, analysed only now (clock at 40 s): 35-40 s behind
        pipe.feed("d", o)
    faults = [(m, e.active, e.device_id) for m, e in mem.technicals if e.kind is TechnicalKind.ALARM_SYSTEM_FAULT]
    assert faults == [(None, True, LAG_SOURCE)]  # raised once, not once per block
    assert any(a.condition == "alarm_system_fault" for a in pipe.active_alarms()) and pipe.max_lag_s >= 35
    on_time = [o for o in outs if o.t_mono >= 39.0]  # fresh data again: the fault clears
    for o in on_time:
        pipe.feed("d", o)
    faults = [(e.active, e.device_id) for _m, e in mem.technicals if e.kind is TechnicalKind.ALARM_SYSTEM_FAULT]
    assert faults == [(True, LAG_SOURCE), (False, LAG_SOURCE)]


def test_unnamed_signal_in_volts_is_the_ecg(tmp_path) -> None:
    """A WFDB signal without a lead name (qtdb's "record N, signal k") is replayed as ECG when it is in mV."""
    import wfdb

    x = np.stack([np.full(2500, 50.0), np.sin(np.arange(2500) / 40.0)], axis=1)
    wfdb.wrsamp("rec", fs=250, units=["NU", "mV"], sig_name=["PLETH", "record 7, signal 1"], p_signal=x,
                fmt=["16", "16"], write_dir=str(tmp_path))
    rec = load_record(tmp_path / "rec")
    ecg = rec.channel("ecg")
    assert ecg is not None and ecg.source_name == "record 7, signal 1"
    assert rec.channel("pleth") is not None
