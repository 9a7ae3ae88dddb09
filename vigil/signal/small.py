"""Exact pure-Python replacements for NumPy reductions on the handful of values a beat carries.

``np.median`` of 8-12 numbers costs ~15 µs of call overhead; these give bit-identical results
(same IEEE operations, NaN propagated) in about 1 µs, which matters once per beat per channel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def median(values: Iterable[float]) -> float:
    """``float(np.median(values))`` for a non-empty sequence of floats/ints, bit for bit.

    Odd length: the middle value; even: ``(a + b) / 2`` of the two middle values, summed from
    0.0 as ``np.mean`` does.  NaN if any value is NaN (NumPy's rule); ValueError when empty.
    """
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("median of an empty sequence")
    if any(v != v for v in s):
        return math.nan
    m = n // 2
    if n % 2:
        return 0.0 + s[m]  # NumPy's mean adds to 0.0 (so -0.0 becomes 0.0)
    return (0.0 + s[m - 1] + s[m]) / 2.0


def median_array(a: np.ndarray) -> float:
    """``float(np.median(a))`` for a non-empty 1-D float array, bit for bit, without its overhead.

    The same partition and middle-value arithmetic as NumPy's ``_median`` (NaN if any value is NaN).
    """
    n = a.shape[0]
    if n == 0:
        return math.nan
    m = n // 2
    if n % 2:
        p = np.partition(a, (m, n - 1))
        v = 0.0 + float(p[m])
    else:
        p = np.partition(a, (m - 1, m, n - 1))
        v = (0.0 + float(p[m - 1]) + float(p[m])) / 2.0
    return math.nan if p[n - 1] != p[n - 1] else v
