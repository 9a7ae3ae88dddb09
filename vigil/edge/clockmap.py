"""Map device timestamps onto the daemon's monotonic clock, tracking offset and drift.

Arrival time = device time + offset + skew·t + queueing delay, where the delay is never negative.
So the lower envelope of (arrival − device) over time is the clock relation: we keep the minimum
of each bin of `bin_s` device-seconds and fit a least-squares line through the minima of the last
`window_s` (a convex-hull/min-filter estimator as in NTP-style one-way delay estimation; Paxson,
"On calibrating measurements of packet transit times", SIGMETRICS 1998).
"""

from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger(__name__)


class ClockMap:
    """Device seconds → daemon monotonic seconds, with drift (ppm) tracking and jump detection."""

    def __init__(self, bin_s: float = 5.0, window_s: float = 600.0, jump_s: float = 2.0) -> None:
        self.bin_s = bin_s
        self.window_s = window_s
        self.jump_s = jump_s
        self._bins: deque[tuple[float, float]] = deque()  # (device time of bin min, min offset)
        self._bin_start: float | None = None
        self._cur: tuple[float, float] | None = None
        self._fit: tuple[float, float, float] | None = None  # (d0, offset at d0, slope)
        self.resets = 0

    def reset(self) -> None:
        """Forget everything (device clock was set or restarted)."""
        self._bins.clear()
        self._bin_start = None
        self._cur = None
        self._fit = None

    def update(self, device_s: float, local_s: float) -> None:
        """Add one observation: the device stamped `device_s`, it arrived at monotonic `local_s`."""
        off = local_s - device_s
        if self._cur is not None or self._bins:
            predicted = self.to_local(device_s)
            if abs(local_s - predicted) > self.jump_s + (local_s - predicted > 0) * 10.0 \
                    or (self._cur and device_s < self._cur[0] - self.jump_s):
                log.info("device clock jumped by %.3f s; re-learning the mapping", local_s - predicted)
                self.resets += 1
                self.reset()
        if self._bin_start is None or device_s - self._bin_start >= self.bin_s:
            if self._cur is not None:
                self._bins.append(self._cur)
                while self._bins and device_s - self._bins[0][0] > self.window_s:
                    self._bins.popleft()
                self._fit = None
            self._bin_start = device_s
            self._cur = (device_s, off)
        elif off < self._cur[1]:  # type: ignore[index]
            self._cur = (device_s, off)
            self._fit = None

    def _points(self) -> list[tuple[float, float]]:
        pts = list(self._bins)
        if self._cur is not None:
            pts.append(self._cur)
        return pts

    def _solve(self) -> tuple[float, float, float]:
        if self._fit is None:
            pts = self._points()
            if not pts:
                raise ValueError("no observations yet")
            if len(pts) < 3:
                d0, o = min(pts, key=lambda p: p[1])
                self._fit = (d0, o, 0.0)
            else:
                n = len(pts)
                mx = sum(p[0] for p in pts) / n
                my = sum(p[1] for p in pts) / n
                sxx = sum((p[0] - mx) ** 2 for p in pts)
                slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx > 0 else 0.0
                # shift the line down onto the envelope: no observation may lie below it
                lift = min(p[1] - (my + slope * (p[0] - mx)) for p in pts)
                self._fit = (mx, my + lift, slope)
        return self._fit

    def to_local(self, device_s: float) -> float:
        """Daemon monotonic time of a device timestamp."""
        d0, o, slope = self._solve()
        return device_s + o + slope * (device_s - d0)

    @property
    def ready(self) -> bool:
        """True once at least one observation was made."""
        return bool(self._points())

    @property
    def drift_ppm(self) -> float:
        """Device clock rate error relative to the daemon clock, parts per million (+ = device slow)."""
        return self._solve()[2] * 1e6 if self.ready else 0.0
