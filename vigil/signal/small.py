"""Exact pure-Python replacements for NumPy reductions on the handful of values a beat carries.

``np.median`` of 8-12 numbers costs ~15 µs of call overhead; these give bit-identical results
(same IEEE operations, NaN propagated) in about 1 µs, which matters once per beat per channel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def median(values: Iterable[float]) -> float:
    """``float(np.median(values))`` for a non-empty sequence of floats/ints, bit for bit.

    Odd length: the middle value; even: ``(a + b) / 2`` of the two middle values (as
    ``np.mean`` computes it).  NaN if any value is NaN (NumPy's rule); ValueError when empty.
    """
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("median of an empty sequence")
    if any(v != v for v in s):
        return math.nan
    m = n // 2
    if n % 2:
        return float(s[m])
    return (float(s[m - 1]) + float(s[m])) / 2.0
