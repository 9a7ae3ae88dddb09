"""Heart rate with AAMI EC13-style averaging and instantaneous RR.

HR is the mean of the last 12 RR intervals (EC13 §4.1.2.1 allows averaging over ≥ 8 beats); when
the last 3 RR intervals are all longer than 1.2 s the mean of those 3 is used instead, so that
bradycardia is shown quickly (the rule Philips IntelliVue describes).  While no beat arrives, the
open interval since the last beat counts as an RR once it exceeds both 1.2 s and 1.5× the mean, so
the HR falls toward 0 in asystole instead of freezing; beyond 2× the mean RR the HR is 60/open interval.  HR is emitted once per second of stream.
Every beat counts whatever its label (N, S, V, F or Q), as EC13 counts every detected QRS.
"""

from __future__ import annotations

from collections import deque

from vigil.model import Beat, Measurement, Metric

N_AVG = 12
N_FAST = 3
FAST_RR_S = 1.2


class HrEstimator:
    """Streaming HR (1/s) and RR (per beat) measurements."""

    def __init__(self, fs: float, channel: str = "ecg") -> None:
        """Create an estimator for a stream at `fs` Hz."""
        self.fs = fs
        self.channel = channel
        self.period = max(1, int(round(fs)))
        self.reset(0)

    def reset(self, start: int) -> None:
        """Forget all beats (after a gap); seconds are counted from `start`."""
        self._rr: deque[float] = deque(maxlen=N_AVG)
        self._last: int | None = None
        self._next_tick = start + self.period

    def _bpm(self, at: int) -> float | None:
        rr = list(self._rr)
        if self._last is not None:
            open_s = (at - self._last) / self.fs
            mean = sum(rr) / len(rr) if rr else 0.0
            if open_s > FAST_RR_S and (not rr or open_s > 2.0 * mean):
                return 60.0 / open_s  # no beat for over twice the mean RR: show the fall at once
            if open_s > FAST_RR_S and open_s > 1.5 * mean:
                rr = (rr + [open_s])[-N_AVG:]
        if not rr:
            return None
        if len(rr) >= N_FAST and all(r > FAST_RR_S for r in rr[-N_FAST:]):
            rr = rr[-N_FAST:]
        return 60.0 / (sum(rr) / len(rr))

    def update(self, beats: list[Beat], upto: int) -> list[Measurement]:
        """Consume final beats (all beats before `upto` known); return RR and HR measurements in order."""
        out: list[Measurement] = []
        for b in beats:
            while self._next_tick <= b.sample:
                self._tick(out)
            # every detected beat counts, Q (unclassifiable: e.g. a beat in noise) included: skipping one
            # would make the next RR span two intervals and halve the HR
            if self._last is not None:
                rr_s = (b.sample - self._last) / self.fs
                self._rr.append(rr_s)
                out.append(Measurement(Metric.RR, round(rr_s * 1000.0, 1), b.sample, self.channel))
            self._last = b.sample
        while self._next_tick <= upto:
            self._tick(out)
        return out

    def _tick(self, out: list[Measurement]) -> None:
        bpm = self._bpm(self._next_tick)
        if bpm is not None:
            out.append(Measurement(Metric.HR, round(bpm, 1), self._next_tick, self.channel,
                                   {"n_rr": min(len(self._rr), N_AVG)}))
        self._next_tick += self.period
