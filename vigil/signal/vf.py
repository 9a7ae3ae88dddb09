"""Streaming ventricular fibrillation / flutter detector on the ECG signal (independent of QRS beats).

Two classic organisation measures over a sliding window, both from the review by Amann, Tratnig &
Unterkofler, "Reliability of old and new ventricular fibrillation detection algorithms for
automated external defibrillators", BioMed. Eng. OnLine 4:60 (2005):

* VF-filter leakage (Kuo & Dillman 1978): the mean period T of the signal is estimated from the
  ratio of absolute sum to absolute-difference sum; a narrow band-stop at 1/T leaves little
  "leakage" for a near-sinusoidal VF and much for spiky QRS trains.  VF when leakage < 0.625.
  Note: Amann's N = ⌊π Σ|x| / Σ|Δx| + ½⌋ is already half the mean period, and the filter adds x[i]
  and x[i−N]; this module shifts by N/2 (`LEAK_SHIFT` = 0.5, a quarter period), so a pure sinusoid
  scores ≈ 0.71 here instead of ≈ 0.  The thresholds below were read off this variant; Kuo &
  Dillman's half-period shift (`LEAK_SHIFT` = 1.0) was evaluated and not adopted (README "VF time
  to alarm": fewer false onsets, but later onsets at any margin that keeps them).
* Spectral concentration (after Barro et al. 1989): the fraction of the power spectrum lying in
  the VF band (2.5-9 Hz; VF/VFL dominant frequencies 3-7 Hz) compared with 1-30 Hz.  Organised
  rhythms spread power into QRS harmonics above 9 Hz.

The two are combined into one score, concentration − leakage (both 0..1), evaluated every 0.5 s on
the last 3 s (VF-like above 0.1) and, when that fails, on the last 2 s (VF-like above 0.15: a
shorter window is noisier).  VF is declared after `CONFIRM` consecutive VF-like evaluations, kept
open while either window scores above 0.1 (hysteresis) and cleared after `RELEASE` consecutive
evaluations at or below it.  (With the quarter-period shift the leakage of VF is 0.65-0.75 and of
organised rhythms 0.75-0.95 on a 0.5-40 Hz band-pass, so Amann's < 0.625 does not apply and the
spectral term separates the overlap.)  The margins were read off vfdb 418, cudb cu01, mitdb and
nstdb; the 2 s window was added because slow flutter that starts ragged needed ~2.5 s of regular
waves in the 3 s window before its score crossed, up to 7.7 s after onset (README "VF time to
alarm").  The QRS detector's beats are not used, so spurious "beats" emitted during VF do not matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vigil.signal.window import SlidingWindow

WINDOWS: tuple[tuple[float, float], ...] = ((3.0, 0.1), (2.0, 0.15))  # (analysis window s, score to declare VF)
HOP_S = 0.5  # evaluation step
KEEP_MIN = 0.1  # score (on either window) that keeps a declared VF open
CONFIRM = 2  # consecutive VF-like windows to declare VF
RELEASE = 3  # consecutive non-VF windows to clear it
BAND_LO = 2.5  # lower edge of the VF band, Hz
LEAK_SHIFT = 0.5  # band-stop shift as a fraction of Kuo & Dillman's N (≈ half the mean period): 0.5 = a quarter period


def vf_leakage(x: np.ndarray, fs: float) -> float:
    """VF-filter leakage of a window (Kuo & Dillman 1978, Amann et al. 2005), shifted by `LEAK_SHIFT` × N samples."""
    x = np.asarray(x, dtype=float)
    return _leakage(x - x.mean())


def _leakage(x: np.ndarray) -> float:
    """`vf_leakage` of a mean-removed window."""
    ax = np.abs(x)
    return _leakage_from(x, ax, float(ax.sum()), float(np.abs(x[1:] - x[:-1]).sum()))


def _leakage_from(x: np.ndarray, ax: np.ndarray, num: float, den: float) -> float:
    """`_leakage` given |x|, its sum and the sum of |first differences|."""
    if den <= 0.0 or num <= 0.0:
        return 1.0
    n_half = int(round((np.pi * num / den + 0.5) * LEAK_SHIFT))  # 0.5: N/2 = a quarter of the mean period (see module doc)
    n_half = max(1, min(n_half, len(x) // 2))
    denom = float((ax[n_half:] + ax[:-n_half]).sum())
    return float(np.abs(x[n_half:] + x[:-n_half]).sum() / denom) if denom > 0 else 1.0


@lru_cache(maxsize=16)
def _spectral_setup(n: int, fs: float) -> tuple[np.ndarray, slice, np.ndarray, slice]:
    """Hann window, the 1-30 Hz bins (a slice of the rfft), their frequencies, and the BAND_LO-9 Hz bins within them."""
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    idx = np.flatnonzero((freqs >= 1.0) & (freqs <= 30.0))  # contiguous: frequencies increase
    band = slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0)
    band_freqs = freqs[band]
    vf_idx = np.flatnonzero((band_freqs >= BAND_LO) & (band_freqs <= 9.0))
    vf_band = slice(int(vf_idx[0]), int(vf_idx[-1]) + 1) if vf_idx.size else slice(0, 0)
    return np.hanning(n), band, band_freqs, vf_band


def spectral_concentration(x: np.ndarray, fs: float) -> tuple[float, float]:
    """Return (power fraction in BAND_LO-9 Hz of 1-30 Hz, dominant frequency in Hz) of a Hann-windowed window."""
    x = np.asarray(x, dtype=float)
    return _concentration(x - x.mean(), fs)


def _concentration(x: np.ndarray, fs: float) -> tuple[float, float]:
    """`spectral_concentration` of a mean-removed window."""
    spec, band_freqs, vf_band = _power(x, fs)
    total = float(spec.sum())
    if total <= 0.0:
        return 0.0, 0.0
    dominant = float(band_freqs[int(spec.argmax())])
    return float(spec[vf_band].sum()) / total, dominant


def _power(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray, slice]:
    """Power spectrum (1-30 Hz bins) of a mean-removed, Hann-windowed window; its frequencies; the VF band slice."""
    hann, total_band, band_freqs, vf_band = _spectral_setup(len(x), float(fs))
    spec = np.abs(np.fft.rfft(x * hann)[total_band])
    np.square(spec, out=spec)  # = np.abs(...) ** 2
    return spec, band_freqs, vf_band


def _score_spectrum(x: np.ndarray, fs: float, leak: float) -> float:
    """Concentration − `leak` of a mean-removed window, or -1 when the dominant frequency is outside the VF band.

    The dominant frequency is checked before the power sums (the same -1 as `vf_score` when it fails).
    """
    spec, band_freqs, vf_band = _power(x, fs)
    if not BAND_LO <= float(band_freqs[int(spec.argmax())]) <= 9.0:
        return -1.0
    total = float(spec.sum())
    if total <= 0.0:  # spectral_concentration reports dominant 0 Hz then: outside the band
        return -1.0
    return float(spec[vf_band].sum()) / total - leak


def vf_score(x: np.ndarray, fs: float, above: float | None = None) -> float:
    """Spectral concentration − VF-filter leakage of a window; -1 when flat or the dominant frequency is outside the VF band.

    With `above` (> 0), -1 is also returned, without the spectrum, when the leakage alone shows
    that the score cannot exceed `above` (concentration ≤ 1), so ``vf_score(x, fs, t) > t`` equals
    ``vf_score(x, fs) > t``.
    """
    x = np.asarray(x, dtype=float)
    if above is not None and above >= _CONC_SLACK:
        xc = x - x.mean()
        ax = np.abs(xc)
        num, den = float(ax.sum()), float(np.abs(xc[1:] - xc[:-1]).sum())
        if math.isfinite(num) and math.isfinite(den):  # (else: the general path below)
            leak = _leakage_from(xc, ax, num, den)  # 1 for a flat window (den = 0): -1 below, as the flat test gives
            if 1.0 + _CONC_SLACK - leak <= above:
                return -1.0
            return _score_spectrum(xc, fs, leak)  # not flat here (its leakage is below 1)
    if x.max() - x.min() <= 0:
        return -1.0
    xc = x - x.mean()  # both measures work on the mean-removed window
    conc, dom = _concentration(xc, fs)
    if not BAND_LO <= dom <= 9.0:
        return -1.0
    return conc - _leakage(xc)


_CONC_SLACK = 1e-9  # the concentration is a ratio of sums of one power spectrum: ≤ 1 up to rounding


def is_vf_like(x: np.ndarray, fs: float, threshold: float = WINDOWS[0][1]) -> bool:
    """True when a window looks like VF/VFL (spectral concentration − VF-filter leakage > `threshold`)."""
    return vf_score(x, fs) > threshold


@dataclass(frozen=True, slots=True)
class VfDecision:
    """VF state change: `active` since `sample` (for onsets: the start of the first VF-like window)."""

    active: bool
    sample: int


class VfDetector:
    """Sliding-window VF detector fed with consecutive signal chunks."""

    def __init__(self, fs: float) -> None:
        """Create a detector for a stream sampled at `fs` Hz."""
        self.fs = fs
        self._wins = [(int(round(w * fs)), thr) for w, thr in WINDOWS]
        self._win = max(n for n, _ in self._wins)
        self._min_win = min(n for n, _ in self._wins)  # an evaluation needs at least this much signal
        self._hop = max(1, int(round(HOP_S * fs)))
        self._buf = SlidingWindow(self._win)  # the newest sample is last
        self._n = 0  # valid samples at the end of `_buf`
        self._end = 0  # sample index one past the last buffered sample
        self._since_eval = 0
        self._pos = 0  # consecutive VF-like windows
        self._neg = 0
        self._first_pos_mid = 0
        self._first_neg_end = 0
        self.active = False

    def reset(self) -> None:
        """Forget buffered signal (after a gap)."""
        self._n = 0
        self._since_eval = 0
        self._pos = self._neg = 0

    def feed(self, x: np.ndarray, start: int) -> list[VfDecision]:
        """Consume samples [start, start+len(x)); return state changes."""
        if start != self._end and self._n:
            self.reset()
        out: list[VfDecision] = []
        i = 0
        n = len(x)
        while i < n:
            take = min(n - i, self._hop - self._since_eval)
            self._push(x[i:i + take])
            i += take
            self._since_eval += take
            self._end = start + i
            if self._since_eval >= self._hop:
                self._since_eval = 0
                if self._n >= self._min_win:
                    d = self._evaluate()
                    if d is not None:
                        out.append(d)
        self._end = start + n
        return out

    def _push(self, x: np.ndarray) -> None:
        k = len(x)
        self._buf.append(x)
        self._n = min(self._win, self._n + k)

    def _evaluate(self) -> VfDecision | None:
        vf = False
        mid = self._end
        for n, thr in self._wins:  # VF-like when any filled window passes (the longest first)
            limit = KEEP_MIN if self.active else thr
            if n <= self._n and vf_score(self._buf.view[-n:], self.fs, limit) > limit:
                vf, mid = True, self._end - n // 2
                break
        if vf:
            if self._pos == 0:
                self._first_pos_mid = mid
            self._pos += 1
            self._neg = 0
        else:
            if self._neg == 0:
                self._first_neg_end = self._end - self._hop
            self._neg += 1
            self._pos = 0
        if not self.active and self._pos >= CONFIRM:
            self.active = True
            return VfDecision(True, self._first_pos_mid)
        if self.active and self._neg >= RELEASE:
            self.active = False
            return VfDecision(False, self._first_neg_end)
        return None

