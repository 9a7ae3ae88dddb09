"""Streaming QRS detector: Pan–Tompkins with adaptive thresholds, searchback, refractory period
and T-wave discrimination by slope, fusing one or two leads.

References
----------
J. Pan, W. J. Tompkins, "A real-time QRS detection algorithm", IEEE Trans. Biomed. Eng. 32(3)
(1985) 230-236 — band-pass 5–15 Hz, five-point derivative, squaring, 150 ms moving-window
integration, signal/noise peak estimates SPKI/NPKI, THRESHOLD1 = NPKI + 0.25 (SPKI − NPKI),
searchback at 166 % of the mean RR (here at most 1 s past the expected beat) with THRESHOLD2 = THRESHOLD1 / 2, 200 ms refractory period,
T-wave test (slope < ½ of the previous QRS within 360 ms).
P. S. Hamilton, W. J. Tompkins, "Quantitative investigation of QRS detection rules using the
MIT/BIH arrhythmia database", IEEE Trans. Biomed. Eng. 33(12) (1986) 1157-1165 — median RR for the
searchback interval.

Streaming design
----------------
Every stage is causal and keeps its state (``vigil.signal.filters``), so any block split gives the
same detections.  Candidate peaks of the integrated signal are local maxima over ±100 ms (decided
100 ms after the sample arrives); each candidate is then classified in index order.  A searchback
is run when the next candidate (or the decided horizon) passes its deadline, which depends only on
sample indices — never on where a block ended.  Two leads are fused by normalising each lead's
squared derivative by its own running mean energy (4 s) and summing, so a noisy lead weighs less.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vigil.signal import filters
from vigil.signal.small import median

FloatArray = npt.NDArray[np.float64]

LEARN_S = 2.0  # initial learning period (Pan-Tompkins): the longest it lasts
QUICK_MIN_S = 0.75  # the learning period may end this early, on clear evidence of a QRS (see `_quick_end`)
QUICK_STEP_S = 0.05  # ... at sample indices origin + QUICK_MIN_S + k·QUICK_STEP_S (block-split invariant)
QUICK_RATIO = 4.0  # evidence: a candidate peak at least this many times the window's mean integrator level
REFRACTORY_S = 0.200
TWAVE_S = 0.360
NEIGHBOUR_S = 0.100  # a candidate is the maximum within ±100 ms
SEARCHBACK_RR = 1.66
SEARCHBACK_LATE_S = 1.0  # searchback runs at most 1 s after the expected beat (latency bound, slow rates)
BUFFER_S = 6.0  # ring-buffer length of the detection signals
FUSION_MEAN = 0.5  # weight of the arithmetic mean beside the geometric mean when fusing leads


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected QRS: R-peak sample, integrator peak index, peak height and slope."""

    sample: int  # R-peak (fiducial) in stream numbering
    peak_index: int  # index of the integrator maximum
    height: float
    slope: float
    searchback: bool
    due: int = 0  # first sample at which the detector's rules let it accept this QRS (see `_accept`)


class Ring:
    """A bounded float buffer addressed by absolute sample index.

    Holds between `capacity` and 2·`capacity` samples: once an append passes 2·`capacity`, the
    oldest are dropped down to `capacity`.  Storage is preallocated and compacted only when its end
    is reached, so an append copies just the new samples; `get` returns a view that stays valid
    until the next `append`.
    """

    def __init__(self, capacity: int) -> None:
        """Create an empty ring holding at most `capacity` samples (trimmed lazily)."""
        self.capacity = capacity
        self._buf = np.zeros(4 * max(1, capacity))
        self._lo = 0  # the held samples are _buf[_lo:_hi]
        self._hi = 0
        self.start = 0  # absolute index of data[0]

    @property
    def data(self) -> FloatArray:
        """The held samples (a view)."""
        return self._buf[self._lo:self._hi]

    @property
    def end(self) -> int:
        """Absolute index one past the last sample."""
        return self.start + self._hi - self._lo

    def reset(self, start: int) -> None:
        """Empty the buffer; the next sample will have index `start`."""
        self._lo = self._hi = 0
        self.start = start

    def append(self, x: FloatArray) -> None:
        """Append samples, dropping the oldest beyond twice the capacity."""
        k = len(x)
        held = self._hi - self._lo
        if self._hi + k > len(self._buf):  # move the held samples to the front (grow for huge blocks)
            if held + k > len(self._buf):
                buf = np.zeros(2 * (held + k))
                buf[:held] = self._buf[self._lo:self._hi]
                self._buf = buf
            else:
                self._buf[:held] = self._buf[self._lo:self._hi]
            self._lo, self._hi = 0, held
        self._buf[self._hi:self._hi + k] = x
        self._hi += k
        if held + k > 2 * self.capacity:
            drop = held + k - self.capacity
            self._lo += drop
            self.start += drop

    def get(self, a: int, b: int) -> FloatArray:
        """Samples with absolute indices [a, b), clipped to what is held (a view)."""
        a = max(a, self.start)
        b = min(b, self.end)
        if b <= a:
            return np.zeros(0)
        return self._buf[self._lo + a - self.start:self._lo + b - self.start]


class QrsDetector:
    """Streaming Pan–Tompkins detector over one or two leads (see module docstring)."""

    def __init__(self, fs: float, n_leads: int = 1, *, quick_start: bool = False, quick_from_s: float = 0.0,
                 quick_after_s: float = 0.0, quick_ratio: float = QUICK_RATIO, quick_floor: float = 0.0) -> None:
        """Create a detector for `n_leads` leads at `fs` Hz; `quick_start` lets learning end early (see `_quick_end`).

        `quick_from_s`: evidence peaks earlier than this after the origin are not counted (a T wave of a
        beat just before the start can otherwise be taken for the first QRS); `quick_after_s`: the evidence
        peak (the window's largest) must lie at least this long before the checkpoint; `quick_ratio`: see
        QUICK_RATIO; `quick_floor`: the evidence peak's least integrator height ((µV/s)², one lead only:
        the fused two-lead signal has no unit), against T waves taken for a QRS.  Measured by ``vigil.evaluation.eval_startup``: off by default, as no setting kept
        the start-up accuracy while bringing every start-up beat within 1 s.
        """
        self.fs = float(fs)
        self.quick_start = quick_start
        self.quick_from = int(round(quick_from_s * fs))
        self.quick_after = int(round(quick_after_s * fs))
        self.quick_ratio = quick_ratio
        self.quick_floor = quick_floor
        self.quick_min = int(round(QUICK_MIN_S * fs))
        self.quick_step = max(1, int(round(QUICK_STEP_S * fs)))
        self.n_leads = n_leads
        self._bpf = [filters.qrs_bandpass(fs) for _ in range(n_leads)]
        self._der = [filters.FirFilter(filters.derivative_taps(fs)) for _ in range(n_leads)]
        self._norm = [filters.RunningMean(fs, 4.0) for _ in range(n_leads)] if n_leads > 1 else []
        self._mwi = filters.FirFilter(filters.moving_average_taps(fs))
        self._mwi_lead = [filters.FirFilter(filters.moving_average_taps(fs)) for _ in range(n_leads)] \
            if n_leads > 1 else []
        self.mwi_len = len(self._mwi.b)
        cap = int(BUFFER_S * fs)
        self.mwi = Ring(cap)
        self.slope = Ring(cap)
        self.w = max(1, int(round(NEIGHBOUR_S * fs)))
        self.refractory = int(round(REFRACTORY_S * fs))
        self.twave = int(round(TWAVE_S * fs))
        self.learn = int(round(LEARN_S * fs))
        self._begin(0)

    # ------------------------------------------------------------------ state
    def _begin(self, start: int) -> None:
        for f in self._bpf:
            f.reset()
        for d in (*self._der, self._mwi, *self._mwi_lead):
            d.reset()
        for n in self._norm:
            n.reset()
        self.mwi.reset(start)
        self.slope.reset(start)
        self.origin = start
        self.scanned = start  # candidates with index < scanned have been found
        self.decided = start  # candidates with index < decided have been classified
        self.learning = True
        self.learned_at = start + self.learn  # where the learning period ended (or will end at the latest)
        self._quick_next = start + self.quick_min  # next index at which `_quick_end` looks for evidence
        self.spk = 0.0
        self.npk = 0.0
        self.last_qrs: int | None = None
        self.last_slope = 0.0
        self.searched_to = start  # searchback has already examined indices < searched_to
        self.rr: deque[int] = deque(maxlen=8)
        self._rr_mean = 0.8 * self.fs  # median of `rr`, kept current by `_accept`
        self.pending: list[tuple[int, float]] = []  # candidates not yet classified
        self.noise: list[tuple[int, float]] = []  # rejected candidates since the last QRS (searchback pool)

    def reset(self, start: int) -> None:
        """Forget everything (after a gap); the next sample has index `start`."""
        self._begin(start)

    @property
    def final_upto(self) -> int:
        """Every QRS before this index has been emitted (none will be added before it).

        A searchback can only accept a rejected candidate above THRESHOLD2, and THRESHOLD2 never
        falls below SPKI / 8 while no QRS is accepted (THRESHOLD1 = 0.75 NPKI + 0.25 SPKI, NPKI ≥ 0).
        With no such candidate since the last QRS, everything decided is final; otherwise the pending
        searchback interval is not.  (Without this, in asystole the horizon moved in searchback-sized
        steps of up to RR + 1 s, delaying ASYSTOLE and PAUSE by as much.)
        """
        if self.learning:
            return self.origin
        floor = 0.125 * self.spk
        if all(h <= floor for _, h in self.noise):
            return self.decided
        last = self.last_qrs + 1 if self.last_qrs is not None else self.origin
        return min(max(last, self.searched_to), self.decided)

    @property
    def rr_mean(self) -> float:
        """Median of the last 8 RR intervals (samples), or 0.8 s before two beats."""
        return self._rr_mean

    @property
    def thresholds(self) -> tuple[float, float]:
        """(THRESHOLD1, THRESHOLD2) on the integrated signal."""
        t1 = self.npk + 0.25 * (self.spk - self.npk)
        return t1, 0.5 * t1

    # ------------------------------------------------------------------ signal path
    def energy(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Integrated energy and slope signals of a block `x` (n, n_leads)."""
        if not self._norm:
            d = self._der[0](self._bpf[0](x[:, 0]))
            return self._mwi(d * d), np.abs(d)
        s_sum = np.zeros(len(x))
        m_sum = np.zeros(len(x))
        m_prod = np.ones(len(x))
        for k in range(self.n_leads):
            d = self._der[k](self._bpf[k](x[:, k]))
            e = d * d
            scale = self._norm[k](e) + 1e-9
            s_sum += np.abs(d) / np.sqrt(scale)
            m = np.maximum(self._mwi_lead[k](e / scale), 0.0)
            m_sum += m
            m_prod *= m
        n = self.n_leads
        return m_prod ** (1.0 / n) + FUSION_MEAN * m_sum / n, s_sum

    def process(self, x: FloatArray) -> list[Detection]:
        """Feed a block (n, n_leads) continuing the current index; return new detections in order.

        Blocks longer than half the ring buffers (3 s) are processed a second at a time (the detections do
        not depend on the block split, up to floating-point rounding of the heights), so the learning
        window and the searchback pool never leave the buffers; the analyser's blocks (≤ 2 s) are not split.
        """
        step = max(1, int(self.fs))
        if len(x) > BUFFER_S * self.fs / 2:
            out: list[Detection] = []
            for i in range(0, len(x), step):
                out.extend(self._process(x[i:i + step]))
            return out
        return self._process(x)

    def _process(self, x: FloatArray) -> list[Detection]:
        mwi, slope = self.energy(x)
        self.mwi.append(mwi)
        self.slope.append(slope)
        self._scan()
        out: list[Detection] = []
        if self.learning:
            end = self._quick_end() if self.quick_start else None
            if end is None:
                if self.mwi.end - self.origin < self.learn:
                    return out
                end = self.origin + self.learn
            seg = self.mwi.get(self.origin, end)
            self.spk = 0.5 * float(np.max(seg))
            self.npk = 0.5 * float(np.mean(seg))
            self.learning = False
            self.learned_at = end
        horizon = self.scanned  # every candidate below this index is known
        while self.pending:
            idx, h = self.pending[0]
            self._maybe_searchback(idx, out)
            self.pending.pop(0)
            self._classify(idx, h, out)
            self.decided = idx + 1
        self._maybe_searchback(horizon, out)
        self.decided = max(self.decided, horizon)
        return out

    def _quick_end(self) -> int | None:
        """The index at which the learning period may end early, or None (wait: at most `LEARN_S`).

        At checkpoints c = origin + QUICK_MIN_S + k·QUICK_STEP_S (< origin + LEARN_S) held in full, the
        window [origin, c) holds clear evidence of a QRS when its largest candidate peak — past the
        integrator's warm-up and `quick_from_s`, with its ±100 ms neighbourhood inside the window and at
        least `quick_after_s` before c, at least `quick_floor` high — is at least `quick_ratio` times the window's mean integrator
        level.  The thresholds are then initialised from that window exactly as from the 2 s one
        (SPKI = ½ max, NPKI = ½ mean; Pan & Tompkins 1985 learn over 2 s, Hamilton's OSEA over the first
        8 s: the length is a design choice, the estimates adapt from the first beat on).  Checkpoints
        depend only on sample indices, so any block split ends it at the same index.
        """
        first = self.origin + max(self.mwi_len, self.quick_from)
        while self._quick_next < self.origin + self.learn and self._quick_next <= self.mwi.end:
            c = self._quick_next
            self._quick_next += self.quick_step
            peaks = [(h, i) for i, h in self.pending if first <= i < c - self.w]
            if not peaks:
                continue
            h, i = max(peaks)
            if c - i < self.quick_after or h < self.quick_floor:
                continue
            level = float(np.mean(self.mwi.get(self.origin, c)))
            if h >= self.quick_ratio * level:
                return c
        return None

    def _scan(self) -> None:
        """Find new candidate peaks whose ±w neighbourhood is complete."""
        end = self.mwi.end - self.w  # indices < end have their right neighbourhood
        a = max(self.scanned, self.mwi.start)
        if end <= a:
            return
        lo = max(a - self.w, self.mwi.start)
        seg = self.mwi.get(lo, end + self.w)
        i0 = a - lo
        core = seg[i0:i0 + (end - a)]
        prev = seg[i0 - 1:i0 - 1 + (end - a)] if i0 > 0 else np.concatenate(([np.inf], core[:-1]))
        total = float(seg.sum())
        if total != total:  # NaN in the signal: SciPy's maximum filter treats it its own way; use it as before
            self._scan_filter(seg, i0, core, prev, a, end)
            return
        nxt = seg[i0 + 1:i0 + 1 + (end - a)]  # the right neighbourhood is complete (end + w ≤ held end)
        # local maxima first (≥ the next sample is implied by being the ±w maximum), then the ±w test
        # on those few: the same peaks as a maximum filter (mode "nearest") over the whole segment
        w = self.w
        for j in np.flatnonzero((core > prev) & (core >= nxt) & (core > 0)).tolist():
            i = i0 + j
            if core[j] >= seg[max(0, i - w):i + w + 1].max():
                self.pending.append((a + j, float(core[j])))
        self.scanned = end

    def _scan_filter(self, seg: FloatArray, i0: int, core: FloatArray, prev: FloatArray, a: int, end: int) -> None:
        """`_scan` by a maximum filter over the whole segment (the original form, kept for NaN input)."""
        from scipy.ndimage import maximum_filter1d

        mx = maximum_filter1d(seg, size=2 * self.w + 1, mode="nearest")
        is_peak = (core >= mx[i0:i0 + (end - a)]) & (core > prev) & (core > 0)
        for j in np.flatnonzero(is_peak):
            self.pending.append((a + int(j), float(core[j])))
        self.scanned = end

    def _slope_at(self, idx: int) -> float:
        seg = self.slope.get(idx - self.mwi_len - 2, idx + 1)
        return float(seg.max()) if seg.size else 0.0

    def _accept(self, idx: int, h: float, out: list[Detection], searchback: bool, due: int = 0) -> None:
        """Accept a QRS at `idx`; `due` is when its rule allowed it (searchback: after the deadline).

        The detection's ``due`` is the latest of its integrator peak, the end of the learning period
        and `due`: the wait the Pan–Tompkins rules themselves impose, against which emission latency
        beyond the rules is measured (``eval_qrs``).
        """
        w = 0.25 if searchback else 0.125
        self.spk = w * min(h, 3.0 * self.spk) + (1 - w) * self.spk
        if self.last_qrs is not None:
            self.rr.append(idx - self.last_qrs)
            self._rr_mean = median(self.rr)
        self.last_qrs = idx
        self.last_slope = self._slope_at(idx)
        self.searched_to = idx + 1
        self.noise.clear()
        due = max(idx, self.learned_at, due)
        out.append(Detection(sample=idx, peak_index=idx, height=h, slope=self.last_slope, searchback=searchback,
                             due=due))

    def _is_twave(self, idx: int) -> bool:
        if self.last_qrs is None or idx - self.last_qrs >= self.twave:
            return False
        return self._slope_at(idx) < 0.5 * self.last_slope

    def _classify(self, idx: int, h: float, out: list[Detection]) -> None:
        if self.last_qrs is not None and idx - self.last_qrs < self.refractory:
            return
        t1, _ = self.thresholds
        if h > t1 and not self._is_twave(idx):
            self._accept(idx, h, out, searchback=False)
            return
        self.npk = 0.125 * h + 0.875 * self.npk
        self.noise.append((idx, h))

    def _maybe_searchback(self, now: int, out: list[Detection]) -> None:
        """Run searchbacks whose deadline lies before `now` (all candidates before it are decided)."""
        while True:
            base = self.last_qrs if self.last_qrs is not None else self.origin
            start = max(base, self.searched_to)
            rr = self.rr_mean
            deadline = start + int(min(SEARCHBACK_RR * rr, rr + SEARCHBACK_LATE_S * self.fs))
            if now <= deadline or self.last_qrs is None:
                return
            _, t2 = self.thresholds
            best: tuple[int, float] | None = None
            for idx, h in self.noise:
                if idx <= deadline and idx - self.last_qrs >= self.refractory and h > t2 \
                        and not self._is_twave(idx) and (best is None or h > best[1]):
                    best = (idx, h)
            if best is None:
                self.searched_to = deadline + 1
                self.noise = [c for c in self.noise if c[0] > deadline]
                continue
            self.noise = [c for c in self.noise if c[0] > best[0]]
            rest = self.noise
            self._accept(best[0], best[1], out, searchback=True, due=deadline + 1)
            self.noise = rest
