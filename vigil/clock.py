"""Clocks: the real one for the daemon, a simulated one for replay and tests."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What the alarm engine and supervisor need to know about time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps."""
        ...

    def wall(self) -> float:
        """Unix seconds (may jump)."""
        ...


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()

    def wall(self) -> float:
        """time.time()."""
        return time.time()


class SimulatedClock:
    """A clock advanced by hand; replay runs faster than real time with it."""

    def __init__(self, start_mono: float = 0.0, start_wall: float = 1_700_000_000.0) -> None:
        self._mono = start_mono
        self._wall_offset = start_wall - start_mono

    def monotonic(self) -> float:
        """Current simulated monotonic time."""
        return self._mono

    def wall(self) -> float:
        """Simulated wall time (monotonic + offset; `jump_wall` shifts it)."""
        return self._mono + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        self._mono += seconds

    def set(self, mono: float) -> None:
        """Jump forward to an absolute monotonic time."""
        self.advance(max(0.0, mono - self._mono))

    def jump_wall(self, seconds: float) -> None:
        """Step the wall clock (as NTP does when the network returns)."""
        self._wall_offset += seconds
