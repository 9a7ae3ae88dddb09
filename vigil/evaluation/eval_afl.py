"""Atrial flutter feasibility: can the data here separate AFL from AF (mitdb) and from sinus rhythm (afdb, qtdb)?

Run: ``python -m vigil.evaluation.eval_afl`` (≈ 1 min).  Two measurements, printed as tables:

1. Atrial activity on mitdb records with AF/AFL reference rhythm, per lead, by reference rhythm (10 s
   windows): dominant frequency and organisation index of the residual after average-beat
   subtraction (Everett et al., "Frequency domain algorithm for quantifying atrial fibrillation
   organization to increase defibrillation efficacy", IEEE Trans. Biomed. Eng. 48 (2001) 969-978:
   power within ±0.5 Hz of the dominant peak and its first harmonic over 3-12 Hz power), and the
   autocorrelation peak at flutter cycle lengths (160-260 ms) in TQ segments.  Flutter is organised,
   so both should be higher in AFL than in AF.
2. A rate-only flutter rule on RR windows (32 intervals): ventricular rate 110-180 bpm with normalised
   RMSSD below a threshold (fixed-ratio block gives a locked, very regular rate).  Counted per reference
   rhythm on afdb (.qrs beats) and per record on mitdb/qtdb reference beats, whose exercise and
   ST-change records contain sinus tachycardia.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np

from vigil.cliargs import parse, summary
from vigil.datasets import data_root

BEAT_SYMBOLS = frozenset("NLRejAaJSVEF/fQ")
WINDOW_S = 10.0
RR_WINDOW = 32
RATE_BPM = (110.0, 180.0)
NRMSSD_THRESHOLDS = (0.01, 0.015, 0.02, 0.03)


def _rhythm_at(notes: list[tuple[int, str]], samples: np.ndarray) -> list[str]:
    """Reference rhythm (aux note) in force at each sample."""
    starts = np.array([s for s, _ in notes], dtype=np.int64)
    idx = np.searchsorted(starts, samples, side="right") - 1
    return [notes[i][1] if i >= 0 else "?" for i in idx]


def _notes(ann: object) -> list[tuple[int, str]]:
    return [(int(s), n.strip("\x00 ")) for s, n in zip(ann.sample, ann.aux_note, strict=True)  # type: ignore[attr-defined]
            if n and n.strip("\x00 ")]


def atrial_activity(record: str) -> dict[tuple[int, str], list[tuple[float, float, float]]]:
    """(lead, rhythm) -> [(dominant Hz, organisation index, TQ autocorrelation peak)] over 10 s windows."""
    import scipy.signal as sps
    import wfdb

    path = str(data_root() / "mitdb" / record)
    rec, ann = wfdb.rdrecord(path), wfdb.rdann(path, "atr")
    fs = float(rec.fs)
    notes = _notes(ann)
    beats = np.array([s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in BEAT_SYMBOLS])
    x_all = sps.sosfiltfilt(sps.butter(2, [1.0, 30.0], btype="band", fs=fs, output="sos"),
                            np.nan_to_num(rec.p_signal), axis=0)
    pre, post, win = int(0.12 * fs), int(0.45 * fs), int(WINDOW_S * fs)
    taper = np.ones(pre + post)
    m = int(0.03 * fs)
    taper[:m], taper[-m:] = np.linspace(0, 1, m), np.linspace(1, 0, m)
    out: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    for lead in range(x_all.shape[1]):
        x = x_all[:, lead]
        for w0 in range(0, len(x) - win, win):
            rhythm = _rhythm_at(notes, np.array([w0 + win // 2]))[0]
            if rhythm not in ("(AFIB", "(AFL"):
                continue
            inside = beats[(beats >= w0 + pre) & (beats < w0 + win - post)]
            near = beats[(beats >= max(pre, w0 - 15 * int(fs))) & (beats < min(len(x) - post, w0 + win + 15 * int(fs)))]
            if len(inside) < 4 or len(near) < 8:
                continue
            template = np.median(np.stack([x[k - pre:k + post] for k in near]), axis=0) * taper
            seg = x[w0:w0 + win].copy()
            for k in inside:
                seg[k - w0 - pre:k - w0 + post] -= template
            f, p = sps.welch(seg, fs=fs, nperseg=int(4 * fs))
            band = (f >= 3.0) & (f <= 12.0)
            fb, pb = f[band], p[band]
            df = float(fb[np.argmax(pb)])
            oi = float((pb[np.abs(fb - df) <= 0.5].sum() + pb[np.abs(fb - 2 * df) <= 0.5].sum()) / pb.sum())
            peaks = []
            for a, b in zip(inside[:-1], inside[1:], strict=True):
                lo, hi = a + int(0.36 * fs), b - int(0.10 * fs)
                if hi - lo >= int(0.40 * fs):
                    s = x[lo:hi] - x[lo:hi].mean()
                    ac = np.correlate(s, s, "full")[len(s) - 1:]
                    lags = np.arange(len(ac)) / fs
                    peaks.append(float((ac / ac[0])[(lags >= 0.16) & (lags <= 0.26)].max()))
            out.setdefault((lead, rhythm), []).append((df, oi, float(np.median(peaks)) if peaks else float("nan")))
    return out


def regular_tachycardia(samples: np.ndarray, fs: float) -> list[tuple[int, float, float]]:
    """(sample, rate bpm, normalised RMSSD) of RR windows of 32 intervals, every 16 intervals."""
    rr = np.diff(samples) / fs
    out = []
    for i in range(RR_WINDOW, len(rr), RR_WINDOW // 2):
        w = rr[i - RR_WINDOW:i]
        out.append((int(samples[i]), 60.0 / float(np.median(w)), float(np.sqrt(np.mean(np.diff(w) ** 2)) / np.mean(w))))
    return out


def _flagged(windows: list[tuple[int, float, float]], threshold: float) -> list[int]:
    return [s for s, rate, nr in windows if RATE_BPM[0] <= rate <= RATE_BPM[1] and nr < threshold]


def main(argv: list[str]) -> int:
    """Print both feasibility tables."""
    p = argparse.ArgumentParser(prog="python -m vigil.evaluation.eval_afl", description=summary(__doc__),
                                allow_abbrev=False)
    parse(p, argv)  # no options: --help, and an error for anything else
    import wfdb

    print("python -m vigil.evaluation.eval_afl")
    print("\n1. Atrial activity by reference rhythm, 10 s windows (median [IQR]); AFL should be more organised")
    print(f"{'record':>6} {'lead':>4} {'rhythm':>6} {'n':>4} {'dominant Hz':>18} {'organisation':>18} {'TQ autocorr':>18}")
    for record in ("201", "203"):
        if not (data_root() / "mitdb" / f"{record}.hea").exists():
            continue
        print(f"mitdb {record}", file=sys.stderr, flush=True)
        for (lead, rhythm), rows in sorted(atrial_activity(record).items()):
            a = np.array(rows)
            cells = []
            for col in range(3):
                v = a[:, col][~np.isnan(a[:, col])]
                cells.append(f"{np.median(v):5.2f} [{np.percentile(v, 25):5.2f},{np.percentile(v, 75):5.2f}]" if len(v) else "-")
            print(f"{record:>6} {lead:4d} {rhythm.lstrip('('):>6} {len(a):4d} " + " ".join(f"{c:>18}" for c in cells))

    print(f"\n2. Rate-only flutter rule: {RR_WINDOW}-interval RR windows at {RATE_BPM[0]:.0f}-{RATE_BPM[1]:.0f} bpm "
          "with normalised RMSSD below the threshold")
    by_rhythm: dict[float, Counter[str]] = {t: Counter() for t in NRMSSD_THRESHOLDS}
    totals: Counter[str] = Counter()
    for hea in sorted((data_root() / "afdb").glob("*.hea")):
        path = str(hea.with_suffix(""))
        print(f"afdb {hea.stem}", file=sys.stderr, flush=True)
        qrs, atr = wfdb.rdann(path, "qrs"), wfdb.rdann(path, "atr")
        windows = regular_tachycardia(np.asarray(qrs.sample), float(qrs.fs))
        rhythms = _rhythm_at(_notes(atr), np.array([w[0] for w in windows]))
        totals.update(rhythms)
        for t in NRMSSD_THRESHOLDS:
            flagged = set(_flagged(windows, t))
            by_rhythm[t].update(r for w, r in zip(windows, rhythms, strict=True) if w[0] in flagged)
    names = sorted(totals)
    print("afdb (.qrs beats), windows flagged / windows, by reference rhythm")
    print(f"{'NRMSSD<':>8} " + " ".join(f"{n.lstrip('('):>13}" for n in names))
    for t in NRMSSD_THRESHOLDS:
        print(f"{t:8.3f} " + " ".join(f"{by_rhythm[t][n]:6d}/{totals[n]:<6d}" for n in names))
    t = NRMSSD_THRESHOLDS[1]
    print(f"mitdb and qtdb reference beats, records with windows flagged at NRMSSD < {t} (rhythm from .atr, ? = none)")
    for db in ("mitdb", "qtdb"):
        for hea in sorted((data_root() / db).glob("*.hea")):
            path = str(hea.with_suffix(""))
            if not hea.with_suffix(".atr").exists():
                continue
            ann = wfdb.rdann(path, "atr")
            beats = np.array([s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in BEAT_SYMBOLS])
            if len(beats) <= RR_WINDOW + 1:
                continue
            hits = _flagged(regular_tachycardia(beats, float(ann.fs)), t)
            if hits:
                notes = _notes(ann)
                rh = Counter(_rhythm_at(notes, np.array(hits)) if notes else ["?"] * len(hits))
                print(f"  {db} {hea.stem}: {len(hits)} windows {dict(rh)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
