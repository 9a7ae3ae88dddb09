"""Battery Level (GATT 0x2A19): one u8 percentage 0..100."""

from __future__ import annotations

from vigil.edge.parsers.items import Item, Numeric
from vigil.errors import ParseError
from vigil.model import Metric


def parse_battery(data: bytes) -> int:
    """Decode a Battery Level value (percent)."""
    if len(data) != 1:
        raise ParseError(f"battery level is 1 byte, got {len(data)}")
    if data[0] > 100:
        raise ParseError(f"battery level {data[0]} is above 100 %")
    return data[0]


def decode(data: bytes) -> list[Item]:
    """Parser `battery`: one BATTERY reading."""
    return [Numeric(Metric.BATTERY, float(parse_battery(data)))]
