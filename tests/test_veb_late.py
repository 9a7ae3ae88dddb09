"""Late (ST-T) beat features of the VEB study (vigil.evaluation.veb_late) on synthetic beats."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.evaluation.veb_late import LATE_NAMES, late_features
from vigil.signal.beats import FEATURE_NAMES


def _beat(n: int, fs: float, t_sign: float) -> np.ndarray:
    t = np.arange(n) / fs
    qrs = 1000.0 * np.exp(-0.5 * ((t - 0.5) / 0.012) ** 2)
    tw = t_sign * 300.0 * np.exp(-0.5 * ((t - 0.8) / 0.05) ** 2)
    return qrs + tw


def test_discordant_t_wave_is_flagged_and_dominant_beats_are_not():
    fs = 360.0
    n = int(fs)
    normal, ectopic = _beat(n, fs, 1.0), _beat(n, fs, -1.0)
    sig = np.concatenate([normal] * 10 + [ectopic] + [normal] * 3)[:, None].repeat(2, axis=1)
    r_bp = np.arange(14) * n + int(0.5 * fs)
    x = np.zeros((14, len(FEATURE_NAMES)))
    x[:, FEATURE_NAMES.index("corr")] = 0.99
    x[:, FEATURE_NAMES.index("tpl_is_dominant")] = 1.0
    x[10, FEATURE_NAMES.index("tpl_is_dominant")] = 0.0
    out = late_features(sig, r_bp, x, fs)
    f = {name: out[:, k] for k, name in enumerate(LATE_NAMES)}
    assert f["late_corr"][9] == pytest.approx(1.0, abs=1e-6) and f["tq0"][9] == pytest.approx(0.0, abs=1e-6)
    assert f["late_corr"][10] < -0.9  # inverted T wave against the dominant ST-T
    assert f["tq0"][10] == pytest.approx(-0.6, abs=0.02) and f["tq1"][10] == pytest.approx(-0.6, abs=0.02)
    assert f["late_area"][10] < 0 and f["late_amp_ratio"][10] == pytest.approx(1.0, abs=0.02)
    # the ectopic beat did not update the dominant ST-T template: the next normal beat matches it
    assert f["late_corr"][11] == pytest.approx(1.0, abs=1e-6)
