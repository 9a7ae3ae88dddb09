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


def _np_sum(v: list[float]) -> float:
    """``float(np.sum(v))`` for at most 8 floats: sequential from 0.0 below 8, NumPy's 8-way pairwise at 8."""
    if len(v) == 8:
        return 0.0 + (((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])))
    r = 0.0
    for a in v:
        r += a
    return r


def std(values: Iterable[float]) -> float:
    """``float(np.std(values))`` (population) for 1 to 8 floats, bit for bit (larger inputs use NumPy)."""
    v = [float(a) for a in values]
    n = len(v)
    if not 1 <= n <= 8:
        return float(np.std(v))
    mean = _np_sum(v) / n
    sq = [(a - mean) * (a - mean) for a in v]
    return math.sqrt(_np_sum(sq) / n)


def argmax(values: list[float]) -> int:
    """``int(np.argmax(values))`` for a short non-empty list: the first maximum, or the first NaN if any."""
    best = 0
    top = values[0]
    if top != top:
        return 0
    for i in range(1, len(values)):
        v = values[i]
        if v != v:
            return i
        if v > top:
            best, top = i, v
    return best
