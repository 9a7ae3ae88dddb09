"""A Contec CMS50D+ emulator on a pseudo-terminal, reachable at a stable symlink path.

`plug()` creates a pty and points the symlink at its slave (as udev's /dev/serial/by-id does);
`unplug()` closes the master so the reader sees the hang-up; `plug()` again is a replug on a new pty.
Firmware "v46" streams only after `7D 81 A1` and stops `keepalive_timeout_s` after the last one;
"classic" streams 5-byte packets unconditionally.
"""

from __future__ import annotations

import math
import os
import select
import threading
import time
import tty
from pathlib import Path

from vigil.edge.parsers import cms50d

PACKETS_PER_S = 60


class Cms50Emulator:
    """Emulated oximeter; thread-based, paced in real time."""

    def __init__(self, link: str | os.PathLike[str], firmware: str = "v46", spo2: int = 97, pulse_rate: int = 72,
                 keepalive_timeout_s: float = 30.0, batch: int = 3) -> None:
        self.link = Path(link)
        self.firmware = firmware
        self.spo2 = spo2
        self.pulse_rate = pulse_rate
        self.finger_out = False
        self.keepalive_timeout_s = keepalive_timeout_s
        self.batch = batch
        self.sent = 0
        self.starts = 0
        self.stops = 0
        self.garbage_every = 0  # inject a corrupt byte every N packets (0 = never)
        self._master: int | None = None
        self._slave: int | None = None
        self._last_start = -math.inf
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="cms50-emulator", daemon=True)
        self._rx = bytearray()

    # -- plug management
    def plug(self) -> str:
        """Create a new pty and point the link at it; returns the link path."""
        master, slave = os.openpty()
        tty.setraw(slave)
        name = os.ttyname(slave)
        tmp = self.link.with_suffix(".tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(name)
        tmp.replace(self.link)
        with self._lock:
            self._master, self._slave = master, slave
        return str(self.link)

    def unplug(self) -> None:
        """Close the pty (the reader gets EIO) and remove the link."""
        with self._lock:
            fds = (self._master, self._slave)
            self._master = self._slave = None
            self._last_start = -math.inf
        for fd in fds:
            if fd is not None:
                os.close(fd)
        if self.link.is_symlink():
            self.link.unlink()

    @property
    def streaming(self) -> bool:
        """True when packets are being sent."""
        if self._master is None:
            return False
        return self.firmware == "classic" or time.monotonic() - self._last_start < self.keepalive_timeout_s

    # -- lifecycle
    def start(self) -> Cms50Emulator:
        """Plug in and start the emulator thread."""
        self.plug()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and unplug."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.unplug()

    def _packet(self, k: int) -> bytes:
        phase = (k / PACKETS_PER_S) * self.pulse_rate / 60.0
        pleth = int(50 + 45 * max(0.0, math.sin(2 * math.pi * phase)) ** 2)
        nan = math.nan
        s = cms50d.OxiSample(pleth=pleth, pulse_rate=nan if self.finger_out else float(self.pulse_rate),
                             spo2=nan if self.finger_out else float(self.spo2), signal=6, bar=pleth // 16,
                             beep=pleth > 90, finger_out=self.finger_out, searching=False, pi=None if self.finger_out else 2.5)
        return cms50d.encode_v46(s) if self.firmware == "v46" else cms50d.encode_classic(s)

    def _handle_rx(self) -> None:
        while True:
            i = self._rx.find(b"\x7d\x81")
            if i < 0 or len(self._rx) - i < 9:
                if i > 0:
                    del self._rx[:i]
                return
            cmd = self._rx[i + 2]
            del self._rx[:i + 9]
            if cmd == cms50d.CMD_START:
                self.starts += 1
                self._last_start = time.monotonic()
            elif cmd == cms50d.CMD_STOP:
                self.stops += 1
                self._last_start = -math.inf

    def _run(self) -> None:
        k = 0
        period = self.batch / PACKETS_PER_S
        next_t = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                master = self._master
            if master is not None:
                try:
                    r, _, _ = select.select([master], [], [], 0)
                    if r:
                        self._rx += os.read(master, 1024)
                        self._handle_rx()
                    if self.streaming:
                        chunk = bytearray()
                        for _ in range(self.batch):
                            chunk += self._packet(k)
                            k += 1
                            if self.garbage_every and k % self.garbage_every == 0:
                                chunk += b"\x01\x80\x80"  # a truncated packet
                        os.write(master, bytes(chunk))
                        self.sent += self.batch
                except OSError:
                    pass  # unplugged under us, or nobody has the slave open
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_t = time.monotonic()
