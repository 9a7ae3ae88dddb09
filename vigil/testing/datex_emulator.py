"""A Datex-Ohmeda S/5 emulator behind a TCP socket (open it with pyserial's `socket://HOST:PORT`).

It answers numerics requests with displayed-values records every requested interval (or
`numerics_interval_s` when set) and waveform requests with ECG1 records (300 Hz, 75 samples per
record). `unplug()` drops the connection and refuses new ones until `plug()`.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import threading
import time

from vigil.edge.parsers import datex_s5

ECG_FS = 300
SAMPLES_PER_RECORD = 75


class DatexEmulator:
    """Emulated S/5 monitor on 127.0.0.1:<port>."""

    def __init__(self, heart_rate: float = 60.0, spo2: float = 98.0, nibp: tuple[float, float, float] = (120, 80, 93),
                 numerics_interval_s: float | None = None) -> None:
        self.heart_rate = heart_rate
        self.spo2 = spo2
        self.nibp = nibp
        self.numerics_interval_s = numerics_interval_s
        self.corrupt_every = 0  # corrupt one record in N (0 = never)
        self.requests: list[tuple[int, bytes]] = []  # (maintype, body) received
        self.records_sent = 0
        self._server: socket.socket | None = None
        self._client: socket.socket | None = None
        self._stop = threading.Event()
        self._plugged = threading.Event()
        self._thread = threading.Thread(target=self._run, name="datex-emulator", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        """pyserial URL of the emulator."""
        return f"socket://127.0.0.1:{self.port}"

    def start(self) -> DatexEmulator:
        """Listen and start serving."""
        self.plug()
        self._thread.start()
        return self

    def plug(self) -> None:
        """Listen (again) on the same port."""
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(1)
        self.port = srv.getsockname()[1]
        self._server = srv
        self._plugged.set()

    def unplug(self) -> None:
        """Drop the client and stop listening."""
        self._plugged.clear()
        for s in (self._client, self._server):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        self._client = self._server = None

    def stop(self) -> None:
        """Stop serving."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.unplug()

    def _ecg(self, k: int) -> int:
        t = k / ECG_FS
        phase = (t * self.heart_rate / 60.0) % 1.0
        return int(round(100 * math.exp(-((phase - 0.3) / 0.012) ** 2) - 10 * math.exp(-((phase - 0.6) / 0.05) ** 2) * -2))

    def _send(self, record: bytes) -> None:
        if self._client is None:
            raise OSError("unplugged")
        framed = bytearray(datex_s5.frame(record))
        self.records_sent += 1
        if self.corrupt_every and self.records_sent % self.corrupt_every == 0:
            framed[len(framed) // 2] ^= 0x04
        self._client.sendall(bytes(framed))

    def _run(self) -> None:
        buf = bytearray()
        numerics_every: float | None = None
        wave_on = False
        next_num = next_wave = 0.0
        k = 0
        while not self._stop.is_set():
            if not self._plugged.is_set():
                self._stop.wait(0.02)
                continue
            try:
                if self._client is None:
                    srv = self._server
                    if srv is None:
                        continue
                    r, _, _ = select.select([srv], [], [], 0.05)
                    if not r:
                        continue
                    self._client, _ = srv.accept()
                    buf.clear()
                    numerics_every, wave_on = None, False
                    continue
                r, _, _ = select.select([self._client], [], [], 0.01)
                if r:
                    data = self._client.recv(4096)
                    if not data:
                        self._client.close()
                        self._client = None
                        continue
                    buf += data
                    while True:
                        s = buf.find(0x7E)
                        e = buf.find(0x7E, s + 1) if s >= 0 else -1
                        if e < 0:
                            break
                        body = bytes(buf[s + 1:e])
                        del buf[:e + 1]
                        try:
                            rec = datex_s5.unframe(body)
                        except Exception:  # noqa: BLE001 - a garbled request is ignored like the monitor does
                            continue
                        hdr = datex_s5.parse_header(rec)
                        self.requests.append((hdr.maintype, rec[40:]))
                        if hdr.maintype == datex_s5.MAINTYPE_PHDB:
                            interval = int.from_bytes(rec[41:43], "little", signed=True)
                            numerics_every = self.numerics_interval_s or float(interval)
                            next_num = time.monotonic()
                        elif hdr.maintype == datex_s5.MAINTYPE_WAVE:
                            wave_on = int.from_bytes(rec[40:42], "little", signed=True) == 0
                            next_wave = time.monotonic()
                now = time.monotonic()
                if numerics_every and now >= next_num:
                    sys_, dia, mean = self.nibp
                    self._send(datex_s5.numerics_record({
                        "ecg": {"hr": self.heart_rate}, "nibp": {"sys": sys_, "dia": dia, "mean": mean},
                        "spo2": {"spo2": self.spo2, "pr": self.heart_rate}}, int(time.time())))
                    next_num += numerics_every
                if wave_on and now >= next_wave:
                    samples = [self._ecg(k + i) for i in range(SAMPLES_PER_RECORD)]
                    k += SAMPLES_PER_RECORD
                    self._send(datex_s5.waveform_record([(datex_s5.WAVE_ECG1, samples)]))
                    next_wave += SAMPLES_PER_RECORD / ECG_FS
            except (OSError, AttributeError, ValueError):  # unplugged from another thread mid-call
                if self._client is not None:
                    with contextlib.suppress(OSError):
                        self._client.close()
                self._client = None
