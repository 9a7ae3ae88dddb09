"""Two levels of V evidence: the reported beat label vs the strict label that VT runs and the VT alarm count."""

from __future__ import annotations

import numpy as np
import pytest
from test_alarm_vt import FS as PULSE_FS
from test_alarm_vt import _engine, pulse_train, regular
from test_rhythm import FS, labels, stream

from vigil.evaluation.ec57 import match, read_reference
from vigil.model import Beat, BeatLabel
from vigil.signal.analyzer import EcgAnalyzer
from vigil.signal.beats import (
    FEATURE_NAMES,
    LABEL_MODEL_PATH,
    BeatFeatures,
    TreeEnsemble,
    decide,
    decide_strict,
    load_model,
)


def _ensemble(bias: float, gate: float | None) -> TreeEnsemble:
    doc = {"features": list(FEATURE_NAMES), "bias": bias, "learning_rate": 0.1, "threshold": 0.0, "trees": []}
    if gate is not None:
        doc["gate_corr"] = gate
    return TreeEnsemble(doc)


def _run_beats(seq: str, strict: BeatLabel | None) -> list[Beat]:
    """Beats of `seq` (N every 0.85 s, V 0.45 s after the previous beat); V beats carry `strict` as strict label."""
    beats, t = [], 50
    for lab in seq:
        t += int((0.45 if lab == "V" else 0.85) * FS)
        beats.append(Beat(t, lab, strict_label=strict if lab == "V" else None))  # type: ignore[arg-type]
    return beats


def test_beat_rhythm_label_defaults_to_the_label() -> None:
    assert Beat(10, "V").rhythm_label == "V"
    assert Beat(10, "V", strict_label="N").rhythm_label == "N"
    assert Beat(10, "V") == Beat(10, "V")  # no strict label set: beats compare as before


def test_only_strict_v_beats_make_vt_while_patterns_follow_the_label() -> None:
    seq = "NNNN" + "NVNVNVNVNV" + "NNNN" + "NVVN" + "NNNN" + "VVVVVVV" + "NNNNNN"
    loose = _run_beats(seq, "N")  # labelled V by the label model only
    eps, _ = stream(loose, loose[-1].sample + 200)
    assert "VT" not in labels(eps) and {"COUPLET", "BIGEMINY"} <= labels(eps)
    strict = _run_beats(seq, None)  # the same beats as strict V
    eps, _ = stream(strict, strict[-1].sample + 200)
    assert {"VT", "COUPLET", "BIGEMINY"} <= labels(eps)
    # strict V evidence under other labels (N, or Q after noise) makes VT but no couplet or bigeminy
    hidden = [Beat(b.sample, "Q", strict_label="V") if b.label == "V" else b for b in strict]
    eps, _ = stream(hidden, hidden[-1].sample + 200)
    assert "VT" in labels(eps) and not labels(eps) & {"COUPLET", "BIGEMINY"}


def test_vt_alarm_stage_counts_strict_v_only() -> None:
    """A short V run with a changed pulse raises VT only when its beats are strict V (the engine's VT stage)."""
    fast_pulse = regular(30.0) + list(np.arange(30.5, 31.8, 0.4)) + regular(40.0, start=32.3)
    for strict, raised_expected in ((None, True), ("N", False)):
        eng, clock, (events, _) = _engine()
        beats = [(t, Beat(int(t * 250), "N")) for t in regular(30.0, start=0.5)]
        beats += [(30.1 + 0.4 * k, Beat(int((30.1 + 0.4 * k) * 250), "V", strict_label=strict)) for k in range(3)]
        beats += [(31.5 + 0.8 * k, Beat(int((31.5 + 0.8 * k) * 250), "N")) for k in range(5)]
        _feed_beats(eng, clock, pulse_train(fast_pulse), 36.0, beats)
        raised = [e for e in events if e.condition == "vt" and e.event == "raised"]
        assert bool(raised) == raised_expected


def _feed_beats(eng, clock, pulse: np.ndarray, until: float, beats: list[tuple[float, Beat]]) -> None:  # type: ignore[no-untyped-def]
    """test_alarm_vt's `_feed_history` with whole Beat objects: pulse in 0.25-s blocks, beats reported 0.3 s late."""
    blk = int(0.25 * PULSE_FS)
    todo = sorted(beats, key=lambda tb: tb[0])
    for i in range(0, int(until * PULSE_FS), blk):
        t = (i + blk) / PULSE_FS
        clock.set(t)
        eng.on_pulse_wave("m1", "pleth", pulse[i:i + blk], PULSE_FS, t)
        while todo and todo[0][0] <= t - 0.3:
            eng.on_analysis("m1", todo.pop(0)[1], t)
        eng.tick()



def test_label_model_decides_the_label_and_the_veto_model_the_strict_label() -> None:
    vals = dict.fromkeys(FEATURE_NAMES, 1.0)
    vals.update(corr=0.85, width_ratio=1.0, amp_ratio=1.0, prematurity=1.0, rr_cv=0.2)
    similar = BeatFeatures(**vals)  # the rule does not fire (corr 0.85, not wide/tall/premature)
    vals.update(corr=0.3)
    unlike = BeatFeatures(**vals)  # the rule fires
    veto_yes, veto_no = _ensemble(5.0, None), _ensemble(-5.0, None)
    gated_yes, gated_no = _ensemble(5.0, 0.9), _ensemble(-5.0, 0.9)
    assert decide_strict(similar, veto_yes) == "N" and decide(similar, veto_yes, gated_yes) == "V"
    assert decide(similar, veto_yes, gated_no) == "N" and decide(similar, veto_yes, None) == "N"
    assert decide(similar, veto_yes, _ensemble(5.0, 0.8)) == "N"  # corr 0.85 is not under that gate
    assert decide_strict(unlike, veto_no) == "N" and decide(unlike, veto_no, gated_yes) == "V"
    assert decide_strict(unlike, veto_yes) == "V" and decide(unlike, veto_yes, gated_no) == "N"


@pytest.fixture(scope="module")
def rec203() -> tuple[np.ndarray, float, list[tuple[int, str]]]:
    import wfdb

    from vigil.datasets import VENDORED_RECORDS

    r = wfdb.rdrecord(str(VENDORED_RECORDS / "203"))
    ref, _ = read_reference(str(VENDORED_RECORDS / "203"), "atr")
    return np.nan_to_num(r.p_signal * 1000.0), float(r.fs), ref


def _stream_beats(x: np.ndarray, fs: float, label_model: TreeEnsemble | None) -> list[Beat]:
    an = EcgAnalyzer(fs, n_leads=2, rhythm=False, qt=False)
    an.classifier.label_model = label_model
    out = []
    for i in range(0, len(x), 250):
        out += an.feed(x[i:i + 250], i)
    return [o for o in out if isinstance(o, Beat)]


def test_packaged_label_model_on_203(rec203) -> None:
    """On mitdb 203 (multiform V, AF) the label model errs less than the strict label, which stays what the veto alone gives.

    203 is one of the training records, so this checks the wiring, not generalisation (train_beats --cv does that).
    """
    x, fs, ref = rec203
    x = x[: int(600 * fs)]
    label_model = load_model(LABEL_MODEL_PATH)
    assert label_model is not None and label_model.gate_corr is not None
    both = _stream_beats(x, fs, label_model)
    veto_only = _stream_beats(x, fs, None)
    assert [(b.sample, b.rhythm_label) for b in veto_only] == [(b.sample, b.rhythm_label) for b in both]
    # without a label model the reported label is the strict one, except Q for beats just after noise
    assert all(b.strict_label is None for b in veto_only if b.label != "Q")
    ref_v = [s for s, c in ref if c == "V" and s < len(x)]
    tol = int(0.15 * fs)

    def errors(label_of) -> int:  # type: ignore[no-untyped-def]
        called = [b.sample for b in both if label_of(b) == "V"]
        hits = len(match(ref_v, called, tol))
        return (len(ref_v) - hits) + (len(called) - hits)  # missed + false V

    differ = [b for b in both if (b.label == "V") != (b.rhythm_label == "V")]
    assert len(differ) >= 10  # the two decisions do differ on this record (39 beats in these 10 min)
    assert errors(lambda b: b.label) < errors(lambda b: b.rhythm_label)


def test_eval_ectopy_reference_couplets_and_label_variants() -> None:
    """Reference couplets are runs of exactly two V (rhythm notes skipped); reported-label V beats make couplets only there."""
    from vigil.evaluation.eval_ectopy import _episodes, couplets

    ann = [(10, "N"), (20, "V"), (25, "+"), (30, "V"), (40, "N"), (50, "V"), (60, "V"), (70, "V"), (80, "N"),
           (90, "V"), (100, "V")]
    assert couplets(ann) == [(20, 31), (90, 101)]
    seq = "NNNN" + "NVVN" + "NNNN"
    loose = _run_beats(seq, "N")
    n = loose[-1].sample + 500
    assert [a for a, _ in _episodes(loose, FS, n)["COUPLET"]] == [loose[5].sample]
    assert _episodes(loose, FS, n)["VT"] == []
