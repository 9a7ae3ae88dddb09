"""Connectivity probe: is the uplink there at all? (a cheap check before trial requests)."""

from __future__ import annotations

import logging
import socket
import time
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


def tcp_probe(host: str, port: int, timeout_s: float = 3.0) -> bool:
    """True when a TCP connection to host:port opens within the timeout."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class ConnectivityProbe:
    """Probes a URL's host:port (TCP connect), caching the answer for `cache_s` seconds."""

    def __init__(self, url: str, *, timeout_s: float = 3.0, cache_s: float = 5.0) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"probe URL {url!r} has no host")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._timeout = timeout_s
        self._cache_s = cache_s
        self._last: tuple[float, bool] | None = None
        self.online: bool | None = None

    def check(self) -> bool:
        """Probe (or reuse a recent answer); logs transitions only."""
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self._cache_s:
            return self._last[1]
        ok = tcp_probe(self.host, self.port, self._timeout)
        if ok != self.online:
            log.info("connectivity to %s:%d is %s", self.host, self.port, "up" if ok else "down")
        self.online = ok
        self._last = (now, ok)
        return ok
