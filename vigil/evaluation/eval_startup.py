"""Start-up accuracy and latency of the streaming analyser: a fresh start (or a gap) every 60 s.

On every mitdb record (and nstdb 118e24/118e12) the analyser is started afresh at 0, 60, 120 … s
(the same as the re-learning after a gap in ``seq``), fed 0.25 s blocks for ``SEGMENT_S`` seconds, with
two leads and with lead 1, once with the QRS detector's full 2 s learning period (``quick_start=False``,
the behaviour before), and with the early end on clear evidence of a QRS (``quick_start=True``; "quick
>=0.45": evidence peaks in the first 0.45 s not counted, ``quick_from_s=0.45``; "quick wait .6": the
evidence peak at least 0.6 s before the window's end, ``quick_after_s=0.6``; "quick floor": ratio 3 and
an integrator peak of at least 1e8 (µV/s)², lead 1 only).
Reported: Se/+P of the beats in the first 10 s (EC57 150 ms match window, reference VF episodes
excluded), the beats lost (FN) and false (FP) in the first 2 s, and the latency of every start-up beat
(R within the first 2 s) from acquisition: the end of the block that emitted it minus its R sample.

Usage: ``python -m vigil.evaluation.eval_startup [--records 119,203] [--every 60] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np

from vigil.datasets import data_root
from vigil.evaluation.ec57 import BeatScore, present_records, read_reference, read_vf_episodes, score

BLOCK_S = 0.25  # the daemon's feed
SCORE_S = 10.0  # beats scored after each start
STARTUP_S = 2.0  # "start-up" beats: R within this long after the start (the old learning period)
SEGMENT_S = 12.0  # fed after each start (the last scored beats are emitted well before its end)
NSTDB = ("118e24", "118e12")
SCHEMES: tuple[tuple[str, dict[str, float]], ...] = (  # name, QrsDetector keywords
    ("2 s learning", {}),
    ("quick", {"quick_start": True}),
    ("quick >=0.45", {"quick_start": True, "quick_from_s": 0.45}),
    ("quick wait .6", {"quick_start": True, "quick_after_s": 0.6}),
    ("quick floor", {"quick_start": True, "quick_ratio": 3.0, "quick_floor": 1e8}),  # lead 1 only (see QrsDetector)
)


@dataclass
class Tally:
    """Scores and start-up latencies of one (scheme, leads) configuration."""

    first10: BeatScore = field(default_factory=BeatScore)
    first2: BeatScore = field(default_factory=BeatScore)
    latency: list[float] = field(default_factory=list)
    starts: int = 0

    def add(self, other: Tally) -> None:
        """Accumulate another tally into this one."""
        self.first10 = self.first10 + other.first10
        self.first2 = self.first2 + other.first2
        self.latency.extend(other.latency)
        self.starts += other.starts


def run_start(x: np.ndarray, fs: float, s0: int, quick: bool, **detector: float) -> list[tuple[int, int]]:
    """Beats (R sample, emitted-at sample) of a fresh analyser fed x[s0:s0 + SEGMENT_S] in 0.25 s blocks.

    `quick` and `detector` are passed to ``QrsDetector`` (``quick_start`` and its other keywords).
    """
    from vigil.model import Beat
    from vigil.signal.analyzer import EcgAnalyzer
    from vigil.signal.qrs import QrsDetector

    an = EcgAnalyzer(fs, n_leads=x.shape[1], rhythm=False, qt=False)
    an.detector = QrsDetector(fs, x.shape[1], quick_start=quick, **detector)
    block = int(round(BLOCK_S * fs))
    stop = min(len(x), s0 + int(SEGMENT_S * fs))
    out: list[tuple[int, int]] = []
    for i in range(s0, stop, block):
        j = min(i + block, stop)
        out.extend((o.sample, j) for o in an.feed(x[i:j], i) if isinstance(o, Beat))
    return out


def _job(args: tuple[str, str, float]) -> tuple[str, str, dict[tuple[str, int], Tally]]:
    import wfdb

    db, rec, every = args
    path = str(data_root() / db / rec)
    r = wfdb.rdrecord(path)
    fs = float(r.fs)
    sig = np.nan_to_num(r.p_signal * 1000.0)
    ref, _ = read_reference(path, "atr")
    vf = read_vf_episodes(path, "atr")
    res: dict[tuple[str, int], Tally] = {}
    step = int(every * fs)
    for name, kw in SCHEMES:
        kw = dict(kw)
        quick = bool(kw.pop("quick_start", False))
        for leads in (1,) if "quick_floor" in kw else (2, 1):
            t = Tally()
            x = sig[:, :leads]
            for s0 in range(0, len(x) - int(SEGMENT_S * fs), step):
                beats = run_start(x, fs, s0, quick, **kw)
                test = [(s, "N") for s, _ in beats]
                ref_n = [(s, "N") for s, _ in ref]
                t.first10 = t.first10 + score(ref_n, test, fs, start=s0, end=s0 + int(SCORE_S * fs), exclude=vf)
                t.first2 = t.first2 + score(ref_n, test, fs, start=s0, end=s0 + int(STARTUP_S * fs), exclude=vf)
                t.latency.extend((e - s) / fs for s, e in beats if s < s0 + int(STARTUP_S * fs))
                t.starts += 1
            res[name, leads] = t
    return db, rec, res


def _pct(v: float) -> str:
    return "   n/a" if v != v else f"{100 * v:6.2f}"


def table(title: str, tallies: dict[tuple[str, int], Tally]) -> str:
    """The before/after table of one database."""
    lines = [title, f"{'scheme':>13} {'leads':>5} {'starts':>6} {'Se10%':>6} {'+P10%':>6} {'FN2':>4} {'FP2':>4} "
                    f"{'beats2':>6} {'lat max':>7} {'lat p99':>7} {'lat p50':>7} {'>1 s':>5} {'>1 s %':>6}"]
    for (name, leads), t in tallies.items():
        la = np.asarray(t.latency) if t.latency else np.zeros(1)
        over = int((la > 1.0).sum())
        lines.append(f"{name:>13} {leads:5d} {t.starts:6d} {_pct(t.first10.se)} {_pct(t.first10.ppv)} "
                     f"{t.first2.fn:4d} {t.first2.fp:4d} {len(t.latency):6d} {la.max():7.2f} "
                     f"{np.percentile(la, 99):7.2f} {np.percentile(la, 50):7.2f} {over:5d} "
                     f"{100 * over / max(1, len(t.latency)):6.2f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the start-up tables (see module docstring)."""
    p = argparse.ArgumentParser(prog="eval_startup")
    p.add_argument("--records", default="", help="comma-separated mitdb records (default: all present)")
    p.add_argument("--every", type=float, default=60.0, help="seconds between starts")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    root = data_root()
    mit = present_records(root, "mitdb", args.records)
    nst = present_records(root, "nstdb", among=NSTDB)
    jobs = [("mitdb", r, args.every) for r in mit] + [("nstdb", r, args.every) for r in nst]
    if not jobs:
        print(f"no mitdb/nstdb records under {root}")
        return 1
    totals: dict[str, dict[tuple[str, int], Tally]] = {}
    with get_context("fork").Pool(max(1, min(2, args.workers))) as pool:
        for k, (db, rec, res) in enumerate(pool.imap_unordered(_job, jobs), 1):
            key = "mitdb" if db == "mitdb" else f"nstdb {rec}"
            tot = totals.setdefault(key, {})
            for c, t in res.items():
                tot.setdefault(c, Tally()).add(t)
            print(f"[{k}/{len(jobs)}] {db}/{rec}", file=sys.stderr, flush=True)
    print(f"Start-up: a fresh analyser every {args.every:g} s, {BLOCK_S} s feeds; Se/+P over the first {SCORE_S:g} s "
          f"(150 ms window), FN2/FP2 = beats lost/false in the first {STARTUP_S:g} s, latency (s) of every beat "
          f"with R in the first {STARTUP_S:g} s from its acquisition to its emission. Records: {root}")
    for key in sorted(totals):
        print()
        print(table(f"--- {key} ---", totals[key]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
