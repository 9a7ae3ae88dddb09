"""Streaming QRS detection and beat classes on real MIT-BIH records (vendored 119 and 203)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal as sps

from vigil.evaluation.ec57 import read_reference, score
from vigil.model import Beat
from vigil.signal.analyzer import EcgAnalyzer


def _load(vendored: Path, rec: str) -> tuple[np.ndarray, float, list[tuple[int, str]]]:
    import wfdb

    r = wfdb.rdrecord(str(vendored / rec))
    ref, _ = read_reference(str(vendored / rec))
    return r.p_signal * 1000.0, float(r.fs), ref


def _run(x: np.ndarray, fs: float, block: int, seq0: int = 0, n_leads: int | None = None) -> list[Beat]:
    n_leads = n_leads or (1 if x.ndim == 1 else x.shape[1])
    an = EcgAnalyzer(fs, n_leads=n_leads, rhythm=False, qt=False)
    out = []
    for i in range(0, len(x), block):
        out += an.feed(x[i:i + block], seq0 + i)
    out += an.flush()
    return [o for o in out if isinstance(o, Beat)]


@pytest.fixture(scope="module")
def rec119(vendored_records: Path) -> tuple[np.ndarray, float, list[tuple[int, str]]]:
    return _load(vendored_records, "119")


@pytest.fixture(scope="module")
def vendored_records() -> Path:  # module-scoped copy of the conftest fixture
    from vigil.datasets import VENDORED_RECORDS

    return VENDORED_RECORDS


def test_streaming_equals_batch_for_any_block_size(rec119):
    x, fs, _ = rec119
    x = x[: int(40 * fs)]
    whole = [(b.sample, b.label) for b in _run(x, fs, len(x))]
    assert len(whole) > 40
    for block in (1, 7, 130, 1000):
        got = [(b.sample, b.label) for b in _run(x, fs, block)]
        assert got == whole, f"block size {block} differs"


@pytest.mark.parametrize("rec,leads,min_se,min_ppv", [("119", 2, 99.8, 99.8), ("119", 1, 99.8, 99.8),
                                                     ("203", 2, 98.5, 98.0)])
def test_accuracy_floor_on_vendored_records(vendored_records, rec, leads, min_se, min_ppv):
    x, fs, ref = _load(vendored_records, rec)
    beats = _run(x[:, :leads], fs, 360)
    sc = score(ref, [(b.sample, b.label) for b in beats], fs, start=int(10 * fs))
    assert 100 * sc.se >= min_se and 100 * sc.ppv >= min_ppv, (sc.se, sc.ppv, sc.fn, sc.fp)


def test_veb_on_119(rec119):
    x, fs, ref = rec119
    beats = _run(x, fs, 500)
    sc = score(ref, [(b.sample, b.label) for b in beats], fs, start=int(60 * fs))
    assert sc.veb_se >= 0.95 and sc.veb_ppv >= 0.95, sc.veb_counts()


def test_130_hz_resampled_still_detects(rec119):
    x, fs, ref = rec119
    y = sps.resample_poly(x[:, 0], 13, 36)  # 360 -> 130 Hz
    beats = _run(y, 130.0, 13)
    ref130 = [(int(round(s * 130 / 360)), c) for s, c in ref]
    sc = score(ref130, [(b.sample, b.label) for b in beats], 130.0, start=int(10 * 130))
    assert sc.se >= 0.995 and sc.ppv >= 0.995, (sc.fn, sc.fp)


def test_inverted_polarity(rec119):
    x, fs, ref = rec119
    beats = _run(-x[:, 0], fs, 250)
    sc = score(ref, [(b.sample, b.label) for b in beats], fs, start=int(10 * fs))
    assert sc.se >= 0.998 and sc.ppv >= 0.998, (sc.fn, sc.fp)


def test_baseline_wander_and_offset(rec119):
    x, fs, ref = rec119
    t = np.arange(len(x)) / fs
    rng = np.random.default_rng(1)
    wander = 1500 * np.sin(2 * np.pi * 0.3 * t) + 800 * np.sin(2 * np.pi * 0.05 * t) \
        + np.cumsum(rng.normal(0, 2.0, len(x))) + 20000.0
    beats = _run(x[:, 0] + wander, fs, 100)
    sc = score(ref, [(b.sample, b.label) for b in beats], fs, start=int(10 * fs))
    assert sc.se >= 0.995 and sc.ppv >= 0.995, (sc.fn, sc.fp)


def test_r_peak_localisation_within_a_few_ms(rec119):
    x, fs, ref = rec119
    beats = _run(x, fs, 360)
    det = np.array([b.sample for b in beats])
    err = []
    for s, _ in ref:
        j = np.argmin(np.abs(det - s))
        if abs(det[j] - s) < 0.15 * fs:
            err.append((det[j] - s) / fs * 1000)
    assert np.median(np.abs(err)) <= 10.0, np.percentile(err, [5, 50, 95])


def test_gap_relearns_and_never_invents(rec119):
    x, fs, ref = rec119
    a, b = int(60 * fs), int(70 * fs)
    an = EcgAnalyzer(fs, n_leads=2, rhythm=False, qt=False)
    out = []
    for i in range(0, a, 250):
        out += an.feed(x[i:min(i + 250, a)], i)
    for i in range(b, int(180 * fs), 250):  # seq jumps from a to b: a gap
        out += an.feed(x[i:i + 250], i)
    beats = [o.sample for o in out if isinstance(o, Beat)]
    assert not [s for s in beats if a <= s < b]
    assert beats == sorted(beats)
    after = [(s, c) for s, c in ref if b + 3 * fs <= s < 179 * fs]
    sc = score(after, [(s, "N") for s in beats if b + 3 * fs <= s < 179 * fs], fs)
    assert sc.se >= 0.99 and sc.ppv >= 0.99


def test_latency_at_most_one_second_for_regular_beats(rec119):
    x, fs, _ = rec119
    an = EcgAnalyzer(fs, n_leads=2, rhythm=False, qt=False)
    lat = []
    for i in range(0, int(120 * fs), 36):
        for o in an.feed(x[i:i + 36], i):
            if isinstance(o, Beat) and o.sample > 3 * fs:
                lat.append((i + 36 - o.sample) / fs)
    lat = np.array(lat)
    assert np.mean(lat <= 1.0) >= 0.98 and lat.max() <= 2.5, (np.percentile(lat, [50, 99]), lat.max())
