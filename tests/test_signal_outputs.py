"""HR/RR, HRV, signal quality and the `vigil analyze` JSON contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vigil.cli import main as cli_main
from vigil.model import Beat, Measurement, Metric, QualityReport
from vigil.signal.analyzer import EcgAnalyzer
from vigil.signal.hr import HrEstimator
from vigil.signal.hrv import HrvEstimator


def test_hr_averages_last_12_rr_and_responds_fast_to_brady():
    fs = 250.0
    est = HrEstimator(fs)
    beats = [Beat(int(i * 0.8 * fs)) for i in range(20)]  # 75 bpm
    t = beats[-1].sample
    beats += [Beat(t + int(k * 1.5 * fs)) for k in range(1, 4)]  # 3 RR of 1.5 s -> 40 bpm at once
    out = est.update(beats, beats[-1].sample + int(fs))
    hr = [m for m in out if m.metric == Metric.HR]
    rr = [m for m in out if m.metric == Metric.RR]
    assert len(rr) == len(beats) - 1 and rr[0].value == pytest.approx(800.0)
    assert any(m.value == pytest.approx(75.0) for m in hr)
    assert hr[-1].value == pytest.approx(40.0, abs=0.5)
    ticks = [m.sample for m in hr]
    assert np.all(np.diff(ticks) == int(fs))


def test_hr_counts_unclassifiable_beats():
    """A Q beat (e.g. in noise) is still a beat: 75 bpm with every third beat Q stays 75 bpm, RR 800 ms."""
    fs = 250.0
    labels = ["Q" if i % 3 == 2 else "N" for i in range(30)]
    beats = [Beat(int(i * 0.8 * fs), lab) for i, lab in enumerate(labels)]  # type: ignore[arg-type]
    out = HrEstimator(fs).update(beats, beats[-1].sample)
    hr = [m.value for m in out if m.metric == Metric.HR]
    rr = [m.value for m in out if m.metric == Metric.RR]
    assert len(rr) == len(beats) - 1 and set(rr) == {800.0}
    assert hr[-1] == pytest.approx(75.0)


def test_hr_falls_when_beats_stop():
    fs = 250.0
    est = HrEstimator(fs)
    beats = [Beat(int(i * 0.8 * fs)) for i in range(15)]
    out = est.update(beats, beats[-1].sample + int(8 * fs))
    hr = [m.value for m in out if m.metric == Metric.HR]
    assert hr[-1] < 10.0  # 8 s without a beat


def test_hrv_time_and_frequency_domain():
    fs = 1000.0
    est = HrvEstimator(fs)
    rr = np.where(np.arange(400) % 2 == 0, 0.800, 0.850)  # alternating: RMSSD 50 ms, SDNN 25 ms
    samples = np.concatenate(([0], np.cumsum(rr * fs))).astype(int)
    beats = [Beat(int(s)) for s in samples]
    out = est.update(beats, int(samples[-1]))
    by = {m.metric: m.value for m in out if isinstance(m, Measurement)}
    assert by[Metric.RMSSD] == pytest.approx(50.0, abs=1.0)
    assert by[Metric.SDNN] == pytest.approx(25.0, abs=1.0)
    assert by[Metric.PNN50] == pytest.approx(0.0, abs=1.0)  # |ΔNN| = 50 ms is not > 50 ms
    assert Metric.HF in by and by[Metric.HF] > by[Metric.LF]  # alternation is at 0.6 Hz... aliased into HF
    emitted = sorted({m.sample for m in out})
    assert np.all(np.diff(emitted) == int(30 * fs))


def test_hrv_excludes_ectopic_neighbours():
    fs = 250.0
    est = HrvEstimator(fs)
    s, beats = 0, []
    for i in range(500):
        s += int(0.8 * fs)
        beats.append(Beat(s, "V" if i % 10 == 5 else "N"))
    out = est.update(beats, s)
    rmssd = [m.value for m in out if m.metric == Metric.RMSSD]
    assert rmssd and max(rmssd) < 1.0  # the V beats and both of their intervals were excluded


def test_hrv_successive_differences_skip_an_excluded_interval():
    """RMSSD/pNN50 count differences of adjacent NN intervals only (Task Force 1996): NN 800 ms, a premature
    V beat, then NN 900 ms — every adjacent difference is 0; the 100 ms step lies across the V beat."""
    fs = 250.0
    est = HrvEstimator(fs)
    s, beats = 0, []
    for i in range(300):
        s += int((0.8 if i < 150 else 0.9 if i > 151 else 0.5) * fs)
        beats.append(Beat(s, "V" if i == 150 else "N"))
    out = est.update(beats, s)
    rmssd = [m.value for m in out if m.metric == Metric.RMSSD]
    pnn50 = [m.value for m in out if m.metric == Metric.PNN50]
    sdnn = [m.value for m in out if m.metric == Metric.SDNN]
    assert rmssd and max(rmssd) == 0.0 and max(pnn50) == 0.0
    assert max(sdnn) > 40.0  # the step itself is in SDNN


def test_hrv_in_trigeminy_reports_sdnn_but_no_successive_differences():
    fs = 250.0
    est = HrvEstimator(fs)
    s, beats = 0, []
    for i in range(600):  # N -1.2 s- N -0.4 s- V -0.6 s- N …: NN time 1.2 of every 2.2 s, no two NN adjacent
        s += int((1.2, 0.4, 0.6)[i % 3] * fs)
        beats.append(Beat(s, "V" if i % 3 == 1 else "N"))
    out = est.update(beats, s)
    metrics = {m.metric for m in out}
    assert Metric.SDNN in metrics and Metric.RMSSD not in metrics and Metric.PNN50 not in metrics


def _quality(x: np.ndarray, fs: float) -> list[QualityReport]:
    an = EcgAnalyzer(fs, rhythm=False, qt=False)
    out = []
    for i in range(0, len(x), 125):
        out += an.feed(x[i:i + 125], i)
    return [o for o in out if isinstance(o, QualityReport)]


def test_quality_flags_flatline_saturation_noise(vendored_records: Path):
    import wfdb

    r = wfdb.rdrecord(str(vendored_records / "119"), sampto=250 * 60)
    x = r.p_signal[:, 0] * 1000.0
    fs = float(r.fs)
    clean = _quality(x[: int(20 * fs)], fs)
    assert len(clean) >= 15 and np.mean([q.quality for q in clean[5:]]) > 0.8
    flat = _quality(np.full(int(10 * fs), 3.0), fs)
    assert all("flatline" in q.flags and q.quality == 0.0 for q in flat)
    clipped = _quality(np.clip(x[: int(10 * fs)] - np.median(x), -600, 600), fs)
    assert sum("saturation" in q.flags for q in clipped) >= 6
    rng = np.random.default_rng(0)
    noisy = _quality(x[: int(20 * fs)] + rng.normal(0, 400, int(20 * fs)), fs)
    assert sum("noise" in q.flags for q in noisy[3:]) >= 10
    assert all(np.diff([q.sample for q in clean]) == int(round(fs)))


def test_analyze_json_contract(vendored_records: Path, capsys):
    import wfdb

    assert cli_main(["analyze", str(vendored_records / "119"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"record", "fs", "beats", "episodes", "qt", "hr"}
    assert doc["record"] == "119" and doc["fs"] == 360.0
    n = wfdb.rdheader(str(vendored_records / "119")).sig_len
    assert all(isinstance(b["sample"], int) and 0 <= b["sample"] < n for b in doc["beats"])
    assert {b["label"] for b in doc["beats"]} <= {"N", "V", "S", "F", "Q"}
    ann = wfdb.rdann(str(vendored_records / "119"), "atr")
    ref = np.array([s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in "NV"])
    det = np.array([b["sample"] for b in doc["beats"]])
    hits = sum(np.min(np.abs(det - s)) <= 54 for s in ref[5:])  # record numbering, 150 ms
    assert hits >= 0.995 * len(ref[5:])
    assert all(set(e) == {"start", "end", "label"} and e["start"] <= e["end"] for e in doc["episodes"])
    assert all(set(q) == {"sample", "qt_ms", "rr_ms", "qtc_ms", "formula"} for q in doc["qt"])
    bpm = [h["bpm"] for h in doc["hr"]]
    assert len(bpm) >= 550 and 50 < np.median(bpm) < 90


def test_analyze_channel_and_summary(vendored_records: Path, capsys):
    assert cli_main(["analyze", str(vendored_records / "203.hea"), "--channel", "1"]) == 0
    text = capsys.readouterr().out
    assert "record 203" in text and "beats:" in text


def test_analyze_beats_from_afdb(data_root: Path, capsys, tmp_path: Path):
    import shutil

    for ext in ("hea", "qrs", "atr"):
        shutil.copy(data_root / "afdb" / f"04043.{ext}", tmp_path)
    assert cli_main(["analyze", str(tmp_path / "04043"), "--beats-from", "qrs", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    import wfdb

    ann = wfdb.rdann(str(tmp_path / "04043"), "qrs")
    assert len(doc["beats"]) == len(ann.sample)
    assert doc["qt"] == [] and doc["hr"] == []
    af = [e for e in doc["episodes"] if e["label"] == "AF"]
    assert af and sum(e["end"] - e["start"] for e in af) > 250 * 600  # 04043 has hours of AF


def test_analyze_missing_record_is_a_clear_error(tmp_path: Path, capsys):
    assert cli_main(["analyze", str(tmp_path / "nope")]) == 2
    assert "no such WFDB header" in capsys.readouterr().err


def test_quality_flags_baseline_wander_without_ecg(data_root: Path, vendored_records: Path):
    """nstdb `bw` (baseline wander, no heart signal) is mostly noise; real ECG with 1 mV respiration wander is not."""
    import wfdb

    r = wfdb.rdrecord(str(data_root / "nstdb" / "bw"), channels=[0], sampto=360 * 180)
    bw = _quality(r.p_signal[:, 0] * 1000.0, float(r.fs))
    assert len(bw) >= 170
    assert np.mean(["noise" in q.flags for q in bw]) >= 0.55  # 0.61 measured; 0.44 without the wander check
    r = wfdb.rdrecord(str(vendored_records / "119"), sampto=360 * 60)
    fs = float(r.fs)
    x = r.p_signal[:, 0] * 1000.0
    wander = x + 1000.0 * np.sin(2 * np.pi * 0.3 * np.arange(len(x)) / fs)
    ecg = _quality(wander, fs)
    assert np.mean(["noise" in q.flags for q in ecg[3:]]) <= 0.1


def test_wander_ratio_separates_wander_from_vf_rates():
    from vigil.signal.quality import WANDER_RATIO, wander_ratio

    fs = 250.0
    t = np.arange(int(2 * fs)) / fs
    rng = np.random.default_rng(1)
    drift = 600.0 * np.sin(2 * np.pi * 0.4 * t + 1.0) + rng.normal(0, 15, len(t))
    lo, ratio = wander_ratio(drift, fs)
    assert ratio > WANDER_RATIO and lo > 150.0
    for hz in (2.0, 4.5, 7.0):  # VT/VF rates with the same wander stay below the limit
        _, ratio = wander_ratio(drift + 800.0 * np.sin(2 * np.pi * hz * t), fs)
        assert ratio < WANDER_RATIO / 2


@pytest.mark.parametrize(("names", "units", "expected"), [
    (["MLII", "V1"], ["mV", "mV"], [0, 1]),  # mitdb
    (["D3", "V4"], ["mV", "mV"], [0, 1]),  # qtdb sele0114
    (["CM5", "CC5"], ["mV", "mV"], [0, 1]),  # qtdb chest leads
    (["MLIII", "V4"], ["mV", "mV"], [0, 1]),  # modified limb lead III
    (["record 14046, signal 0", "record 14046, signal 1"], ["mV", "mV"], [0, 1]),  # qtdb: no lead names
    (["RESP", "PLETH", "II", "V", "AVR", "ABP"], ["NU", "NU", "mV", "mV", "mV", "mmHg"], [2, 3, 4]),  # BIDMC/CinC
    (["noise1", "noise2"], ["mV", "mV"], []),  # nstdb noise records
    (["ABP", "signal 1"], ["mmHg", "NU"], []),  # an unnamed signal not in volts is not taken for ECG
])
def test_ecg_signals_by_name_then_by_unit(names: list[str], units: list[str], expected: list[int]):
    from vigil.edge.records import ecg_signals

    assert ecg_signals(names, units) == expected


def _write_record(tmp_path: Path, names: list[str], units: list[str], x: np.ndarray, fs: int = 250) -> Path:
    import wfdb

    wfdb.wrsamp("rec", fs=fs, units=units, sig_name=names, p_signal=x, fmt=["16"] * len(names),
                write_dir=str(tmp_path))
    return tmp_path / "rec"


def test_analyze_fuses_two_unnamed_leads(vendored_records: Path, tmp_path: Path, capsys):
    """Signals named only "record N, signal k" (as in qtdb) are ECG by their unit: both leads are analysed."""
    import wfdb

    r = wfdb.rdrecord(str(vendored_records / "119"), sampto=360 * 20)
    path = _write_record(tmp_path, ["record 119, signal 0", "record 119, signal 1"], ["mV", "mV"],
                         r.p_signal, fs=360)
    assert cli_main(["analyze", str(path)]) == 0
    out = capsys.readouterr()
    assert "ECG record 119, signal 0 + record 119, signal 1 (two leads fused)" in out.out
    assert "no ECG signal" not in out.err


def test_analyze_without_ecg_names_the_signal_it_falls_back_to(tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    path = _write_record(tmp_path, ["RESP", "noise1"], ["NU", "mV"], rng.normal(0, 0.1, (250 * 10, 2)))
    assert cli_main(["analyze", str(path)]) == 0
    out = capsys.readouterr()
    assert "no ECG signal among ['RESP', 'noise1']; analysing signal 0 (RESP); choose one with --channel" in out.err
    assert "ECG RESP" in out.out


def test_analyze_fuses_two_bidmc_leads_unless_a_channel_is_chosen(vendored_records: Path, capsys):
    """A BIDMC CSV (RESP, PLETH, II, V, AVR, ABP) is analysed on II + V, as WFDB records on their first two ECG leads."""
    csv = str(vendored_records / "bidmc_04_Signals.csv")
    assert cli_main(["analyze", csv]) == 0
    assert "ECG II + V (two leads fused)" in capsys.readouterr().out
    assert cli_main(["analyze", csv, "--channel", "3"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("ECG V")
