"""Tile grid geometry: how many columns and rows of guest tiles fit a terminal area (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_TILE_W = 18
MIN_TILE_H = 3
GOOD_H = 8  # lines a tile can use: head, numbers, QTc/rhythm, 4 ECG rows, devices
GOOD_W = 36  # columns the numbers line needs
GAP = 1  # blank column between tiles


@dataclass(frozen=True, slots=True)
class Grid:
    """Columns × rows of tiles of tile_w × tile_h cells (the last column/row may be a little wider/taller)."""

    cols: int
    rows: int
    tile_w: int
    tile_h: int

    def cell(self, i: int) -> tuple[int, int]:
        """(column, row) of tile `i` (row-major)."""
        return i % self.cols, i // self.cols


def grid_for(n: int, width: int, height: int) -> Grid:
    """Best grid for `n` tiles in width × height: the most useful lines (≤ GOOD_H) × columns (≤ GOOD_W) per tile.

    Falls back to the densest grid (tiles smaller than the minimum, cut by the renderer) when nothing fits.
    """
    n = max(1, n)
    best: tuple[tuple[float, float], Grid] | None = None
    for cols in range(1, n + 1):
        rows = math.ceil(n / cols)
        tw = (width - GAP * (cols - 1)) // cols
        th = height // rows
        if tw < MIN_TILE_W or th < MIN_TILE_H:
            continue
        score = (min(th, GOOD_H) / GOOD_H * min(tw, GOOD_W) / GOOD_W,
                 -abs(math.log(tw / th / 4.0)))  # then the most screen-like shape
        if best is None or score > best[0]:
            best = (score, Grid(cols, rows, tw, th))
    if best is not None:
        return best[1]
    cols = max(1, min(n, (width + GAP) // (MIN_TILE_W + GAP)))
    rows = math.ceil(n / cols)
    return Grid(cols, rows, max(1, (width - GAP * (cols - 1)) // cols), max(1, height // rows))
