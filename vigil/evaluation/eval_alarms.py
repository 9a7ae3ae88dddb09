"""Alarm evaluation: PhysioNet/CinC 2015 false-alarm score and time-to-alarm, through `vigil replay`.

Every record runs through the same live pipeline as the daemon (ECG analysis + alarm engine on a
SimulatedClock, PLETH/ABP pulsatility fusion and the VT confirmation stage included), as
`vigil replay` does. The alarm engine's inputs are taped on the way, so the VT stage thresholds can
be re-scored without re-running the analysis.

* CinC 2015 (challenge2015, alarms.csv): the alarm type is the record header's first comment; our
  system "alarms" when the condition of that type (asystole, brady_extreme, tachy_extreme, vt, vf) is
  present at any moment of the last 16 s before 300 s, using data up to 300 s only. Score =
  (TP+TN)/(TP+TN+FP+5·FN) per type and overall (Clifford et al., Physiol Meas 2016).
* False VT: VT raised outside every reference VT/VF/VFL episode on mitdb, vfdb, cudb and the
  nstdb noise-stress copies of 118 (per hour).
* Time to alarm: onset of each reference VT (mitdb "(VT", >= 5 s... see MIN_EPISODE_S) and VF/VFL
  episode (vfdb, cudb "[" "]") to the first "raised" of that condition (missed when none before the
  episode end + 10 s).

* Cross-validation (``cv``): the VT stage thresholds (`vigil.signal.vt.VtParams`) over a small grid,
  5 folds over records stratified by label; each fold picks the setting with the best training
  score and is scored on its held-out records. The pooled held-out score is the primary number.

Run: ``python -m vigil.evaluation.eval_alarms [cinc] [cv] [tta|tta-off] [--max-records N]`` (cinc+cv ≈ 7 min on 2 shared cores).
Targets (issue 4): CinC score >= 80 on VT records with <= 1 in 20 true alarms missed; asystole/VF
alarm <= 6 s after onset; extreme tachy/brady <= 10 s.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.cliargs import ListChoices, parse, summary
from vigil.datasets import data_root

TYPE_CONDITION = {"Asystole": "asystole", "Bradycardia": "brady_extreme", "Tachycardia": "tachy_extreme",
                  "Ventricular_Tachycardia": "vt", "Ventricular_Flutter_Fib": "vf"}
ALARM_AT_S, WINDOW_S = 300.0, 16.0
MIN_EPISODE_S = {"vt": 2.0, "vf": 4.0}  # shorter reference episodes cannot meet the alarm definitions


@dataclass
class Counts:
    """Confusion counts of one alarm type."""

    tp: int = 0
    tn: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def score(self) -> float:
        """CinC 2015 score in percent."""
        d = self.tp + self.tn + self.fp + 5 * self.fn
        return 100.0 * (self.tp + self.tn) / d if d else math.nan

    @property
    def tpr(self) -> float:
        """Share of true alarms we raised."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def tnr(self) -> float:
        """Share of false alarms we suppressed."""
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else math.nan


def presence(events: list, condition: str, t0: float = 0.0) -> list[tuple[float, float]]:
    """Intervals (s from start) where `condition` was present, from raised/cleared events."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    for e in events:
        if e.condition != condition:
            continue
        t = e.t_mono - t0
        if e.event == "raised" and start is None:
            start = t
        elif e.event == "cleared" and start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, math.inf))
    return out


def alarm_type(header: Path) -> str | None:
    """Alarm type named in the challenge2015 header comments."""
    for line in header.read_text().splitlines():
        if line.startswith("#") and line[1:].strip() in TYPE_CONDITION:
            return line[1:].strip()
    return None


class _TapeEngine:
    """Stands in for the pipeline's alarm engine: forwards every call and records it with the clock time.

    The tape lets one expensive analysis pass per record be re-scored under other VT-stage
    thresholds (cross-validation) by feeding the same inputs to fresh engines.
    """

    def __init__(self, engine: Any, clock: Any) -> None:
        self._engine = engine
        self._clock = clock
        self.tape: list[tuple[float, str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._engine, name)
        if not callable(target) or name not in _TAPED:
            return target

        def call(*args: Any) -> Any:
            self.tape.append((self._clock.monotonic(), name, args))
            return target(*args)
        return call


_TAPED = frozenset({"tick", "on_analysis", "on_reading", "on_technical", "on_waveform_pulsatile", "on_pulse_wave",
                     "on_ecg_wave"})


@dataclass
class Tape:
    """One record's alarm-engine inputs."""

    record: str
    alarm: str  # challenge alarm type
    truth: bool
    cfg: Any
    t0: float
    calls: list[tuple[float, str, tuple[Any, ...]]]
    vetoes: list[tuple[float, str, str]] = field(default_factory=list)  # (t, condition, reason) audited


def record_tape(path: Path, alarm: str, truth: bool) -> tuple[Tape, list[Any]]:
    """Run `path` through the live pipeline up to ALARM_AT_S; return its engine-input tape and alarm events."""
    from vigil.alarms.engine import AlarmEngine
    from vigil.clock import SimulatedClock
    from vigil.commands.replay import default_config, record_setup
    from vigil.edge.pipeline import MemorySink, Pipeline, run_replay

    cfg, records = record_setup(default_config(), path)
    clock = SimulatedClock()
    sink = MemorySink()
    t0 = clock.monotonic()
    vetoes: list[tuple[float, str, str]] = []

    def audit(actor: str, action: str, detail: dict[str, Any]) -> None:
        if action == "alarm.vetoed":
            vetoes.append((clock.monotonic() - t0, str(detail.get("condition")), str(detail.get("reason"))))

    taped = _TapeEngine(AlarmEngine(cfg, clock, sink.alarm, audit=audit), clock)
    pipe = Pipeline(cfg, clock, [sink], engine=taped)
    run_replay(cfg, clock, duration_s=ALARM_AT_S, pipeline=pipe, records=records)
    return Tape(path.name, alarm, truth, cfg, t0, taped.tape, vetoes), sink.alarms


def replay_tape(tape: Tape, params: Any = None) -> list[Any]:
    """Feed a tape to a fresh alarm engine (VT stage thresholds `params`, default if None); its events."""
    import contextlib

    from vigil.alarms.engine import AlarmEngine
    from vigil.clock import SimulatedClock
    from vigil.signal.vt import params_override

    events: list[Any] = []
    clock = SimulatedClock(tape.t0)
    with params_override(params) if params is not None else contextlib.nullcontext():
        engine = AlarmEngine(tape.cfg, clock, events.append)
        for t, name, args in tape.calls:
            clock.set(t)
            getattr(engine, name)(*args)
    return events


def alarmed(events: list[Any], condition: str, t0: float) -> bool:
    """CinC 2015 decision: `condition` present at any moment of [ALARM_AT_S - WINDOW_S, ALARM_AT_S]."""
    return any(a <= ALARM_AT_S and b >= ALARM_AT_S - WINDOW_S for a, b in presence(events, condition, t0))


def challenge_rows() -> list[tuple[str, str, bool]]:
    """(record, alarm type, true alarm) of every labelled challenge2015 record here; notes label conflicts."""
    root = data_root() / "challenge2015"
    labels_file = root / "alarms.csv"
    if not labels_file.exists():
        return []
    out = []
    for ln in labels_file.read_text().splitlines()[1:]:
        if not ln.strip():
            continue
        rec, truth = ln.split(",")[:2]
        typ = alarm_type(root / f"{rec}.hea")
        if typ is None:
            continue
        true_alarm = truth.strip() == "1"
        hdr_text = (root / f"{rec}.hea").read_text()
        if ("#True alarm" in hdr_text and not true_alarm) or ("#False alarm" in hdr_text and true_alarm):
            print(f"note: {rec}: alarms.csv says {truth.strip()} but the header comment disagrees; using alarms.csv")
        out.append((rec, typ, true_alarm))
    return out


def tally(decisions: list[tuple[str, bool, bool]]) -> dict[str, Counts]:
    """Counts per alarm type from (type, true alarm, our alarm)."""
    per: dict[str, Counts] = {}
    for typ, truth, ours in decisions:
        c = per.setdefault(typ, Counts())
        if truth and ours:
            c.tp += 1
        elif truth:
            c.fn += 1
        elif ours:
            c.fp += 1
        else:
            c.tn += 1
    return per


def print_counts(per: dict[str, Counts]) -> None:
    """Per-type and overall score table, and the VT target line."""
    total = Counts()
    print(f"\n{'type':<26}{'TP':>4}{'TN':>4}{'FP':>4}{'FN':>4}{'TPR':>8}{'TNR':>8}{'score':>8}")
    for typ, c in sorted(per.items()):
        total = Counts(total.tp + c.tp, total.tn + c.tn, total.fp + c.fp, total.fn + c.fn)
        print(f"{typ:<26}{c.tp:>4}{c.tn:>4}{c.fp:>4}{c.fn:>4}{_pct(c.tpr):>8}{_pct(c.tnr):>8}{c.score:>8.1f}")
    print(f"{'overall':<26}{total.tp:>4}{total.tn:>4}{total.fp:>4}{total.fn:>4}{_pct(total.tpr):>8}"
          f"{_pct(total.tnr):>8}{total.score:>8.1f}")
    vt = per.get("Ventricular_Tachycardia", Counts())
    missed = vt.fn / (vt.tp + vt.fn) if vt.tp + vt.fn else math.nan
    print(f"target VT: score >= 80 and <= 5 % true alarms missed -> score {vt.score:.1f}, missed {_pct(missed)}")


def load_tapes(max_records: int | None = None, verbose: bool = True) -> list[Tape]:
    """Tapes of the challenge2015 records (the default VT stage decides the printed rows)."""
    root = data_root() / "challenge2015"
    rows = challenge_rows()[:max_records]
    if not rows:
        print(f"challenge2015 not found under {root} (set VIGIL_DATA)")
        return []
    tapes = []
    if verbose:
        print(f"{'record':<8}{'type':<26}{'truth':<7}{'ours':<6}{'first raise (s)':>16}  why (in the last 16 s)")
    for rec, typ, truth in rows:
        tape, events = record_tape(root / rec, typ, truth)
        tapes.append(tape)
        if verbose:
            cond = TYPE_CONDITION[typ]
            ivs = presence(events, cond, tape.t0)
            first = next((f"{a:.1f}" for a, b in ivs if b >= ALARM_AT_S - WINDOW_S), "-")
            why = next((e.reason for e in events if e.condition == cond and e.event == "raised"
                        and e.t_mono - tape.t0 >= ALARM_AT_S - WINDOW_S), "")
            held = sorted({r for t, c, r in tape.vetoes if c == cond and t >= ALARM_AT_S - WINDOW_S})
            why = "; ".join([why] * bool(why) + [f"held: {r}" for r in held])
            print(f"{rec:<8}{typ:<26}{int(truth):<7}{int(alarmed(events, cond, tape.t0)):<6}{first:>16}  {why}",
                  flush=True)
    return tapes


def eval_cinc(max_records: int | None = None, tapes: list[Tape] | None = None) -> int:
    """Score the challenge2015 records with the default VT stage; print per type and overall."""
    tapes = tapes if tapes is not None else load_tapes(max_records)
    if not tapes:
        return 0
    decisions = [(t.alarm, t.truth, alarmed(replay_tape(t), TYPE_CONDITION[t.alarm], t.t0)) for t in tapes]
    print_counts(tally(decisions))
    return 0


# VT stage thresholds searched by the cross-validation (vigil.signal.vt.VtParams fields)
# ordered from the most conservative (fewest vetoes) so that ties go to the setting that suppresses least
CV_GRID: dict[str, tuple[float, ...]] = {
    "spi_min": (0.35, 0.4, 0.45, 0.5, 0.55, 2.0),  # spectral wide-complex detector (vigil.signal.vtspec); 2 = off
    "spec_agree": (0.0, 0.2),
    "run_min_v": (3, 0),
    "noise_max": (0, 2),
}
CV_FOLDS = 5


def cv_folds(tapes: list[Tape], k: int = CV_FOLDS) -> list[int]:
    """Fold of each tape: records sorted by name, dealt round-robin within true and false alarms (stratified)."""
    fold = [0] * len(tapes)
    for truth in (True, False):
        idx = sorted((i for i, t in enumerate(tapes) if t.truth == truth), key=lambda i: tapes[i].record)
        for j, i in enumerate(idx):
            fold[i] = j % k
    return fold


def eval_cv(tapes: list[Tape]) -> int:
    """k-fold cross-validation of the VT stage thresholds over records; prints the held-out score."""
    import itertools

    from vigil.signal.vt import DEFAULT_PARAMS, VtParams

    vt_tapes = [t for t in tapes if TYPE_CONDITION[t.alarm] == "vt"]
    if not vt_tapes:
        return 0
    keys = list(CV_GRID)
    grid: list[VtParams | None] = [_params(DEFAULT_PARAMS, dict(zip(keys, vals, strict=True)))
                                   for vals in itertools.product(*CV_GRID.values())]
    grid.append(None)  # stage off (no pulse veto): the reference point
    ours = [[alarmed(replay_tape(t, p if p is not None else _off(DEFAULT_PARAMS)), "vt", t.t0) for t in vt_tapes]
            for p in grid]
    folds = cv_folds(vt_tapes)
    held: list[tuple[str, bool, bool]] = []
    print(f"\n{CV_FOLDS}-fold cross-validation over {len(vt_tapes)} VT records, grid of {len(grid)} settings "
          f"({', '.join(keys)}; plus the stage off), selection by training CinC score, then TPR, then the least suppressive")
    def score(g: int, idx: list[int]) -> tuple[float, float]:
        c = tally([("vt", vt_tapes[i].truth, ours[g][i]) for i in idx])["vt"] if idx else Counts()
        return c.score, c.tpr

    for f in range(CV_FOLDS):
        train = [i for i, x in enumerate(folds) if x != f]
        test = [i for i, x in enumerate(folds) if x == f]

        best = max(range(len(grid)), key=lambda g: (*score(g, train), g == len(grid) - 1, -g))
        held.extend(("Ventricular_Tachycardia", vt_tapes[i].truth, ours[best][i]) for i in test)
        tr = score(best, train)[0]
        print(f"  fold {f}: chose {_describe(grid[best])}; train score {tr:.1f}; held-out records "
              f"{', '.join(vt_tapes[i].record for i in test)}")
    everything = list(range(len(vt_tapes)))
    best = max(range(len(grid)), key=lambda g: (*score(g, everything), g == len(grid) - 1, -g))
    print(f"  all records: chose {_describe(grid[best])} (the defaults in vigil.signal.vt should be this); "
          f"in-sample score {score(best, everything)[0]:.1f}")
    print("held-out (cross-validated) VT result:")
    print_counts(tally(held))
    return 0


def _params(base: Any, changes: dict[str, float]) -> Any:
    from dataclasses import replace

    ints = ("min_intervals", "run_min_v", "noise_max", "spec_hold")
    return replace(base, **{k: (int(v) if k in ints else float(v)) for k, v in changes.items()})


def _off(base: Any) -> Any:
    from dataclasses import replace

    return replace(base, min_intervals=10**6, run_min_v=0, noise_max=0, spi_min=2.0)  # no veto, no extra call: stage off


def _describe(p: Any) -> str:
    if p is None:
        return "stage off"
    return ", ".join(f"{k}={getattr(p, k):g}" for k in CV_GRID)


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.0f}%"


def _reference(db: str, rec: str, cond: str, fs: float, n: int) -> list[tuple[float, float]]:
    import wfdb

    from vigil.evaluation.episodes import rhythm_intervals

    atr = wfdb.rdann(str(data_root() / db / rec), "atr")
    if db == "cudb":
        if cond != "vf":
            return []
        out, start = [], None
        for s, sym in zip(atr.sample, atr.symbol, strict=True):
            if sym == "[":
                start = int(s)
            elif sym == "]" and start is not None:
                out.append((start / fs, int(s) / fs))
                start = None
        if start is not None:
            out.append((start / fs, n / fs))
        return out
    labels = {"vt": {"VT"}, "vf": {"VF", "VFL"}}[cond]
    notes = [(x or "").strip("\x00 ") for x in atr.aux_note]
    return [(a / fs, b / fs) for a, b in rhythm_intervals(list(atr.sample), notes, labels, n)]


def eval_time_to_alarm(max_records: int | None = None, spectral: bool = True) -> int:
    """Delay from reference VT/VF onset to our alarm on mitdb/vfdb/cudb, and VT raised outside any VT/VF.

    `spectral` False runs with the VT stage's spectral detector off (the reference row).
    """
    import contextlib
    from dataclasses import replace

    import wfdb

    from vigil.commands.replay import replay_record
    from vigil.signal.vt import active_params, params_override

    delays: dict[str, list[float]] = {"vt": [], "vf": []}
    missed: dict[str, int] = {"vt": 0, "vf": 0}
    false_vt: dict[str, list[int]] = {}  # db -> [VT raised outside every reference VT/VF episode, hours]
    hours: dict[str, float] = {}
    print(f"{'record':<12}{'cond':<5}{'onset (s)':>10}{'dur (s)':>9}{'alarm after (s)':>17}")
    todo = []
    for db in ("mitdb", "vfdb", "cudb", "nstdb"):
        folder = data_root() / db
        for hea in sorted(folder.glob("*.hea")):
            if db != "nstdb" or (folder / f"{hea.stem}.atr").exists():  # nstdb: the noisy 118 copies
                todo.append((db, hea.stem))
    done = 0
    for db, rec in todo:
        path = data_root() / db / rec
        try:
            hdr = wfdb.rdheader(str(path))
            every = {c: _reference(db, rec, c, float(hdr.fs), int(hdr.sig_len)) for c in ("vt", "vf")}
            refs = {c: [iv for iv in ivs if iv[1] - iv[0] >= MIN_EPISODE_S[c]] for c, ivs in every.items()}
        except Exception as exc:  # a missing annotation file is not fatal for the table
            print(f"{db}/{rec}: skipped ({exc})")
            continue
        if db not in ("mitdb", "nstdb") and not any(refs.values()):
            continue  # mitdb and nstdb: every record, for the false VT count
        if max_records is not None and done >= max_records:
            break
        done += 1
        off = replace(active_params(), spi_min=2.0)
        with contextlib.nullcontext() if spectral else params_override(off):
            res = replay_record(path)
        vt_raised = [e.t_mono - res.t0 for e in res.events if e.condition == "vt" and e.event == "raised"]
        any_ref = every["vt"] + every["vf"]
        n_false = sum(1 for t in vt_raised if not any(a - 1.0 <= t <= b + 10.0 for a, b in any_ref))
        fv = false_vt.setdefault(db, [0])
        fv[0] += n_false
        hours[db] = hours.get(db, 0.0) + int(hdr.sig_len) / float(hdr.fs) / 3600.0
        if n_false:
            print(f"{db + '/' + rec:<12}vt   {n_false} raised outside any reference VT/VF episode", flush=True)
        for cond, ivs in refs.items():
            raises = [e.t_mono - res.t0 for e in res.events if e.condition == cond and e.event == "raised"]
            pres = presence(res.events, cond, res.t0)
            for a, b in ivs:
                if any(s <= a < e for s, e in pres):
                    d = 0.0
                else:
                    d = next((t - a for t in raises if a - 1.0 <= t <= b + 10.0), math.nan)
                if math.isnan(d):
                    missed[cond] += 1
                else:
                    delays[cond].append(d)
                shown = "missed" if math.isnan(d) else f"{d:.1f}"
                print(f"{db + '/' + rec:<12}{cond:<5}{a:>10.1f}{b - a:>9.1f}{shown:>17}", flush=True)
    print(f"\n{'cond':<5}{'episodes':>9}{'alarmed':>8}{'median s':>9}{'max s':>7}{'<=6 s':>7}{'<=10 s':>7}")
    for cond, ds in delays.items():
        n = len(ds) + missed[cond]
        if not n:
            continue
        med = f"{statistics.median(ds):.1f}" if ds else "-"
        mx = f"{max(ds):.1f}" if ds else "-"
        le6 = sum(1 for x in ds if x <= 6) / n
        le10 = sum(1 for x in ds if x <= 10) / n
        print(f"{cond:<5}{n:>9}{len(ds):>8}{med:>9}{mx:>7}{_pct(le6):>7}{_pct(le10):>7}")
    for db, (n,) in false_vt.items():
        print(f"{db}: {n} VT alarms raised outside reference VT/VF episodes in {hours[db]:.1f} h "
              f"({n / hours[db]:.2f}/h)")
    print("targets: asystole/VF <= 6 s after onset; extreme tachy/brady <= 10 s "
          "(no annotated asystole/extreme episodes in these databases: see the CinC table)")
    return 0


SECTIONS = ("cinc", "cv", "tta", "tta-off")
DEFAULT_SECTIONS = ("cinc", "cv", "tta")


def main(argv: list[str]) -> int:
    """Run the sections named in argv (cinc, cv, tta, tta-off), by default cinc, cv and tta."""
    p = argparse.ArgumentParser(prog="python -m vigil.evaluation.eval_alarms", description=summary(__doc__),
                                allow_abbrev=False)
    p.add_argument("sections", nargs="*", choices=ListChoices(SECTIONS),
                   help="sections to run, in any order (default: cinc cv tta): cinc = CinC 2015 score per "
                        "alarm type with the default VT stage thresholds; cv = 5-fold cross-validation of "
                        "the VT stage thresholds on the same records; tta = time to alarm from reference "
                        "VT/VF onsets (mitdb, vfdb, cudb) and false VT per hour (mitdb, vfdb, cudb, nstdb); "
                        "tta-off = the time-to-alarm section with the VT stage's spectral detector off "
                        "(instead of on)")
    p.add_argument("--max-records", type=int, default=None, metavar="N",
                   help="use only the first N challenge2015 records (cinc, cv) and the first N records "
                        "of the time-to-alarm list (tta); default: all")
    args = parse(p, argv)
    max_records = args.max_records
    sections = args.sections or list(DEFAULT_SECTIONS)
    t = time.perf_counter()
    if "cinc" in sections or "cv" in sections:
        print("PhysioNet/CinC 2015 (challenge2015): alarm present in [284, 300] s, data up to 300 s")
        tapes = load_tapes(max_records)
        if "cinc" in sections:
            print("\nwith the default VT stage thresholds (chosen by the cross-validation below):")
            eval_cinc(tapes=tapes)
        if "cv" in sections:
            eval_cv(tapes)
    if "tta" in sections or "tta-off" in sections:
        print("\nTime to alarm (reference episode onset -> raised)" + " with the spectral VT detector off" * (
            "tta-off" in sections))
        eval_time_to_alarm(max_records, spectral="tta-off" not in sections)
    print(f"\n(eval_alarms took {time.perf_counter() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
