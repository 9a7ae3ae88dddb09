"""Base of stream parsers for serial byte streams: a resync buffer and counters."""

from __future__ import annotations

import logging

from vigil.edge.parsers.items import Item

log = logging.getLogger(__name__)

MAX_BUFFER = 64 * 1024  # bytes kept while hunting for a frame boundary


class StreamParser:
    """Feed arbitrary chunks, get items; corrupt frames are counted and dropped, never raised."""

    name = "stream"

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.frames = 0  # good frames decoded
        self.corrupt = 0  # frames dropped as corrupt
        self.skipped_bytes = 0  # bytes discarded while resynchronising

    def feed(self, data: bytes) -> list[Item]:
        """Append bytes and return every item of the frames completed by them."""
        self.buffer += data
        out = self._drain()
        if len(self.buffer) > MAX_BUFFER:
            self.skipped_bytes += len(self.buffer) - MAX_BUFFER
            del self.buffer[:-MAX_BUFFER]
        return out

    def _drain(self) -> list[Item]:
        raise NotImplementedError

    def _corrupt(self, why: str) -> None:
        self.corrupt += 1
        log.debug("%s: dropped a corrupt frame: %s", self.name, why)
