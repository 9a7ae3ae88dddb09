"""SMS through a GSM modem in AT text mode (3GPP TS 27.005; protocols.md §4); blocking, worker thread only.

Per message: open the port, ``AT`` / ``ATE0`` / ``AT+CMGF=1``, ``AT+CMGS="<to>"``, wait for the ``> ``
prompt, send the GSM-7 text + Ctrl-Z, then read line by line (RING / +CMTI / junk are skipped) for
up to ``ModemSettings.timeout_s`` (60 s) for ``+CMGS: <mr>`` + ``OK`` or ``+CMS ERROR: <n>``.
Opening the port per message survives unplug/replug of USB modems. Never raises.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import serial

from vigil.alarms.sms import SmsResult, gsm7_text
from vigil.config import ModemSettings

log = logging.getLogger(__name__)

CMS_ERRORS = {300: "ME failure", 302: "operation not allowed", 304: "invalid PDU mode parameter",
              305: "invalid text mode parameter", 310: "SIM not inserted", 311: "SIM PIN required",
              330: "SMSC address unknown", 331: "no network service", 332: "network timeout", 500: "unknown error"}


def _open(settings: ModemSettings) -> Any:
    return serial.serial_for_url(settings.port, baudrate=settings.baudrate, parity=settings.parity,
                                 bytesize=8, stopbits=1, timeout=0.1, write_timeout=2.0)


class GsmSender:
    """Sends one SMS per call through the modem; serialised by a lock (one AT dialogue at a time)."""

    channel = "gsm"

    def __init__(self, settings: ModemSettings, *, command_timeout_s: float = 5.0,
                 open_port: Callable[[ModemSettings], Any] = _open) -> None:
        self.settings = settings
        self.command_timeout_s = command_timeout_s
        self._open = open_port
        self._lock = threading.Lock()

    def send(self, to: str, body: str, ref: str) -> SmsResult:
        """Send `body` to `to`; every failure becomes an SmsResult with the reason."""
        with self._lock:
            try:
                port = self._open(self.settings)
            except (serial.SerialException, OSError, ValueError) as exc:
                return SmsResult(False, self.channel, "unavailable", error=f"cannot open modem port: {exc}")
            try:
                return self._dialogue(port, to, gsm7_text(body))
            except (serial.SerialException, OSError) as exc:
                return SmsResult(False, self.channel, "unavailable", error=f"modem port failed: {exc}")
            finally:
                with contextlib.suppress(serial.SerialException, OSError):
                    port.close()

    def _dialogue(self, port: Any, to: str, text: str) -> SmsResult:
        rd = _LineReader(port)
        port.reset_input_buffer()
        for cmd in ("AT", "ATE0", "AT+CMGF=1"):
            kind, line = rd.command(cmd, self.command_timeout_s)
            if kind != "ok":
                outcome = "timeout" if kind == "timeout" else "modem_error"
                return SmsResult(False, self.channel, outcome, error=f"{cmd}: {kind} {line or ''}".strip(),
                                 detail={"step": cmd})
        port.write(f'AT+CMGS="{to}"\r'.encode())
        kind, line = rd.wait(self.command_timeout_s, prompt=True)
        if kind != "prompt":
            port.write(b"\x1b")
            return SmsResult(False, self.channel, "timeout" if kind == "timeout" else "modem_error",
                             error=f"AT+CMGS: {kind} {line or ''}".strip(), detail=_cms(kind, line))
        port.write(text.encode("ascii", errors="replace") + b"\x1a")
        kind, line = rd.wait(self.settings.timeout_s)
        if kind == "ok" and rd.mr is not None:
            return SmsResult(True, self.channel, "sent", message_id=str(rd.mr))
        if kind == "timeout":
            port.write(b"\x1b")
            return SmsResult(False, self.channel, "timeout",
                             error=f"no result within {self.settings.timeout_s:g} s")
        return SmsResult(False, self.channel, "modem_error", error=f"{kind} {line or ''}".strip(), detail=_cms(kind, line))


def _cms(kind: str, line: str | None) -> dict[str, Any]:
    if kind in ("cms", "cme") and line:
        try:
            code = int(line.split(":", 1)[1].strip())
        except (IndexError, ValueError):
            return {}
        return {"cms_error": code, "meaning": CMS_ERRORS.get(code, "")}
    return {}


class _LineReader:
    """Reads modem output line by line; recognises final result codes and the > prompt."""

    def __init__(self, port: Any) -> None:
        self.port = port
        self.buf = b""
        self.mr: int | None = None

    def command(self, cmd: str, timeout: float) -> tuple[str, str | None]:
        self.port.write(cmd.encode() + b"\r")
        return self.wait(timeout)

    def wait(self, timeout: float, prompt: bool = False) -> tuple[str, str | None]:
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.strip(b"\r \x00").decode("ascii", errors="replace")
                if not line:
                    continue
                if line == "OK":
                    return "ok", line
                if line == "ERROR":
                    return "error", line
                if line.startswith("+CMS ERROR:"):
                    return "cms", line
                if line.startswith("+CME ERROR:"):
                    return "cme", line
                if line.startswith("+CMGS:"):
                    try:
                        self.mr = int(line.split(":", 1)[1].strip())
                    except ValueError:
                        log.debug("unparsable +CMGS line")
                    continue
                log.debug("modem: ignored line %r", line[:40])
            if prompt and self.buf.strip(b"\r\n ") == b">":
                self.buf = b""
                return "prompt", None
            if time.monotonic() >= deadline:
                return "timeout", None
            chunk = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
            self.buf += chunk
