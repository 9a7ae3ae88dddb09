"""Ventricular ectopy patterns on MIT-BIH: COUPLET, BIGEMINY, TRIGEMINY and VT episodes of the rhythm
tracker fed only the beats' strict labels (``Beat.rhythm_label``, as before session 6) or only their
reported labels.  What ships counts VT on the strict labels and the patterns on the reported ones.

Each non-paced mitdb record is streamed through ``EcgAnalyzer`` (two leads, rhythm off); its beats are
then fed to a fresh ``RhythmTracker`` twice, without the signal or quality (so noise never suppresses
a call and VT needs no QRS-size check), relabelled with the strict and with the reported label.  Reference: rhythm notes ``(B``, ``(T``, ``(VT`` and couplets (exactly two
consecutive ``V`` beats).  An episode counts as detected / true on any overlap
(``vigil.evaluation.episodes.score``).  Both beat models were trained on these records, so the
comparison is in-sample for both.

Usage: ``python -m vigil.evaluation.eval_ectopy`` (~15 s on 2 workers).
"""

from __future__ import annotations

import argparse
import sys
from multiprocessing import get_context
from typing import Any

import numpy as np

from vigil.cliargs import parse, summary
from vigil.datasets import data_root
from vigil.evaluation.ec57 import PACED_RECORDS
from vigil.evaluation.episodes import rhythm_intervals, score
from vigil.model import Beat

LABELS = ("COUPLET", "BIGEMINY", "TRIGEMINY", "VT")
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
Interval = tuple[int, int]


def _episodes(beats: list[Beat], fs: float, n: int) -> dict[str, list[Interval]]:
    """Closed COUPLET/BIGEMINY/TRIGEMINY/VT episodes of a RhythmTracker fed `beats` in 1-s steps."""
    from vigil.signal.rhythm import RhythmTracker

    t = RhythmTracker(fs)
    step, delay = int(fs), int(0.3 * fs)
    eps = []
    bi = 0
    for upto in range(step, n + step, step):
        new = []
        while bi < len(beats) and beats[bi].sample < upto - delay:
            new.append(beats[bi])
            bi += 1
        eps += t.update(beats=new, upto=upto - delay, signal=None, signal_start=upto, quality=[])
    eps += t.close(n)
    return {lab: [(e.start, e.end + 1) for e in eps if e.label == lab and e.end is not None] for lab in LABELS}


def reference(rec: str, n: int) -> dict[str, list[Interval]]:
    """Reference ectopy episodes of mitdb `rec` (rhythm notes and couplets of its beat annotations)."""
    import wfdb

    ann = wfdb.rdann(str(data_root() / "mitdb" / rec), "atr")
    samples = [int(s) for s in ann.sample]
    notes = [a or "" for a in ann.aux_note]
    out = {lab: rhythm_intervals(samples, notes, {code}, n) for lab, code in
           (("BIGEMINY", "B"), ("TRIGEMINY", "T"), ("VT", "VT"))}
    out["COUPLET"] = couplets(list(zip(samples, ann.symbol, strict=True)))
    return out


def couplets(annotations: list[tuple[int, str]]) -> list[Interval]:
    """(first, second + 1) of every run of exactly two V beats among the beat annotations (others skipped)."""
    beats = [(s, c) for s, c in annotations if c in BEAT_SYMBOLS]
    is_v = [c == "V" for _, c in beats]
    return [(beats[i][0], beats[i + 1][0] + 1) for i in range(len(beats) - 1)
            if is_v[i] and is_v[i + 1] and (i == 0 or not is_v[i - 1]) and (i + 2 >= len(beats) or not is_v[i + 2])]


def run_record(rec: str) -> tuple[str, dict[str, dict[str, list[Interval]]], dict[str, list[Interval]]]:
    """Episodes of one record under strict and reported labels, and its reference."""
    import wfdb

    from vigil.signal.analyzer import EcgAnalyzer

    r = wfdb.rdrecord(str(data_root() / "mitdb" / rec))
    x = np.nan_to_num(r.p_signal * 1000.0)[:, :2]
    fs = float(r.fs)
    an = EcgAnalyzer(fs, n_leads=2, rhythm=False, qt=False)
    beats: list[Beat] = []
    for i in range(0, len(x), 250):
        beats += [o for o in an.feed(x[i:i + 250], i) if isinstance(o, Beat)]
    out = {"strict": _episodes([Beat(b.sample, b.rhythm_label, b.channel) for b in beats], fs, len(x)),
           "label": _episodes([Beat(b.sample, b.label, b.channel) for b in beats], fs, len(x))}
    return rec, out, reference(rec, len(x))


def main(argv: list[str]) -> int:
    """Print episode Se/+P per pattern for strict and reported labels (see module docstring)."""
    p = argparse.ArgumentParser(prog="python -m vigil.evaluation.eval_ectopy", description=summary(__doc__),
                                allow_abbrev=False)
    parse(p, argv)  # no options: --help, and an error for anything else
    root = data_root() / "mitdb"
    recs = sorted(f.stem for f in root.glob("*.hea") if f.stem not in PACED_RECORDS)
    tot: dict[tuple[str, str], list[int]] = {}
    with get_context("fork").Pool(2) as pool:
        results: list[Any] = list(pool.imap_unordered(run_record, recs))
    for _rec, out, ref in results:
        for variant, eps in out.items():
            for lab in LABELS:
                sc = score(ref[lab], eps[lab])
                acc = tot.setdefault((lab, variant), [0, 0, 0, 0])
                for k, v in enumerate((sc.ref_episodes, sc.ref_detected, sc.det_episodes, sc.det_true)):
                    acc[k] += v
    print(f"Ectopy episodes on {len(recs)} non-paced mitdb records (rhythm tracker without signal/quality; "
          "both beat models in-sample)")
    print(f"{'pattern':10s} {'beats':7s} {'ref':>5s} {'found':>5s} {'ours':>5s} {'true':>5s} {'Se %':>6s} {'+P %':>6s}")
    for lab in LABELS:
        for variant in ("strict", "label"):
            a = tot.get((lab, variant), [0, 0, 0, 0])
            print(f"{lab:10s} {variant:7s} {a[0]:5d} {a[1]:5d} {a[2]:5d} {a[3]:5d} "
                  f"{100 * a[1] / max(1, a[0]):6.1f} {100 * a[3] / max(1, a[2]):6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
