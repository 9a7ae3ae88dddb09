"""A clock that runs faster than real time, for outage tests and backoff on a simulated hour."""

from __future__ import annotations

import asyncio
import time


class ScaledClock:
    """Monotonic and wall time advancing `scale` × real time; `sleep` waits the real equivalent."""

    def __init__(self, scale: float, start_wall: float | None = None) -> None:
        self.scale = float(scale)
        self._mono0 = time.monotonic()
        self._wall0 = time.time() if start_wall is None else start_wall

    def monotonic(self) -> float:
        """Scaled seconds since creation."""
        return (time.monotonic() - self._mono0) * self.scale

    def wall(self) -> float:
        """Start wall time plus scaled elapsed seconds."""
        return self._wall0 + self.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of scaled time."""
        await asyncio.sleep(max(0.0, seconds) / self.scale)
