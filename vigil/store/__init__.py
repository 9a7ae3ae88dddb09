"""Record store: SQLite (WAL) with migrations, waveform codec, AES-GCM sealing, outbox, writer thread."""

from vigil.store.records import (
    AuditEntry,
    GapRecord,
    OutboxRow,
    OutboxStats,
    RecordStore,
    SessionInfo,
    StoreWriteError,
)

__all__ = ["AuditEntry", "GapRecord", "OutboxRow", "OutboxStats", "RecordStore", "SessionInfo",
           "StoreWriteError", "StoreWriter"]


def __getattr__(name: str) -> object:
    if name == "StoreWriter":
        from vigil.store.writer import StoreWriter

        return StoreWriter
    raise AttributeError(name)
