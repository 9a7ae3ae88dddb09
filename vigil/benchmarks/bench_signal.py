"""Streaming ECG analyser speed: 20 simultaneous channels at 250 and 500 Hz on real MIT-BIH ECG
(vendored records 119 and 203, both leads, resampled), the full pipeline (QRS, classes, HR, HRV,
quality, rhythm, QT) fed 0.25 s blocks round-robin as the daemon would; against neurokit2's batch
``ecg_process`` on the same data.  Reports × real time per core, CPU % of one core for the real-time
load, peak RSS and the latency from a sample's arrival to its beat being emitted.

Usage: ``python -m vigil.benchmarks.bench_signal [--seconds 120] [--channels 20]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from vigil.datasets import vendored

BLOCK_S = 0.25  # overridden by --block


def _channels(fs: float, n: int, seconds: float) -> list[np.ndarray]:
    """`n` single-lead real ECG segments (µV) resampled to `fs`."""
    from fractions import Fraction

    import scipy.signal as sps
    import wfdb

    leads = []
    for rec in ("119", "203"):
        r = wfdb.rdrecord(str(vendored(rec)))
        for k in range(r.p_signal.shape[1]):
            leads.append((r.p_signal[:, k] * 1000.0, float(r.fs)))
    out = []
    for i in range(n):
        x, src = leads[i % len(leads)]
        frac = Fraction(fs / src).limit_denominator(100)
        y = sps.resample_poly(x, frac.numerator, frac.denominator)
        off = int((i // len(leads)) * 17.0 * fs) % max(1, len(y) - int(seconds * fs))
        out.append(y[off:off + int(seconds * fs)])
    return out


def _ours(chans: list[np.ndarray], fs: float, block_s: float = BLOCK_S) -> tuple[float, list[float], list[float]]:
    """CPU seconds for all channels, and the beat latencies (s) after and within the detector's learning period."""
    from vigil.model import Beat
    from vigil.signal.analyzer import EcgAnalyzer
    from vigil.signal.qrs import LEARN_S

    ans = [EcgAnalyzer(fs, channel=f"ecg{i}") for i in range(len(chans))]
    block = int(block_s * fs)
    n = min(len(c) for c in chans)
    learned = int(LEARN_S * fs)
    lat: list[float] = []
    start_up: list[float] = []
    t0 = time.process_time()
    for i in range(0, n, block):
        for a, c in zip(ans, chans, strict=True):
            for o in a.feed(c[i:i + block], i):
                if isinstance(o, Beat):
                    (lat if o.sample >= learned else start_up).append((min(i + block, n) - o.sample) / fs)
    for a in ans:
        a.flush()
    return time.process_time() - t0, lat, start_up


def _neurokit(chans: list[np.ndarray], fs: float) -> float:
    import neurokit2 as nk

    t0 = time.process_time()
    for c in chans:
        nk.ecg_process(c, sampling_rate=int(fs))
    return time.process_time() - t0


def main(argv: list[str]) -> int:
    """Print the speed table."""
    p = argparse.ArgumentParser(prog="bench_signal")
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--channels", type=int, default=20)
    p.add_argument("--block", type=float, default=BLOCK_S, help="seconds per feed (default 0.25)")
    p.add_argument("--nk-channels", type=int, default=4, help="channels timed for neurokit2 (it is slow)")
    args = p.parse_args(argv)
    print(f"{args.channels} channels × {args.seconds:.0f} s real ECG, {args.block} s blocks, full pipeline; "
          f"neurokit2 ecg_process on {args.nk_channels} of the same channels")
    print(f"{'fs':>5} {'ours xRT/core':>14} {'CPU % (1 core)':>15} {'nk2 xRT/core':>13} {'speed-up':>9} "
          f"{'lat p50 s':>9} {'lat p99 s':>9} {'lat max s':>9} {'start-up max s':>14}")
    for fs in (250.0, 500.0):
        chans = _channels(fs, args.channels, args.seconds)
        cpu, lat, start_up = _ours(chans, fs, args.block)
        x_ours = args.channels * args.seconds / cpu
        nk_cpu = _neurokit(chans[: args.nk_channels], fs)
        x_nk = args.nk_channels * args.seconds / nk_cpu
        la = np.array(lat)
        print(f"{fs:5.0f} {x_ours:14.0f} {100 * args.channels / x_ours:15.2f} {x_nk:13.0f} "
              f"{x_ours / x_nk:8.1f}× {np.percentile(la, 50):9.2f} {np.percentile(la, 99):9.2f} {la.max():9.2f} "
              f"{max(start_up, default=float('nan')):14.2f}",
              flush=True)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"peak RSS of this process (incl. numpy/scipy/neurokit2/wfdb and the loaded records): {rss_mb:.0f} MB")
    print("CPU % is for all channels in real time (channels·1 s / (xRT)). Latency: from a sample's acquisition (so "
          "including the block length) to its beat being emitted, for beats after the QRS detector's 2 s learning "
          "period; start-up = beats inside that period, emitted when it ends.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
