"""`vigil analyze RECORD`: run the streaming ECG analyser over a recorded file and print one JSON document.

Input: a WFDB record (.hea with .dat or .mat) or a BIDMC CSV (``bidmc_NN_Signals.csv``).  The record is
streamed through :class:`vigil.signal.analyzer.EcgAnalyzer` in one-second blocks, exactly as live data.
With ``--beats-from EXT`` the beat times come from the record's annotation file (e.g. ``qrs``) and
only the rhythm classification runs; that needs just the .hea and the annotation file.

JSON contract (stable; sample indices in the record's own numbering)::

    {"record": str, "fs": float,
     "beats": [{"sample": int, "label": "N|V|S|F|Q"}], "episodes": [{"start": int, "end": int, "label": str}],
     "qt": [{"sample": int, "qt_ms": float, "rr_ms": float, "qtc_ms": float, "formula": "fridericia"}],
     "hr": [{"sample": int, "bpm": float}]}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from vigil.errors import VigilError

HELP = "run the streaming ECG analyser over a record and print JSON"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("record", help="record path (WFDB .hea/.dat/.mat with or without extension, or BIDMC CSV)")
    parser.add_argument("--channel", type=int, default=None,
                        help="signal index to analyse (single lead); default: the first two ECG signals fused")
    parser.add_argument("--json", action="store_true", help="print the JSON document (default: a summary)")
    parser.add_argument("--beats-from", metavar="EXT", default=None,
                        help="take beats from this annotation file (e.g. qrs) and run rhythm classification only")
    parser.add_argument("--block", type=float, default=1.0, help="block length in seconds (default 1)")


def _base(path: Path) -> Path:
    if path.suffix.lower() in (".hea", ".dat", ".mat", ".atr", ".qrs"):
        return path.with_suffix("")
    return path


def _load_signals(record: str, channel: int | None) -> tuple[str, float, Any, list[str]]:
    """(record name, fs, samples in µV as (n,) or (n, 2), the names of the signals analysed)."""
    import numpy as np

    path = Path(record)
    if path.suffix.lower() == ".csv" or "bidmc" in path.name.lower():
        from vigil.edge.records import is_bidmc, load_bidmc

        if is_bidmc(path):
            rec = load_bidmc(path, channel=channel, ecg_leads=1 if channel is not None else 2)
            chans = [c for c in (rec.channel("ecg"), rec.channel("ecg2")) if c is not None]
            if not chans:
                raise VigilError(f"{record}: no ECG signal")
            leads = [c.physical() * (1000.0 if c.unit.lower() == "mv" else 1.0) for c in chans]
            x = leads[0] if len(leads) == 1 else np.stack(leads, axis=1)
            return path.name.split("_Signals")[0], chans[0].fs, x, [c.source_name for c in chans]
    import wfdb

    base = _base(path)
    if not base.with_suffix(".hea").exists():
        raise VigilError(f"{record}: no such WFDB header {base.with_suffix('.hea')}")
    try:
        rec = wfdb.rdrecord(str(base))
    except Exception as exc:  # wfdb raises many types for bad files
        raise VigilError(f"{record}: cannot read record ({exc})") from exc
    if rec.p_signal is None:
        raise VigilError(f"{record}: record has no signal samples")
    names = list(rec.sig_name or [])
    units = [u or "mV" for u in (rec.units or ["mV"] * len(names))]
    if channel is not None:
        if not 0 <= channel < len(names):
            raise VigilError(f"{record}: --channel {channel} out of range (0..{len(names) - 1})")
        cols = [channel]
    else:
        from vigil.edge.records import ecg_signals

        cols = ecg_signals(names, units)[:2]
        if not cols:
            cols = [0]
            print(f"vigil analyze: {base.name}: no ECG signal among {names}; analysing signal 0 "
                  f"({names[0] if names else '?'}); choose one with --channel", file=sys.stderr)
    scale = np.array([1000.0 if units[c].lower() == "mv" else (1.0 if units[c].lower() in ("uv", "µv") else 1000.0)
                      for c in cols])
    x = np.nan_to_num(rec.p_signal[:, cols] * scale)
    return base.name, float(rec.fs), (x[:, 0] if len(cols) == 1 else x), [names[c] for c in cols]


def analyse_signals(name: str, fs: float, x: Any, block_s: float = 1.0) -> dict[str, Any]:
    """Stream samples (µV, (n,) or (n, 2)) through EcgAnalyzer and build the JSON document."""
    from vigil.model import Beat, Measurement, Metric, RhythmEpisode
    from vigil.signal.analyzer import EcgAnalyzer

    n_leads = 1 if x.ndim == 1 else x.shape[1]
    an = EcgAnalyzer(fs, n_leads=n_leads)
    block = max(1, int(round(block_s * fs)))
    beats: list[dict[str, Any]] = []
    hr: list[dict[str, Any]] = []
    qt: list[dict[str, Any]] = []
    episodes: list[dict[str, Any]] = []
    outs: list[Any] = []
    for i in range(0, len(x), block):
        outs.extend(an.feed(x[i:i + block], i))
    outs.extend(an.flush())
    for o in outs:
        if isinstance(o, Beat):
            beats.append({"sample": o.sample, "label": o.label})
        elif isinstance(o, Measurement) and o.metric == Metric.HR:
            hr.append({"sample": o.sample, "bpm": o.value})
        elif isinstance(o, Measurement) and o.metric == Metric.QTC and not math.isnan(o.value):
            qt.append({"sample": o.sample, "qt_ms": o.detail.get("qt_ms"), "rr_ms": o.detail.get("rr_ms"),
                       "qtc_ms": round(o.value, 1), "formula": o.detail.get("formula", "fridericia")})
        elif isinstance(o, RhythmEpisode) and o.end is not None:
            episodes.append({"start": o.start, "end": o.end, "label": o.label})
    episodes.sort(key=lambda e: (e["start"], e["end"]))
    return {"record": name, "fs": fs, "beats": beats, "episodes": episodes, "qt": qt, "hr": hr}


def rhythm_from_annotations(record: str, ext: str, block_s: float = 1.0) -> dict[str, Any]:
    """Rhythm classification over annotated beat times only (no signal needed)."""
    import wfdb

    from vigil.evaluation.ec57 import aami_class
    from vigil.model import Beat
    from vigil.signal.rhythm import RhythmTracker

    base = _base(Path(record))
    try:
        hdr = wfdb.rdheader(str(base))
        ann = wfdb.rdann(str(base), ext)
    except Exception as exc:
        raise VigilError(f"{record}: cannot read header/annotation '{ext}' ({exc})") from exc
    fs = float(hdr.fs)
    n = int(hdr.sig_len or 0) or (int(ann.sample[-1]) + 1 if len(ann.sample) else 0)
    beats = [Beat(int(s), aami_class(sym) or "Q") for s, sym in zip(ann.sample, ann.symbol, strict=True)  # type: ignore[arg-type]
             if aami_class(sym) is not None]
    tracker = RhythmTracker(fs)
    step = max(1, int(round(block_s * fs)))
    episodes: list[Any] = []
    k = 0
    for upto in range(step, n + step, step):
        upto = min(upto, n)
        chunk = []
        while k < len(beats) and beats[k].sample < upto:
            chunk.append(beats[k])
            k += 1
        episodes += tracker.update(beats=chunk, upto=upto, signal=None, signal_start=upto, quality=[])
    episodes += tracker.close(n)
    eps = sorted(({"start": e.start, "end": e.end, "label": e.label} for e in episodes if e.end is not None),
                 key=lambda e: (e["start"], e["end"]))
    return {"record": base.name, "fs": fs, "beats": [{"sample": b.sample, "label": b.label} for b in beats],
            "episodes": eps, "qt": [], "hr": []}


def _summary(doc: dict[str, Any], signals: list[str] | None = None) -> str:
    from collections import Counter

    labels = Counter(b["label"] for b in doc["beats"])
    eps = Counter(e["label"] for e in doc["episodes"])
    bpm = [h["bpm"] for h in doc["hr"]]
    lines = [f"record {doc['record']} at {doc['fs']:g} Hz"
             + (f", ECG {' + '.join(signals)}" if signals else "")
             + (" (two leads fused)" if signals and len(signals) > 1 else ""),
             f"beats: {len(doc['beats'])} (" + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) + ")"]
    if bpm:
        lines.append(f"HR: median {sorted(bpm)[len(bpm) // 2]:.0f} bpm (min {min(bpm):.0f}, max {max(bpm):.0f})")
    lines.append("episodes: " + (", ".join(f"{k} ×{v}" for k, v in sorted(eps.items())) or "none"))
    if doc["qt"]:
        q = doc["qt"][-1]
        lines.append(f"QTc ({q['formula']}): last {q['qtc_ms']:.0f} ms over {len(doc['qt'])} measurements")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the analysis and print JSON or a summary."""
    signals: list[str] | None = None
    if args.beats_from:
        doc = rhythm_from_annotations(args.record, args.beats_from, args.block)
    else:
        name, fs, x, signals = _load_signals(args.record, args.channel)
        doc = analyse_signals(name, fs, x, args.block)
    if args.json:
        json.dump(doc, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
    else:
        print(_summary(doc, signals))
    return 0
