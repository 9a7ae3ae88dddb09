"""Spectral wide-complex-tachycardia detector: VT seen as a fast, nearly sinusoidal ECG.

The beat-by-beat QRS detector drops complexes inside fast wide runs and the beat classifier calls
a run beat "N" when it resembles the (possibly already wide) dominant template, so a VT run can be
missed beat-wise while the ECG itself plainly oscillates at a ventricular rate. Monomorphic VT
concentrates the ECG's power at its rate and the first harmonics, whereas a narrow-QRS rhythm
spreads power over many harmonics up to ~30 Hz and noise spreads it everywhere. The CinC 2015
entries used this as the *spectral purity* of the ECG in the alarm window (Fallet et al. 2016;
Kalidas & Tamil 2016; both Physiol. Meas. 37(8)); the index here follows that idea:

    SPI = P(f0 ± `half_band`) / P(1–40 Hz)

of the Hann-windowed 0.5–40 Hz ECG over the last `window_s`, f0 the dominant frequency in
0.8–5 Hz (48–300 /min). f0 can be a harmonic of a slower rhythm: the rate is f0/2 or f0/3 when
that sub-harmonic holds ≥ `sub_max` of the power at f0 (`spectral_features`). A lead is *VT-like*
when 100 < rate ≤ 250 /min (CinC 2015 VT rate; faster is ventricular flutter), SPI ≥
`spi_min` and its peak-to-peak ≥ `min_p2p_uv` (EC13: smaller deflections are not QRS complexes).
The detector turns *on* when some lead was VT-like in ≥ `hold` consecutive evaluations (one every
`step_s`) and off after `off_hold` consecutive evaluations without a VT-like lead.

Pure numpy on buffered samples with causal scipy filters; no I/O, no clock. Thresholds are chosen
by cross-validation over challenge2015 records (``python -m vigil.evaluation.eval_alarms cv``).
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

F_LOW, F_HIGH = 0.8, 5.0  # search band of the dominant (ventricular) frequency, Hz
VT_RATE_HZ = 100.0 / 60.0  # CinC 2015 VT: > 100 /min
MAX_VT_RATE_HZ = 250.0 / 60.0  # faster is ventricular flutter (the vf condition), not VT


@dataclass(frozen=True, slots=True)
class SpecParams:
    """Thresholds of the spectral detector (see the module docstring)."""

    spi_min: float = 0.5  # > 1: detector off
    window_s: float = 4.0
    step_s: float = 0.5
    hold: int = 2
    half_band: float = 0.3
    min_p2p_uv: float = 150.0
    sub_max: float = 0.25  # sub-harmonic power share that makes f0 a harmonic (see spectral_features)
    off_hold: int = 4  # once on, off only after this many consecutive evaluations without a VT-like lead


@functools.lru_cache(maxsize=8)
def _hann(n: int) -> FloatArray:
    return np.hanning(n)


@functools.lru_cache(maxsize=8)
def _bandpass_ba(fs: float) -> tuple[FloatArray, FloatArray]:
    """The same band-pass as transfer-function coefficients (cheap streaming `lfilter` on small blocks)."""
    import scipy.signal as sps

    b, a = sps.butter(2, [0.5, min(40.0, fs / 2.5)], btype="bandpass", fs=fs)
    return np.asarray(b, dtype=float), np.asarray(a, dtype=float)


def spectral_purity(x: FloatArray, fs: float, half_band: float = 0.3) -> tuple[float, float]:
    """Dominant frequency f0 (Hz, 0.8–5 Hz) and spectral purity of the band-passed ECG segment `x`.

    Returns ``(f0, spi)``, spi = power within f0 ± `half_band` over power in 1–40 Hz of the
    Hann-windowed segment (after Fallet et al., Physiol. Meas. 37 (2016) 1313); (nan, 0) for a flat
    or too short segment. It can exceed 1 when f0 < 1.3 Hz (part of its band lies below 1 Hz), never
    at a VT rate.
    """
    f0, spi, _ = spectral_features(x, fs, half_band)
    return f0, spi


def spectral_features(x: FloatArray, fs: float, half_band: float = 0.3,
                      sub_max: float = 0.25) -> tuple[float, float, float]:
    """``(f0, spi, rate)``: as `spectral_purity`, plus the rhythm's fundamental frequency (Hz).

    f0 may be a harmonic of a slower rhythm (a broad sinus complex at 58 /min can put its largest
    0.8–5 Hz peak at 116 /min). rate = f0 / k for the largest k in (2, 3) whose sub-harmonic
    f0 / k (≥ 0.5 Hz) holds at least `sub_max` of the power at f0, else f0.
    """
    x = np.asarray(x, dtype=float)
    if len(x) < int(fs):
        return math.nan, 0.0, math.nan
    total_x = float(x.sum())  # finite exactly when every sample is (else checked sample by sample)
    if not math.isfinite(total_x) and not np.isfinite(x).all():
        return math.nan, 0.0, math.nan
    g = _grid(len(x), float(fs))
    top = max(g.i40, g.hi, bisect.bisect_right(g.fl, F_HIGH + half_band))  # the highest bin any sum below uses
    w = x - total_x / len(x)  # = x - x.mean() (the same sum, divided by the count)
    w *= g.hann
    p = np.abs(np.fft.rfft(w, g.n)[:top]) ** 2
    total = float(p[g.i1:g.i40].sum())
    if total <= 0.0:
        return math.nan, 0.0, math.nan
    k = g.lo + int(p[g.lo:g.hi].argmax())
    f0 = g.fl[k]
    fl = g.fl

    def band(c: float) -> float:  # same bins as f - half_band <= f <= f + half_band
        a, b = bisect.bisect_left(fl, c - half_band), bisect.bisect_right(fl, c + half_band)
        if b - a < 8:  # NumPy sums fewer than 8 values one by one from 0.0: the same here, without a call
            s = 0.0
            for v in p[a:b].tolist():
                s += v
            return s
        return float(p[a:b].sum())

    at_f0 = band(f0)
    rate = f0
    for div in (2, 3):
        if f0 / div >= 0.5 and band(f0 / div) >= sub_max * at_f0:
            rate = f0 / div
    return f0, at_f0 / total, rate


@dataclass(frozen=True, slots=True)
class _Grid:
    """FFT length, window and bin positions of the search bands for one segment length and rate."""

    n: int
    hann: FloatArray
    fl: list[float]  # bin frequencies (Hz) as Python floats (bisect)
    i1: int  # first bin ≥ 1 Hz
    i40: int  # one past the last bin ≤ 40 Hz
    lo: int  # first bin ≥ F_LOW
    hi: int  # one past the last bin ≤ F_HIGH


@functools.lru_cache(maxsize=8)
def _grid(m: int, fs: float) -> _Grid:
    """`_Grid` for segments of `m` samples at `fs` Hz (zero-padded FFT: bins ≤ half the window's resolution)."""
    n = 1 << max(10, int(math.ceil(math.log2(m))) + 1)
    f = _freqs(n, fs)
    fl = f.tolist()
    return _Grid(n=n, hann=_hann(m), fl=fl, i1=bisect.bisect_left(fl, 1.0), i40=bisect.bisect_right(fl, 40.0),
                 lo=bisect.bisect_left(fl, F_LOW), hi=bisect.bisect_right(fl, F_HIGH))


@functools.lru_cache(maxsize=8)
def _freqs(n: int, fs: float) -> FloatArray:
    return np.asarray(np.fft.rfftfreq(n, 1.0 / fs), dtype=np.float64)


_FILTERS: list[ModuleType] = []


def _filters() -> ModuleType:
    """`vigil.signal.filters`, imported on first use (it imports scipy.signal; the alarm engine imports this module)."""
    if not _FILTERS:
        from vigil.signal import filters

        _FILTERS.append(filters)
    return _FILTERS[0]


def _p2p(seg: FloatArray) -> float:
    """Peak-to-peak between the 1st and 99th percentile samples (order statistics) of `seg`."""
    q = np.partition(seg, (len(seg) // 100, len(seg) - 1 - len(seg) // 100))
    return float(q[len(seg) - 1 - len(seg) // 100] - q[len(seg) // 100])


class SpectralVtDetector:
    """Streaming per-guest detector over one or more ECG leads (µV); see the module docstring."""

    def __init__(self, fs: float, n_leads: int, params: SpecParams) -> None:
        """Create a detector for `n_leads` leads sampled at `fs` Hz."""
        import scipy.signal as sps

        self.fs = float(fs)
        self.params = params
        self._ba = _bandpass_ba(self.fs)
        self._zi0 = sps.lfilter_zi(*self._ba)
        self._zi = np.zeros((len(self._zi0), n_leads))
        self._n = int(round(params.window_s * self.fs))
        self._buf = np.zeros((2 * self._n, n_leads))  # newest samples end at `_w`; window = [_w - _n, _w)
        self._w = 0
        self._filled = 0
        self._step = max(1, int(round(params.step_s * self.fs)))
        self._pending = np.zeros((self._step, n_leads))  # raw samples not yet filtered: [:_npend]
        self._npend = 0
        self._streak = 0
        self._misses = 0
        self.on = False
        self.evaluated = False
        self._last: tuple[tuple[float, float, float], ...] = ()  # see `last`
        self._feats: list[tuple[float, float, float | None]] = []  # the last evaluation, p2p None until needed
        self._lazy = False  # some p2p of the last evaluation not computed yet (window still in the buffer)
        self._last_end = 0  # buffer index one past the last evaluated window

    @property
    def last(self) -> tuple[tuple[float, float, float], ...]:
        """(rate Hz, spi, p2p µV) per lead at the last evaluation (p2p: the 1st-99th percentile range)."""
        if self._lazy:
            self._materialise()
        return self._last

    def _materialise(self) -> None:
        """Compute the deferred p2p values of the last evaluation from its window, still in the buffer."""
        win = self._buf[self._last_end - self._n:self._last_end]
        self._last = tuple((f0, spi, _p2p(win[:, k]) if p2p is None else p2p)
                           for k, (f0, spi, p2p) in enumerate(self._feats))
        self._lazy = False

    @property
    def n_leads(self) -> int:
        """Number of leads this detector was built for."""
        return int(self._buf.shape[1])

    def reset(self) -> None:
        """Forget the buffered signal (after a gap)."""
        self._filled = 0
        self._npend = 0
        self._streak = 0
        self.on = False
        self._zi[:] = 0.0

    def feed(self, x: FloatArray) -> bool:
        """Add samples (n × leads, µV); returns True when `on` changed (`evaluated`: an evaluation ran).

        Samples wait until a whole evaluation step is there; it is then filtered in one call.
        """
        x = np.asarray(x, dtype=float)
        if x.ndim == 1:
            x = x[:, None]
        x = x[:, :self.n_leads]
        if not len(x):
            return False
        before = self.on
        self.evaluated = False
        step, pend = self._step, self._pending
        i, n = 0, len(x)
        while i < n:
            take = min(n - i, step - self._npend)
            pend[self._npend:self._npend + take] = x[i:i + take]
            self._npend += take
            i += take
            if self._npend == step:
                self.evaluated = True
                self._npend = 0
                self._ingest(pend)
                self._evaluate()
        return before != self.on

    def _ingest(self, x: FloatArray) -> None:
        """Filter one step of raw samples and append it to the window buffer."""
        filters = _filters()
        if not math.isfinite(float(x.sum())) and not np.isfinite(x).all():  # a finite sum: every sample is
            x = np.nan_to_num(x)
        if self._filled == 0:
            self._zi = self._zi0[:, None] * x[0][None, :]  # start settled on the first sample
        y, self._zi = filters.lfilter(self._ba[0], self._ba[1], x, self._zi, axis=0)
        take = len(y)
        if self._w + take > len(self._buf):  # keep the last window, move it to the front
            if self._lazy and self._last_end != self._w:  # the evaluated window is not the one kept
                self._materialise()
            self._buf[:self._n] = self._buf[self._w - self._n:self._w]
            self._last_end -= self._w - self._n
            self._w = self._n
        self._buf[self._w:self._w + take] = y
        self._w += take
        self._filled = min(self._n, self._filled + take)

    def _evaluate(self) -> None:
        if self._filled < self._n:
            return
        p = self.params
        feats: list[tuple[float, float, float | None]] = []
        like = False
        for k in range(self.n_leads):
            seg = self._buf[self._w - self._n:self._w, k]
            _, spi, f0 = spectral_features(seg, self.fs, p.half_band, p.sub_max)
            p2p: float | None = None  # needed here only for a lead at a VT rate and purity (else on demand: `last`)
            if VT_RATE_HZ < f0 <= MAX_VT_RATE_HZ and spi >= p.spi_min:
                p2p = _p2p(seg)
                like = like or p2p >= p.min_p2p_uv
            feats.append((f0, spi, p2p))
        self._feats = feats
        self._lazy = any(f[2] is None for f in feats)
        self._last_end = self._w
        self._last = () if self._lazy else tuple(feats)  # type: ignore[arg-type]
        self._streak = self._streak + 1 if like else 0
        self._misses = 0 if like else self._misses + 1
        self.on = self._streak >= p.hold or (self.on and self._misses < p.off_hold)
