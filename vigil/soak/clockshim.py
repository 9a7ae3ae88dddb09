"""Run `vigil` with its wall clock shifted by the offset in a file: a simulated clock step.

``python -m vigil.soak.clockshim OFFSET_FILE ARGS...`` replaces ``time.time``/``time.time_ns`` (what
`SystemClock.wall` and the store read) with the system clock plus the number of seconds in
OFFSET_FILE, re-read every 0.2 s, then runs ``vigil ARGS...``. The monotonic clock is untouched, as on
a real NTP step. ``datetime.now()`` is not shifted (it reads the C clock directly).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from pathlib import Path

POLL_S = 0.2


def install(offset_file: Path) -> list[float]:
    """Patch the time module; returns the live [offset] cell."""
    orig_time, orig_ns = time.time, time.time_ns
    offset = [0.0]

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            offset[0] = float(offset_file.read_text().strip() or 0.0)

    def poll() -> None:
        while True:
            time.sleep(POLL_S)
            read()

    read()
    threading.Thread(target=poll, name="clockshim", daemon=True).start()
    time.time = lambda: orig_time() + offset[0]
    time.time_ns = lambda: orig_ns() + int(offset[0] * 1e9)
    return offset


def main(argv: list[str] | None = None) -> int:
    """Entry point: OFFSET_FILE then the `vigil` arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write("usage: python -m vigil.soak.clockshim OFFSET_FILE VIGIL_ARGS...\n")
        return 2
    install(Path(args[0]))
    from vigil.cli import main as vigil_main

    return vigil_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
