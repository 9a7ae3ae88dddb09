"""QT delineation against qtdb cardiologist annotations, streaming QtMeasurer, QTc formulas and withholding."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vigil.evaluation.eval_qt import baseline_removed, measure_beat
from vigil.model import Beat, Metric, QualityReport
from vigil.signal.qt import QtMeasurer, qtc_all

FS = 250.0
FIX = np.load(Path(__file__).parent / "data" / "rhythm_qt" / "fixtures.npz")
RECORDS = ("sel16773", "sel872", "sel302")


def _lead(rec: str, k: int) -> np.ndarray:
    return baseline_removed(FIX[f"{rec}_uV"][:, k].astype(float), FS)


@pytest.mark.parametrize("rec", RECORDS)
def test_beat_delineation_matches_cardiologist(rec: str) -> None:
    leads = [_lead(rec, 0), _lead(rec, 1)]
    beats = FIX[f"{rec}_beats"]
    qt_err, on_err = [], []
    for peak, on, t_end in FIX[f"{rec}_ref"]:
        ds = [d for d in (measure_beat(x, FS, beats, int(peak)) for x in leads) if d is not None]
        assert ds
        q_on = float(np.mean([d.qrs_on for d in ds]))
        t_e = float(np.mean([d.t_end for d in ds]))
        qt_err.append(((t_e - q_on) - (t_end - on)) * 1000 / FS)
        on_err.append((q_on - on) * 1000 / FS)
    assert len(qt_err) >= 25
    assert abs(np.mean(qt_err)) <= 20.0
    assert np.std(qt_err) <= 25.0
    assert abs(np.mean(on_err)) <= 20.0


def _stream(x: np.ndarray, beats: list[Beat], quality: list[QualityReport] | None = None, fs: float = FS) -> list:
    m = QtMeasurer(fs)
    out = []
    step = int(fs)
    bi = qi = 0
    quality = quality or []
    for start in range(0, len(x), step):
        stop = min(len(x), start + step)
        upto = max(0, stop - int(0.3 * fs))
        new = []
        while bi < len(beats) and beats[bi].sample < upto:
            new.append(beats[bi])
            bi += 1
        q = []
        while qi < len(quality) and quality[qi].sample <= stop:
            q.append(quality[qi])
            qi += 1
        out += m.update(beats=new, raw=x[start:stop], raw_start=start, upto=upto, quality=q)
    return out


@pytest.mark.parametrize("rec", RECORDS)
def test_streaming_qt_close_to_reference(rec: str) -> None:
    x = _lead(rec, 0)
    beats = [Beat(int(s)) for s in FIX[f"{rec}_beats"]]
    out = _stream(x, beats)
    qt = [m for m in out if m.metric == Metric.QT and not math.isnan(m.value)]
    qtc = [m for m in out if m.metric == Metric.QTC and not math.isnan(m.value)]
    assert len(qt) >= 3 and len(qtc) == len(qt)
    ref = FIX[f"{rec}_ref"]
    ref_qt = float(np.median((ref[:, 2] - ref[:, 1]) * 1000 / FS))
    assert abs(float(np.median([m.value for m in qt])) - ref_qt) <= 30.0
    d = qtc[-1].detail
    assert d["formula"] == "fridericia"
    assert set(d) >= {"qt_ms", "rr_ms", "qtc_fridericia", "qtc_bazett", "qtc_framingham", "qtc_hodges",
                      "t_end_wavelet_diff_ms", "t_end_split_half_ms"}
    assert d["t_end_wavelet_diff_ms"] <= 40 and d["t_end_split_half_ms"] <= 60  # clean records: T end confident
    assert qtc[-1].value == pytest.approx(d["qtc_fridericia"], abs=0.1)


def _synthetic(rate_bpm: float, seconds: float) -> tuple[np.ndarray, list[Beat]]:
    n = int(seconds * FS)
    x = np.random.default_rng(0).normal(0, 10, n)
    step = 60.0 / rate_bpm * FS
    beats = [Beat(int(100 + k * step)) for k in range(int((n - 300) / step))]
    t = np.arange(n)
    for b in beats:
        x += 1000 * np.exp(-((t - b.sample) / 3.0) ** 2)
        x += 250 * np.exp(-((t - b.sample - 0.22 * FS) / 12.0) ** 2)  # T wave
    return x, beats


def test_withheld_when_hr_above_150() -> None:
    x, beats = _synthetic(165, 60)
    out = _stream(x, beats)
    qtc = [m for m in out if m.metric == Metric.QTC]
    assert qtc and all(math.isnan(m.value) for m in qtc)
    assert all(m.detail["withheld"] == "hr>150" for m in qtc)


def test_measured_at_normal_rate_and_withheld_on_poor_quality() -> None:
    x, beats = _synthetic(70, 60)
    ok = [m for m in _stream(x, beats) if m.metric == Metric.QTC]
    assert ok and not math.isnan(ok[-1].value)
    assert 250 < ok[-1].detail["qt_ms"] < 450
    poor = [QualityReport(int(s), 0.2, ("noise",)) for s in np.arange(FS, len(x), FS)]
    bad = [m for m in _stream(x, beats, poor) if m.metric == Metric.QTC]
    assert bad and all(m.detail.get("withheld") == "poor_quality" for m in bad)


def test_withheld_when_rr_unstable() -> None:
    x, _ = _synthetic(70, 60)
    rng = np.random.default_rng(5)
    beats = [Beat(int(100 + s * FS)) for s in np.cumsum(rng.uniform(0.5, 1.2, 70)) if 100 + s * FS < len(x) - 300]
    out = [m for m in _stream(x, beats) if m.metric == Metric.QTC]
    assert out and all(m.detail.get("withheld") == "rr_unstable" for m in out)


def test_qtc_formulas() -> None:
    q = qtc_all(400.0, 0.8)
    assert q["qtc_bazett"] == pytest.approx(400 / math.sqrt(0.8))
    assert q["qtc_fridericia"] == pytest.approx(400 / 0.8 ** (1 / 3))
    assert q["qtc_framingham"] == pytest.approx(400 + 154 * 0.2)
    assert q["qtc_hodges"] == pytest.approx(400 + 1.75 * 15)
    assert qtc_all(400.0, 1.0) == pytest.approx({k: 400.0 for k in q})


def test_premature_beats_do_not_enter_the_t_wave() -> None:
    """Early V beats after every 4th N: windows of N beats followed by a premature beat are not used."""
    x, beats = _synthetic(70, 90)
    base = [m.detail["qt_ms"] for m in _stream(x, beats) if m.metric == Metric.QT and not math.isnan(m.value)]
    t = np.arange(len(x))
    tri: list[Beat] = []
    for k, b in enumerate(beats):
        tri.append(b)
        if k % 4 == 3 and b.sample + int(0.42 * FS) < len(x) - 100:  # a V beat 420 ms after every 4th N
            v = b.sample + int(0.42 * FS)
            x = x - 1500 * np.exp(-((t - v) / 8.0) ** 2)
            tri.append(Beat(v, "V"))
    tri.sort(key=lambda b: b.sample)
    out = [m for m in _stream(x, tri) if m.metric == Metric.QT and not math.isnan(m.value)]
    assert out and base
    assert abs(float(np.median([m.value for m in out])) - float(np.median(base))) <= 12.0
    assert max(m.value for m in out) < float(np.median(base)) + 40.0


def _beat(with_u: bool, fs: float = 500.0) -> tuple[np.ndarray, int]:
    """A synthetic median beat: QRS at 0.3 s, a low T wave at +300 ms and (optionally) a taller, later U wave."""
    t = np.arange(int(1.05 * fs)) / fs
    r = int(0.3 * fs)
    x = 1200 * np.exp(-(((t - 0.3) / 0.012) ** 2)) - 200 * np.exp(-(((t - 0.325) / 0.01) ** 2))
    x += 120 * np.exp(-(((t - 0.6) / 0.04) ** 2))  # T: peak 300 ms after R
    if with_u:
        x += 250 * np.exp(-(((t - 0.72) / 0.025) ** 2))  # U: peak 420 ms after R, larger and steeper than T
    return x, r


def test_t_end_is_not_carried_past_a_u_wave() -> None:
    """The T end lies before the U wave starts (the steepest descent after T is not taken from the U wave)."""
    from vigil.signal.delineate import delineate

    fs = 500.0
    plain, r = _beat(False, fs)
    with_u, _ = _beat(True, fs)
    d0 = delineate(plain, r, fs, 1.0)
    d1 = delineate(with_u, r, fs, 1.0)
    assert d0 is not None and d1 is not None
    t_end_ms = (d1.t_end - r) * 1000 / fs
    assert 330 <= (d0.t_end - r) * 1000 / fs <= 420  # Gaussian T (sigma 40 ms) at 300 ms
    assert t_end_ms < 400  # before the U wave rises (its peak is at 420 ms)
    assert abs(d1.t_end - d0.t_end) * 1000 / fs <= 30


def _alternating_t(seconds: float, early_s: float, late_s: float) -> tuple[np.ndarray, list[Beat]]:
    """70 bpm; the T wave peaks `early_s` after R on odd beats and `late_s` on even beats."""
    n = int(seconds * FS)
    x = np.random.default_rng(3).normal(0, 10, n)
    step = 60.0 / 70 * FS
    beats = [Beat(int(100 + k * step)) for k in range(int((n - 300) / step))]
    t = np.arange(n)
    for k, b in enumerate(beats):
        x += 1000 * np.exp(-((t - b.sample) / 3.0) ** 2)
        x += 250 * np.exp(-((t - b.sample - (early_s if k % 2 else late_s) * FS) / 10.0) ** 2)
    return x, beats


def test_wavelet_t_end_agrees_with_zhang_on_a_clean_t_wave() -> None:
    """The second opinion (Martinez wavelet rule) lands within 20 ms of the Zhang T end on clean beats."""
    from vigil.signal.delineate import delineate

    for fs in (125.0, 130.0, 250.0, 360.0, 500.0, 1000.0):  # the wavelet rule resamples to 250 Hz
        x, r = _beat(False, fs)
        d = delineate(x, r, fs, 1.0)
        assert d is not None and d.t_end_wavelet > d.t_peak
        assert abs(d.t_end - d.t_end_wavelet) * 1000 / fs <= 20.0
        assert 330 <= (d.t_end_wavelet - r) * 1000 / fs <= 420
        t = np.arange(len(x)) / fs
        inv = delineate(x - 240 * np.exp(-(((t - 0.6) / 0.04) ** 2)), r, fs, 1.0)  # the same T wave inverted
        assert inv is not None and abs(inv.t_end_wavelet - d.t_end_wavelet) * 1000 / fs <= 4


def test_t_end_checks_flag_beats_that_disagree() -> None:
    """Odd/even beats with T waves 120 ms apart: the split-half T ends differ and the beat is uncertain."""
    from vigil.signal.qt import t_end_checks, t_end_uncertain

    fs = 250.0
    t = np.arange(262) / fs
    rng = np.random.default_rng(1)

    def beat(t_peak: float) -> np.ndarray:
        return (1200 * np.exp(-(((t - 0.3) / 0.012) ** 2)) + 120 * np.exp(-(((t - 0.3 - t_peak) / 0.04) ** 2))
                + rng.normal(0, 5, len(t)))

    d, checks = t_end_checks(np.vstack([beat(0.3) for _ in range(16)]), 75, fs, 1.0)
    assert d is not None and not t_end_uncertain(checks)
    assert checks["t_end_split_half_ms"] <= 12 and checks["t_end_wavelet_diff_ms"] <= 20
    d, checks = t_end_checks(np.vstack([beat(0.22 if k % 2 else 0.34) for k in range(16)]), 75, fs, 1.0)
    assert d is not None and t_end_uncertain(checks)
    assert checks["t_end_split_half_ms"] >= 100


def test_streaming_qt_withheld_when_t_end_uncertain() -> None:
    """Alternating T waves: QT/QTc withheld as t_end_uncertain with the checks in detail; a steady T is measured."""
    x, beats = _alternating_t(90, 0.20, 0.34)
    out = [m for m in _stream(x, beats) if m.metric == Metric.QTC]
    assert out and all(math.isnan(m.value) for m in out)
    assert {m.detail["withheld"] for m in out} == {"t_end_uncertain"}
    assert all(m.detail["t_end_split_half_ms"] > 60 for m in out)
    x, beats = _alternating_t(90, 0.26, 0.26)
    ok = [m for m in _stream(x, beats) if m.metric == Metric.QTC]
    assert ok and not any(math.isnan(m.value) for m in ok)
    assert ok[-1].detail["t_end_split_half_ms"] <= 12 and ok[-1].detail["t_end_wavelet_diff_ms"] <= 40


def test_two_lead_streaming_qt_needs_the_leads_to_agree() -> None:
    """Fed (n, 2): identical leads give the one-lead QT; a lead whose T ends 120 ms later withholds it."""
    x, beats = _alternating_t(90, 0.26, 0.26)
    one = [m for m in _stream(x, beats) if m.metric == Metric.QT and not math.isnan(m.value)]
    two = [m for m in _stream(np.column_stack([x, 0.5 * x]), beats) if m.metric == Metric.QT]
    assert one and two and not any(math.isnan(m.value) for m in two)
    assert two[-1].detail["leads"] == 2 and two[-1].detail["t_end_lead_diff_ms"] <= 8
    assert abs(two[-1].value - one[-1].value) <= 8
    late, _ = _alternating_t(90, 0.38, 0.38)
    out = [m for m in _stream(np.column_stack([x, late]), beats) if m.metric == Metric.QTC]
    assert out and all(m.detail.get("withheld") == "t_end_uncertain" for m in out)
    assert all(m.detail["t_end_lead_diff_ms"] > 80 for m in out)


def _fake(errors: list[float], checks: list[float]) -> list:
    """BeatResults whose QT error (ms at 250 Hz) and T-end doubt (both checks, ms) are given."""
    from vigil.evaluation.eval_qt import BeatResult, RefBeat

    out = []
    for e, c in zip(errors, checks, strict=True):
        ch = {"t_end_wavelet_diff_ms": c, "t_end_split_half_ms": c}
        out.append(BeatResult(RefBeat(1000, 900, 1000), ((900, 1000 + int(e / 4), ch),)))
    return out


def test_confidence_rule_cross_validation_withholds_only_what_generalises() -> None:
    """Records whose doubtful beats are wrong: every fold picks a finite limit and the held-out
    beats kept are the accurate ones; coverage is the share of beats kept."""
    from vigil.evaluation.eval_qt import choose_rule, cross_validate

    rng = np.random.default_rng(0)
    data = {}
    for k in range(10):
        good = list(rng.normal(0, 8, 16))
        bad = list(rng.normal(0, 8, 4) + (120 if k % 2 else -120))
        data[f"r{k}"] = (250.0, _fake(good + bad, [10.0] * 16 + [90.0] * 4))
    wl, sp, ld = choose_rule(data, [0])
    assert (wl < 90 or sp < 90) and math.isinf(ld)  # one lead: no lead-agreement limit
    folds, errs, kept, total = cross_validate(data, [0])
    assert len(folds) == 5 and total == 200 and kept == 160
    assert abs(np.mean(errs)) <= 5 and np.std(errs) <= 12
    # when doubt says nothing about the error, a rule that keeps >= 75 % of the beats changes little
    flat = {f"r{k}": (250.0, _fake(list(rng.normal(0, 8, 20)), list(rng.uniform(0, 100, 20)))) for k in range(10)}
    _, errs, kept, total = cross_validate(flat, [0])
    assert kept >= 0.7 * total and np.std(errs) >= 6


def test_qtdb_q1c_errors_within_floors(data_root: Path) -> None:
    """Every qtdb .q1c record here, both leads averaged (the `eval_qt` multi numbers): honest floors.

    Measured (all beats): T end 4.4 ± 32.6 ms, QT -3.1 ± 33.1 ms over 1115 beats (target SD 25 ms not met).
    Confident beats (shipped T-end rule, every delineated lead must pass, lead T ends within 80 ms): QT
    -4.9 ± 24.4 ms, 854/1120 beats (76.2 %); the rule chosen by 5-fold record-wise CV: held-out QT
    -4.9 ± 23.9 ms, coverage 74.8 %.
    """
    import wfdb

    from vigil.evaluation.eval_qt import (
        BeatResult,
        _beat_list,
        confident,
        cross_validate,
        measure_beat_checked,
        qt_errors,
        reference_beats,
    )

    folder = data_root / "qtdb"
    te_err: list[float] = []
    qt_err: list[float] = []
    data: dict[str, tuple[float, list[BeatResult]]] = {}
    for q1c in sorted(folder.glob("*.q1c")):
        path = str(q1c.with_suffix(""))
        refs = reference_beats(path, "q1c")
        r = wfdb.rdrecord(path)
        fs = float(r.fs)
        leads = [baseline_removed(np.nan_to_num(r.p_signal[:, k]) * 1000.0, fs) for k in range(2)]
        beats = _beat_list(path)
        results = []
        for b in refs:
            per = []
            for x in leads:
                d, checks = measure_beat_checked(x, fs, beats, b.peak)
                per.append((d.qrs_on, d.t_end, checks) if d is not None else None)
            results.append(BeatResult(b, tuple(per)))
            ds = [p for p in per if p is not None]
            if not ds:
                continue
            on = float(np.mean([p[0] for p in ds]))
            te = float(np.mean([p[1] for p in ds]))
            te_err.append((te - b.t_end) * 1000.0 / fs)
            qt_err.append(((te - on) - (b.t_end - b.qrs_on)) * 1000.0 / fs)
        data[q1c.stem] = (fs, results)
    assert len(qt_err) >= 1000
    assert abs(np.mean(te_err)) <= 10.0 and abs(np.mean(qt_err)) <= 10.0
    assert np.std(te_err) <= 35.0 and np.std(qt_err) <= 35.0
    assert np.median(np.abs(qt_err)) <= 22.0
    # confident beats (the shipped rule) and the cross-validated rule
    kept = [(fs, [b for b in beats if confident(b, [0, 1], fs)]) for fs, beats in data.values()]
    conf = [e for fs, beats in kept for e in qt_errors(beats, [0, 1], fs)]
    total = sum(len(beats) for _, beats in data.values())
    assert len(conf) >= 0.72 * total
    assert abs(np.mean(conf)) <= 10.0 and np.std(conf, ddof=1) <= 25.0
    _, cv_errs, cv_kept, cv_total = cross_validate(data, [0, 1])
    assert cv_kept >= 0.72 * cv_total
    assert abs(np.mean(cv_errs)) <= 10.0 and np.std(cv_errs, ddof=1) <= 25.0


def test_load_record_resampled_scales_signal_and_annotations(data_root: Path) -> None:
    """--resample 130: the lead is 130/250 as long, annotations land on the same times, and the median-beat
    QT of a clean record stays within 12 ms of the 250 Hz one."""
    from vigil.evaluation.eval_qt import load_record, measure_beat_checked

    path = str(data_root / "qtdb" / "sel302")
    fs0, leads0, refs0, beats0 = load_record(path, "q1c", [0])
    fs1, leads1, refs1, beats1 = load_record(path, "q1c", [0], 130.0)
    assert (fs0, fs1) == (250.0, 130.0)
    assert abs(len(leads1[0]) - len(leads0[0]) * 130 / 250) <= 2
    assert len(refs1) == len(refs0) and len(beats1) == len(beats0)
    assert all(abs(a.t_end / fs0 - b.t_end / fs1) <= 0.5 / fs1 for a, b in zip(refs0, refs1, strict=True))
    for a, b in list(zip(refs0, refs1, strict=True))[:5]:
        d0, _ = measure_beat_checked(leads0[0], fs0, beats0, a.peak)
        d1, _ = measure_beat_checked(leads1[0], fs1, beats1, b.peak)
        assert d0 is not None and d1 is not None
        assert abs((d0.t_end - d0.qrs_on) / fs0 - (d1.t_end - d1.qrs_on) / fs1) * 1000 <= 12.0
