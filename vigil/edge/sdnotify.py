"""systemd notification protocol (sd_notify) over a plain unix datagram socket, no libsystemd needed."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class SdNotify:
    """Send READY=1 / WATCHDOG=1 / STATUS=... to $NOTIFY_SOCKET (no-op when not under systemd)."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self.sent = 0
        if address:
            target = "\0" + address[1:] if address.startswith("@") else address
            self._target = target
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls) -> SdNotify:
        """Use $NOTIFY_SOCKET if set."""
        return cls(os.environ.get("NOTIFY_SOCKET"))

    @staticmethod
    def watchdog_interval_s() -> float | None:
        """Half of $WATCHDOG_USEC in seconds (how often to ping), or None when no watchdog is set."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
            return None
        try:
            return max(0.05, int(usec) / 2e6)
        except ValueError:
            return None

    @property
    def enabled(self) -> bool:
        """True under systemd (Type=notify)."""
        return self._sock is not None

    def notify(self, message: str) -> bool:
        """Send one message; never raises (False on failure)."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto(message.encode(), self._target)
            self.sent += 1
            return True
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)
            return False

    def ready(self, status: str = "") -> bool:
        """READY=1 (+ STATUS)."""
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        """WATCHDOG=1."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """STOPPING=1."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """STATUS=text."""
        return self.notify(f"STATUS={text}")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
