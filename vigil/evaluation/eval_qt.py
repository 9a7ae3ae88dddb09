"""QT evaluation against the QT Database manual annotations (.q1c, and .q2c where present).

For every manually annotated beat (QRS onset '(' before the QRS peak, T end ')' after 't') our
delineator (`vigil.signal.delineate`) is applied to the median beat of the annotated beat and its
neighbours (±`NEIGHBOURS` beats from the record's .atr, else the .pu0 beat list; each window is
re-aligned on its dominant QRS peak) on the baseline-removed
lead (the same 0.5 Hz high-pass the streaming analyser uses), lead by lead; the "multi" result
averages the QRS onsets and T ends of the leads that could be delineated.
Errors (ours − reference, ms) are summarised as mean ± SD per record and over all beats.

Then the confident beats only (the T-end checks of `vigil.signal.qt`), with coverage, and a record-wise
5-fold cross-validation of the rule that decides confidence.

Run: ``python -m vigil.evaluation.eval_qt [--lead 0|1|multi] [--no-stream] [--two-lead-stream [--stream-rows]]
[--resample HZ] [--no-baselines] [RECORD ...]`` (``--resample``: the records resampled to HZ, e.g. 130 as a Polar H10); the last table is the streaming `QtMeasurer` (30 s median beat, lead 0 as in the analyser)
against each record's median annotated QT (``--no-stream`` skips it; ``--two-lead-stream`` adds the
QtMeasurer fed both leads, summary only unless ``--stream-rows``; ``--stream`` is accepted for
compatibility and changes nothing).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import dataclass, replace

import numpy as np

from vigil.cliargs import parse, summary
from vigil.datasets import data_root
from vigil.signal.delineate import Delineation, refine_r, zero_phase_lowpass
from vigil.signal.qt import LEAD_AGREE_MS, SPLIT_HALF_MS, WAVELET_AGREE_MS, t_end_checks, t_end_uncertain

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


def load_record(path: str, ext: str, channels: list[int] | None,
                rate: float | None = None) -> tuple[float, list[np.ndarray], list[RefBeat], np.ndarray]:
    """Rate, baseline-removed leads (µV), reference beats of `ext` and the beat list of a qtdb record;
    with `rate`, the signal is resampled (polyphase) and every annotation index scaled to it."""
    from fractions import Fraction

    import scipy.signal as sps
    import wfdb

    r = wfdb.rdrecord(path, channels=channels)
    fs = float(r.fs)
    sig = [np.nan_to_num(r.p_signal[:, k]) * 1000.0 for k in range(r.n_sig)]
    refs = reference_beats(path, ext)
    beats = _beat_list(path)
    if rate and abs(rate - fs) > 1e-9:
        fr = Fraction(rate / fs).limit_denominator(1000)
        k = rate / fs
        sig = [np.asarray(sps.resample_poly(x, fr.numerator, fr.denominator), dtype=float) for x in sig]
        refs = [RefBeat(round(b.peak * k), round(b.qrs_on * k), round(b.t_end * k)) for b in refs]
        beats = np.round(beats * k).astype(int)
        fs = rate
    return fs, [baseline_removed(x, fs) for x in sig], refs, beats


def _lp40(x: np.ndarray, fs: float, lo: int, hi: int) -> np.ndarray:
    return zero_phase_lowpass(x[lo:min(len(x), hi)], fs, 40.0)


def measure_beat_checked(x: np.ndarray, fs: float, beats: np.ndarray,
                         peak: int) -> tuple[Delineation | None, dict[str, float]]:
    """Delineate the median beat around `peak` (record sample indices) with its T-end checks."""
    if len(beats) == 0:
        return None, {}
    k = int(np.argmin(np.abs(beats - peak)))
    lo, hi = max(0, k - NEIGHBOURS), min(len(beats), k + NEIGHBOURS + 1)
    centers = [int(c) for c in beats[lo:hi]]
    centers[k - lo] = peak
    lp = _lp40(x, fs, lo_idx := max(0, min(centers) - int(fs)), max(centers) + int(fs))
    centers = [refine_r(lp, c - lo_idx, fs, 0.04) + lo_idx for c in centers]
    shift = centers[k - lo] - peak
    rr = np.diff(beats[max(0, lo - 1):hi]) / fs
    rr_s = float(np.median(rr)) if len(rr) else 0.8
    before, after = int(BEFORE_S * fs), int(AFTER_S * fs)
    wins = [x[c - before:c + after] for c in centers if c - before >= 0 and c + after <= len(x)]
    if not wins:
        return None, {}
    d, checks = t_end_checks(np.vstack(wins), before, fs, rr_s)
    if d is None:
        return None, {}
    off = peak + shift - before
    return replace(d, r=d.r + off, qrs_on=d.qrs_on + off, qrs_off=d.qrs_off + off, t_peak=d.t_peak + off,
                   t_end=d.t_end + off,
                   t_end_wavelet=d.t_end_wavelet + off if d.t_end_wavelet >= 0 else -1), checks


def measure_beat(x: np.ndarray, fs: float, beats: np.ndarray, peak: int) -> Delineation | None:
    """Delineate the median beat of the beats around `peak`; indices returned in record samples."""
    return measure_beat_checked(x, fs, beats, peak)[0]


def stream_qt_outputs(x: np.ndarray, fs: float, beats: np.ndarray) -> list[tuple[int, float, str]]:
    """Run the streaming QtMeasurer over one lead (1-D) or several ((n, leads)) in 1 s feeds; every QT output as (sample, QT ms,
    withheld reason or ""); a `t_end_uncertain` output carries the QT it rejected, others NaN."""
    from vigil.model import Beat, Metric
    from vigil.signal.qt import QtMeasurer

    m = QtMeasurer(fs)
    out: list[tuple[int, float, str]] = []
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
            if meas.metric != Metric.QT:
                continue
            reason = str(meas.detail.get("withheld", ""))
            value = meas.value if not reason else float(meas.detail.get("qt_ms", float("nan")))  # type: ignore[arg-type]
            out.append((meas.sample, value, reason))
    return out


def stream_qt(x: np.ndarray, fs: float, beats: np.ndarray) -> list[tuple[int, float]]:
    """Run the streaming QtMeasurer over one lead in 1 s feeds; return (sample, QT ms) of valid outputs."""
    return [(smp, v) for smp, v, why in stream_qt_outputs(x, fs, beats) if not why]


def _stats(v: list[float]) -> tuple[float, float]:
    if not v:
        return float("nan"), float("nan")
    a = np.asarray(v)
    return float(np.mean(a)), float(np.std(a, ddof=1)) if len(a) > 1 else 0.0


def _fmt(m: float, s: float) -> str:
    return "      -      " if math.isnan(m) else f"{m:6.1f} ±{s:5.1f}"


@dataclass(frozen=True, slots=True)
class BeatResult:
    """One annotated beat: reference and, per lead, (QRS onset, T end, T-end checks) or None."""

    ref: RefBeat
    leads: tuple[tuple[int, int, dict[str, float]] | None, ...]


def _combine(b: BeatResult, use: list[int]) -> tuple[float, float] | None:
    """QRS onset and T end (samples) averaged over the delineated leads in `use`."""
    ds = [b.leads[k] for k in use if k < len(b.leads) and b.leads[k] is not None]
    if not ds:
        return None
    return float(np.mean([d[0] for d in ds])), float(np.mean([d[1] for d in ds]))  # type: ignore[index]


def confident(b: BeatResult, use: list[int], fs: float, wavelet_ms: float = WAVELET_AGREE_MS,
              split_ms: float = SPLIT_HALF_MS, lead_ms: float = LEAD_AGREE_MS) -> bool:
    """True when a lead in `use` was delineated, none of those delineated has an uncertain T end and
    their T ends lie within `lead_ms` of each other (the QtMeasurer's rule)."""
    ends = []
    for k in use:
        d = b.leads[k] if k < len(b.leads) else None
        if d is None:
            continue
        if t_end_uncertain(d[2], wavelet_ms, split_ms):
            return False
        ends.append(d[1])
    return bool(ends) and (max(ends) - min(ends)) * 1000.0 / fs <= lead_ms


def qt_errors(beats: list[BeatResult], use: list[int], fs: float) -> list[float]:
    """QT error (ours − reference, ms) of the beats that could be delineated."""
    out = []
    for b in beats:
        c = _combine(b, use)
        if c is not None:
            out.append(((c[1] - c[0]) - (b.ref.t_end - b.ref.qrs_on)) * 1000.0 / fs)
    return out


def best_lead_errors(data: dict[str, tuple[float, list[BeatResult]]], use: list[int]) -> tuple[list[float], list[float]]:
    """T-end and QT errors (ms) taking, per beat, the lead whose error is smallest (each mark on its own).

    This is how the published qtdb results choose the lead (Laguna et al., Comput. Cardiol. 1994;
    Martínez et al., IEEE TBME 51 (2004) 570: "the lead with the smallest error"), which needs the
    reference: an upper bound on any lead choice a device could make, printed for comparison only.
    """
    te: list[float] = []
    qt: list[float] = []
    for fs, b in ((fs, b) for fs, beats in data.values() for b in beats):
        ds = [b.leads[k] for k in use if k < len(b.leads) and b.leads[k] is not None]
        if not ds:
            continue
        te.append(min(((d[1] - b.ref.t_end) * 1000.0 / fs for d in ds), key=abs))  # type: ignore[index]
        qt.append(min((((d[1] - d[0]) - (b.ref.t_end - b.ref.qrs_on)) * 1000.0 / fs for d in ds), key=abs))  # type: ignore[index]
    return te, qt


CV_FOLDS = 5
CV_COVERAGE_FLOOR = 0.75  # the rule may withhold at most a quarter of the training beats
CV_CURVE_FLOORS = (1.0, 0.9, 0.8, 0.7, 0.6)  # the coverage/accuracy trade-off printed beside the rule
CV_GRID_MS = (20.0, 30.0, 40.0, 60.0, 80.0, math.inf)


Rule = tuple[float, float, float]  # wavelet, split-half, lead-agreement limits (ms)


def _doubt_table(data: dict[str, tuple[float, list[BeatResult]]], use: list[int]) -> dict[str, np.ndarray]:
    """Per record, rows of (QT error ms, worst wavelet diff, worst split-half, lead T-end spread ms);
    inf where a lead failed (the vectorised form of `confident`)."""
    out: dict[str, np.ndarray] = {}
    for rec, (fs, beats) in data.items():
        rows = []
        for b in beats:
            ds = [b.leads[k] for k in use if k < len(b.leads) and b.leads[k] is not None]
            c = _combine(b, use)
            if c is None or not ds:
                rows.append((math.nan, math.inf, math.inf, math.inf))
                continue
            err = ((c[1] - c[0]) - (b.ref.t_end - b.ref.qrs_on)) * 1000.0 / fs
            ends = [d[1] for d in ds if d is not None]
            rows.append((err, max(d[2].get("t_end_wavelet_diff_ms", math.inf) for d in ds if d is not None),
                         max(d[2].get("t_end_split_half_ms", math.inf) for d in ds if d is not None),
                         (max(ends) - min(ends)) * 1000.0 / fs))
        out[rec] = np.asarray(rows, dtype=float).reshape(-1, 4)
    return out


def _kept(t: np.ndarray, rule: Rule) -> np.ndarray:
    return (t[:, 1] <= rule[0]) & (t[:, 2] <= rule[1]) & (t[:, 3] <= rule[2]) & ~np.isnan(t[:, 0])


def choose_rule(data: dict[str, tuple[float, list[BeatResult]]], use: list[int],
                floor: float = CV_COVERAGE_FLOOR) -> Rule:
    """Limits minimising the pooled QT SD with beat coverage ≥ `floor` (lead limit only for several leads)."""
    tables = _doubt_table(data, use)
    t = np.vstack(list(tables.values())) if tables else np.zeros((0, 4))
    best: tuple[float, Rule] | None = None
    lead_grid = CV_GRID_MS if len(use) > 1 else (math.inf,)
    for rule in itertools.product(CV_GRID_MS, CV_GRID_MS, lead_grid):
        kept = t[_kept(t, rule), 0]
        if len(kept) < 2 or len(kept) < floor * len(t):
            continue
        sd = float(np.std(kept, ddof=1))
        if best is None or sd < best[0] - 1e-9:
            best = (sd, rule)
    return best[1] if best else (math.inf, math.inf, math.inf)


def cross_validate(data: dict[str, tuple[float, list[BeatResult]]], use: list[int], folds: int = CV_FOLDS,
                   floor: float = CV_COVERAGE_FLOOR) -> tuple[list[tuple[list[str], Rule]], list[float], int, int]:
    """Record-wise k-fold CV of `choose_rule`: per fold (held-out records, rule); held-out kept QT
    errors, held-out beats kept, held-out beats in all (records are dealt to folds in sorted order)."""
    recs = sorted(data)
    tables = _doubt_table(data, use)
    out: list[tuple[list[str], Rule]] = []
    errs: list[float] = []
    kept = total = 0
    for f in range(folds):
        test = recs[f::folds]
        rule = choose_rule({r: v for r, v in data.items() if r not in test}, use, floor)
        out.append((test, rule))
        for r in test:
            k = _kept(tables[r], rule)
            kept += int(k.sum())
            total += len(k)
            errs += [float(e) for e in tables[r][k, 0]]
    return out, errs, kept, total


def _lim(v: float) -> str:
    return "off" if math.isinf(v) else f"{v:.0f} ms"


def main(argv: list[str]) -> int:
    """Print QRS-onset, T-end and QT errors (ms) against qtdb .q1c/.q2c per record and overall."""
    p = argparse.ArgumentParser(prog="python -m vigil.evaluation.eval_qt", description=summary(__doc__),
                                allow_abbrev=False)
    p.add_argument("records", nargs="*", metavar="RECORD",
                   help="qtdb records to evaluate, e.g. sel100 (default: every record with a .q1c file)")
    p.add_argument("--lead", choices=("0", "1", "multi"), default="multi",
                   help="lead delineated for the per-beat tables: 0, 1, or multi = both, their QRS onsets and "
                        "T ends averaged (default: multi)")
    p.add_argument("--resample", type=float, default=None, metavar="HZ",
                   help="evaluate the records resampled to HZ (annotations scaled), e.g. 130 as a Polar H10 "
                        "(default: the records' own 250 Hz)")
    p.add_argument("--no-stream", action="store_true",
                   help="skip the last table, the streaming QtMeasurer (lead 0) against each record's median "
                        "annotated QT")
    p.add_argument("--two-lead-stream", action="store_true",
                   help="also run the streaming QtMeasurer fed both leads (summary only unless --stream-rows)")
    p.add_argument("--stream-rows", action="store_true",
                   help="with --two-lead-stream: print its per-record rows too")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the neurokit2 baseline table (its ecg_process delineation on the same .q1c beats, "
                        "~70 s)")
    p.add_argument("--stream", action="store_true",
                   help="accepted for compatibility; changes nothing (the streaming table runs unless --no-stream)")
    args = parse(p, argv)
    lead: str = args.lead
    use = [0, 1] if lead == "multi" else [int(lead)]
    rate: float | None = args.resample
    names: list[str] = args.records
    folder = data_root() / "qtdb"
    records = names or sorted(p.stem for p in folder.glob("*.q1c"))
    print(f"python -m vigil.evaluation.eval_qt --lead {lead}" + (f" --resample {rate:g}" if rate else ""))
    print("errors = ours - cardiologist (ms), mean ± SD over annotated beats; median beat of ±8 neighbours")
    by_ext: dict[str, dict[str, tuple[float, list[BeatResult]]]] = {"q1c": {}, "q2c": {}}
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
            fs, leads, refs, beats = load_record(path, ext, None, rate)
            results: list[BeatResult] = []
            for b in refs:
                per: list[tuple[int, int, dict[str, float]] | None] = []
                for k in range(min(2, len(leads))):
                    d, checks = measure_beat_checked(leads[k], fs, beats, b.peak) if k in use else (None, {})
                    per.append((d.qrs_on, d.t_end, checks) if d is not None else None)
                results.append(BeatResult(b, tuple(per)))
            by_ext[ext][rec] = (fs, results)
            on_e: list[float] = []
            te_e: list[float] = []
            failed = 0
            for br in results:
                c = _combine(br, use)
                if c is None:
                    failed += 1
                    continue
                on_e.append((c[0] - br.ref.qrs_on) * 1000.0 / fs)
                te_e.append((c[1] - br.ref.t_end) * 1000.0 / fs)
            qt_e = qt_errors(results, use, fs)
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
        if len(use) > 1:
            te_best, qt_best = best_lead_errors(by_ext[ext], use)
            print(f"best lead per beat, chosen after the fact (the literature's qtdb protocol, e.g. Martínez et al. 2004; "
                  f"an upper bound, not what a device can do): T end {_fmt(*_stats(te_best)).strip()}, "
                  f"QT {_fmt(*_stats(qt_best)).strip()} ({len(qt_best)} beats)")
        ae = np.abs(np.asarray(all_qt))
        if len(ae):
            print(f"QT |error|: median {np.median(ae):.1f} ms, within 25 ms {100 * np.mean(ae <= 25):.1f} %, within 50 ms {100 * np.mean(ae <= 50):.1f} %")
    if by_ext["q1c"] and not args.no_baselines:
        from vigil.evaluation.qt_baselines import print_baseline_table

        print_baseline_table(by_ext["q1c"], folder, use, rate)
    for ext, data in by_ext.items():
        if data:
            _confidence_tables(data, use, ext, cv=ext == "q1c")
    if not args.no_stream:
        _stream_table(records, folder, rate=rate)
        if args.two_lead_stream:
            _stream_table(records, folder, (0, 1), rows=args.stream_rows, rate=rate)
    return 0


def _confidence_tables(data: dict[str, tuple[float, list[BeatResult]]], use: list[int], ext: str = "q1c",
                       cv: bool = True) -> None:
    """QT of confident beats only (shipped limits), coverage, and (`cv`) the record-wise CV of the rule."""
    print(f"\nconfident beats only ({ext}): QT withheld when a lead's |Zhang - wavelet T end| > {_lim(WAVELET_AGREE_MS)} "
          f"or its odd/even split-half T ends differ > {_lim(SPLIT_HALF_MS)} (every delineated lead of {use} must pass"
          + (f"; and the leads' T ends within {_lim(LEAD_AGREE_MS)})" if len(use) > 1 else ")"))
    print(f"{'record':>9} {'kept':>9} {'QT':>13}")
    errs: list[float] = []
    kept = total = 0
    recs_kept = recs_with = 0
    for rec, (fs, beats) in data.items():
        ok = [b for b in beats if confident(b, use, fs)]
        e = qt_errors(ok, use, fs)
        kept += len(ok)
        total += len(beats)
        recs_kept += bool(ok)
        recs_with += bool(beats)
        errs += e
        print(f"{rec:>9} {len(ok):4d}/{len(beats):<4d} {_fmt(*_stats(e)):>13}")
    m, s = _stats(errs)
    print(f"{'overall':>9} {kept:4d}/{total:<4d} {_fmt(m, s):>13}   coverage {100 * kept / max(1, total):.1f} % of beats, "
          f"{recs_kept}/{recs_with} records with a QT")
    if not cv:
        return
    folds, cv_errs, cv_kept, cv_total = cross_validate(data, use)
    print(f"\nconfidence rule by {CV_FOLDS}-fold cross-validation over records (limits chosen on the other folds: "
          f"least pooled QT SD with >= {100 * CV_COVERAGE_FLOOR:.0f} % of their beats kept)")
    for test, (wl, sp, ld) in folds:
        print(f"  held out {' '.join(test)}: wavelet {_lim(wl)}, split-half {_lim(sp)}, leads {_lim(ld)}")
    med = [float(np.median([rule[i] for _, rule in folds])) for i in range(3)]
    print(f"  median of the fold limits: wavelet {_lim(med[0])}, split-half {_lim(med[1])}, leads {_lim(med[2])}")
    m, s = _stats(cv_errs)
    print(f"  held-out confident beats: QT {_fmt(m, s)} ms, coverage {100 * cv_kept / max(1, cv_total):.1f} % "
          f"({cv_kept}/{cv_total})")
    curve = []
    for fl in CV_CURVE_FLOORS:
        _, e, k, t = cross_validate(data, use, floor=fl)
        m, s = _stats(e)
        curve.append(f"{100 * fl:.0f} %: {_fmt(m, s).strip()} ({100 * k / max(1, t):.0f} % kept)")
    print("  held-out QT by the coverage floor the rule is chosen with: " + "; ".join(curve))
    wl, sp, ld = choose_rule(data, use)
    print(f"  rule chosen on all records: wavelet {_lim(wl)}, split-half {_lim(sp)}, leads {_lim(ld)} "
          f"(shipped in vigil.signal.qt: wavelet and split-half chosen with --lead 0, the analyser's lead, "
          f"{_lim(WAVELET_AGREE_MS)}, {_lim(SPLIT_HALF_MS)}; leads {_lim(LEAD_AGREE_MS)} chosen with multi)")


def _stream_table(records: list[str], folder: object, leads: tuple[int, ...] = (0,), rows: bool = True,
                  rate: float | None = None) -> None:
    """Streaming QtMeasurer (median beat over 30 s) on `leads` vs the record's median annotated QT."""
    name = "lead 0 (the analyser's)" if leads == (0,) else "leads " + "+".join(map(str, leads))
    print(f"\nstreaming QtMeasurer, {name}: median of its QT outputs over the annotated span (+30 s) vs median q1c QT;"
          "\n'all' also counts the outputs withheld as t_end_uncertain (their rejected QT)")
    if rows:
        print(f"{'record':>9} {'ref QT':>7} {'stream QT':>9} {'error':>7} {'shown':>7} {'all err':>7}  withheld")
    errs: list[float] = []
    errs_all: list[float] = []
    shown = total = 0
    for rec in records:
        path = f"{folder}/{rec}"
        fs, sig, refs, beat_list = load_record(path, "q1c", list(leads), rate)
        if not refs:
            continue
        x = sig[0] if len(sig) == 1 else np.column_stack(sig)
        lo, hi = refs[0].peak, refs[-1].peak + int(30 * fs)
        outs = [o for o in stream_qt_outputs(x, fs, beat_list) if lo <= o[0] <= hi]
        vals = [v for _, v, why in outs if not why]
        vals_all = [v for _, v, why in outs if not why or (why == "t_end_uncertain" and math.isfinite(v))]
        why_n: dict[str, int] = {}
        for _, _, why in outs:
            if why:
                why_n[why] = why_n.get(why, 0) + 1
        shown += len(vals)
        total += len(outs)
        ref_qt = float(np.median([(b.t_end - b.qrs_on) * 1000.0 / fs for b in refs]))
        e_all = float(np.median(vals_all)) - ref_qt if vals_all else float("nan")
        if vals_all:
            errs_all.append(e_all)
        whys = " ".join(f"{k}:{v}" for k, v in sorted(why_n.items()))
        if vals:
            err = float(np.median(vals)) - ref_qt
            errs.append(err)
            if rows:
                print(f"{rec:>9} {ref_qt:7.0f} {np.median(vals):9.0f} {err:7.1f} {len(vals):3d}/{len(outs):<3d} {e_all:7.1f}  {whys}")
        elif rows:
            print(f"{rec:>9} {ref_qt:7.0f} {'-':>9} {'-':>7} {0:3d}/{len(outs):<3d} {e_all:7.1f}  {whys}")
    if errs:
        print(f"{'overall':>9} records with a QT {len(errs)}/{len(errs_all)}: error {np.mean(errs):.1f} ± "
              f"{np.std(errs, ddof=1):.1f} ms; outputs shown {shown}/{total} ({100 * shown / max(1, total):.0f} %)")
    if len(errs_all) > 1:
        print(f"{'':>9} without the T-end confidence rule, records {len(errs_all)}: error {np.mean(errs_all):.1f} ± "
              f"{np.std(errs_all, ddof=1):.1f} ms")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
