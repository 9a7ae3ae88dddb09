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
THRESHOLD_OFF = 0.02  # ... and that closes it (hysteresis)
_Q_LO = int(QUANTILE * (WINDOW - 1))  # the lower quartile by linear interpolation between ranks
_Q_FRAC = QUANTILE * (WINDOW - 1) - _Q_LO
DELAY_BEATS = 12  # typical detection lag in beats; episode boundaries are back-dated by this much


@dataclass(frozen=True, slots=True)
class AfDecision:
    """A change of the AF state: `active` from the beat at `sample` (back-dated onset/offset)."""

    active: bool
    sample: int


class AfDetector:
    """Beat-by-beat AF detector on RR intervals (Petrėnas 2015 style, with lag-2/3 bigeminy/trigeminy suppression)."""

    def __init__(self, fs: float) -> None:
        """Create a detector for a stream sampled at `fs` Hz."""
        self.fs = fs
        self._rr: deque[float] = deque(maxlen=WINDOW + LAGS)
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
        if len(self._rr) < WINDOW + LAGS:
            return None
        rr = np.fromiter(self._rr, dtype=float)
        win = rr[-WINDOW:]
        lagged = np.lib.stride_tricks.sliding_window_view(rr[:-1], WINDOW)[::-1]  # row k-1: lag k
        d = np.sort(np.abs(win - lagged[:LAGS]), axis=1)
        irr = float(np.min(d[:, _Q_LO] + _Q_FRAC * (d[:, _Q_LO + 1] - d[:, _Q_LO])))  # = np.quantile (linear)
        irr /= float(win.sum()) / WINDOW
        self._n += 1
        if self._n == 1 and not self.active:
            self.irregularity = irr
        else:
            self.irregularity += ALPHA * (irr - self.irregularity)
        if not self.active and self.irregularity > THRESHOLD_ON and self._n >= 4:
            self.active = True
            return AfDecision(True, self._beat_samples[0])
        if self.active and self.irregularity < THRESHOLD_OFF:
            self.active = False
            return AfDecision(False, self._beat_samples[0])
        return None
