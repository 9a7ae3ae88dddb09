"""EC57-style episode scoring (ANSI/AAMI EC57): episode and duration sensitivity / positive predictivity.

An episode is a half-open sample interval [start, end).  A reference episode is detected (episode
Se) when any detected episode overlaps it; a detected episode is a true positive (episode +P) when
it overlaps any reference episode.  Duration Se = overlap / reference duration; duration +P =
overlap / detected duration.
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
    ref = merge(reference)
    det = merge(detected)
    return EpisodeScore(
        ref_episodes=len(ref),
        ref_detected=sum(_overlaps_any(r, det) for r in ref),
        det_episodes=len(det),
        det_true=sum(_overlaps_any(d, ref) for d in det),
        ref_duration=sum(e - s for s, e in ref),
        det_duration=sum(e - s for s, e in det),
        overlap=overlap_length(ref, det),
    )


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
