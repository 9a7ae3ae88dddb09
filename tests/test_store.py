"""Record store: migrations, batching, transactional outbox, readers, a second process on the same file."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vigil.errors import StoreError
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
from vigil.store import RecordStore, migrations


class FakeMono:
    """A hand-advanced monotonic clock for commit timing."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _block(seq: int, n: int, fs: float = 250.0, device: str = "h10", channel: str = "ecg") -> SampleBlock:
    x = (np.arange(seq, seq + n) % 97 - 48).astype(np.int32) * 10
    return SampleBlock(device, channel, ChannelKind.ECG, fs, "uV", 1.0, seq, x, seq / fs, 1.7e9 + seq / fs)


def _other(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=5)


def test_migrations_idempotent_and_versioned(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    st = RecordStore.open(db)
    assert st.schema_version == migrations.LATEST == 1
    st.close()
    for _ in range(2):  # reopening applies nothing twice
        RecordStore.open(db).close()
    with _other(db) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("SELECT version, name FROM schema_version").fetchall() == [(1, "initial")]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"sessions", "guests", "devices", "waveform_chunks", "gaps", "readings", "beats", "measurements",
            "episodes", "alarm_events", "audit", "outbox", "schema_version"} <= tables
    conn = sqlite3.connect(db, isolation_level=None)
    assert migrations.migrate(conn) == []
    conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    RecordStore.open(db).close()
    with _other(db) as c:
        c.execute("INSERT INTO schema_version VALUES (99, 'future', 0)")
    with pytest.raises(StoreError, match="schema version 99, newer than this vigil"):
        RecordStore.open(db)


def test_open_reports_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        RecordStore.open(tmp_path / "nope" / "v.db")


def test_batch_invisible_until_commit(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    clock = FakeMono()
    st = RecordStore.open(db, commit_interval_s=1.0, clock=clock)
    sid = st.start_session("r1", 1.7e9)
    st.add_reading(sid, "A1", NumericReading("ox", Metric.SPO2, 97.0, 0.1, 1.7e9))
    st.enqueue("booking", "reading", {"v": 97}, "r-1")
    st.add_block(sid, "A1", _block(0, 100))
    assert st.maybe_commit() is False  # interval not elapsed
    with _other(db) as c:
        assert c.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
    clock.t = 0.99
    assert st.maybe_commit() is False
    clock.t = 1.0
    assert st.maybe_commit() is True
    with _other(db) as c:
        assert c.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 1
        assert c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1
        # the partly filled waveform chunk is cut at the commit, so a kill loses at most one interval
        assert c.execute("SELECT seq, n FROM waveform_chunks").fetchall() == [(0, 100)]
    assert st.commits == 1
    st.close()


def test_failed_batch_is_all_or_nothing(tmp_path: Path) -> None:
    """A commit that fails half-way leaves neither the records nor their outbox rows."""
    db = tmp_path / "v.db"
    st = RecordStore.open(db)
    sid = st.start_session("r1", 1.7e9)
    st.flush()
    st.audit("test", "before", {"n": 1})
    st.enqueue("booking", "x", {"n": 1}, "k1")
    st._add("INSERT INTO no_such_table VALUES (1)", ())  # a statement that fails inside the batch
    with pytest.raises(StoreError, match="commit of 3 rows failed"):
        st.flush()
    with _other(db) as c:
        assert c.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM sessions WHERE id=?", (sid,)).fetchone()[0] == 1
    assert st.pending == 3  # still queued for the next attempt
    st.discard_pending()
    st.close()


def test_chunking_gaps_and_readers(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    st = RecordStore.open(db, chunk_seconds=2.0)
    sid = st.start_session("r1", 1.7e9, {"site": "x"})
    st.upsert_device(sid, "h10", "polar-h10", "A1")
    st.upsert_guest(sid, GuestInfo("A1", "Alice", 420.0, ("h10",)))
    for seq in range(0, 1200, 100):  # 4.8 s at 250 Hz → chunks of 500
        st.add_block(sid, "A1", _block(seq, 100))
    st.add_gap(sid, "h10", "ecg", 1200, 1300, "ble disconnect", wall=1.7e9 + 5)
    st.add_block(sid, "A1", _block(1300, 100))  # after the gap: a new chunk, never padded
    st.add_block(sid, "B2", _block(0, 300, device="cms", channel="pleth"))
    st.add_reading(sid, "A1", NumericReading("ox", Metric.SPO2, math.nan, 1.0, 1.7e9 + 1, ("finger_out",)))
    st.add_reading(sid, "A1", NumericReading("ox", Metric.SPO2, 96.0, 2.0, 1.7e9 + 2))
    st.add_beats(sid, "A1", "ecg", [Beat(10), Beat(200, "V")])
    st.add_measurement(sid, "A1", Measurement(Metric.QTC, 451.5, 900, detail={"formula": "bazett",
                                                                            "qt_ms": np.float64(400.0)}))
    st.add_episode(sid, "A1", RhythmEpisode("AF", 100, None))
    st.add_episode(sid, "A1", RhythmEpisode("AF", 100, 900))
    ev = AlarmEvent("A1", "hr_high", Priority.HIGH, "raised", AlarmState.ACTIVE, 5.0, 1.7e9 + 5, value=131.0,
                    detail={"limit": 120})
    st.add_alarm_event(sid, ev)
    st.audit("nurse1", "ack", {"condition": "hr_high"})
    st.end_session(sid, 1.7e9 + 60)
    st.close()

    st = RecordStore.open(db)
    [s] = st.sessions()
    assert (s.id, s.room, s.ended_wall, s.meta) == (sid, "r1", 1.7e9 + 60, {"site": "x"})
    assert st.devices(sid) == [("h10", "polar-h10", "A1")]
    chunks = list(st.iter_chunks(sid, channel="ecg"))
    assert [(c.seq, len(c.samples)) for c in chunks] == [(0, 500), (500, 500), (1000, 200), (1300, 100)]
    assert np.array_equal(np.concatenate([c.samples for c in chunks[:3]]), _block(0, 1200).samples)
    assert chunks[0].kind is ChannelKind.ECG and chunks[0].fs == 250.0
    assert [c.channel for c in st.iter_chunks(sid, mat="B2")] == ["pleth"]
    # time window: only chunks overlapping [t0+2.5, t0+3] (chunk 500..1000 covers 2..4 s)
    win = list(st.iter_chunks(sid, channel="ecg", from_wall=1.7e9 + 2.5, to_wall=1.7e9 + 3.0))
    assert [c.seq for c in win] == [500]
    assert [(g.from_seq, g.to_seq, g.reason) for g in st.gaps(sid)] == [(1200, 1300, "ble disconnect")]
    readings = list(st.readings(sid, "A1", Metric.SPO2))
    assert math.isnan(readings[0][1].value) and readings[0][1].flags == ("finger_out",)
    assert readings[1][1].value == 96.0
    assert [(m, b.sample, b.label) for m, b in st.beats(sid)] == [("A1", 10, "N"), ("A1", 200, "V")]
    [(_, m)] = list(st.measurements(sid, metric=Metric.QTC))
    assert m.value == 451.5 and m.detail == {"formula": "bazett", "qt_ms": 400.0}
    assert st.episodes(sid) == [("A1", RhythmEpisode("AF", 100, 900))]
    assert list(st.alarm_events(sid)) == [ev]
    [a] = list(st.audit_entries())
    assert (a.actor, a.action, a.detail) == ("nurse1", "ack", {"condition": "hr_high"})
    assert st.integrity_check() == "ok"
    st.close()


def test_iter_chunks_streams(tmp_path: Path) -> None:
    """Chunks are decoded lazily: the first arrives before the rest are read."""
    db = tmp_path / "v.db"
    st = RecordStore.open(db, chunk_seconds=1.0)
    sid = st.start_session("r1", 1.7e9)
    for seq in range(0, 250 * 300, 250):
        st.add_block(sid, "A1", _block(seq, 250))
    st.close()
    st = RecordStore.open(db)
    it = st.iter_chunks(sid, batch=8)
    first = next(it)
    assert first.seq == 0
    assert sum(1 for _ in it) == 299
    st.close()


def test_outbox_ordered_stream(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    st = RecordStore.open(db)
    for i in range(5):
        st.enqueue("booking", "evt", {"i": i}, f"k{i}", wall=100.0 + i)
    st.enqueue("booking", "evt", {"i": 99}, "k0")  # same key: applied once
    st.enqueue("fhir", "obs", {"i": 0}, "k0")  # same key, other destination: its own stream
    st.flush()
    rows = st.claim("booking", limit=2, now=1000.0)
    assert [r.payload["i"] for r in rows] == [0, 1]
    assert st.claim("booking", limit=10, now=1000.0) == []  # head is in flight: the stream waits
    st.mark_delivered([rows[0].id], now=1001.0)
    st.mark_failed(rows[1].id, "HTTP 503", retry_at=1100.0)
    assert st.claim("booking", now=1050.0) == []  # the head is not due yet; nothing overtakes it
    again = st.claim("booking", limit=10, now=1100.0)
    assert [r.payload["i"] for r in again] == [1, 2, 3, 4]
    assert again[0].attempts == 1 and again[0].last_error == "HTTP 503"
    st.dead_letter(again[1].id, "HTTP 422 rejected")
    st.mark_delivered([again[0].id, again[2].id])
    stats = st.outbox_stats()
    assert (stats["booking"].delivered, stats["booking"].dead, stats["booking"].inflight) == (3, 1, 1)
    assert stats["booking"].last_error == "HTTP 422 rejected"
    assert stats["fhir"].pending == 1
    assert st.dead_letters("booking")[0][2:] == ("evt", "k2", "HTTP 422 rejected")
    # an expired lease (sync process died mid-delivery) makes the row claimable again
    assert [r.payload["i"] for r in st.claim("booking", now=1100.0 + 121)] == [4]
    assert st.requeue_dead("booking") == 1
    st.close()


def test_outbox_row_commits_with_its_record(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    clock = FakeMono()
    st = RecordStore.open(db, clock=clock)
    sid = st.start_session("r1", 1.7e9)
    ev = AlarmEvent("A1", "spo2_low", Priority.MEDIUM, "raised", AlarmState.ACTIVE, 1.0, 1.7e9)
    st.add_alarm_event(sid, ev)
    st.enqueue("booking", "alarm.raised", {"condition": "spo2_low"}, "alarm-1")
    sync = RecordStore.open(db)  # the sync process's own connection
    assert sync.claim("booking") == []
    clock.t = 1.5
    assert st.maybe_commit()
    [row] = sync.claim("booking")
    assert row.payload == {"condition": "spo2_low"}
    assert len(list(sync.alarm_events(sid))) == 1
    sync.close()
    st.close()


SYNC_SCRIPT = r"""
import sys, time
from vigil.store import RecordStore
st = RecordStore.open(sys.argv[1], busy_timeout_s=10)
done = 0
deadline = time.monotonic() + 20
while done < int(sys.argv[2]) and time.monotonic() < deadline:
    rows = st.claim("booking", limit=50)
    if rows:
        st.mark_delivered([r.id for r in rows])
        done += len(rows)
    else:
        time.sleep(0.01)
print(done)
st.close()
"""


def test_sync_process_shares_the_file(tmp_path: Path) -> None:
    """Another process drains the outbox while this one writes; nothing is lost, no 'locked' errors."""
    db = tmp_path / "v.db"
    st = RecordStore.open(db, commit_interval_s=0.05)
    sid = st.start_session("r1", 1.7e9)
    st.flush()
    total = 600
    proc = subprocess.Popen([sys.executable, "-c", SYNC_SCRIPT, str(db), str(total)], stdout=subprocess.PIPE,
                            text=True)
    for i in range(total):
        st.add_reading(sid, "A1", NumericReading("ox", Metric.SPO2, 95.0, i, 1.7e9 + i))
        st.enqueue("booking", "reading", {"i": i}, f"r{i}")
        st.add_block(sid, "A1", _block(i * 25, 25))
        if i % 20 == 0:
            st.flush()
        else:
            st.maybe_commit()
    st.flush()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert int(out.strip()) == total
    assert st.outbox_stats()["booking"].delivered == total
    assert st.integrity_check() == "ok"
    st.close()
