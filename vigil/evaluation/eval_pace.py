"""Pacemaker pulses (ANSI/AAMI EC13 §4.1.4-style) on real paced ECG: loss of capture, capture, false pulses.

No record here holds sharp pacemaker pulses: MIT-BIH 102 and 104 are paced, but their analog
0.1-100 Hz recording smeared the pulses over ~8 ms.  So pulses are added to the real signal the way
a monitor digitising at the device rate would see them: a rectangular pulse of the EC13 amplitudes
(2-700 mV) and widths (0.1-2 ms), optionally followed by an opposite-polarity recharge tail
(2 mV, τ 4 or 100 ms, §4.1.4.2), integrated over each sample period (the ADC) and clipped at
±`CLIP_MV` (the front end's input range).

* **Loss of capture.** Each paced record is stopped before a beat (`eval_asystole.stopped`: its own
  baseline plus 10 µV of amplifier noise) while the pacemaker keeps firing at the record's paced rate,
  40 ms before where each R would have been.  The monitor must call ASYSTOLE within 5 s of the last
  real beat and count no beat after it.  Each condition runs with the rejector (shipped) and without
  it (what the analyser did before `vigil.signal.pace`).
* **Capture.** A pulse 60 ms before every reference R of the first 10 minutes (every beat paced):
  QRS Se/+P (150 ms window, 1-9.8 min) with the pulses against without them.
* **False pulses.** The rejector alone over the unmodified records (mitdb, nstdb) at each rate: every
  pulse found there is a false one (or an artefact: mitdb 203 has bursts of one-sample digital spikes).

Usage: ``python -m vigil.evaluation.eval_pace [--rates 360,500,1000] [--every 180] [--no-scan]`` (≈ 10 min).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from vigil.datasets import data_root

FloatArray = npt.NDArray[np.float64]

CLIP_MV = 300.0  # the front end's input range (an ADS1298-class amplifier at gain 6 is ±400 mV)
PACED = ("102", "104")
CAPTURE_RECORDS = ("102", "104", "119", "208")
# (label, amplitude mV, width ms, tail mV, tail time constant ms)
PULSES: list[tuple[str, float, float, float, float]] = [
    ("2 mV 0.1 ms", 2.0, 0.1, 0.0, 0.0),
    ("5 mV 0.5 ms", 5.0, 0.5, 0.0, 0.0),
    ("5 mV 2 ms", 5.0, 2.0, 0.0, 0.0),
    ("20 mV 1 ms", 20.0, 1.0, 0.0, 0.0),
    ("700 mV 0.1 ms", 700.0, 0.1, 0.0, 0.0),
    ("700 mV 2 ms", 700.0, 2.0, 0.0, 0.0),
    ("5 mV 1 ms, tail 2 mV 4 ms", 5.0, 1.0, 2.0, 4.0),
    ("5 mV 1 ms, tail 2 mV 100 ms", 5.0, 1.0, 2.0, 100.0),
    ("700 mV 2 ms, tail 2 mV 4 ms", 700.0, 2.0, 2.0, 4.0),
    ("700 mV 2 ms, tail 2 mV 100 ms", 700.0, 2.0, 2.0, 100.0),
]


def pace_pulses(n: int, fs: float, times_s: Sequence[float], amp_mv: float, width_ms: float,
                tail_mv: float = 0.0, tau_ms: float = 0.0, clip_mv: float = CLIP_MV) -> FloatArray:
    """Pacemaker pulses (µV, n samples at `fs`) starting at `times_s`, as an integrating ADC sees them.

    Each pulse is rectangular (`amp_mv`, `width_ms`); each sample holds its mean over the sample
    period.  A tail of `tail_mv` of the opposite polarity, decaying with `tau_ms`, follows the
    pulse's end (its mean over each sample period too).  The sum is clipped at ±`clip_mv`.
    """
    y = np.zeros(n)
    ts = 1.0 / fs
    w = width_ms / 1000.0
    tau = tau_ms / 1000.0
    edges = np.arange(n + 1) * ts  # sample k integrates [edges[k], edges[k + 1])
    for t0 in times_s:
        k0 = int(np.floor(t0 * fs))
        if k0 >= n:
            continue
        for k in range(max(0, k0), min(n, int(np.ceil((t0 + w) * fs)) + 1)):
            overlap = max(0.0, min(edges[k + 1], t0 + w) - max(edges[k], t0))
            y[k] += amp_mv * 1000.0 * overlap / ts
        if tail_mv and tau > 0:
            t1 = t0 + w  # the tail starts as the pulse ends
            hi = min(n, int(np.ceil((t1 + 8 * tau) * fs)) + 1)
            for k in range(int(np.floor(t1 * fs)), hi):
                a, b = max(edges[k], t1), edges[k + 1]
                if b <= a:
                    continue
                area = tau * (np.exp(-(a - t1) / tau) - np.exp(-(b - t1) / tau))  # ∫ exp(-(t - t1)/tau) dt
                y[k] -= np.sign(amp_mv) * tail_mv * 1000.0 * area / ts
    return np.clip(y, -clip_mv * 1000.0, clip_mv * 1000.0)


def _resample(x: FloatArray, fs: float, fs_dev: float) -> FloatArray:
    """`x` (n,) or (n, k) polyphase-resampled from `fs` to `fs_dev`."""
    import scipy.signal as sps

    if fs_dev == fs:
        return x
    frac = Fraction(fs_dev / fs).limit_denominator(100)
    return sps.resample_poly(x, frac.numerator, frac.denominator, axis=0)


def _stream(x: FloatArray, fs: float, rejector: bool = True) -> tuple[list[int], list[tuple[int, int]], int]:
    """EcgAnalyzer over `x` in 0.25 s feeds: beat samples, (ASYSTOLE start, sample of the feed that emitted it), pulses."""
    import vigil.signal.pace as pace
    from vigil.model import Beat, RhythmEpisode
    from vigil.signal.analyzer import EcgAnalyzer

    shipped = pace.MIN_FS
    pace.MIN_FS = shipped if rejector else float("inf")
    try:
        an = EcgAnalyzer(fs)
    finally:
        pace.MIN_FS = shipped
    block = int(round(0.25 * fs))
    beats: list[int] = []
    asystole: list[tuple[int, int]] = []
    for i in range(0, len(x), block):
        for o in an.feed(x[i:i + block], i):
            if isinstance(o, Beat):
                beats.append(o.sample)
            elif isinstance(o, RhythmEpisode) and o.label == "ASYSTOLE" and o.end is None:
                asystole.append((o.start, min(i + block, len(x))))
    return beats, asystole, an.pace.count


def loss_of_capture(rates: Sequence[float], every_s: float) -> None:
    """Print the loss-of-capture table: ASYSTOLE within 5 s and beats counted after the last real one."""
    import wfdb

    from vigil.evaluation.ec57 import read_reference
    from vigil.evaluation.eval_asystole import AFTER_S, WARM_S, onsets, stopped

    cases = []
    for rec in PACED:
        path = data_root() / "mitdb" / rec
        if not path.with_suffix(".dat").exists():
            continue
        x = np.nan_to_num(wfdb.rdrecord(str(path), channels=[0]).p_signal * 1000.0)
        ref, fs = read_reference(str(path))
        for k, (last_r, cut) in enumerate(onsets(ref, fs, len(x), every_s=every_s)):
            a = max(0, cut - int(WARM_S * fs))
            y = stopped(x[a:], cut - a, int(AFTER_S * fs), fs, False, np.random.default_rng(k))[:, 0]
            rr = float(np.median(np.diff([s for s, _ in ref if a <= s <= cut]))) / fs
            cases.append((rec, y, fs, (last_r - a) / fs, (cut - a) / fs, rr))
    if not cases:
        print("no paced records (mitdb 102, 104) under", data_root())
        return
    print(f"\nLoss of capture: {len(cases)} onsets on mitdb {', '.join(PACED)} (lead 0, every {every_s:g} s), pacing "
          "on at the paced rate; ASYSTOLE due within 5 s of the last real beat, no beat after it")
    print(f"{'rate':>6}  {'pulse':<32}{'rejector':>9}{'called':>8}{'<= 5 s':>8}{'max s':>7}{'beats after':>12}"
          f"{'pulses found':>13}")
    for fs_dev in rates:
        for label, amp, width, tail, tau in PULSES:
            for rejector in (True, False):
                called = within = after = found = due = 0
                worst = 0.0
                for rec, y, rec_fs, t_last, t_cut, rr in cases:
                    _progress(f"[capture lost {fs_dev:g} Hz, {label}, rejector {'on' if rejector else 'off'}] {rec}")
                    z = _resample(y, rec_fs, fs_dev)
                    times = t_last - 0.04 + rr * np.arange(1, int(len(z) / fs_dev / rr) + 2)
                    z = z + pace_pulses(len(z), fs_dev, [t for t in times if t * fs_dev < len(z)], amp, width, tail, tau)
                    beats, asystole, count = _stream(z, fs_dev, rejector)
                    found += count
                    due += sum(1 for t in times if t * fs_dev < len(z))
                    after += sum(1 for b in beats if b > (t_cut + 0.1) * fs_dev)
                    late = [at / fs_dev - t_last for start, at in asystole if at / fs_dev > t_cut]
                    if late:
                        called += 1
                        within += late[0] <= 5.0
                        worst = max(worst, late[0])
                print(f"{fs_dev:6g}  {label:<32}{'on' if rejector else 'off':>9}{called:5d}/{len(cases):<2d}"
                      f"{within:8d}{(f'{worst:7.1f}' if called else '      -')}{after:12d}"
                      f"{(f'{found:7d} of {due}' if rejector else '-'):>13}", flush=True)


def capture(rates: Sequence[float]) -> None:
    """Print QRS Se/+P with a pulse before every beat against the same records without pulses."""
    import wfdb

    from vigil.evaluation.ec57 import read_reference

    print("\nCapture: a pulse 60 ms before every reference R (first 10 min, lead 0); QRS Se/+P over 1-9.8 min, "
          "150 ms window")
    print(f"{'rate':>6}  {'record':<7}{'no pulses':>18}  " + "  ".join(f"{lab:>29}" for lab, *_ in PULSES[1::2]))
    for fs_dev in rates:
        for rec in CAPTURE_RECORDS:
            path = data_root() / "mitdb" / rec
            if not path.with_suffix(".dat").exists():
                continue
            r = wfdb.rdrecord(str(path), channels=[0], sampto=int(600 * 360))
            ref_all, fs = read_reference(str(path))
            x = _resample(np.nan_to_num(r.p_signal[:, 0]) * 1000.0, float(r.fs), fs_dev)
            ref = np.array([s / fs * fs_dev for s, _ in ref_all if s < len(x) / fs_dev * fs])
            scored = ref[(ref > 60 * fs_dev) & (ref < 588 * fs_dev)]
            cells = []
            for pulse in [None, *PULSES[1::2]]:
                _progress(f"[capture {fs_dev:g} Hz] {rec} {pulse[0] if pulse else 'no pulses'}")
                z = x if pulse is None else x + pace_pulses(len(x), fs_dev, list(ref / fs_dev - 0.06), *pulse[1:])
                beats, _, _ = _stream(z, fs_dev)
                se, ppv = _se_ppv(np.array([b for b in beats if 60 * fs_dev < b < 588 * fs_dev]), scored,
                                  0.15 * fs_dev)
                cells.append(f"{se:6.2f} / {ppv:6.2f}")
            print(f"{fs_dev:6g}  {rec:<7}{cells[0]:>18}  " + "  ".join(f"{c:>29}" for c in cells[1:]), flush=True)


def _se_ppv(beats: FloatArray, ref: FloatArray, tol: float) -> tuple[float, float]:
    """QRS sensitivity and positive predictivity (%) with a ±`tol` match window."""
    if not len(ref) or not len(beats):
        return 0.0, 0.0
    tp = sum(1 for r in ref if np.abs(beats - r).min() <= tol)
    fp = sum(1 for b in beats if np.abs(ref - b).min() > tol)
    return 100.0 * tp / len(ref), 100.0 * (len(beats) - fp) / len(beats)


def false_pulses(rates: Sequence[float]) -> None:
    """Print the pulses the rejector finds on the unmodified (unpaced and paced) records."""
    import wfdb

    from vigil.signal.pace import PaceRejector

    print("\nPulses found on the unmodified records (both leads; none has sharp pacemaker pulses)")
    print(f"{'record':<14}" + "".join(f"{f'{r:g} Hz':>10}" for r in rates))
    totals = [0] * len(rates)
    hours = 0.0
    for db in ("mitdb", "nstdb"):
        for h in sorted((data_root() / db).glob("*.hea")):
            if not h.with_suffix(".dat").exists():
                continue
            _progress(f"[false pulses] {db}/{h.stem}")
            r = wfdb.rdrecord(str(h.with_suffix("")), channels=[0, 1])
            x = np.nan_to_num(r.p_signal) * 1000.0
            hours += len(x) / r.fs / 3600.0
            counts = []
            for j, fs_dev in enumerate(rates):
                y = _resample(x, float(r.fs), fs_dev)
                rej = PaceRejector(fs_dev, 2)
                step = int(round(0.25 * fs_dev))
                for s in range(0, len(y), step):
                    rej.feed(y[s:s + step], s)
                counts.append(rej.count)
                totals[j] += rej.count
            if any(counts):
                print(f"{db + '/' + h.stem:<14}" + "".join(f"{c:10d}" for c in counts), flush=True)
    print(f"{f'all ({hours:.1f} h)':<14}" + "".join(f"{c:10d}" for c in totals))


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    """Print the pacemaker-pulse tables (see module docstring)."""
    p = argparse.ArgumentParser(prog="eval_pace")
    p.add_argument("--rates", default="360,500,1000", help="device rates (Hz) the records are resampled to")
    p.add_argument("--every", type=float, default=180.0, help="seconds between loss-of-capture onsets in a record")
    p.add_argument("--no-scan", action="store_true", help="skip the false-pulse scan of the unmodified records")
    args = p.parse_args(argv)
    if not (data_root() / "mitdb").exists():
        print(f"no mitdb records under {data_root()} (set VIGIL_DATA)")
        return 1
    rates = [float(r) for r in args.rates.split(",") if r]
    print("python -m vigil.evaluation.eval_pace " + " ".join(argv))
    loss_of_capture(rates, args.every)
    capture(rates)
    if not args.no_scan:
        false_pulses(rates)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
