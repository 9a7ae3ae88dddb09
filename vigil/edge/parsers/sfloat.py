"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit) medical floats.

value = mantissa * 10**exponent; SFLOAT has a 4-bit signed exponent and 12-bit signed mantissa.
Special values (ISO/IEEE 11073-20601 §F.8): NaN 0x07FF, NRes 0x0800, +INF 0x07FE, -INF 0x0802,
reserved 0x0801 (decoded as NaN).
"""

from __future__ import annotations

import math

from vigil.errors import ParseError

SFLOAT_NAN = 0x07FF
SFLOAT_NRES = 0x0800
SFLOAT_PINF = 0x07FE
SFLOAT_NINF = 0x0802
SFLOAT_RESERVED = 0x0801

_SPECIAL: dict[int, float] = {
    SFLOAT_NAN: math.nan, SFLOAT_NRES: math.nan, SFLOAT_RESERVED: math.nan,
    SFLOAT_PINF: math.inf, SFLOAT_NINF: -math.inf,
}


def decode_sfloat(raw: int) -> float:
    """Decode a 16-bit SFLOAT; NaN/NRes/reserved give NaN, ±INF give ±inf."""
    if not 0 <= raw <= 0xFFFF:
        raise ParseError(f"SFLOAT out of range: {raw:#x}")
    if raw in _SPECIAL:
        return _SPECIAL[raw]
    mantissa = raw & 0x0FFF
    exponent = raw >> 12
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    if exponent >= 0x8:
        exponent -= 0x10
    return float(mantissa / 10 ** -exponent) if exponent < 0 else float(mantissa * 10 ** exponent)


def sfloat_at(data: bytes, offset: int) -> float:
    """Decode the little-endian SFLOAT at `offset` of `data`."""
    if offset + 2 > len(data):
        raise ParseError(f"SFLOAT at byte {offset} runs past the end ({len(data)} bytes)")
    return decode_sfloat(data[offset] | (data[offset + 1] << 8))


def encode_sfloat(value: float, exponent: int | None = None) -> bytes:
    """Encode `value` as little-endian SFLOAT bytes (NaN/±inf map to the special values)."""
    if math.isnan(value):
        raw = SFLOAT_NAN
    elif math.isinf(value):
        raw = SFLOAT_PINF if value > 0 else SFLOAT_NINF
    else:
        exps = [exponent] if exponent is not None else list(range(-8, 8))
        for e in exps:
            m = round(value / 10.0 ** e)
            if -2046 <= m <= 2045 and abs(m * 10.0 ** e - value) <= 1e-9 * max(1.0, abs(value)):
                raw = ((e & 0xF) << 12) | (m & 0x0FFF)
                break
        else:
            raise ValueError(f"{value} is not representable as SFLOAT")
    return bytes((raw & 0xFF, raw >> 8))


def decode_float32(raw: int) -> float:
    """Decode a 32-bit FLOAT (int8 exponent, int24 mantissa) with its special values."""
    special = {0x007FFFFF: math.nan, 0x00800000: math.nan, 0x00800001: math.nan,
               0x007FFFFE: math.inf, 0x00800002: -math.inf}
    if raw in special:
        return special[raw]
    mantissa = raw & 0xFFFFFF
    exponent = raw >> 24
    if mantissa >= 0x800000:
        mantissa -= 0x1000000
    if exponent >= 0x80:
        exponent -= 0x100
    return float(mantissa / 10 ** -exponent) if exponent < 0 else float(mantissa * 10 ** exponent)
