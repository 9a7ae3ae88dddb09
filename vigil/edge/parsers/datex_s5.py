"""GE/Datex-Ohmeda S/5 computer interface (AS/3, B450/B650 RS-232).

Source: KaiWU17TUM/icu_devices `code/ge_monitor.cpp` and its Datex headers (the official
"S/5 DRI computer interface specification" was not read). Frame = 0x7E + stuffed(record +
8-bit sum of the unstuffed record) + 0x7E; stuffing 7E → 7D 5E, 7D → 7D 5D.
Record = 40-byte header {r_len i16, r_nbr u8, dri_level u8, plug_id u16, r_time u32, reserved 4,
r_maintype i16, sr_desc[8] of {offset i16, type u8}} + subrecords (offsets from the end of the header).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from vigil.edge.parsers.items import Item, Numeric, Wave
from vigil.edge.parsers.stream import StreamParser
from vigil.errors import ParseError
from vigil.model import Metric

FLAG, ESC = 0x7E, 0x7D
HEADER_SIZE = 40
MAINTYPE_PHDB, MAINTYPE_WAVE, MAINTYPE_ALARM = 0, 1, 4
PHDB_DISPLAYED, PHDB_TREND10, PHDB_TREND60 = 1, 2, 3
CLASS_BASIC, CLASS_EXT1, CLASS_EXT2, CLASS_EXT3 = 1, 2, 4, 8
WAVE_ECG1, WAVE_ECG2, WAVE_ECG3 = 1, 2, 3
DISPLAYED_SIZE = 278  # time u32 + 270 data + marker + reserved + cl_drilvl_subt
SPECIAL = {-32767: "invalid", -32766: "not_updated", -32765: "discontinuity", -32764: "under_range",
           -32763: "over_range", -32762: "not_calibrated"}
ECG_UV_PER_LSB = 10.0  # ECG waveform unit 0.01 mV (per the icu_devices headers)


# ----------------------------------------------------------------------------- framing

def checksum(record: bytes) -> int:
    """8-bit sum of the unstuffed record bytes."""
    return sum(record) & 0xFF


def stuff(data: bytes) -> bytes:
    """Escape 7E and 7D."""
    return data.replace(b"\x7d", b"\x7d\x5d").replace(b"\x7e", b"\x7d\x5e")


def unstuff(data: bytes) -> bytes:
    """Undo stuffing; raise ParseError on a dangling or invalid escape."""
    out = bytearray()
    i = 0
    while i < len(data):
        b = data[i]
        if b == ESC:
            if i + 1 >= len(data) or data[i + 1] not in (0x5E, 0x5D):
                raise ParseError("invalid escape sequence in Datex frame")
            out.append(data[i + 1] ^ 0x20)
            i += 2
        else:
            out.append(b)
            i += 1
    return bytes(out)


def frame(record: bytes) -> bytes:
    """Wrap a record: 7E + stuffed(record + checksum) + 7E."""
    return bytes((FLAG,)) + stuff(record + bytes((checksum(record),))) + bytes((FLAG,))


def unframe(body: bytes) -> bytes:
    """Given the bytes between two flags, unstuff and verify the checksum; return the record."""
    raw = unstuff(body)
    if len(raw) < HEADER_SIZE + 1:
        raise ParseError(f"Datex frame too short ({len(raw)} bytes)")
    record, chk = raw[:-1], raw[-1]
    if checksum(record) != chk:
        raise ParseError(f"Datex checksum mismatch: {checksum(record):#04x} != {chk:#04x}")
    return record


# ----------------------------------------------------------------------------- header

@dataclass(frozen=True, slots=True)
class Header:
    """The 40-byte record header."""

    r_len: int
    r_nbr: int
    dri_level: int
    plug_id: int
    r_time: int
    maintype: int
    subrecords: tuple[tuple[int, int], ...]  # (offset, type) until type 0xFF


_HDR = struct.Struct("<hBBHI4sh")


def build_header(r_len: int, maintype: int, subrecords: list[tuple[int, int]], r_time: int = 0,
                 r_nbr: int = 0, dri_level: int = 0, plug_id: int = 0) -> bytes:
    """Build a 40-byte header; subrecord list is terminated with type 0xFF when shorter than 8."""
    out = bytearray(_HDR.pack(r_len, r_nbr, dri_level, plug_id, r_time, b"\0" * 4, maintype))
    descs = list(subrecords)
    if len(descs) < 8:
        descs.append((0, 0xFF))
    for off, typ in descs[:8]:
        out += struct.pack("<hB", off, typ)
    out += b"\0" * (HEADER_SIZE - len(out))
    return bytes(out)


def parse_header(record: bytes) -> Header:
    """Decode the header of a record."""
    if len(record) < HEADER_SIZE:
        raise ParseError(f"Datex record shorter than its header ({len(record)} bytes)")
    r_len, r_nbr, dri, plug, r_time, _res, maintype = _HDR.unpack_from(record, 0)
    subs: list[tuple[int, int]] = []
    for k in range(8):
        off, typ = struct.unpack_from("<hB", record, 16 + 3 * k)
        if typ == 0xFF:
            break
        subs.append((off, typ))
    return Header(r_len, r_nbr, dri, plug, r_time, maintype, tuple(subs))


# ----------------------------------------------------------------------------- requests

def numerics_request(interval_s: int = 5, kind: int = PHDB_DISPLAYED, classes: int = CLASS_BASIC) -> bytes:
    """Record asking for displayed values (or trends) every `interval_s` (r_len 49)."""
    body = struct.pack("<BhIh", kind, interval_s, classes, 0)
    return build_header(HEADER_SIZE + len(body), MAINTYPE_PHDB, [(0, 0)]) + body


def waveform_request(types: list[int] | None = None, start: bool = True) -> bytes:
    """Record starting (or stopping) waveform transmission; default ECG1 only."""
    wave_types = list(types or [WAVE_ECG1])[:8]
    if len(wave_types) < 8:
        wave_types.append(0xFF)
    wave_types += [0] * (8 - len(wave_types))
    body = struct.pack("<hh8B10h", 0 if start else 1, 0, *wave_types, *([0] * 10))
    return build_header(HEADER_SIZE + len(body), MAINTYPE_WAVE, [(0, 0)]) + body


# ----------------------------------------------------------------------------- displayed values

# group offsets inside the 270-byte basic data; each group = status u32 + label u16 + int16 values
GROUPS: dict[str, tuple[int, tuple[str, ...]]] = {
    "ecg": (0, ("hr", "st1", "st2", "st3", "imp_rr")),
    "p1": (16, ("sys", "dia", "mean", "hr")), "p2": (30, ("sys", "dia", "mean", "hr")),
    "p3": (44, ("sys", "dia", "mean", "hr")), "p4": (58, ("sys", "dia", "mean", "hr")),
    "nibp": (72, ("sys", "dia", "mean", "hr")),
    "t1": (86, ("temp",)), "t2": (94, ("temp",)), "t3": (102, ("temp",)), "t4": (110, ("temp",)),
    "spo2": (118, ("spo2", "pr", "ir_amp", "svo2")),
    "co2": (132, ("et", "fi", "rr", "amb_press")),
}
# fields that are stored ×100 (pressures, temperatures, SpO2, gas)
_SCALED = {("p1", "sys"), ("p1", "dia"), ("p1", "mean"), ("p2", "sys"), ("p2", "dia"), ("p2", "mean"),
           ("p3", "sys"), ("p3", "dia"), ("p3", "mean"), ("p4", "sys"), ("p4", "dia"), ("p4", "mean"),
           ("nibp", "sys"), ("nibp", "dia"), ("nibp", "mean"), ("t1", "temp"), ("t2", "temp"),
           ("t3", "temp"), ("t4", "temp"), ("spo2", "spo2"), ("spo2", "svo2"), ("co2", "et"),
           ("co2", "fi"), ("co2", "amb_press")}


@dataclass(frozen=True, slots=True)
class GroupValues:
    """One parameter group: existence/activity bits, label, values (NaN + reason when special)."""

    exists: bool
    active: bool
    label: int
    values: dict[str, float]
    special: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DisplayedValues:
    """A decoded displayed-values (basic class) subrecord."""

    time: int
    groups: dict[str, GroupValues]


def parse_displayed(sub: bytes) -> DisplayedValues:
    """Decode a displayed-values subrecord (time u32 + 270-byte basic data...)."""
    if len(sub) < 4 + 270:
        raise ParseError(f"displayed-values subrecord too short ({len(sub)} bytes)")
    time = struct.unpack_from("<I", sub, 0)[0]
    groups: dict[str, GroupValues] = {}
    for name, (off, fields) in GROUPS.items():
        status, label = struct.unpack_from("<IH", sub, 4 + off)
        raw = struct.unpack_from(f"<{len(fields)}h", sub, 4 + off + 6)
        values: dict[str, float] = {}
        special: dict[str, str] = {}
        for fname, v in zip(fields, raw, strict=True):
            if v <= -32762:
                values[fname] = math.nan
                special[fname] = SPECIAL.get(v, "invalid")
            else:
                values[fname] = v / 100.0 if (name, fname) in _SCALED else float(v)
        groups[name] = GroupValues(bool(status & 1), bool(status & 2), label, values, special)
    return DisplayedValues(time, groups)


def build_displayed(values: dict[str, dict[str, float | None]], time: int = 0) -> bytes:
    """Encode a displayed-values subrecord (emulators/tests); None encodes as -32767 (invalid)."""
    data = bytearray(270)
    for name, fvals in values.items():
        off, fields = GROUPS[name]
        struct.pack_into("<IH", data, off, 0x3, 0)
        for k, fname in enumerate(fields):
            v = fvals.get(fname)
            raw = -32767 if v is None else round(v * 100 if (name, fname) in _SCALED else v)
            struct.pack_into("<h", data, off + 6 + 2 * k, raw)
    return struct.pack("<I", time) + bytes(data) + b"\0\0\0\0"


def numerics_record(values: dict[str, dict[str, float | None]], time: int = 0, r_nbr: int = 0) -> bytes:
    """A full PHDB record carrying one displayed-values subrecord (emulators/tests)."""
    sub = build_displayed(values, time)
    return build_header(HEADER_SIZE + len(sub), MAINTYPE_PHDB, [(0, PHDB_DISPLAYED)], time, r_nbr) + sub


def _displayed_items(dv: DisplayedValues) -> list[Item]:
    out: list[Item] = []

    def add(metric: Metric, group: str, fname: str, flags: tuple[str, ...] = ()) -> None:
        g = dv.groups[group]
        if not g.exists:
            return
        reason = g.special.get(fname)
        out.append(Numeric(metric, g.values[fname], flags + ((reason,) if reason else ())))

    add(Metric.HR, "ecg", "hr")
    add(Metric.SBP, "nibp", "sys", ("nibp",))
    add(Metric.DBP, "nibp", "dia", ("nibp",))
    add(Metric.MAP, "nibp", "mean", ("nibp",))
    if dv.groups["p1"].exists and dv.groups["p1"].active:
        add(Metric.SBP, "p1", "sys", ("invasive",))
        add(Metric.DBP, "p1", "dia", ("invasive",))
        add(Metric.MAP, "p1", "mean", ("invasive",))
    add(Metric.SPO2, "spo2", "spo2")
    add(Metric.PULSE_RATE, "spo2", "pr")
    return out


# ----------------------------------------------------------------------------- waveforms

@dataclass(frozen=True, slots=True)
class WaveformSubrecord:
    """One waveform subrecord: {act_len i16, status u16, label u16} + act_len int16 samples."""

    wave_type: int
    status: int
    samples: tuple[int, ...]


def parse_waveforms(record: bytes, header: Header) -> list[WaveformSubrecord]:
    """Decode every waveform subrecord of a WAVE record."""
    out = []
    for off, typ in header.subrecords:
        start = HEADER_SIZE + off
        if off < 0 or start + 6 > len(record):
            raise ParseError(f"waveform subrecord offset {off} outside the record")
        act_len, status, _label = struct.unpack_from("<hHH", record, start)
        if act_len < 0 or start + 6 + 2 * act_len > len(record):
            raise ParseError(f"waveform subrecord length {act_len} outside the record")
        out.append(WaveformSubrecord(typ, status, struct.unpack_from(f"<{act_len}h", record, start + 6)))
    return out


def waveform_record(subs: list[tuple[int, list[int]]], r_nbr: int = 0) -> bytes:
    """A WAVE record with one subrecord per (type, samples) (emulators/tests)."""
    body = bytearray()
    descs = []
    for typ, samples in subs:
        descs.append((len(body), typ))
        body += struct.pack(f"<hHH{len(samples)}h", len(samples), 0, 0, *samples)
    return build_header(HEADER_SIZE + len(body), MAINTYPE_WAVE, descs, r_nbr=r_nbr) + bytes(body)


def parse_record(record: bytes) -> list[Item]:
    """Decode one unstuffed, checksum-verified record into items."""
    header = parse_header(record)
    if header.r_len != len(record):
        raise ParseError(f"Datex r_len {header.r_len} != record length {len(record)}")
    out: list[Item] = []
    if header.maintype == MAINTYPE_PHDB:
        for off, typ in header.subrecords:
            if typ in (PHDB_DISPLAYED, PHDB_TREND10, PHDB_TREND60):
                start = HEADER_SIZE + off
                if off < 0 or start + 274 > len(record):
                    raise ParseError(f"PHDB subrecord offset {off} outside the record")
                if typ == PHDB_DISPLAYED:
                    out.extend(_displayed_items(parse_displayed(record[start:start + DISPLAYED_SIZE])))
    elif header.maintype == MAINTYPE_WAVE:
        for sub in parse_waveforms(record, header):
            if sub.wave_type in (WAVE_ECG1, WAVE_ECG2, WAVE_ECG3):
                name = "ecg" if sub.wave_type == WAVE_ECG1 else f"ecg{sub.wave_type}"
                # special values (≤ -32762) mark invalid samples; clamp them to 0 µV rather than spike
                out.append(Wave(name, tuple(0 if v <= -32762 else int(v * ECG_UV_PER_LSB) for v in sub.samples)))
    return out


class DatexStream(StreamParser):
    """Stream parser `datex_s5`: finds 7E-delimited frames, verifies checksum, decodes records."""

    name = "datex_s5"

    def _drain(self) -> list[Item]:
        buf = self.buffer
        out: list[Item] = []
        while True:
            start = buf.find(FLAG)
            if start < 0:
                self.skipped_bytes += len(buf)
                buf.clear()
                break
            if start:
                self.skipped_bytes += start
                del buf[:start]
            end = buf.find(FLAG, 1)
            if end < 0:
                break
            body = bytes(buf[1:end])
            if not body:  # two flags back to back: the second opens the next frame
                del buf[:1]
                continue
            del buf[:end]  # keep the closing flag: it may also open the next frame
            try:
                out.extend(parse_record(unframe(body)))
                self.frames += 1
            except ParseError as exc:
                self._corrupt(str(exc))
        return out
