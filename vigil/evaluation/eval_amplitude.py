"""The analyser across EC13's QRS amplitude range and with inverted polarity, on real records.

ANSI/AAMI EC13 (§4.1.2.1) asks a cardiac monitor to count QRS complexes of 0.5 to 5 mV.  The MIT-BIH
records here have QRS complexes of ~0.6-3.8 mV (lead 0), so the ECG of each record is scaled around its
own baseline (`baseline`: the baseline itself stays as recorded, since electrode wander does not grow
with the heart's voltage) until its median QRS amplitude (0.5-40 Hz band-passed peak-to-peak within
±60 ms of each reference R, lead 0) is 0.5, 1, 2 and 5 mV; once the whole lead is inverted (× −1, swapped
electrodes).  Both leads get the same factor.  Every condition runs through the full streaming analyser
(two leads, rhythm on, 0.25 s feeds), and is compared with the record as recorded:

* QRS and VEB Se/+P (EC57 rules as ``eval_qrs``: 150 ms window, first 5 min excluded, reference VF
  spans excluded; VEB without the paced records);
* seconds flagged ``noise`` by the quality check and seconds in NOISE episodes — a clean record made
  taller or smaller is no noisier, so these should not grow;
* rhythm agreement: of the seconds that carry a rhythm label (SINUS, AF, VT, …) in either run, the
  share with the same labels in both;
* VT, VF and ASYSTOLE onsets (the alarm-bearing calls).

Usage: ``python -m vigil.evaluation.eval_amplitude [--records 119,203] [--minutes 30] [--workers 2]``
(≈ 8 min for the 24 records on 2 workers, 16 on one).  Progress goes to stderr, tables to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np

from vigil.datasets import data_root
from vigil.evaluation.ec57 import (
    PACED_RECORDS,
    SKIP_MITDB_S,
    BeatScore,
    present_records,
    read_reference,
    read_vf_episodes,
    score,
)
from vigil.evaluation.eval_qrs import BLOCK_S, read_signal
from vigil.signal.quality import QRS_HALF_S

TARGETS_MV = (0.5, 1.0, 2.0, 5.0)  # EC13 §4.1.2.1: QRS amplitudes a monitor must count
CONDITIONS = ("as recorded", *(f"QRS {t:g} mV" for t in TARGETS_MV), "inverted")
ALARM_LABELS = ("VT", "VF", "ASYSTOLE")


def qrs_amplitude_uv(x: np.ndarray, fs: float, r_peaks: list[int]) -> float:
    """Median 0.5-40 Hz band-passed peak-to-peak (µV) within ±60 ms of the given R samples (one lead)."""
    import scipy.signal as sps

    sos = sps.butter(2, [0.5, min(40.0, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    y = sps.sosfiltfilt(sos, x)
    h = int(round(QRS_HALF_S * fs))
    amps = [float(np.ptp(y[r - h:r + h + 1])) for r in r_peaks if h <= r < len(y) - h]
    return float(np.median(amps)) if amps else 0.0


BASELINE_SMOOTH_HZ = 1.0


def baseline(x: np.ndarray, fs: float) -> np.ndarray:
    """Each lead's baseline: 200 ms then 600 ms median filters (de Chazal et al., IEEE TBME 2004), smoothed.

    The median filters' output steps where their median switches between samples; left in, those steps
    carry 5-15 Hz content that the QRS detector sees as noise once the ECG around them is scaled down.
    A zero-phase 1 Hz low-pass removes them (wander is slower).
    """
    import scipy.signal as sps
    from scipy.ndimage import median_filter

    b1 = median_filter(x, size=(int(0.2 * fs) | 1, 1), mode="nearest")
    b2 = median_filter(b1, size=(int(0.6 * fs) | 1, 1), mode="nearest")
    sos = sps.butter(2, BASELINE_SMOOTH_HZ, btype="lowpass", fs=fs, output="sos")
    return np.asarray(sps.sosfiltfilt(sos, b2, axis=0))


def scaled(x: np.ndarray, base: np.ndarray, k: float) -> np.ndarray:
    """The ECG around its baseline times `k`, the baseline itself as recorded (k < 0: the whole lead inverted)."""
    if k < 0:
        return k * x
    return base + k * (x - base)


def scale_for(condition: str, qrs_uv: float) -> float:
    """The factor `scaled` applies to the record's ECG for a condition (see `CONDITIONS`)."""
    if condition == "as recorded":
        return 1.0
    if condition == "inverted":
        return -1.0
    target_mv = float(condition.split()[1])
    return target_mv * 1000.0 / qrs_uv


@dataclass
class Run:
    """What the analyser emitted for one record under one condition."""

    beats: list[tuple[int, str]] = field(default_factory=list)
    labels: dict[int, frozenset[str]] = field(default_factory=dict)  # second -> rhythm labels covering it
    noise_s: int = 0
    noise_episode_s: float = 0.0
    onsets: Counter[str] = field(default_factory=Counter)


def analyse(x: np.ndarray, fs: float) -> Run:
    """Stream `x` (µV, shape (n, leads)) through the full analyser; collect beats, rhythm, quality."""
    from vigil.model import Beat, QualityReport, RhythmEpisode
    from vigil.signal.analyzer import EcgAnalyzer

    an = EcgAnalyzer(fs, n_leads=x.shape[1], qt=False)
    run = Run()
    spans: dict[tuple[str, int], int] = {}
    block = int(round(BLOCK_S * fs))

    def take(outputs: Sequence[object], now: int) -> None:
        for o in outputs:
            if isinstance(o, Beat):
                run.beats.append((o.sample, o.label))
            elif isinstance(o, QualityReport):
                run.noise_s += "noise" in o.flags
            elif isinstance(o, RhythmEpisode):
                key = (o.label, o.start)
                if key not in spans and o.label in ALARM_LABELS:
                    run.onsets[o.label] += 1
                spans[key] = now if o.end is None else o.end

    for i in range(0, len(x), block):
        take(an.feed(x[i:i + block], i), min(i + block, len(x)))
    take(an.flush(), len(x))
    per_second: dict[int, set[str]] = {}
    for (label, start), end in spans.items():
        if label == "NOISE":
            run.noise_episode_s += (end - start) / fs
        for s in range(int(start // fs), int(np.ceil(end / fs))):
            per_second.setdefault(s, set()).add(label)
    run.labels = {s: frozenset(v) for s, v in per_second.items()}
    return run


def agreement(a: Run, b: Run) -> tuple[int, int]:
    """(seconds labelled alike, seconds labelled in either run)."""
    seconds = a.labels.keys() | b.labels.keys()
    same = sum(1 for s in seconds if a.labels.get(s) == b.labels.get(s))
    return same, len(seconds)


def _job(args: tuple[str, float]) -> tuple[str, dict[str, tuple[BeatScore, Run, float]], float]:
    rec, minutes = args
    t0 = time.perf_counter()
    path = data_root() / "mitdb" / rec
    x, fs, _ = read_signal(path)
    x = x[:int(minutes * 60 * fs), :2]
    ref, _ = read_reference(str(path))
    vf = read_vf_episodes(str(path))
    qrs_uv = qrs_amplitude_uv(x[:, 0], fs, [s for s, _ in ref])
    base = baseline(x, fs)
    out: dict[str, tuple[BeatScore, Run, float]] = {}
    for cond in CONDITIONS:
        k = scale_for(cond, qrs_uv)
        run = analyse(scaled(x, base, k), fs)
        sc = score(ref, run.beats, fs, start=int(SKIP_MITDB_S * fs), end=len(x), exclude=vf)
        out[cond] = (sc, run, k)
    return rec, out, time.perf_counter() - t0


def _pct(v: float) -> str:
    return "  -   " if v != v else f"{100 * v:6.2f}"


def main(argv: list[str]) -> int:
    """Print the amplitude/polarity table (see module docstring)."""
    p = argparse.ArgumentParser(prog="eval_amplitude", description=__doc__.splitlines()[0])
    p.add_argument("--records", default="", help="comma-separated mitdb records (default: all present)")
    p.add_argument("--minutes", type=float, default=30.0, help="minutes of each record (default: all 30)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if args.minutes * 60 <= SKIP_MITDB_S:
        p.error(f"--minutes {args.minutes:g}: EC57 scoring skips the first {SKIP_MITDB_S / 60:g} min")
    root = data_root()
    recs = present_records(root, "mitdb", args.records)
    if not recs:
        print(f"no mitdb records under {root}")
        return 1
    results: dict[str, dict[str, tuple[BeatScore, Run, float]]] = {}
    with get_context("fork").Pool(max(1, min(2, args.workers))) as pool:
        for k, (rec, out, dt) in enumerate(pool.imap_unordered(_job, [(r, args.minutes) for r in recs]), 1):
            results[rec] = out
            print(f"[{k}/{len(recs)}] mitdb/{rec} ({dt:.0f} s)", file=sys.stderr, flush=True)
    print(f"EcgAnalyzer (2 leads, rhythm on, {BLOCK_S:g} s feeds) on {len(recs)} mitdb records, their ECG scaled around its baseline to EC13's "
          f"QRS amplitude range (lead 0 median band-passed QRS peak-to-peak) and inverted; {args.minutes:g} min each. "
          f"Records: {root}")
    print(f"{'condition':>12} {'QRS Se':>7} {'QRS +P':>7} {'VEB Se':>7} {'VEB +P':>7} {'noise s':>8} "
          f"{'NOISE ep s':>10} {'rhythm same %':>13} " + " ".join(f"{lab:>8}" for lab in ALARM_LABELS))
    changed: dict[str, list[str]] = {}
    for cond in CONDITIONS:
        qrs = sum((results[r][cond][0] for r in recs), BeatScore())
        veb = sum((results[r][cond][0] for r in recs if r not in PACED_RECORDS), BeatScore())
        noise = sum(results[r][cond][1].noise_s for r in recs)
        noise_ep = sum(results[r][cond][1].noise_episode_s for r in recs)
        same = total = 0
        for r in recs:
            a, b = agreement(results[r]["as recorded"][1], results[r][cond][1])
            same, total = same + a, total + b
            if b and a / b < 0.99:
                changed.setdefault(cond, []).append(f"{r} {100 * a / b:.1f} %")
        onsets = Counter[str]()
        for r in recs:
            onsets.update(results[r][cond][1].onsets)
        print(f"{cond:>12} {_pct(qrs.se):>7} {_pct(qrs.ppv):>7} {_pct(veb.veb_se):>7} {_pct(veb.veb_ppv):>7} "
              f"{noise:8d} {noise_ep:10.0f} {100 * same / max(1, total):13.2f} "
              + " ".join(f"{onsets[lab]:8d}" for lab in ALARM_LABELS))
    print("scale factors: " + ", ".join(
        f"{r} {results[r]['QRS 0.5 mV'][2]:.2f}-{results[r]['QRS 5 mV'][2]:.2f}" for r in recs))
    for cond, rows in changed.items():
        print(f"rhythm agreement < 99 % ({cond}): {', '.join(rows)}")
    for cond in CONDITIONS[1:]:
        moved = [f"{r} " + "/".join(f"{results[r]['as recorded'][1].onsets[lab]}>{results[r][cond][1].onsets[lab]}"
                                    for lab in ALARM_LABELS)
                 for r in recs if results[r][cond][1].onsets != results[r]["as recorded"][1].onsets]
        if moved:
            print(f"VT/VF/ASYSTOLE onsets as recorded > {cond}: {', '.join(moved)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
