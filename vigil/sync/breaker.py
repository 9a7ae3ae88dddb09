"""A per-destination circuit breaker (closed → open → half-open → closed)."""

from __future__ import annotations

import enum
import logging

from vigil.clock import Clock

log = logging.getLogger(__name__)


class BreakerState(enum.StrEnum):
    """Breaker states (Nygard, *Release It!*, 2nd ed., ch. 5 "Circuit Breaker")."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; allows one trial call after `reset_s`."""

    def __init__(self, name: str, clock: Clock, *, failure_threshold: int = 5, reset_s: float = 30.0,
                 max_reset_s: float = 300.0) -> None:
        self.name = name
        self._clock = clock
        self.failure_threshold = failure_threshold
        self.base_reset_s = reset_s
        self.max_reset_s = max_reset_s
        self._reset_s = reset_s
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at: float | None = None
        self.trips = 0

    def allow(self) -> bool:
        """May a request be sent now? Moves open → half-open once the reset time has passed."""
        if self.state is BreakerState.OPEN:
            assert self.opened_at is not None
            if self._clock.monotonic() - self.opened_at >= self._reset_s:
                self.state = BreakerState.HALF_OPEN
                log.info("breaker %s half-open: sending a trial request", self.name)
                return True
            return False
        return True

    def seconds_until_trial(self) -> float:
        """Seconds until an open breaker lets a trial through (0 when not open)."""
        if self.state is not BreakerState.OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self._reset_s - self._clock.monotonic())

    def record_success(self) -> None:
        """A request succeeded: close and forget failures."""
        if self.state is not BreakerState.CLOSED:
            log.info("breaker %s closed", self.name)
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._reset_s = self.base_reset_s

    def record_failure(self) -> None:
        """A request failed transiently: count, and open at the threshold (or at once when half-open)."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._reset_s = min(self.max_reset_s, self._reset_s * 2)
            self._open()
        elif self.state is BreakerState.CLOSED and self.failures >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = self._clock.monotonic()
        self.trips += 1
        log.warning("breaker %s open after %d failures; trial in %.1f s", self.name, self.failures, self._reset_s)
