"""kill -9 at random moments never corrupts the store nor loses a batch whose commit returned."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vigil.store import RecordStore

sys.path.insert(0, str(Path(__file__).parent))
import store_kill_writer as writer  # noqa: E402

KILLS = 24


def _spawn(db: Path, key: bytes) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(Path(__file__).parent / "store_kill_writer.py"), str(db), key.hex()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_first_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """Read the first committed batch number (blocks until it arrives or the deadline)."""
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf and time.monotonic() < deadline and proc.poll() is None:
        chunk = proc.stdout.read()
        if chunk:
            buf += chunk
        else:
            time.sleep(0.005)
    return buf


def _verify(db: Path, key: bytes, committed: set[int]) -> int:
    """Integrity, every reported batch present, every present batch complete; return batches present."""
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    st = RecordStore.open(db, key=key)
    try:
        assert st.integrity_check() == "ok"
        c = st._conn
        present = {int(r[0]) for r in c.execute("SELECT json_extract(detail, '$.k') FROM audit")}
        missing = committed - present
        assert not missing, f"batches reported committed but missing after kill: {sorted(missing)[:10]}"
        # atomicity: a batch is either entirely there or not at all
        readings = dict(c.execute("SELECT CAST(value AS INTEGER), COUNT(*) FROM readings GROUP BY value").fetchall())
        outbox = {int(r[0][1:]) for r in c.execute("SELECT idempotency_key FROM outbox")}
        beats = dict(c.execute(f"SELECT sample / {writer.SAMPLES}, COUNT(*) FROM beats GROUP BY 1").fetchall())
        for k in present:
            assert readings.get(k) == writer.READINGS, (k, readings.get(k))
            assert beats.get(k) == writer.BEATS
        assert outbox == present
        sids = [s.id for s in st.sessions()]
        assert len(sids) <= 1
        if not sids:  # killed before the session's first commit
            assert not present
            return 0
        seen: dict[str, set[int]] = {ch: set() for ch in writer.CHANNELS}
        for blk in st.iter_chunks(sids[0]):
            k = blk.seq // writer.SAMPLES
            ch = writer.CHANNELS.index(blk.channel)
            assert np.array_equal(blk.samples, writer.block_samples(k, ch)), (blk.channel, k)
            seen[blk.channel].add(k)
        assert all(s == present for s in seen.values())
        return len(present)
    finally:
        st.close()


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    db = tmp_path / "kill.db"
    key = bytes(rng.getrandbits(8) for _ in range(32))
    committed: set[int] = set()
    runs_with_commits = 0
    for i in range(KILLS):
        proc = _spawn(db, key)
        if i % 2 == 0:  # anywhere, including start-up, migration and key check
            time.sleep(rng.uniform(0.0, 0.8))
            head = b""
        else:  # mid-stream: after the first commit of this run
            head = _wait_first_line(proc, timeout=15)
            time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        numbers = [int(x) for x in (head + out).split()]
        if numbers:
            runs_with_commits += 1
        committed.update(numbers)
        n_present = _verify(db, key, committed)
        assert n_present >= len(committed)
    assert runs_with_commits >= KILLS // 2  # the kills really interrupted a writing process
    assert len(committed) > 50
