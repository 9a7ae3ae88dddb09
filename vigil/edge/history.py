"""Per-guest session history for dashboards that start late: per-minute vital trends and recent alarm events.

The daemon keeps, for each guest, the median of each trend metric per wall-clock minute (up to
`keep_minutes`) and the last `keep_events` alarm events, and publishes them retained on
``vigil/<room>/guest/<mat>/history``; a dashboard opened mid-session seeds its trends and alarm history
from it. Pure bookkeeping: no I/O, no clock of its own (callers pass wall times).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

TREND_METRICS = ("hr", "spo2", "sbp", "qtc")
STEP_S = 60.0


class GuestHistory:
    """Per-minute medians of the trend metrics and the latest alarm events of one guest."""

    def __init__(self, keep_minutes: int = 12 * 60, keep_events: int = 50) -> None:
        self._minute: float | None = None  # start (wall) of the minute being collected
        self._values: dict[str, list[float]] = {m: [] for m in TREND_METRICS}
        self.trends: dict[str, deque[tuple[float, float]]] = {m: deque(maxlen=keep_minutes) for m in TREND_METRICS}
        self.events: deque[dict[str, Any]] = deque(maxlen=keep_events)

    def add_vitals(self, wall: float, vitals: dict[str, Any]) -> bool:
        """Take one vitals sample ({metric: {"value", "age_s"}}); True when a minute was closed by it.

        Only readings younger than one step count, so a cuff reading taken every few minutes lands in
        the minute it was measured and is not repeated into the following ones.
        """
        minute = math.floor(wall / STEP_S) * STEP_S
        closed = False
        if self._minute is not None and minute != self._minute:  # a new minute (or the clock stepped)
            self._close()
            closed = True
        self._minute = minute
        for m in TREND_METRICS:
            v = vitals.get(m)
            if not isinstance(v, dict):
                continue
            value, age = v.get("value"), v.get("age_s") or 0.0
            if isinstance(value, int | float) and math.isfinite(value) and age < STEP_S:
                self._values[m].append(float(value))
        return closed

    def _close(self) -> None:
        assert self._minute is not None
        t = self._minute + STEP_S / 2
        for m, vals in self._values.items():
            if vals:
                tr = self.trends[m]
                if tr and t <= tr[-1][0]:  # the wall clock stepped back: keep the series increasing
                    tr.clear()
                tr.append((t, statistics.median(vals)))
                vals.clear()

    def add_event(self, event: dict[str, Any]) -> None:
        """Keep one alarm event payload (as published on alarms/events)."""
        self.events.append(event)

    def payload(self, mat: str, wall: float) -> dict[str, Any]:
        """The retained `guest/<mat>/history` message."""
        return {"mat": mat, "t": wall, "step_s": STEP_S,
                "trends": {m: [[round(t, 1), round(v, 2)] for t, v in tr] for m, tr in self.trends.items()},
                "events": list(self.events)}
