"""`train_beats` training rows do not depend on the order the feature workers finished in."""

from __future__ import annotations

from typing import Any

import numpy as np

from vigil.evaluation.train_beats import _train_xy
from vigil.signal.beats import FEATURE_NAMES


def _record(seed: int, n: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURE_NAMES)))
    x[:, 0] = rng.uniform(0.5, 1.0, n)  # corr: some below the gate
    cls = np.where(rng.random(n) < 0.3, "V", "N")
    return {"X": x, "cls": cls}


def test_training_rows_are_the_same_whatever_order_the_records_arrive_in() -> None:
    """Workers finish in any order (imap_unordered); the fit subsamples rows, so the order must be fixed."""
    recs = {("101", 1): _record(1, 40), ("208", 2): _record(2, 60), ("106", 2): _record(3, 50)}
    forward = dict(recs)
    backward = dict(reversed(list(recs.items())))
    for gate in (None, 0.9):
        xa, ya = _train_xy(forward, ["101", "106", "208"], np.random.default_rng(0), gate)
        xb, yb = _train_xy(backward, ["101", "106", "208"], np.random.default_rng(0), gate)
        assert xa.shape == xb.shape and len(ya) > 10
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
