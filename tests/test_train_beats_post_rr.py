"""The post-RR (next interval) measurement features of ``train_beats --next-rr``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vigil.evaluation.train_beats import MISSING_CORR, POST_RR_NAMES, main, post_rr_features

FS = 360.0
# 1 s rhythm, a premature beat at 3.6 s (coupling 0.6 s) followed by a full compensatory pause (1.4 s)
SAMPLES = np.array([0, 360, 720, 1080, 1296, 1800, 2160])
CORR = np.array([1.0, 0.99, 0.98, 0.97, 0.30, 0.96, 0.95])


def col(x: np.ndarray, name: str) -> np.ndarray:
    """One named column of `post_rr_features`."""
    return x[:, POST_RR_NAMES.index(name)]


def test_compensatory_pause_without_a_bound() -> None:
    x = post_rr_features(SAMPLES, CORR, FS)
    # beat before the premature one: next RR 0.6 s against a 1 s local mean
    assert col(x, "next_rr_ratio")[3] == pytest.approx(0.6)
    assert col(x, "next_corr")[3] == pytest.approx(0.30)
    # the premature beat: 0.6 s + 1.4 s = two local means (fully compensated), next RR 1.4 / 0.6 of previous
    assert col(x, "pause_index")[4] == pytest.approx(1.0)
    assert col(x, "next_rr_ratio")[4] == pytest.approx(1.4)
    assert col(x, "next_prev_ratio")[4] == pytest.approx(1.4 / 0.6)
    assert col(x, "next_missing")[4] == 0.0
    # the beat after the pause: local mean over the 4 intervals before its own (1, 1, 1, 0.6 s)
    assert col(x, "next_rr_ratio")[5] == pytest.approx(1.0 / 0.9)
    # the last beat has no next beat
    assert col(x, "next_missing")[6] == 1.0 and col(x, "next_corr")[6] == MISSING_CORR


def test_bounded_wait_censors_the_pause() -> None:
    x = post_rr_features(SAMPLES, CORR, FS, wait_s=1.2)
    # the 1.4 s pause is not over after 1.2 s: only "more than 1.2 s" is known, and not the next shape
    assert col(x, "next_missing")[4] == 1.0
    assert col(x, "next_rr_ratio")[4] == pytest.approx(1.2)
    assert col(x, "pause_index")[4] == pytest.approx((0.6 + 1.2) / 2.0)
    assert col(x, "next_corr")[4] == MISSING_CORR
    # intervals within the wait are unchanged
    full = post_rr_features(SAMPLES, CORR, FS, wait_s=math.inf)
    np.testing.assert_array_equal(x[:4], full[:4])
    assert x[5, 0] == full[5, 0]


def test_next_rr_is_a_measurement_only() -> None:
    with pytest.raises(SystemExit):
        main(["--write", "--gate", "0.90", "--next-rr", "1.0"])
