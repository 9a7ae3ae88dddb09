"""Alarm evaluation: PhysioNet/CinC 2015 false-alarm score and time-to-alarm, through `vigil replay`.

Every record runs through the same live pipeline as the daemon (ECG analysis + alarm engine on a
SimulatedClock, PLETH/ABP pulsatility fusion included) via `vigil.commands.replay.replay_record`.

* CinC 2015 (challenge2015, alarms.csv): the alarm type is the record header's first comment; our
  system "alarms" when the condition of that type (asystole, brady_extreme, tachy_extreme, vt, vf) is
  present at any moment of the last 16 s before 300 s, using data up to 300 s only. Score =
  (TP+TN)/(TP+TN+FP+5·FN) per type and overall (Clifford et al., Physiol Meas 2016).
* Time to alarm: onset of each reference VT (mitdb "(VT", >= 5 s... see MIN_EPISODE_S) and VF/VFL
  episode (vfdb, cudb "[" "]") to the first "raised" of that condition (missed when none before the
  episode end + 10 s).

Run: ``python -m vigil.evaluation.eval_alarms [cinc] [tta] [--max-records N]``.
Targets (issue 4): CinC score >= 80 on VT records with <= 1 in 20 true alarms missed; asystole/VF
alarm <= 6 s after onset; extreme tachy/brady <= 10 s.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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


def eval_cinc(max_records: int | None = None) -> int:
    """Score the challenge2015 records; print per type and overall."""
    from vigil.commands.replay import replay_record

    root = data_root() / "challenge2015"
    labels_file = root / "alarms.csv"
    if not labels_file.exists():
        print(f"challenge2015 not found under {root} (set VIGIL_DATA)")
        return 0
    rows = [ln.split(",") for ln in labels_file.read_text().splitlines()[1:] if ln.strip()]
    per: dict[str, Counts] = {}
    print(f"{'record':<8}{'type':<26}{'truth':<7}{'ours':<6}{'first raise (s)':>16}")
    for rec, truth in rows[:max_records]:
        typ = alarm_type(root / f"{rec}.hea")
        if typ is None:
            continue
        cond = TYPE_CONDITION[typ]
        res = replay_record(root / rec, until=ALARM_AT_S)
        ivs = presence(res.events, cond, res.t0)
        ours = any(a <= ALARM_AT_S and b >= ALARM_AT_S - WINDOW_S for a, b in ivs)
        true_alarm = truth.strip() == "1"
        hdr_text = (root / f"{rec}.hea").read_text()
        if ("#True alarm" in hdr_text and not true_alarm) or ("#False alarm" in hdr_text and true_alarm):
            print(f"note: {rec}: alarms.csv says {truth.strip()} but the header comment disagrees; using alarms.csv")
        c = per.setdefault(typ, Counts())
        if true_alarm and ours:
            c.tp += 1
        elif true_alarm:
            c.fn += 1
        elif ours:
            c.fp += 1
        else:
            c.tn += 1
        first = next((f"{a:.1f}" for a, b in ivs if b >= ALARM_AT_S - WINDOW_S), "-")
        print(f"{rec:<8}{typ:<26}{int(true_alarm):<7}{int(ours):<6}{first:>16}", flush=True)
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
    return 0


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


def eval_time_to_alarm(max_records: int | None = None) -> int:
    """Delay from reference VT/VF onset to our alarm on mitdb/vfdb/cudb."""
    import wfdb

    from vigil.commands.replay import replay_record

    delays: dict[str, list[float]] = {"vt": [], "vf": []}
    missed: dict[str, int] = {"vt": 0, "vf": 0}
    print(f"{'record':<12}{'cond':<5}{'onset (s)':>10}{'dur (s)':>9}{'alarm after (s)':>17}")
    todo = []
    for db in ("mitdb", "vfdb", "cudb"):
        folder = data_root() / db
        for hea in sorted(folder.glob("*.hea")):
            todo.append((db, hea.stem))
    done = 0
    for db, rec in todo:
        path = data_root() / db / rec
        try:
            hdr = wfdb.rdheader(str(path))
            refs = {c: [iv for iv in _reference(db, rec, c, float(hdr.fs), int(hdr.sig_len))
                        if iv[1] - iv[0] >= MIN_EPISODE_S[c]] for c in ("vt", "vf")}
        except Exception as exc:  # a missing annotation file is not fatal for the table
            print(f"{db}/{rec}: skipped ({exc})")
            continue
        if not any(refs.values()):
            continue
        if max_records is not None and done >= max_records:
            break
        done += 1
        res = replay_record(path)
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
    print("targets: asystole/VF <= 6 s after onset; extreme tachy/brady <= 10 s "
          "(no annotated asystole/extreme episodes in these databases: see the CinC table)")
    return 0


def main(argv: list[str]) -> int:
    """Run the sections named in argv (cinc, tta) or both."""
    max_records = None
    if "--max-records" in argv:
        max_records = int(argv[argv.index("--max-records") + 1])
    sections = [a for a in argv if a in ("cinc", "tta")] or ["cinc", "tta"]
    t = time.perf_counter()
    if "cinc" in sections:
        print("PhysioNet/CinC 2015 (challenge2015): alarm present in [284, 300] s, data up to 300 s")
        eval_cinc(max_records)
    if "tta" in sections:
        print("\nTime to alarm (reference episode onset -> raised)")
        eval_time_to_alarm(max_records)
    print(f"\n(eval_alarms took {time.perf_counter() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
