"""Streaming rhythm classification from labelled beats, the band-passed ECG and signal quality.

Labels and definitions (DESIGN.md §6; extreme brady/tachy and VT as in the PhysioNet/CinC
Challenge 2015, Clifford et al., Physiol. Meas. 37 (2016) 1245):

* base rhythm (mutually exclusive): SINUS, BRADY (< 50 bpm), TACHY (> 100 bpm) from the median of
  the last 8 RR intervals with ±3 bpm hysteresis; AF (see `vigil.signal.af`, vetoed by P waves
  when the signal shows them, `vigil.signal.pwave`);
* overlays: VT (≥ 5 consecutive V beats, mean rate > 100 bpm, median peak-to-peak ≥ 0.15 mV on the
  0.5-40 Hz lead when the signal is given, not over a poor-quality second), COUPLET (exactly 2 V), BIGEMINY
  (3 cycles of non-V/V), TRIGEMINY (3 cycles of 2 non-V then V), BRADY_EXTREME (every interval of
  5 consecutive beats < 40 bpm), TACHY_EXTREME (every interval of 17 beats > 140 bpm), PAUSE (RR > 3 s).
  VT counts strict V beats (`Beat.rhythm_label`: the rule's V call not vetoed), as do AF's ectopic
  intervals; COUPLET, BIGEMINY and TRIGEMINY count the reported labels (`Beat.label`);
* VF (signal organisation, `vigil.signal.vf`, independent of the beats);
* ASYSTOLE: no beat for ≥ 4 s, and over the last 4 s no second whose noise could hide a QRS
  (lead_off, flatline, saturation, or noise not marked `wander`/`qrs_visible`), no QRS-sized
  deflection (a swing within 120 ms > 30 % of the recent QRS amplitude; the last beat's QRS and T
  wave excluded) and a settled line (whole excursion < 60 % of that amplitude): never while complexes
  are present;
* NOISE: poor signal quality; suppresses beat-based calls.  Lead-off/flatline never yields
  ASYSTOLE or VF (it is a technical condition).

Open episodes (end=None) are emitted as soon as the criterion is met; the closed episode follows.
Memory is bounded (fixed-size deques).  No I/O, no clock.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vigil.model import Beat, QualityReport, RhythmEpisode, RhythmLabel
from vigil.signal.af import AfDetector
from vigil.signal.pwave import (
    CLEAR_CORRELATION,
    MIN_CORRELATION,
    PR_FROM_S,
    PR_TO_S,
    centre_row,
    score_centred,
)
from vigil.signal.quality import QRS_HALF_S, obscures_qrs
from vigil.signal.small import median
from vigil.signal.vf import VfDetector
from vigil.signal.window import SlidingWindow

log = logging.getLogger(__name__)

BASE_LABELS: tuple[RhythmLabel, ...] = ("SINUS", "BRADY", "TACHY", "AF")
BEAT_OVERLAYS: tuple[RhythmLabel, ...] = ("VT", "BIGEMINY", "TRIGEMINY", "BRADY_EXTREME", "TACHY_EXTREME", "PAUSE")
TECHNICAL_FLAGS = frozenset({"lead_off", "flatline"})
POOR_FLAGS = frozenset({"lead_off", "flatline", "saturation", "noise"})
POOR_QUALITY = 0.5
ASYSTOLE_S = 4.0
PAUSE_S = 3.0
QUIET_FRACTION = 0.3  # a swing within 120 ms above this fraction of the QRS amplitude is a complex
SETTLED_FRACTION = 0.6  # ASYSTOLE needs the whole window within this fraction of the QRS amplitude
REPOLARISATION_S = 0.7  # the last beat's QRS and T wave (QT up to ~700 ms) are not "a complex since the last beat"
BUFFER_S = 12.0
PR_KEEP = 12  # PR regions of recent normal beats kept for the P-wave check
MIN_QRS_UV = 150.0  # smaller "complexes" are not counted (EC13/AACN: QRS < 0.15 mV must not be counted)
UNLEARNED_QRS_UV = 200.0  # largest deflection (µV) accepted as "no QRS" before any QRS size is known
ECTOPIC = frozenset({"V", "F", "Q"})  # intervals touching these are not used for AF


def largest_local_swing(x: np.ndarray, width: int) -> float:
    """Largest peak-to-peak of `x` within any `width` consecutive samples (a QRS-sized deflection test).

    Measured like the QRS amplitudes it is compared with (peak-to-peak within ±60 ms of R), so that a
    slow baseline drift or step recovery, which moves far only over seconds, is not taken for a complex.
    """
    if len(x) <= width:
        return float(np.ptp(x)) if len(x) else 0.0
    win = sliding_window_view(x, width)
    return float((win.max(axis=1) - win.min(axis=1)).max())


class RhythmTracker:
    """Per-channel rhythm state machine; `update` once per analyser feed."""

    def __init__(self, fs: float, channel: str = "ecg") -> None:
        """Create a tracker for a channel sampled at `fs` Hz."""
        self.fs = float(fs)
        self.channel = channel
        self._af = AfDetector(self.fs)
        self._vf = VfDetector(self.fs)
        self._open: dict[str, int] = {}
        self._beats: deque[Beat] = deque(maxlen=20)
        self._v_run: list[int] = []  # strict V beats (Beat.rhythm_label): VT evidence
        self._c_run: list[int] = []  # V beats by the reported label: couplets
        self._hr_rr: deque[float] = deque(maxlen=8)
        self._base_rate: RhythmLabel | None = None
        # signal ring buffer (band-passed), absolute index of its first sample
        self._sig = SlidingWindow(int(BUFFER_S * self.fs))  # the newest sample is last
        self._sig_n = 0  # valid samples at the end of `_sig`
        self._sig_end: int | None = None
        self._signal_seen = False
        self._first_sample: int | None = None
        self._pr_segments: SlidingWindow | None = None  # the last PR_KEEP PR regions, each minus its median
        self._pr_count = 0
        self._qrs_amp: deque[float] = deque(maxlen=12)
        self._p_present: bool | None = None  # P waves present enough to veto an AF onset
        self._p_clear = False  # P waves clearly present (ends an ongoing AF episode)
        self._p_scores: deque[float] = deque(maxlen=8)
        self._last_end: dict[str, int] = {}
        self._resume = -(2**62)  # beats before this sample (the end of the last gap) are ignored
        self._pause_for: int | None = None  # last beat whose pause has been reported
        self._poor_run = 0
        self._good_run = 0
        self._last_technical_end = -1
        self._last_unreadable_end = -1  # end of the last second whose noise could hide a QRS
        self._last_poor_end = -1  # end of the last poor-quality second
        self._out: list[RhythmEpisode] = []

    # ------------------------------------------------------------------ public
    def update(self, *, beats: list[Beat], upto: int, signal: np.ndarray | None, signal_start: int,
               quality: list[QualityReport]) -> list[RhythmEpisode]:
        """Consume new beats/signal/quality; return episode updates (open ones have end=None)."""
        self._out = []
        for q in quality:
            self._on_quality(q)
        if signal is not None and len(signal):
            self._on_signal(np.asarray(signal, dtype=float), signal_start)
        for b in beats:
            self._on_beat(b)
        self._on_time(upto)
        return self._out

    def close(self, upto: int) -> list[RhythmEpisode]:
        """Close every open episode at `upto` (end of stream)."""
        self._out = []
        for label in list(self._open):
            self._close(label, upto)  # type: ignore[arg-type]
        return self._out

    @property
    def open_labels(self) -> set[str]:
        """Labels of the episodes currently open."""
        return set(self._open)

    # ------------------------------------------------------------------ episodes
    def _emit_open(self, label: RhythmLabel, start: int) -> None:
        if label in self._open:
            return
        start = max(start, self._last_end.get(label, start))  # back-dated starts never overlap the last one
        self._open[label] = start
        self._out.append(RhythmEpisode(label, start, None, self.channel))

    def _close(self, label: RhythmLabel, end: int) -> None:
        start = self._open.pop(label, None)
        if start is None:
            return
        end = max(end, start + 1)
        self._last_end[label] = end
        self._out.append(RhythmEpisode(label, start, end, self.channel))

    def _close_beat_rhythms(self, end: int, keep_pause: bool = False) -> None:
        for label in BASE_LABELS + BEAT_OVERLAYS:
            if not (keep_pause and label == "PAUSE"):
                self._close(label, end)
        self._base_rate = None
        self._v_run = []
        self._c_run = []

    def _restart_af(self) -> None:
        """The AF episode (if any) has been closed: AF must be detected afresh to be reported again.

        Keeping the detector active here would leave AF undetected (and no rate rhythm reported)
        until its irregularity first fell below the off threshold.
        """
        self._af.reset()
        self._af.active = False

    def _suppressed(self) -> bool:
        return any(k in self._open for k in ("VF", "ASYSTOLE", "NOISE"))

    # ------------------------------------------------------------------ quality
    def _on_quality(self, q: QualityReport) -> None:
        flags = set(q.flags)
        if obscures_qrs(flags):
            self._last_unreadable_end = max(self._last_unreadable_end, q.sample)
        if flags & TECHNICAL_FLAGS:
            self._last_technical_end = max(self._last_technical_end, q.sample)
            self._close("ASYSTOLE", q.sample - int(self.fs))
            if "VF" in self._open:
                self._close("VF", q.sample - int(self.fs))
        poor = bool(flags & POOR_FLAGS) or q.quality < POOR_QUALITY
        if poor:
            self._last_poor_end = max(self._last_poor_end, q.sample)
            self._poor_run += 1
            self._good_run = 0
            if self._poor_run >= 2 and "NOISE" not in self._open and "VF" not in self._open:
                start = q.sample - 2 * int(self.fs)
                self._close_beat_rhythms(start)
                self._emit_open("NOISE", start)
                self._restart_af()
        else:
            self._good_run += 1
            self._poor_run = 0
            if self._good_run >= 3 and "NOISE" in self._open:
                self._close("NOISE", q.sample - 3 * int(self.fs))
                self._beats.clear()
                self._hr_rr.clear()

    # ------------------------------------------------------------------ signal
    def _on_signal(self, x: np.ndarray, start: int) -> None:
        if self._first_sample is None:
            self._first_sample = start
        if self._sig_end is not None and start != self._sig_end:
            self._on_gap(self._sig_end, start)
        cap = self._sig.cap
        self._sig.append(x)
        self._sig_n = min(cap, self._sig_n + len(x))
        self._sig_end = start + len(x)
        self._signal_seen = True
        for d in self._vf.feed(x, start):
            technical = self._last_technical_end > d.sample
            if d.active and not technical:
                self._close_beat_rhythms(d.sample)
                self._close("ASYSTOLE", d.sample)
                self._close("NOISE", d.sample)
                self._emit_open("VF", d.sample)
                self._restart_af()
            elif not d.active:
                self._close("VF", d.sample)
                self._beats.clear()
                self._hr_rr.clear()

    def _on_gap(self, old_end: int, new_start: int) -> None:
        """A jump in the sample numbering: close everything at the gap and start afresh after it."""
        for label in list(self._open):
            self._close(label, old_end)  # type: ignore[arg-type]
        self._sig_n = 0
        self._vf = VfDetector(self.fs)
        self._beats.clear()
        self._hr_rr.clear()
        self._v_run = []
        self._c_run = []
        self._base_rate = None
        self._af.reset()
        self._af.active = False
        self._pause_for = None
        self._pr_count = 0
        self._p_scores.clear()
        self._poor_run = self._good_run = 0
        self._first_sample = new_start
        self._resume = new_start

    def _segment(self, lo: int, hi: int) -> np.ndarray | None:
        """Buffered signal [lo, hi) or None when not (fully) buffered."""
        if self._sig_end is None:
            return None
        first = self._sig_end - self._sig_n
        if lo < first or hi > self._sig_end or hi <= lo:
            return None
        cap = self._sig.cap
        return self._sig.view[cap - (self._sig_end - lo):cap - (self._sig_end - hi)]

    def _collect_beat_shape(self, b: Beat, prev: Beat | None) -> None:
        """Keep the QRS amplitude of every beat and the PR region of normal beats (P-wave check)."""
        w = int(QRS_HALF_S * self.fs)
        qrs = self._segment(b.sample - w, b.sample + w)
        if qrs is not None:
            self._qrs_amp.append(float(qrs.max() - qrs.min()))
        if b.rhythm_label not in ("N", "S") or prev is None or b.sample - prev.sample < (PR_FROM_S + 0.4) * self.fs:
            return
        lo = b.sample - int(PR_FROM_S * self.fs)
        hi = b.sample - int(PR_TO_S * self.fs)
        seg = self._segment(lo, hi)
        if seg is None or not self._qrs_amp:
            return
        if self._pr_segments is None:
            self._pr_segments = SlidingWindow(PR_KEEP, len(seg))
        self._pr_segments.append(centre_row(seg)[None, :])
        self._pr_count = min(PR_KEEP, self._pr_count + 1)
        if self._pr_count >= 8:
            score = score_centred(self._pr_segments.view[PR_KEEP - self._pr_count:], median(self._qrs_amp))
            if score is not None:
                self._p_scores.append(score)
            if len(self._p_scores) >= 4:
                typical = median(self._p_scores)  # median of the last 8 assessments
                self._p_present = typical >= MIN_CORRELATION
                self._p_clear = typical >= CLEAR_CORRELATION

    # ------------------------------------------------------------------ beats
    def _on_beat(self, b: Beat) -> None:
        prev = self._beats[-1] if self._beats else None
        if (prev is not None and b.sample <= prev.sample) or b.sample < self._resume:
            return  # out of order, or from before a gap
        was_asystole = "ASYSTOLE" in self._open
        self._close("ASYSTOLE", b.sample)
        if prev is not None and b.sample - prev.sample > PAUSE_S * self.fs and "VF" not in self._open:
            if "PAUSE" not in self._open and self._pause_for != prev.sample:
                self._open["PAUSE"] = prev.sample
            self._close("PAUSE", b.sample)
            self._pause_for = prev.sample
        self._collect_beat_shape(b, prev)
        if was_asystole:  # rhythm restarts from this beat
            self._beats.clear()
            self._hr_rr.clear()
            self._af.reset()
        self._beats.append(b)
        if prev is None or was_asystole or self._suppressed():
            return
        rr = (b.sample - prev.sample) / self.fs
        self._hr_rr.append(rr)
        self._ventricular(b)
        self._patterns(b)
        self._extremes(b)
        if prev.rhythm_label not in ECTOPIC and b.rhythm_label not in ECTOPIC:
            d = self._af.add_interval(rr, b.sample)
            if d is not None and d.active and self._p_present:
                d = None  # clear P waves: not AF (keep irregularity state)
                self._af.active = False
            if d is not None:
                if d.active:
                    for label in ("SINUS", "BRADY", "TACHY"):
                        if label in self._open:  # never before that episode's own start
                            self._close(label, max(d.sample, self._open[label] + 1))  # type: ignore[arg-type]
                    self._base_rate = None
                    self._emit_open("AF", d.sample)
                else:
                    self._close("AF", d.sample)
        if self._af.active and self._p_clear and "AF" in self._open:
            self._close("AF", b.sample)
            self._af.active = False
        if not self._af.active:
            self._rate_base(b)

    def _rate_base(self, b: Beat) -> None:
        if len(self._hr_rr) < 4:
            return
        hr = 60.0 / median(self._hr_rr)
        cur = self._base_rate
        if cur == "BRADY":
            new: RhythmLabel = "BRADY" if hr < 53 else ("TACHY" if hr > 100 else "SINUS")
        elif cur == "TACHY":
            new = "TACHY" if hr > 97 else ("BRADY" if hr < 50 else "SINUS")
        else:
            new = "BRADY" if hr < 50 else ("TACHY" if hr > 100 else "SINUS")
        if new != cur or new not in self._open:
            start = self._beats[max(0, len(self._beats) - 1 - len(self._hr_rr) // 2)].sample
            if cur is not None:
                self._close(cur, start)
            self._base_rate = new
            self._emit_open(new, start)

    def _ventricular(self, b: Beat) -> None:
        """VT from runs of strict V beats (`Beat.rhythm_label`); couplets from the reported labels."""
        self._couplet(b)
        if b.rhythm_label == "V":
            self._v_run.append(b.sample)
            run = self._v_run
            if len(run) >= 5 and "VT" not in self._open:
                rate = 60.0 * (len(run) - 1) * self.fs / (run[-1] - run[0])
                if rate > 100.0 and self._last_poor_end <= run[0] and self._countable(len(run)):
                    self._emit_open("VT", run[0])  # not on a stretch flagged noisy, nor on tiny "complexes"
            return
        run = self._v_run
        if "VT" in self._open and run:
            self._close("VT", run[-1])
        self._v_run = []

    def _couplet(self, b: Beat) -> None:
        """COUPLET: exactly two consecutive beats labelled V (the reported label, like bigeminy/trigeminy)."""
        if b.label == "V":
            self._c_run.append(b.sample)
            return
        run = self._c_run
        if len(run) == 2:
            self._open["COUPLET"] = run[0]
            self._close("COUPLET", run[1])
        self._c_run = []

    def _countable(self, n: int) -> bool:
        """The last `n` beats are QRS-sized: median peak-to-peak ≥ `MIN_QRS_UV` (True without the signal)."""
        if not self._signal_seen or not self._qrs_amp:
            return True
        recent = list(self._qrs_amp)[-min(n, len(self._qrs_amp)):]
        return median(recent) >= MIN_QRS_UV

    def _patterns(self, b: Beat) -> None:
        labels = "".join("V" if x.label == "V" else ("Q" if x.label == "Q" else "N") for x in self._beats)  # reported labels
        for name, unit, n in (("BIGEMINY", "NV", 6), ("TRIGEMINY", "NNV", 9)):
            tail = labels[-n:]
            ok = len(tail) == n and any(tail == (unit * 4)[k:k + n] for k in range(len(unit)))
            if ok and name not in self._open:
                self._emit_open(name, self._beats[-n].sample)  # type: ignore[arg-type]
            elif not ok and name in self._open:
                self._close(name, self._beats[-2].sample)  # type: ignore[arg-type]

    def _extremes(self, b: Beat) -> None:
        """Every interval of the last 5 beats < 40 bpm / of the last 17 beats > 140 bpm (CinC 2015)."""
        beats = self._beats
        for name, n, test in (("BRADY_EXTREME", 5, lambda rr: rr > 60.0 / 40.0),
                              ("TACHY_EXTREME", 17, lambda rr: rr < 60.0 / 140.0)):
            if len(beats) < n:
                continue
            samples = [beats[i].sample for i in range(len(beats) - n, len(beats))]
            ok = all(test((samples[i + 1] - samples[i]) / self.fs) for i in range(n - 1))
            if ok:
                self._emit_open(name, samples[0])  # type: ignore[arg-type]
            elif name in self._open:
                self._close(name, beats[-2].sample)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ time
    def _on_time(self, upto: int) -> None:
        last = self._beats[-1].sample if self._beats else None
        if "VF" in self._open or "ASYSTOLE" in self._open:
            return
        if (last is not None and upto - last > PAUSE_S * self.fs and "NOISE" not in self._open
                and self._pause_for != last):
            self._emit_open("PAUSE", last)
            self._pause_for = last
        if not self._signal_seen:
            return  # without the signal a connected, non-flat lead cannot be confirmed
        if last is None:
            if self._first_sample is None:
                return
            ref = self._first_sample + int(ASYSTOLE_S * self.fs)  # allow the detector to learn first
        else:
            ref = last
        need = int(ASYSTOLE_S * self.fs)
        if upto - ref < need:
            return
        # the definition: no QRS for 4 s — so the last 4 s must be free of technical flags and of any
        # QRS-sized deflection (complexes the detector missed before that do not hold the call back)
        window = max(ref, upto - need)
        if max(self._last_technical_end, self._last_unreadable_end) > window or not self._quiet(window, upto):
            return
        start = ref if window == ref or self._quiet(ref, window) else window
        self._close_beat_rhythms(start, keep_pause=True)
        self._close("NOISE", start)
        self._emit_open("ASYSTOLE", start)
        self._restart_af()

    def _quiet(self, lo: int, hi: int) -> bool:
        """True when no QRS-sized deflection is in the signal in [lo, hi), the last beat's QRS and T excluded."""
        last = self._beats[-1].sample if self._beats else None
        if last is not None:
            lo = max(lo, last + int(REPOLARISATION_S * self.fs))
        hi = min(hi, self._sig_end or hi)
        if hi <= lo:
            return True  # nothing after the last beat's T wave to check
        seg = self._segment(max(lo, (self._sig_end or hi) - self._sig_n), hi)
        if seg is None or not len(seg):
            return False
        amp = largest_local_swing(seg, 2 * int(QRS_HALF_S * self.fs))
        ref_amp = median(self._qrs_amp) if self._qrs_amp else None
        if ref_amp is None or ref_amp <= 0:
            return amp < UNLEARNED_QRS_UV  # no learned QRS size: absolute floor
        # no complex (a QRS-sized swing within 120 ms), and a settled line: a whole excursion under
        # SETTLED_FRACTION of a QRS (an amplifier still recovering from a step shows no complexes either)
        return amp < QUIET_FRACTION * ref_amp and float(seg.max() - seg.min()) < SETTLED_FRACTION * ref_amp
