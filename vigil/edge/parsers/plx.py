"""Pulse Oximeter Service: PLX Spot-check (0x2A5E) and Continuous (0x2A5F) measurements.

Layouts from the Bluetooth SIG Pulse Oximeter Service 1.0 / GATT Specification Supplement.
Spot-check: flags u8, SpO2 SFLOAT, PR SFLOAT, [timestamp 7 (bit0)], [status u16 (bit1)],
[device & sensor status u24 (bit2)], [pulse amplitude index SFLOAT (bit3)]; bit4 = clock not set.
Continuous: flags u8, SpO2/PR normal, [fast SpO2/PR (bit0)], [slow SpO2/PR (bit1)],
[status u16 (bit2)], [device & sensor status u24 (bit3)], [PAI (bit4)].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from vigil.edge.parsers.blood_pressure import parse_timestamp
from vigil.edge.parsers.items import Condition, Item, Numeric
from vigil.edge.parsers.sfloat import sfloat_at
from vigil.errors import ParseError
from vigil.model import Metric, TechnicalKind

MEASUREMENT_STATUS: dict[int, str] = {
    5: "ongoing", 6: "early_estimate", 7: "validated", 8: "fully_qualified", 9: "from_storage",
    10: "demo", 11: "testing", 12: "calibrating", 13: "unavailable", 14: "questionable", 15: "invalid"}
DEVICE_STATUS: dict[int, str] = {
    0: "extended_display_update", 1: "equipment_fault", 2: "processing_irregularity", 3: "inadequate_signal",
    4: "poor_signal", 5: "low_perfusion", 6: "erratic_signal", 7: "non_pulsatile", 8: "questionable_pulse",
    9: "signal_analysis_ongoing", 10: "sensor_interference", 11: "sensor_unconnected", 12: "unknown_sensor",
    13: "sensor_displaced", 14: "sensor_malfunction", 15: "sensor_disconnected"}
_PROBE_OFF = {"sensor_unconnected", "sensor_displaced", "sensor_disconnected"}
_INVALID = {"unavailable", "invalid"}


@dataclass(frozen=True, slots=True)
class PlxMeasurement:
    """A decoded PLX spot-check or continuous measurement."""

    spo2: float
    pulse_rate: float
    timestamp: datetime | None = None
    status: int | None = None
    device_status: int | None = None
    pai: float | None = None
    clock_not_set: bool = False
    fast: tuple[float, float] | None = None  # continuous only: (SpO2, PR)
    slow: tuple[float, float] | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        """Names of the set status and device/sensor bits."""
        out = [n for b, n in MEASUREMENT_STATUS.items() if self.status is not None and self.status >> b & 1]
        out += [n for b, n in DEVICE_STATUS.items() if self.device_status is not None and self.device_status >> b & 1]
        return tuple(out)


def _u16(data: bytes, pos: int, what: str) -> int:
    if pos + 2 > len(data):
        raise ParseError(f"PLX {what} is truncated")
    return int.from_bytes(data[pos:pos + 2], "little")


def _u24(data: bytes, pos: int) -> int:
    if pos + 3 > len(data):
        raise ParseError("PLX device/sensor status is truncated")
    return int.from_bytes(data[pos:pos + 3], "little")


def parse_spot_check(data: bytes) -> PlxMeasurement:
    """Decode a PLX Spot-check Measurement (0x2A5E)."""
    if len(data) < 5:
        raise ParseError(f"PLX spot-check needs at least 5 bytes, got {len(data)}")
    flags = data[0]
    if flags & 0xE0:
        raise ParseError(f"PLX spot-check flags use reserved bits: {flags:#04x}")
    spo2, pr = sfloat_at(data, 1), sfloat_at(data, 3)
    pos = 5
    ts = status = dev = pai = None
    if flags & 0x01:
        ts = parse_timestamp(data, pos)
        pos += 7
    if flags & 0x02:
        status = _u16(data, pos, "measurement status")
        pos += 2
    if flags & 0x04:
        dev = _u24(data, pos)
        pos += 3
    if flags & 0x08:
        pai = sfloat_at(data, pos)
        pos += 2
    if pos != len(data):
        raise ParseError(f"PLX spot-check has {len(data) - pos} unexpected trailing bytes")
    return PlxMeasurement(spo2, pr, ts, status, dev, pai, bool(flags & 0x10))


def parse_continuous(data: bytes) -> PlxMeasurement:
    """Decode a PLX Continuous Measurement (0x2A5F)."""
    if len(data) < 5:
        raise ParseError(f"PLX continuous needs at least 5 bytes, got {len(data)}")
    flags = data[0]
    if flags & 0xE0:
        raise ParseError(f"PLX continuous flags use reserved bits: {flags:#04x}")
    spo2, pr = sfloat_at(data, 1), sfloat_at(data, 3)
    pos = 5
    fast = slow = None
    status = dev = pai = None
    if flags & 0x01:
        fast = (sfloat_at(data, pos), sfloat_at(data, pos + 2))
        pos += 4
    if flags & 0x02:
        slow = (sfloat_at(data, pos), sfloat_at(data, pos + 2))
        pos += 4
    if flags & 0x04:
        status = _u16(data, pos, "measurement status")
        pos += 2
    if flags & 0x08:
        dev = _u24(data, pos)
        pos += 3
    if flags & 0x10:
        pai = sfloat_at(data, pos)
        pos += 2
    if pos != len(data):
        raise ParseError(f"PLX continuous has {len(data) - pos} unexpected trailing bytes")
    return PlxMeasurement(spo2, pr, None, status, dev, pai, False, fast, slow)


def _items(m: PlxMeasurement) -> list[Item]:
    flags = m.flags
    bad = bool(_INVALID & set(flags))
    out: list[Item] = []
    if m.device_status is not None:
        off = bool(_PROBE_OFF & set(flags))
        out.append(Condition(TechnicalKind.LEAD_OFF, off, "oximeter sensor off" if off else ""))

    def clean(v: float) -> float:
        return math.nan if bad or math.isinf(v) else v

    out.append(Numeric(Metric.SPO2, clean(m.spo2), flags))
    out.append(Numeric(Metric.PULSE_RATE, clean(m.pulse_rate), flags))
    if m.pai is not None and math.isfinite(m.pai):
        out.append(Numeric(Metric.PI, m.pai, flags))
    return out


def decode_spot_check(data: bytes) -> list[Item]:
    """Parser `plx_spot_check`: SpO2, pulse rate, PAI."""
    return _items(parse_spot_check(data))


def decode_continuous(data: bytes) -> list[Item]:
    """Parser `plx_continuous`: SpO2, pulse rate, PAI."""
    return _items(parse_continuous(data))
