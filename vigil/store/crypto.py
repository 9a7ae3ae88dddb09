"""AES-256-GCM sealing of waveform chunks and PHI with the record's identity as associated data.

A sealed blob is ``b"VE1" + nonce(12) + ciphertext + tag(16)``. The associated data binds the
blob to where it belongs (e.g. session, device, channel, first seq), so a chunk copied onto another
row fails authentication instead of decoding as somebody else's ECG (NIST SP 800-38D).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vigil.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from vigil.config import VigilConfig

PREFIX = b"VE1"
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
_HEX_KEY = re.compile(rb"^[0-9a-fA-F]{64}$")


def parse_key(data: bytes, *, source: str = "store key") -> bytes:
    """Turn key file contents (32 raw bytes or 64 hex characters) into a 32-byte key."""
    stripped = data.strip()
    if _HEX_KEY.match(stripped):
        return bytes.fromhex(stripped.decode("ascii"))
    if len(data) == KEY_SIZE:
        return data
    if len(stripped) == KEY_SIZE:
        return stripped
    raise ConfigError(f"{source}: expected 32 raw bytes or 64 hex characters, got {len(data)} bytes "
                      "(make one with: head -c 32 /dev/urandom > store.key)")


def load_key(cfg: VigilConfig | None, filename: str) -> bytes:
    """Read the store key named in config via `config.read_secret` (permissions checked)."""
    from vigil.config import read_secret

    # read_secret strips whitespace, which may eat raw key bytes: read raw bytes from the same file
    read_secret(cfg, filename, what="store key")  # existence + permission checks, clear errors
    path = _resolve_secret_path(cfg, filename)
    return parse_key(path.read_bytes(), source=f"store key {path}")


def _resolve_secret_path(cfg: VigilConfig | None, filename: str) -> Path:
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and not os.path.isabs(filename) and (Path(cred_dir) / filename).is_file():
        return Path(cred_dir) / filename
    return cfg.resolve_path(filename) if cfg is not None else Path(filename)


class Sealer:
    """Seal and open blobs with one AES-256 key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ConfigError(f"store key must be {KEY_SIZE} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt and authenticate `plaintext` bound to `aad`."""
        nonce = os.urandom(NONCE_SIZE)
        return PREFIX + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes, *, what: str = "record") -> bytes:
        """Decrypt a sealed blob; raise IntegrityError if it was altered, moved or sealed with another key."""
        if not is_sealed(blob) or len(blob) < len(PREFIX) + NONCE_SIZE + TAG_SIZE:
            raise IntegrityError(f"{what} is not an encrypted blob (stored in clear or truncated)")
        nonce = blob[len(PREFIX):len(PREFIX) + NONCE_SIZE]
        try:
            return self._aead.decrypt(nonce, blob[len(PREFIX) + NONCE_SIZE:], aad)
        except InvalidTag:
            raise IntegrityError(f"{what} failed authentication: it was altered, moved to another record, "
                                 "or the store key is wrong") from None


def is_sealed(blob: bytes) -> bool:
    """True when `blob` looks like a sealed blob (starts with the VE1 prefix)."""
    return blob[:len(PREFIX)] == PREFIX


def chunk_aad(session_id: str, device_id: str, channel: str, seq: int, layout: str = "") -> bytes:
    """Associated data of a waveform chunk: its identity (session, device, channel, first seq) and layout.

    `layout` (kind, fs, unit, gain, sample count; see `chunk_layout`) binds the row's metadata too, so
    editing the gain or rate of a sealed chunk is detected like editing its samples.
    """
    return b"vigil-chunk/1\x00" + "\x00".join((session_id, device_id, channel, str(int(seq)), layout)).encode()


def chunk_layout(kind: str, fs: float, unit: str, gain: float, n: int) -> str:
    """Canonical text of a chunk's metadata for `chunk_aad`."""
    return f"{kind}|{float(fs)!r}|{unit}|{float(gain)!r}|{int(n)}"


def phi_aad(kind: str, *identity: str) -> bytes:
    """Associated data of a PHI field (e.g. kind="guest.name", identity=(session, mat))."""
    return b"vigil-phi/1\x00" + "\x00".join((kind, *identity)).encode()
