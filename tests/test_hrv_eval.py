"""HRV: the estimator's arithmetic against neurokit2, and eval_hrv's agreement with the reference beats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vigil.evaluation.eval_hrv import compare, hrv_from_beats
from vigil.model import Beat, Metric


def test_time_domain_matches_neurokit2_on_clean_nn() -> None:
    """All-N beats with irregular RR (no interval excluded): SDNN, RMSSD, pNN50 as neurokit2's hrv_time."""
    import warnings

    import neurokit2 as nk

    fs = 1000.0
    rng = np.random.default_rng(7)
    rr = 0.85 + 0.04 * np.sin(np.arange(400) * 2 * np.pi / 15) + rng.normal(0.0, 0.03, 400)  # < 20 % steps
    samples = np.concatenate(([1000], 1000 + np.cumsum(np.round(rr * fs)))).astype(int)
    end = int(samples[-1]) + 1
    ours = hrv_from_beats([Beat(int(s)) for s in samples], fs, end)
    last = max(s for (m, s) in ours if m == Metric.SDNN)
    window = samples[(samples > last - 300 * fs) & (samples <= last)]
    first = samples[np.searchsorted(samples, window[0]) - 1]  # the interval ending at window[0] is inside
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = nk.hrv_time(np.concatenate(([first], window)), sampling_rate=int(fs))
    assert ours[Metric.SDNN, last] == pytest.approx(float(ref["HRV_SDNN"].iloc[0]), abs=0.01)
    assert ours[Metric.RMSSD, last] == pytest.approx(float(ref["HRV_RMSSD"].iloc[0]), abs=0.01)
    assert ours[Metric.PNN50, last] == pytest.approx(float(ref["HRV_pNN50"].iloc[0]), abs=0.01)


def test_compare_pairs_only_common_emissions() -> None:
    ref = {(Metric.SDNN, 10): 50.0, (Metric.SDNN, 20): 40.0, (Metric.RMSSD, 10): 30.0}
    test = {(Metric.SDNN, 20): 44.0, (Metric.RMSSD, 10): 33.0, (Metric.RMSSD, 30): 1.0}
    pairs = compare(ref, test)
    assert pairs[Metric.SDNN] == [(40.0, 44.0)] and pairs[Metric.RMSSD] == [(30.0, 33.0)]
    assert pairs[Metric.LF] == []


def test_analyser_hrv_agrees_with_reference_beats_on_119(data_root: Path) -> None:
    """mitdb 119 (ventricular bigeminy in stretches): measured SDNN / RMSSD median error 0.2 / 0.7 %."""
    from vigil.evaluation.eval_hrv import _job

    _, _, _, pairs, ref_windows, test_windows = _job(("mitdb", "119", "vigil"))
    assert ref_windows >= 40 and abs(test_windows - ref_windows) <= 3
    for metric in (Metric.SDNN, Metric.RMSSD):
        p = np.asarray(pairs[metric])
        rel = np.abs(p[:, 1] - p[:, 0]) / p[:, 0]
        assert len(p) >= 40 and np.median(rel) < 0.03 and np.mean(rel <= 0.10) > 0.85
