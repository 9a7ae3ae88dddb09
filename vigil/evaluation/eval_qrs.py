"""EC57-style QRS and VEB tables on mitdb and nstdb for Vigil's streaming analyser, neurokit2's
default detector (``nk.ecg_peaks``) and wfdb's XQRS, side by side.

The QT Database's records (qtdb, 250 Hz, 15 min) carry the beat labels of their source databases
(MIT-BIH Arrhythmia incl. DS2 records 103/123/221/231, MIT-BIH Supraventricular Arrhythmia, Long-Term
and Normal Sinus Rhythm, European ST-T) in ``.atr``.  None of them is used to train or to choose
anything in the beat classifier (only DS1 mitdb is), so the qtdb table is an *external* VEB check on
records from other patients, devices and leads; it is scored with the same rules (``--no-qtdb`` skips it).

Usage: ``python -m vigil.evaluation.eval_qrs [--records 101,106] [--no-baselines] [--workers 2]
[--resample HZ]``.  ``--resample`` feeds every detector the records resampled (polyphase) to HZ, e.g.
130 as a Polar H10 or 500; detections are mapped back to the record's own sample numbering and scored
against the unchanged reference.  Progress goes to stderr, tables to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from multiprocessing import get_context
from pathlib import Path

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

log = logging.getLogger(__name__)

NSTDB = ("118e24", "118e12", "118e00")
BLOCK_S = 0.25  # seconds per feed when streaming a record (the daemon's replay block)
METHODS = ("vigil-2lead", "vigil-lead1", "neurokit2", "xqrs")


def read_signal(path: Path, channels: list[int] | None = None,
                rate: float | None = None) -> tuple[np.ndarray, float, float]:
    """A WFDB record's signal (µV, NaN as 0, shape (n, leads)), its own rate and the rate returned.

    With `rate`, the signal is resampled (polyphase, :func:`scipy.signal.resample_poly`) to it.
    """
    import wfdb

    rec = wfdb.rdrecord(str(path), channels=channels)
    x = np.nan_to_num(rec.p_signal * 1000.0)  # mV -> µV
    fs = float(rec.fs)
    if not rate or abs(rate - fs) < 1e-9:
        return x, fs, fs
    from fractions import Fraction

    import scipy.signal as sps

    fr = Fraction(rate / fs).limit_denominator(1000)
    y = sps.resample_poly(x, fr.numerator, fr.denominator, axis=0)
    return np.asarray(y, dtype=float), fs, fs * fr.numerator / fr.denominator


def to_record_samples(beats: list[tuple[int, str]], fs_used: float, fs_record: float) -> list[tuple[int, str]]:
    """Beat indices at `fs_used` mapped to the record's own numbering at `fs_record`."""
    if fs_used == fs_record:
        return beats
    k = fs_record / fs_used
    return [(int(round(s * k)), c) for s, c in beats]


def stream_record(path: Path, n_leads: int, block: int | None = None, channel: int = 0,
                  latencies: list[float] | None = None,
                  beyond_rules: list[float] | None = None,
                  rate: float | None = None) -> tuple[list[tuple[int, str]], float]:
    """Run the streaming analyser over a WFDB record; return its beats (sample, label) and fs.

    With `rate` the analyser is fed the record resampled to it; the beats are returned in the
    record's own sample numbering and the returned fs is the record's.

    `block` is the feed size in samples (default 0.25 s).  When `latencies` is given, the emission
    latency (s) of every beat after the QRS detector's learning period is appended to it: from the
    sample's acquisition, i.e. the end of the block that emitted the beat minus the beat's sample.
    When `beyond_rules` is given, every detection's latency beyond the wait the detector's own rules
    impose is appended to it, learning period included: the end of the emitting block minus
    ``Detection.due`` (the integrator peak, the end of the 2 s learning period or, for a searchback
    beat, the end of its searchback interval, whichever is latest).
    """
    from vigil.model import Beat
    from vigil.signal.analyzer import EcgAnalyzer
    from vigil.signal.qrs import LEARN_S, Detection

    sig, fs_record, fs = read_signal(path, rate=rate)
    cols = [channel] if n_leads == 1 else list(range(min(n_leads, sig.shape[1])))
    x = sig[:, cols]
    an = EcgAnalyzer(fs, n_leads=len(cols), rhythm=False, qt=False)
    block = block or int(round(BLOCK_S * fs))
    learned = int(LEARN_S * fs)
    beats: list[tuple[int, str]] = []
    detected: list[Detection] = []
    if beyond_rules is not None:
        process = an.detector.process

        def capture(block_x: np.ndarray) -> list[Detection]:
            found = process(block_x)
            detected.extend(found)
            return found

        an.detector.process = capture  # type: ignore[method-assign, assignment]
    for i in range(0, len(x), block):
        detected.clear()
        emitted_at = min(i + block, len(x))
        for o in an.feed(x[i:i + block], i):
            if isinstance(o, Beat):
                beats.append((o.sample, o.label))
                if latencies is not None and o.sample >= learned:
                    latencies.append((emitted_at - o.sample) / fs)
        if beyond_rules is not None:
            beyond_rules.extend((emitted_at - d.due) / fs for d in detected)
    for o in an.flush():
        if isinstance(o, Beat):
            beats.append((o.sample, o.label))
    return to_record_samples(beats, fs, fs_record), fs_record


def baseline_record(path: Path, method: str, rate: float | None = None) -> list[tuple[int, str]]:
    """Beats of a baseline detector on lead 1 (all labelled N: no classification), record numbering."""
    sig, fs_record, fs = read_signal(path, channels=[0], rate=rate)
    x = sig[:, 0] / 1000.0  # the detectors' own unit, mV
    if method == "neurokit2":
        import neurokit2 as nk

        _, info = nk.ecg_peaks(x, sampling_rate=int(round(fs)))
        peaks = info["ECG_R_Peaks"]
    else:
        import wfdb.processing as wp

        peaks = wp.xqrs_detect(sig=x, fs=fs, verbose=False)
    return to_record_samples([(int(p), "N") for p in peaks], fs, fs_record)


def _job(args: tuple[str, str, str, float | None]) -> tuple[str, str, str, BeatScore, float, list[float], list[float]]:
    db, rec, method, rate = args
    path = data_root() / db / rec
    t0 = time.perf_counter()
    latencies: list[float] = []
    beyond: list[float] = []
    if method.startswith("vigil"):
        beats, _ = stream_record(path, 2 if method == "vigil-2lead" else 1, latencies=latencies,
                                 beyond_rules=beyond, rate=rate)
    else:
        beats = baseline_record(path, method, rate)
    ref, fs = read_reference(str(path), "atr")
    if not fs:
        import wfdb

        fs = float(wfdb.rdheader(str(path)).fs)
    sc = score(ref, beats, fs, start=int(SKIP_MITDB_S * fs), exclude=read_vf_episodes(str(path), "atr"))
    return db, rec, method, sc, time.perf_counter() - t0, latencies, beyond


def latency_line(latencies: list[float]) -> str:
    """One line summarising beat emission latencies (s): p50, p99, p99.9, max and the share over 1 s."""
    la = np.asarray(latencies)
    if not la.size:
        return "no beats"
    over = int((la > 1.0).sum())
    return (f"p50 {np.percentile(la, 50):.2f} s, p99 {np.percentile(la, 99):.2f} s, "
            f"p99.9 {np.percentile(la, 99.9):.2f} s, max {la.max():.2f} s; "
            f"> 1 s: {over} of {la.size} beats ({100 * over / la.size:.3f} %)")


def _pct(v: float) -> str:
    return "   n/a" if v != v else f"{100 * v:6.2f}"


def _table(title: str, rows: list[tuple[str, BeatScore]], veb: bool) -> str:
    lines = [title, f"{'record':>8} {'TP':>6} {'FN':>5} {'FP':>5} {'Se%':>6} {'+P%':>6}"
             + (f" {'Vv':>5} {'Vmiss':>5} {'Vfalse':>6} {'VSe%':>6} {'V+P%':>6}" if veb else "")]
    for name, s in rows:
        line = f"{name:>8} {s.tp:6d} {s.fn:5d} {s.fp:5d} {_pct(s.se)} {_pct(s.ppv)}"
        if veb:
            vv, vm, vf = s.veb_counts()
            line += f" {vv:5d} {vm:5d} {vf:6d} {_pct(s.veb_se)} {_pct(s.veb_ppv)}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the QRS/VEB tables (see module docstring)."""
    p = argparse.ArgumentParser(prog="eval_qrs")
    p.add_argument("--records", default="", help="comma-separated mitdb records (default: all present)")
    p.add_argument("--no-baselines", action="store_true", help="skip neurokit2 and XQRS")
    p.add_argument("--methods", default="", help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-qtdb", action="store_true", help="skip the external qtdb QRS/VEB table")
    p.add_argument("--resample", type=float, default=None, metavar="HZ",
                   help="feed the detectors the records resampled to HZ (e.g. 130, 500)")
    args = p.parse_args(argv)
    if args.resample is not None and not 100.0 <= args.resample <= 2000.0:
        p.error(f"--resample {args.resample:g}: expected a rate between 100 and 2000 Hz")
    root = data_root()
    mit = present_records(root, "mitdb", args.records)
    nst = present_records(root, "nstdb", among=NSTDB)
    qt = [] if args.no_qtdb or args.records else [
        r for r in present_records(root, "qtdb") if (root / "qtdb" / f"{r}.atr").exists()]
    methods: tuple[str, ...] = METHODS[:2] if args.no_baselines else METHODS
    if args.methods:
        methods = tuple(m for m in METHODS if m in args.methods.split(","))
    jobs = [(db, r, m, args.resample) for m in methods for db, recs in (("mitdb", mit), ("nstdb", nst), ("qtdb", qt))
            for r in recs]
    if not jobs:
        print(f"no mitdb/nstdb records under {root}")
        return 1
    results: dict[tuple[str, str, str], BeatScore] = {}
    latencies: dict[str, list[float]] = {m: [] for m in methods}
    beyond: dict[str, list[float]] = {m: [] for m in methods}
    with get_context("fork").Pool(max(1, min(2, args.workers))) as pool:
        for k, (db, rec, m, sc, dt, lat, bey) in enumerate(pool.imap_unordered(_job, jobs), 1):
            results[db, rec, m] = sc
            if db == "mitdb":
                latencies[m].extend(lat)
                beyond[m].extend(bey)
            print(f"[{k}/{len(jobs)}] {m} {db}/{rec} Se={_pct(sc.se)} +P={_pct(sc.ppv)} ({dt:.1f}s)",
                  file=sys.stderr, flush=True)
    print("EC57 beat-by-beat (bxb rules): 150 ms match window, first 5 min excluded, reference VF/VFL "
          "episodes ([ to ]) excluded; VEB excludes paced records "
          f"({', '.join(sorted(PACED_RECORDS))}). Records: {root}"
          + (f"; signals resampled to {args.resample:g} Hz, detections mapped back to the records' "
             "numbering" if args.resample else ""))
    summary = []
    for m in methods:
        rows = [(r, results["mitdb", r, m]) for r in mit]
        gross = sum((s for _, s in rows), BeatScore())
        veb_gross = sum((s for r, s in rows if r not in PACED_RECORDS), BeatScore())
        veb = m.startswith("vigil")
        print()
        print(_table(f"--- {m}: mitdb ---", rows + [("gross", gross)], veb))
        if veb:
            vv, vm, vf = veb_gross.veb_counts()
            print(f"VEB gross (non-paced): Vv={vv} missed={vm} false={vf} "
                  f"Se={_pct(veb_gross.veb_se)}% +P={_pct(veb_gross.veb_ppv)}%")
            ss, sm, sf = veb_gross.sveb_counts()
            print(f"SVEB gross (non-paced; S is called only on narrow, clearly premature beats in a regular rhythm): "
                  f"Ss={ss} missed={sm} false={sf} Se={_pct(ss / (ss + sm) if ss + sm else float('nan'))}% "
                  f"+P={_pct(ss / (ss + sf) if ss + sf else float('nan'))}%")
            print(f"Beat latency (0.25 s feeds, from acquisition, after the 2 s learning period; whole records): "
                  f"{latency_line(latencies[m])}")
            print(f"Beat latency beyond the detector's own wait (every beat incl. the learning period; from the "
                  f"later of its integrator peak, the learning period's end and its searchback deadline): "
                  f"{latency_line(beyond[m])}")
        nrows = [(r, results["nstdb", r, m]) for r in nst]
        if nrows:
            print(_table(f"--- {m}: nstdb ---", nrows, veb))
        qrows = [(r, results["qtdb", r, m]) for r in qt]
        if qrows:
            qgross = sum((s for _, s in qrows), BeatScore())
            print(_table(f"--- {m}: qtdb (external: not used to train or choose anything; 250 Hz) ---",
                         qrows + [("gross", qgross)], veb))
            if veb:
                vv, vm, vf = qgross.veb_counts()
                print(f"VEB gross (qtdb, external): Vv={vv} missed={vm} false={vf} "
                      f"Se={_pct(qgross.veb_se)}% +P={_pct(qgross.veb_ppv)}%")
        summary.append((m, gross, veb_gross, dict(nrows)))
    print("\nSummary (gross mitdb QRS Se/+P, VEB Se/+P, nstdb 118e12 Se/+P)")
    for m, g, vg, nr in summary:
        n12 = nr.get("118e12")
        vtxt = f"{_pct(vg.veb_se)} {_pct(vg.veb_ppv)}" if m.startswith("vigil") else "   n/a    n/a"
        e12 = f"{_pct(n12.se)} {_pct(n12.ppv)}" if n12 else "   n/a    n/a"
        print(f"{m:>12}  QRS {_pct(g.se)} {_pct(g.ppv)}   VEB {vtxt}   118e12 {e12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
