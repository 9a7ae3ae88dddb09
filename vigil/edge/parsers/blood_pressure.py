"""Blood Pressure Measurement (0x2A35) and Intermediate Cuff Pressure (0x2A36).

Layout (Bluetooth SIG Blood Pressure Service 1.1 / GATT Specification Supplement §3.31):
flags u8; systolic, diastolic, MAP as SFLOAT; then in flag order: timestamp (bit1, 7 bytes),
pulse rate SFLOAT (bit2), user id u8 (bit3, 0xFF unknown), measurement status u16 (bit4).
Flags bit0 = kPa (else mmHg). ICP reuses the layout with systolic = current cuff pressure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from vigil.edge.parsers.items import Item, Numeric
from vigil.edge.parsers.sfloat import sfloat_at
from vigil.errors import ParseError
from vigil.model import Metric

KPA_TO_MMHG = 7.50061683

STATUS_BITS: dict[int, str] = {0: "body_movement", 1: "cuff_loose", 2: "irregular_pulse", 5: "improper_position"}


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    """A decoded 0x2A35/0x2A36 value; pressures in the unit of `unit`."""

    systolic: float
    diastolic: float
    mean: float
    unit: str  # "mmHg" | "kPa"
    timestamp: datetime | None
    pulse_rate: float | None
    user_id: int | None  # None when absent or 0xFF (unknown user)
    status: int | None
    status_flags: tuple[str, ...]

    def mmhg(self, value: float) -> float:
        """Convert one of this measurement's pressures to mmHg."""
        return value * KPA_TO_MMHG if self.unit == "kPa" else value


def parse_timestamp(data: bytes, offset: int) -> datetime | None:
    """Decode a 7-byte GATT Date Time (year 0 / month 0 / day 0 mean unknown → None)."""
    if offset + 7 > len(data):
        raise ParseError(f"timestamp at byte {offset} is truncated")
    year = int.from_bytes(data[offset:offset + 2], "little")
    month, day, hour, minute, second = data[offset + 2:offset + 7]
    if year == 0 or month == 0 or day == 0:
        return None
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise ParseError(f"invalid timestamp: {exc}") from None


def status_flags(status: int) -> tuple[str, ...]:
    """Names of the set bits of a BP measurement status."""
    out = [name for bit, name in STATUS_BITS.items() if status & (1 << bit)]
    pr = (status >> 3) & 0x3
    if pr == 1:
        out.append("pulse_above_range")
    elif pr == 2:
        out.append("pulse_below_range")
    return tuple(out)


def parse_bpm(data: bytes) -> BloodPressureMeasurement:
    """Decode a Blood Pressure Measurement or Intermediate Cuff Pressure value."""
    if len(data) < 7:
        raise ParseError(f"BP measurement needs at least 7 bytes, got {len(data)}")
    flags = data[0]
    if flags & 0xE0:
        raise ParseError(f"BP flags use reserved bits: {flags:#04x}")
    sys_, dia, mean = sfloat_at(data, 1), sfloat_at(data, 3), sfloat_at(data, 5)
    pos = 7
    ts = None
    if flags & 0x02:
        ts = parse_timestamp(data, pos)
        pos += 7
    pulse = None
    if flags & 0x04:
        pulse = sfloat_at(data, pos)
        pos += 2
    user = None
    if flags & 0x08:
        if pos >= len(data):
            raise ParseError("BP user id is truncated")
        user = None if data[pos] == 0xFF else data[pos]
        pos += 1
    status = None
    if flags & 0x10:
        if pos + 2 > len(data):
            raise ParseError("BP status is truncated")
        status = int.from_bytes(data[pos:pos + 2], "little")
        pos += 2
    if pos != len(data):
        raise ParseError(f"BP measurement has {len(data) - pos} unexpected trailing bytes")
    return BloodPressureMeasurement(sys_, dia, mean, "kPa" if flags & 0x01 else "mmHg", ts, pulse, user,
                                    status, status_flags(status) if status is not None else ())


def decode(data: bytes) -> list[Item]:
    """Parser `blood_pressure` (0x2A35): SBP, DBP, MAP in mmHg and the pulse rate."""
    m = parse_bpm(data)
    out: list[Item] = [Numeric(Metric.SBP, m.mmhg(m.systolic), m.status_flags),
                       Numeric(Metric.DBP, m.mmhg(m.diastolic), m.status_flags),
                       Numeric(Metric.MAP, m.mmhg(m.mean), m.status_flags)]
    if m.pulse_rate is not None:
        out.append(Numeric(Metric.PULSE_RATE, m.pulse_rate, m.status_flags))
    return out


def decode_icp(data: bytes) -> list[Item]:
    """Parser `cuff_pressure` (0x2A36): the current cuff pressure in mmHg."""
    m = parse_bpm(data)
    value = m.mmhg(m.systolic)
    return [Numeric(Metric.CUFF_PRESSURE, value if not math.isinf(value) else math.nan, m.status_flags)]
