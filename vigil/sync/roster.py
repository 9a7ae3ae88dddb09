"""Session roster pulled from the booking platform: validated, cached for offline use, published.

``GET <roster_url>`` (signed like events, over an empty body) answers the JSON of `Roster`. A changed
roster is written atomically to ``roster.json`` next to the record store and published retained on
``vigil/<room>/roster`` so the running daemon picks it up without a restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vigil.config import Contact, ThresholdOverrides
from vigil.errors import SyncError
from vigil.sync.booking import SIGNATURE_HEADER, sign_header

log = logging.getLogger(__name__)

ROSTER_FILE = "roster.json"


class RosterGuest(BaseModel):
    """One guest of the session as the booking platform knows them."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64)  # booking platform's guest id (FHIR Patient identifier)
    mat: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,16}$")]
    display_name: str = Field(min_length=1, max_length=80)
    devices: list[str] = []
    baseline_qtc_ms: float | None = Field(None, gt=250, lt=700)
    thresholds: ThresholdOverrides | None = None
    responsible_clinician_email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Roster(BaseModel):
    """The roster document (``"v": 1``)."""

    model_config = ConfigDict(extra="forbid")
    v: int = 1
    room: str
    session_id: str | None = None
    updated: str | None = None
    guests: list[RosterGuest] = []
    on_call: list[Contact] = []

    @model_validator(mode="after")
    def _unique(self) -> Roster:
        mats = [g.mat for g in self.guests]
        if len(mats) != len(set(mats)):
            raise ValueError(f"a mat appears twice: {sorted({m for m in mats if mats.count(m) > 1})}")
        devs = [d for g in self.guests for d in g.devices]
        if len(devs) != len(set(devs)):
            raise ValueError(f"a device is assigned twice: {sorted({d for d in devs if devs.count(d) > 1})}")
        return self


class RosterError(SyncError):
    """The roster could not be fetched or is malformed."""


def parse_roster(raw: bytes | str) -> Roster:
    """Validate roster JSON; RosterError lists every problem with its location (no PHI values)."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise RosterError(f"malformed roster: not JSON ({exc})") from None
    try:
        return Roster.model_validate(data)
    except ValidationError as exc:
        where = "; ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors()[:5])
        raise RosterError(f"malformed roster: {exc.error_count()} problem(s): {where}") from None


def cache_path(store_path: Path) -> Path:
    """The roster cache file next to the record store."""
    return store_path.parent / ROSTER_FILE


def write_cache(path: Path, roster: Roster) -> None:
    """Atomically write the roster cache (mode 600: it holds names)."""
    # a private temporary name: the daemon and `vigil sync` both write this cache
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(roster.model_dump_json(indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_cache(path: Path) -> Roster | None:
    """The cached roster, None when there is none; RosterError when it is unreadable or malformed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RosterError(f"cannot read the roster cache: {exc.strerror or exc}") from None
    return parse_roster(raw)


def load_cache(path: Path) -> Roster | None:
    """The cached roster, or None when there is none (a corrupt cache is logged and ignored)."""
    try:
        return read_cache(path)
    except RosterError as exc:
        log.error("roster cache %s unusable: %s", path, exc)
        return None


class RosterPuller:
    """Fetches the roster with ETag; returns a new Roster only when it changed."""

    def __init__(self, url: str, secret: bytes, *, session: Any, cache: Path, timeout_s: float = 10.0) -> None:
        self.url = url
        self._secret = secret
        self._session = session
        self.cache = cache
        self._timeout = timeout_s
        self._etag: str | None = None
        self.current: Roster | None = load_cache(cache)
        self.last_error: str | None = None

    def fetch(self) -> Roster | None:
        """One pull; the new roster when it changed (cache written), else None. Raises RosterError."""
        import requests

        headers = {SIGNATURE_HEADER: sign_header(self._secret, b"", int(time.time())), "Accept": "application/json"}
        if self._etag:
            headers["If-None-Match"] = self._etag
        try:
            r = self._session.get(self.url, headers=headers, timeout=self._timeout)
        except requests.exceptions.RequestException as exc:
            raise RosterError(f"roster unreachable ({type(exc).__name__}); using the cached roster") from None
        if r.status_code == 304:
            return None
        if r.status_code != 200:
            raise RosterError(f"roster request answered HTTP {r.status_code}; using the cached roster")
        roster = parse_roster(r.content)
        self._etag = r.headers.get("ETag")
        if self.current is not None and roster == self.current:
            return None
        write_cache(self.cache, roster)
        self.current = roster
        log.info("roster changed: %d guest(s), %d on-call contact(s)", len(roster.guests), len(roster.on_call))
        return roster
