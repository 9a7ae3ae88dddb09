"""Streaming read queries for export: stream plans from chunk metadata, samples by seq range, annotations.

Nothing here loads a whole session: `plan_streams` reads only chunk *metadata* (seq, n, walls), and
`iter_samples` decodes one batch of chunks at a time. Decoding goes through the store's own codec and
sealer (same checks as `RecordStore.iter_chunks`: tampered, moved, wrong-key or forged-clear chunks
raise `IntegrityError`).

Time of a sample: a chunk's ``wall_end`` is the arrival time of its last block, i.e. about the time of
its last sample, so sample ``seq + i`` of a chunk of ``n`` samples is at ``wall_end - (n - i) / fs``.
Accuracy is the device block length (0.25 s for replay, ~0.1-0.5 s for BLE devices).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.errors import IntegrityError
from vigil.model import AlarmEvent, Beat, RhythmEpisode
from vigil.store import codec
from vigil.store.crypto import chunk_aad, chunk_layout
from vigil.store.records import RecordStore


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    """Metadata of one stored chunk (no samples)."""

    seq: int
    n: int
    wall_end: float


@dataclass
class Segment:
    """A run of contiguous samples of one stream (no seq jump, same fs/unit/gain), already clipped to the range."""

    device_id: str
    channel: str
    kind: str
    fs: float
    unit: str
    gain: float
    seq_lo: int  # first sample (device numbering)
    seq_hi: int  # one past the last sample
    anchors_seq: list[int] = field(default_factory=list)  # chunk ends (seq + n)
    anchors_wall: list[float] = field(default_factory=list)  # their wall_end

    @property
    def n(self) -> int:
        """Number of samples."""
        return self.seq_hi - self.seq_lo

    def wall_of(self, seq: float) -> float:
        """Wall time of sample `seq` (linear between chunk-end anchors, extrapolated at fs outside)."""
        s, w = self.anchors_seq, self.anchors_wall
        if len(s) == 1 or seq <= s[0]:
            return w[0] - (s[0] - seq) / self.fs
        if seq >= s[-1]:
            return w[-1] + (seq - s[-1]) / self.fs
        i = bisect.bisect_right(s, seq)
        s0, s1, w0, w1 = s[i - 1], s[i], w[i - 1], w[i]
        return w0 + (seq - s0) / (s1 - s0) * (w1 - w0)

    def seq_of(self, wall: float) -> float:
        """Sample position (fractional, device numbering) of wall time `wall` (inverse of wall_of)."""
        s, w = self.anchors_seq, self.anchors_wall
        if len(s) == 1 or wall <= w[0]:
            return s[0] - (w[0] - wall) * self.fs
        if wall >= w[-1]:
            return s[-1] + (wall - w[-1]) * self.fs
        i = bisect.bisect_right(w, wall)
        i = min(max(i, 1), len(w) - 1)
        w0, w1, s0, s1 = w[i - 1], w[i], s[i - 1], s[i]
        return s0 + (wall - w0) / (w1 - w0) * (s1 - s0) if w1 > w0 else float(s1)

    @property
    def wall_start(self) -> float:
        """Wall time of the first sample."""
        return self.wall_of(self.seq_lo)

    @property
    def wall_stop(self) -> float:
        """Wall time one sample past the last."""
        return self.wall_of(self.seq_hi)


@dataclass
class Stream:
    """Every segment of one (device, channel) waveform stream of a guest."""

    device_id: str
    channel: str
    kind: str
    segments: list[Segment]

    @property
    def n(self) -> int:
        """Total samples."""
        return sum(s.n for s in self.segments)


def plan_streams(store: RecordStore, sid: str, mat: str, from_wall: float | None = None,
                 to_wall: float | None = None) -> list[Stream]:
    """The guest's waveform streams cut into contiguous segments, clipped to [from_wall, to_wall] (metadata only)."""
    conn = store._conn  # noqa: SLF001 - read-only query on the store's own connection
    streams: list[Stream] = []
    keys = conn.execute("SELECT DISTINCT device_id, channel FROM waveform_chunks WHERE session_id=? AND mat=? "
                        "ORDER BY device_id, channel", (sid, mat)).fetchall()
    for dev, ch in keys:
        segs: list[Segment] = []
        cur: Segment | None = None
        kind_of_stream = ""
        for kind, fs, unit, gain, seq, n, wall_end in conn.execute(
                "SELECT kind, fs, unit, gain, seq, n, wall_end FROM waveform_chunks WHERE session_id=? AND "
                "device_id=? AND channel=? AND mat=? ORDER BY seq, id", (sid, dev, ch, mat)):
            kind_of_stream = kind_of_stream or kind
            lo, hi = seq, seq + n
            if from_wall is not None or to_wall is not None:  # clip the chunk to the range (per-chunk linear time)
                t_first = wall_end - n / fs
                if from_wall is not None:
                    lo = max(lo, seq + int(np.ceil((from_wall - t_first) * fs - 1e-9)))
                if to_wall is not None:
                    hi = min(hi, seq + int(np.floor((to_wall - t_first) * fs + 1e-9)) + 1)
                if hi <= lo:
                    continue
            if cur is not None and lo < cur.seq_hi:  # a chunk stored twice (overlap): keep the first copy
                if hi <= cur.seq_hi:
                    continue
                lo = cur.seq_hi
            if (cur is None or cur.seq_hi != lo or cur.fs != fs or cur.unit != unit or cur.gain != gain
                    or cur.kind != kind):
                cur = Segment(dev, ch, kind, float(fs), unit, float(gain), lo, lo)
                segs.append(cur)
            cur.seq_hi = hi
            cur.anchors_seq.append(seq + n)
            cur.anchors_wall.append(float(wall_end))
        if segs:
            streams.append(Stream(dev, ch, kind_of_stream, segs))
    return streams


def iter_samples(store: RecordStore, sid: str, seg: Segment, batch: int = 64) -> Iterator[npt.NDArray[np.int32]]:
    """Decoded samples of one segment, in order, one chunk (clipped) at a time."""
    conn = store._conn  # noqa: SLF001
    cur = conn.execute(
        "SELECT id, kind, fs, unit, gain, seq, n, encrypted, data FROM waveform_chunks WHERE session_id=? AND "
        "device_id=? AND channel=? AND seq<? AND seq+n>? ORDER BY seq, id",
        (sid, seg.device_id, seg.channel, seg.seq_hi, seg.seq_lo))
    expect = seg.seq_lo
    try:
        while rows := cur.fetchmany(batch):
            for rid, kind, fs, unit, gain, seq, n, enc, data in rows:
                what = f"waveform chunk {seg.device_id}/{seg.channel}@{seq}"
                if not enc:
                    store._check_clear("waveform_chunks", rid, what)  # noqa: SLF001
                aad = chunk_aad(sid, seg.device_id, seg.channel, seq, chunk_layout(kind, fs, unit, gain, n))
                samples = codec.decode(store._blob(bytes(data), enc, aad, what))  # noqa: SLF001
                if len(samples) != n:
                    raise IntegrityError(f"{what} holds {len(samples)} samples, its row says {n}")
                lo, hi = max(seq, expect), min(seq + n, seg.seq_hi)
                if hi <= lo:
                    continue
                if lo != expect:
                    raise IntegrityError(f"{what}: samples {expect}..{lo} of a planned segment are missing")
                expect = hi
                yield samples[lo - seq:hi - seq]
    finally:
        cur.close()
    if expect != seg.seq_hi:
        raise IntegrityError(f"stream {seg.device_id}/{seg.channel}: samples {expect}..{seg.seq_hi} vanished "
                             "during the export")


def beats_in(store: RecordStore, sid: str, mat: str, channel: str, seq_lo: int, seq_hi: int) -> list[Beat]:
    """Beats of one guest/channel with seq_lo <= sample < seq_hi, in sample order."""
    rows = store._conn.execute(  # noqa: SLF001
        "SELECT sample, label FROM beats WHERE session_id=? AND mat=? AND channel=? AND sample>=? AND sample<? "
        "ORDER BY sample, id", (sid, mat, channel, seq_lo, seq_hi)).fetchall()
    return [Beat(sample=s, label=lab, channel=channel) for s, lab in rows]


def iter_beats(store: RecordStore, sid: str, mat: str, seq_lo: int | None = None,
               seq_hi: int | None = None) -> Iterator[Beat]:
    """Stream every beat of a guest (any channel), optionally within a sample range."""
    sql = "SELECT channel, sample, label FROM beats WHERE session_id=? AND mat=?"
    args: list[Any] = [sid, mat]
    if seq_lo is not None:
        sql += " AND sample>=?"
        args.append(seq_lo)
    if seq_hi is not None:
        sql += " AND sample<?"
        args.append(seq_hi)
    for ch, s, lab in store._conn.execute(sql + " ORDER BY channel, sample, id", args):  # noqa: SLF001
        yield Beat(sample=s, label=lab, channel=ch)


def episodes_in(store: RecordStore, sid: str, mat: str, channel: str, seq_lo: int, seq_hi: int) -> list[RhythmEpisode]:
    """Rhythm episodes of one guest/channel overlapping [seq_lo, seq_hi)."""
    out = []
    for _m, ep in store.episodes(sid, mat):
        end = ep.end if ep.end is not None else ep.start
        if ep.channel == channel and ep.start < seq_hi and end >= seq_lo:
            out.append(ep)
    return out


def alarms_in(store: RecordStore, sid: str, mat: str, from_wall: float | None = None,
              to_wall: float | None = None) -> list[AlarmEvent]:
    """Alarm events of one guest within the wall range, in recorded order."""
    return [ev for ev in store.alarm_events(sid, guest=mat)
            if (from_wall is None or ev.wall >= from_wall) and (to_wall is None or ev.wall <= to_wall)]


class SampleClock:
    """Wall time of a sample index of one guest's ECG numbering (beats, measurements, episodes)."""

    def __init__(self, streams: list[Stream], channel: str = "ecg") -> None:
        segs = [s for st in streams if st.channel == channel for s in st.segments]
        if not segs:  # fall back to any ECG stream
            segs = [s for st in streams if st.kind == "ecg" for s in st.segments]
        self.segments = sorted(segs, key=lambda s: s.seq_lo)
        self._starts = [s.seq_lo for s in self.segments]

    def __bool__(self) -> bool:
        return bool(self.segments)

    def segment(self, sample: float) -> Segment | None:
        """The segment holding (or last before) `sample`."""
        if not self.segments:
            return None
        i = bisect.bisect_right(self._starts, sample) - 1
        return self.segments[max(i, 0)]

    def wall_of(self, sample: float) -> float | None:
        """Wall time of `sample` (None when there is no waveform to anchor it)."""
        seg = self.segment(sample)
        return None if seg is None else seg.wall_of(sample)


def read_window(store: RecordStore, sid: str, streams: list[Stream], wall_lo: float, wall_hi: float,
                channel: str = "ecg") -> tuple[Segment, npt.NDArray[np.int32]] | None:
    """Samples of the guest's `channel` between two wall times, from the one segment covering most of them.

    Returns (segment clipped to the window, samples) or None when no stored samples fall in the window.
    """
    best: tuple[int, Segment] | None = None
    for st in streams:
        if st.channel != channel:
            continue
        for seg in st.segments:
            lo = max(seg.seq_lo, int(np.ceil(seg.seq_of(wall_lo))))
            hi = min(seg.seq_hi, int(np.floor(seg.seq_of(wall_hi))))
            if hi > lo and (best is None or hi - lo > best[0]):
                sub = Segment(seg.device_id, seg.channel, seg.kind, seg.fs, seg.unit, seg.gain, lo, hi,
                              seg.anchors_seq, seg.anchors_wall)
                best = (hi - lo, sub)
    if best is None:
        return None
    seg = best[1]
    parts = list(iter_samples(store, sid, seg))
    return seg, (np.concatenate(parts) if parts else np.zeros(0, np.int32))
