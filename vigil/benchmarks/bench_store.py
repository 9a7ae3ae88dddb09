"""Record store benchmarks: write throughput (20 channels × 500 Hz), compression on MIT-BIH, encryption cost."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vigil.cliargs import parse, summary
from vigil.datasets import data_root, vendored
from vigil.model import ChannelKind, SampleBlock
from vigil.store import RecordStore, codec

CHANNELS = 20
FS = 500.0
BLOCK = 125  # samples per block: 4 blocks/s per channel, like a BLE ECG strap


def _mitdb_uv(path: Path, channel: int) -> npt.NDArray[np.int32]:
    """ECG samples of one MIT-BIH lead in µV (integers)."""
    import wfdb

    rec = wfdb.rdrecord(str(path), physical=False, channels=[channel])
    adc = rec.d_signal[:, 0].astype(np.int64)
    return np.round((adc - rec.baseline[0]) * 1000.0 / rec.adc_gain[0]).astype(np.int32)


def _source() -> npt.NDArray[np.int32]:
    try:
        return _mitdb_uv(vendored("119"), 0)
    except Exception:  # vendored records missing: a deterministic random walk
        rng = np.random.default_rng(0)
        return np.cumsum(rng.integers(-40, 41, 200_000)).astype(np.int32)


def write_throughput(seconds: int, key: bytes | None, folder: Path) -> dict[str, float]:
    """Write `seconds` of 20 × 500 Hz ECG through RecordStore, committing each simulated second."""
    src = _source()
    db = folder / f"bench-{'enc' if key else 'plain'}.db"
    st = RecordStore.open(db, key=key, commit_interval_s=1.0, chunk_seconds=2.0)
    sid = st.start_session("bench", 1.7e9)
    blocks_per_s = int(FS) // BLOCK
    t0 = time.perf_counter()
    for s in range(seconds):
        for b in range(blocks_per_s):
            seq = (s * blocks_per_s + b) * BLOCK
            for ch in range(CHANNELS):
                start = (seq + ch * 7919) % (len(src) - BLOCK)
                st.add_block(sid, f"A{ch}", SampleBlock(f"dev{ch}", "ecg", ChannelKind.ECG, FS, "uV", 1.0, seq,
                                                         src[start:start + BLOCK], s + b / blocks_per_s,
                                                         1.7e9 + s + b / blocks_per_s))
        st.flush()  # what maybe_commit does once per second in the daemon
    elapsed = time.perf_counter() - t0
    chunks = st._conn.execute("SELECT COUNT(*), SUM(LENGTH(data)), SUM(n) FROM waveform_chunks").fetchone()
    st.close()
    t1 = time.perf_counter()
    st = RecordStore.open(db, key=key)
    n_read = sum(len(b.samples) for b in st.iter_chunks(sid))
    read_s = time.perf_counter() - t1
    st.close()
    return {"chunks": chunks[0], "elapsed": elapsed, "chunks_per_s": chunks[0] / elapsed,
            "samples_per_s": chunks[2] / elapsed, "realtime_x": seconds / elapsed,
            "bytes_per_sample": chunks[1] / chunks[2], "read_samples_per_s": n_read / read_s,
            "file_mb": db.stat().st_size / 2**20}


def compression(records: list[Path], chunk_s: float) -> dict[str, float]:
    """Codec ratio over MIT-BIH records (both leads) for chunks of `chunk_s` seconds at 360 Hz."""
    n_samples = enc = 0
    dat_bytes = 0
    n = int(round(360 * chunk_s))
    for rec in records:
        dat_bytes += rec.with_suffix(".dat").stat().st_size
        for lead in (0, 1):
            x = _mitdb_uv(rec, lead)
            for i in range(0, len(x), n):
                piece = x[i:i + n]
                enc += len(codec.encode(piece))
                n_samples += len(piece)
    return {"samples": n_samples, "bytes_per_sample": enc / n_samples, "vs_int32": 4 * n_samples / enc,
            "vs_int16": 2 * n_samples / enc, "vs_format212": dat_bytes / enc}


def main(argv: list[str]) -> int:
    """Print the store benchmark tables."""
    p = argparse.ArgumentParser(prog="python -m vigil.benchmarks.bench_store", description=summary(__doc__),
                                allow_abbrev=False)
    p.add_argument("seconds", nargs="?", type=int, default=60,
                   help="seconds of 20-channel 500 Hz data written per mode (plain, aes-gcm) in the "
                        "write-throughput table (default: 60)")
    seconds = parse(p, argv).seconds
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"Write throughput: {CHANNELS} channels x {FS:.0f} Hz, blocks of {BLOCK}, commit every simulated "
              f"second, {seconds} s of data (needs {CHANNELS} chunks/s in real time)")
        print(f"{'mode':<10} {'chunks':>7} {'chunks/s':>9} {'Msamples/s':>11} {'x realtime':>11} "
              f"{'B/sample':>9} {'read Msamples/s':>16} {'file MB':>8}")
        for name, key in (("plain", None), ("aes-gcm", os.urandom(32))):
            r = write_throughput(seconds, key, folder)
            print(f"{name:<10} {r['chunks']:>7.0f} {r['chunks_per_s']:>9.0f} {r['samples_per_s'] / 1e6:>11.2f} "
                  f"{r['realtime_x']:>11.0f} {r['bytes_per_sample']:>9.3f} {r['read_samples_per_s'] / 1e6:>16.2f} "
                  f"{r['file_mb']:>8.2f}")
    mitdb = data_root() / "mitdb"
    records = sorted(p.with_suffix("") for p in mitdb.glob("*.hea")) if mitdb.is_dir() else []
    print()
    if not records:
        print(f"Compression on MIT-BIH: skipped, no records under {mitdb} (set VIGIL_DATA)")
        return 0
    print(f"Compression on MIT-BIH ({len(records)} records, both leads, µV integers; "
          "delta + zigzag + byte-shuffle + zstd-3)")
    print(f"{'chunk':>6} {'Msamples':>9} {'B/sample':>9} {'vs int32':>9} {'vs int16':>9} {'vs .dat (212)':>14}")
    for chunk_s in (1.0, 2.0, 10.0):
        c = compression(records, chunk_s)
        print(f"{chunk_s:>5.0f}s {c['samples'] / 1e6:>9.2f} {c['bytes_per_sample']:>9.3f} {c['vs_int32']:>9.2f} "
              f"{c['vs_int16']:>9.2f} {c['vs_format212']:>14.2f}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
