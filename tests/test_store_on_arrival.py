"""Data is stored as it arrives, however far behind analysis runs (a SIGKILL loses only the commit window).

A real daemon (replayed record, SQLite store, writer thread) whose ECG analysis is made slower than
real time: the device queue backs up, and the store must still hold what arrived up to about one
commit interval ago, read from a second connection while the daemon runs. Afterwards every sample
is stored exactly once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from vigil.config import parse_config
from vigil.datasets import VENDORED_RECORDS
from vigil.edge import pipeline as pipeline_mod
from vigil.edge.broker import free_port
from vigil.edge.daemon import Daemon
from vigil.model import SampleBlock

pytestmark = pytest.mark.timeout(60)

SPEED = 10.0
FS = 360.0  # record 119
ANALYSIS_S_PER_BLOCK = 0.05  # a 0.25-s block arrives every 25 ms at 10x: analysis runs at half speed


class SlowAnalyzer:
    """Stands in for an overloaded analyser: blocks the event loop like CPU-bound analysis does."""

    def __init__(self, fs: float) -> None:
        self.fs = fs
        self.fed = 0

    def feed(self, samples: Any, seq: int) -> list[Any]:
        """Burn the time, emit nothing."""
        time.sleep(ANALYSIS_S_PER_BLOCK)
        self.fed = seq + len(samples)
        return []


def _stored_ecg(db: Path) -> list[tuple[int, int]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT seq, n FROM waveform_chunks WHERE channel = 'ecg' ORDER BY seq").fetchall()
    finally:
        con.close()


async def test_blocks_are_committed_while_analysis_lags_and_stored_exactly_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline_mod, "_load_analyzer_factory", lambda: lambda fs, channel: SlowAnalyzer(fs))
    db = tmp_path / "vigil.db"
    cfg = parse_config("\n".join([
        "[site]", 'name = "t"', 'room = "t1"', "[store]", f'path = "{db}"', "min_free_mb = 1",
        "commit_interval_s = 1.0", "[mqtt]", f"port = {free_port()}", "[alarms]", "sound_enabled = false",
        "[[devices]]", 'id = "dev-G1"', 'profile = "replay-wfdb"', f'record = "{VENDORED_RECORDS / "119"}"',
        f"speed = {SPEED}", "[[guests]]", 'mat = "G1"', 'name = "x"', 'devices = ["dev-G1"]']) + "\n",
        tmp_path / "config.toml")
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    run = asyncio.create_task(daemon.run(stop, handle_signals=False))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        await asyncio.sleep(5.0)
        pipe = daemon.pipeline
        assert pipe is not None
        analysed = pipe.guests["G1"].ecg_seq or 0
        queued = [b for b in list(daemon.supervisors["dev-G1"]._out._queue)  # type: ignore[attr-defined]
                  if isinstance(b, SampleBlock) and b.channel == "ecg"]
        arrived = max([analysed] + [b.end_seq for b in queued])
        stored = await asyncio.to_thread(_stored_ecg, db)
        stored_end = max(s + n for s, n in stored)
        behind_s = (arrived - analysed) / FS / SPEED  # wall seconds of data waiting for analysis
        assert behind_s >= 1.5, f"the test needs analysis to run behind (it is {behind_s:.2f} s)"
        # committed = what arrived, minus at most one commit interval (+ a 2-s chunk of the writer), in wall time
        assert (arrived - stored_end) / FS / SPEED <= 1.0 + 2.0 / SPEED + 0.5
        assert stored_end > analysed + FS * SPEED * 1.0  # stored well ahead of the analysis
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)
    chunks = _stored_ecg(db)
    assert all(a + n == b for (a, n), (b, _m) in zip(chunks, chunks[1:], strict=False)), "a hole or an overlap"
    assert chunks[-1][0] + chunks[-1][1] - chunks[0][0] >= arrived - chunks[0][0]
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] == 0
    finally:
        con.close()
