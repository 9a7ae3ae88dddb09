"""Study: do late (ST-T) features raise leave-one-record-out VEB Se/+P?  (Issue 3; not on the daemon path.)

Each non-paced DS1 record is streamed through the real ``EcgAnalyzer`` (two leads) as in
``vigil.evaluation.train_beats``; for every detected beat the streaming features are recorded with its
R sample.  Late features are then computed causally from the same 0.5–40 Hz signal the classifier sees
(the analyser's own filters, run over the record), in a window R+100..R+450 ms that is available
0.45 s after R, against a running dominant ST-T template (exponential average of the late windows of
beats that matched the dominant template, updated only after the beat's own features are taken):

* ``late_corr`` — Pearson correlation of the beat's late window (both leads) with the dominant one;
* ``late_amp_ratio`` — peak-to-peak of the late window, lead 1, relative to the dominant's;
* ``tq0``/``tq1`` — T-wave extreme relative to the QRS main deflection (signed: > 0 concordant), per
  lead, minus the dominant beat's (a ventricular beat's T wave is discordant to its QRS);
* ``late_area`` — signed area of (beat − dominant) late window, lead 1, over the dominant QRS amplitude.

A V beat's T wave is discordant and its ST-T unlike the normal beat's (AHA/ACCF/HRS recommendations
for the standardization and interpretation of the ECG, part III: intraventricular conduction
disturbances, Circulation 119 (2009) e235-e240).

Variants are scored by leave-one-record-out (each record by a model never trained on it), EC57 gross
VEB Se/+P, for a grid of log-odds thresholds; the rule gate is either the OSEA-like rule of
``vigil.signal.beats`` or a wider candidate gate (``corr < CORR_GATE``).

Models are trained either on all V beats and a random share of the others (a veto of the gate's
calls) or, "gated", on exactly the gate's candidates (what ``vigil.signal.beats`` ships).  Features of
two-lead streaming only (``train_beats`` also trains on one-lead features, so its numbers differ).
Measured (22 records, log-odds -1.5 / -1.0): late features added at most ~1 point of Se or +P to any
variant; training on the corr < 0.9 candidates added ~4 points of Se at the same +P.

Usage: ``python -m vigil.evaluation.veb_late [--reuse] [--records 100,101]`` (~6 min, 1 core).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.datasets import data_root
from vigil.evaluation.ec57 import PACED_RECORDS

log = logging.getLogger(__name__)

CACHE = Path("/tmp/vigil-veb-late")
LATE_FROM_S = 0.10
LATE_TO_S = 0.45
ISO_FROM_S = 0.25  # isoelectric reference: median of R-250..R-100 ms
ISO_TO_S = 0.10
QRS_S = 0.10
EMA = 0.08
LATE_NAMES = ("late_corr", "late_amp_ratio", "tq0", "tq1", "late_area")
CORR_GATE = 0.90
FloatArray = npt.NDArray[np.float64]


def record_beats(rec: str, n_leads: int = 2) -> dict[str, Any]:
    """Stream one record; per detection its R sample, streaming features, reference class and scored mask."""
    from vigil.evaluation.train_beats import reference_classes, stream_beats
    from vigil.signal import filters

    an, x, fs, rows = stream_beats(rec, n_leads)
    bp = np.empty_like(x)
    for k in range(n_leads):
        hp, lp = filters.baseline_filter(fs), filters.lowpass_filter(fs)
        for i in range(0, len(x), 250):
            bp[i:i + 250, k] = lp(hp(x[i:i + 250, k]))
    det = [s for s, _ in rows]
    cls, scored, v_missed = reference_classes(rec, det, fs)
    X = np.array([f.vector() for _, f in rows])
    late = late_features(bp, np.array(det) + int(round(an.lp_delay)), X, fs)
    return {"X": X, "late": late, "r": np.array(det), "cls": cls, "scored": scored, "v_undetected": v_missed}


def late_features(bp: FloatArray, r_bp: npt.NDArray[np.int64], X: FloatArray, fs: float) -> FloatArray:
    """Causal late (ST-T) features of every beat (rows of ``LATE_NAMES``); see the module docstring."""
    from vigil.signal.beats import FEATURE_NAMES

    i_dom, i_corr = FEATURE_NAMES.index("tpl_is_dominant"), FEATURE_NAMES.index("corr")
    a, b = int(round(LATE_FROM_S * fs)), int(round(LATE_TO_S * fs))
    i0, i1 = int(round(ISO_FROM_S * fs)), int(round(ISO_TO_S * fs))
    q = int(round(QRS_S * fs))
    n = len(bp)
    out = np.zeros((len(r_bp), len(LATE_NAMES)))
    dom_late: FloatArray | None = None
    dom_tq = np.zeros(bp.shape[1])
    dom_qrs = 1.0
    for j, rb in enumerate(r_bp.tolist()):
        if rb - i0 < 0 or rb + b > n:
            out[j] = (1.0, 1.0, 0.0, 0.0, 0.0)
            continue
        iso = np.median(bp[rb - i0:rb - i1], axis=0)
        late = bp[rb + a:rb + b] - iso  # (samples, leads)
        qrs = bp[rb - q:rb + q + 1] - iso
        qk = qrs[np.abs(qrs).argmax(axis=0), np.arange(bp.shape[1])]  # signed QRS extreme per lead
        tk = late[np.abs(late).argmax(axis=0), np.arange(bp.shape[1])]  # signed T extreme per lead
        tq = np.sign(qk) * tk / np.maximum(np.abs(qk), 1e-6)
        if dom_late is None:
            dom_late, dom_tq, dom_qrs = late.copy(), tq.copy(), float(np.ptp(qrs[:, 0])) or 1.0
        lc = late - late.mean(axis=0)
        dc = dom_late - dom_late.mean(axis=0)
        den = float(np.sqrt(np.sum(lc * lc) * np.sum(dc * dc)))
        corr = float(np.sum(lc * dc)) / den if den > 0 else 0.0
        amp = float(np.ptp(late[:, 0])) / (float(np.ptp(dom_late[:, 0])) or 1e-6)
        area = float(np.sum(late[:, 0] - dom_late[:, 0])) / fs / dom_qrs
        out[j] = (corr, amp, tq[0] - dom_tq[0], tq[-1] - dom_tq[-1], area)
        if X.size and X[j, i_dom] > 0.5 and X[j, i_corr] >= 0.85:  # a dominant beat updates the template
            dom_late = (1 - EMA) * dom_late + EMA * late
            dom_tq = (1 - EMA) * dom_tq + EMA * tq
            dom_qrs = (1 - EMA) * dom_qrs + EMA * (float(np.ptp(qrs[:, 0])) or dom_qrs)
    return out


def _job(rec: str) -> tuple[str, dict[str, Any]]:
    return rec, record_beats(rec)


def design(d: dict[str, Any], late: bool) -> FloatArray:
    """Model input: streaming features (unused ones zeroed as in train_beats) plus, optionally, late ones."""
    from vigil.evaluation.train_beats import _masked

    x = _masked(d["X"])
    return np.hstack([x, d["late"]]) if late else x


def loro(data: dict[str, dict[str, Any]], late: bool, seed: int = 0, gated: bool = False) -> dict[str, FloatArray]:
    """Leave-one-record-out log-odds of V for every record (model trained on the others).

    `gated`: trained on every V candidate (rule or corr < ``CORR_GATE``) instead of all V beats and
    a random ``N_KEEP`` share of the others.
    """
    from vigil.evaluation.train_beats import N_KEEP, fit

    out: dict[str, FloatArray] = {}
    for rec in data:
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for other, d in data.items():
            if other == rec:
                continue
            cls = d["cls"]
            keep = ~np.isin(cls, ("F", "Q"))
            is_v = cls == "V"
            if gated:
                keep &= gates(d)[f"corr<{CORR_GATE}"]
            else:
                keep &= is_v | (rng.random(len(cls)) < N_KEEP)
            xs.append(design(d, late)[keep])
            ys.append(is_v[keep].astype(np.int64))
        clf = fit(np.vstack(xs), np.concatenate(ys))
        out[rec] = clf.decision_function(design(data[rec], late))
        print(f"  fold {rec} done", file=sys.stderr, flush=True)
    return out


def gates(d: dict[str, Any]) -> dict[str, npt.NDArray[np.bool_]]:
    """Candidate gates the model may veto: the OSEA-like rule, a wider one, none."""
    from vigil.signal.beats import BeatFeatures, rule_v

    rule = np.array([rule_v(BeatFeatures(*row)) for row in d["X"]], dtype=bool)
    corr = d["X"][:, 0] if d["X"].size else np.zeros(0)
    return {"rule": rule, f"corr<{CORR_GATE}": rule | (corr < CORR_GATE), "none": np.ones(len(rule), bool)}


def table(data: dict[str, dict[str, Any]], logits: dict[str, dict[str, FloatArray]],
          thresholds: list[float]) -> list[str]:
    """Gross LORO VEB Se/+P per model × gate × threshold."""
    from vigil.evaluation.train_beats import veb_counts

    lines = []
    for model, lg in logits.items():
        for gate in ("rule", f"corr<{CORR_GATE}", "none"):
            for t in thresholds:
                tot = [0, 0, 0]
                for rec, d in data.items():
                    c = veb_counts(d, gates(d)[gate] & (lg[rec] > t))
                    tot = [u + v for u, v in zip(tot, c, strict=True)]
                vv, m, f = tot
                lines.append(f"{model:18s} gate {gate:9s} log-odds>{t:+.2f}  Vv={vv:5d} missed={m:4d} false={f:4d} "
                             f"Se={100 * vv / max(1, vv + m):6.2f}% +P={100 * vv / max(1, vv + f):6.2f}%")
    return lines


def main(argv: list[str]) -> int:
    """Collect (or reuse) per-beat features, run LORO for each variant, print the table."""
    p = argparse.ArgumentParser(prog="veb_late")
    p.add_argument("--reuse", action="store_true")
    p.add_argument("--records", default="")
    args = p.parse_args(argv)
    root = data_root() / "mitdb"
    recs = sorted(f.stem for f in root.glob("*.hea") if f.stem not in PACED_RECORDS)
    if args.records:
        recs = [r for r in args.records.split(",") if r in recs]
    CACHE.mkdir(parents=True, exist_ok=True)
    data: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for rec in recs:
        f = CACHE / f"{rec}.pkl"
        if args.reuse and f.exists():
            data[rec] = pickle.loads(f.read_bytes())
            continue
        data[rec] = record_beats(rec)
        f.write_bytes(pickle.dumps(data[rec]))
        print(f"features {rec}: {len(data[rec]['cls'])} beats ({time.perf_counter() - t0:.0f}s)",
              file=sys.stderr, flush=True)
    logits = {"streaming": loro(data, late=False), "streaming+late": loro(data, late=True),
              "gated streaming": loro(data, late=False, gated=True),
              "gated stream+late": loro(data, late=True, gated=True)}
    (CACHE / "logits.pkl").write_bytes(pickle.dumps(logits))
    for line in table(data, logits, [-2.0, -1.5, -1.25, -1.0, -0.5, 0.0, 0.5, 1.0]):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
