"""Serial transport (pyserial): open by path, pyserial URL or `usb:VID:PID`; stream parser; keep-alive.

Reading is event-driven: the port is opened non-blocking and its file descriptor registered with the
event loop (`loop.add_reader`), so 20 ports cost no threads. Unplugging makes the read fail (EIO on a
tty, EOF on a socket): the transport then fails with TransportError and the supervisor reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from vigil.edge.parsers.registry import stream_parser
from vigil.edge.profiles import LineSettings, Profile
from vigil.edge.transports.base import QueueTransport, Stamper
from vigil.errors import ParseError, TransportError

log = logging.getLogger(__name__)


def resolve_port(where: str) -> str:
    """Turn `usb:VID:PID[:SERIAL]` into a device path via serial.tools.list_ports; other values pass through."""
    if not where.lower().startswith("usb:"):
        return where
    from serial.tools import list_ports

    parts = where.split(":")
    if len(parts) not in (3, 4):
        raise TransportError(f"USB port spec {where!r} must be usb:VID:PID or usb:VID:PID:SERIAL")
    try:
        vid, pid = int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        raise TransportError(f"USB port spec {where!r}: VID and PID are hex") from None
    serial_no = parts[3] if len(parts) == 4 else None
    for info in sorted(list_ports.comports(), key=lambda i: i.device):
        if info.vid == vid and info.pid == pid and (serial_no is None or info.serial_number == serial_no):
            return str(info.device)
    raise TransportError(f"no USB serial device {vid:04x}:{pid:04x} is plugged in")


def line_settings(profile: Profile, overrides: dict[str, Any] | None = None) -> LineSettings:
    """The profile's line settings with per-device overrides applied (validated)."""
    base = profile.line.model_dump() if profile.line else {}
    base.update(overrides or {})
    return LineSettings.model_validate(base)


class SerialTransport(QueueTransport):
    """One open serial port streaming through the profile's stream parser."""

    def __init__(self, device_id: str, profile: Profile, port: str, stamper: Stamper,
                 line: dict[str, Any] | None = None, keepalive_scale: float = 1.0) -> None:
        super().__init__(device_id)
        if profile.transport != "serial":
            raise TransportError(f"profile {profile.name!r} is not a serial profile")
        self.profile = profile
        self.port_spec = port
        self.stamper = stamper
        self.settings = line_settings(profile, line)
        self.keepalive_scale = keepalive_scale
        self.parser = stream_parser(profile.streams[0].parser)
        self._ser: Any = None
        self._fd: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.bytes_in = 0

    async def open(self) -> None:
        """Open the port, start reading, send start commands and schedule keep-alives."""
        import serial

        path = resolve_port(self.port_spec)
        s = self.settings
        try:
            ser = serial.serial_for_url(path, do_not_open=True, baudrate=s.baudrate, bytesize=s.bytesize,
                                        parity=s.parity, stopbits=s.stopbits, xonxoff=s.xonxoff,
                                        rtscts=s.rtscts, timeout=0, write_timeout=2)
            ser.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(f"cannot open {path}: {exc}") from None
        self._ser = ser
        loop = asyncio.get_running_loop()
        self._fd = ser.fileno()
        loop.add_reader(self._fd, self._on_readable)
        for cmd in self.profile.commands:
            if not cmd.on_stop:
                self._write(cmd.payload())
                if cmd.repeat_s:
                    self._tasks.append(asyncio.create_task(self._repeat(cmd.payload(), cmd.repeat_s * self.keepalive_scale)))
        log.info("%s: serial %s open (%d baud %s)", self.device_id, path, s.baudrate, s.parity)

    def _write(self, data: bytes) -> None:
        import serial

        try:
            self._ser.write(data)
        except (serial.SerialException, OSError) as exc:
            self._lost(f"write failed: {exc}")

    async def _repeat(self, data: bytes, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            if self._ser is None:
                return
            self._write(data)

    def _on_readable(self) -> None:
        import serial

        try:
            data = self._ser.read(self._ser.in_waiting or 4096)
        except (serial.SerialException, OSError) as exc:
            self._lost(f"read failed: {exc}")
            return
        if not data:
            return
        self.bytes_in += len(data)
        try:
            items = self.parser.feed(data)
        except ParseError:  # stream parsers count corrupt frames themselves; this is belt and braces
            self.parse_errors += 1
            return
        if items:
            self.put(self.stamper.stamp(items))

    def _lost(self, why: str) -> None:
        self._detach()
        self.fail(why)

    def _detach(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None

    async def close(self) -> None:
        """Send stop commands (best effort), cancel keep-alives, close the port."""
        for t in self._tasks:
            t.cancel()
        # gather, not `suppress(CancelledError)`: the tasks' cancellations are collected, ours is not swallowed
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._ser is not None and self._fd is not None:
            for cmd in self.profile.commands:
                if cmd.on_stop:
                    with contextlib.suppress(Exception):  # the port may already be gone
                        self._ser.write(cmd.payload())
        self._detach()
        if self._ser is not None:
            with contextlib.suppress(Exception):
                self._ser.close()
            self._ser = None
