"""Lossless waveform codec: int32 samples → delta → zigzag → byte-shuffle → zstd (pure functions).

Layout of an encoded chunk (little-endian)::

    b"VW"  version:u8  method:u8  n_samples:u32  zstd frame (with content checksum)

Deltas are taken modulo 2**32 so every int32 sequence round-trips bit-exactly, including jumps
from ``-2**31`` to ``2**31 - 1``. Zigzag maps small signed deltas to small unsigned numbers and the
byte shuffle groups the (mostly zero) high bytes together, which zstd then squeezes well
(the same idea as Blosc's shuffle filter; Alted, "Blosc", 2010).
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt
import zstandard as zstd

from vigil.errors import IntegrityError

MAGIC = b"VW"
VERSION = 1
METHOD_DELTA_ZIGZAG_SHUFFLE_ZSTD = 1
_HEADER = struct.Struct("<2sBBI")
HEADER_SIZE = _HEADER.size
DEFAULT_LEVEL = 3


def _zstd_compressor(level: int) -> zstd.ZstdCompressor:
    return zstd.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)


def encode(samples: npt.ArrayLike, level: int = DEFAULT_LEVEL) -> bytes:
    """Encode int32 samples losslessly; raise ValueError for values outside int32."""
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array of samples, got shape {arr.shape}")
    if arr.dtype != np.int32:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"samples must be integers, got {arr.dtype}")
        if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
            raise ValueError("samples do not fit in int32")
        arr = arr.astype(np.int32)
    u = arr.astype(np.uint32)  # two's-complement view; arithmetic below is modulo 2**32
    delta = np.empty_like(u)
    if u.size:
        delta[0] = u[0]
        np.subtract(u[1:], u[:-1], out=delta[1:])
    d = delta.view(np.int32)
    zigzag = ((d.astype(np.int64) << 1) ^ (d.astype(np.int64) >> 31)).astype(np.uint32)
    shuffled = zigzag.astype("<u4").view(np.uint8).reshape(-1, 4).T.tobytes()
    body = _zstd_compressor(level).compress(shuffled)
    return _HEADER.pack(MAGIC, VERSION, METHOD_DELTA_ZIGZAG_SHUFFLE_ZSTD, u.size) + body


def decode(blob: bytes) -> npt.NDArray[np.int32]:
    """Decode a chunk made by `encode`; raise IntegrityError if it is damaged."""
    if len(blob) < HEADER_SIZE:
        raise IntegrityError(f"waveform chunk is truncated ({len(blob)} bytes, header needs {HEADER_SIZE})")
    magic, version, method, n = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise IntegrityError("waveform chunk has a bad magic number (damaged, or encrypted and no key given)")
    if version != VERSION or method != METHOD_DELTA_ZIGZAG_SHUFFLE_ZSTD:
        raise IntegrityError(f"waveform chunk uses unknown codec version {version} method {method}")
    try:
        raw = zstd.ZstdDecompressor().decompress(blob[HEADER_SIZE:], max_output_size=4 * n)
    except zstd.ZstdError as exc:
        raise IntegrityError(f"waveform chunk does not decompress: {exc}") from None
    if len(raw) != 4 * n:
        raise IntegrityError(f"waveform chunk holds {len(raw)} bytes, header says {n} samples")
    zigzag = np.frombuffer(raw, dtype=np.uint8).reshape(4, n).T.copy().view("<u4").reshape(n)
    zz = zigzag.astype(np.int64)
    delta = ((zz >> 1) ^ -(zz & 1)).astype(np.int64).astype(np.uint32)
    out = np.cumsum(delta, dtype=np.uint32)  # wraps modulo 2**32, inverse of the modular delta
    return out.view(np.int32)


def sample_count(blob: bytes) -> int:
    """Number of samples announced by a chunk header (without decoding it)."""
    if len(blob) < HEADER_SIZE:
        raise IntegrityError("waveform chunk is truncated")
    return int(_HEADER.unpack_from(blob)[3])
