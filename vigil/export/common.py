"""What every export format shares: the request, session/guest resolution, time parsing, staging and audit.

An export writes into a hidden staging folder next to its destination and renames it into place only
when every file is complete (``os.rename`` of a folder is atomic on one file system), so an
interrupted export never leaves output that looks complete. Every export, successful or refused after
the session was found, is written to the store's audit table; a successful one is also announced to
the booking platform through the outbox (``export.created``).
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import math
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vigil.errors import ExportError
from vigil.model import GuestInfo
from vigil.store.records import RecordStore, SessionInfo

log = logging.getLogger(__name__)

FORMATS = ("wfdb", "edf", "pdf", "fhir", "csv")


@dataclass
class Progress:
    """A text progress bar on a stream (stderr), redrawn at most every `interval_s`; silent when disabled."""

    enabled: bool = False
    stream: IO[str] = field(default_factory=lambda: sys.stderr)
    label: str = "export"
    interval_s: float = 0.2
    total: float = 0.0
    done: float = 0.0
    _last: float = 0.0
    drawn: int = 0

    def add_total(self, units: float) -> None:
        """Announce more work."""
        self.total += units

    def advance(self, units: float) -> None:
        """Report work done; redraws when due."""
        self.done += units
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval_s:
            self._last = now
            self._draw()

    def _draw(self, final: bool = False) -> None:
        frac = 1.0 if final else min(1.0, self.done / self.total) if self.total > 0 else 0.0
        width = 30
        bar = "#" * int(frac * width)
        self.stream.write(f"\r{self.label} [{bar:<{width}}] {frac * 100:5.1f}%")
        self.stream.flush()
        self.drawn += 1

    def finish(self) -> None:
        """Draw 100 % and end the line."""
        if self.enabled:
            self.done = max(self.done, self.total)
            self._draw(final=True)
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class ExportContext:
    """Everything a format writer needs (the store is open; names are decrypted)."""

    store: RecordStore
    session: SessionInfo
    guests: list[GuestInfo]
    from_wall: float | None
    to_wall: float | None
    thresholds: Callable[[str], Any] | None = None  # mat -> vigil.config.Thresholds
    progress: Progress = field(default_factory=Progress)
    warnings: list[str] = field(default_factory=list)

    @property
    def sid(self) -> str:
        """Session id."""
        return self.session.id

    def guest(self, mat: str) -> GuestInfo:
        """GuestInfo of `mat` (a bare one for waveform-only mats)."""
        return next((g for g in self.guests if g.mat == mat), GuestInfo(mat=mat, display_name=""))

    def session_end(self) -> float | None:
        """End of the session (None while ongoing)."""
        return self.session.ended_wall


@dataclass
class ExportResult:
    """What an export produced."""

    path: Path  # the final folder
    files: list[Path]
    bytes: int
    seconds: float
    guests: list[str]
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        """JSON summary (the CLI's --json output)."""
        return {"path": str(self.path), "files": [p.name for p in self.files], "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "guests": self.guests, "warnings": self.warnings}


_OFFSET = re.compile(r"^\+(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_time(text: str, session_start: float) -> float:
    """Wall time (Unix s) from ISO 8601 (naive = UTC), Unix seconds, or an offset from the session start.

    Offsets: ``+90m``, ``+1h30m``, ``+45s``, ``+1h``; ISO: ``2026-11-26T22:00:00Z`` or ``...+01:00``.
    """
    s = text.strip()
    m = _OFFSET.match(s)
    if m and any(m.groups()):
        h, mi, se = (float(g) if g else 0.0 for g in m.groups())
        return session_start + h * 3600 + mi * 60 + se
    try:
        return float(s)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ExportError(f"cannot read time {text!r}: use ISO 8601 (2026-11-26T22:00:00Z), Unix seconds, "
                          "or an offset from the session start (+90m, +1h30m)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def iso(wall: float) -> str:
    """UTC ISO 8601 with milliseconds and a Z."""
    t = dt.datetime.fromtimestamp(wall, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def find_session(store: RecordStore, sid: str) -> SessionInfo:
    """The session `sid` (a unique prefix is accepted); ExportError naming what exists otherwise."""
    sessions = store.sessions()
    exact = [s for s in sessions if s.id == sid]
    match = exact or [s for s in sessions if s.id.startswith(sid)]
    if len(match) == 1:
        return match[0]
    if not match:
        known = ", ".join(s.id for s in sessions[-5:]) or "none"
        raise ExportError(f"unknown session {sid!r} in {store.path} (latest: {known}; list them with `vigil sessions`)")
    raise ExportError(f"session prefix {sid!r} is ambiguous: {', '.join(s.id for s in match)}")


def session_mats(store: RecordStore, sid: str) -> list[str]:
    """Every mat of a session: guests, devices and waveform owners."""
    conn = store._conn  # noqa: SLF001 - mats only: no guest name is decrypted here
    mats = {r[0] for r in conn.execute("SELECT mat FROM guests WHERE session_id=?", (sid,))}
    mats |= {m for _d, _p, m in store.devices(sid) if m}
    mats |= {r[0] for r in conn.execute(
        "SELECT DISTINCT mat FROM waveform_chunks WHERE session_id=? AND mat IS NOT NULL", (sid,))}
    return sorted(mats, key=lambda m: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", m)])  # A2 < A10


def has_data(store: RecordStore, sid: str, mat: str, from_wall: float | None, to_wall: float | None) -> bool:
    """True when the guest has waveforms, readings or alarm events in the range."""
    conn = store._conn  # noqa: SLF001
    lo = -math.inf if from_wall is None else from_wall
    hi = math.inf if to_wall is None else to_wall
    q = [("SELECT 1 FROM waveform_chunks WHERE session_id=? AND mat=? AND wall_end>=? AND wall_end-n/fs<=? LIMIT 1"),
         "SELECT 1 FROM readings WHERE session_id=? AND mat=? AND wall>=? AND wall<=? LIMIT 1",
         "SELECT 1 FROM alarm_events WHERE session_id=? AND guest=? AND wall>=? AND wall<=? LIMIT 1"]
    return any(conn.execute(sql, (sid, mat, lo, hi)).fetchone() for sql in q)


def operator_name(explicit: str | None) -> str:
    """Who exports: --operator, else the OS user."""
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid:{os.getuid()}"


def safe_name(text: str) -> str:
    """A file-name-safe token."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "_"


@contextmanager
def staging(out_dir: Path, final_name: str) -> Iterator[Path]:
    """A hidden staging folder in `out_dir`, renamed to `final_name` on success and removed on failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / final_name
    if final.exists():
        raise ExportError(f"{final} already exists: remove it or choose another --out")
    tmp = out_dir / f".{final_name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(mode=0o700)
    try:
        yield tmp
        for f in tmp.iterdir():  # data on disk before the folder appears complete
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def record_export(store: RecordStore, *, operator: str, session: SessionInfo, mats: list[str], fmt: str,
                  from_wall: float | None, to_wall: float | None, result: ExportResult | None,
                  error: str | None = None, wall: float | None = None) -> str | None:
    """Audit the export (who, what, when) and, when it succeeded, enqueue ``export.created`` for booking."""
    from vigil.sync.booking import make_event

    now = time.time() if wall is None else wall
    detail: dict[str, Any] = {"session": session.id, "guests": mats, "format": fmt, "from": from_wall,
                              "to": to_wall}
    if result is None:
        detail["error"] = error or "failed"
        store.audit(operator, "export.refused", detail, wall=now)
        store.flush()
        return None
    detail |= {"files": [p.name for p in result.files], "bytes": result.bytes, "folder": result.path.name}
    event_id = f"evt_export_{uuid.uuid4().hex}"
    detail["event_id"] = event_id
    store.audit(operator, "export", detail, wall=now)
    data = {"session_id": session.id, "guests": mats, "format": fmt, "operator": operator,
            "from": iso(from_wall) if from_wall is not None else None,
            "to": iso(to_wall) if to_wall is not None else None,
            "files": len(result.files), "bytes": result.bytes}
    event = make_event("export.created", data, source=f"vigil/{session.room}", wall=now, event_id=event_id)
    store.enqueue("booking", "export.created", event, event_id, wall=now)
    store.flush()
    return event_id
