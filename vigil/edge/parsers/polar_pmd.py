"""Polar Measurement Data (PMD) service: commands, control-point responses and ECG data frames.

Sources: polarofficial/polar-ble-sdk technical documentation (TimeSystemExplained.md, EcgData.kt),
bleakheart 0.2.0, polar-python 1.1.1 `parsers/compression.py` (delta frames).
Frame: [0] measurement type, [1..8] u64 LE ns since 2000-01-01T00:00Z of the LAST sample,
[9] frame type (bit7 = delta compressed), then samples. H10 ECG = frame type 0: 3-byte LE signed µV.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from vigil.edge.parsers.items import Item, Wave
from vigil.errors import ParseError

PMD_SERVICE = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
PMD_CONTROL = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"

EPOCH_2000_NS = 946_684_800_000_000_000  # Unix ns of 2000-01-01T00:00:00Z

MEASUREMENT_TYPES = {0: "ecg", 1: "ppg", 2: "acc", 3: "ppi", 5: "gyro", 6: "mag"}
OP_GET, OP_START, OP_STOP = 0x01, 0x02, 0x03
SETTING_RATE, SETTING_RESOLUTION, SETTING_RANGE, SETTING_RANGE_MILLI, SETTING_CHANNELS, SETTING_FACTOR = range(6)
STATUS_TEXT = {
    0: "success", 1: "invalid op code", 2: "invalid measurement type", 3: "not supported",
    4: "invalid length", 5: "invalid parameter", 6: "already in state", 7: "invalid resolution",
    8: "invalid sample rate", 9: "invalid range", 10: "invalid MTU", 11: "invalid number of channels",
    12: "invalid state", 13: "device in charger"}


def start_command(measurement: int = 0, rate: int = 130, resolution: int = 14,
                  range_: int | None = None, channels: int | None = None) -> bytes:
    """Build the START request (`02 <type> <TLV settings>`); ECG 130 Hz 14 bit = 02 00 00 01 82 00 01 01 0E 00."""
    if measurement not in MEASUREMENT_TYPES:
        raise ValueError(f"unknown PMD measurement type {measurement}")
    out = bytearray((OP_START, measurement))
    out += bytes((SETTING_RATE, 1)) + rate.to_bytes(2, "little")
    out += bytes((SETTING_RESOLUTION, 1)) + resolution.to_bytes(2, "little")
    if range_ is not None:
        out += bytes((SETTING_RANGE, 1)) + range_.to_bytes(2, "little")
    if channels is not None:
        out += bytes((SETTING_CHANNELS, 1, channels))
    return bytes(out)


def stop_command(measurement: int = 0) -> bytes:
    """Build the STOP request (`03 <type>`)."""
    return bytes((OP_STOP, measurement))


def settings_command(measurement: int = 0) -> bytes:
    """Build the GET-settings request (`01 <type>`)."""
    return bytes((OP_GET, measurement))


@dataclass(frozen=True, slots=True)
class PmdResponse:
    """A control-point response `F0 <op> <type> <status> <more> [params]`."""

    op: int
    measurement: int
    status: int
    more: bool
    params: bytes

    @property
    def ok(self) -> bool:
        """True when status is 0 (success)."""
        return self.status == 0

    @property
    def status_text(self) -> str:
        """Human-readable status."""
        return STATUS_TEXT.get(self.status, f"unknown status {self.status}")


def parse_control_response(data: bytes) -> PmdResponse:
    """Decode a control-point indication."""
    if len(data) < 4 or data[0] != 0xF0:
        raise ParseError(f"not a PMD control-point response: {data.hex(' ')}")
    more = bool(data[4]) if len(data) > 4 else False
    return PmdResponse(data[1], data[2], data[3], more, bytes(data[5:]))


def parse_features(data: bytes) -> set[str]:
    """Decode the control-point read `0F <feature bits>` into measurement names."""
    if len(data) < 2 or data[0] != 0x0F:
        raise ParseError(f"not a PMD feature read: {data.hex(' ')}")
    bits = int.from_bytes(data[1:], "little")
    return {name for t, name in MEASUREMENT_TYPES.items() if bits >> t & 1}


def parse_settings(params: bytes) -> dict[int, list[int]]:
    """Decode GET-settings TLVs {type: [values]} (u16 values; u32 milli-range; u8 channels; f32 factor)."""
    out: dict[int, list[int]] = {}
    pos = 0
    sizes = {SETTING_RANGE_MILLI: 4, SETTING_CHANNELS: 1, SETTING_FACTOR: 4}
    while pos < len(params):
        if pos + 2 > len(params):
            raise ParseError("PMD settings TLV truncated")
        typ, count = params[pos], params[pos + 1]
        size = sizes.get(typ, 2)
        end = pos + 2 + count * size
        if end > len(params):
            raise ParseError("PMD settings values truncated")
        out[typ] = [int.from_bytes(params[i:i + size], "little") for i in range(pos + 2, end, size)]
        pos = end
    return out


@dataclass(frozen=True, slots=True)
class PmdFrame:
    """A decoded data frame: samples[channel][i]; `timestamp_ns` is Unix ns of the last sample."""

    measurement: int
    timestamp_ns: int
    frame_type: int
    compressed: bool
    samples: tuple[tuple[int, ...], ...]  # one tuple per sample, one value per channel


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _delta_samples(body: bytes, channels: int, resolution: int) -> list[tuple[int, ...]]:
    """Decode delta-compressed samples: reference sample then [width][count][LSB-first bit-packed deltas] blocks."""
    ref_size = math.ceil(resolution / 8)
    if len(body) < channels * ref_size:
        raise ParseError("PMD delta frame shorter than its reference sample")
    ref = [_signed(int.from_bytes(body[i * ref_size:(i + 1) * ref_size], "little"), ref_size * 8)
           for i in range(channels)]
    out = [tuple(ref)]
    pos = channels * ref_size
    while pos < len(body):
        if pos + 2 > len(body):
            raise ParseError("PMD delta block header truncated")
        width, count = body[pos], body[pos + 1]
        pos += 2
        if width == 0 or width > 32:
            raise ParseError(f"PMD delta bit width {width} is invalid")
        nbytes = math.ceil(width * count * channels / 8)
        if pos + nbytes > len(body):
            raise ParseError("PMD delta block data truncated")
        bits = int.from_bytes(body[pos:pos + nbytes], "little")
        pos += nbytes
        mask = (1 << width) - 1
        prev = list(out[-1])
        shift = 0
        for _ in range(count):
            for ch in range(channels):
                prev[ch] += _signed((bits >> shift) & mask, width)
                shift += width
            out.append(tuple(prev))
    return out


def parse_frame(data: bytes, channels: int = 1, resolution: int = 14) -> PmdFrame:
    """Decode one PMD data notification (ECG frame type 0, ACC type 1, or a delta frame)."""
    if len(data) < 10:
        raise ParseError(f"PMD frame needs at least 10 bytes, got {len(data)}")
    measurement = data[0]
    if measurement not in MEASUREMENT_TYPES:
        raise ParseError(f"unknown PMD measurement type {measurement}")
    ts = int.from_bytes(data[1:9], "little") + EPOCH_2000_NS
    ftype = data[9]
    body = bytes(data[10:])
    compressed = bool(ftype & 0x80)
    base = ftype & 0x7F
    if compressed:
        samples = _delta_samples(body, channels, resolution)
    elif measurement == 0 and base == 0:
        if len(body) % 3:
            raise ParseError(f"ECG frame body of {len(body)} bytes is not a whole number of 3-byte samples")
        samples = [(_signed(int.from_bytes(body[i:i + 3], "little"), 24),) for i in range(0, len(body), 3)]
    elif measurement == 2 and base == 1:
        if len(body) % 6:
            raise ParseError("ACC frame body is not a whole number of 6-byte samples")
        samples = [struct.unpack_from("<hhh", body, i) for i in range(0, len(body), 6)]
    else:
        raise ParseError(f"unsupported PMD frame: measurement {measurement}, frame type {ftype:#04x}")
    if not samples:
        raise ParseError("PMD frame without samples")
    return PmdFrame(measurement, ts, ftype, compressed, tuple(samples))


def decode_ecg(data: bytes) -> list[Item]:
    """Parser `polar_pmd_ecg`: one Wave of µV samples stamped with the device time of the last sample."""
    frame = parse_frame(data)
    if frame.measurement != 0:
        raise ParseError(f"expected an ECG frame, got measurement type {frame.measurement}")
    return [Wave("ecg", tuple(s[0] for s in frame.samples), frame.timestamp_ns)]


def ecg_frame(samples_uv: list[int] | tuple[int, ...], last_sample_unix_ns: int) -> bytes:
    """Encode an uncompressed ECG frame (what an H10 sends; used by emulators and tests)."""
    out = bytearray((0,)) + (last_sample_unix_ns - EPOCH_2000_NS).to_bytes(8, "little") + bytes((0,))
    for v in samples_uv:
        out += (v & 0xFFFFFF).to_bytes(3, "little")
    return bytes(out)
