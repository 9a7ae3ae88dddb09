"""Braille line plots with numpy: ECG sweeps, strips and trend lines for the dashboard.

A terminal cell holds a 2×4 grid of braille dots (U+2800..U+28FF), so a plot of ``w`` cells by ``h``
rows has ``2w`` dot columns and ``4h`` dot rows. Every function here is pure: arrays in, strings out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# bit of each dot: _BITS[row_in_cell, col_in_cell] (Unicode braille patterns)
_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.uint32)

FloatArray = npt.NDArray[np.float64]


def pack(grid: npt.NDArray[np.bool_]) -> list[str]:
    """Pack a boolean dot grid (4h × 2w, row 0 at the top) into h strings of w braille characters."""
    rows, cols = grid.shape
    h, w = rows // 4, cols // 2
    g = grid[: h * 4, : w * 2].reshape(h, 4, w, 2).astype(np.uint32)
    codes = (g * _BITS[None, :, None, :]).sum(axis=(1, 3)) + 0x2800
    return [codes[i].astype("<u4").tobytes().decode("utf-32-le") for i in range(h)]


def column_ranges(lo: FloatArray, hi: FloatArray, last: FloatArray, vmin: float, vmax: float,
                  rows: int, connect: npt.NDArray[np.bool_] | None = None) -> npt.NDArray[np.bool_]:
    """Dot grid (rows × len(lo)) drawing each column from lo to hi, joined to the previous column's last value.

    NaN columns stay blank; `connect[i]` False breaks the line before column i (sweep cursor, gaps).
    """
    n = len(lo)
    grid = np.zeros((rows, n), dtype=bool)
    if n == 0 or rows == 0:
        return grid
    span = vmax - vmin if vmax > vmin else 1.0
    prev_last = np.concatenate(([np.nan], last[:-1]))
    if connect is not None:
        prev_last = np.where(connect, prev_last, np.nan)
    top = np.fmax(hi, prev_last)  # fmax ignores NaN on one side
    bot = np.fmin(lo, prev_last)
    valid = np.isfinite(lo) & np.isfinite(hi)
    top = np.where(valid, top, np.nan)
    bot = np.where(valid, bot, np.nan)
    with np.errstate(invalid="ignore"):
        y_top = np.clip(np.round((vmax - top) / span * (rows - 1)), 0, rows - 1)
        y_bot = np.clip(np.round((vmax - bot) / span * (rows - 1)), 0, rows - 1)
    ys = np.arange(rows)[:, None]
    with np.errstate(invalid="ignore"):
        grid = (ys >= y_top[None, :]) & (ys <= y_bot[None, :])
    return grid & valid[None, :]


def _reduce_columns(x: FloatArray, spp: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-column min, max and last finite value of `x` cut into columns of `spp` samples (NaN-aware)."""
    cols = x.reshape(-1, spp)
    finite = np.isfinite(cols)
    lo = np.where(finite, cols, np.inf).min(axis=1)
    hi = np.where(finite, cols, -np.inf).max(axis=1)
    any_f = finite.any(axis=1)
    idx = spp - 1 - np.argmax(finite[:, ::-1], axis=1)
    last = cols[np.arange(len(cols)), idx]
    nan = np.full(len(cols), np.nan)
    return np.where(any_f, lo, nan), np.where(any_f, hi, nan), np.where(any_f, last, nan)


def robust_range(x: FloatArray, min_span: float) -> tuple[float, float]:
    """Vertical range for a trace: 0.5–99.5 percentiles around the median, at least `min_span` wide."""
    f = x[np.isfinite(x)]
    if len(f) == 0:
        return -min_span / 2, min_span / 2
    lo, med, hi = np.percentile(f, [0.5, 50, 99.5])
    half = max((hi - lo) / 2 * 1.1, min_span / 2)
    centre = (hi + lo) / 2 if hi - lo > 0 else med
    return float(centre - half), float(centre + half)


def sweep(samples: FloatArray, end_index: int, width: int, height: int, spp: int, *,
          gap_cols: int = 2, min_span: float = 800.0) -> list[str]:
    """Real-time sweep (like a bedside monitor): new data overwrites the oldest at a moving cursor.

    Parameters
    ----------
    samples : the most recent samples (NaN = no data), the last one has absolute index ``end_index - 1``
    end_index : absolute index one past the last sample (fixes where the cursor is on screen)
    width, height : plot size in terminal cells
    spp : samples per dot column (sweep speed)
    gap_cols : blank dot columns just ahead of the cursor
    min_span : smallest vertical range shown (µV), so flat noise is not blown up
    """
    ncols = width * 2
    rows = height * 4
    if ncols <= 0 or rows <= 0:
        return [""] * max(height, 0)
    visible = ncols - gap_cols
    last_col = (end_index - 1) // spp  # absolute column of the newest sample
    first_col = last_col - visible + 1
    start = first_col * spp
    need = (last_col + 1) * spp - start
    buf = np.full(need, np.nan)
    have = samples[-min(len(samples), end_index - start):] if end_index > start else samples[:0]
    take = min(len(have), end_index - start)
    if take > 0:
        buf[end_index - start - take: end_index - start] = have[len(have) - take:]
    lo, hi, last = _reduce_columns(buf, spp)
    abs_cols = np.arange(first_col, last_col + 1)
    pos = abs_cols % ncols
    vmin, vmax = robust_range(buf, min_span)
    scr_lo = np.full(ncols, np.nan)
    scr_hi = np.full(ncols, np.nan)
    scr_last = np.full(ncols, np.nan)
    scr_lo[pos], scr_hi[pos], scr_last[pos] = lo, hi, last
    connect = np.ones(ncols, dtype=bool)
    connect[(last_col + 1) % ncols] = False
    connect[0] = False
    # the wrap from the right edge to the left edge is continuous in time
    if np.isfinite(scr_last[-1]) and (last_col + 1) % ncols != 0:
        connect[0] = True
    grid = column_ranges(scr_lo, scr_hi, scr_last, vmin, vmax, rows, connect)
    if connect[0] and np.isfinite(scr_lo[0]):  # join across the wrap
        extra = column_ranges(np.array([scr_lo[0]]), np.array([scr_hi[0]]), np.array([scr_last[0]]),
                              vmin, vmax, rows)
        grid[:, 0] |= extra[:, 0]
    return pack(grid)


def strip(samples: FloatArray, width: int, height: int, *, min_span: float = 800.0) -> list[str]:
    """Scrolling strip: the samples squeezed into `width` cells, newest on the right."""
    ncols = width * 2
    rows = height * 4
    if ncols <= 0 or rows <= 0 or len(samples) == 0:
        return ["\u2800" * max(width, 0)] * max(height, 0)
    spp = max(1, int(np.ceil(len(samples) / ncols)))
    buf = np.full(ncols * spp, np.nan)
    buf[-len(samples):] = samples[-ncols * spp:]
    lo, hi, last = _reduce_columns(buf, spp)
    vmin, vmax = robust_range(buf, min_span)
    return pack(column_ranges(lo, hi, last, vmin, vmax, rows))


def trend(times: FloatArray, values: FloatArray, t0: float, t1: float, width: int, height: int,
          vmin: float, vmax: float, bands: tuple[float, ...] = ()) -> list[str]:
    """Trend plot of (time, value) points over [t0, t1] with dotted horizontal lines at `bands`."""
    ncols = width * 2
    rows = height * 4
    if ncols <= 0 or rows <= 0:
        return [""] * max(height, 0)
    grid = np.zeros((rows, ncols), dtype=bool)
    span = vmax - vmin if vmax > vmin else 1.0
    for b in bands:
        if vmin <= b <= vmax:
            y = int(round((vmax - b) / span * (rows - 1)))
            grid[y, ::3] = True
    ok = np.isfinite(values) & (times >= t0) & (times <= t1)
    if ok.any():
        tt, vv = times[ok], values[ok]
        col = np.clip(((tt - t0) / max(t1 - t0, 1e-9) * (ncols - 1)).round().astype(int), 0, ncols - 1)
        lo = np.full(ncols, np.nan)
        hi = np.full(ncols, np.nan)
        last = np.full(ncols, np.nan)
        np.fmin.at(lo, col, vv)
        np.fmax.at(hi, col, vv)
        last[col] = vv  # later points win (times are ascending)
        filled = np.isfinite(lo)
        connect = np.zeros(ncols, dtype=bool)
        idx = np.flatnonzero(filled)
        # carry the previous point across empty columns so the line stays joined
        if len(idx) > 1:
            prev = np.full(ncols, np.nan)
            prev[idx[1:]] = last[idx[:-1]]
            lo2 = np.where(np.isfinite(prev), np.fmin(lo, prev), lo)
            hi2 = np.where(np.isfinite(prev), np.fmax(hi, prev), hi)
        else:
            lo2, hi2 = lo, hi
        grid |= column_ranges(lo2, hi2, last, vmin, vmax, rows, connect)
    return pack(grid)
