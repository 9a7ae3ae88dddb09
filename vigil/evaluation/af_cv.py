"""Record-wise cross-validation of the AF detector settings (leave one record out).

Each record's AF irregularity trace is computed once per detector shape (window, quantile, alpha;
`beat_trace`, or `vigil.signal.af.AfDetector(trace=...)` inside the tracker), then every candidate
(on, off) threshold pair is applied offline (`vigil.signal.af.replay_arrays`) and scored against the
reference episodes.  Scores are additive over records, so for each held-out record the candidate is
chosen on the sum over the other records by a fixed rule (`choose`), and the held-out record is
scored with it.  The pooled held-out scores estimate what the choice gives on records it was not
chosen on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vigil.evaluation.episodes import EpisodeScore, Interval, merge, score
from vigil.signal.af import ALPHA, QUANTILE, WINDOW, replay_arrays

GRID_ON: tuple[float, ...] = tuple(round(0.015 + 0.0025 * k, 4) for k in range(13))  # 0.015 .. 0.045
GRID_OFF_RATIO: tuple[float, ...] = (0.7, 0.8, 0.9)  # off threshold = ratio × on threshold
MIN_EPISODE_SE = 0.95  # the target: episode Se ≥ 95 % ...
MIN_DURATION_SE = 0.90  # ... without giving up AF time
Shape = tuple[int, float, float]  # window (intervals), quantile, alpha
SHIPPED_SHAPE: Shape = (WINDOW, QUANTILE, ALPHA)
SHAPES: tuple[Shape, ...] = tuple((w, q, a) for w in (8, 12, 16, 24) for q in (0.25, 0.5) for a in (0.02, 0.04, 0.08))
Candidate = tuple[Shape, float, float]  # shape, on, off


@dataclass(frozen=True, slots=True)
class AfRecord:
    """One record's setting-independent inputs: reference AF, length, and a trace (samples, irregularity) per shape."""

    name: str
    reference: list[Interval]
    n_samples: int
    traces: dict[Shape, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True, slots=True)
class CvResult:
    """Held-out score per record with the candidate chosen without it, and the candidate chosen on all records."""

    held_out: list[tuple[str, Candidate, EpisodeScore]]
    all_records: Candidate
    in_sample: EpisodeScore


def pairs() -> list[tuple[float, float]]:
    """Candidate (on, off) threshold pairs."""
    return [(on, round(on * r, 5)) for on in GRID_ON for r in GRID_OFF_RATIO]


def as_arrays(trace: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """A recorded trace as (samples, irregularity) arrays."""
    return (np.fromiter((t[0] for t in trace), dtype=np.int64, count=len(trace)),
            np.fromiter((t[1] for t in trace), dtype=float, count=len(trace)))


def score_grid(rec: AfRecord) -> dict[Candidate, EpisodeScore]:
    """Score every (shape, on, off) candidate on one record."""
    out: dict[Candidate, EpisodeScore] = {}
    for shape, (samples, irr) in rec.traces.items():
        for on, off in pairs():
            out[(shape, on, off)] = score(rec.reference, merge(replay_arrays(samples, irr, on, off, rec.n_samples)))
    return out


def choose(totals: dict[Candidate, EpisodeScore]) -> Candidate:
    """Highest duration +P among candidates with episode Se ≥ 95 % and duration Se ≥ 90 %; else highest episode Se."""
    ok = [c for c, s in totals.items() if s.episode_se >= MIN_EPISODE_SE and s.duration_se >= MIN_DURATION_SE]
    if ok:
        return max(ok, key=lambda c: (totals[c].duration_ppv, totals[c].episode_se, -c[1]))
    return max(totals, key=lambda c: (totals[c].episode_se, totals[c].duration_ppv, -c[1]))


def leave_one_record_out(records: Sequence[AfRecord]) -> CvResult:
    """Leave-one-record-out CV of the choice (`choose`) over the candidates every record has."""
    per = [score_grid(r) for r in records]
    keys = list(per[0]) if per else []
    sums = np.array([[_fields(p[c]) for c in keys] for p in per], dtype=np.int64)  # records × candidates × counts
    total = sums.sum(axis=0)
    held: list[tuple[str, Candidate, EpisodeScore]] = []
    for i, rec in enumerate(records):
        train = {c: EpisodeScore(*map(int, row)) for c, row in zip(keys, total - sums[i], strict=True)}
        chosen = choose(train)
        held.append((rec.name, chosen, per[i][chosen]))
    totals = {c: EpisodeScore(*map(int, row)) for c, row in zip(keys, total, strict=True)}
    best = choose(totals)
    return CvResult(held, best, totals[best])


def _fields(s: EpisodeScore) -> tuple[int, ...]:
    return (s.ref_episodes, s.ref_detected, s.det_episodes, s.det_true, s.ref_duration, s.det_duration, s.overlap)


def beat_trace(fs: float, samples: Sequence[int], labels: Sequence[str], shape: tuple[int, float, float]) -> list[tuple[int, float]]:
    """AF irregularity trace of an uninterrupted beat stream, as `AfDetector(trace=...)` records it inside
    `RhythmTracker` without a signal, computed for all beats at once (vectorised; equal up to rounding).
    """
    import scipy.signal as sps

    from vigil.signal.af import DELAY_BEATS, LAGS
    from vigil.signal.rhythm import ECTOPIC

    window, quantile, alpha = shape
    s = np.asarray(samples, dtype=np.int64)
    ok = (s[1:] > s[:-1]) & np.array([a not in ECTOPIC and b not in ECTOPIC for a, b in zip(labels[:-1], labels[1:], strict=True)],
                                     dtype=bool)
    fed_rr = (s[1:] - s[:-1])[ok] / fs  # intervals passed to add_interval, in order
    fed_sample = s[1:][ok]
    back = fed_sample[np.maximum(np.arange(len(fed_sample)) - DELAY_BEATS, 0)]  # the detector's back-dated sample
    acc = np.flatnonzero((fed_rr >= 0.2) & (fed_rr <= 3.0))
    r = fed_rr[acc]
    m0 = window + LAGS - 1  # first accepted interval with a full window
    if len(r) <= m0 + 3:
        return []
    view = np.lib.stride_tricks.sliding_window_view
    wins = view(r, window)[m0 - window + 1:]  # windows ending at m0 .. end
    lo = int(quantile * (window - 1))
    frac = quantile * (window - 1) - lo
    hi = min(lo + 1, window - 1)
    best = np.full(len(wins), np.inf)
    for k in range(1, LAGS + 1):
        d = np.sort(np.abs(wins - view(r[:-k], window)[m0 - window + 1 - k:len(r) - window + 1 - k]), axis=1)
        best = np.minimum(best, d[:, lo] + frac * (d[:, hi] - d[:, lo]))
    irr = best / wins.mean(axis=1)
    smooth, _ = sps.lfilter([alpha], [1.0, alpha - 1.0], irr[1:], zi=[(1.0 - alpha) * irr[0]])
    smooth = np.concatenate([irr[:1], smooth])
    at = back[acc[m0:]]
    return [(int(a), float(v)) for a, v in zip(at[3:], smooth[3:], strict=True)]


def load_afdb(shapes: Sequence[Shape] = (SHIPPED_SHAPE,)) -> list[AfRecord]:
    """afdb records from their .qrs beats and .atr AFIB episodes, traced by `beat_trace` for each shape."""
    import wfdb

    from vigil.datasets import data_root
    from vigil.evaluation.episodes import rhythm_intervals

    out: list[AfRecord] = []
    for hea in sorted((data_root() / "afdb").glob("*.hea")):
        path = str(hea.with_suffix(""))
        qrs, atr = wfdb.rdann(path, "qrs"), wfdb.rdann(path, "atr")
        fs = float(qrs.fs or wfdb.rdheader(path).fs)
        samples = [int(s) for s in qrs.sample]
        labels = ["N"] * len(samples)  # afdb .qrs: unclassified beat times
        n = max(int(wfdb.rdheader(path).sig_len or 0), samples[-1] + int(fs), int(atr.sample[-1]) + 1)
        ref = rhythm_intervals(list(atr.sample), [(a or "").strip("\x00 ") for a in atr.aux_note], {"AFIB"}, n)
        out.append(AfRecord(hea.stem, ref, n, {sh: as_arrays(beat_trace(fs, samples, labels, sh)) for sh in shapes}))
    return out
