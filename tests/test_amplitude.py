"""The analyser across EC13's QRS amplitude range (0.5-5 mV) and with an inverted lead (vendored 203)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vigil.evaluation.ec57 import read_reference
from vigil.evaluation.eval_amplitude import (
    Run,
    agreement,
    analyse,
    baseline,
    qrs_amplitude_uv,
    scale_for,
    scaled,
)


def _load(vendored: Path, rec: str, minutes: float) -> tuple[np.ndarray, float, list[int]]:
    import wfdb

    fs = 360.0
    n = int(minutes * 60 * fs)
    r = wfdb.rdrecord(str(vendored / rec), sampto=n)
    ref, _ = read_reference(str(vendored / rec))
    return np.nan_to_num(r.p_signal * 1000.0), fs, [s for s, _ in ref if s < n]


@pytest.fixture(scope="module")
def rec203() -> tuple[np.ndarray, float, list[int]]:
    from vigil.datasets import VENDORED_RECORDS

    return _load(VENDORED_RECORDS, "203", 6.0)


@pytest.fixture(scope="module")
def as_recorded(rec203: tuple[np.ndarray, float, list[int]]) -> Run:
    x, fs, _ = rec203
    return analyse(x, fs)


def test_qrs_amplitude_and_scale_factors(rec203):
    x, fs, r_peaks = rec203
    amp = qrs_amplitude_uv(x[:, 0], fs, r_peaks)
    assert 1000.0 < amp < 2500.0  # 203's MLII QRS: ~1.3-1.7 mV
    assert qrs_amplitude_uv(3.0 * x[:, 0], fs, r_peaks) == pytest.approx(3.0 * amp)
    assert scale_for("as recorded", amp) == 1.0 and scale_for("inverted", amp) == -1.0
    assert scale_for("QRS 5 mV", amp) * amp == pytest.approx(5000.0)
    base = baseline(x, fs)
    tall = scaled(x, base, 3.0)
    np.testing.assert_allclose(tall - base, 3.0 * (x - base))  # the ECG scaled, its baseline as recorded
    np.testing.assert_array_equal(scaled(x, base, -1.0), -x)  # inverted: the whole lead


def test_a_5_mv_qrs_is_not_noise(rec203, as_recorded):
    """A clean record made taller is no noisier: the baseline-move rule scales with the QRS.

    The ECG is scaled around its baseline, which stays as recorded (a taller QRS, the same electrode
    wander).  Measured on these 6 minutes (as recorded: 1 noise second, 97-98 V): with a fixed 2 mV
    limit 203 scaled to 5 mV had 14 noise seconds, 91 % rhythm agreement, 64 beats turned
    unclassifiable (Q) after the noise and 82 V; with the limit at half the QRS amplitude 3, 96 %,
    15 and 97.
    """
    x, fs, r_peaks = rec203
    k = scale_for("QRS 5 mV", qrs_amplitude_uv(x[:, 0], fs, r_peaks))
    tall = analyse(scaled(x, baseline(x, fs), k), fs)
    assert tall.noise_s <= as_recorded.noise_s + 6, (tall.noise_s, as_recorded.noise_s)
    same, total = agreement(as_recorded, tall)
    assert same / total >= 0.93, (same, total)
    labels_tall = Counter(lab for _, lab in tall.beats)
    labels_rec = Counter(lab for _, lab in as_recorded.beats)
    assert labels_tall["Q"] - labels_rec["Q"] <= 35, (labels_tall, labels_rec)
    assert abs(labels_tall["V"] - labels_rec["V"]) <= 0.08 * labels_rec["V"], (labels_tall, labels_rec)


def test_a_0_5_mv_qrs_is_analysed_like_the_record(rec203, as_recorded):
    """EC13's smallest QRS with the baseline wander as recorded: the same beats; 203's AF/ectopy episodes
    shift at their edges (couplets, short TACHY spells: 95 % of labelled seconds alike when measured)."""
    x, fs, r_peaks = rec203
    k = scale_for("QRS 0.5 mV", qrs_amplitude_uv(x[:, 0], fs, r_peaks))
    small = analyse(scaled(x, baseline(x, fs), k), fs)
    assert len(small.beats) == pytest.approx(len(as_recorded.beats), abs=3)
    v_small = sum(1 for _, lab in small.beats if lab == "V")
    v_rec = sum(1 for _, lab in as_recorded.beats if lab == "V")
    assert abs(v_small - v_rec) <= 0.06 * v_rec, (v_small, v_rec)
    assert small.noise_s <= as_recorded.noise_s + 2
    same, total = agreement(as_recorded, small)
    assert same / total >= 0.90, (same, total)


def test_an_inverted_lead_gives_the_same_beats_and_labels(rec203):
    """Every beat feature is relative to the patient's own template and blind to the lead's sign.

    The polarity change used to keep its sign, so an inverted lead (electrodes swapped, a strap worn
    the other way round) changed the models' input on every beat: 203 lost V beats.
    """
    from vigil.model import Beat
    from vigil.signal.analyzer import EcgAnalyzer

    x, fs, _ = rec203

    def beats(sign: float) -> list[tuple[int, str, str | None]]:
        an = EcgAnalyzer(fs, n_leads=2, rhythm=False, qt=False)
        out = []
        for i in range(0, len(x), 90):
            out += an.feed(sign * x[i:i + 90], i)
        out += an.flush()
        return [(o.sample, o.label, o.strict_label) for o in out if isinstance(o, Beat)]

    upright, inverted = beats(1.0), beats(-1.0)
    assert sum(1 for _, lab, _ in upright if lab == "V") > 50
    assert inverted == upright
