"""Streaming QT/QTc on a median beat of the clean beats of the last ~30 s.

Every `EMIT_EVERY_S` the clean beats of the last `WINDOW_S` (normal beats between normal beats, the
next one not premature, RR within ±15 % of the median) are aligned on their dominant QRS
peak and combined into a sample-wise median beat, which is delineated by `vigil.signal.delineate`
(QRS onset by slope threshold, T end by Zhang's trapezium area).  QT = T end − QRS onset.

QTc formulas (RR in s, QT in ms):
  Fridericia QT/RR^(1/3) (default; Fridericia 1920), Bazett QT/RR^(1/2) (Bazett 1920),
  Framingham QT + 154 (1 − RR) (Sagie et al., Am. J. Cardiol. 70 (1992) 797),
  Hodges QT + 1.75 (HR − 60) (Hodges et al., J. Am. Coll. Cardiol. 1 (1983) 694).

Withheld (value NaN, detail {"withheld": reason}) when HR > 150 ("hr>150"), when RR is unstable
("rr_unstable": coefficient of variation of the N-N intervals > 0.15, or too few clean beats),
when quality is poor ("poor_quality"), when delineation fails ("delineation_failed") or when the
T end is uncertain ("t_end_uncertain"): the Zhang T end and the wavelet T end (Martínez et al.
2004) of the median beat differ by more than `WAVELET_AGREE_MS`, or the median beats of the odd and
of the even beats put the T end more than `SPLIT_HALF_MS` apart (flat, low or noisy T waves, a
second wave competing with T).  With two leads (`raw` of shape (n, 2)) QT is the mean of the leads'
QT, every delineated lead must pass both checks and their T ends must lie within `LEAD_AGREE_MS`.
The limits are the median of the limits chosen in a 5-fold cross-validation over the qtdb records
(lead 0 for the two checks, both leads for the lead limit; `python -m vigil.evaluation.eval_qt
[--lead 0]`, section "confidence rule", which also prints the held-out errors and coverage).
"""

from __future__ import annotations

import logging
import math
from collections import deque

import numpy as np

from vigil.model import Beat, Measurement, Metric, QualityReport
from vigil.signal.delineate import Delineation, delineate, refine_r
from vigil.signal.window import SlidingWindow

log = logging.getLogger(__name__)

WINDOW_S = 30.0
EMIT_EVERY_S = 10.0
MIN_BEATS = 8
BEFORE_S = 0.3
AFTER_S = 0.75
RR_CV_MAX = 0.15
HR_MAX = 150.0
POOR_FRACTION_MAX = 0.3
POOR_FLAGS = frozenset({"lead_off", "flatline", "saturation", "noise"})
WAVELET_AGREE_MS = 40.0  # |Zhang T end − wavelet T end| above this: T end uncertain
SPLIT_HALF_MS = 60.0  # |T end of the odd-beat median − of the even-beat median| above this: uncertain
LEAD_AGREE_MS = 80.0  # two leads: their T ends may differ at most this much
MAX_LEADS = 2


def qtc_all(qt_ms: float, rr_s: float) -> dict[str, float]:
    """QTc by Fridericia, Bazett, Framingham and Hodges (ms) from QT (ms) and RR (s)."""
    hr = 60.0 / rr_s
    return {
        "qtc_fridericia": qt_ms / rr_s ** (1.0 / 3.0),
        "qtc_bazett": qt_ms / rr_s ** 0.5,
        "qtc_framingham": qt_ms + 154.0 * (1.0 - rr_s),
        "qtc_hodges": qt_ms + 1.75 * (hr - 60.0),
    }


def t_end_checks(windows: np.ndarray, r: int, fs: float, rr_s: float) -> tuple[Delineation | None, dict[str, float]]:
    """Delineate the median of `windows` (beats × samples, R near index `r`) and measure T-end doubt.

    Returns the delineation and {"t_end_wavelet_diff_ms": |Zhang − wavelet T end|,
    "t_end_split_half_ms": |T end of the odd-beat median − even-beat median|} (inf when a part fails).
    """
    w = np.asarray(windows, dtype=float)
    d = delineate(np.median(w, axis=0), r, fs, rr_s)
    if d is None:
        return None, {}
    ms = 1000.0 / fs
    wdiff = abs(d.t_end - d.t_end_wavelet) * ms if d.t_end_wavelet >= 0 else math.inf
    split = math.inf
    if len(w) >= 4:
        halves = [delineate(np.median(w[j::2], axis=0), r, fs, rr_s) for j in (0, 1)]
        if halves[0] is not None and halves[1] is not None:
            split = abs(halves[0].t_end - halves[1].t_end) * ms
    return d, {"t_end_wavelet_diff_ms": wdiff, "t_end_split_half_ms": split}


def t_end_uncertain(checks: dict[str, float], wavelet_ms: float = WAVELET_AGREE_MS,
                    split_ms: float = SPLIT_HALF_MS) -> bool:
    """True when the T-end checks of `t_end_checks` exceed their limits (QT is then withheld)."""
    return (checks.get("t_end_wavelet_diff_ms", math.inf) > wavelet_ms
            or checks.get("t_end_split_half_ms", math.inf) > split_ms)


class QtMeasurer:
    """Per-channel streaming QT/QTc; `update` once per analyser feed."""

    def __init__(self, fs: float, channel: str = "ecg") -> None:
        """Create a measurer for a channel sampled at `fs` Hz."""
        self.fs = float(fs)
        self.channel = channel
        self._before = int(BEFORE_S * self.fs)
        self._after = int(AFTER_S * self.fs)
        k = max(1, int(round(0.012 * self.fs)) | 1)  # odd boxcar ~12 ms (first zero near 80 Hz)
        self._box = np.full(k, 1.0 / k)
        self._cap = int((self._before + self._after) + 2 * self.fs) + int(4 * self.fs)
        self._buf = SlidingWindow(self._cap, 1)  # samples × leads; the lead count follows the first block
        self._buf_end: int | None = None  # absolute index one past the last buffered sample
        self._n = 0  # valid samples in the buffer
        # beats whose window is not cut yet: beat, RR before, previous label, RR after, next label
        self._pending: deque[tuple[Beat, float | None, str, float | None, str]] = deque()
        self._windows: deque[tuple[int, np.ndarray, float, bool]] = deque()  # sample, window, rr, clean
        self._last_beat: Beat | None = None
        self._poor: deque[tuple[int, bool]] = deque()
        self._next_emit: int | None = None

    # ------------------------------------------------------------------ public
    def update(self, *, beats: list[Beat], raw: np.ndarray, raw_start: int, upto: int,
               quality: list[QualityReport]) -> list[Measurement]:
        """Consume new beats/samples/quality; return QT and QTc measurements (or withheld NaNs).

        `raw` is 1-D (one lead) or (n, leads) (up to `MAX_LEADS`; the first lead aligns the beats).
        """
        x = np.asarray(raw, dtype=float)
        self._append(x.reshape(len(x), -1)[:, :MAX_LEADS], raw_start)
        for q in quality:
            poor = bool(set(q.flags) & POOR_FLAGS) or q.quality < 0.5
            self._poor.append((q.sample, poor))
        for b in beats:
            if self._last_beat is not None and b.sample <= self._last_beat.sample:
                continue
            rr = (b.sample - self._last_beat.sample) / self.fs if self._last_beat is not None else None
            prev = self._last_beat.label if self._last_beat is not None else "Q"
            if self._pending and rr is not None:  # the previous beat now knows what follows it
                pb, prr, pprev, _, _ = self._pending[-1]
                self._pending[-1] = (pb, prr, pprev, rr, b.label)
            self._pending.append((b, rr, prev, None, "Q"))
            self._last_beat = b
        self._take_windows()
        horizon = (self._buf_end or upto) - int(WINDOW_S * self.fs)
        while self._windows and self._windows[0][0] < horizon:
            self._windows.popleft()
        while self._poor and self._poor[0][0] < horizon:
            self._poor.popleft()
        if self._next_emit is None:
            self._next_emit = upto + int(EMIT_EVERY_S * self.fs)
        if upto < self._next_emit:
            return []
        self._next_emit = upto + int(EMIT_EVERY_S * self.fs)
        return self._measure(upto)

    # ------------------------------------------------------------------ buffering
    def _append(self, x: np.ndarray, start: int) -> None:
        if len(x) == 0:
            return
        if x.shape[1] != self._buf.width:  # first block (or the lead count changed): start afresh
            self._buf = SlidingWindow(self._cap, x.shape[1])
            self._n = 0
            self._windows.clear()
        if self._buf_end is not None and start != self._buf_end:  # gap: forget everything
            self._n = 0
            self._pending.clear()
            self._windows.clear()
            self._last_beat = None
        cap = self._buf.cap
        self._buf.append(x)
        self._n = min(cap, self._n + len(x))
        self._buf_end = start + len(x)

    def _segment(self, lo: int, hi: int) -> np.ndarray | None:
        if self._buf_end is None:
            return None
        first = self._buf_end - self._n
        if lo < first or hi > self._buf_end:
            return None
        cap = self._buf.cap
        return self._buf.view[cap - (self._buf_end - lo):cap - (self._buf_end - hi)].copy()

    def _take_windows(self) -> None:
        """Cut the analysis window of each pending beat once its samples are buffered."""
        end = self._buf_end
        while self._pending and end is not None:
            b, rr, prev, rr_next, nxt = self._pending[0]
            margin = int(0.05 * self.fs)
            lo, hi = b.sample - self._before - margin, b.sample + self._after + margin
            if hi > end or (rr_next is None and hi + int(3 * self.fs) > end):  # wait for the next beat ≤ 3 s
                break
            self._pending.popleft()
            seg = self._segment(lo, hi)
            if seg is None or rr is None:
                continue
            lp = np.convolve(seg[:, 0], self._box, mode="same")  # cheap zero-phase smoothing for alignment
            r = refine_r(lp, self._before + margin, self.fs, 0.04)
            w = seg[r - self._before:r + self._after]
            if len(w) != self._before + self._after:
                continue
            # clean: N between N beats, and the next beat not early (it would fall into the T wave)
            clean = (b.label == "N" and prev == "N" and nxt == "N" and rr_next is not None
                     and rr_next >= 0.85 * rr)
            self._windows.append((b.sample, w, rr, clean))

    # ------------------------------------------------------------------ measuring
    def _withheld(self, reason: str, sample: int, extra: dict[str, float] | None = None) -> list[Measurement]:
        detail: dict[str, object] = {"withheld": reason, "formula": "fridericia"}
        if extra:
            detail.update(extra)
        return [Measurement(Metric.QT, float("nan"), sample, self.channel, dict(detail)),
                Measurement(Metric.QTC, float("nan"), sample, self.channel, dict(detail))]

    def _measure(self, upto: int) -> list[Measurement]:
        sample = self._windows[-1][0] if self._windows else upto
        if self._poor and sum(p for _, p in self._poor) > POOR_FRACTION_MAX * len(self._poor):
            return self._withheld("poor_quality", sample)
        rrs = np.array([w[2] for w in self._windows]) if self._windows else np.array([])
        if len(rrs) >= 2:
            hr = 60.0 / float(np.median(rrs))
            if hr > HR_MAX:
                return self._withheld("hr>150", sample, {"hr_bpm": round(hr, 1)})
        clean = [w for w in self._windows if w[3]]
        if len(clean) < MIN_BEATS or len(rrs) < MIN_BEATS:
            return self._withheld("rr_unstable" if len(rrs) >= MIN_BEATS else "too_few_beats", sample)
        nn = np.array([w[2] for w in clean])  # N-N intervals: ectopic beats do not make sinus RR unstable
        cv = float(np.std(nn) / np.mean(nn))
        if cv > RR_CV_MAX:
            return self._withheld("rr_unstable", sample, {"rr_cv": round(cv, 3)})
        rr_med = float(np.median([w[2] for w in clean]))
        stable = [w for w in clean if abs(w[2] - rr_med) <= 0.15 * rr_med]
        if len(stable) < MIN_BEATS:
            return self._withheld("rr_unstable", sample)
        stack = np.stack([w[1] for w in stable])  # beats × samples × leads
        found = [t_end_checks(stack[:, :, k], self._before, self.fs, rr_med) for k in range(stack.shape[2])]
        ok = [(d, c) for d, c in found if d is not None]  # leads that could not be delineated are left out
        if not ok:
            return self._withheld("delineation_failed", sample)
        ms = 1000.0 / self.fs
        qt_ms = float(np.mean([(d.t_end - d.qrs_on) * ms for d, _ in ok]))
        if not 200.0 <= qt_ms <= 700.0:
            return self._withheld("delineation_failed", sample, {"qt_ms": round(qt_ms, 1)})
        checks = {k: max(c.get(k, math.inf) for _, c in ok) for k in ("t_end_wavelet_diff_ms", "t_end_split_half_ms")}
        ends = [d.t_end for d, _ in ok]
        lead_diff = (max(ends) - min(ends)) * ms
        doubt = {k: round(v, 1) for k, v in checks.items() if math.isfinite(v)}
        if stack.shape[2] > 1:
            doubt.update(leads=float(len(ok)), t_end_lead_diff_ms=round(lead_diff, 1))
        if t_end_uncertain(checks) or lead_diff > LEAD_AGREE_MS:
            return self._withheld("t_end_uncertain", sample, {"qt_ms": round(qt_ms, 1), **doubt})
        rr_s = float(np.median([w[2] for w in stable]))
        qtc = qtc_all(qt_ms, rr_s)
        detail = {"formula": "fridericia", "qt_ms": round(qt_ms, 1), "rr_ms": round(rr_s * 1000.0, 1),
                  "beats": len(stable), **doubt, **{k: round(v, 1) for k, v in qtc.items()}}
        return [Measurement(Metric.QT, qt_ms, sample, self.channel, dict(detail)),
                Measurement(Metric.QTC, qtc["qtc_fridericia"], sample, self.channel, dict(detail))]
