"""Rhythm evaluation: AF on afdb (.qrs beats) and mitdb, VF on vfdb/cudb, asystole/VT alarms on challenge2015.

Run: ``python -m vigil.evaluation.eval_rhythm [afdb] [mitdb] [vf] [vfwin] [challenge] [noise] [--ref] [--leads 1]
[--feed 0.25] [--tried]`` (all sections by default; vfwin ≈ 40 s: the VF detector alone, shipped windows vs the 3 s
window alone, in --feed s feeds (default 1); --tried adds the variants tried for issue 3, ≈ 3 min).  mitdb/vf/challenge/noise use the full `EcgAnalyzer` pipeline when it exists, else (or with --ref)
reference beats plus a 0.5-40 Hz band-passed lead through `RhythmTracker`.
Tables go to stdout, progress to stderr.  Scoring: `vigil.evaluation.episodes` (EC57 "any overlap").
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vigil.cliargs import ListChoices, parse, summary
from vigil.datasets import data_root
from vigil.evaluation.episodes import (
    EC57_START_S,
    EpisodeScore,
    Interval,
    merge,
    overlap_length,
    rhythm_intervals,
    score,
    score_ec57,
    subtract,
)
from vigil.model import Beat, BeatLabel, RhythmEpisode

# MIT-BIH beat symbols -> AAMI classes (EC57)
AAMI: dict[str, BeatLabel] = {**dict.fromkeys("NLRej", "N"), **dict.fromkeys("AaJS", "S"),
                              **dict.fromkeys("VE", "V"), "F": "F", **dict.fromkeys("/fQ", "Q")}
CHUNK_S = 1.0  # feed size of the streaming drivers
BEAT_DELAY_S = 0.3  # reference beats are released this long after their sample (detector-like latency)


@dataclass
class TrackerRun:
    """Episodes from one streaming run, with the stream position at which each was first emitted."""

    episodes: list[RhythmEpisode] = field(default_factory=list)
    opened_at: dict[tuple[str, int], int] = field(default_factory=dict)

    def intervals(self, label: str, end: int) -> list[Interval]:
        """Closed intervals of one label (open ones run to `end`)."""
        return merge((e.start, e.end if e.end is not None else end) for e in self.episodes
                     if e.label == label and e.end is not None)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _aux(notes: list[str]) -> list[str]:
    return [(n or "").strip("\x00 ") for n in notes]


def _bandpass(x: np.ndarray, fs: float) -> np.ndarray:
    """Causal 0.5-40 Hz Butterworth band-pass (what a streaming front end would give)."""
    import scipy.signal as sps

    sos = sps.butter(2, [0.5, 40.0], btype="band", fs=fs, output="sos")
    return np.asarray(sps.sosfilt(sos, x), dtype=float)


def run_tracker(fs: float, beats: list[Beat], n_samples: int, signal: np.ndarray | None = None,
                quality: list | None = None, af_trace: list[tuple[int, float]] | None = None) -> TrackerRun:
    """Stream reference beats (+ optional band-passed signal) through a RhythmTracker in 1 s feeds.

    `af_trace`, when given, collects the AF detector's irregularity trace (`vigil.signal.af.replay`).
    """
    from vigil.signal.af import AfDetector
    from vigil.signal.rhythm import RhythmTracker

    tracker = RhythmTracker(fs)
    if af_trace is not None:
        tracker._af = AfDetector(fs, trace=af_trace)  # same detector, recording its irregularity
    run = TrackerRun()
    step = int(round(CHUNK_S * fs))
    delay = int(round(BEAT_DELAY_S * fs))
    bi = 0
    qi = 0
    quality = quality or []
    for start in range(0, n_samples, step):
        stop = min(n_samples, start + step)
        upto = max(0, stop - delay)
        new: list[Beat] = []
        while bi < len(beats) and beats[bi].sample < upto:
            new.append(beats[bi])
            bi += 1
        q = []
        while qi < len(quality) and quality[qi].sample <= stop:
            q.append(quality[qi])
            qi += 1
        sig = signal[start:stop] if signal is not None else None
        for e in tracker.update(beats=new, upto=upto, signal=sig, signal_start=start, quality=q):
            _record(run, e, stop)
    for e in tracker.close(n_samples):
        _record(run, e, n_samples)
    return run


def _record(run: TrackerRun, e: RhythmEpisode, now: int) -> None:
    run.episodes.append(e)
    run.opened_at.setdefault((e.label, e.start), now)


FORCE_REFERENCE = False  # set by --ref: use reference beats even when the analyser exists
MITDB_BASELINES = True  # --no-baselines: skip mitdb's AF rows from neurokit2's and XQRS's beats
MITDB_LEADS = 2  # mitdb leads fed to EcgAnalyzer: both, as `vigil analyze` feeds a 2-lead record (--leads 1: lead 0 only)


def analyzer_available() -> bool:
    """True once vigil.signal.analyzer (the full streaming pipeline) exists (and --ref was not given)."""
    return not FORCE_REFERENCE and importlib.util.find_spec("vigil.signal.analyzer") is not None


def run_analyzer(record: str, channel: int = 0, n_leads: int = 1) -> tuple[float, int, TrackerRun]:
    """Run EcgAnalyzer over a WFDB record in 1 s feeds (lead `channel`, or the first `n_leads` leads); return fs, length, episodes."""
    import wfdb

    from vigil.signal.analyzer import EcgAnalyzer

    rec = wfdb.rdrecord(record)
    cols = [channel] if n_leads == 1 else list(range(min(n_leads, rec.p_signal.shape[1])))
    fs = float(rec.fs)
    x = np.nan_to_num(np.round(rec.p_signal[:, cols] * 1000.0)).astype(np.int32)
    a = EcgAnalyzer(fs, n_leads=len(cols))
    run = TrackerRun()
    step = int(fs)
    for start in range(0, len(x), step):
        for out in a.feed(x[start:start + step], start):
            if isinstance(out, RhythmEpisode):
                _record(run, out, start + step)
    for out in a.flush():
        if isinstance(out, RhythmEpisode):
            _record(run, out, len(x))
    return fs, len(x), run


def _ref_beats(path: str, ext: str) -> tuple[float, list[Beat], object]:
    import wfdb

    ann = wfdb.rdann(path, ext)
    beats = [Beat(int(s), AAMI[sym]) for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in AAMI]
    return float(ann.fs or wfdb.rdheader(path).fs), beats, ann


def _records(db: str) -> Iterator[str]:
    folder = data_root() / db
    yield from sorted(p.stem for p in folder.glob("*.hea"))


def _pct(x: float) -> str:
    return "   -  " if math.isnan(x) else f"{100 * x:6.1f}"


def _score_table(title: str, rows: list[tuple[str, EpisodeScore]], also_without: tuple[str, ...] = (),
                 no_afl: list[tuple[str, EpisodeScore]] | None = None, fs: float = 250.0,
                 ec57: list[tuple[str, EpisodeScore]] | None = None) -> None:
    print(f"\n{title}")
    print(f"{'record':>8} {'ref':>4} {'det':>4} {'Ep Se%':>7} {'Ep +P%':>7} {'Dur Se%':>8} {'Dur +P%':>8} {'ref min':>8} {'det min':>8}")
    gross = EpisodeScore()
    for name, s in rows:
        gross = gross + s
        _score_row(name, s, fs)
    _score_row("gross", gross, fs)
    if also_without:
        rest = EpisodeScore()
        for name, sc in rows:
            if name not in also_without:
                rest = rest + sc
        _score_row("gross*", rest, fs)
        print(f"gross* = without {', '.join(also_without)} (records distributed without signals, unaudited beats)")
    if no_afl:
        total = EpisodeScore()
        for _, sc in no_afl:
            total = total + sc
        _score_row("grossAFL", total, fs)
        print("grossAFL = atrial flutter spans removed from both reference and detections (neither AF nor non-AF)")
    if ec57:
        _score_row("EC57", sum((sc for _, sc in ec57), EpisodeScore()), fs)
        print(f"EC57 = the standard's comparison as WFDB's epicmp runs it: from {EC57_START_S / 60:.0f} min (learning "
              "period), reference atrial flutter excluded from the detections for +P")


def _afl_table(db: str, rows: list[tuple[str, EpisodeScore, int]], fs: float) -> None:
    """Atrial flutter: episode/duration Se/+P of the AFL label and the AFL time called AF instead."""
    print(f"\nAFL on {db} (reference (AFL episodes; records with AFL reference or AFL calls)")
    print(f"{'record':>8} {'ref':>4} {'det':>4} {'Ep Se%':>7} {'Ep +P%':>7} {'Dur Se%':>8} {'Dur +P%':>8} {'ref min':>8} "
          f"{'AF-in-AFL min':>13}")
    gross = EpisodeScore()
    as_af = 0
    for name, s, af_in_afl in rows:
        gross = gross + s
        as_af += af_in_afl
        if s.ref_episodes or s.det_episodes:
            print(f"{name:>8} {s.ref_episodes:4d} {s.det_episodes:4d} {_pct(s.episode_se):>7} {_pct(s.episode_ppv):>7} "
                  f"{_pct(s.duration_se):>8} {_pct(s.duration_ppv):>8} {s.ref_duration / fs / 60:8.1f} "
                  f"{af_in_afl / fs / 60:13.1f}")
    s = gross
    print(f"{'gross':>8} {s.ref_episodes:4d} {s.det_episodes:4d} {_pct(s.episode_se):>7} {_pct(s.episode_ppv):>7} "
          f"{_pct(s.duration_se):>8} {_pct(s.duration_ppv):>8} {s.ref_duration / fs / 60:8.1f} {as_af / fs / 60:13.1f}")


def _score_row(name: str, s: EpisodeScore, fs: float = 250.0) -> None:
    print(f"{name:>8} {s.ref_episodes:4d} {s.det_episodes:4d} {_pct(s.episode_se):>7} {_pct(s.episode_ppv):>7} "
          f"{_pct(s.duration_se):>8} {_pct(s.duration_ppv):>8} {s.ref_duration / fs / 60:8.1f} {s.det_duration / fs / 60:8.1f}")


def eval_afdb() -> None:
    """AF episode and duration Se/+P on afdb from the .qrs beats (RhythmTracker, signal=None), with LORO CVs."""
    import wfdb

    from vigil.evaluation import af_cv
    from vigil.signal import af

    rows = []
    no_afl: list[tuple[str, EpisodeScore]] = []
    ec57: list[tuple[str, EpisodeScore]] = []
    afl_rows: list[tuple[str, EpisodeScore, int]] = []
    thresholds_only: list[af_cv.AfRecord] = []
    shapes: list[af_cv.AfRecord] = []
    replay_ok = 0
    for rec in _records("afdb"):
        _progress(f"afdb {rec}")
        path = str(data_root() / "afdb" / rec)
        fs, beats, _ = _ref_beats(path, "qrs")
        atr = wfdb.rdann(path, "atr")
        n = max(int(wfdb.rdheader(path).sig_len or 0), beats[-1].sample + int(fs), int(atr.sample[-1]) + 1)
        ref = rhythm_intervals(list(atr.sample), _aux(atr.aux_note), {"AFIB"}, n)
        afl = rhythm_intervals(list(atr.sample), _aux(atr.aux_note), {"AFL"}, n)
        trace: list[tuple[int, float]] = []
        run = run_tracker(fs, beats, n, af_trace=trace)
        det = run.intervals("AF", n)
        rows.append((rec, score(ref, det)))
        no_afl.append((rec, score(subtract(ref, afl), subtract(det, afl))))
        ec57.append((rec, score_ec57(ref, det, start=int(EC57_START_S * fs), exclusions=afl)))
        afl_rows.append((rec, score(afl, run.intervals("AFL", n)), overlap_length(afl, det)))
        replay_ok += merge(af.replay(trace, af.THRESHOLD_ON, af.THRESHOLD_OFF, n)) == det
        shipped = af_cv.as_arrays(trace)
        thresholds_only.append(af_cv.AfRecord(rec, ref, n, {af_cv.SHIPPED_SHAPE: shipped}))
        samples, labels = [b.sample for b in beats], [b.label for b in beats]
        shapes.append(af_cv.AfRecord(rec, ref, n, {
            sh: shipped if sh == af_cv.SHIPPED_SHAPE else af_cv.as_arrays(af_cv.beat_trace(fs, samples, labels, sh))
            for sh in af_cv.SHAPES}))
    _score_table("AF on afdb (beats from .qrs, RhythmTracker with signal=None; AFL counts as non-AF)", rows,
                 also_without=UNAUDITED_AFDB, no_afl=no_afl, ec57=ec57)
    _afl_table("afdb", afl_rows, 250.0)
    _progress("afdb cross-validation")
    print(f"\nAF cross-validation on afdb, leave one record out (offline replay reproduces the tracker on {replay_ok}/"
          f"{len(rows)} records).  Rule on the training records: highest duration +P with episode Se >= "
          f"{100 * af_cv.MIN_EPISODE_SE:.0f} % and duration Se >= {100 * af_cv.MIN_DURATION_SE:.0f} %.")
    _print_af_cv(f"A: on/off thresholds only (on {af_cv.GRID_ON[0]}..{af_cv.GRID_ON[-1]} x off/on {af_cv.GRID_OFF_RATIO}), "
                 f"shipped window/quantile/alpha {af_cv.SHIPPED_SHAPE}", af_cv.leave_one_record_out(thresholds_only))
    _print_af_cv(f"B: thresholds and window {sorted({s[0] for s in af_cv.SHAPES})} x quantile "
                 f"{sorted({s[1] for s in af_cv.SHAPES})} x alpha {sorted({s[2] for s in af_cv.SHAPES})}",
                 af_cv.leave_one_record_out(shapes))


UNAUDITED_AFDB = ("00735", "03665")


def _print_af_cv(title: str, cv: object) -> None:
    from vigil.evaluation import af_cv
    from vigil.signal import af

    assert isinstance(cv, af_cv.CvResult)
    print(f"\n{title}")
    print(f"{'held out':>9} {'win':>3} {'q':>4} {'alpha':>5} {'on':>6} {'off':>6} {'ref':>4} {'det':>4} {'Ep Se%':>7} "
          f"{'Ep +P%':>7} {'Dur Se%':>8} {'Dur +P%':>8}")

    def row(name: str, c: af_cv.Candidate | None, s: EpisodeScore) -> str:
        cand = f"{c[0][0]:3d} {c[0][1]:4.2f} {c[0][2]:5.2f} {c[1]:6.4f} {c[2]:6.4f}" if c else " " * 29
        return (f"{name:>9} {cand} {s.ref_episodes:4d} {s.det_episodes:4d} {_pct(s.episode_se):>7} "
                f"{_pct(s.episode_ppv):>7} {_pct(s.duration_se):>8} {_pct(s.duration_ppv):>8}")

    gross = EpisodeScore()
    rest = EpisodeScore()
    for name, c, s in cv.held_out:
        gross = gross + s
        if name not in UNAUDITED_AFDB:
            rest = rest + s
        print(row(name, c, s))
    print(row("CV gross", None, gross))
    print(row("CV gross*", None, rest))
    print(row("all-12", cv.all_records, cv.in_sample) + "   <- the rule on all records (in-sample)")
    print(f"shipped: window {af.WINDOW}, quantile {af.QUANTILE}, alpha {af.ALPHA}, on {af.THRESHOLD_ON}, "
          f"off {af.THRESHOLD_OFF}")


def eval_mitdb() -> None:
    """AF Se/+P on mitdb: full pipeline when available, else reference beats + band-passed signal."""
    import wfdb

    full = analyzer_available()
    rows = []
    no_afl: list[tuple[str, EpisodeScore]] = []
    ec57: list[tuple[str, EpisodeScore]] = []
    others: list[tuple[str, int, int, int, float]] = []
    afl_rows: list[tuple[str, EpisodeScore, int]] = []
    for rec in _records("mitdb"):
        _progress(f"mitdb {rec}")
        path = str(data_root() / "mitdb" / rec)
        atr = wfdb.rdann(path, "atr")
        if full:
            fs, n, run = run_analyzer(path, n_leads=MITDB_LEADS)
        else:
            r = wfdb.rdrecord(path, channels=[0])
            fs, n = float(r.fs), r.sig_len
            _, beats, _ = _ref_beats(path, "atr")
            run = run_tracker(fs, beats, n, _bandpass(np.nan_to_num(r.p_signal[:, 0]) * 1000.0, fs))
        ref = rhythm_intervals(list(atr.sample), _aux(atr.aux_note), {"AFIB"}, n)
        afl = rhythm_intervals(list(atr.sample), _aux(atr.aux_note), {"AFL"}, n)
        rows.append((rec, score(ref, run.intervals("AF", n))))
        no_afl.append((rec, score(subtract(ref, afl), subtract(run.intervals("AF", n), afl))))
        ec57.append((rec, score_ec57(ref, run.intervals("AF", n), start=int(EC57_START_S * fs), exclusions=afl)))
        afl_rows.append((rec, score(afl, run.intervals("AFL", n)), overlap_length(afl, run.intervals("AF", n))))
        vf_ref = rhythm_intervals(list(atr.sample), _aux(atr.aux_note), {"VFL", "VF"}, n)
        others.append((rec, len(run.intervals("ASYSTOLE", n)), len(run.intervals("VF", n)), len(vf_ref),
                       sum(e - s for s, e in run.intervals("NOISE", n)) / fs / 60.0))
    how = f"EcgAnalyzer full pipeline, {MITDB_LEADS} lead{'s' if MITDB_LEADS > 1 else ''}" if full else "reference .atr beats + 0.5-40 Hz band-passed lead 0"
    _score_table(f"AF on mitdb ({how}; AFL counts as non-AF)", rows, no_afl=no_afl, fs=360.0, ec57=ec57)
    _afl_table("mitdb", afl_rows, 360.0)
    print("\nOther calls on mitdb (no asystole in these records; VF/VFL reference episodes shown)")
    print(f"{'record':>8} {'ASYSTOLE':>8} {'VF det':>6} {'VF ref':>6} {'NOISE min':>9}")
    for rec, asy, vf, vf_ref_n, noise_min in others:
        if asy or vf or vf_ref_n or noise_min >= 0.05:
            print(f"{rec:>8} {asy:8d} {vf:6d} {vf_ref_n:6d} {noise_min:9.1f}")
    print(f"{'total':>8} {sum(o[1] for o in others):8d} {sum(o[2] for o in others):6d} {sum(o[3] for o in others):6d} "
          f"{sum(o[4] for o in others):9.1f}   (records with nothing to show are omitted)")
    if MITDB_BASELINES:
        eval_mitdb_baselines()


def _baseline_beats_job(args: tuple[str, str]) -> tuple[str, str, list[tuple[int, str]]]:
    from vigil.evaluation.eval_qrs import baseline_record

    rec, method = args
    return rec, method, baseline_record(data_root() / "mitdb" / rec, method)


def eval_mitdb_baselines(workers: int = 2) -> None:
    """AF on mitdb from neurokit2's and wfdb XQRS's beats (lead 0) through our rhythm tracker.

    Neither library classifies beats or rhythms, so their beats (all N) go through the same
    `RhythmTracker` as the reference-beat runs, with the 0.5-40 Hz band-passed lead 0 for the P-wave
    evidence: the rows show what their QRS detection does to AF detection, beside our full analyser.
    """
    from concurrent.futures import ProcessPoolExecutor

    import wfdb

    recs = list(_records("mitdb"))
    jobs = [(rec, method) for method in ("neurokit2", "xqrs") for rec in recs]
    _progress(f"mitdb baselines: neurokit2 and XQRS beats on {len(recs)} records ({workers} workers)")
    with ProcessPoolExecutor(max_workers=workers) as ex:
        found = list(ex.map(_baseline_beats_job, jobs))
    for method in ("neurokit2", "xqrs"):
        rows: list[tuple[str, EpisodeScore]] = []
        ec57: list[tuple[str, EpisodeScore]] = []
        for rec, m, beats in found:
            if m != method:
                continue
            path = str(data_root() / "mitdb" / rec)
            r = wfdb.rdrecord(path, channels=[0])
            fs, n = float(r.fs), r.sig_len
            atr = wfdb.rdann(path, "atr")
            run = run_tracker(fs, [Beat(s, "N") for s, _ in beats], n,
                              _bandpass(np.nan_to_num(r.p_signal[:, 0]) * 1000.0, fs))
            ref = rhythm_intervals(list(atr.sample), _aux(atr.aux_note), {"AFIB"}, n)
            afl = rhythm_intervals(list(atr.sample), _aux(atr.aux_note), {"AFL"}, n)
            rows.append((rec, score(ref, run.intervals("AF", n))))
            ec57.append((rec, score_ec57(ref, run.intervals("AF", n), start=int(EC57_START_S * fs), exclusions=afl)))
        name = "neurokit2 ecg_peaks" if method == "neurokit2" else "wfdb XQRS"
        _score_table(f"AF on mitdb, baseline: {name} beats on lead 0 (all N: it classifies none) + our rhythm "
                     "tracker and band-passed lead 0; AFL counts as non-AF", rows, fs=360.0, ec57=ec57)


def _vf_reference(db: str, rec: str, n: int) -> list[Interval]:
    import wfdb

    atr = wfdb.rdann(str(data_root() / db / rec), "atr")
    if db == "cudb":
        out: list[Interval] = []
        start = None
        for s, sym in zip(atr.sample, atr.symbol, strict=True):
            if sym == "[":
                start = int(s)
            elif sym == "]" and start is not None:
                out.append((start, int(s)))
                start = None
        if start is not None:
            out.append((start, n))
        return out
    return rhythm_intervals(list(atr.sample), _aux(atr.aux_note), {"VF", "VFL"}, n)


def eval_vf() -> None:
    """VF episode Se/+P and time to detection on vfdb 418 and cudb cu01."""
    import wfdb

    full = analyzer_available()
    print(f"\nVF/VFL detection ({'EcgAnalyzer' if full else 'RhythmTracker on reference beats + 0.5-40 Hz band-passed lead 0'})")
    print(f"{'record':>8} {'ref':>4} {'ref>=4s':>7} {'det':>4} {'Ep Se%':>7} {'Se>=4s%':>8} {'Ep +P%':>7} {'Dur Se%':>8} {'Dur +P%':>8} "
          f"{'ttd med s':>9} {'ttd max s':>9} {'<=5s':>6}")
    for db, rec in (("vfdb", "418"), ("cudb", "cu01")):
        path = data_root() / db / rec
        if not path.with_suffix(".hea").exists():
            continue
        _progress(f"{db} {rec}")
        if full:
            fs, n, run = run_analyzer(str(path))
        else:
            r = wfdb.rdrecord(str(path), channels=[0])
            fs, n = float(r.fs), r.sig_len
            _, beats, _ = _ref_beats(str(path), "atr")
            run = run_tracker(fs, beats, n, _bandpass(np.nan_to_num(r.p_signal[:, 0]) * 1000.0, fs))
        ref = merge(_vf_reference(db, rec, n))
        det = run.intervals("VF", n)
        s = score(ref, det)
        long_ref = [r for r in ref if r[1] - r[0] >= 4 * fs]
        long_hit = sum(any(min(r[1], d[1]) > max(r[0], d[0]) for d in det) for r in long_ref)
        ttd: list[float] = []
        # VF already open (announced) at the reference onset counts as 0 s, as in eval_alarms tta
        vf_end: dict[int, int] = {}
        for e in run.episodes:  # open updates (end None) first, then the closing update
            if e.label == "VF":
                vf_end[e.start] = e.end if e.end is not None else vf_end.get(e.start, n)
        open_at_onset = [(run.opened_at[("VF", st)], end) for st, end in vf_end.items()]
        for r0, r1 in long_ref:
            if any(at <= r0 < end for at, end in open_at_onset):
                ttd.append(0.0)
                continue
            times = [at for (label, st), at in run.opened_at.items()
                     if label == "VF" and at >= r0 and st < r1 + 4 * fs]
            if times:
                ttd.append((min(times) - r0) / fs)
        within = sum(t <= 5.0 for t in ttd)
        med = f"{np.median(ttd):9.1f}" if ttd else "        -"
        mx = f"{max(ttd):9.1f}" if ttd else "        -"
        print(f"{rec:>8} {s.ref_episodes:4d} {len(long_ref):7d} {s.det_episodes:4d} {_pct(s.episode_se):>7} "
              f"{_pct(long_hit / len(long_ref) if long_ref else float('nan')):>8} {_pct(s.episode_ppv):>7} "
              f"{_pct(s.duration_se):>8} {_pct(s.duration_ppv):>8} {med} {mx} {within:3d}/{len(ttd):<2d}")
    print("ttd = time from reference onset to the first open VF update (0 when VF was already open), on reference episodes >= 4 s.")
    print("baselines: neurokit2 and wfdb (XQRS) have no VF/VFL detector, so there are no VF rows for them.")


def _vf_decisions(x: np.ndarray, fs: float, feed_s: float = 1.0) -> list[tuple[bool, float]]:
    """VfDetector over a whole signal in `feed_s` feeds: (active, announced at s = end of the feed) for each state change."""
    from vigil.signal.vf import VfDetector

    d = VfDetector(fs)
    step = max(1, int(round(feed_s * fs)))
    out: list[tuple[bool, float]] = []
    for s in range(0, len(x), step):
        out.extend((dec.active, min(s + step, len(x)) / fs) for dec in d.feed(x[s:s + step], s))
    return out


def _vf_onset_delay(dec: list[tuple[bool, float]], a: float, b: float) -> float:
    """Seconds from reference onset `a` to VF announced (0 when open at `a` and not closed in the next min(6 s, episode))."""
    state = False
    for act, at in dec:
        if at > a:
            break
        state = act
    if state and not any(not act and a < at <= min(b, a + 6.0) for act, at in dec):
        return 0.0
    return next((max(0.0, at - a) for act, at in dec if act and a - 1.0 <= at <= b + 10.0), math.nan)


VFWIN_FEED_S = 1.0  # set by --feed: the detector's feed size in `vfwin` (the daemon feeds 0.25 s blocks)
VFWIN_TRIED = False  # set by --tried: `vfwin` also runs the variants tried for issue 3 (README "VF time to alarm")

# (label, module settings of vigil.signal.vf) for `vfwin`; unnamed settings keep their shipped values ("" = shipped)
VF_VARIANTS: list[tuple[str, dict[str, object]]] = [
    ("3 s > 0.1", {"WINDOWS": ((3.0, 0.1),)}),
    ("", {}),
]
VF_TRIED: list[tuple[str, dict[str, object]]] = [
    ("shipped, every 0.25 s, 2 to open, 6 to close", {"HOP_S": 0.25, "RELEASE": 6}),
    ("shipped, every 0.25 s, 3 to open, 6 to close", {"HOP_S": 0.25, "CONFIRM": 3, "RELEASE": 6}),
    ("3 s > 0.075 + 2 s > 0.1, 0.25 s, 3/6", {"WINDOWS": ((3.0, 0.075), (2.0, 0.1)), "KEEP_MIN": 0.075,
                                               "HOP_S": 0.25, "CONFIRM": 3, "RELEASE": 6}),
    ("half-period leak, 3 s > 0.45 + 2 s > 0.55, keep 0.4", {"LEAK_SHIFT": 1.0, "WINDOWS": ((3.0, 0.45), (2.0, 0.55)),
                                                            "KEEP_MIN": 0.4}),
    ("half-period leak, 3 s > 0.3 + 2 s > 0.6, keep 0.25, 0.25 s, 2/6", {
        "LEAK_SHIFT": 1.0, "WINDOWS": ((3.0, 0.3), (2.0, 0.6)), "KEEP_MIN": 0.25, "HOP_S": 0.25, "RELEASE": 6}),
]


def eval_vf_windows() -> None:
    """VF detector alone (analyser band-pass, lead 0): onset delays and false onsets per detector setting (`VF_VARIANTS`)."""
    import glob

    import wfdb

    import vigil.signal.vf as vf
    from vigil.signal import filters

    recs = [("vfdb", "418"), ("cudb", "cu01")]
    for db in ("mitdb", "nstdb"):
        recs += [(db, Path(h).stem) for h in sorted(glob.glob(str(data_root() / db / "*.hea")))]
    data = []
    for db, rec in recs:
        path = data_root() / db / rec
        if not path.with_suffix(".dat").exists():
            continue
        _progress(f"{db} {rec}")
        r = wfdb.rdrecord(str(path), channels=[0])
        fs = float(r.fs)
        x = filters.lowpass_filter(fs)(filters.baseline_filter(fs)(np.nan_to_num(r.p_signal[:, 0]) * 1000.0))
        ref = [(a / fs, b / fs) for a, b in _vf_reference(db, rec, r.sig_len)] if path.with_suffix(".atr").exists() else []
        data.append((f"{db}/{rec}", x, fs, ref))
    feed = VFWIN_FEED_S
    print(f"\nVF detector alone (0.5 Hz HP + 40 Hz LP lead 0, {feed:g} s feeds): VF/VFL episodes >= 4 s on vfdb 418, cudb cu01, "
          "mitdb 207; false = onsets announced outside every reference VF/VFL episode (-1 s .. +10 s), all mitdb + nstdb")
    print(f"{'detector setting':<66}{'episodes':>9}{'median s':>9}{'max s':>7}{'>5 s':>6}{'>6 s':>6}{'missed':>7}"
          f"{'onsets':>7}  false onsets")
    names = ("WINDOWS", "HOP_S", "CONFIRM", "RELEASE", "KEEP_MIN", "LEAK_SHIFT")
    shipped = {k: getattr(vf, k) for k in names}
    late: list[str] = []
    try:
        for label, settings in VF_VARIANTS + (VF_TRIED if VFWIN_TRIED else []):
            for k in names:
                setattr(vf, k, settings.get(k, shipped[k]))
            label = label or " + ".join(f"{w:g} s > {t:g}" for w, t in vf.WINDOWS) + " (shipped)"
            delays: list[float] = []
            false: dict[str, int] = {}
            onsets = 0
            slow: list[str] = []
            for name, x, fs, ref in data:
                dec = _vf_decisions(x, fs, feed)
                ons = [at for act, at in dec if act]
                onsets += len(ons) if name in ("vfdb/418", "cudb/cu01") else 0
                for a, b in ref:
                    if b - a >= 4.0:
                        d = _vf_onset_delay(dec, a, b)
                        delays.append(d)
                        if not d <= 5.0:
                            slow.append(f"{name} {a:.1f} s: {d:.2f}")
                nf = sum(1 for at in ons if not any(a - 1.0 <= at <= b + 10.0 for a, b in ref))
                if nf:
                    false[name] = nf
            ok = [d for d in delays if not math.isnan(d)]
            print(f"{label:<66}{len(delays):>9}{np.median(ok):>9.2f}{max(ok):>7.2f}{sum(d > 5 for d in ok):>6}"
                  f"{sum(d > 6 for d in ok):>6}{len(delays) - len(ok):>7}{onsets:>7}  "
                  + (", ".join(f"{k} {v}" for k, v in false.items()) or "none"))
            late.append(f"{label}: " + ("; ".join(slow) or "none"))
    finally:
        for k in names:
            setattr(vf, k, shipped[k])
    print(f"onsets = VF onsets announced on 418 + cu01 (fewer = less on/off flicker); delays are to the end of the {feed:g} s "
          "feed that announced VF.\nepisodes > 5 s (or missed):")
    for line in late:
        print("  " + line)


def _challenge_labels(root: Path) -> dict[str, int]:
    labels: dict[str, int] = {}
    csv = root / "alarms.csv"
    if csv.exists():
        for line in csv.read_text().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 2 and parts[1] in ("0", "1"):
                labels[parts[0]] = int(parts[1])
    return labels


def _challenge_run(path: str) -> tuple[float, int, TrackerRun]:
    import wfdb

    if analyzer_available():
        return run_analyzer(path)
    import wfdb.processing as wp

    r = wfdb.rdrecord(path, channels=[0])
    fs, n = float(r.fs), r.sig_len
    # no reference beats in this database: wfdb's XQRS stands in for the detector with --ref
    x = np.nan_to_num(r.p_signal[:, 0])
    beats = [Beat(int(p)) for p in wp.xqrs_detect(x, fs=fs, verbose=False)]
    return fs, n, run_tracker(fs, beats, n, _bandpass(x * 1000.0, fs))


def eval_asystole() -> None:
    """challenge2015: ASYSTOLE/VT/VF calls in the 16 s before the alarm vs the true/false label, per alarm type."""
    root = data_root() / "challenge2015"
    labels = _challenge_labels(root)
    print("\nchallenge2015 (alarm at 300 s for an event in the 16 s before; a* = asystole, v* = VT alarms)")
    print(f"{'record':>8} {'label':>6} {'call in 284-300 s':>18} {'first call s':>12} {'ASYSTOLE anywhere':>18}")
    tally: dict[str, list[int]] = {"a": [0, 0, 0, 0], "v": [0, 0, 0, 0]}  # TP FP FN TN
    conflicts: list[str] = []
    for rec in _records("challenge2015"):
        kind = rec[0]
        if kind not in tally:
            continue
        _progress(f"challenge2015 {rec}")
        fs, n, run = _challenge_run(str(root / rec))
        want = {"a": ("ASYSTOLE",), "v": ("VT", "VF")}[kind]
        calls = [(run.opened_at[(e.label, e.start)], e) for e in run.episodes if e.label in want and e.end is None]
        hit = [at for at, e in calls if at >= 284 * fs and e.start <= 300 * fs]
        asy = any(e.label == "ASYSTOLE" for e in run.episodes)
        truth = labels.get(rec)
        t = tally[kind]
        if truth == 1:
            t[0 if hit else 2] += 1
        elif truth == 0:
            t[1 if hit else 3] += 1
        first = f"{min(hit) / fs:12.1f}" if hit else "           -"
        shown = {1: "true", 0: "false"}.get(truth if truth is not None else -1, "?")
        header = (root / f"{rec}.hea").read_text(errors="replace")
        hea_truth = 1 if "#True alarm" in header else (0 if "#False alarm" in header else None)
        if hea_truth is not None and truth is not None and hea_truth != truth:
            shown += "*"
            conflicts.append(rec)
        print(f"{rec:>8} {shown:>6} {('yes' if hit else 'no'):>18} {first} "
              f"{('yes' if asy else 'no'):>18}")
    if conflicts:
        print(f"* alarms.csv and the .hea comment disagree for {', '.join(conflicts)}; alarms.csv is used")
    for kind, (tp, fp, fn, tn) in tally.items():
        total = tp + fp + fn + tn
        if total:
            score = (tp + tn) / (tp + tn + fp + 5 * fn)
            print(f"{'asystole' if kind == 'a' else 'VT':>8}: TP {tp} FP {fp} FN {fn} TN {tn}; "
                  f"CinC 2015 score (TP+TN)/(TP+TN+FP+5FN) = {100 * score:.1f} %")


def eval_noise() -> None:
    """Rhythm calls on the nstdb noise-stress records (118 + noise, and the noise-only bw/ma records)."""
    labels = ("SINUS", "AF", "VT", "VF", "ASYSTOLE", "PAUSE", "NOISE")
    print("\nRhythm calls on nstdb (118 is sinus with APCs; bw/ma are noise only): episodes / minutes")
    print(f"{'record':>8} " + " ".join(f"{lab:>11}" for lab in labels))
    for rec in ("118e24", "118e12", "118e00", "bw", "ma"):
        path = data_root() / "nstdb" / rec
        if not path.with_suffix(".hea").exists():
            continue
        _progress(f"nstdb {rec}")
        if analyzer_available():
            fs, n, run = run_analyzer(str(path))
        else:
            fs, n, run = _challenge_run(str(path))
        cells = []
        for lab in labels:
            iv = run.intervals(lab, n)
            cells.append(f"{len(iv):4d} /{sum(e - s for s, e in iv) / fs / 60:5.1f}")
        print(f"{rec:>8} " + " ".join(f"{c:>11}" for c in cells))


SECTIONS = {"afdb": eval_afdb, "mitdb": eval_mitdb, "vf": eval_vf, "vfwin": eval_vf_windows, "challenge": eval_asystole,
            "noise": eval_noise}


def main(argv: list[str]) -> int:
    """Print the rhythm tables (sections: afdb mitdb vf vfwin challenge noise; default all)."""
    p = argparse.ArgumentParser(prog="python -m vigil.evaluation.eval_rhythm", description=summary(__doc__),
                                allow_abbrev=False)
    p.add_argument("sections", nargs="*", choices=ListChoices(SECTIONS),
                   help="sections to run, in the order given (default: all): afdb = AF on afdb from the .qrs "
                        "beats; mitdb = AF on mitdb; vf = VF on vfdb 418 and cudb cu01; vfwin = the VF detector "
                        "alone, onset delays and false onsets per window setting; challenge = ASYSTOLE/VT/VF "
                        "calls on challenge2015; noise = rhythm calls on the nstdb noise-stress records")
    p.add_argument("--ref", action="store_true",
                   help="feed reference .atr beats plus a 0.5-40 Hz band-passed lead 0 through RhythmTracker "
                        "even when the full EcgAnalyzer pipeline is available (mitdb, vf, challenge, noise)")
    p.add_argument("--leads", type=int, choices=(1, 2), default=None,
                   help="mitdb leads fed to EcgAnalyzer: 2 = both, as `vigil analyze` feeds a 2-lead record, "
                        "1 = lead 0 only (default: 2)")
    p.add_argument("--feed", type=float, default=None, metavar="S",
                   help="vfwin: feed the VF detector S-second blocks (default: 1; the daemon feeds 0.25)")
    p.add_argument("--no-baselines", action="store_true",
                   help="mitdb: skip the AF rows from neurokit2's and XQRS's beats through our rhythm tracker "
                        "(about 1.5 min on 2 workers)")
    p.add_argument("--tried", action="store_true",
                   help="vfwin: also run the detector variants tried for issue 3 (about 3 min)")
    args = parse(p, argv)
    global FORCE_REFERENCE, MITDB_LEADS
    FORCE_REFERENCE = args.ref
    global VFWIN_FEED_S, VFWIN_TRIED
    if args.leads is not None:
        MITDB_LEADS = args.leads
    if args.feed is not None:
        VFWIN_FEED_S = args.feed
    VFWIN_TRIED = args.tried
    global MITDB_BASELINES
    MITDB_BASELINES = not args.no_baselines
    names: list[str] = args.sections or list(SECTIONS)
    if not Path(data_root()).exists():
        print(f"no data at {data_root()} (set VIGIL_DATA)")
        return 1
    print("python -m vigil.evaluation.eval_rhythm " + " ".join(names) + (" --ref" if FORCE_REFERENCE else "")
          + (f" --leads {MITDB_LEADS}" if MITDB_LEADS != 2 else "")
          + (f" --feed {VFWIN_FEED_S:g}" if VFWIN_FEED_S != 1.0 else "") + (" --tried" if VFWIN_TRIED else "")
          + (" --no-baselines" if not MITDB_BASELINES else ""))
    for name in names:
        SECTIONS[name]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
