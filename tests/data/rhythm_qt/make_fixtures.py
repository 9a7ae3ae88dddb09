"""Regenerate fixtures.npz (short slices of PhysioNet records for the rhythm/QT tests) from $VIGIL_DATA.

Run: ``.venv/bin/python tests/data/rhythm_qt/make_fixtures.py``.  See ATTRIBUTION.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import wfdb

from vigil.datasets import data_root
from vigil.evaluation.eval_qt import _beat_list, reference_beats

OUT = Path(__file__).with_name("fixtures.npz")
QT_RECORDS = ("sel16773", "sel872", "sel302")


def main() -> None:
    """Write fixtures.npz."""
    root = data_root()
    arrays: dict[str, np.ndarray] = {}
    # afdb 04043: beat times of the first 300 beats of sinus rhythm and of the first AF episode
    q = wfdb.rdann(str(root / "afdb" / "04043"), "qrs")
    s = np.asarray(q.sample)
    arrays["afdb_04043_sinus_beats"] = s[(s >= 68)][:300].astype(np.int64)
    arrays["afdb_04043_af_beats"] = s[(s >= 266498) & (s < 376328)][:300].astype(np.int64)
    # cudb cu01: 40 s of lead 0 around VF onset (sample 53546), µV
    r = wfdb.rdrecord(str(root / "cudb" / "cu01"), sampfrom=53546 - 5000, sampto=53546 + 5000)
    arrays["cu01_uV"] = np.round(np.nan_to_num(r.p_signal[:, 0]) * 1000).astype(np.int32)
    arrays["cu01_onset"] = np.array([5000])
    # qtdb: 70 s of both leads around the manually annotated beats
    for rec in QT_RECORDS:
        path = str(root / "qtdb" / rec)
        refs = reference_beats(path, "q1c")
        lo = max(0, refs[0].peak - 20 * 250)
        hi = lo + 70 * 250
        r = wfdb.rdrecord(path, sampfrom=lo, sampto=hi)
        beats = _beat_list(path)
        arrays[f"{rec}_uV"] = np.round(np.nan_to_num(r.p_signal) * 1000).astype(np.int32)
        arrays[f"{rec}_beats"] = (beats[(beats >= lo) & (beats < hi)] - lo).astype(np.int64)
        arrays[f"{rec}_ref"] = np.array([(b.peak - lo, b.qrs_on - lo, b.t_end - lo) for b in refs if b.t_end < hi],
                                        dtype=np.int64)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
