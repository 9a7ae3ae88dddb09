"""Delineation of a (median) beat: QRS onset/offset, T peak and T end.

* QRS onset/offset: slope threshold relative to the largest QRS slope, searched outwards from the
  R peak until the slope stays below the threshold for `FLAT_S` (after Laguna, Jané & Caminal,
  "Automatic detection of wave boundaries in multilead ECG signals: validation with the CSE
  database", Comput. Biomed. Res. 27 (1994) 45-60).
* T peak: largest deviation from the line joining the start of the ST segment and the end of a
  rate-dependent search window (robust to ST depression/elevation).
* T end: trapezium-area method of Zhang, Manriquez, Médigue, Papelier & Sorine, "An algorithm for
  robust and efficient location of T-wave ends in electrocardiograms", IEEE Trans. Biomed. Eng.
  53 (2006) 2544-2552: with x_m the point of steepest descent after the T peak and x_r a point
  after the T end, T end = argmax over t in [x_m, x_r] of A(t) = ½ (s(x_m) − s(t)) (2 x_r − t − x_m)
  (signs flipped for an inverted T wave).
* A second T end, for the confidence check in `vigil.signal.qt`: the rule of Martínez, Almeida,
  Olmos, Rocha & Laguna, "A wavelet-based ECG delineator: evaluation on standard databases", IEEE
  Trans. Biomed. Eng. 51 (2004) 570-581, on the quadratic-spline dyadic wavelet transform at scale
  2^4 (at 250 Hz): after the T descent's modulus maximum, the first sample where |W| falls below
  0.4 of it or reaches a local minimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vigil.signal import filters
from vigil.signal.small import median_array

ONSET_FRACTION = 0.05  # of the largest |slope| in the QRS
FLAT_S = 0.012  # the slope must stay below threshold this long
QRS_SEARCH_S = 0.16  # how far from R the QRS boundaries are searched
T_FIRST_FRACTION = 0.5  # a wave this large relative to the largest is taken as T (a later one as U)
TR_AFTER_TM_S = 0.15  # x_r = x_m + this (bounded by the search window)
TURN_FRACTION = 0.2  # rise after the T descent that marks the next wave (fraction of T amplitude)


@dataclass(frozen=True, slots=True)
class Delineation:
    """Fiducial points (sample indices into the delineated beat)."""

    r: int
    qrs_on: int
    qrs_off: int
    t_peak: int
    t_end: int
    t_amplitude: float = 0.0  # |T peak deviation| (µV), for lead selection
    noise: float = 0.0  # high-frequency residual of the beat (µV), for lead selection
    t_end_wavelet: int = 0  # second opinion: Martínez et al. 2004 rule on the scale-2^4 wavelet transform


@lru_cache(maxsize=32)
def _lowpass_sos(hz: float, fs: float) -> np.ndarray:
    import scipy.signal as sps

    return np.asarray(sps.butter(2, min(hz, 0.45 * fs), btype="lowpass", fs=fs, output="sos"))


def zero_phase_lowpass(x: np.ndarray, fs: float, hz: float) -> np.ndarray:
    """Zero-phase Butterworth low-pass (offline, on a short beat)."""
    sos = _lowpass_sos(float(hz), float(fs))
    padlen = min(len(x) - 1, 3 * 2 * len(sos))
    return filters.sosfiltfilt(sos, np.asarray(x, dtype=float), padlen)


def refine_r(x: np.ndarray, idx: int, fs: float, half_s: float = 0.05) -> int:
    """Index of the dominant QRS peak (largest |deviation| from the local median) near `idx`."""
    h = int(half_s * fs)
    lo, hi = max(0, idx - h), min(len(x), idx + h + 1)
    if hi <= lo:
        return idx
    seg = x[lo:hi]
    return lo + int(np.argmax(np.abs(seg - median_array(x[max(0, idx - 4 * h):idx + 4 * h + 1]))))


def _boundary(slope: np.ndarray, start: int, stop: int, step: int, thr: float, flat: int) -> int | None:
    """First index from `start` towards `stop` where |slope| < thr for `flat` samples."""
    run = 0
    i = start
    while (step < 0 and i >= stop) or (step > 0 and i <= stop):
        if abs(slope[i]) < thr:
            run += 1
            if run >= flat:
                return i - step * (flat - 1)
        else:
            run = 0
        i += step
    return None


WT_FS = 250.0  # the wavelet rule's native rate (Martínez et al. 2004); other rates are resampled
WT_SCALE = 4  # T waves are analysed at scale 2^4
XI_TEND = 0.4  # T end: |W| falls below this fraction of the last T modulus maximum


@lru_cache(maxsize=8)
def _wt_filter(k: int) -> np.ndarray:
    """Equivalent FIR of the quadratic-spline dyadic wavelet at scale 2^k (à trous, Mallat & Zhong 1992)."""
    f = np.array([1.0])
    for j in range(1, k):
        h = np.zeros(3 * 2 ** (j - 1) + 1)
        h[::2 ** (j - 1)] = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0
        f = np.convolve(f, h)
    g = np.zeros(2 ** (k - 1) + 1)
    g[0], g[-1] = 2.0, -2.0
    return np.convolve(f, g)


def wavelet_transform(x: np.ndarray, k: int) -> np.ndarray:
    """Dyadic wavelet transform W_{2^k} of `x` (centred, same length; a smoothed derivative)."""
    f = _wt_filter(k)
    full = np.convolve(np.asarray(x, dtype=float), f)
    c = (len(f) - 1) // 2
    return full[c:c + len(x)]


def wavelet_t_end(x: np.ndarray, fs: float, t_peak: int, sign: float, limit: int) -> int | None:
    """T end after Martínez et al., IEEE TBME 51 (2004) 570: after the T wave's last modulus maximum
    of W_{2^4}, the first sample where |W| < XI_TEND of it or reaches a local minimum (indices of `x`)."""
    ratio = WT_FS / fs
    n = len(x)
    if abs(ratio - 1.0) > 1e-6:
        tt = np.arange(0.0, n - 1, 1.0 / ratio)
        y = np.interp(tt, np.arange(n), x)
    else:
        y = np.asarray(x, dtype=float)
    w = -sign * wavelet_transform(y, WT_SCALE)  # the T descent is a positive lobe
    p, lim = int(round(t_peak * ratio)), min(len(w) - 1, int(limit * ratio))
    if lim - p < 4:
        return None
    seg = w[p:lim]
    m = p + int(np.argmax(seg[: max(2, int(0.2 * WT_FS))]))  # the descent's modulus maximum
    if w[m] <= 0:
        return None
    i = m + 1
    while i < lim and w[i] >= XI_TEND * w[m] and not (w[i] <= w[i - 1] and w[i] <= w[i + 1]):
        i += 1
    return int(round(i / ratio))


def delineate(beat: np.ndarray, r: int, fs: float, rr_s: float) -> Delineation | None:
    """Delineate one beat `beat` (baseline-free, µV) whose R peak is near index `r`; None on failure."""
    x = np.asarray(beat, dtype=float)
    n = len(x)
    if n < int(0.6 * fs) or not 0 < r < n:
        return None
    q = zero_phase_lowpass(x, fs, 40.0)
    r = refine_r(q, r, fs, 0.03)
    slope = np.gradient(q) * fs
    h = int(QRS_SEARCH_S * fs)
    lo, hi = max(1, r - h), min(n - 2, r + h)
    peak_slope = float(np.max(np.abs(slope[lo:hi])))
    if peak_slope <= 0:
        return None
    thr = ONSET_FRACTION * peak_slope
    flat = max(2, int(round(FLAT_S * fs)))
    # start the outward search from the steepest slope on each side of R
    left = lo + int(np.argmax(np.abs(slope[lo:r + 1])))
    right = r + int(np.argmax(np.abs(slope[r:hi])))
    qrs_on = _boundary(slope, left, lo, -1, thr, flat)
    qrs_off = _boundary(slope, right, hi, +1, thr, flat)
    if qrs_on is None or qrs_off is None:
        return None
    # T wave
    s = zero_phase_lowpass(x, fs, 20.0)
    t_lo = max(qrs_off + int(0.06 * fs), r + int(0.1 * fs))
    t_hi = min(n - 1, r + int(min(0.7, max(0.25, 0.6 * rr_s)) * fs))
    if t_hi - t_lo < int(0.05 * fs):
        return None
    # T peak: largest deviation from the straight line joining the ST segment start and the window
    # end (so that ST depression/elevation is not mistaken for the T wave)
    seg = s[t_lo:t_hi]
    trend = np.linspace(seg[0], seg[-1], len(seg))
    dev = seg - trend
    mag = np.abs(dev)
    big = float(np.max(mag))
    # the earliest local extremum reaching T_FIRST_FRACTION of the largest one (T before U)
    ext = [i for i in range(1, len(mag) - 1)
           if mag[i] >= T_FIRST_FRACTION * big and mag[i] >= mag[i - 1] and mag[i] >= mag[i + 1]]
    t_peak = t_lo + (ext[0] if ext else int(np.argmax(mag)))
    sign = 1.0 if dev[t_peak - t_lo] >= 0 else -1.0
    ds = np.gradient(s) * fs
    limit = min(n - 1, r + int(min(0.7 * rr_s, 0.9) * fs))  # before the next P wave
    if limit - 2 <= t_peak + 1:
        return None
    # the T wave ends before the signal turns back (start of a U or P wave): the trough before the
    # first rise of more than TURN_FRACTION of the T amplitude
    y = sign * s[t_peak:limit - 1]
    rise = y - np.minimum.accumulate(y)
    amp = float(abs(dev[t_peak - t_lo]))
    back = np.flatnonzero(rise > TURN_FRACTION * amp)
    turn = t_peak + (int(np.argmin(y[:back[0]])) if back.size else len(y))
    m_hi = min(turn, t_peak + int(0.15 * fs))
    if m_hi <= t_peak + 1:
        return None
    xm = t_peak + int(np.argmin(sign * ds[t_peak:m_hi]))  # steepest descent back towards baseline
    xr = min(limit, turn, xm + int(TR_AFTER_TM_S * fs))
    if xr <= xm + 1:
        return None
    t = np.arange(xm, xr + 1)
    area = 0.5 * sign * (s[xm] - s[t]) * (2 * xr - t - xm)
    t_end = int(t[int(np.argmax(area))])
    noise = float(np.std(x - q))
    t_wt = wavelet_t_end(x, fs, t_peak, sign, limit)
    return Delineation(r=r, qrs_on=int(qrs_on), qrs_off=int(qrs_off), t_peak=int(t_peak), t_end=t_end,
                       t_end_wavelet=t_wt if t_wt is not None else -1, t_amplitude=amp, noise=noise)


def median_beat(x: np.ndarray, centers: list[int], before: int, after: int) -> np.ndarray | None:
    """Sample-wise median of windows [c-before, c+after) of `x` (None when no window fits)."""
    wins = [x[c - before:c + after] for c in centers if c - before >= 0 and c + after <= len(x)]
    if not wins:
        return None
    return np.median(np.vstack(wins), axis=0)
