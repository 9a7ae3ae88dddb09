"""Numbered schema migrations of the record store; applied in order, each once, in one transaction.

Never edit a migration that has shipped: append a new one. `schema_version` records what ran.
"""

from __future__ import annotations

import sqlite3
import time

from vigil.errors import StoreError

# (version, name, statements)
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "initial", [
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value BLOB NOT NULL)""",
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            room TEXT NOT NULL,
            started_wall REAL NOT NULL,
            ended_wall REAL,
            meta TEXT NOT NULL DEFAULT '{}')""",
        """CREATE TABLE guests (
            session_id TEXT NOT NULL,
            mat TEXT NOT NULL,
            display_name BLOB NOT NULL,          -- UTF-8, or AES-GCM sealed (see crypto.phi_aad)
            baseline_qtc_ms REAL,
            devices TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (session_id, mat))""",
        """CREATE TABLE devices (
            session_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            profile TEXT NOT NULL,
            mat TEXT,
            PRIMARY KEY (session_id, device_id))""",
        """CREATE TABLE waveform_chunks (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            mat TEXT,
            device_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            kind TEXT NOT NULL,
            fs REAL NOT NULL,
            unit TEXT NOT NULL,
            gain REAL NOT NULL,
            seq INTEGER NOT NULL,
            n INTEGER NOT NULL,
            t_mono REAL NOT NULL,
            wall REAL NOT NULL,
            wall_end REAL NOT NULL,
            encrypted INTEGER NOT NULL,
            data BLOB NOT NULL)""",
        "CREATE INDEX waveform_chunks_by_channel ON waveform_chunks (session_id, device_id, channel, seq)",
        "CREATE INDEX waveform_chunks_by_mat ON waveform_chunks (session_id, mat, channel, wall)",
        """CREATE TABLE gaps (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            from_seq INTEGER NOT NULL,
            to_seq INTEGER NOT NULL,
            reason TEXT NOT NULL,
            wall REAL NOT NULL)""",
        "CREATE INDEX gaps_by_session ON gaps (session_id, device_id, channel, from_seq)",
        """CREATE TABLE readings (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            mat TEXT,
            device_id TEXT NOT NULL,
            metric TEXT NOT NULL,
            value REAL,                          -- NULL means NaN (device said invalid)
            t_mono REAL NOT NULL,
            wall REAL NOT NULL,
            flags TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX readings_by_mat ON readings (session_id, mat, metric, wall)",
        """CREATE TABLE beats (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            mat TEXT,
            channel TEXT NOT NULL,
            sample INTEGER NOT NULL,
            label TEXT NOT NULL)""",
        "CREATE INDEX beats_by_mat ON beats (session_id, mat, channel, sample)",
        """CREATE TABLE measurements (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            mat TEXT,
            channel TEXT NOT NULL,
            metric TEXT NOT NULL,
            value REAL,
            sample INTEGER NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX measurements_by_mat ON measurements (session_id, mat, metric, sample)",
        """CREATE TABLE episodes (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            mat TEXT NOT NULL DEFAULT '',
            channel TEXT NOT NULL,
            label TEXT NOT NULL,
            start INTEGER NOT NULL,
            "end" INTEGER,                       -- NULL while ongoing
            UNIQUE (session_id, mat, channel, label, start))""",
        """CREATE TABLE alarm_events (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            guest TEXT NOT NULL,
            condition TEXT NOT NULL,
            priority INTEGER NOT NULL,
            event TEXT NOT NULL,
            state TEXT NOT NULL,
            t_mono REAL NOT NULL,
            wall REAL NOT NULL,
            operator TEXT,
            reason TEXT NOT NULL DEFAULT '',
            value REAL,
            detail TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX alarm_events_by_session ON alarm_events (session_id, guest, wall)",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            wall REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}')""",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            destination TEXT NOT NULL,
            event_type TEXT NOT NULL,
            payload BLOB NOT NULL,               -- JSON, or AES-GCM sealed JSON
            idempotency_key TEXT NOT NULL,
            created_wall REAL NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'inflight', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            retry_at REAL,
            claimed_at REAL,
            delivered_wall REAL,
            UNIQUE (destination, idempotency_key))""",
        "CREATE INDEX outbox_stream ON outbox (destination, status, id)",
    ]),
]

LATEST = MIGRATIONS[-1][0]


def current_version(conn: sqlite3.Connection) -> int:
    """Highest applied migration (0 for an empty database)."""
    row = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
    if row is None:
        return 0
    v = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    return int(v or 0)


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply pending migrations in one IMMEDIATE transaction; return the versions applied."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("""CREATE TABLE IF NOT EXISTS schema_version (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_wall REAL NOT NULL)""")
        have = current_version(conn)
        if have > LATEST:
            raise StoreError(f"the record store has schema version {have}, newer than this vigil "
                             f"understands ({LATEST}); upgrade vigil")
        applied: list[int] = []
        for version, name, statements in MIGRATIONS:
            if version <= have:
                continue
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO schema_version (version, name, applied_wall) VALUES (?, ?, ?)",
                         (version, name, time.time()))
            applied.append(version)
        conn.execute("COMMIT")
        return applied
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
