"""Exponential backoff with full jitter, and parsing of ``Retry-After``."""

from __future__ import annotations

import email.utils
import random


def full_jitter_delay(attempt: int, *, base_s: float = 1.0, cap_s: float = 300.0,
                      rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1-based): uniform in [0, min(cap, base·2^(attempt-1))].

    "Full jitter" of Brooker, *Exponential Backoff And Jitter*, AWS Architecture Blog (2015):
    spreads retries of many clients so a recovering receiver is not hit in lockstep.
    """
    if attempt < 1:
        return 0.0
    ceiling = min(cap_s, base_s * (2.0 ** min(attempt - 1, 62)))
    return (rng or random).uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date, RFC 9110 §10.2.3)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now_wall)


def next_delay(attempt: int, retry_after_s: float | None, *, base_s: float, cap_s: float,
               rng: random.Random | None = None) -> float:
    """Delay honouring the receiver's Retry-After as a floor (capped at 1 h), else full jitter."""
    jitter = full_jitter_delay(attempt, base_s=base_s, cap_s=cap_s, rng=rng)
    if retry_after_s is not None:
        return max(min(retry_after_s, 3600.0), jitter)
    return jitter
