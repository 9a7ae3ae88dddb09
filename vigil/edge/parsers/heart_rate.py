"""Heart Rate Measurement (GATT 0x2A37).

Layout (Bluetooth SIG Heart Rate Service 1.0 §3.1): flags u8; HR u8 or u16 (flags bit0);
energy expended u16 kJ (bit3); RR intervals u16 in 1/1024 s (bit4) to the end of the packet.
Flags bit1 = sensor contact detected, bit2 = contact detection supported.
"""

from __future__ import annotations

from dataclasses import dataclass

from vigil.edge.parsers.items import Condition, Item, Numeric
from vigil.errors import ParseError
from vigil.model import Metric, TechnicalKind


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """A decoded 0x2A37 notification."""

    heart_rate: int  # bpm
    contact_supported: bool
    contact: bool | None  # None when the sensor cannot tell
    energy_kj: int | None
    rr_1024: tuple[int, ...]  # RR intervals in 1/1024 s

    @property
    def rr_ms(self) -> tuple[float, ...]:
        """RR intervals in milliseconds."""
        return tuple(v * 1000.0 / 1024.0 for v in self.rr_1024)


def parse_hrm(data: bytes) -> HeartRateMeasurement:
    """Decode one Heart Rate Measurement value."""
    if len(data) < 2:
        raise ParseError(f"HRM needs at least 2 bytes, got {len(data)}")
    flags = data[0]
    if flags & 0xE0:
        raise ParseError(f"HRM flags use reserved bits: {flags:#04x}")
    pos = 1
    if flags & 0x01:
        if len(data) < 3:
            raise ParseError("HRM with u16 heart rate is truncated")
        hr = int.from_bytes(data[1:3], "little")
        pos = 3
    else:
        hr = data[1]
        pos = 2
    energy = None
    if flags & 0x08:
        if len(data) < pos + 2:
            raise ParseError("HRM energy expended field is truncated")
        energy = int.from_bytes(data[pos:pos + 2], "little")
        pos += 2
    rr: tuple[int, ...] = ()
    if flags & 0x10:
        rest = data[pos:]
        if len(rest) % 2:
            raise ParseError(f"HRM RR list has an odd number of bytes ({len(rest)})")
        rr = tuple(int.from_bytes(rest[i:i + 2], "little") for i in range(0, len(rest), 2))
    elif len(data) > pos:
        raise ParseError(f"HRM has {len(data) - pos} unexpected trailing bytes")
    supported = bool(flags & 0x04)
    return HeartRateMeasurement(hr, supported, bool(flags & 0x02) if supported else None, energy, rr)


def decode(data: bytes) -> list[Item]:
    """Parser `heart_rate`: HR, one RR reading per interval, and lead-off when contact is lost."""
    m = parse_hrm(data)
    out: list[Item] = []
    if m.contact is not None:
        out.append(Condition(TechnicalKind.LEAD_OFF, not m.contact, "no skin contact"))
    flags = ("no_contact",) if m.contact is False else ()
    out.append(Numeric(Metric.HR, float(m.heart_rate) if m.heart_rate else float("nan"), flags))
    out.extend(Numeric(Metric.RR, v, flags) for v in m.rr_ms)
    return out
