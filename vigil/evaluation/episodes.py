"""EC57-style episode scoring (ANSI/AAMI EC57): episode and duration sensitivity / positive predictivity.

An episode is a half-open sample interval [start, end).  A reference episode is detected (episode
Se) when any detected episode overlaps it; a detected episode is a true positive (episode +P) when
it overlaps any reference episode.  Duration Se = overlap / reference duration; duration +P =
overlap / detected duration.  `score_ec57` applies the rest of the standard's comparison as the
reference comparator `epicmp` (WFDB, G. Moody, after ANSI/AAMI EC38/EC57) implements it: a learning
period (the first 5 minutes) left out, and reference-marked atrial flutter excluded from the detected
episodes when AF positive predictivity is counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Interval = tuple[int, int]


@dataclass(frozen=True, slots=True)
class EpisodeScore:
    """Counts behind episode and duration Se/+P of one record (or a sum of records)."""

    ref_episodes: int = 0
    ref_detected: int = 0
    det_episodes: int = 0
    det_true: int = 0
    ref_duration: int = 0
    det_duration: int = 0
    overlap: int = 0

    def __add__(self, other: EpisodeScore) -> EpisodeScore:
        """Sum two scores (gross statistics)."""
        return EpisodeScore(*(a + b for a, b in zip(_fields(self), _fields(other), strict=True)))

    @property
    def episode_se(self) -> float:
        """Episode sensitivity (NaN when there is no reference episode)."""
        return _ratio(self.ref_detected, self.ref_episodes)

    @property
    def episode_ppv(self) -> float:
        """Episode positive predictivity (NaN when nothing was detected)."""
        return _ratio(self.det_true, self.det_episodes)

    @property
    def duration_se(self) -> float:
        """Duration sensitivity."""
        return _ratio(self.overlap, self.ref_duration)

    @property
    def duration_ppv(self) -> float:
        """Duration positive predictivity."""
        return _ratio(self.overlap, self.det_duration)


def _fields(s: EpisodeScore) -> tuple[int, ...]:
    return (s.ref_episodes, s.ref_detected, s.det_episodes, s.det_true, s.ref_duration, s.det_duration,
            s.overlap)


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def merge(intervals: Iterable[Interval], gap: int = 0) -> list[Interval]:
    """Sort and merge intervals that overlap or are closer than `gap` samples."""
    out: list[list[int]] = []
    for s, e in sorted(intervals):
        if e <= s:
            continue
        if out and s <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def overlap_length(a: Sequence[Interval], b: Sequence[Interval]) -> int:
    """Total overlap (samples) between two sets of disjoint sorted intervals."""
    i = j = 0
    total = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if hi > lo:
            total += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def subtract(intervals: Sequence[Interval], holes: Sequence[Interval]) -> list[Interval]:
    """Remove `holes` from `intervals` (both disjoint and sorted); returns the pieces left."""
    out: list[Interval] = []
    for s, e in intervals:
        pieces = [(s, e)]
        for hs, he in holes:
            nxt: list[Interval] = []
            for ps, pe in pieces:
                if he <= ps or hs >= pe:
                    nxt.append((ps, pe))
                    continue
                if hs > ps:
                    nxt.append((ps, hs))
                if he < pe:
                    nxt.append((he, pe))
            pieces = nxt
        out.extend(pieces)
    return merge(out)


def _overlaps_any(x: Interval, others: Sequence[Interval]) -> bool:
    return any(min(x[1], o[1]) > max(x[0], o[0]) for o in others)


def score(reference: Iterable[Interval], detected: Iterable[Interval]) -> EpisodeScore:
    """Score detected against reference episodes (any overlap = match)."""
    return _score(merge(reference), merge(detected), [])


def _score(ref: list[Interval], det: list[Interval], holes: list[Interval]) -> EpisodeScore:
    """Counts for merged reference and detected episodes, `holes` removed from the detections for +P."""
    kept = [pieces for d in det if (pieces := subtract([d], holes))]
    windows = [(pieces[0][0], pieces[-1][1]) for pieces in kept]  # epicmp trims the ends only
    return EpisodeScore(
        ref_episodes=len(ref),
        ref_detected=sum(_overlaps_any(r, det) for r in ref),
        det_episodes=len(kept),
        det_true=sum(_overlaps_any(w, ref) for w in windows),
        ref_duration=sum(e - s for s, e in ref),
        det_duration=sum(e - s for pieces in kept for s, e in pieces),
        overlap=overlap_length(ref, det),
    )


EC57_START_S = 300.0  # epicmp's default comparison start: the first 5 minutes are the learning period


def clip(intervals: Sequence[Interval], start: int, end: int | None = None) -> list[Interval]:
    """Cut sorted disjoint intervals to [start, end); intervals left empty are dropped."""
    out: list[Interval] = []
    for s, e in intervals:
        s, e = max(s, start), e if end is None else min(e, end)
        if e > s:
            out.append((s, e))
    return out


def score_ec57(reference: Iterable[Interval], detected: Iterable[Interval], *, start: int,
               end: int | None = None, exclusions: Iterable[Interval] = ()) -> EpisodeScore:
    """Score episodes as WFDB's `epicmp` does for EC57 AF/VF comparisons (any overlap = match).

    Both sets are cut to the comparison period [start, end) (epicmp's default start is 5 minutes in,
    `EC57_START_S`).  For positive predictivity the `exclusions` (epicmp: reference atrial flutter
    episodes, for AF) are removed from each detected episode: an episode lying wholly inside
    exclusions is ignored, one whose start or end is excluded is shortened, and an exclusion inside
    it only shortens its duration.  Sensitivity is counted without exclusions.  The exclusions must
    not overlap the reference episodes (AFL and AFIB are different rhythm annotations), so one
    overlap total serves both duration Se and duration +P.
    """
    ref = clip(merge(reference), start, end)
    det = clip(merge(detected), start, end)
    holes = merge(exclusions)
    if overlap_length(ref, holes):
        raise ValueError("exclusions overlap reference episodes")
    return _score(ref, det, holes)


def rhythm_intervals(samples: Sequence[int], notes: Sequence[str], labels: set[str], end: int) -> list[Interval]:
    """Intervals where a WFDB rhythm annotation (aux note such as "(AFIB") is one of `labels`."""
    out: list[Interval] = []
    current: str | None = None
    start = 0
    for s, note in zip(samples, notes, strict=True):
        note = note.strip("\x00 ").lstrip("(")
        if not note:
            continue
        if current in labels:
            out.append((start, int(s)))
        current, start = note, int(s)
    if current in labels:
        out.append((start, end))
    return merge(out)
