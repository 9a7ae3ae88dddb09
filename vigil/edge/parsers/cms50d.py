"""Contec CMS50D+ pulse oximeter serial protocols.

Classic firmware (src: atbrask/CMS50Dplus): 5-byte packets at 60/s, only byte 0 has bit7 set.
  b0: 0-3 signal strength, 4 finger out / searching too long, 5 SpO2 dropping, 6 beep;
  b1: pleth; b2: 0-3 bar graph, 4 probe error, 5 searching, 6 PR bit7; b3: PR low 7 bits; b4: SpO2.
Firmware 4.6+ (src: gagistech/bedsidemon contec_cms50d_plus.cpp): commands `7D 81 <cmd> 80×6`
(A1 start, A2 stop; re-send start every ~15 s). Live packet: type 0x01 (bit7 clear), high-bits byte
(bit i = MSB of data byte i), 7 data bytes with bit7 forced on:
  d0: 0-3 signal, 6 beep, 7 finger out; d1: pleth, bit7 searching; d2: 0-3 bar, bit4 PI invalid;
  d3: PR (0xFF invalid); d4: SpO2 (>100 invalid); d5-6: PI u16 LE (scale not verified).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vigil.edge.parsers.items import Condition, Item, Numeric, Wave
from vigil.edge.parsers.stream import StreamParser
from vigil.errors import ParseError
from vigil.model import Metric, TechnicalKind

CMD_START = 0xA1
CMD_STOP = 0xA2
NUMERIC_EVERY = 60  # packets between repeated numerics (1 Hz at 60 packets/s)


def command(cmd: int) -> bytes:
    """Build a 4.6+ command `7D 81 <cmd> 80 80 80 80 80 80`."""
    return bytes((0x7D, 0x81, cmd)) + b"\x80" * 6


START = command(CMD_START)
STOP = command(CMD_STOP)


@dataclass(frozen=True, slots=True)
class OxiSample:
    """One decoded oximeter packet."""

    pleth: int
    pulse_rate: float  # NaN when invalid
    spo2: float  # NaN when invalid
    signal: int
    bar: int
    beep: bool
    finger_out: bool
    searching: bool
    probe_error: bool = False
    spo2_dropping: bool = False
    pi: float | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        """Status flag names."""
        names = ("finger_out", "searching", "probe_error", "spo2_dropping")
        return tuple(n for n in names if getattr(self, n))


def parse_classic(packet: bytes) -> OxiSample:
    """Decode one classic 5-byte packet."""
    if len(packet) != 5:
        raise ParseError(f"classic CMS50 packet is 5 bytes, got {len(packet)}")
    if not packet[0] & 0x80 or any(b & 0x80 for b in packet[1:]):
        raise ParseError(f"classic CMS50 packet sync bits wrong: {packet.hex(' ')}")
    b0, b1, b2, b3, b4 = packet
    pr = b3 | ((b2 & 0x40) << 1)
    finger_out, searching = bool(b0 & 0x10), bool(b2 & 0x20)
    bad = finger_out or searching
    return OxiSample(
        pleth=b1, pulse_rate=math.nan if bad or pr in (0, 0xFF) else float(pr),
        spo2=math.nan if bad or b4 == 0 or b4 > 100 else float(b4), signal=b0 & 0x0F, bar=b2 & 0x0F,
        beep=bool(b0 & 0x40), finger_out=finger_out, searching=searching, probe_error=bool(b2 & 0x10),
        spo2_dropping=bool(b0 & 0x20))


def parse_v46(packet: bytes) -> OxiSample:
    """Decode one 9-byte 4.6+ live packet (type 0x01)."""
    if len(packet) != 9:
        raise ParseError(f"CMS50 4.6 live packet is 9 bytes, got {len(packet)}")
    if packet[0] != 0x01:
        raise ParseError(f"not a CMS50 4.6 live packet (type {packet[0]:#04x})")
    if any(not b & 0x80 for b in packet[1:]):
        raise ParseError(f"CMS50 4.6 packet has a data byte with bit7 clear: {packet.hex(' ')}")
    high = packet[1]
    d = [(packet[2 + i] & 0x7F) | (0x80 if high >> i & 1 else 0) for i in range(7)]
    finger_out, searching = bool(d[0] & 0x80), bool(d[1] & 0x80)
    bad = finger_out or searching
    pi_raw = d[5] | (d[6] << 8)
    return OxiSample(
        pleth=d[1] & 0x7F, pulse_rate=math.nan if bad or d[3] in (0, 0xFF) else float(d[3]),
        spo2=math.nan if bad or d[4] == 0 or d[4] > 100 else float(d[4]), signal=d[0] & 0x0F, bar=d[2] & 0x0F,
        beep=bool(d[0] & 0x40), finger_out=finger_out, searching=searching,
        pi=None if d[2] & 0x10 else pi_raw / 100.0)


def encode_classic(s: OxiSample) -> bytes:
    """Encode a classic packet (for emulators/tests); NaN values encode as 0 / 127."""
    pr = 0 if math.isnan(s.pulse_rate) else int(s.pulse_rate)
    spo2 = 127 if math.isnan(s.spo2) else int(s.spo2)
    b0 = 0x80 | (s.signal & 0x0F) | (0x10 if s.finger_out else 0) | (0x20 if s.spo2_dropping else 0) | (0x40 if s.beep else 0)
    b2 = (s.bar & 0x0F) | (0x10 if s.probe_error else 0) | (0x20 if s.searching else 0) | ((pr >> 1) & 0x40)
    return bytes((b0, s.pleth & 0x7F, b2, pr & 0x7F, spo2 & 0x7F))


def encode_v46(s: OxiSample) -> bytes:
    """Encode a 4.6+ live packet (for emulators/tests)."""
    pr = 0xFF if math.isnan(s.pulse_rate) else int(s.pulse_rate)
    spo2 = 0x7F if math.isnan(s.spo2) else int(s.spo2)
    pi = 0 if s.pi is None else round(s.pi * 100)
    d = [(s.signal & 0x0F) | (0x40 if s.beep else 0) | (0x80 if s.finger_out else 0),
         (s.pleth & 0x7F) | (0x80 if s.searching else 0), (s.bar & 0x0F) | (0x10 if s.pi is None else 0),
         pr, spo2, pi & 0xFF, (pi >> 8) & 0xFF]
    high = 0x80 | sum(1 << i for i, v in enumerate(d) if v & 0x80)
    return bytes([0x01, high] + [v | 0x80 for v in d])


class _OxiStream(StreamParser):
    """Shared output logic: pleth every packet, numerics on change or once per NUMERIC_EVERY packets."""

    def __init__(self) -> None:
        super().__init__()
        self._last: tuple[float, float, tuple[str, ...]] | None = None
        self._since = 0
        self._probe_off: bool | None = None

    def _emit(self, samples: list[OxiSample]) -> list[Item]:
        if not samples:
            return []
        out: list[Item] = [Wave("pleth", tuple(s.pleth for s in samples))]
        for s in samples:
            off = s.finger_out or s.probe_error
            if off != self._probe_off:
                self._probe_off = off
                out.append(Condition(TechnicalKind.LEAD_OFF, off, "finger out" if off else ""))
            key = (s.pulse_rate, s.spo2, s.flags)
            self._since += 1
            same = self._last is not None and all(
                (a == b) or (isinstance(a, float) and math.isnan(a) and math.isnan(b))  # type: ignore[arg-type]
                for a, b in zip(key, self._last, strict=True))
            if not same or self._since >= NUMERIC_EVERY:
                self._last, self._since = key, 0
                out.append(Numeric(Metric.SPO2, s.spo2, s.flags))
                out.append(Numeric(Metric.PULSE_RATE, s.pulse_rate, s.flags))
                if s.pi is not None:
                    out.append(Numeric(Metric.PI, s.pi, s.flags))
        return out


class ClassicStream(_OxiStream):
    """Stream parser `cms50d_classic`: syncs on the bit7 byte, drops malformed packets."""

    name = "cms50d_classic"

    def _drain(self) -> list[Item]:
        buf = self.buffer
        samples: list[OxiSample] = []
        i = 0
        n = len(buf)
        while i < n:
            if not buf[i] & 0x80:
                i += 1
                self.skipped_bytes += 1
                continue
            if n - i < 5:
                break
            bad = next((k for k in range(1, 5) if buf[i + k] & 0x80), None)
            if bad is not None:
                self._corrupt("sync byte inside a packet")
                i += bad
                continue
            samples.append(parse_classic(bytes(buf[i:i + 5])))
            self.frames += 1
            i += 5
        del buf[:i]
        return self._emit(samples)


class V46Stream(_OxiStream):
    """Stream parser `cms50d_v46`: packets start at a byte with bit7 clear; unknown types are skipped."""

    name = "cms50d_v46"

    def __init__(self) -> None:
        super().__init__()
        self.unknown = 0

    def _drain(self) -> list[Item]:
        buf = self.buffer
        samples: list[OxiSample] = []
        i = 0
        n = len(buf)
        while i < n:
            if buf[i] & 0x80:
                i += 1
                self.skipped_bytes += 1
                continue
            # find the extent of this packet: up to the next byte with bit7 clear
            j = i + 1
            while j < n and buf[j] & 0x80 and j - i < 9:
                j += 1
            if buf[i] != 0x01:
                if j >= n and j - i < 9:
                    break  # may still be growing
                self.unknown += 1
                i = j
                continue
            if j - i < 9:
                if j >= n:
                    break
                self._corrupt("short live packet")
                i = j
                continue
            samples.append(parse_v46(bytes(buf[i:i + 9])))
            self.frames += 1
            i += 9
        del buf[:i]
        return self._emit(samples)
