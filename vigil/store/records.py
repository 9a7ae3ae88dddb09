"""RecordStore: the SQLite record store of one box (WAL, batched commits, transactional outbox).

Durability (DESIGN §5): the database runs in WAL mode with ``synchronous=FULL``. In WAL mode, FULL
fsyncs the WAL at every commit, so a committed batch survives a power cut, not only a kill -9
(NORMAL would survive kill -9 but could lose every commit since the last checkpoint on power loss).
Commits happen about once a second, so the cost is one fsync per second.

Batching: every ``add_*``/``enqueue``/``audit`` call appends statements to an in-memory batch; the
batch (with the outbox rows announcing its records) is written in ONE short IMMEDIATE transaction by
``maybe_commit()`` once ``commit_interval_s`` has elapsed, or by ``flush()``. Nothing is visible to
other connections before that commit. Keeping the batch in memory rather than in an open SQLite
transaction means the write lock is held for milliseconds (the sync process writes the same file),
and a failed commit (disk full, read-only) rolls back cleanly while the batch stays queued for the
next attempt. Waveform samples are buffered per channel and cut into a chunk when the buffer reaches
``chunk_seconds`` or at the next commit, whichever comes first, so a kill loses at most the last
uncommitted ``commit_interval_s`` of every stream.

One RecordStore belongs to one thread at a time; a reader in another thread or process opens its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import math
import os
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.errors import IntegrityError, StoreError
from vigil.model import (
    AlarmEvent,
    AlarmState,
    Beat,
    ChannelKind,
    GuestInfo,
    Measurement,
    Metric,
    NumericReading,
    Priority,
    RhythmEpisode,
    SampleBlock,
)
from vigil.store import codec, migrations
from vigil.store.crypto import Sealer, chunk_aad, chunk_layout, is_sealed, phi_aad

log = logging.getLogger(__name__)

_KEY_CHECK_PLAINTEXT = b"vigil record store key check v1"
_KEY_CHECK_AAD = b"vigil-keycheck/1"
_SEALED_TABLES = ("waveform_chunks", "guests", "outbox")
_CHUNK_SQL = ("INSERT INTO waveform_chunks (session_id, mat, device_id, channel, kind, fs, unit, gain, seq, n, "
              "t_mono, wall, wall_end, encrypted, data) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")


class StoreWriteError(StoreError):
    """A write to the store failed; `kind` is full|readonly|io|busy|corrupt|other."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def classify(exc: BaseException) -> str:
    """Map an sqlite3/OS error to full|readonly|io|busy|corrupt|other."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc).lower()
    if primary == 13 or "disk is full" in text or isinstance(exc, OSError) and exc.errno == 28:
        return "full"
    if primary == 8 or "readonly" in text or "read-only" in text or isinstance(exc, OSError) and exc.errno == 30:
        return "readonly"
    if primary in (5, 6) or "locked" in text or "busy" in text:
        return "busy"
    if primary in (11, 26) or "malformed" in text or "not a database" in text:
        return "corrupt"
    if primary == 10 or "i/o error" in text or isinstance(exc, OSError):
        return "io"
    return "other"


_KIND_TEXT = {
    "full": "the disk is full",
    "readonly": "the storage is read-only",
    "io": "a disk I/O error occurred",
    "busy": "the database stayed locked by another process",
    "corrupt": "the database file is damaged",
    "other": "an unexpected database error occurred",
}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"cannot store {type(obj).__name__} as JSON")


def dumps(obj: Any) -> str:
    """JSON text for a detail/payload dict (numpy scalars, enums, dataclasses allowed)."""
    return json.dumps(obj, default=_json_default, separators=(",", ":"), sort_keys=True)


def _nan_to_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _none_to_nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One monitoring session (one ceremony in one room)."""

    id: str
    room: str
    started_wall: float
    ended_wall: float | None
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class GapRecord:
    """A recorded hole in one channel's samples (seq from_seq up to, not including, to_seq)."""

    device_id: str
    channel: str
    from_seq: int
    to_seq: int
    reason: str
    wall: float


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit-log row."""

    id: int
    wall: float
    actor: str
    action: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox event claimed for delivery."""

    id: int
    destination: str
    event_type: str
    payload: dict[str, Any]
    idempotency_key: str
    created_wall: float
    attempts: int
    last_error: str | None


@dataclass(slots=True)
class OutboxStats:
    """Outbox counts of one destination."""

    pending: int = 0
    inflight: int = 0
    delivered: int = 0
    dead: int = 0
    oldest_pending_wall: float | None = None
    next_retry_at: float | None = None
    last_error: str | None = None


@dataclass(slots=True)
class _ChunkBuffer:
    mat: str | None
    kind: str
    fs: float
    unit: str
    gain: float
    seq: int
    t_mono: float
    wall: float
    wall_end: float
    parts: list[npt.NDArray[np.int32]] = field(default_factory=list)
    n: int = 0

    @property
    def end_seq(self) -> int:
        return self.seq + self.n


def _fs_readonly(p: Path) -> bool:
    """True when the folder of `p` lies on a read-only mounted file system."""
    try:
        return bool(os.statvfs(p.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _connect(p: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """Connect read-write; on read-only storage fall back to a read-only connection (data stays readable)."""
    try:
        return _connect_rw(p, busy_timeout_s)
    except sqlite3.Error:
        if not (p.exists() and (_fs_readonly(p) or not os.access(p.parent, os.W_OK) or not os.access(p, os.W_OK))):
            raise
    wal = p.with_name(p.name + "-wal")
    # without a WAL to read, `immutable` lets SQLite read without creating the -shm file it cannot write
    immutable = not (wal.exists() and wal.stat().st_size > 0)
    uri = "file:" + urllib.parse.quote(str(p)) + "?mode=ro" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
    if migrations.current_version(conn) != migrations.LATEST:
        conn.close()
        raise StoreWriteError(f"record store {p} is on read-only storage and needs a schema migration", "readonly")
    log.warning("record store %s is on read-only storage: opened read-only, writes will fail", p)
    return conn


def _connect_rw(p: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """Connect with WAL, synchronous=FULL and busy_timeout; migrate when the schema is behind."""
    conn = sqlite3.connect(str(p), isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"record store {p}: cannot switch to WAL mode (got {mode!r}); "
                             "put it on a local filesystem")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA journal_size_limit=67108864")
        if migrations.current_version(conn) != migrations.LATEST:
            applied = migrations.migrate(conn)
            if applied:
                log.info("record store %s migrated to schema version %d", p, applied[-1])
    except BaseException:
        conn.close()
        raise
    return conn


class RecordStore:
    """The SQLite record store; see the module docstring for durability and batching."""

    def __init__(self, conn: sqlite3.Connection, path: Path, key: bytes | None, commit_interval_s: float,
                 chunk_seconds: float, clock: Callable[[], float], max_pending_bytes: int) -> None:
        self._conn = conn
        self.path = path
        self._sealer = Sealer(key) if key is not None else None
        self.commit_interval_s = commit_interval_s
        self.chunk_seconds = chunk_seconds
        self._clock = clock
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._pending_bytes = 0
        self._max_pending_bytes = max_pending_bytes
        self._buffers: dict[tuple[str, str, str], _ChunkBuffer] = {}
        self._last_commit = clock()
        self.commits = 0
        self.dropped_chunks = 0
        self.encrypted_store = False
        self._closed = False
        self._busy_timeout_s = 10.0
        self._sealed_from: dict[str, int] = {}
        self._reopen = False  # reconnect before the next commit (after a read-only or I/O failure)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], key: bytes | None = None, commit_interval_s: float = 1.0,
             chunk_seconds: float = 2.0, *, busy_timeout_s: float = 10.0,
             clock: Callable[[], float] = time.monotonic, max_pending_bytes: int = 64 << 20) -> RecordStore:
        """Open (creating and migrating if needed) the store at `path`; raise StoreError with the reason."""
        p = Path(path)
        if not p.parent.is_dir():
            raise StoreError(f"record store folder {p.parent} does not exist (create it: mkdir -p {p.parent})")
        try:
            conn = _connect(p, busy_timeout_s)
        except sqlite3.Error as exc:
            kind = classify(exc)
            raise StoreWriteError(f"cannot open record store {p}: {_KIND_TEXT[kind]} ({exc})", kind) from exc
        try:
            store = cls(conn, p, key, commit_interval_s, chunk_seconds, clock, max_pending_bytes)
            store._busy_timeout_s = busy_timeout_s
            store._check_key()
            store._load_sealed_from()
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            kind = classify(exc)
            raise StoreWriteError(f"cannot open record store {p}: {_KIND_TEXT[kind]} ({exc})", kind) from exc
        return store

    def _check_key(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key='key_check'").fetchone()
        self.encrypted_store = row is not None
        if self._sealer is None:
            if row is not None:
                log.warning("record store %s holds encrypted data but no key is configured: "
                            "encrypted chunks and guest names cannot be read or written", self.path)
            return
        if row is None:
            blob = self._sealer.seal(_KEY_CHECK_PLAINTEXT, _KEY_CHECK_AAD)
            self._conn.execute("BEGIN IMMEDIATE")
            if self._conn.execute("SELECT 1 FROM meta WHERE key='key_check'").fetchone() is None:
                # rows from here on must be sealed: a row in clear past these ids is a forgery
                sealed_from = {t: (self._conn.execute(f"SELECT MAX(rowid) FROM {t}").fetchone()[0] or 0) + 1
                               for t in _SEALED_TABLES}
                self._conn.execute("INSERT INTO meta (key, value) VALUES ('key_check', ?)", (blob,))
                self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sealed_from', ?)",
                                   (dumps(sealed_from),))
            self._conn.execute("COMMIT")
            row = self._conn.execute("SELECT value FROM meta WHERE key='key_check'").fetchone()
            self.encrypted_store = True
        try:
            ok = self._sealer.open(bytes(row[0]), _KEY_CHECK_AAD, what="key check") == _KEY_CHECK_PLAINTEXT
        except IntegrityError:
            ok = False
        if not ok:
            raise IntegrityError(f"record store {self.path}: the configured store key is not the key this "
                                 "store was written with (wrong key file?)")

    def _load_sealed_from(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key='sealed_from'").fetchone()
        self._sealed_from = json.loads(row[0]) if row else {}

    def _check_clear(self, table: str, rowid: int, what: str) -> None:
        """Refuse a row stored in clear where the store had already started sealing (a forged row)."""
        start = self._sealed_from.get(table)
        if start is not None and rowid >= start:
            raise IntegrityError(f"{what} is stored in clear in an encrypted store: it was altered or forged")

    @property
    def schema_version(self) -> int:
        """Applied schema version."""
        return migrations.current_version(self._conn)

    @property
    def encrypted(self) -> bool:
        """True when a key is configured (new waveforms, names and outbox payloads are sealed)."""
        return self._sealer is not None

    # ------------------------------------------------------------------ batching

    def _add(self, sql: str, params: tuple[Any, ...], size: int = 64) -> None:
        if self._closed:
            raise StoreError("record store is closed")
        self._pending.append((sql, params))
        self._pending_bytes += size
        if self._pending_bytes > self._max_pending_bytes:
            self._shed()

    def _shed(self) -> None:
        """Drop the oldest queued waveform chunks when commits keep failing (memory bound)."""
        target = self._max_pending_bytes * 9 // 10
        kept: list[tuple[str, tuple[Any, ...]]] = []
        dropped = 0
        for sql, params in self._pending:
            if self._pending_bytes > target and sql is _CHUNK_SQL:
                self._pending_bytes -= len(params[-1]) + 64
                dropped += 1
                continue
            kept.append((sql, params))
        self._pending = kept
        if dropped:
            self.dropped_chunks += dropped
            log.error("record store cannot commit and its queue is full: dropped %d oldest waveform chunks "
                      "(%d dropped in total)", dropped, self.dropped_chunks)

    @property
    def pending(self) -> int:
        """Statements waiting for the next commit (plus channels with buffered samples)."""
        return len(self._pending) + sum(1 for b in self._buffers.values() if b.n)

    def seconds_until_commit(self) -> float:
        """Seconds before maybe_commit() will commit (<= 0 when due)."""
        return self.commit_interval_s - (self._clock() - self._last_commit)

    def maybe_commit(self) -> bool:
        """Commit the pending batch if commit_interval_s has elapsed since the last commit (attempt)."""
        if self._clock() - self._last_commit < self.commit_interval_s:
            return False
        if not self._pending and not self._buffers:
            self._last_commit = self._clock()
            return False
        self._commit()
        return True

    def flush(self) -> None:
        """Commit everything pending now (including partly filled waveform chunks)."""
        self._commit()

    def _commit(self) -> None:
        self._last_commit = self._clock()
        for key in list(self._buffers):
            self._emit(key)
        if not self._pending:
            return
        batch = self._pending
        try:
            if self._reopen:
                self._reconnect()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            i = 0
            while i < len(batch):
                sql = batch[i][0]
                j = i + 1
                while j < len(batch) and batch[j][0] == sql:
                    j += 1
                if j - i == 1:
                    conn.execute(sql, batch[i][1])
                else:
                    conn.executemany(sql, [params for _, params in batch[i:j]])
                i = j
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            kind = classify(exc)
            self._reopen = kind in ("readonly", "io")
            raise StoreWriteError(f"record store {self.path}: commit of {len(batch)} rows failed: "
                                  f"{_KIND_TEXT[kind]} ({exc}); the batch stays queued and earlier data is intact",
                                  kind) from exc
        self._pending = []
        self._pending_bytes = 0
        self.commits += 1

    def _reconnect(self) -> None:
        """Replace the connection (a connection opened on read-only storage stays read-only)."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._conn = _connect(self.path, self._busy_timeout_s)
        self._reopen = False
        log.info("record store %s reconnected", self.path)

    def close(self) -> None:
        """Commit what is pending and close; the connection is closed even if the commit fails."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._conn.close()

    def discard_pending(self) -> int:
        """Forget the pending batch (after an unrecoverable failure); return how many rows were dropped."""
        n = len(self._pending) + len(self._buffers)
        self._pending, self._pending_bytes, self._buffers = [], 0, {}
        return n

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writers

    def start_session(self, room: str, wall: float, meta: dict[str, Any] | None = None) -> str:
        """Create a session and return its id (sortable: UTC start time + random suffix)."""
        sid = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall)) + "-" + uuid.uuid4().hex[:8]
        self._add("INSERT INTO sessions (id, room, started_wall, meta) VALUES (?,?,?,?)",
                  (sid, room, float(wall), dumps(meta or {})))
        return sid

    def end_session(self, sid: str, wall: float) -> None:
        """Mark a session as ended."""
        self._add("UPDATE sessions SET ended_wall=? WHERE id=?", (float(wall), sid))

    def _need_key_for(self, what: str) -> None:
        if self._sealer is None and self.encrypted_store:
            raise StoreError(f"record store {self.path} is encrypted but no key is configured: "
                             f"refusing to write {what} in clear")

    def upsert_guest(self, sid: str, guest: GuestInfo) -> None:
        """Record (or update) the guest on a mat; the display name is sealed when a key is set."""
        self._need_key_for("a guest name")
        name = guest.display_name.encode("utf-8")
        if self._sealer is not None:
            name = self._sealer.seal(name, phi_aad("guest.name", sid, guest.mat))
        self._add("INSERT INTO guests (session_id, mat, display_name, baseline_qtc_ms, devices) VALUES (?,?,?,?,?) "
                  "ON CONFLICT (session_id, mat) DO UPDATE SET display_name=excluded.display_name, "
                  "baseline_qtc_ms=excluded.baseline_qtc_ms, devices=excluded.devices",
                  (sid, guest.mat, name, guest.baseline_qtc_ms, dumps(list(guest.devices))))

    def upsert_device(self, sid: str, device_id: str, profile: str, mat: str | None) -> None:
        """Record which device (profile) sits on which mat in a session."""
        self._add("INSERT INTO devices (session_id, device_id, profile, mat) VALUES (?,?,?,?) "
                  "ON CONFLICT (session_id, device_id) DO UPDATE SET profile=excluded.profile, mat=excluded.mat",
                  (sid, device_id, profile, mat))

    def add_block(self, sid: str, mat: str | None, block: SampleBlock) -> None:
        """Buffer a sample block; full chunks (chunk_seconds) are encoded at once, the rest at commit."""
        self._need_key_for("waveforms")
        key = (sid, block.device_id, block.channel)
        buf = self._buffers.get(key)
        kind = block.kind.value if isinstance(block.kind, ChannelKind) else str(block.kind)
        if buf is not None and (buf.end_seq != block.seq or buf.fs != block.fs or buf.kind != kind
                                or buf.unit != block.unit or buf.gain != block.gain or buf.mat != mat):
            self._emit(key)
            buf = None
        if buf is None:
            buf = _ChunkBuffer(mat=mat, kind=kind, fs=float(block.fs), unit=block.unit, gain=float(block.gain),
                               seq=int(block.seq), t_mono=float(block.t_mono), wall=float(block.wall),
                               wall_end=float(block.wall))
            self._buffers[key] = buf
        samples = np.asarray(block.samples)
        if samples.dtype != np.int32:
            samples = samples.astype(np.int32)
        buf.parts.append(samples)
        buf.n += len(samples)
        buf.wall_end = float(block.wall)
        if buf.n >= self._chunk_len(buf.fs):
            self._emit(key)

    def _chunk_len(self, fs: float) -> int:
        return max(1, round(self.chunk_seconds * fs))

    def _emit(self, key: tuple[str, str, str]) -> None:
        buf = self._buffers.pop(key, None)
        if buf is None or buf.n == 0:
            return
        sid, device_id, channel = key
        samples = np.concatenate(buf.parts) if len(buf.parts) > 1 else buf.parts[0]
        step = self._chunk_len(buf.fs)
        for start in range(0, len(samples), step):
            piece = samples[start:start + step]
            seq = buf.seq + start
            data = codec.encode(piece)
            if self._sealer is not None:
                layout = chunk_layout(buf.kind, buf.fs, buf.unit, buf.gain, len(piece))
                data = self._sealer.seal(data, chunk_aad(sid, device_id, channel, seq, layout))
            offset = start / buf.fs
            wall = buf.wall + offset if start else buf.wall
            wall_end = max(wall, min(buf.wall_end, buf.wall + (start + len(piece)) / buf.fs))
            self._add(_CHUNK_SQL, (sid, buf.mat, device_id, channel, buf.kind, buf.fs, buf.unit, buf.gain, seq,
                                   len(piece), buf.t_mono + offset, wall, wall_end,
                                   int(self._sealer is not None), data), size=len(data) + 64)

    def add_gap(self, sid: str, device_id: str, channel: str, from_seq: int, to_seq: int, reason: str,
                wall: float | None = None) -> None:
        """Record a hole in a channel (never padded)."""
        self._add("INSERT INTO gaps (session_id, device_id, channel, from_seq, to_seq, reason, wall) "
                  "VALUES (?,?,?,?,?,?,?)",
                  (sid, device_id, channel, int(from_seq), int(to_seq), reason,
                   float(wall if wall is not None else time.time())))

    def add_reading(self, sid: str, mat: str | None, reading: NumericReading) -> None:
        """Record one numeric reading (NaN is stored as NULL)."""
        metric = reading.metric.value if isinstance(reading.metric, Metric) else str(reading.metric)
        self._add("INSERT INTO readings (session_id, mat, device_id, metric, value, t_mono, wall, flags) "
                  "VALUES (?,?,?,?,?,?,?,?)",
                  (sid, mat, reading.device_id, metric, _nan_to_none(reading.value), float(reading.t_mono),
                   float(reading.wall), ",".join(reading.flags)))

    def add_beats(self, sid: str, mat: str | None, channel: str, beats: Sequence[Beat]) -> None:
        """Record detected beats (sample indices in the stream's seq numbering)."""
        for b in beats:
            self._add("INSERT INTO beats (session_id, mat, channel, sample, label) VALUES (?,?,?,?,?)",
                      (sid, mat, channel or b.channel, int(b.sample), b.label), size=48)

    def add_measurement(self, sid: str, mat: str | None, m: Measurement) -> None:
        """Record one analysis measurement with its detail dict."""
        metric = m.metric.value if isinstance(m.metric, Metric) else str(m.metric)
        self._add("INSERT INTO measurements (session_id, mat, channel, metric, value, sample, detail) "
                  "VALUES (?,?,?,?,?,?,?)",
                  (sid, mat, m.channel, metric, _nan_to_none(m.value), int(m.sample), dumps(m.detail)))

    def add_episode(self, sid: str, mat: str | None, ep: RhythmEpisode) -> None:
        """Record a rhythm episode; a later update with the same start sets its end."""
        self._add('INSERT INTO episodes (session_id, mat, channel, label, start, "end") VALUES (?,?,?,?,?,?) '
                  'ON CONFLICT (session_id, mat, channel, label, start) DO UPDATE SET "end"=excluded."end"',
                  (sid, mat or "", ep.channel, ep.label, int(ep.start), None if ep.end is None else int(ep.end)))

    def add_alarm_event(self, sid: str, ev: AlarmEvent) -> None:
        """Record one alarm transition."""
        self._add("INSERT INTO alarm_events (session_id, guest, condition, priority, event, state, t_mono, wall, "
                  "operator, reason, value, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                  (sid, ev.guest, ev.condition, int(ev.priority), ev.event,
                   ev.state.value if isinstance(ev.state, AlarmState) else str(ev.state), float(ev.t_mono),
                   float(ev.wall), ev.operator, ev.reason, _nan_to_none(ev.value), dumps(ev.detail)))

    def audit(self, actor: str, action: str, detail: dict[str, Any] | None = None,
              wall: float | None = None) -> None:
        """Append to the audit log (keep PHI out of `detail`)."""
        self._add("INSERT INTO audit (wall, actor, action, detail) VALUES (?,?,?,?)",
                  (float(wall if wall is not None else time.time()), actor, action, dumps(detail or {})))

    def enqueue(self, destination: str, event_type: str, payload: dict[str, Any], idempotency_key: str,
                wall: float | None = None) -> None:
        """Add an outbox event in the same batch as the records it announces (duplicate keys are ignored)."""
        self._need_key_for("outbox payloads")
        body = dumps(payload).encode("utf-8")
        if self._sealer is not None:
            body = self._sealer.seal(body, phi_aad("outbox", destination, idempotency_key))
        self._add("INSERT INTO outbox (destination, event_type, payload, idempotency_key, created_wall) "
                  "VALUES (?,?,?,?,?) ON CONFLICT (destination, idempotency_key) DO NOTHING",
                  (destination, event_type, body, idempotency_key,
                   float(wall if wall is not None else time.time())), size=len(body) + 64)

    # ------------------------------------------------------------------ readers

    def _blob(self, blob: bytes, encrypted: int, aad: bytes, what: str) -> bytes:
        if not encrypted:
            return blob
        if self._sealer is None:
            raise StoreError(f"{what} is encrypted and no store key is configured (set store.key_file)")
        return self._sealer.open(blob, aad, what=what)

    def sessions(self) -> list[SessionInfo]:
        """All sessions, oldest first."""
        rows = self._conn.execute(
            "SELECT id, room, started_wall, ended_wall, meta FROM sessions ORDER BY started_wall, id").fetchall()
        return [SessionInfo(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def session(self, sid: str) -> SessionInfo | None:
        """One session by id."""
        return next((s for s in self.sessions() if s.id == sid), None)

    def guests(self, sid: str) -> list[GuestInfo]:
        """Guests of a session with their names decrypted (IntegrityError if tampered)."""
        out = []
        for rowid, mat, name, qtc, devices in self._conn.execute(
                "SELECT rowid, mat, display_name, baseline_qtc_ms, devices FROM guests WHERE session_id=? "
                "ORDER BY mat", (sid,)):
            raw = bytes(name)
            what = f"guest name on mat {mat}"
            if is_sealed(raw):
                raw = self._blob(raw, 1, phi_aad("guest.name", sid, mat), what)
            else:
                self._check_clear("guests", rowid, what)
            out.append(GuestInfo(mat=mat, display_name=raw.decode("utf-8"), baseline_qtc_ms=qtc,
                                 devices=tuple(json.loads(devices))))
        return out

    def devices(self, sid: str) -> list[tuple[str, str, str | None]]:
        """(device_id, profile, mat) of a session."""
        return [tuple(r) for r in self._conn.execute(  # type: ignore[misc]
            "SELECT device_id, profile, mat FROM devices WHERE session_id=? ORDER BY device_id", (sid,))]

    def iter_chunks(self, sid: str, mat: str | None = None, channel: str | None = None,
                    from_wall: float | None = None, to_wall: float | None = None, *,
                    device_id: str | None = None, batch: int = 64) -> Iterator[SampleBlock]:
        """Stream a session's waveform chunks in (device, channel, seq) order, decoding one batch at a time."""
        where: list[str] = ["session_id=?"]
        args: list[Any] = [sid]
        for col, val in (("mat", mat), ("channel", channel), ("device_id", device_id)):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        if from_wall is not None:
            where.append("wall_end>=?")
            args.append(from_wall)
        if to_wall is not None:
            where.append("wall<=?")
            args.append(to_wall)
        cur = self._conn.execute(
            "SELECT id, device_id, channel, kind, fs, unit, gain, seq, n, t_mono, wall, encrypted, data "
            f"FROM waveform_chunks WHERE {' AND '.join(where)} ORDER BY device_id, channel, seq, id", args)
        try:
            while rows := cur.fetchmany(batch):
                for rid, dev, ch, kind, fs, unit, gain, seq, n, t_mono, wall, enc, data in rows:
                    what = f"waveform chunk {dev}/{ch}@{seq}"
                    if not enc:
                        self._check_clear("waveform_chunks", rid, what)
                    aad = chunk_aad(sid, dev, ch, seq, chunk_layout(kind, fs, unit, gain, n))
                    blob = self._blob(bytes(data), enc, aad, what)
                    samples = codec.decode(blob)
                    if len(samples) != n:
                        raise IntegrityError(f"{what} holds {len(samples)} samples, its row says {n}")
                    try:
                        kind_v: ChannelKind | str = ChannelKind(kind)
                    except ValueError:
                        kind_v = kind
                    yield SampleBlock(device_id=dev, channel=ch, kind=kind_v, fs=fs, unit=unit,  # type: ignore[arg-type]
                                      gain=gain, seq=seq, samples=samples, t_mono=t_mono, wall=wall)
        finally:
            cur.close()

    def gaps(self, sid: str) -> list[GapRecord]:
        """Gaps of a session in (device, channel, from_seq) order."""
        return [GapRecord(*r) for r in self._conn.execute(
            "SELECT device_id, channel, from_seq, to_seq, reason, wall FROM gaps WHERE session_id=? "
            "ORDER BY device_id, channel, from_seq", (sid,))]

    def readings(self, sid: str, mat: str | None = None, metric: Metric | str | None = None,
                 from_wall: float | None = None, to_wall: float | None = None) -> Iterator[tuple[str | None, NumericReading]]:
        """Stream (mat, reading) in time order."""
        where: list[str] = ["session_id=?"]
        args: list[Any] = [sid]
        if mat is not None:
            where.append("mat=?")
            args.append(mat)
        if metric is not None:
            where.append("metric=?")
            args.append(metric.value if isinstance(metric, Metric) else metric)
        if from_wall is not None:
            where.append("wall>=?")
            args.append(from_wall)
        if to_wall is not None:
            where.append("wall<=?")
            args.append(to_wall)
        cur = self._conn.execute("SELECT mat, device_id, metric, value, t_mono, wall, flags FROM readings "
                                 f"WHERE {' AND '.join(where)} ORDER BY wall, id", args)
        for m, dev, met, value, t_mono, wall, flags in cur:
            yield m, NumericReading(device_id=dev, metric=Metric(met), value=_none_to_nan(value), t_mono=t_mono,
                                    wall=wall, flags=tuple(f for f in flags.split(",") if f))

    def beats(self, sid: str, mat: str | None = None, channel: str | None = None) -> Iterator[tuple[str | None, Beat]]:
        """Stream (mat, beat) in sample order."""
        where: list[str] = ["session_id=?"]
        args: list[Any] = [sid]
        if mat is not None:
            where.append("mat=?")
            args.append(mat)
        if channel is not None:
            where.append("channel=?")
            args.append(channel)
        cur = self._conn.execute(f"SELECT mat, channel, sample, label FROM beats WHERE {' AND '.join(where)} "
                                 "ORDER BY mat, channel, sample, id", args)
        for m, ch, sample, label in cur:
            yield m, Beat(sample=sample, label=label, channel=ch)

    def measurements(self, sid: str, mat: str | None = None,
                     metric: Metric | str | None = None) -> Iterator[tuple[str | None, Measurement]]:
        """Stream (mat, measurement) in sample order."""
        where: list[str] = ["session_id=?"]
        args: list[Any] = [sid]
        if mat is not None:
            where.append("mat=?")
            args.append(mat)
        if metric is not None:
            where.append("metric=?")
            args.append(metric.value if isinstance(metric, Metric) else metric)
        cur = self._conn.execute("SELECT mat, channel, metric, value, sample, detail FROM measurements "
                                 f"WHERE {' AND '.join(where)} ORDER BY mat, sample, id", args)
        for m, ch, met, value, sample, detail in cur:
            yield m, Measurement(metric=Metric(met), value=_none_to_nan(value), sample=sample, channel=ch,
                                 detail=json.loads(detail))

    def episodes(self, sid: str, mat: str | None = None) -> list[tuple[str, RhythmEpisode]]:
        """(mat, episode) of a session; ongoing episodes have end=None."""
        where: list[str] = ["session_id=?"]
        args: list[Any] = [sid]
        if mat is not None:
            where.append("mat=?")
            args.append(mat)
        rows = self._conn.execute(f'SELECT mat, channel, label, start, "end" FROM episodes WHERE {" AND ".join(where)} '
                                  "ORDER BY mat, start, id", args).fetchall()
        return [(m, RhythmEpisode(label=label, start=start, end=end, channel=ch)) for m, ch, label, start, end in rows]

    def alarm_events(self, sid: str, guest: str | None = None) -> Iterator[AlarmEvent]:
        """Stream alarm transitions of a session in the order they were recorded."""
        where: list[str] = ["session_id=?"]
        args: list[Any] = [sid]
        if guest is not None:
            where.append("guest=?")
            args.append(guest)
        cur = self._conn.execute("SELECT guest, condition, priority, event, state, t_mono, wall, operator, reason, "
                                 f"value, detail FROM alarm_events WHERE {' AND '.join(where)} ORDER BY id", args)
        for g, cond, prio, event, state, t_mono, wall, op, reason, value, detail in cur:
            yield AlarmEvent(guest=g, condition=cond, priority=Priority(prio), event=event, state=AlarmState(state),
                             t_mono=t_mono, wall=wall, operator=op, reason=reason, value=value,
                             detail=json.loads(detail))

    def audit_entries(self, since_id: int = 0, limit: int | None = None) -> Iterator[AuditEntry]:
        """Stream audit rows with id > since_id in order."""
        sql = "SELECT id, wall, actor, action, detail FROM audit WHERE id>? ORDER BY id"
        args: list[Any] = [since_id]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        for rid, wall, actor, action, detail in self._conn.execute(sql, args):
            yield AuditEntry(rid, wall, actor, action, json.loads(detail))

    def integrity_check(self) -> str:
        """Result of PRAGMA integrity_check ("ok" when the file is sound)."""
        rows = self._conn.execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(r[0]) for r in rows)

    # ------------------------------------------------------------------ outbox (used by `vigil sync`)

    def _immediate(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._pending or self._buffers:
            self._commit()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = fn(conn)
            conn.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            kind = classify(exc)
            raise StoreWriteError(f"record store {self.path}: outbox update failed: {_KIND_TEXT[kind]} ({exc})",
                                  kind) from exc

    def claim(self, destination: str, limit: int = 100, *, now: float | None = None,
              lease_s: float = 120.0) -> list[OutboxRow]:
        """Claim the head of one destination's ordered stream (rows due now, stopping at the first not due)."""
        t = time.time() if now is None else now

        def run(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows = conn.execute(
                "SELECT id, status, retry_at, claimed_at, event_type, payload, idempotency_key, created_wall, "
                "attempts, last_error FROM outbox WHERE destination=? AND status IN ('pending','inflight') "
                "ORDER BY id LIMIT ?", (destination, limit)).fetchall()
            taken = []
            for r in rows:
                if r[1] == "inflight" and r[3] is not None and r[3] + lease_s > t:
                    break
                if r[2] is not None and r[2] > t:
                    break
                taken.append(r)
            conn.executemany("UPDATE outbox SET status='inflight', claimed_at=? WHERE id=?",
                             [(t, r[0]) for r in taken])
            return taken

        taken: list[tuple[Any, ...]] = self._immediate(run)
        out = []
        for rid, _s, _r, _c, etype, payload, ikey, created, attempts, err in taken:
            raw = bytes(payload)
            if is_sealed(raw):
                raw = self._blob(raw, 1, phi_aad("outbox", destination, ikey), f"outbox event {rid}")
            else:
                self._check_clear("outbox", rid, f"outbox event {rid}")
            out.append(OutboxRow(rid, destination, etype, json.loads(raw), ikey, created, attempts, err))
        return out

    def mark_delivered(self, ids: Sequence[int], *, now: float | None = None) -> None:
        """Mark claimed rows delivered."""
        t = time.time() if now is None else now
        self._immediate(lambda c: c.executemany(
            "UPDATE outbox SET status='delivered', delivered_wall=?, attempts=attempts+1, last_error=NULL "
            "WHERE id=?", [(t, i) for i in ids]))

    def mark_failed(self, row_id: int, error: str, retry_at: float) -> None:
        """Put a row back at the head of its stream, not to be retried before `retry_at` (wall seconds)."""
        self._immediate(lambda c: c.execute(
            "UPDATE outbox SET status='pending', attempts=attempts+1, last_error=?, retry_at=?, claimed_at=NULL "
            "WHERE id=?", (error[:500], float(retry_at), row_id)))

    def release(self, ids: Sequence[int]) -> None:
        """Return claimed rows to pending without counting an attempt (e.g. on shutdown)."""
        self._immediate(lambda c: c.executemany(
            "UPDATE outbox SET status='pending', claimed_at=NULL WHERE id=? AND status='inflight'",
            [(i,) for i in ids]))

    def dead_letter(self, row_id: int, reason: str) -> None:
        """Take a permanently rejected row out of its stream (kept, visible in stats)."""
        self._immediate(lambda c: c.execute(
            "UPDATE outbox SET status='dead', attempts=attempts+1, last_error=?, claimed_at=NULL WHERE id=?",
            (reason[:500], row_id)))

    def requeue_dead(self, destination: str) -> int:
        """Put a destination's dead letters back in its stream (operator action); return how many."""
        return int(self._immediate(lambda c: c.execute(
            "UPDATE outbox SET status='pending', retry_at=NULL, claimed_at=NULL WHERE destination=? "
            "AND status='dead'", (destination,)).rowcount))

    def dead_letters(self, destination: str | None = None) -> list[tuple[int, str, str, str, str | None]]:
        """(id, destination, event_type, idempotency_key, last_error) of dead rows."""
        sql = "SELECT id, destination, event_type, idempotency_key, last_error FROM outbox WHERE status='dead'"
        args: tuple[Any, ...] = ()
        if destination is not None:
            sql += " AND destination=?"
            args = (destination,)
        return [tuple(r) for r in self._conn.execute(sql + " ORDER BY id", args)]  # type: ignore[misc]

    def outbox_stats(self) -> dict[str, OutboxStats]:
        """Per-destination counts, oldest pending event time and next retry time."""
        stats: dict[str, OutboxStats] = {}
        for dest, status, count in self._conn.execute(
                "SELECT destination, status, COUNT(*) FROM outbox GROUP BY destination, status"):
            setattr(stats.setdefault(dest, OutboxStats()), status, count)
        for dest, oldest, retry in self._conn.execute(
                "SELECT destination, MIN(created_wall), MIN(retry_at) FROM outbox "
                "WHERE status IN ('pending','inflight') GROUP BY destination"):
            st = stats.setdefault(dest, OutboxStats())
            st.oldest_pending_wall, st.next_retry_at = oldest, retry
        for dest, err in self._conn.execute(
                "SELECT destination, last_error FROM outbox o WHERE last_error IS NOT NULL AND id = "
                "(SELECT MAX(id) FROM outbox WHERE destination=o.destination AND last_error IS NOT NULL)"):
            stats.setdefault(dest, OutboxStats()).last_error = err
        return stats
