"""Disk full and read-only storage: a clear StoreError, a technical event, earlier data intact, recovery."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vigil.errors import StoreError
from vigil.model import ChannelKind, Metric, NumericReading, SampleBlock, TechnicalEvent, TechnicalKind
from vigil.store import RecordStore, StoreWriteError, StoreWriter


class Events:
    """Collects technical events from the writer thread."""

    def __init__(self) -> None:
        self.items: list[TechnicalEvent] = []
        self._cv = threading.Condition()

    def __call__(self, ev: TechnicalEvent) -> None:
        with self._cv:
            self.items.append(ev)
            self._cv.notify_all()

    def wait_for(self, kind: TechnicalKind, active: bool, timeout: float = 10.0) -> TechnicalEvent:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for ev in self.items:
                    if ev.kind is kind and ev.active is active:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind.value} active={active} event; got {self.items}")
                self._cv.wait(left)


def _noise_block(seq: int, n: int = 5000) -> SampleBlock:
    x = np.random.default_rng(seq).integers(-(2**30), 2**30, n).astype(np.int32)  # incompressible
    return SampleBlock("dev", "ecg", ChannelKind.ECG, 500.0, "uV", 1.0, seq, x, seq / 500, 1.7e9 + seq / 500)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m") -> Iterator[Path | None]:
    """Mount a small tmpfs at `path` (needs root); yield None when mounting is not permitted."""
    path.mkdir()
    if os.geteuid() != 0:
        yield None
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _committed_seqs(db: Path, sid: str) -> list[int]:
    st = RecordStore.open(db)
    try:
        assert st.integrity_check() == "ok"
        return [b.seq for b in st.iter_chunks(sid)]
    finally:
        st.close()


def test_disk_full_on_a_real_small_filesystem(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small") as mnt:
        if mnt is None:
            pytest.skip("not root or mount not permitted: test_disk_full_via_max_page_count covers the logic")
        filler = mnt / "filler"
        filler.write_bytes(os.urandom(600 * 1024))
        db = mnt / "v.db"
        events = Events()
        st = RecordStore.open(db, commit_interval_s=0.05, chunk_seconds=10)
        sid = st.start_session("r", 1.7e9)
        st.flush()
        w = StoreWriter(st, events, min_free_mb=0, disk_check_s=0.05).start()
        seq = 0
        deadline = time.monotonic() + 20
        while not w.store_failed and time.monotonic() < deadline:
            w.submit("add_block", sid, "A1", _noise_block(seq))
            seq += 5000
            time.sleep(0.01)
        ev = events.wait_for(TechnicalKind.STORE_FAILED, True)
        assert "disk is full" in ev.detail and str(db) in ev.detail
        events.wait_for(TechnicalKind.DISK_LOW, True)
        # what was committed before the failure is intact and readable from another connection
        before = _committed_seqs(db, sid)
        assert before and before == sorted(before) and before[0] == 0
        # free space: the queued batch is written on the next attempt, and the events clear
        filler.unlink()
        events.wait_for(TechnicalKind.STORE_FAILED, False)
        events.wait_for(TechnicalKind.DISK_LOW, False)
        w.stop()
        after = _committed_seqs(db, sid)
        assert after == list(range(0, seq, 5000))  # nothing lost: the batch waited in memory


def test_disk_full_via_max_page_count(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    st = RecordStore.open(db, commit_interval_s=0.05, chunk_seconds=10)
    sid = st.start_session("r", 1.7e9)
    st.add_block(sid, "A1", _noise_block(0))
    st.flush()
    pages = st._conn.execute("PRAGMA page_count").fetchone()[0]
    st._conn.execute(f"PRAGMA max_page_count={pages + 2}")
    st.add_block(sid, "A1", _noise_block(5000))
    st.add_reading(sid, "A1", NumericReading("ox", Metric.SPO2, 97.0, 1.0, 1.7e9))
    with pytest.raises(StoreWriteError, match="the disk is full") as info:
        st.flush()
    assert info.value.kind == "full"
    assert "earlier data is intact" in str(info.value)
    assert _committed_seqs(db, sid) == [0]
    st._conn.execute("PRAGMA max_page_count=1073741823")
    st.flush()  # the same batch goes through once there is room
    assert _committed_seqs(db, sid) == [0, 5000]
    st.close()


def test_writer_reports_full_and_recovers_via_max_page_count(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    events = Events()
    st = RecordStore.open(db, commit_interval_s=0.05)
    sid = st.start_session("r", 1.7e9)
    st.flush()
    pages = st._conn.execute("PRAGMA page_count").fetchone()[0]
    st._conn.execute(f"PRAGMA max_page_count={pages + 1}")
    w = StoreWriter(st, events, min_free_mb=0).start()
    w.submit("add_block", sid, "A1", _noise_block(0))
    events.wait_for(TechnicalKind.STORE_FAILED, True)
    events.wait_for(TechnicalKind.DISK_LOW, True)
    w.submit("audit", "test", "room made")
    st._conn.execute("PRAGMA max_page_count=1073741823")  # a pragma is not a write: safe from this thread
    events.wait_for(TechnicalKind.STORE_FAILED, False)
    w.stop()
    assert _committed_seqs(db, sid) == [0, 1000, 2000, 3000, 4000]  # 2 s chunks at 500 Hz


def test_read_only_storage(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro") as mnt:
        if mnt is None and os.geteuid() == 0:
            pytest.skip("root without mount permission: file modes do not bind root")
        base = mnt if mnt is not None else tmp_path / "ro"
        db = base / "v.db"
        st = RecordStore.open(db, commit_interval_s=0.05)
        sid = st.start_session("r", 1.7e9)
        st.add_block(sid, "A1", _noise_block(0, 1000))
        st.close()
        events = Events()
        if mnt is not None:  # the storage is mounted read-only (e.g. ext4 errors=remount-ro, then a restart)
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
            st = RecordStore.open(db, commit_interval_s=0.05)  # opens read-only: reading works
        else:  # no root: the files and folder lose their write permission, then the daemon restarts
            for f in base.iterdir():
                f.chmod(0o444)
            base.chmod(0o555)
            st = RecordStore.open(db, commit_interval_s=0.05)
        assert [b.seq for b in st.iter_chunks(sid)] == [0]
        w = StoreWriter(st, events, min_free_mb=0).start()
        w.submit("add_block", sid, "A1", _noise_block(1000, 1000))
        ev = events.wait_for(TechnicalKind.STORE_FAILED, True)
        assert "read-only" in ev.detail, ev.detail
        # earlier data stays readable (a fresh reader too) and the file is sound
        reader = RecordStore.open(db)
        assert [b.seq for b in reader.iter_chunks(sid)] == [0]
        assert reader.integrity_check() == "ok"
        reader.close()
        if mnt is not None:
            subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        else:
            base.chmod(0o755)
            for f in base.iterdir():
                f.chmod(0o644)
        events.wait_for(TechnicalKind.STORE_FAILED, False, timeout=15)  # reconnects and writes the batch
        w.stop()
        assert _committed_seqs(db, sid) == [0, 1000]


def test_free_space_check_raises_and_clears_disk_low(tmp_path: Path) -> None:
    events = Events()
    st = RecordStore.open(tmp_path / "v.db")
    w = StoreWriter(st, events, min_free_mb=1e12)
    free = w.check_disk()
    assert free is not None and free > 0
    ev = events.wait_for(TechnicalKind.DISK_LOW, True, timeout=0.1)
    assert "MB free" in ev.detail
    w.min_free_mb = 0
    w.check_disk()
    events.wait_for(TechnicalKind.DISK_LOW, False, timeout=0.1)
    st.close()


def test_writer_never_blocks_and_flushes_on_stop(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    st = RecordStore.open(db, commit_interval_s=0.2)
    w = StoreWriter(st, min_free_mb=0).start()
    sid = w.call("start_session", "r", 1.7e9).result(timeout=5)
    t0 = time.perf_counter()
    for i in range(2000):
        w.submit("add_reading", sid, "A1", NumericReading("ox", Metric.SPO2, 90 + i % 10, i, 1.7e9 + i))
    assert time.perf_counter() - t0 < 0.5  # queueing only
    with pytest.raises(AttributeError):
        w.submit("no_such_method")
    w.stop()
    st2 = RecordStore.open(db)
    assert sum(1 for _ in st2.readings(sid)) == 2000
    st2.close()


def test_store_error_from_a_call_reaches_the_caller(tmp_path: Path) -> None:
    st = RecordStore.open(tmp_path / "v.db")
    w = StoreWriter(st, min_free_mb=0).start()
    w.stop()  # closes the store
    st2 = RecordStore.open(tmp_path / "v.db")
    w2 = StoreWriter(st2, min_free_mb=0).start()
    st2.close()
    fut = w2.call("audit", "x", "y")
    with pytest.raises(StoreError, match="closed"):
        fut.result(timeout=5)
    w2.stop()


async def test_writer_delivers_events_on_the_event_loop(tmp_path: Path) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    got: asyncio.Queue[tuple[TechnicalEvent, bool]] = asyncio.Queue()
    loop_thread = threading.get_ident()

    def on_event(ev: TechnicalEvent) -> None:
        got.put_nowait((ev, threading.get_ident() == loop_thread))

    st = RecordStore.open(tmp_path / "v.db", commit_interval_s=0.05)
    w = StoreWriter(st, on_event, loop=loop, min_free_mb=1e12).start()
    sid = await asyncio.wrap_future(w.call("start_session", "r", 1.7e9))
    ev, on_loop = await asyncio.wait_for(got.get(), 5)
    assert ev.kind is TechnicalKind.DISK_LOW and ev.active and on_loop
    w.submit("audit", "t", "x")
    await asyncio.to_thread(w.stop)
    st2 = RecordStore.open(tmp_path / "v.db")
    assert [s.id for s in st2.sessions()] == [sid]
    st2.close()


def test_pending_batch_is_bounded_when_commits_keep_failing(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    st = RecordStore.open(db, chunk_seconds=10.0, max_pending_bytes=200_000)
    sid = st.start_session("r", 1.7e9)
    st.flush()
    pages = st._conn.execute("PRAGMA page_count").fetchone()[0]
    st._conn.execute(f"PRAGMA max_page_count={pages}")  # every commit fails: "disk full"
    for i in range(40):  # 40 incompressible chunks of ~20 kB
        st.add_block(sid, "A1", _noise_block(i * 5000, 5000))
        st.audit("t", "tick", {"i": i})
        with pytest.raises(StoreWriteError):
            st.flush()
    dropped = st.dropped_chunks
    assert dropped > 20
    assert st._pending_bytes <= 200_000
    st._conn.execute("PRAGMA max_page_count=1073741823")
    st.flush()
    st.close()
    st = RecordStore.open(db)
    assert len(list(st.audit_entries())) == 40  # small rows are never shed, only the oldest waveform chunks
    seqs = [b.seq for b in st.iter_chunks(sid)]
    assert len(seqs) == 40 - dropped
    assert seqs == list(range((40 - len(seqs)) * 5000, 40 * 5000, 5000))  # the newest chunks are kept
    st.close()


def test_open_store_from_config(tmp_path: Path) -> None:
    from vigil.config import parse_config
    from vigil.store.factory import open_store

    key = tmp_path / "store.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    text = '[site]\nname = "x"\nroom = "r1"\n[store]\npath = "run/vigil.db"\nkey_file = "store.key"\n'
    cfg = parse_config(text, tmp_path / "config.toml")
    st = open_store(cfg)
    assert st.encrypted and st.path == tmp_path / "run" / "vigil.db"
    st.close()
