"""Helper of tests/test_store_kill.py: write numbered batches forever; print each number after its commit returns.

usage: python store_kill_writer.py DB KEYHEX|-
Each batch k holds: an audit row {"k": k}, READINGS readings with value k, one waveform block per
channel (seq = k * SAMPLES), BEATS beats and an outbox row with key "b<k>". It resumes after the
highest batch already in the database, so it can be killed and restarted any number of times.
"""

from __future__ import annotations

import sys

import numpy as np

from vigil.model import Beat, ChannelKind, Metric, NumericReading, SampleBlock
from vigil.store import RecordStore

CHANNELS = ("ecg", "ecg2", "pleth")
SAMPLES = 1000
READINGS = 20
BEATS = 10


def block_samples(k: int, channel: int) -> np.ndarray:
    """Deterministic, not very compressible samples of batch k."""
    rng = np.random.default_rng(k * 10 + channel)
    return rng.integers(-20000, 20000, SAMPLES).astype(np.int32)


def main(argv: list[str]) -> int:
    """Write batches until killed."""
    path, keyhex = argv[0], argv[1]
    key = None if keyhex == "-" else bytes.fromhex(keyhex)
    st = RecordStore.open(path, key=key, commit_interval_s=3600, chunk_seconds=10)
    st._conn.execute("PRAGMA wal_autocheckpoint=40")  # checkpoint often, so kills land in checkpoints too
    sessions = st.sessions()
    if sessions:
        sid = sessions[0].id
    else:
        sid = st.start_session("killroom", 1.7e9)
        st.flush()
    row = st._conn.execute("SELECT MAX(json_extract(detail, '$.k')) FROM audit").fetchone()
    k = 0 if row[0] is None else int(row[0]) + 1
    while True:
        st.audit("kill-test", "batch", {"k": k})
        for i in range(READINGS):
            st.add_reading(sid, "A1", NumericReading("ox", Metric.SPO2, float(k), k + i / 100, 1.7e9 + k))
        for c, ch in enumerate(CHANNELS):
            st.add_block(sid, "A1", SampleBlock("dev", ch, ChannelKind.ECG, 500.0, "uV", 1.0, k * SAMPLES,
                                                block_samples(k, c), float(k), 1.7e9 + k))
        st.add_beats(sid, "A1", "ecg", [Beat(k * SAMPLES + j) for j in range(BEATS)])
        st.enqueue("booking", "batch", {"k": k}, f"b{k}")
        st.flush()
        sys.stdout.write(f"{k}\n")
        sys.stdout.flush()
        k += 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
