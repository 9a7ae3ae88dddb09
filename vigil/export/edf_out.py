"""EDF+ export: one EDF+C file per contiguous segment of each waveform stream, written record by record.

Gaps are never padded: a seq jump ends a file and the next segment starts a new one
(``<mat>_<channel>_sNN.edf``), whose header start time (plus the sub-second offset of its first
time-keeping TAL) says when it begins. Because a segment's length is known from chunk metadata
before any sample is decoded, the data-record size is chosen to divide it exactly, so the last record
is never filled with invented samples either:

* 1 s records when the segment is a whole number of seconds;
* otherwise the divisor of the sample count closest to 1 s whose duration is exact in the 8-character
  header field (0.05-60 s);
* otherwise (awkward lengths) one data record holding the whole segment.

Digital values are the stored integers (int16; values beyond ±32767 are clipped and reported as a
warning); physical = digital × store gain, so ECG is in uV. The "EDF Annotations" signal carries the
record time-keeping TALs, rhythm changes (``rhythm AF``) and alarm transitions
(``ALARM raised vt high``), each in the data record holding its onset.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vigil.export.common import ExportContext
from vigil.export.reader import Segment, alarms_in, episodes_in, iter_samples, plan_streams
from vigil.export.wfdb_out import alarm_note, record_name, rhythm_labels

log = logging.getLogger(__name__)

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DMIN, DMAX = -32768, 32767


def fmt_num(x: float, width: int = 8) -> str:
    """Shortest decimal text of `x` that fits `width` characters (rounded if it must be)."""
    if float(x).is_integer() and len(str(int(x))) <= width:
        return str(int(x))
    for digits in range(width, -1, -1):
        s = f"{x:.{digits}f}".rstrip("0").rstrip(".")
        if len(s) <= width:
            return s
    raise ValueError(f"{x} does not fit {width} characters")


def _exact(spr: int, fs: float) -> str | None:
    """Duration text of `spr` samples if it is exact in 8 characters."""
    d = spr / fs
    s = fmt_num(d)
    return s if abs(float(s) * fs - spr) < 1e-6 else None


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def record_layout(n: int, fs: float) -> tuple[int, str, bool]:
    """(samples per record, duration text, exact) for a segment of `n` samples: never a partial record."""
    if float(fs).is_integer() and n % int(fs) == 0:
        return int(fs), "1", True
    best: tuple[float, int, str] | None = None
    for spr in _divisors(n):
        d = spr / fs
        if not 0.05 <= d <= 60:
            continue
        text = _exact(spr, fs)
        if text is None:
            continue
        score = abs(math.log(d))
        if best is None or score < best[0]:
            best = (score, spr, text)
    if best is not None:
        return best[1], best[2], True
    text = fmt_num(n / fs)
    return n, text, abs(float(text) * fs - n) < 1e-6


def _seconds(x: float) -> str:
    """Seconds with at most 7 decimals (100 ns), no trailing zeros."""
    return f"{x:.7f}".rstrip("0").rstrip(".") or "0"


def _tal(onset: float, text: str = "", duration: float | None = None) -> bytes:
    sign = "+" if onset >= 0 else "-"
    head = f"{sign}{_seconds(abs(onset))}"
    if duration is not None:
        head += f"\x15{_seconds(duration)}"
    clean = text.replace("\x14", " ").replace("\x15", " ").replace("\x00", " ")
    return (head + "\x14" + clean + "\x14").encode("utf-8") + b"\x00"


def _field(text: str, width: int) -> bytes:
    raw = text.encode("ascii", errors="replace")[:width]
    return raw + b" " * (width - len(raw))


def _edf_name(text: str) -> str:
    return "_".join(text.split()) or "X"


class EdfWriter:
    """Writes one EDF+C file: one signal plus "EDF Annotations", data record by data record."""

    def __init__(self, path: Path, *, start_wall: float, n: int, fs: float, label: str, unit: str, gain: float,
                 transducer: str, patient: str, recording: str,
                 annotations: list[tuple[float, str]]) -> None:
        self.path = path
        self.spr, self.duration_text, self.exact = record_layout(n, fs)
        self.n_records = n // self.spr
        self.record_s = float(self.duration_text)
        start = math.floor(start_wall)
        self.offset = start_wall - start  # sub-second start: first time-keeping TAL
        self.clipped = 0
        # annotation bytes per record: time-keeping TAL + the annotations whose onset lies in it
        extra: dict[int, list[bytes]] = {}
        for t, text in annotations:
            k = min(self.n_records - 1, max(0, int(t // (self.spr / fs))))
            extra.setdefault(k, []).append(_tal(self.offset + t, text))
        self._extra = extra
        longest = max([len(self._tk(k)) + sum(len(b) for b in extra.get(k, [])) for k in
                       ({0, self.n_records - 1} | set(extra))])
        self.ann_spr = (longest + 1) // 2
        self._buf: list[npt.NDArray[np.int32]] = []
        self._buffered = 0
        self._k = 0
        when = dt.datetime.fromtimestamp(start, tz=dt.UTC)
        pmin, pmax = fmt_num(DMIN * gain), fmt_num(DMAX * gain)
        ns = 2
        hdr = b"".join([
            _field("0", 8), _field(patient, 80),
            _field(f"Startdate {when.day:02d}-{_MONTHS[when.month - 1]}-{when.year} {recording}", 80),
            _field(when.strftime("%d.%m.%y"), 8), _field(when.strftime("%H.%M.%S"), 8), _field(str(256 * (ns + 1)), 8),
            _field("EDF+C", 44), _field(str(self.n_records), 8), _field(self.duration_text, 8), _field(str(ns), 4),
            _field(label, 16), _field("EDF Annotations", 16),
            _field(transducer, 80), _field("", 80),
            _field(unit, 8), _field("", 8),
            _field(pmin, 8), _field("-1", 8),
            _field(pmax, 8), _field("1", 8),
            _field(str(DMIN), 8), _field(str(DMIN), 8),
            _field(str(DMAX), 8), _field(str(DMAX), 8),
            _field("", 80), _field("", 80),
            _field(str(self.spr), 8), _field(str(self.ann_spr), 8),
            _field("", 32), _field("", 32)])
        assert len(hdr) == 256 * (ns + 1)
        self._f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._f.write(hdr)

    def _tk(self, k: int) -> bytes:
        """Time-keeping TAL of data record k (its onset from the header start time)."""
        return _tal(self.offset + k * self.record_s)

    def write(self, x: npt.NDArray[np.int32]) -> None:
        """Append samples; full data records are written at once."""
        self._buf.append(x)
        self._buffered += len(x)
        if self._buffered < self.spr:
            return
        data = np.concatenate(self._buf)
        full = len(data) // self.spr * self.spr
        for i in range(0, full, self.spr):
            self._record(data[i:i + self.spr])
        rest = data[full:]
        self._buf, self._buffered = ([rest] if len(rest) else []), len(rest)

    def _record(self, x: npt.NDArray[np.int32]) -> None:
        over = (x < DMIN) | (x > DMAX)
        if over.any():
            self.clipped += int(over.sum())
            x = np.clip(x, DMIN, DMAX)
        ann = self._tk(self._k) + b"".join(self._extra.get(self._k, []))
        self._f.write(x.astype("<i2").tobytes())
        self._f.write(ann + b"\x00" * (2 * self.ann_spr - len(ann)))
        self._k += 1

    def close(self, check: bool = True) -> None:
        """Close; with `check`, raise unless every data record was written."""
        self._f.close()
        if check and (self._k != self.n_records or self._buffered):
            raise ValueError(f"{self.path.name}: wrote {self._k} of {self.n_records} data records "
                             f"({self._buffered} samples left over)")


def _label(kind: str, channel: str) -> tuple[str, str]:
    if kind == "ecg":
        return f"ECG {channel}", "uV"
    return {"pleth": ("Pleth", ""), "abp": ("ABP", ""), "resp": ("Resp", "")}.get(kind, (channel, ""))


def segment_annotations(ctx: ExportContext, mat: str, seg: Segment, alarms: list) -> list[tuple[float, str]]:  # type: ignore[type-arg]
    """(seconds from the segment's first sample, text) of rhythm changes and alarm transitions in it."""
    out: list[tuple[float, str]] = []
    if seg.kind == "ecg":
        eps = episodes_in(ctx.store, ctx.sid, mat, seg.channel, seg.seq_lo, seg.seq_hi)
        for s, label in rhythm_labels(eps, seg.seq_lo, seg.seq_hi):
            out.append(((s - seg.seq_lo) / seg.fs, f"rhythm {label or 'unclassified'}"))
    t0, t1 = seg.wall_start, seg.wall_stop
    for ev in alarms:
        if t0 <= ev.wall < t1:
            out.append((ev.wall - t0, alarm_note(ev)))
    return sorted(out, key=lambda a: a[0])


def export_guest(ctx: ExportContext, mat: str, dest: Path) -> list[Path]:
    """Write every stream segment of one guest as EDF+C; return the files."""
    streams = plan_streams(ctx.store, ctx.sid, mat, ctx.from_wall, ctx.to_wall)
    for st in streams:
        ctx.progress.add_total(st.n)
    guest = ctx.guest(mat)
    alarms = [ev for ev in alarms_in(ctx.store, ctx.sid, mat) if ev.event != "escalated"] if any(
        s.kind == "ecg" for s in streams) else []
    patient = f"{_edf_name(mat)} X X {_edf_name(guest.display_name)}"
    recording = f"{_edf_name(ctx.sid)} X vigil"
    files: list[Path] = []
    for st in streams:
        multi = len(st.segments) > 1
        for i, seg in enumerate(st.segments, start=1):
            name = record_name(mat, st.channel, i if multi else None)
            label, unit = _label(seg.kind, seg.channel)
            unit = unit or seg.unit.replace("µ", "u")
            notes = segment_annotations(ctx, mat, seg, alarms if seg.kind == "ecg" else [])
            path = dest / f"{name}.edf"
            w = EdfWriter(path, start_wall=seg.wall_start, n=seg.n, fs=seg.fs, label=label, unit=unit, gain=seg.gain,
                          transducer=f"vigil device {seg.device_id}", patient=patient, recording=recording,
                          annotations=notes)
            try:
                for x in iter_samples(ctx.store, ctx.sid, seg):
                    w.write(x)
                    ctx.progress.advance(len(x))
            except BaseException:
                w.close(check=False)
                raise
            w.close()
            if not w.exact:
                ctx.warnings.append(f"{path.name}: record duration {w.duration_text} s is rounded "
                                    f"({seg.n} samples at {seg.fs:g} Hz)")
            if w.clipped:
                ctx.warnings.append(f"{path.name}: {w.clipped} samples beyond the 16-bit range were clipped")
            files.append(path)
    return files
