"""Sync status: a JSON file next to the store (for `vigil sync status`) and retained MQTT messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATUS_FILE = "sync-status.json"


def status_topic(room: str) -> str:
    """Retained topic of the sync status."""
    return f"vigil/{room}/sync/status"


def roster_topic(room: str) -> str:
    """Retained topic of the current roster."""
    return f"vigil/{room}/roster"


def write_status_file(path: Path, status: dict[str, Any]) -> None:
    """Atomically replace the status file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_status_file(path: Path) -> dict[str, Any] | None:
    """The status written by the running worker, or None."""
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (FileNotFoundError, ValueError):
        return None


def format_table(status: dict[str, Any], now: float | None = None) -> str:
    """Human table of the status (one row per destination)."""
    now = time.time() if now is None else now
    rows = [("destination", "queue", "oldest", "dead", "breaker", "last success", "last error")]
    for name, d in status.get("destinations", {}).items():
        oldest = d.get("oldest_age_s")
        last = d.get("last_success")
        rows.append((name, str(d.get("queue_depth", 0)), "-" if oldest is None else _dur(oldest),
                     str(d.get("dead_letters", 0)), str(d.get("breaker", "?")),
                     "never" if last is None else _dur(now - last) + " ago", (d.get("last_error") or "")[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    worker = status.get("worker")
    if worker:
        lines.append(f"worker: {worker}")
    return "\n".join(lines)


def _dur(s: float) -> str:
    s = max(0.0, float(s))
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


class MqttPublisher:
    """Keeps the latest retained messages and (re)publishes them; broker trouble only logs."""

    def __init__(self, host: str, port: int, *, username: str | None = None, password: str | None = None,
                 client_id: str = "vigil-sync") -> None:
        self.host, self.port = host, port
        self._username, self._password = username, password
        self._client_id = client_id
        self._pending: dict[str, bytes] = {}
        self._event = asyncio.Event()
        self.published = 0

    def offer(self, topic: str, payload: dict[str, Any]) -> None:
        """Queue a retained message (the latest per topic wins)."""
        self._pending[topic] = json.dumps(payload, separators=(",", ":")).encode()
        self._event.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, publish queued messages (QoS 1, retained), reconnect with a pause on failure."""
        import aiomqtt

        while not stop.is_set():
            try:
                async with aiomqtt.Client(self.host, self.port, username=self._username, password=self._password,
                                          identifier=self._client_id, timeout=5) as client:
                    log.info("connected to the broker %s:%d", self.host, self.port)
                    while not stop.is_set():
                        while self._pending:
                            topic, body = next(iter(self._pending.items()))
                            await client.publish(topic, body, qos=1, retain=True)
                            if self._pending.get(topic) is body:
                                del self._pending[topic]
                            self.published += 1
                        self._event.clear()
                        waiter = asyncio.ensure_future(self._event.wait())
                        stopper = asyncio.ensure_future(stop.wait())
                        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                        waiter.cancel()
                        stopper.cancel()
            except (aiomqtt.MqttError, OSError) as exc:
                log.warning("broker %s:%d unavailable (%s); retrying", self.host, self.port, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
