"""Heart-rate variability over rolling 5-minute windows (Task Force of the ESC/NASPE, Circulation
93 (1996) 1043-1065): SDNN, RMSSD, pNN50 and, when enough clean NN intervals exist, LF
(0.04–0.15 Hz), HF (0.15–0.4 Hz) and LF/HF from a Welch spectrum of the NN series resampled at 4 Hz.

Only intervals between two consecutive normal (N) beats count; intervals touching an ectopic or
unclassified beat are excluded, as are physiologically implausible intervals (< 0.3 s or > 2 s)
and intervals differing by more than 20 % from the previous accepted NN (artefact filter).
RMSSD and pNN50 use differences of *adjacent* NN intervals only (the Task Force's definition): the
difference across an excluded interval (an ectopic beat, a rejected interval) is not a successive
difference and is left out.  pNN50 is that NN50 count over the number of NN intervals (the Task Force's
wording, and neurokit2's `hrv_time`), not over the number of differences.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from vigil.model import Beat, Measurement, Metric

WINDOW_S = 300.0
EVERY_S = 30.0
MIN_TIME_S = 120.0  # NN time needed for time-domain metrics
MIN_FREQ_S = 240.0  # ... and for frequency-domain metrics
MAX_GAP_S = 5.0  # largest hole in the NN series allowed for the spectrum


def spectrum_lf_hf(t_s: np.ndarray, nn_ms: np.ndarray) -> tuple[float, float] | None:
    """LF and HF power (ms²) of NN intervals at times `t_s`, by linear resampling at 4 Hz + Welch."""
    import scipy.signal as sps

    if len(t_s) < 32 or np.max(np.diff(t_s)) > MAX_GAP_S:
        return None
    fs = 4.0
    grid = np.arange(t_s[0], t_s[-1], 1.0 / fs)
    x = np.interp(grid, t_s, nn_ms)
    x = x - np.mean(x)
    nper = min(len(x), 256)
    f, p = sps.welch(x, fs=fs, nperseg=nper, detrend="linear")
    df = f[1] - f[0]
    lf = float(np.sum(p[(f >= 0.04) & (f < 0.15)]) * df)
    hf = float(np.sum(p[(f >= 0.15) & (f < 0.40)]) * df)
    return lf, hf


class HrvEstimator:
    """Rolling 5-min HRV, emitted every 30 s of stream."""

    def __init__(self, fs: float, channel: str = "ecg") -> None:
        """Create an estimator for a stream at `fs` Hz."""
        self.fs = fs
        self.channel = channel
        self.reset(0)

    def reset(self, start: int) -> None:
        """Forget all beats (after a gap)."""
        self._nn: deque[tuple[int, float, bool]] = deque()  # (sample of the ending beat, NN ms, adjacent to the previous)
        self._prev: Beat | None = None
        self._next = start + int(EVERY_S * self.fs)

    def update(self, beats: list[Beat], upto: int) -> list[Measurement]:
        """Consume final beats; return HRV measurements at every 30 s boundary before `upto`."""
        out: list[Measurement] = []
        for b in beats:
            while self._next <= b.sample:
                out += self._emit(self._next)
                self._next += int(EVERY_S * self.fs)
            p = self._prev
            if p is not None and p.label == "N" and b.label == "N":
                nn = (b.sample - p.sample) / self.fs * 1000.0
                ok = 300.0 <= nn <= 2000.0
                if ok and self._nn and abs(nn - self._nn[-1][1]) > 0.2 * self._nn[-1][1] \
                        and b.sample - self._nn[-1][0] < 3 * self.fs:
                    ok = False
                if ok:
                    self._nn.append((b.sample, nn, bool(self._nn) and self._nn[-1][0] == p.sample))
            self._prev = b
        while self._next <= upto:
            out += self._emit(self._next)
            self._next += int(EVERY_S * self.fs)
        return out

    def _emit(self, at: int) -> list[Measurement]:
        lo = at - int(WINDOW_S * self.fs)
        while self._nn and self._nn[0][0] < lo:
            self._nn.popleft()
        pts = [(s, v, adj) for s, v, adj in self._nn if s <= at]
        if not pts:
            return []
        nn = np.array([v for _, v, _ in pts])
        if nn.sum() / 1000.0 < MIN_TIME_S:
            return []
        adjacent = np.array([adj for _, _, adj in pts[1:]], dtype=bool)
        d = np.diff(nn)[adjacent]
        ch = self.channel
        detail = {"n_nn": len(nn), "window_s": WINDOW_S}
        out = [Measurement(Metric.SDNN, round(float(np.std(nn, ddof=1)), 2), at, ch, detail)]
        if d.size:  # none in trigeminy (N N V): no two NN intervals are adjacent
            out += [Measurement(Metric.RMSSD, round(float(np.sqrt(np.mean(d * d))), 2), at, ch, detail),
                    Measurement(Metric.PNN50, round(float(np.sum(np.abs(d) > 50.0) / len(nn) * 100.0), 2), at, ch, detail)]
        if nn.sum() / 1000.0 >= MIN_FREQ_S:
            t = np.array([s for s, _, _ in pts]) / self.fs
            res = spectrum_lf_hf(t, nn)
            if res is not None:
                lf, hf = res
                out += [Measurement(Metric.LF, round(lf, 2), at, ch, detail),
                        Measurement(Metric.HF, round(hf, 2), at, ch, detail)]
                if hf > 0:
                    out.append(Measurement(Metric.LF_HF, round(lf / hf, 3), at, ch, detail))
        return out
