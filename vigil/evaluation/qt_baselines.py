"""QT baselines beside ours on the QT Database: neurokit2's ``ecg_process`` delineation, beat by beat.

Issue 3 asks every `make eval` table to show neurokit2's default detector and wfdb's XQRS beside ours.
For QT that means a delineator: neurokit2's ``ecg_process`` runs ``ecg_clean`` + ``ecg_peaks`` (method
"neurokit") and ``ecg_delineate`` (its default, the discrete-wavelet method after Martínez et al., IEEE
TBME 51 (2004) 570), which gives every R peak a QRS onset (``ECG_R_Onsets``) and a T end
(``ECG_T_Offsets``). wfdb's XQRS only detects QRS complexes, so it has no QT row.

neurokit2 gets each lead as recorded (its own cleaning), over the annotated stretch of the record ±10 s
(the .q1c beats lie within about a minute; running it over 15 minutes changes nothing but the time).
An annotated beat is matched to neurokit2's R peak nearest to the cardiologist's QRS peak within
`MATCH_S`; a beat without a match, or whose onset or T end neurokit2 left NaN, counts as failed on that
lead. Errors are neurokit2 − cardiologist (ms), the same sign as ours.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MATCH_S = 0.15  # an annotated QRS peak and a detected R peak are the same beat within this
MARGIN_S = 10.0  # signal given to neurokit2 before the first and after the last annotated beat


@dataclass(frozen=True, slots=True)
class LeadMarks:
    """One lead's QRS onset and T end (samples) for one annotated beat, or None where it failed."""

    qrs_on: float
    t_end: float


def match_marks(peaks: np.ndarray, onsets: np.ndarray, t_ends: np.ndarray, ref_peaks: Sequence[int],
                fs: float) -> list[LeadMarks | None]:
    """For each reference QRS peak, the onset and T end of the nearest detected peak within `MATCH_S`."""
    out: list[LeadMarks | None] = []
    tol = MATCH_S * fs
    for p in ref_peaks:
        if peaks.size == 0:
            out.append(None)
            continue
        i = int(np.argmin(np.abs(peaks - p)))
        on, te = float(onsets[i]), float(t_ends[i])
        ok = abs(float(peaks[i]) - p) <= tol and math.isfinite(on) and math.isfinite(te) and te > on
        out.append(LeadMarks(on, te) if ok else None)
    return out


def neurokit_marks(x: np.ndarray, fs: float, ref_peaks: Sequence[int]) -> list[LeadMarks | None]:
    """neurokit2 ``ecg_process`` on `x` (one lead, whole record) around `ref_peaks`, matched to them."""
    import neurokit2 as nk

    if not ref_peaks:
        return []
    a = max(0, min(ref_peaks) - int(MARGIN_S * fs))
    b = min(len(x), max(ref_peaks) + int(MARGIN_S * fs))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, info = nk.ecg_process(np.nan_to_num(x[a:b]), sampling_rate=int(round(fs)))
    except Exception:  # noqa: BLE001 - a baseline that fails on a lead counts as failed there
        return [None] * len(ref_peaks)

    def arr(key: str) -> np.ndarray:
        return np.asarray(info.get(key, []), dtype=float) + a

    peaks, onsets, t_ends = arr("ECG_R_Peaks"), arr("ECG_R_Onsets"), arr("ECG_T_Offsets")
    n = min(len(peaks), len(onsets), len(t_ends))
    return match_marks(peaks[:n], onsets[:n], t_ends[:n], ref_peaks, fs)


@dataclass(frozen=True, slots=True)
class Summary:
    """Errors (ms) over the beats one method marked, and how many it failed."""

    on: list[float]
    te: list[float]
    qt: list[float]
    failed: int


def summarise(marks: Sequence[Sequence[LeadMarks | None]], refs: Sequence[tuple[int, int]], fs: float,
              leads: Sequence[int], best: bool = False) -> Summary:
    """Onset, T-end and QT errors against `refs` ((qrs_on, t_end) per beat) for one lead, the mean of
    several (as our "multi"), or per beat the lead with the smallest QT error (`best`, after the fact)."""
    on: list[float] = []
    te: list[float] = []
    qt: list[float] = []
    failed = 0
    ms = 1000.0 / fs
    for per, (r_on, r_te) in zip(marks, refs, strict=True):
        got = [per[k] for k in leads if k < len(per) and per[k] is not None]
        if not got:
            failed += 1
            continue
        if best:
            m = min(got, key=lambda g: abs((g.t_end - g.qrs_on) - (r_te - r_on)))  # type: ignore[union-attr]
            o, t = m.qrs_on, m.t_end  # type: ignore[union-attr]
        else:
            o = float(np.mean([g.qrs_on for g in got]))  # type: ignore[union-attr]
            t = float(np.mean([g.t_end for g in got]))  # type: ignore[union-attr]
        on.append((o - r_on) * ms)
        te.append((t - r_te) * ms)
        qt.append(((t - o) - (r_te - r_on)) * ms)
    return Summary(on, te, qt, failed)


def fmt(v: list[float]) -> str:
    """'mean ± SD' or '-'."""
    if not v:
        return "-"
    a = np.asarray(v)
    return f"{a.mean():6.1f} ± {a.std():5.1f}"


def table_rows(ours: dict[str, tuple[float, list[list[LeadMarks | None]], list[tuple[int, int]]]],
               theirs: dict[str, list[list[LeadMarks | None]]], leads: Sequence[int]) -> list[str]:
    """Lines comparing ours and neurokit2 over the same annotated beats, per lead, mean and best lead."""
    rows = [f"{'method':<10} {'leads':<24} {'beats':>5} {'failed':>6} {'QRS onset':>15} {'T end':>15} "
            f"{'QT':>15} {'|QT err|<=25ms':>14}"]
    choices: list[tuple[str, list[int], bool]] = [(f"lead {k}", [k], False) for k in leads]
    if len(leads) > 1:
        choices += [("mean of leads", list(leads), False), ("best lead (QT, post hoc)", list(leads), True)]
    for name, use, best in choices:
        for method, source in (("ours", None), ("neurokit2", theirs)):
            tot = Summary([], [], [], 0)
            for rec, (fs, our_marks, refs) in ours.items():
                marks = our_marks if source is None else source[rec]
                s = summarise(marks, refs, fs, use, best)
                tot = Summary(tot.on + s.on, tot.te + s.te, tot.qt + s.qt, tot.failed + s.failed)
            within = 100.0 * np.mean(np.abs(tot.qt) <= 25.0) if tot.qt else float("nan")
            rows.append(f"{method:<10} {name:<24} {len(tot.qt):5d} {tot.failed:6d} {fmt(tot.on):>15} "
                        f"{fmt(tot.te):>15} {fmt(tot.qt):>15} {within:13.1f}%")
    return rows


def neurokit_record(path: str, ref_peaks: Sequence[int], rate: float | None = None,
                    n_leads: int = 2) -> list[list[LeadMarks | None]]:
    """neurokit2's marks for every annotated beat of a qtdb record, per lead (first `n_leads` leads);
    with `rate`, the leads resampled to it (`ref_peaks` must then be in resampled samples)."""
    from fractions import Fraction

    import scipy.signal as sps
    import wfdb

    r = wfdb.rdrecord(path)
    fs = float(r.fs)
    sig = [np.nan_to_num(r.p_signal[:, k]) for k in range(min(n_leads, r.n_sig))]
    if rate and abs(rate - fs) > 1e-9:
        fr = Fraction(rate / fs).limit_denominator(1000)
        sig = [np.asarray(sps.resample_poly(x, fr.numerator, fr.denominator), dtype=float) for x in sig]
        fs = rate
    per_lead = [neurokit_marks(x, fs, ref_peaks) for x in sig]
    return [[lead[i] for lead in per_lead] for i in range(len(ref_peaks))]


def print_baseline_table(results: dict[str, tuple[float, list[Any]]], folder: Path, leads: Sequence[int],
                         rate: float | None = None, ext: str = "q1c") -> None:
    """Print ours beside neurokit2 on the annotated beats of `results` (eval_qt's per-record
    ``(fs, [BeatResult, ...])``, whose ``.leads[k]`` is ``(qrs_on, t_end, checks)`` or None)."""
    ours: dict[str, tuple[float, list[list[LeadMarks | None]], list[tuple[int, int]]]] = {}
    theirs: dict[str, list[list[LeadMarks | None]]] = {}
    for rec, (fs, beats) in results.items():
        if not beats:
            continue
        ours[rec] = (fs, [[LeadMarks(d[0], d[1]) if d is not None else None for d in b.leads] for b in beats],
                     [(b.ref.qrs_on, b.ref.t_end) for b in beats])
        print(f"qtdb {rec} {ext} neurokit2", file=sys.stderr, flush=True)
        theirs[rec] = neurokit_record(str(folder / rec), [b.ref.peak for b in beats], rate)
    print(f"\nbaselines on the same .{ext} beats: neurokit2 ecg_process (its defaults: neurokit cleaning and peaks, "
          "wavelet delineation; QRS onset = ECG_R_Onsets, T end = ECG_T_Offsets), beat by beat; ours as above. "
          "wfdb XQRS detects QRS complexes only: no delineation, no QT row")
    for line in table_rows(ours, theirs, leads):
        print(line)
