"""HRV of the streaming analyser against the same estimator fed the cardiologists' beats (mitdb, nstdb).

Issue 3 asks for SDNN, RMSSD, pNN50 over rolling 5-minute windows and LF, HF, LF/HF when there are
enough clean NN intervals, ectopic beats excluded. The reference here is `vigil.signal.hrv.HrvEstimator`
fed the reference annotation's beats with their AAMI classes (so the reference NN intervals are N–N
intervals of the annotated beats), emitted on the same 30 s grid; our numbers come from the whole
`EcgAnalyzer` (our beats and labels, 2 leads, 1 s feeds). What the table measures is how beat detection
and labelling errors reach HRV; the estimator's own arithmetic is checked against neurokit2 in
`tests/test_hrv_eval.py`. Beside ours, neurokit2's ``ecg_peaks`` and wfdb's XQRS beats (lead 0; they label
no beat, so every interval counts as NN) go through the same estimator.

Per metric: windows where both sides have a value, median |error| relative to the reference value, and
the share of windows within 10 % (LF/HF: within 20 %); pNN50, a percentage often near 0, by its absolute
error in percentage points (within 5 points). Paced records 102 and 104 are left out (their
paced beats are not N).

Run: ``python -m vigil.evaluation.eval_hrv [--no-baselines] [RECORD ...]`` (≈ 3 min with the baselines on
2 workers).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from vigil.cliargs import parse, summary
from vigil.datasets import data_root
from vigil.model import Beat, Measurement, Metric

METRICS = (Metric.SDNN, Metric.RMSSD, Metric.PNN50, Metric.LF, Metric.HF, Metric.LF_HF)
TOLERANCE = {Metric.LF_HF: 0.20}  # relative tolerance per metric (default 10 %)
PACED = {"102", "104"}
NSTDB = ("118e24", "118e12", "118e00")
Series = dict[tuple[Metric, int], float]  # (metric, sample of the emission) -> value


def hrv_from_beats(beats: Iterable[Beat], fs: float, n_samples: int) -> Series:
    """Run `HrvEstimator` over beats (sorted by sample) to the end of the record."""
    from vigil.signal.hrv import HrvEstimator

    est = HrvEstimator(fs)
    out = est.update(sorted(beats, key=lambda b: b.sample), n_samples)
    return {(m.metric, m.sample): float(m.value) for m in out if isinstance(m, Measurement)}


def hrv_from_analyzer(path: Path) -> tuple[Series, float, int]:
    """HRV emitted by `EcgAnalyzer` (2 leads, 1 s feeds) over a WFDB record; its fs and length."""
    from vigil.evaluation.eval_qrs import read_signal
    from vigil.signal.analyzer import EcgAnalyzer

    sig, fs, _ = read_signal(path)
    x = sig[:, :2]
    a = EcgAnalyzer(fs, n_leads=x.shape[1])
    found: Series = {}
    step = int(fs)
    outs = [o for i in range(0, len(x), step) for o in a.feed(x[i:i + step], i)] + list(a.flush())
    for o in outs:
        if isinstance(o, Measurement) and o.metric in METRICS:
            found[o.metric, o.sample] = float(o.value)
    return found, fs, len(x)


def reference_beats(path: Path) -> list[Beat]:
    """The annotation's beats with their AAMI class (N, S, V, F, Q)."""
    from vigil.evaluation.ec57 import read_reference

    return [Beat(s, c) for s, c in read_reference(str(path))[0]]  # type: ignore[arg-type]


def compare(ref: Series, test: Series) -> dict[Metric, list[tuple[float, float]]]:
    """(reference, test) value pairs per metric on the emissions both sides made."""
    pairs: dict[Metric, list[tuple[float, float]]] = {m: [] for m in METRICS}
    for key, r in ref.items():
        if key in test:
            pairs[key[0]].append((r, test[key]))
    return pairs


Result = tuple[str, str, str, dict[Metric, list[tuple[float, float]]], int, int]  # db, record, method, pairs, windows


def _job(args: tuple[str, str, str]) -> Result:
    """One record and one method: value pairs, and the reference's / the method's window counts."""
    db, rec, method = args
    path = data_root() / db / rec
    import wfdb

    hdr = wfdb.rdheader(str(path))
    fs, n = float(hdr.fs), int(hdr.sig_len)
    ref = hrv_from_beats(reference_beats(path), fs, n)
    if method == "vigil":
        test, _, _ = hrv_from_analyzer(path)
    else:
        from vigil.evaluation.eval_qrs import baseline_record

        test = hrv_from_beats((Beat(s, "N") for s, _ in baseline_record(path, method)), fs, n)
    ref_windows = len({k[1] for k in ref})
    test_windows = len({k[1] for k in test})
    return db, rec, method, compare(ref, test), ref_windows, test_windows


def _row(name: str, pairs: dict[Metric, list[tuple[float, float]]]) -> str:
    cells = []
    for m in METRICS:
        p = np.asarray(pairs[m], dtype=float)
        if not len(p):
            cells.append(f"{'-':>18}")
            continue
        if m == Metric.PNN50:  # a percentage, often near 0: absolute error in points, within 5 points
            err, tol = np.abs(p[:, 1] - p[:, 0]), 5.0
            cells.append(f"{len(p):5d} {np.median(err):5.1f} {100 * np.mean(err <= tol):5.1f}%")
            continue
        rel = np.abs(p[:, 1] - p[:, 0]) / np.maximum(np.abs(p[:, 0]), 1e-9)
        tol = TOLERANCE.get(m, 0.10)
        cells.append(f"{len(p):5d} {100 * np.median(rel):5.1f} {100 * np.mean(rel <= tol):5.1f}%")
    return f"{name:<32}" + " ".join(cells)


def main(argv: list[str]) -> int:
    """Print the HRV agreement table (ours and the baselines against the reference beats)."""
    p = argparse.ArgumentParser(prog="python -m vigil.evaluation.eval_hrv", description=summary(__doc__),
                                allow_abbrev=False)
    p.add_argument("records", nargs="*", metavar="RECORD",
                   help="mitdb or nstdb record names (default: the 22 non-paced mitdb records and nstdb 118e24/e12/e00)")
    p.add_argument("--no-baselines", action="store_true", help="skip neurokit2's and XQRS's beats")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    args = parse(p, argv)
    root = data_root()
    mit = sorted(q.stem for q in (root / "mitdb").glob("*.hea") if q.stem not in PACED)
    nst = [r for r in NSTDB if (root / "nstdb" / f"{r}.hea").exists()]
    if args.records:
        mit = [r for r in args.records if (root / "mitdb" / f"{r}.hea").exists()]
        nst = [r for r in args.records if (root / "nstdb" / f"{r}.hea").exists()]
    if not mit and not nst:
        print(f"no mitdb/nstdb records under {root} (set VIGIL_DATA)")
        return 1
    methods = ("vigil",) if args.no_baselines else ("vigil", "neurokit2", "xqrs")
    jobs = [(db, r, m) for m in methods for db, recs in (("mitdb", mit), ("nstdb", nst)) for r in recs]
    print(f"python -m vigil.evaluation.eval_hrv{' --no-baselines' if args.no_baselines else ''}")
    print(f"HRV every 30 s over 5 min against HrvEstimator fed the reference beats; {len(mit)} mitdb records "
          f"(paced 102/104 left out), nstdb {' '.join(nst) or '-'}; {len(jobs)} runs on {args.workers} workers",
          flush=True)
    with ProcessPoolExecutor(max_workers=args.workers) as ex:
        results = list(ex.map(_job, jobs))
    head = " ".join(f"{m.value.upper()[:5] + ' n  med%  <=tol':>18}" for m in METRICS)
    for db in ("mitdb", "nstdb"):
        rows = [r for r in results if r[0] == db]
        if not rows:
            continue
        print(f"\n{db}: n = windows both emitted, med% = median |error| / reference value, "
              "<=tol = share within 10 % (LF/HF 20 %); pNN50: median |error| in points, share within 5 points")
        print(f"{'method / record':<32}{head}")
        for m in methods:
            total: dict[Metric, list[tuple[float, float]]] = {k: [] for k in METRICS}
            ref_w = test_w = 0
            for _, rec, _, pairs, rw, tw in (r for r in rows if r[2] == m):
                for k in METRICS:
                    total[k] += pairs[k]
                ref_w += rw
                test_w += tw
                if db == "nstdb":
                    print(_row(f"  {m} {rec}", pairs))
            print(_row(f"{m} (all, {test_w}/{ref_w} win)", total))
    print("\nwindows = 30 s emissions with at least 2 min of NN time (method / reference); a method that counts "
          "ectopic beats as NN (neurokit2, XQRS: no labels) inflates SDNN/RMSSD/pNN50 in records with ectopy.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
