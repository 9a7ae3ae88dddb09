"""Streaming atrial-fibrillation detector from RR intervals (low complexity, beat by beat).

Method
------
After Petrėnas, Marozas & Sörnmo, "Low-complexity detection of atrial fibrillation in continuous
long-term monitoring", Comput. Biol. Med. 65 (2015) 184-191: RR irregularity over a short window
of intervals, measured by a low quantile of successive differences (robust to ectopic beats),
normalised by the mean RR (rate independence), smoothed by exponential averaging and thresholded
with hysteresis.  Differences to Petrėnas: the window is 16 intervals instead of 8 (steadier on
unaudited beat streams); the lower quartile of the absolute differences replaces the median (in
sinus rhythm with frequent premature beats, up to ~60 % of the differences are large, in AF the
lower quartile is still large); and bigeminy suppression is done by measuring the median differences at
lags 1, 2 and 3 and keeping the smallest (in bigeminy the lag-2 and in trigeminy the lag-3
difference is near zero, in AF every lag is irregular).  Intervals touching ventricular/unknown
beats are skipped when beat labels are available.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

WINDOW = 16  # RR intervals (Petrėnas 2015 uses 8)
LAGS = 3  # successive-difference lags; the smallest irregularity wins (bigeminy/trigeminy suppression)
ALPHA = 0.04  # exponential averaging weight per interval (≈ 25-interval memory)
QUANTILE = 0.25  # lower quartile instead of the median: frequent ectopy leaves most differences small
THRESHOLD_ON = 0.025  # smoothed normalised irregularity that opens AF
THRESHOLD_OFF = 0.0225  # ... and that closes it (hysteresis); both by the rule of vigil.evaluation.af_cv on afdb
DELAY_BEATS = 12  # typical detection lag in beats; episode boundaries are back-dated by this much


@dataclass(frozen=True, slots=True)
class AfDecision:
    """A change of the AF state: `active` from the beat at `sample` (back-dated onset/offset)."""

    active: bool
    sample: int


class AfDetector:
    """Beat-by-beat AF detector on RR intervals (Petrėnas 2015 style, with lag-2/3 bigeminy/trigeminy suppression)."""

    def __init__(self, fs: float, threshold_on: float = THRESHOLD_ON, threshold_off: float = THRESHOLD_OFF,
                 trace: list[tuple[int, float]] | None = None, *, window: int = WINDOW, quantile: float = QUANTILE,
                 alpha: float = ALPHA) -> None:
        """Create a detector for a stream sampled at `fs` Hz.

        `trace`, when given, receives (back-dated beat sample, smoothed irregularity) for every interval
        that updates the irregularity (threshold-independent; `replay` re-thresholds it offline).
        `window`/`quantile`/`alpha` default to the module constants (other values: cross-validation).
        """
        self.fs = fs
        self.threshold_on = threshold_on
        self.threshold_off = threshold_off
        self.trace = trace
        self.window = window
        self.alpha = alpha
        self._q_lo = int(quantile * (window - 1))  # the quantile by linear interpolation between ranks
        self._q_frac = quantile * (window - 1) - self._q_lo
        self._rr: deque[float] = deque(maxlen=window + LAGS)
        # rr[_lag_idx[k - 1]] is the window lagged by k beats (k = 1..LAGS) of the full RR history
        self._lag_idx = (LAGS - 1 - np.arange(LAGS))[:, None] + np.arange(window)[None, :]
        self._beat_samples: deque[int] = deque(maxlen=DELAY_BEATS + 1)
        self.irregularity = 0.0  # smoothed
        self.active = False
        self._n = 0

    def reset(self) -> None:
        """Forget the RR history (after a gap or a noise period); the AF state is kept."""
        self._rr.clear()
        self._n = 0

    def add_interval(self, rr_s: float, beat_sample: int) -> AfDecision | None:
        """Add one RR interval (seconds) ending at `beat_sample`; return a state change or None."""
        self._beat_samples.append(beat_sample)
        if not 0.2 <= rr_s <= 3.0:  # physiologically implausible for conducted AF: ignore
            return None
        self._rr.append(rr_s)
        w, lo = self.window, self._q_lo
        if len(self._rr) < w + LAGS:
            return None
        rr = np.fromiter(self._rr, dtype=float, count=w + LAGS)
        win = rr[-w:]
        d = np.sort(np.abs(win - rr[self._lag_idx]), axis=1)  # row k-1: the window lagged by k beats
        hi = min(lo + 1, w - 1)
        irr = float(np.min(d[:, lo] + self._q_frac * (d[:, hi] - d[:, lo])))  # = np.quantile (linear)
        irr /= float(win.sum()) / w
        self._n += 1
        if self._n == 1 and not self.active:
            self.irregularity = irr
        else:
            self.irregularity += self.alpha * (irr - self.irregularity)
        if self.trace is not None and self._n >= 4:
            self.trace.append((self._beat_samples[0], self.irregularity))
        if not self.active and self.irregularity > self.threshold_on and self._n >= 4:
            self.active = True
            return AfDecision(True, self._beat_samples[0])
        if self.active and self.irregularity < self.threshold_off:
            self.active = False
            return AfDecision(False, self._beat_samples[0])
        return None


def replay(trace: list[tuple[int, float]], threshold_on: float, threshold_off: float, end: int) -> list[tuple[int, int]]:
    """AF intervals [start, end) from a recorded irregularity trace, re-thresholded with hysteresis.

    Reproduces what `RhythmTracker` reports from one uninterrupted `AfDetector` run without the
    P-wave veto (beats only, no gaps, no noise): open at the back-dated onset, never before the last
    AF end, close at the back-dated offset, and at `end` if still open.  Used to cross-validate
    the thresholds without re-running the tracker for every candidate.
    """
    if not trace:
        return []
    samples = np.fromiter((t[0] for t in trace), dtype=np.int64, count=len(trace))
    irr = np.fromiter((t[1] for t in trace), dtype=float, count=len(trace))
    return replay_arrays(samples, irr, threshold_on, threshold_off, end)


def replay_arrays(samples: np.ndarray, irr: np.ndarray, threshold_on: float, threshold_off: float,
                  end: int) -> list[tuple[int, int]]:
    """`replay` on a trace given as two arrays (back-dated samples, smoothed irregularity)."""
    above = np.flatnonzero(irr > threshold_on)
    below = np.flatnonzero(irr < threshold_off)
    out: list[tuple[int, int]] = []
    last_end: int | None = None
    i = 0
    while True:
        a = int(np.searchsorted(above, i))
        if a == len(above):
            break
        k = int(above[a])
        start = int(samples[k]) if last_end is None else max(int(samples[k]), last_end)
        b = int(np.searchsorted(below, k, side="right"))
        if b == len(below):
            out.append((start, max(end, start + 1)))
            break
        j = int(below[b])
        last_end = max(int(samples[j]), start + 1)
        out.append((start, last_end))
        i = j + 1
    return out
