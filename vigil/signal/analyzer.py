"""The streaming ECG analyser: one instance per ECG channel, fed sample blocks of any size.

Pipeline per block: pacemaker pulses cut out of the raw samples (``pace``; a few samples are held
back for it) → baseline removal (0.5 Hz high-pass) → 40 Hz low-pass (the "band-passed" ECG)
→ Pan–Tompkins QRS detection over one or two leads (``vigil.signal.qrs``) → R-peak localisation
on the band-passed primary lead → beat class (``beats``) → RR/HR (``hr``), HRV (``hrv``), signal
quality per second (``quality``) → rhythm (``rhythm.RhythmTracker``) and QT (``qt.QtMeasurer``).
A beat is reported Q (unclassifiable) when a second whose noise could hide a QRS
(``quality.obscures_qrs``) ended less than ``Q_AFTER_NOISE_S`` before its R; its strict label, which
rhythm and the VT alarm read, stays the classifier's.

Memory is bounded (ring buffers of a few seconds); no I/O, no clock.  Sample indices are the
stream's own numbering (``seq``); a jump in ``seq`` is a gap: every stage re-learns from the new
position and nothing is interpolated across it.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.model import AnalysisOutput, Beat, BeatLabel, QualityReport
from vigil.signal import filters
from vigil.signal.beats import BeatClassifier
from vigil.signal.hr import HrEstimator
from vigil.signal.hrv import HrvEstimator
from vigil.signal.pace import PaceRejector
from vigil.signal.qrs import QrsDetector, Ring
from vigil.signal.quality import QRS_HALF_S, WANDER_CONTEXT_S, QualityAssessor, obscures_qrs
from vigil.signal.small import median, median_array

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

LOC_FROM_S = 0.25  # R is searched in [peak - 250 ms, peak - 40 ms] of the integrator peak
LOC_TO_S = 0.04
MAX_QUALITY_LAG_S = 4.0
Q_AFTER_NOISE_S = 3.0  # a beat within this long after a second whose noise could hide a QRS is Q (unclassifiable)
FIDUCIAL_SWITCH = 1.5  # once the beats agree on a polarity, the opposite deflection must be this much larger
POLARITY_SETTLED = 0.5  # |running mean of the chosen signs| from which the beats agree on a polarity
POLARITY_ALPHA = 0.125  # weight of each new beat in that running mean (~8 beats)
QRS_AMP_BEATS = 12  # the quality check's reference QRS amplitude: median over this many beats

try:  # hooks implemented by the rhythm/QT work; the analyser runs without them until they land
    from vigil.signal.rhythm import RhythmTracker as _RhythmTracker
except (ImportError, AttributeError):  # pragma: no cover - depends on the other part's progress
    _RhythmTracker = None  # type: ignore[assignment,misc]
try:
    from vigil.signal.qt import QtMeasurer as _QtMeasurer
except (ImportError, AttributeError):  # pragma: no cover
    _QtMeasurer = None  # type: ignore[assignment,misc]


class EcgAnalyzer:
    """Streaming analysis of one ECG channel (one or two leads); see the module docstring."""

    def __init__(self, fs: float, channel: str = "ecg", n_leads: int = 1, *,
                 rhythm: bool = True, qt: bool = True) -> None:
        """Create an analyser for `n_leads` leads at `fs` Hz; `rhythm`/`qt` enable those hooks."""
        if not 100.0 <= fs <= 2000.0:
            raise ValueError(f"unsupported sampling rate {fs} Hz")
        self.fs = float(fs)
        self.channel = channel
        self.n_leads = n_leads
        self._hp = [filters.baseline_filter(fs) for _ in range(n_leads)]
        self._lp = [filters.lowpass_filter(fs) for _ in range(n_leads)]
        self.lp_delay = int(round(filters.lowpass_delay(fs)))
        self.pace = PaceRejector(fs, n_leads)
        self.detector = QrsDetector(fs, n_leads)
        self.classifier = BeatClassifier(fs, n_leads)
        self.hr = HrEstimator(fs, channel)
        self.hrv = HrvEstimator(fs, channel)
        self.quality = QualityAssessor(fs, channel)
        cap = int(8.0 * fs)
        self.raw = Ring(cap)
        self.hp = Ring(cap)
        self.bp = Ring(cap)
        self.bp_more = [Ring(cap) for _ in range(n_leads - 1)]  # band-passed extra leads (classification)
        self.loc_from = int(round(LOC_FROM_S * fs))
        self.loc_to = int(round(LOC_TO_S * fs))
        self.rhythm: Any = _RhythmTracker(fs, channel) if (rhythm and _RhythmTracker is not None) else None
        self.qt: Any = _QtMeasurer(fs, channel) if (qt and _QtMeasurer is not None) else None
        self.next_seq: int | None = None
        self._recent_beats: deque[int] = deque(maxlen=64)
        self._recent_amps: deque[tuple[int, float, bool]] = deque(maxlen=64)  # (R sample, QRS µV, clean), newest last
        self.qrs_half = int(round(QRS_HALF_S * fs))
        self._last_r: int | None = None
        self._start(0)

    # ------------------------------------------------------------------ lifecycle
    def _start(self, seq: int) -> None:
        self.pace.reset(seq)
        for f in self._hp:
            f.reset()
        for f in self._lp:
            f.reset()
        for ring in self.bp_more:
            ring.reset(seq)
        self.detector.reset(seq)
        self.classifier.reset()
        self.hr.reset(seq)
        self.hrv.reset(seq)
        self.quality.reset(seq)
        self.raw.reset(seq)
        self.hp.reset(seq)
        self.bp.reset(seq)
        self._recent_beats.clear()
        self._recent_amps.clear()
        self._last_r = None
        self._polarity = 0.0  # running mean of the chosen deflections' signs (+1 up, -1 down)
        self._upto = seq
        self._origin = seq  # first sample of the current stream (after a gap: its first sample)
        self._obscured_end: int | None = None  # end of the last assessed second whose noise could hide a QRS

    def feed(self, samples_uV: npt.ArrayLike, seq: int) -> list[AnalysisOutput]:
        """Analyse one block starting at stream index `seq`; return the outputs it completes."""
        x = np.asarray(samples_uV, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.shape[1] < self.n_leads:
            raise ValueError(f"expected {self.n_leads} lead(s), got {x.shape[1]}")
        x = x[:, :self.n_leads]
        if self.next_seq is not None and seq != self.next_seq:
            log.info("ECG gap on %s: expected seq %d, got %d; re-learning", self.channel, self.next_seq, seq)
            self._start(seq)
        elif self.next_seq is None:
            self._start(seq)
        self.next_seq = seq + len(x)
        x, seq = self.pace.feed(x, seq)  # pacemaker pulses blanked; the newest few samples wait for the next block
        return self._in_chunks(x, seq)

    def _in_chunks(self, x: FloatArray, seq: int) -> list[AnalysisOutput]:
        if len(x) == 0:
            return []
        chunk = int(self.fs)  # long blocks are processed a second at a time (ring buffers stay bounded)
        if len(x) > 2 * chunk:
            out: list[AnalysisOutput] = []
            for i in range(0, len(x), chunk):
                out.extend(self._process(x[i:i + chunk], seq + i))
            return out
        return self._process(x, seq)

    def _process(self, x: FloatArray, seq: int) -> list[AnalysisOutput]:
        hps = [self._hp[k](x[:, k]) for k in range(self.n_leads)]
        hp0 = hps[0]
        bp0 = self._lp[0](hp0)
        for k, ring in enumerate(self.bp_more, 1):
            ring.append(self._lp[k](hps[k]))
        self.raw.append(x[:, 0])
        self.hp.append(hp0)
        self.bp.append(bp0)
        detections = self.detector.process(x)
        out: list[AnalysisOutput] = []
        beats: list[Beat] = []
        for d in detections:
            beat = self._beat(d.peak_index)
            if beat is not None:
                beats.append(beat)
        upto = max(self._upto, self.detector.final_upto - self.loc_from - self.lp_delay)
        self._upto = upto
        out.extend(beats)
        for b in beats:
            self._recent_beats.append(b.sample)
        quality = self._assess(upto)
        for q in quality:
            if obscures_qrs(q.flags):
                self._obscured_end = q.sample
        out.extend(quality)
        out.extend(self.hr.update(beats, upto))
        out.extend(self.hrv.update(beats, upto))
        if self.rhythm is not None:
            out.extend(self.rhythm.update(beats=beats, upto=upto, signal=bp0, signal_start=seq, quality=quality))
        if self.qt is not None:
            out.extend(self.qt.update(beats=beats, raw=hp0, raw_start=seq, upto=upto, quality=quality))
        return out

    def flush(self) -> list[AnalysisOutput]:
        """Finish the stream: close open rhythm episodes at the last sample fed."""
        held, seq = self.pace.flush()
        out: list[AnalysisOutput] = self._in_chunks(held, seq)
        close = getattr(self.rhythm, "close", None)
        if close is not None and self.next_seq is not None:
            out.extend(close(self.next_seq))
        return out

    # ------------------------------------------------------------------ beats
    def _beat(self, peak: int) -> Beat | None:
        """The beat whose integrator peak is `peak`, or None when its R lies before the stream's first sample."""
        a = peak - self.loc_from
        if self._last_r is not None:
            a = max(a, self._last_r + self.lp_delay + self.detector.refractory // 2)
        b = max(a + 1, peak - self.loc_to)
        seg = self.bp.get(a, b)
        if seg.size:
            dev = seg - median_array(seg)
            r_bp = a + int(np.argmax(np.abs(dev)))  # the classifier's alignment (its models were trained on it)
        else:
            dev = None
            r_bp = peak - (self.loc_from + self.loc_to) // 2
        r = r_bp - self.lp_delay
        self._last_r = r
        if r < self._origin:  # the tail of a complex that began before the first sample: not a beat we saw
            return None
        pre, w = self.classifier.pre, self.classifier.window
        win = np.array([ring.get(r_bp - pre, r_bp + w + 1) for ring in (self.bp, *self.bp_more)])
        label: BeatLabel = "N"
        strict: BeatLabel = "N"
        if win.shape[1] == pre + w + 1:
            label, strict = self.classifier.labels(win, r)
        clean = self._obscured_end is None or r - self._obscured_end >= Q_AFTER_NOISE_S * self.fs
        t_bp = a + self._fiducial(dev) if dev is not None and strict in ("N", "S") else r_bp  # the beat's time
        if not clean:
            label = "Q"  # noise in the last seconds: the shape is not to be trusted (rhythm keeps `strict`)
        qrs = self.bp.get(r_bp - self.qrs_half, r_bp + self.qrs_half)
        if qrs.size:
            self._recent_amps.append((int(r), float(qrs.max() - qrs.min()), clean))
        return Beat(sample=int(t_bp - self.lp_delay), label=label, channel=self.channel,
                    strict_label=None if strict == label else strict)

    def _fiducial(self, dev: FloatArray) -> int:
        """Index of a normal beat's main deflection in `dev` (band-passed, median removed).

        The larger of the highest and the lowest point, except that once the recent normal beats agree on
        a polarity, the other one must be `FIDUCIAL_SWITCH` times larger to be taken.  With R and S of
        similar size (right bundle branch block, mitdb 118) the larger one alternated from beat to beat and
        the beat time jumped by the R–S distance (~40 ms on 37 % of 118's normal beats): jitter in every RR
        interval, RMSSD and pNN50 about 2× too high.  Only beats whose strict (rhythm) label is N or S are timed
        this way and update the memory (an ectopic beat of the other polarity keeps its largest deflection, as
        before; the strict label, not the reported one, so the time does not depend on the label model), and
        the classifier keeps the largest-deflection alignment its models were trained on.
        """
        hi, lo = int(np.argmax(dev)), int(np.argmin(dev))
        up, down = float(dev[hi]), -float(dev[lo])
        if self._polarity >= POLARITY_SETTLED:
            take_up = down <= FIDUCIAL_SWITCH * up
        elif self._polarity <= -POLARITY_SETTLED:
            take_up = up > FIDUCIAL_SWITCH * down
        else:
            take_up = up >= down
        self._polarity += POLARITY_ALPHA * ((1.0 if take_up else -1.0) - self._polarity)
        return hi if take_up else lo

    # ------------------------------------------------------------------ quality
    def _assess(self, upto: int) -> list[QualityReport]:
        reports: list[QualityReport] = []
        limit = max(upto, self.raw.end - int(MAX_QUALITY_LAG_S * self.fs))
        p = self.quality.period
        ctx = int(round(WANDER_CONTEXT_S * self.fs))
        noise_ratio = self.detector.npk / self.detector.spk if self.detector.spk > 0 else 0.0
        while self.quality.next_end <= min(limit, self.raw.end):
            end = self.quality.next_end
            a = end - p
            n_beats = sum(1 for s in self._recent_beats if a <= s < end)
            amps = [v for s, v, _ in self._recent_amps if s < end][-QRS_AMP_BEATS:]  # the same whatever the block split
            qrs_uv = median(amps) if amps else 0.0
            clean_amps = [v for s, v, c in self._recent_amps if s < end and c][-QRS_AMP_BEATS:]
            clean_uv = median(clean_amps) if clean_amps else 0.0
            q = self.quality.assess(end, self.raw.get(a, end), self.hp.get(a, end),
                                    self.bp.get(a, end), self.detector.slope.get(a, end),
                                    n_beats, noise_ratio, context=self.raw.get(end - ctx, end), qrs_uv=qrs_uv,
                                    clean_qrs_uv=clean_uv)
            if self.pace.count and any(a <= p < end for p in self.pace.pulses):
                q = replace(q, flags=(*q.flags, "pacer"))  # informational: the pulses were cut out
            reports.append(q)
            self.quality.next_end = end + p
        return reports
