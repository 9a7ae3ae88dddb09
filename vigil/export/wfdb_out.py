"""WFDB export: one record per contiguous segment of each waveform stream, written sample by sample.

* ``.dat`` in format 16 (little-endian int16), appended chunk by chunk; a stream whose stored integers
  do not fit 16 bits is rewritten once in format 32 (still streamed). The stored integers ARE the
  WFDB digital values, so ``wfdb.rdrecord(..., physical=False).d_signal`` equals the stored samples.
* ``.hea`` written at the end (sample count and checksum known): ECG in mV with
  gain = 1000 / store gain (adu/mV) and baseline 0; other channels in their stored unit with 1 / gain.
  Base time and date are the segment's first sample (UTC).
* ``.atr`` on ECG segments: beats with their labels (N, V, S, F, Q), rhythm changes as ``+`` with
  MIT-style aux notes (``(N``, ``(AFIB``, ``(VT``, ``(VFL``, ...; ``(U`` = no rhythm classified) and
  alarm transitions as ``"`` notes (``ALARM raised vt high``).
* Gaps (seq jumps) start a new record ``<mat>_<channel>_sNN``; nothing is padded.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from vigil.export.common import ExportContext
from vigil.export.reader import Segment, alarms_in, beats_in, episodes_in, iter_samples, plan_streams
from vigil.model import AlarmEvent, Beat, RhythmEpisode

log = logging.getLogger(__name__)

RHYTHM_AUX: dict[str, str] = {
    "SINUS": "(N", "AF": "(AFIB", "AFL": "(AFL", "VT": "(VT", "VF": "(VFL", "BRADY": "(SBR",
    "TACHY": "(TACHY", "BIGEMINY": "(B", "TRIGEMINY": "(T", "ASYSTOLE": "(ASYS", "PAUSE": "(PAUSE",
    "COUPLET": "(COUPLET", "NOISE": "(NOISE", "BRADY_EXTREME": "(BRADY_EXTREME", "TACHY_EXTREME": "(TACHY_EXTREME",
}
# when episodes overlap, the most urgent one is the rhythm shown
RHYTHM_RANK = ["VF", "VT", "ASYSTOLE", "PAUSE", "TACHY_EXTREME", "BRADY_EXTREME", "NOISE", "BIGEMINY",
               "TRIGEMINY", "COUPLET", "AF", "AFL", "TACHY", "BRADY", "SINUS"]
NO_RHYTHM = "(U"
BEAT_SYMBOLS = {"N": "N", "V": "V", "S": "S", "F": "F", "Q": "Q"}


def record_name(mat: str, channel: str, index: int | None) -> str:
    """WFDB record name (letters, digits, _ and - only)."""
    import re

    base = re.sub(r"[^A-Za-z0-9_-]", "_", f"{mat}_{channel}")
    return base if index is None else f"{base}_s{index:02d}"


class DatWriter:
    """Appends int samples to a WFDB .dat in format 16, switching the file to format 32 if a value overflows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fmt = 16
        self.n = 0
        self.checksum = 0
        self.first: int | None = None
        self._f: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, x: npt.NDArray[np.int32]) -> None:
        """Append samples."""
        if len(x) == 0:
            return
        if self.first is None:
            self.first = int(x[0])
        if self.fmt == 16 and (int(x.min()) < -32768 or int(x.max()) > 32767):
            self._upgrade()
        self._f.write(x.astype("<i2" if self.fmt == 16 else "<i4", copy=False).tobytes())
        self.n += len(x)
        self.checksum = (self.checksum + int(x.sum(dtype=np.int64))) & 0xFFFF

    def _upgrade(self) -> None:
        """Rewrite what is written so far as format 32 (streamed, 1 M samples at a time)."""
        self._f.close()
        tmp = self.path.with_suffix(".dat32")
        with open(self.path, "rb") as src, open(tmp, "wb") as dst:
            while block := src.read(2 << 20):
                dst.write(np.frombuffer(block, "<i2").astype("<i4").tobytes())
        tmp.replace(self.path)
        self._f = open(self.path, "ab")  # noqa: SIM115
        self.fmt = 32

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    @property
    def signed_checksum(self) -> int:
        """16-bit checksum as WFDB writes it (signed)."""
        return self.checksum - 0x10000 if self.checksum >= 0x8000 else self.checksum


def _gain_units(seg: Segment) -> tuple[float, str]:
    """(adu per physical unit, units) for the header."""
    if seg.unit in ("uV", "µV") and seg.kind == "ecg":
        return 1000.0 / seg.gain, "mV"
    unit = seg.unit.replace("µ", "u").replace(" ", "_") or "NU"
    return 1.0 / seg.gain, unit


def _fmt_float(x: float) -> str:
    return repr(float(x)).removesuffix(".0") if float(x).is_integer() else repr(float(x))


def write_header(path: Path, name: str, seg: Segment, dat: DatWriter, description: str) -> None:
    """The .hea of a single-segment, single-signal record."""
    start = dt.datetime.fromtimestamp(seg.wall_start, tz=dt.UTC)
    gain, units = _gain_units(seg)
    time_s = start.strftime("%H:%M:%S") + f".{start.microsecond // 1000:03d}"
    lines = [f"{name} 1 {_fmt_float(seg.fs)} {dat.n} {time_s} {start.strftime('%d/%m/%Y')}",
             f"{name}.dat {dat.fmt} {_fmt_float(gain)}(0)/{units} {dat.fmt} 0 {dat.first or 0} "
             f"{dat.signed_checksum} 0 {description}",
             f"# vigil device {seg.device_id} channel {seg.channel} seq {seg.seq_lo}..{seg.seq_hi}"]
    path.write_text("\n".join(lines) + "\n", encoding="ascii", errors="replace")


def rhythm_labels(episodes: list[RhythmEpisode], lo: int, hi: int) -> list[tuple[int, str | None]]:
    """(sample, label) at each change of the most urgent active rhythm within [lo, hi); None = none classified."""
    points = sorted({lo} | {e.start for e in episodes if lo <= e.start < hi}
                    | {e.end for e in episodes if e.end is not None and lo <= e.end < hi})
    rank = {lab: i for i, lab in enumerate(RHYTHM_RANK)}
    out: list[tuple[int, str | None]] = []
    current: str | None = None
    for p in points:
        active: list[str] = [e.label for e in episodes if e.start <= p and (e.end if e.end is not None else e.start + 1) > p]
        label = min(active, key=lambda lab: rank.get(lab, len(rank))) if active else None
        if label != current:
            out.append((p, label))
            current = label
    return out


def rhythm_changes(episodes: list[RhythmEpisode], lo: int, hi: int) -> list[tuple[int, str]]:
    """(sample, MIT-style aux note) at each rhythm change within [lo, hi)."""
    return [(p, RHYTHM_AUX.get(lab, f"({lab}") if lab else NO_RHYTHM) for p, lab in rhythm_labels(episodes, lo, hi)]


def alarm_note(ev: AlarmEvent) -> str:
    """Aux text of an alarm transition."""
    text = f"ALARM {ev.event} {ev.condition} {ev.priority.label}"
    if ev.operator:
        text += f" by {ev.operator}"
    return text


def write_annotations(dest: Path, name: str, seg: Segment, beats: list[Beat], episodes: list[RhythmEpisode],
                      alarms: list[AlarmEvent]) -> int:
    """Write ``<name>.atr``; returns the number of annotations."""
    import wfdb

    items: list[tuple[int, int, str, str]] = []  # (sample, order, symbol, aux)
    for b in beats:
        items.append((b.sample - seg.seq_lo, 1, BEAT_SYMBOLS.get(b.label, "Q"), ""))
    for s, aux in rhythm_changes(episodes, seg.seq_lo, seg.seq_hi):
        items.append((s - seg.seq_lo, 0, "+", aux))
    for ev in alarms:
        pos = int(round(seg.seq_of(ev.wall))) - seg.seq_lo
        if 0 <= pos < seg.n:
            items.append((pos, 2, '"', alarm_note(ev)))
    if not items:
        return 0
    items.sort(key=lambda t: (t[0], t[1]))
    wfdb.wrann(name, "atr", sample=np.array([t[0] for t in items], dtype=np.int64),
               symbol=[t[2] for t in items], aux_note=[t[3] for t in items], fs=seg.fs, write_dir=str(dest))
    return len(items)


def write_master(dest: Path, name: str, segments: list[tuple[str, Segment, int]], description: str) -> list[Path]:
    """Variable-layout multi-segment record over a whole stream: a layout segment, then each segment
    record with ``~`` null segments holding the number of samples lost in each gap (read back as NaN /
    WFDB's invalid sample, never as invented values). Returns the two headers written."""
    first = segments[0][1]
    gain, units = _gain_units(first)
    fmt = max(f for _n, _s, f in segments)
    lines: list[str] = [f"{name}_layout 0"]
    prev: Segment | None = None
    for seg_name, seg, _fmt in segments:
        if prev is not None and seg.seq_lo > prev.seq_hi:
            lines.append(f"~ {seg.seq_lo - prev.seq_hi}")
        lines.append(f"{seg_name} {seg.n}")
        prev = seg
    total = sum(int(line.split()[1]) for line in lines)
    start = dt.datetime.fromtimestamp(first.wall_start, tz=dt.UTC)
    head = (f"{name}/{len(lines)} 1 {_fmt_float(first.fs)} {total} {start.strftime('%H:%M:%S')}."
            f"{start.microsecond // 1000:03d} {start.strftime('%d/%m/%Y')}")
    master = dest / f"{name}.hea"
    master.write_text("\n".join([head, *lines, "# vigil: ~ = samples lost (link loss), never padded"]) + "\n",
                      encoding="ascii")
    layout = dest / f"{name}_layout.hea"
    layout.write_text(f"{name}_layout 1 {_fmt_float(first.fs)} 0\n"
                      f"~ {fmt} {_fmt_float(gain)}(0)/{units} {fmt} 0 0 0 0 {description}\n", encoding="ascii")
    return [master, layout]


def export_guest(ctx: ExportContext, mat: str, dest: Path) -> list[Path]:
    """Write every stream of one guest; return the files written."""
    streams = plan_streams(ctx.store, ctx.sid, mat, ctx.from_wall, ctx.to_wall)
    for st in streams:
        ctx.progress.add_total(st.n)
    alarms = alarms_in(ctx.store, ctx.sid, mat)
    files: list[Path] = []
    for st in streams:
        multi = len(st.segments) > 1
        written: list[tuple[str, Segment, int]] = []
        for i, seg in enumerate(st.segments, start=1):
            name = record_name(mat, st.channel, i if multi else None)
            dat = DatWriter(dest / f"{name}.dat")
            try:
                for x in iter_samples(ctx.store, ctx.sid, seg):
                    dat.write(x)
                    ctx.progress.advance(len(x))
            finally:
                dat.close()
            if dat.fmt == 32:
                ctx.warnings.append(f"{name}: samples exceed 16 bits, written in WFDB format 32")
            write_header(dest / f"{name}.hea", name, seg, dat, f"{seg.kind.upper()} {st.channel}")
            written.append((name, seg, dat.fmt))
            files += [dest / f"{name}.hea", dest / f"{name}.dat"]
            if seg.kind == "ecg":
                beats = beats_in(ctx.store, ctx.sid, mat, st.channel, seg.seq_lo, seg.seq_hi)
                eps = episodes_in(ctx.store, ctx.sid, mat, st.channel, seg.seq_lo, seg.seq_hi)
                if write_annotations(dest, name, seg, beats, eps, alarms):
                    files.append(dest / f"{name}.atr")
        same = len({(seg.fs, seg.gain, seg.unit) for _n, seg, _f in written}) == 1
        if multi and same:  # one record over the whole stream for tools that read multi-segment records
            files += write_master(dest, record_name(mat, st.channel, None), written,
                                  f"{st.kind.upper()} {st.channel}")
    return files
