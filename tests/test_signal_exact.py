"""The speed-ups of vigil/signal must not change a single output: each fast path against the form it replaced."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal as sps

from vigil.signal import filters, pwave, quality, small, vf, vtspec
from vigil.signal.window import SlidingWindow


def _same(a: float, b: float) -> bool:
    return repr(float(a)) == repr(float(b))  # bit for bit, signed zero and NaN included


def test_small_median_std_match_numpy_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    for it in range(3000):
        n = int(rng.integers(1, 13))
        v = (rng.normal(size=n) * 10 ** rng.uniform(-3, 3)).tolist()
        if it % 5 == 0:
            v = [float(x) for x in rng.choice([0.0, -0.0, 1.0, -1.0], size=n)]
        if it % 7 == 0:
            v = [int(x) for x in rng.integers(50, 500, size=n)]
        assert _same(small.median(v), np.median(v))
        if n <= 8:
            assert _same(small.std(v), np.std(v))
        a = rng.normal(size=int(rng.integers(1, 120)))
        if it % 11 == 0:
            a[int(rng.integers(0, len(a)))] = np.nan
        assert _same(small.median_array(a), np.median(a))
    assert math.isnan(small.median([1.0, math.nan, 2.0]))
    for _ in range(2000):
        v = [float(x) for x in rng.choice([0.1, 0.5, 0.9, -1.0, np.nan, 0.85], size=int(rng.integers(1, 6)))]
        assert small.argmax(v) == int(np.argmax(v))


def test_sosfiltfilt_and_lfilter_match_scipy() -> None:
    rng = np.random.default_rng(2)
    for _ in range(300):
        fs = float(rng.choice([125, 250, 360, 500]))
        sos = sps.butter(int(rng.integers(1, 5)), min(40.0, 0.45 * fs), btype="lowpass", fs=fs, output="sos")
        x = rng.normal(size=int(rng.integers(2, 300))).cumsum()
        padlen = min(len(x) - 1, int(rng.integers(0, 3 * 2 * len(sos) + 1)))
        assert np.array_equal(filters.sosfiltfilt(sos, x, padlen), sps.sosfiltfilt(sos, x, padlen=padlen))
    b, a = sps.butter(2, [0.5, 40.0], btype="bandpass", fs=250.0)
    x = rng.normal(size=(125, 2))
    zi = sps.lfilter_zi(b, a)[:, None] * x[0][None, :]
    want = sps.lfilter(b, a, x, axis=0, zi=zi)
    got = filters.lfilter(b, a, x, zi, axis=0)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_sliding_window_equals_shift_by_copy() -> None:
    rng = np.random.default_rng(3)
    for width in (None, 2):
        cap = 50
        ref = np.zeros(cap if width is None else (cap, width))
        win = SlidingWindow(cap, width, spare=1)
        for _ in range(400):
            k = int(rng.integers(0, 70))
            x = rng.normal(size=k if width is None else (k, width))
            if k >= cap:
                ref[:] = x[-cap:]
            elif k:
                ref[:-k] = ref[k:]
                ref[-k:] = x
            win.append(x)
            assert np.array_equal(win.view, ref)


def test_count_peaks_matches_find_peaks() -> None:
    rng = np.random.default_rng(4)
    for it in range(500):
        x = np.abs(rng.normal(size=int(rng.integers(3, 400)))).cumsum() % rng.uniform(1, 10)
        if it % 3 == 0:
            x = np.round(x, 1)  # plateaus
        h, d = float(rng.uniform(0, x.max())), int(rng.integers(1, 80))
        assert quality.count_peaks(x, h, d) == len(sps.find_peaks(x, height=h, distance=d)[0])


def _vf_score_plain(x: np.ndarray, fs: float) -> float:
    """vf_score as first written: flatness, spectrum with np.mean/boolean masks, then leakage."""
    if np.ptp(x) <= 0:
        return -1.0
    n = len(x)
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    band = (freqs >= 1.0) & (freqs <= 30.0)
    spec = np.abs(np.fft.rfft((x - np.mean(x)) * np.hanning(n))[band]) ** 2
    total = float(np.sum(spec))
    if total <= 0.0:
        return -1.0
    dom = float(freqs[band][int(np.argmax(spec))])
    if not vf.BAND_LO <= dom <= 9.0:
        return -1.0
    conc = float(np.sum(spec[(freqs[band] >= vf.BAND_LO) & (freqs[band] <= 9.0)])) / total
    y = x - np.mean(x)
    num, den = float(np.sum(np.abs(y))), float(np.sum(np.abs(np.diff(y))))
    if den <= 0.0 or num <= 0.0:
        return conc - 1.0
    h = max(1, min(int(round((np.pi * num / den + 0.5) / 2.0)), n // 2))
    denom = float(np.sum(np.abs(y[h:]) + np.abs(y[:-h])))
    return conc - (float(np.sum(np.abs(y[h:] + y[:-h])) / denom) if denom > 0 else 1.0)


def test_vf_score_threshold_shortcut_keeps_every_decision() -> None:
    rng = np.random.default_rng(5)
    for it in range(1500):
        fs = float(rng.choice([250, 360])) if it % 2 else 250.0
        n = int(fs * rng.choice([2, 3]))
        t = np.arange(n) / fs
        x = np.sin(2 * np.pi * rng.uniform(0.5, 10) * t) ** int(rng.integers(1, 20)) * 500
        x = x + rng.normal(size=n) * 10 ** rng.uniform(-1, 3)
        if it % 97 == 0:
            x[:] = 3.0
        plain = _vf_score_plain(x, fs)
        assert _same(vf.vf_score(x, fs), plain)
        for thr in (0.1, 0.15):
            fast = vf.vf_score(x, fs, thr)
            assert (fast > thr) == (plain > thr)
            if fast > thr:
                assert _same(fast, plain)


def test_pwave_centred_rows_score_as_the_batch() -> None:
    rng = np.random.default_rng(6)
    for _ in range(200):
        seg = rng.normal(size=(int(rng.integers(8, 13)), 47)) * 20 + np.sin(np.arange(47) / 6.0) * 40
        rows = np.vstack([pwave.centre_row(r) for r in seg])
        assert _same(pwave.score_centred(rows, 800.0), pwave.p_wave_score(seg, 800.0))


@pytest.mark.parametrize("read_every", [1, 7])
def test_spectral_vt_last_is_the_same_whenever_read(read_every: int) -> None:
    """p2p in `last` is computed on demand; reading it late (after more steps) gives what an eager read gave."""
    rng = np.random.default_rng(7)
    fs = 250.0
    t = np.arange(int(60 * fs)) / fs
    x = 800 * np.sin(2 * np.pi * 2.5 * t) ** 3 * (t > 20) + 300 * np.sin(2 * np.pi * 1.1 * t) ** 15 * (t <= 20)
    x = x + rng.normal(size=len(t)) * 30
    eager = vtspec.SpectralVtDetector(fs, 1, vtspec.SpecParams(spi_min=0.45))
    lazy = vtspec.SpectralVtDetector(fs, 1, vtspec.SpecParams(spi_min=0.45))
    seen = None
    reads = 0
    for i, k in enumerate(range(0, len(x), 50)):
        eager.feed(x[k:k + 50])
        lazy.feed(x[k:k + 50])
        if eager.evaluated and eager.last:  # (evaluated is also set while the window is still filling)
            seen = eager.last
            seg = eager._buf[eager._w - eager._n:eager._w, 0]
            q = np.sort(seg)
            assert seen[0][2] == float(q[len(seg) - 1 - len(seg) // 100] - q[len(seg) // 100])
        if i % read_every == 0 and seen is not None:
            assert lazy.last == seen
            reads += 1
        assert lazy.on == eager.on
    assert reads > 20 and eager.on  # the 150 /min sinusoid-like stretch turned the detector on
