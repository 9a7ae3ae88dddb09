"""The one exception tree of Vigil."""

from __future__ import annotations


class VigilError(Exception):
    """Base of every error Vigil raises on purpose."""


class ConfigError(VigilError):
    """Invalid configuration; `problems` lists (key path, line, message)."""

    def __init__(self, message: str, problems: list[tuple[str, int | None, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ParseError(VigilError):
    """Bytes from a device that do not decode into a reading."""


class TransportError(VigilError):
    """A transport (BLE, serial, replay) could not move bytes."""


class RecordError(VigilError):
    """A recorded signal file (WFDB, CSV) could not be read."""


class StoreError(VigilError):
    """The record store failed (disk full, read-only, corrupt, tampered)."""


class IntegrityError(StoreError):
    """Stored data failed authentication (tampered or wrong key)."""


class SyncError(VigilError):
    """Delivery to a cloud destination failed."""


class AlarmError(VigilError):
    """The alarm subsystem refused an input (bad command, unknown operator)."""


class ExportError(VigilError):
    """An export could not be produced."""


class SecretError(ConfigError):
    """A secret is missing or its file permissions are too open."""
