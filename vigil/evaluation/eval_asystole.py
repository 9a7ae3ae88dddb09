"""Asystole onsets made from real records: is ASYSTOLE called, and how long after the last beat?

The data here hold no clean true asystole (CinC 2015 a103l is the only asystole alarm, and its ECG
still shows complexes), so the ventricles are stopped artificially: each record is kept up to just
before a reference beat (350 ms before its R, i.e. before its P wave, at least 450 ms after the previous R so that
beat's T wave stays), and continues as the record's own slow baseline (1 s median) plus amplifier
noise — white, 10 µV rms — and optionally mains hum (60 Hz, 30 µV amplitude; MIT-BIH is American).
Every onset is run through the full streaming analyser (lead 0, 0.25 s feeds, 30 s of the record
before it to learn).  The definition needs 4 s without a QRS, so the analyser should open ASYSTOLE
4-5 s after the last real beat; it must not open it before the cut.

It then scans the unmodified records (mitdb, qtdb, challenge2015, vfdb, cudb; lead 0, then both leads)
for ASYSTOLE calls: none of them annotates asystole, so each call there is either a true pause the
annotators did not mark (the CinC records have no beat annotations) or a false alarm to look at.

Usage: ``python -m vigil.evaluation.eval_asystole [--records 100,119] [--every 90] [--leads 1|2] [--no-scan]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from vigil.datasets import data_root

WARM_S = 30.0  # record before the onset, for the detector and templates to learn
AFTER_S = 12.0  # signal after the onset
FEED_S = 0.25
NOISE_UV = 10.0
HUM_UV = 30.0
HUM_HZ = 60.0
CONDITIONS = ("amplifier noise", "noise + mains hum")


def stopped(x: np.ndarray, cut: int, n_after: int, fs: float, hum: bool, rng: np.random.Generator) -> np.ndarray:
    """`x` up to `cut`, then its own 1 s median baseline plus amplifier noise (and hum) for `n_after` samples."""
    from scipy.ndimage import median_filter

    lo = max(0, cut - int(2 * fs))
    src = x[lo:cut + n_after]
    base = median_filter(src, size=(int(fs), 1), mode="nearest")[cut - lo:]
    base = base - base[0] + x[cut - 1]  # continuous at the cut
    t = np.arange(len(base)) / fs
    tail = base + rng.normal(0.0, NOISE_UV, base.shape)
    if hum:
        tail += HUM_UV * np.sin(2 * np.pi * HUM_HZ * t)[:, None]
    return np.concatenate([x[:cut], tail])


def run_onset(x: np.ndarray, fs: float, last_r: int, cut: int, hum: bool,
              seed: int) -> tuple[float | None, float | None, bool]:
    """Seconds from the last real beat to ASYSTOLE being emitted (None: never), seconds from the episode's
    own start (the analyser's last beat) to its emission, and whether ASYSTOLE was opened before the cut."""
    from vigil.model import RhythmEpisode
    from vigil.signal.analyzer import EcgAnalyzer

    a = max(0, cut - int(WARM_S * fs))
    y = stopped(x[a:], cut - a, int(AFTER_S * fs), fs, hum, np.random.default_rng(seed))
    an = EcgAnalyzer(fs, n_leads=y.shape[1])
    block = int(round(FEED_S * fs))
    early = False
    for i in range(0, len(y), block):
        for o in an.feed(y[i:i + block], a + i):
            if isinstance(o, RhythmEpisode) and o.label == "ASYSTOLE" and o.end is None:
                if a + i + block <= cut:
                    early = True
                    continue
                at = a + min(i + block, len(y))
                return (at - last_r) / fs, (at - o.start) / fs, early
    return None, None, early


def onsets(ref: list[tuple[int, str]], fs: float, n: int, every_s: float) -> list[tuple[int, int]]:
    """(last R, cut) pairs every `every_s` seconds from `WARM_S` on."""
    beats = [s for s, _ in ref]
    out = []
    t = WARM_S * fs
    for k in range(1, len(beats)):
        if beats[k] < t:
            continue
        prev, nxt = beats[k - 1], beats[k]
        cut = max(nxt - int(0.35 * fs), prev + int(0.45 * fs))
        if cut < nxt and cut + AFTER_S * fs < n:
            out.append((prev, cut))
        t = nxt + every_s * fs
    return out


def scan_records(n_leads: int) -> tuple[int, float, list[tuple[str, list[tuple[float, float]]]]]:
    """ASYSTOLE episodes on the real records (mitdb, qtdb, challenge2015, vfdb, cudb; none annotates asystole).

    Returns the number of records, their hours and, per record with calls, the episodes (start, end s).
    """
    from vigil.evaluation.eval_rhythm import run_analyzer

    root = data_root()
    paths = [h for db in ("mitdb", "qtdb", "challenge2015", "vfdb", "cudb") for h in sorted((root / db).glob("*.hea"))]
    hours = 0.0
    calls: list[tuple[str, list[tuple[float, float]]]] = []
    for h in paths:
        print(f"[scan, {n_leads} lead(s)] {h.parent.name}/{h.stem}", file=sys.stderr, flush=True)
        fs, n, run = run_analyzer(str(h.with_suffix("")), n_leads=n_leads)
        hours += n / fs / 3600.0
        episodes = run.intervals("ASYSTOLE", n)
        if episodes:
            calls.append((f"{h.parent.name}/{h.stem}", [(s / fs, e / fs) for s, e in episodes]))
    return len(paths), hours, calls


def main(argv: list[str]) -> int:
    """Print the asystole tables (see module docstring)."""
    import wfdb

    from vigil.evaluation.ec57 import read_reference

    p = argparse.ArgumentParser(prog="eval_asystole")
    p.add_argument("--records", default="", help="comma-separated mitdb records (default: all present)")
    p.add_argument("--every", type=float, default=90.0, help="seconds between onsets in a record")
    p.add_argument("--leads", type=int, choices=(1, 2), default=1)
    p.add_argument("--no-scan", action="store_true", help="skip the ASYSTOLE calls on the unmodified records")
    args = p.parse_args(argv)
    root: Path = data_root() / "mitdb"
    recs = sorted(f.stem for f in root.glob("*.hea"))
    if args.records:
        recs = [r for r in recs if r in args.records.split(",")]
    if not recs:
        print(f"no mitdb records under {root}")
        return 1
    print(f"ASYSTOLE on stopped real ECG (mitdb, lead{'s 0+1' if args.leads == 2 else ' 0'}, {FEED_S} s feeds; "
          f"time = last real beat -> ASYSTOLE emitted, from acquisition; definition: 4 s without QRS)")
    print(f"{'condition':<20} {'onsets':>6} {'called':>6} {'<= 5 s':>6} {'median s':>8} {'max s':>6} "
          f"{'beyond 4 s: max':>15} {'early':>5}")
    notes: list[str] = []
    for ci, cond in enumerate(CONDITIONS):
        times: list[float | None] = []
        beyond: list[float] = []
        early = 0
        for ri, rec in enumerate(recs):
            print(f"[{cond}] {rec}", file=sys.stderr, flush=True)
            r = wfdb.rdrecord(str(root / rec))
            x = np.nan_to_num(r.p_signal[:, :args.leads] * 1000.0)
            ref, fs = read_reference(str(root / rec))
            for k, (last_r, cut) in enumerate(onsets(ref, fs, len(x), args.every)):
                t, since_start, e = run_onset(x, fs, last_r, cut, hum=ci == 1, seed=1000 * ri + k)
                times.append(t)
                if since_start is not None:
                    beyond.append(since_start - 4.0)
                early += e
                if t is None or t > 5.0 or e:
                    what = "not called" if t is None else f"called {t:.2f} s after the last beat"
                    notes.append(f"  {cond}: {rec} onset at {cut / fs:.1f} s: {what}"
                                 + ("; ASYSTOLE also opened before the cut" if e else ""))
        got = np.array([t for t in times if t is not None])
        within = int((got <= 5.0).sum())
        med = f"{np.median(got):8.2f}" if got.size else "       -"
        mx = f"{got.max():6.2f}" if got.size else "     -"
        bmax = f"{max(beyond):15.2f}" if beyond else "              -"
        print(f"{cond:<20} {len(times):6d} {got.size:6d} {within:6d} {med} {mx} {bmax} {early:5d}", flush=True)
    print("median/max s: last real beat -> ASYSTOLE emitted; beyond 4 s: from the episode's start (the analyser's "
          "last beat) to its emission, minus the 4 s the definition needs; early = ASYSTOLE opened before the cut")
    print("\n".join(notes))
    if args.no_scan:
        return 0
    print("\nASYSTOLE calls on the unmodified records (none has annotated asystole; 1 s feeds as eval_rhythm)")
    for n_leads in (1, 2):
        n_rec, hours, calls = scan_records(n_leads)
        total = sum(len(e) for _, e in calls)
        print(f"lead{'s 0+1' if n_leads == 2 else ' 0'}: {n_rec} records, {hours:.1f} h, {total} ASYSTOLE episodes"
              + "".join(f"\n  {rec}: " + ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in eps) for rec, eps in calls),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
