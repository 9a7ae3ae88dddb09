"""Per-second ECG signal quality: flatline, saturation, lead-off, noise and detector disagreement.

Each second of stream is assessed once all beats in it are final:

* flatline — peak-to-peak of the raw lead < 20 µV;
* saturation — ≥ 2 % of the samples sit on flat runs (≥ 3 equal samples) at the second's extreme value
  (clipping at a rail);
* lead_off — flat and away from zero (> 5 mV), or saturated over more than half of the second;
* noise — high-frequency content (raw minus the 40 Hz low-passed lead) above 15 % of the band-passed
  peak-to-peak (if that noise is below 15 % of the recent QRS amplitude, the second also gets
  `qrs_visible`: a quiet line whose noise could not hide a QRS; ASYSTOLE is not held back by it),
  or baseline (< 0.5 Hz) moving more than 2 mV within the second — or more than half the recent QRS
  amplitude of beats outside noise, if that is larger (this estimate leaks a share of every QRS, T wave
  and VT complex: with a fixed 2 mV, the 24 MIT-BIH records with their ECG scaled to EC13's largest QRS,
  5 mV, had 184 seconds called noise against 75 as recorded, with this limit 107;
  `vigil.evaluation.eval_amplitude`), or the QRS
  detector's noise-peak level above 40 % of its signal-peak level, or baseline wander dominating
  the lead: over the last second, the peak-to-peak of the raw lead smoothed by a 0.5 s moving
  average (content below ~1.5 Hz: respiration/motion wander; the average has zeros at 2, 4, 6 Hz, so
  VT and VF rates barely pass) more than `WANDER_RATIO` times that of the rest (QRS, T, VT, VF, noise)
  and at least `WANDER_MIN_UV` (such seconds carry a second flag, `wander`: a slow wander hides no
  QRS complex, so it does not hold back ASYSTOLE).  With QRS complexes present the rest is large;
  in the nstdb `bw` record (wander without ECG) it is not.  On the records here the ratio stays below 2 on every
  second of mitdb 109/119/205/207/208, vfdb 418, cudb cu01, nstdb 118e24/118e00 and the true-VT
  alarm windows of the CinC 2015 records, and exceeds it in 40 % of the seconds of `bw`;
* detector_disagreement — over the last 5 s the Pan–Tompkins beats and a second, simpler slope
  detector (peaks of |d/dt| above 40 % of the 4 s maximum, ≥ 250 ms apart) differ by ≥ 2 beats and
  ≥ 25 %.

quality = 1 − penalties (flatline/lead-off/saturation → 0, noise → 0.3, disagreement → 0.5).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from vigil.model import QualityReport

FloatArray = npt.NDArray[np.float64]


QRS_HALF_S = 0.06  # a beat's QRS amplitude: band-passed peak-to-peak within ±60 ms of R (quality, rhythm)
WANDER_BOX_S = 0.5  # moving average separating wander (< ~1.5 Hz) from the rest
WANDER_RATIO = 2.0
WANDER_MIN_UV = 150.0
BASELINE_MOVE_UV = 2000.0  # baseline (< 0.5 Hz) excursion within a second that makes it noise ...
BASELINE_MOVE_QRS = 0.5  # ... or this share of the recent QRS amplitude, when that is larger
WANDER_CONTEXT_S = 2.0  # raw signal the analyser passes for the wander check (the last second is judged)


HIDING_FLAGS = frozenset({"lead_off", "flatline", "saturation"})  # a QRS could hide in such a second


def obscures_qrs(flags: Iterable[str]) -> bool:
    """Whether a second with these quality flags could hide or distort a QRS complex.

    Lead-off, flatline and saturation always can; `noise` can unless it is only baseline wander
    (`wander`) or noise too small to hide a QRS of the recent size (`qrs_visible`).
    """
    f = set(flags)
    return bool(f & HIDING_FLAGS) or ("noise" in f and not f & {"wander", "qrs_visible"})


def wander_ratio(raw: FloatArray, fs: float) -> tuple[float, float]:
    """(peak-to-peak of the < ~1.5 Hz part, its ratio to the rest's) over the last second of `raw`."""
    n = max(2, int(round(WANDER_BOX_S * fs)))
    if raw.size < n + 2:
        return 0.0, 0.0
    c = np.cumsum(np.concatenate(([0.0], raw)))
    lo = (c[n:] - c[:-n]) / n  # centred on raw[n//2 + i]
    hi = raw[n // 2:n // 2 + len(lo)] - lo
    m = max(len(lo) // 2, int(round(fs)) - (n - 1))
    lo, hi = lo[-m:], hi[-m:]
    lo_p2p = float(lo.max() - lo.min())
    return lo_p2p, lo_p2p / max(float(hi.max() - hi.min()), 1e-9)


def _slope_beats(slope: FloatArray, ref_max: float, fs: float) -> int:
    if slope.size < 3 or ref_max <= 0:
        return 0
    return count_peaks(slope, 0.4 * ref_max, max(1, int(0.25 * fs)))


_PEAK_TOOLS: list[tuple[object, object] | None] = []  # decided on first use (see _peak_tools)


def _peak_tools() -> tuple[object, object] | None:
    """SciPy's compiled helpers behind ``find_peaks`` (local maxima, selection by distance), if they reproduce it."""
    if not _PEAK_TOOLS:
        import scipy.signal as sps

        tools: tuple[object, object] | None = None
        try:
            from scipy.signal._peak_finding_utils import _local_maxima_1d, _select_by_peak_distance

            x = np.abs(np.sin(np.arange(400) * 0.37)) * (1.0 + np.arange(400) % 7)
            x[100:104] = x.max()  # a plateau
            tools = (_local_maxima_1d, _select_by_peak_distance)
            for h, d in ((1.5, 9), (0.0, 1), (3.0, 40)):
                if _count_with(tools, x, h, d) != len(sps.find_peaks(x, height=h, distance=d)[0]):
                    tools = None  # pragma: no cover
                    break
        except Exception:  # pragma: no cover - private API changed: use find_peaks
            tools = None
        _PEAK_TOOLS.append(tools)
    return _PEAK_TOOLS[0]


def _count_with(tools: tuple[object, object], x: FloatArray, height: float, distance: int) -> int:
    local_maxima, select = tools
    peaks = local_maxima(x)[0]  # type: ignore[operator]
    peaks = peaks[height <= x[peaks]]
    return int(np.count_nonzero(select(peaks, x[peaks], distance)))  # type: ignore[operator]


def count_peaks(x: FloatArray, height: float, distance: int) -> int:
    """``len(scipy.signal.find_peaks(x, height=height, distance=distance)[0])`` without its argument checks."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    tools = _peak_tools()
    if tools is None:  # pragma: no cover
        import scipy.signal as sps

        return int(len(sps.find_peaks(x, height=height, distance=distance)[0]))
    return _count_with(tools, x, height, distance)


def _plateau_fraction(x: FloatArray, level: float) -> float:
    """Fraction of samples equal to `level` in runs of at least 3 equal samples."""
    at = x == level
    if x.size and np.count_nonzero(at) < 3:  # no run of 3 possible (the usual case): the mask below is all False
        return 0.0
    run = at[1:-1] & at[:-2] & at[2:]
    mask = np.zeros(len(x), dtype=bool)
    mask[1:-1] |= run
    mask[:-2] |= run
    mask[2:] |= run
    return float(mask.mean())


class QualityAssessor:
    """Assesses each complete second of stream (see module docstring)."""

    def __init__(self, fs: float, channel: str = "ecg") -> None:
        """Create an assessor for a stream at `fs` Hz."""
        self.fs = fs
        self.channel = channel
        self.period = max(1, int(round(fs)))
        self.reset(0)

    def reset(self, start: int) -> None:
        """Start again at sample `start` (after a gap)."""
        self.next_end = start + self.period
        self.counts: deque[tuple[int, int]] = deque(maxlen=5)
        self.slope_max: deque[float] = deque(maxlen=4)

    def assess(self, end: int, raw: FloatArray, hp: FloatArray, bp: FloatArray, slope: FloatArray,
               n_beats: int, noise_ratio: float, context: FloatArray | None = None,
               qrs_uv: float = 0.0, clean_qrs_uv: float = 0.0) -> QualityReport:
        """Assess the second ending at `end` from its raw, high-passed, band-passed and slope samples.

        `context` is the raw lead over the last `WANDER_CONTEXT_S` seconds ending at `end` (for the
        baseline-wander check; the second's own raw samples are used when it is None).  `qrs_uv` is the
        recent QRS amplitude (band-passed peak-to-peak, 0 when unknown): a second that is noisy only
        because its high-frequency noise is large against its own small content (the amplifier noise or
        mains hum of a quiet line: a pause, asystole) but below 15 % of that QRS amplitude is flagged
        `qrs_visible` as well as `noise` — a QRS of the recent size would stand out of it.
        `clean_qrs_uv` is the same amplitude over beats outside noise (a noise spike taken for a beat
        must not raise it): the baseline may move up to half of it before the second is noise.
        """
        flags: list[str] = []
        q = 1.0
        p2p = float(raw.max() - raw.min()) if raw.size else 0.0
        flat = p2p < 20.0
        sat_frac = 0.0
        if raw.size > 2 and not flat:
            sat_frac = max(_plateau_fraction(raw, float(raw.max())), _plateau_fraction(raw, float(raw.min())))
        saturated = sat_frac >= 0.02
        lead_off = (flat and abs(float(raw.mean())) > 5000.0) or sat_frac > 0.5
        if lead_off:
            flags.append("lead_off")
        elif flat:
            flags.append("flatline")
        if saturated and not lead_off:
            flags.append("saturation")
        if flags:
            q = 0.0
        noisy = wander = visible = False
        if not flat and bp.size:
            hf = float(np.sqrt(((hp - bp) ** 2).mean()))
            bp_p2p = float(bp.max() - bp.min()) or 1e-9
            baseline = raw - hp
            moved = float(baseline.max() - baseline.min())
            other = moved > max(BASELINE_MOVE_UV, BASELINE_MOVE_QRS * clean_qrs_uv) or noise_ratio > 0.4
            noisy = hf > 0.15 * bp_p2p or other
            visible = noisy and not other and hf <= 0.15 * qrs_uv
            if not noisy:
                lo_p2p, ratio = wander_ratio(raw if context is None else context, self.fs)
                wander = noisy = ratio > WANDER_RATIO and lo_p2p >= WANDER_MIN_UV
        if noisy:
            flags.append("noise")
            if wander:
                flags.append("wander")  # noisy only by its baseline wander
            elif visible:
                flags.append("qrs_visible")  # noisy only against its own small content: a QRS would stand out
            q = min(q, 0.3)
        self.slope_max.append(float(slope.max()) if slope.size else 0.0)
        n2 = _slope_beats(slope, max(self.slope_max), self.fs)
        self.counts.append((n_beats, n2))
        if len(self.counts) == self.counts.maxlen and not flat:
            a = sum(c[0] for c in self.counts)
            b = sum(c[1] for c in self.counts)
            if abs(a - b) >= 2 and abs(a - b) >= 0.25 * max(a, b):
                flags.append("detector_disagreement")
                q = min(q, 0.5)
        return QualityReport(sample=end, quality=round(q, 2), flags=tuple(flags), channel=self.channel)
