"""Beat-by-beat comparison in the manner of PhysioNet's ``bxb`` (ANSI/AAMI EC57:2012).

* Reference and test beats match when they are within the match window (150 ms, |Δt| ≤ window);
  each beat matches at most once, closest pairs first.
* On MIT-BIH the first 5 minutes are excluded from the statistics (EC57 §5.2.14, learning period).
* MIT-BIH beat symbols map to AAMI classes: N = N L R e j, S = A a J S, V = V E, F = F, Q = / f Q ?;
  the ventricular flutter wave ``!`` is scored as Q.  Non-beat annotations are ignored.
* Ventricular flutter/fibrillation episodes marked in the reference (``[`` to ``]``, both included; no
  ``]`` = to the end) are excluded as in ``bxb``: reference beats inside are not scored, and an
  unmatched test beat inside is not a false positive (``score(..., exclude=read_vf_episodes(...))``).
* QRS: Se = TP / (TP + FN), +P = TP / (TP + FP).
* VEB (EC57 §4.2.3.1): Se = Vv / (Vv + Vn + Vs + Vq + Vo); +P = Vv / (Vv + Nv + Sv + Ov) — fusion (Fv)
  and unclassifiable (Qv) reference beats detected as V are not counted against +P.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AAMI: dict[str, str] = {
    **{s: "N" for s in "NLRej"},
    **{s: "S" for s in "AaJS"},
    **{s: "V" for s in "VE"},
    "F": "F",
    **{s: "Q" for s in "/fQ?!"},
}
PACED_RECORDS = frozenset({"102", "104", "107", "217"})
MATCH_WINDOW_S = 0.150
SKIP_MITDB_S = 300.0


def aami_class(symbol: str) -> str | None:
    """AAMI class of a MIT-BIH beat symbol, or None for non-beat annotations."""
    return AAMI.get(symbol)


def match(ref: Sequence[int], test: Sequence[int], window: int) -> list[tuple[int, int]]:
    """Pairs (i_ref, i_test) matched within `window` samples, closest first, one-to-one."""
    r = np.asarray(ref, dtype=np.int64)
    t = np.asarray(test, dtype=np.int64)
    if len(r) == 0 or len(t) == 0:
        return []
    cands: list[tuple[int, int, int]] = []
    j0 = np.searchsorted(t, r - window, side="left")
    j1 = np.searchsorted(t, r + window, side="right")
    for i in range(len(r)):
        for j in range(int(j0[i]), int(j1[i])):
            cands.append((abs(int(t[j] - r[i])), i, j))
    cands.sort()
    used_r: set[int] = set()
    used_t: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _, i, j in cands:
        if i not in used_r and j not in used_t:
            used_r.add(i)
            used_t.add(j)
            pairs.append((i, j))
    pairs.sort()
    return pairs


@dataclass
class BeatScore:
    """Counts of one record (or a sum): QRS TP/FN/FP and the reference × test class matrix."""

    tp: int = 0
    fn: int = 0
    fp: int = 0
    matrix: Counter[tuple[str, str]] = field(default_factory=Counter)  # (ref class|"O", test class|"O")

    def __add__(self, other: BeatScore) -> BeatScore:
        """Sum two scores (gross statistics)."""
        return BeatScore(self.tp + other.tp, self.fn + other.fn, self.fp + other.fp,
                         self.matrix + other.matrix)

    @property
    def se(self) -> float:
        """QRS sensitivity."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def ppv(self) -> float:
        """QRS positive predictivity."""
        return _ratio(self.tp, self.tp + self.fp)

    def ectopic_counts(self, cls: str) -> tuple[int, int, int]:
        """(hits, reference `cls` beats called anything else or missed, false `cls` calls) per EC57.

        For V and S: a false call is one on a reference N, S/V (the other class) or no beat; F and Q
        reference beats called `cls` are not counted against it.
        """
        m = self.matrix
        missed = sum(m[cls, c] for c in ("N", "S", "V", "F", "Q", "O") if c != cls)
        false = sum(m[c, cls] for c in ("N", "S", "V", "O") if c != cls)
        return m[cls, cls], missed, false

    def veb_counts(self) -> tuple[int, int, int]:
        """(Vv, reference V not called V, test V that are false) per EC57."""
        return self.ectopic_counts("V")

    def sveb_counts(self) -> tuple[int, int, int]:
        """(Ss, reference S not called S, test S that are false) per EC57."""
        return self.ectopic_counts("S")

    @property
    def veb_se(self) -> float:
        """VEB sensitivity."""
        vv, missed, _ = self.veb_counts()
        return _ratio(vv, vv + missed)

    @property
    def veb_ppv(self) -> float:
        """VEB positive predictivity."""
        vv, _, false = self.veb_counts()
        return _ratio(vv, vv + false)


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def _inside(s: int, intervals: Sequence[tuple[int, int]]) -> bool:
    return any(a <= s <= b for a, b in intervals)


def score(ref: Iterable[tuple[int, str]], test: Iterable[tuple[int, str]], fs: float,
          start: int = 0, end: int | None = None, window_s: float = MATCH_WINDOW_S,
          exclude: Sequence[tuple[int, int]] = ()) -> BeatScore:
    """Score test beats (sample, AAMI class) against reference beats within [start, end).

    `exclude` holds reference VF episodes [on, off] (inclusive), skipped as ``bxb`` does.
    """
    ref_l = sorted((s, c) for s, c in ref if not _inside(s, exclude))
    test_l = sorted((s, c) for s, c in test)
    w = int(round(window_s * fs))
    pairs = match([s for s, _ in ref_l], [s for s, _ in test_l], w)
    hi = end if end is not None else 1 << 62
    sc = BeatScore()
    matched_r = {i for i, _ in pairs}
    matched_t = {j for _, j in pairs}
    for i, j in pairs:
        if start <= ref_l[i][0] < hi:
            sc.tp += 1
            sc.matrix[ref_l[i][1], test_l[j][1]] += 1
    for i, (s, c) in enumerate(ref_l):
        if i not in matched_r and start <= s < hi:
            sc.fn += 1
            sc.matrix[c, "O"] += 1
    for j, (s, c) in enumerate(test_l):
        if j not in matched_t and start <= s < hi and not _inside(s, exclude):
            sc.fp += 1
            sc.matrix["O", c] += 1
    return sc


def read_reference(path_without_ext: str, extension: str = "atr") -> tuple[list[tuple[int, str]], float]:
    """Reference beats (sample, AAMI class) of a WFDB annotation file and the record's fs."""
    import wfdb

    ann = wfdb.rdann(path_without_ext, extension)
    beats = [(int(s), c) for s, sym in zip(ann.sample, ann.symbol, strict=True)
             if (c := aami_class(sym)) is not None]
    return beats, float(ann.fs or 0.0)


def read_vf_episodes(path_without_ext: str, extension: str = "atr") -> list[tuple[int, int]]:
    """Reference ventricular flutter/fibrillation episodes ``[`` … ``]`` as inclusive sample spans."""
    import wfdb

    ann = wfdb.rdann(path_without_ext, extension)
    spans: list[tuple[int, int]] = []
    on: int | None = None
    for s, sym in zip(ann.sample, ann.symbol, strict=True):
        if sym == "[" and on is None:
            on = int(s)
        elif sym == "]" and on is not None:
            spans.append((on, int(s)))
            on = None
    if on is not None:
        spans.append((on, 1 << 62))
    return spans


def present_records(root: Path, db: str, wanted: str = "", among: Sequence[str] | None = None) -> list[str]:
    """Records of `db` under `root` that have a header: all, or those of `among`, or of the comma list `wanted`."""
    have = sorted(f.stem for f in (root / db).glob("*.hea"))
    if among is not None:
        have = [r for r in among if r in have]
    return [r for r in wanted.split(",") if r in have] if wanted else have
