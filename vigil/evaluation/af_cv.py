"""Record-wise cross-validation of the AF detector thresholds (leave one record out).

Each record's AF irregularity trace is recorded once (`vigil.signal.af.AfDetector(trace=...)`), then
every candidate (on, off) threshold pair is applied offline (`vigil.signal.af.replay`) and scored
against the reference episodes.  Scores are additive over records, so for each held-out record the
pair is chosen on the sum over the other records by a fixed rule (`choose`), and the held-out
record is scored with it.  The pooled held-out scores estimate what the threshold choice gives on
records it was not chosen on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vigil.evaluation.episodes import EpisodeScore, Interval, merge, score
from vigil.signal.af import replay

GRID_ON: tuple[float, ...] = tuple(round(0.015 + 0.0025 * k, 4) for k in range(13))  # 0.015 .. 0.045
GRID_OFF_RATIO: tuple[float, ...] = (0.7, 0.8, 0.9)  # off threshold = ratio × on threshold
MIN_EPISODE_SE = 0.95  # the target: episode Se ≥ 95 % ...
MIN_DURATION_SE = 0.90  # ... without giving up AF time
Pair = tuple[float, float]


@dataclass(frozen=True, slots=True)
class AfRecord:
    """One record's threshold-independent AF inputs: irregularity trace, reference AF, length."""

    name: str
    trace: list[tuple[int, float]]
    reference: list[Interval]
    n_samples: int


@dataclass(frozen=True, slots=True)
class CvResult:
    """Held-out score per record with the pair chosen without it, and the pair chosen on all records."""

    held_out: list[tuple[str, Pair, EpisodeScore]]
    all_records: Pair
    in_sample: EpisodeScore


def grid() -> list[Pair]:
    """Candidate (on, off) threshold pairs."""
    return [(on, round(on * r, 5)) for on in GRID_ON for r in GRID_OFF_RATIO]


def score_grid(rec: AfRecord, pairs: Sequence[Pair]) -> dict[Pair, EpisodeScore]:
    """Score every threshold pair on one record."""
    return {p: score(rec.reference, merge(replay(rec.trace, p[0], p[1], rec.n_samples))) for p in pairs}


def choose(totals: dict[Pair, EpisodeScore]) -> Pair:
    """Highest duration +P among pairs with episode Se ≥ 95 % and duration Se ≥ 90 %; else highest episode Se."""
    ok = [p for p, s in totals.items() if s.episode_se >= MIN_EPISODE_SE and s.duration_se >= MIN_DURATION_SE]
    if ok:
        return max(ok, key=lambda p: (totals[p].duration_ppv, totals[p].episode_se, -p[0]))
    return max(totals, key=lambda p: (totals[p].episode_se, totals[p].duration_ppv, -p[0]))


def _sum(scores: Sequence[dict[Pair, EpisodeScore]], pairs: Sequence[Pair]) -> dict[Pair, EpisodeScore]:
    out = {p: EpisodeScore() for p in pairs}
    for s in scores:
        for p in pairs:
            out[p] = out[p] + s[p]
    return out


def leave_one_record_out(records: Sequence[AfRecord], pairs: Sequence[Pair] | None = None) -> CvResult:
    """Leave-one-record-out CV of the threshold choice (`choose`) over `records`."""
    pairs = list(pairs or grid())
    per = [score_grid(r, pairs) for r in records]
    held: list[tuple[str, Pair, EpisodeScore]] = []
    for i, rec in enumerate(records):
        chosen = choose(_sum(per[:i] + per[i + 1:], pairs))
        held.append((rec.name, chosen, per[i][chosen]))
    totals = _sum(per, pairs)
    best = choose(totals)
    return CvResult(held, best, totals[best])
