"""QT evaluation against the QT Database manual annotations (.q1c, and .q2c where present).

For every manually annotated beat (QRS onset '(' before the QRS peak, T end ')' after 't') our
delineator (`vigil.signal.delineate`) is applied to the median beat of the annotated beat and its
neighbours (±`NEIGHBOURS` beats from the record's .atr, else the .pu0 beat list; each window is
re-aligned on its dominant QRS peak) on the baseline-removed
lead (the same 0.5 Hz high-pass the streaming analyser uses), lead by lead; the "multi" result
averages the QRS onsets and T ends of the leads that could be delineated.
Errors (ours − reference, ms) are summarised as mean ± SD per record and over all beats.

Run: ``python -m vigil.evaluation.eval_qt [--lead 0|1|multi] [--no-stream] [RECORD ...]``; the last table is
the streaming `QtMeasurer` (30 s median beat) against each record's median annotated QT (``--no-stream``
skips it; ``--stream`` is accepted for compatibility and changes nothing).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace

import numpy as np

from vigil.datasets import data_root
from vigil.signal.delineate import Delineation, delineate, median_beat, refine_r, zero_phase_lowpass

NEIGHBOURS = 8  # beats each side in the median beat
BEFORE_S = 0.3
AFTER_S = 0.75
QRS_SYMBOLS = set("NVABQLRFjaeSJ/f")


@dataclass(frozen=True, slots=True)
class RefBeat:
    """Manual annotation of one beat (sample indices)."""

    peak: int
    qrs_on: int
    t_end: int


def reference_beats(path: str, ext: str) -> list[RefBeat]:
    """Beats of a .q1c/.q2c file that have a QRS onset and a T end."""
    import wfdb

    ann = wfdb.rdann(path, ext)
    sym = list(ann.symbol)
    smp = [int(s) for s in ann.sample]
    out: list[RefBeat] = []
    for i, s in enumerate(sym):
        if s not in QRS_SYMBOLS:
            continue
        on = smp[i - 1] if i > 0 and sym[i - 1] == "(" else None
        t_end = None
        j = i + 1
        while j < len(sym) and sym[j] not in QRS_SYMBOLS:
            if sym[j] == "t":
                k = j + 1
                while k < len(sym) and sym[k] not in QRS_SYMBOLS and sym[k] != ")":
                    k += 1
                if k < len(sym) and sym[k] == ")":
                    t_end = smp[k]
                break
            j += 1
        if on is not None and t_end is not None:
            out.append(RefBeat(smp[i], on, t_end))
    return out


def _beat_list(path: str) -> np.ndarray:
    import os

    import wfdb

    for ext in ("atr", "pu0"):
        if os.path.exists(f"{path}.{ext}"):
            ann = wfdb.rdann(path, ext)
            beats = [int(s) for s, y in zip(ann.sample, ann.symbol, strict=True) if y in QRS_SYMBOLS]
            if beats:
                return np.asarray(beats)
    return np.asarray([], dtype=int)


def baseline_removed(x: np.ndarray, fs: float) -> np.ndarray:
    """The analyser's baseline removal (causal 1st-order 0.5 Hz high-pass) over a whole lead."""
    import scipy.signal as sps

    sos = sps.butter(1, 0.5, btype="highpass", fs=fs, output="sos")
    zi = sps.sosfilt_zi(sos) * x[0]
    return np.asarray(sps.sosfilt(sos, x, zi=zi)[0], dtype=float)


def _lp40(x: np.ndarray, fs: float, lo: int, hi: int) -> np.ndarray:
    return zero_phase_lowpass(x[lo:min(len(x), hi)], fs, 40.0)


def measure_beat(x: np.ndarray, fs: float, beats: np.ndarray, peak: int) -> Delineation | None:
    """Delineate the median beat of the beats around `peak`; indices returned in record samples."""
    if len(beats) == 0:
        return None
    k = int(np.argmin(np.abs(beats - peak)))
    lo, hi = max(0, k - NEIGHBOURS), min(len(beats), k + NEIGHBOURS + 1)
    centers = [int(c) for c in beats[lo:hi]]
    centers[k - lo] = peak
    lp = _lp40(x, fs, lo_idx := max(0, min(centers) - int(fs)), max(centers) + int(fs))
    centers = [refine_r(lp, c - lo_idx, fs, 0.04) + lo_idx for c in centers]
    shift = centers[k - lo] - peak
    rr = np.diff(beats[max(0, lo - 1):hi]) / fs
    rr_s = float(np.median(rr)) if len(rr) else 0.8
    # keep beats whose preceding RR is near the median (stable morphology)
    before, after = int(BEFORE_S * fs), int(AFTER_S * fs)
    med = median_beat(x, centers, before, after)
    if med is None:
        return None
    d = delineate(med, before, fs, rr_s)
    if d is None:
        return None
    off = peak + shift - before
    return replace(d, r=d.r + off, qrs_on=d.qrs_on + off, qrs_off=d.qrs_off + off, t_peak=d.t_peak + off,
                   t_end=d.t_end + off)


def stream_qt(x: np.ndarray, fs: float, beats: np.ndarray) -> list[tuple[int, float]]:
    """Run the streaming QtMeasurer over one lead in 1 s feeds; return (sample, QT ms) of valid outputs."""
    from vigil.model import Beat, Metric
    from vigil.signal.qt import QtMeasurer

    m = QtMeasurer(fs)
    out: list[tuple[int, float]] = []
    step = int(fs)
    delay = int(0.3 * fs)
    bi = 0
    for start in range(0, len(x), step):
        stop = min(len(x), start + step)
        upto = max(0, stop - delay)
        new = []
        while bi < len(beats) and beats[bi] < upto:
            new.append(Beat(int(beats[bi])))
            bi += 1
        for meas in m.update(beats=new, raw=x[start:stop], raw_start=start, upto=upto, quality=[]):
            if meas.metric == Metric.QT and not math.isnan(meas.value):
                out.append((meas.sample, meas.value))
    return out


def _stats(v: list[float]) -> tuple[float, float]:
    if not v:
        return float("nan"), float("nan")
    a = np.asarray(v)
    return float(np.mean(a)), float(np.std(a, ddof=1)) if len(a) > 1 else 0.0


def _fmt(m: float, s: float) -> str:
    return "      -      " if math.isnan(m) else f"{m:6.1f} ±{s:5.1f}"


def main(argv: list[str]) -> int:
    """Print QRS-onset, T-end and QT errors (ms) against qtdb .q1c/.q2c per record and overall."""
    import wfdb

    lead = "multi"
    if "--lead" in argv:
        lead = argv[argv.index("--lead") + 1]
    names = [a for a in argv if not a.startswith("--") and a not in ("0", "1", "multi")]
    folder = data_root() / "qtdb"
    records = names or sorted(p.stem for p in folder.glob("*.q1c"))
    print(f"python -m vigil.evaluation.eval_qt --lead {lead}")
    print("errors = ours - cardiologist (ms), mean ± SD over annotated beats; median beat of ±8 neighbours")
    for ext in ("q1c", "q2c"):
        recs = [r for r in records if (folder / f"{r}.{ext}").exists()]
        if not recs:
            continue
        print(f"\nqtdb .{ext}  (lead {lead})")
        print(f"{'record':>9} {'beats':>5} {'QRS onset':>13} {'T end':>13} {'QT':>13} {'failed':>6}")
        all_on: list[float] = []
        all_te: list[float] = []
        all_qt: list[float] = []
        rec_sd: list[tuple[float, float]] = []  # (T end SD, QT SD) of each record
        for rec in recs:
            print(f"qtdb {rec} {ext}", file=sys.stderr, flush=True)
            path = str(folder / rec)
            refs = reference_beats(path, ext)
            r = wfdb.rdrecord(path)
            fs = float(r.fs)
            leads = [baseline_removed(np.nan_to_num(r.p_signal[:, k]) * 1000.0, fs) for k in range(r.n_sig)]
            beats = _beat_list(path)
            on_e: list[float] = []
            te_e: list[float] = []
            qt_e: list[float] = []
            failed = 0
            for b in refs:
                use = [0, 1] if lead == "multi" else [int(lead)]
                ds = [d for d in (measure_beat(leads[k], fs, beats, b.peak) for k in use if k < len(leads))
                      if d is not None]
                if not ds:
                    failed += 1
                    continue
                if lead == "multi":  # average of the leads that could be delineated
                    on = int(round(float(np.mean([d.qrs_on for d in ds]))))
                    te = int(round(float(np.mean([d.t_end for d in ds]))))
                else:
                    on, te = ds[0].qrs_on, ds[0].t_end
                on_e.append((on - b.qrs_on) * 1000.0 / fs)
                te_e.append((te - b.t_end) * 1000.0 / fs)
                qt_e.append(((te - on) - (b.t_end - b.qrs_on)) * 1000.0 / fs)
            all_on += on_e
            all_te += te_e
            all_qt += qt_e
            if len(qt_e) > 1:
                rec_sd.append((_stats(te_e)[1], _stats(qt_e)[1]))
            print(f"{rec:>9} {len(on_e):5d} {_fmt(*_stats(on_e)):>13} {_fmt(*_stats(te_e)):>13} {_fmt(*_stats(qt_e)):>13} {failed:6d}")
        print(f"{'overall':>9} {len(all_on):5d} {_fmt(*_stats(all_on)):>13} {_fmt(*_stats(all_te)):>13} {_fmt(*_stats(all_qt)):>13}")
        if rec_sd:
            sd = np.asarray(rec_sd)
            print(f"mean of the per-record SDs ({len(sd)} records): T end {sd[:, 0].mean():.1f} ms, "
                  f"QT {sd[:, 1].mean():.1f} ms (the overall SD above also contains the spread of record means)")
        ae = np.abs(np.asarray(all_qt))
        if len(ae):
            print(f"QT |error|: median {np.median(ae):.1f} ms, within 25 ms {100 * np.mean(ae <= 25):.1f} %, within 50 ms {100 * np.mean(ae <= 50):.1f} %")
    if "--no-stream" not in argv:
        _stream_table(records, folder)
    return 0


def _stream_table(records: list[str], folder: object) -> None:
    """Streaming QtMeasurer (lead 0, median beat over 30 s) vs the record's median annotated QT."""
    import wfdb

    print("\nstreaming QtMeasurer, lead 0: median of its QT outputs over the annotated span (+30 s) vs median q1c QT")
    print(f"{'record':>9} {'ref QT':>7} {'stream QT':>9} {'error':>7} {'n out':>5}")
    errs: list[float] = []
    for rec in records:
        path = f"{folder}/{rec}"
        refs = reference_beats(path, "q1c")
        if not refs:
            continue
        r = wfdb.rdrecord(path, channels=[0])
        fs = float(r.fs)
        x = baseline_removed(np.nan_to_num(r.p_signal[:, 0]) * 1000.0, fs)
        outs = stream_qt(x, fs, _beat_list(path))
        lo, hi = refs[0].peak, refs[-1].peak + int(30 * fs)
        vals = [v for smp, v in outs if lo <= smp <= hi]
        ref_qt = float(np.median([(b.t_end - b.qrs_on) * 1000.0 / fs for b in refs]))
        if vals:
            err = float(np.median(vals)) - ref_qt
            errs.append(err)
            print(f"{rec:>9} {ref_qt:7.0f} {np.median(vals):9.0f} {err:7.1f} {len(vals):5d}")
        else:
            print(f"{rec:>9} {ref_qt:7.0f} {'-':>9} {'-':>7} {0:5d}")
    if errs:
        print(f"{'overall':>9} records {len(errs)}: error {np.mean(errs):.1f} ± {np.std(errs, ddof=1):.1f} ms")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
