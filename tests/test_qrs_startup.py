"""The QRS detector's optional early end of the learning period (``QrsDetector(quick_start=True)``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vigil.evaluation.ec57 import read_reference, score
from vigil.evaluation.eval_startup import run_start
from vigil.signal.qrs import LEARN_S, QrsDetector


@pytest.fixture(scope="module")
def rec119() -> tuple[np.ndarray, float, list[tuple[int, str]]]:
    import wfdb

    from vigil.datasets import VENDORED_RECORDS

    path = str(Path(VENDORED_RECORDS) / "119")
    r = wfdb.rdrecord(path)
    ref, _ = read_reference(path)
    return np.nan_to_num(r.p_signal * 1000.0), float(r.fs), ref


def _detect(x: np.ndarray, fs: float, block: int, **kw: float) -> tuple[list[tuple[int, int, bool]], int]:
    det = QrsDetector(fs, x.shape[1], **kw)  # type: ignore[arg-type]
    out = []
    for i in range(0, len(x), block):
        out += [(d.sample, d.due, d.searchback) for d in det.process(x[i:i + block])]
    return out, det.learned_at


def test_quick_start_is_block_split_invariant_and_ends_early(rec119):
    """Checkpoints are sample indices: any block split (up to the ring size) ends learning at the same index."""
    x, fs, _ = rec119
    seg = x[int(60 * fs):int(80 * fs), :1]
    runs = [_detect(seg, fs, b, quick_start=True) for b in (13, 90, 500, 1000)]
    assert all(r == runs[0] for r in runs[1:])
    quick_end = runs[0][1]
    _, full_end = _detect(seg, fs, 90, quick_start=False)
    assert full_end == int(round(LEARN_S * fs))
    assert quick_end <= int(1.0 * fs), quick_end / fs
    assert runs[0][0][0][1] >= quick_end  # a beat is not due before learning ended


def test_quick_start_first_beats_within_one_second_on_119(rec119):
    """Fresh starts every 20 s, lead 1, 0.25 s feeds: every start-up beat leaves within 1 s (2 s learning: up to 2 s)."""
    x, fs, ref = rec119
    x = x[:, :1]
    ref_n = [(s, "N") for s, _ in ref]
    lat: dict[bool, list[float]] = {False: [], True: []}
    sc = {}
    for quick in (False, True):
        tp = fn = fp = 0
        for s0 in range(0, len(x) - int(12 * fs), int(20 * fs)):
            beats = run_start(x, fs, s0, quick)
            lat[quick] += [(e - s) / fs for s, e in beats if s < s0 + 2 * fs]
            s = score(ref_n, [(b, "N") for b, _ in beats], fs, start=s0, end=s0 + int(10 * fs))
            tp, fn, fp = tp + s.tp, fn + s.fn, fp + s.fp
        sc[quick] = (tp / (tp + fn), tp / (tp + fp))
    assert len(lat[True]) >= 60
    assert max(lat[True]) <= 1.0, max(lat[True])
    assert max(lat[False]) > 1.5  # the old behaviour this guards against
    assert sc[True][0] >= 0.985 and sc[True][1] >= 0.985, sc
