"""A simulated GSM modem (3GPP TS 27.005 text mode) on a pseudo-terminal or a loopback TCP socket.

It answers like a SIM800/Telit: echo until ``ATE0``, ``OK``/``ERROR``, ``+CPIN: READY``,
``+CREG: 0,1``, the ``\\r\\n> `` prompt after ``AT+CMGS="<to>"``, then ``+CMGS: <mr>`` + ``OK`` after
the text and Ctrl-Z (0x1A); ESC (0x1B) aborts. ``mode`` selects the behaviour:

* ``ok``            - everything works
* ``cms_error:N``   - the send ends with ``+CMS ERROR: N`` (e.g. 331 no network)
* ``cmgs_error``    - ``AT+CMGS`` itself answers ``ERROR`` (no prompt)
* ``no_result``     - prompt given, but no result after the text (tests the 60 s result timeout)
* ``silent``        - never answers anything (modem hung)
* ``garbage``       - interleaves RING, +CMTI, and junk bytes with correct answers (still succeeds)
* ``garbage_only``  - answers every line with junk
* ``slow:S``        - the result comes S seconds after Ctrl-Z

``unplug()`` closes the device: the path disappears and open handles fail with I/O errors.
Use parity N on ptys (this kernel's ptys reject PARENB) or ``transport="socket"`` for socket://.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
import tty


class SimulatedModem:
    """Thread-driven modem; `port` is the path (pty) or the socket:// URL to open with pyserial."""

    def __init__(self, mode: str = "ok", transport: str = "pty") -> None:
        self.mode = mode
        self.transport = transport
        self.messages: list[tuple[str, str]] = []
        self.commands: list[str] = []
        self.port = ""
        self._mr = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._reset_session()

    def _reset_session(self) -> None:
        self._echo = True
        self._buf = b""
        self._text_to: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SimulatedModem:
        """Create the pty / listening socket and start answering."""
        if self.transport == "pty":
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            self.port = os.ttyname(self._slave)
        else:
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(("127.0.0.1", 0))
            self._listener.listen(4)
            self.port = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sim-gsm-modem", daemon=True)
        self._thread.start()
        return self

    def unplug(self) -> None:
        """Pull the modem out: close everything; the port path disappears."""
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        for s in (self._conn, self._listener):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        self._conn = self._listener = None

    stop = unplug

    def __enter__(self) -> SimulatedModem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.unplug()

    # ------------------------------------------------------------------ I/O
    def _write(self, data: bytes) -> None:
        try:
            if self._master is not None:
                os.write(self._master, data)
            elif self._conn is not None:
                self._conn.sendall(data)
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.transport == "pty":
                assert self._master is not None
                r, _, _ = select.select([self._master], [], [], 0.05)
                if not r:
                    continue
                try:
                    data = os.read(self._master, 4096)
                except OSError:
                    time.sleep(0.05)  # no reader on the slave side right now
                    continue
            else:
                assert self._listener is not None
                if self._conn is None:
                    r, _, _ = select.select([self._listener.fileno()], [], [], 0.05)
                    if r:
                        self._conn, _ = self._listener.accept()
                        self._reset_session()
                    continue
                r, _, _ = select.select([self._conn.fileno()], [], [], 0.05)
                if not r:
                    continue
                try:
                    data = self._conn.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self._conn.close()
                    self._conn = None
                    continue
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        if self.mode == "silent":
            return
        for byte in data:
            b = bytes([byte])
            if self._text_to is not None:
                if b == b"\x1a":
                    self._finish_text()
                elif b == b"\x1b":
                    self._text_to, self._buf = None, b""
                    self._write(b"\r\nOK\r\n")
                else:
                    self._buf += b
                continue
            if self._echo:
                self._write(b)
            if b == b"\r":
                line, self._buf = self._buf.decode(errors="replace").strip(), b""
                if line:
                    self._command(line)
            elif b != b"\n":
                self._buf += b

    def _junk(self) -> None:
        if self.mode == "garbage":
            self._write(b"\r\nRING\r\n\xff\xfe@@\x00junk\r\n+CMTI: \"SM\",3\r\n")

    def _command(self, line: str) -> None:
        self.commands.append(line)
        if self.mode == "garbage_only":
            self._write(b"\r\n\x7f\x80#!?%garbled\r\n")
            return
        self._junk()
        up = line.upper()
        ok = b"\r\nOK\r\n"
        if up == "AT" or up.startswith(("AT+CMEE", "AT+CSCS", "AT+CSMP", "AT+CMGF")):
            self._write(ok)
        elif up == "ATE0":
            self._echo = False
            self._write(ok)
        elif up == "AT+CPIN?":
            self._write(b"\r\n+CPIN: READY\r\n" + ok)
        elif up == "AT+CREG?":
            self._write(b"\r\n+CREG: 0,1\r\n" + ok)
        elif up == "AT+CSQ":
            self._write(b"\r\n+CSQ: 18,0\r\n" + ok)
        elif up.startswith("AT+CMGS="):
            if self.mode == "cmgs_error":
                self._write(b"\r\nERROR\r\n")
                return
            self._text_to = line.split("=", 1)[1].strip().strip('"')
            self._buf = b""
            self._write(b"\r\n> ")
        else:
            self._write(b"\r\nERROR\r\n")

    def _finish_text(self) -> None:
        to, text = self._text_to or "", self._buf.decode(errors="replace")
        self._text_to, self._buf = None, b""
        if self.mode.startswith("cms_error"):
            code = self.mode.partition(":")[2] or "500"
            self._write(f"\r\n+CMS ERROR: {code}\r\n".encode())
            return
        if self.mode == "no_result":
            return
        if self.mode.startswith("slow:"):
            time.sleep(float(self.mode.partition(":")[2]))
        self.messages.append((to, text))
        self._mr = (self._mr + 1) % 256
        self._junk()
        self._write(f"\r\n+CMGS: {self._mr}\r\n\r\nOK\r\n".encode())
