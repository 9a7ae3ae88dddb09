"""Streaming beat classification (N, S, V, Q) from a running template of the dominant beat.

Features, computed when a beat is detected (no look-ahead beyond ~0.1 s after the R peak):
morphology correlation against the running template of the dominant beat (Pearson, best of
±2-sample shifts), effective QRS width (area / peak of the band-passed complex) relative to the
template, amplitude ratio, and RR prematurity against the median of recent dominant-beat RRs.
The decision rule is a small hand-set rule in the spirit of Hamilton's OSEA beat classifier
(P. S. Hamilton, "Open source ECG analysis", Computers in Cardiology 29 (2002) 101-104):
a complex that does not match the dominant template and is wider, or very different, is
ventricular; a narrow matching complex that is clearly premature in a regular rhythm is
supraventricular.  Thresholds are module constants chosen on MIT-BIH DS1 (see README).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vigil.model import BeatLabel

FloatArray = npt.NDArray[np.float64]

HALF_S = 0.10  # beat window ±100 ms around R
INIT_BEATS = 8
# decision thresholds (see module docstring)
CORR_V = 0.60  # below: ventricular regardless of width
CORR_WIDE = 0.90  # below with a wider complex: ventricular
WIDTH_V = 1.30  # width ratio that counts as wider
AMP_V = 1.8  # amplitude ratio that (with a poor match) counts as ventricular
PREMATURE_S = 0.82  # RR / median RR below: premature
REGULAR_CV = 0.08  # recent RR coefficient of variation under which S may be called


@dataclass(frozen=True, slots=True)
class BeatFeatures:
    """Features of one beat relative to the dominant template."""

    corr: float
    width_ratio: float
    amp_ratio: float
    prematurity: float  # RR / median recent RR (1.0 when unknown)
    rr_cv: float  # coefficient of variation of recent RRs


def _width(x: FloatArray, fs: float) -> float:
    peak = float(np.max(np.abs(x)))
    if peak <= 0:
        return 0.0
    return float(np.sum(np.abs(x)) / peak / fs)


def _corr(a: FloatArray, b: FloatArray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / d) if d > 0 else 0.0


class BeatClassifier:
    """Running-template beat classifier (one per channel)."""

    def __init__(self, fs: float) -> None:
        """Create a classifier for a stream at `fs` Hz."""
        self.fs = fs
        self.half = max(2, int(round(HALF_S * fs)))
        self.reset()

    def reset(self) -> None:
        """Forget the template and the RR history (after a gap)."""
        self.template: FloatArray | None = None
        self._init: list[FloatArray] = []
        self._rr: deque[float] = deque(maxlen=8)
        self._last_r: int | None = None

    @property
    def window(self) -> int:
        """Samples each side of R needed by `classify`."""
        return self.half + 2

    def features(self, seg: FloatArray, r: int) -> BeatFeatures | None:
        """Features of the beat whose window (R ± window) is `seg`; None before a template exists."""
        rr = None if self._last_r is None else r - self._last_r
        med = float(np.median(self._rr)) if self._rr else None
        prem = rr / med if (rr is not None and med) else 1.0
        cv = float(np.std(self._rr) / med) if (med and len(self._rr) >= 4) else 1.0
        if self.template is None:
            return None
        h, s = self.half, 2
        core = seg[s:s + 2 * h + 1]
        best = -1.0
        for k in range(-s, s + 1):
            c = _corr(seg[s + k:s + k + 2 * h + 1], self.template)
            best = max(best, c)
        tw = _width(self.template, self.fs) or 1e-9
        ta = float(np.ptp(self.template)) or 1e-9
        return BeatFeatures(corr=best, width_ratio=_width(core, self.fs) / tw,
                            amp_ratio=float(np.ptp(core)) / ta, prematurity=prem, rr_cv=cv)

    def classify(self, seg: FloatArray, r: int) -> tuple[BeatLabel, BeatFeatures | None]:
        """Label one beat from its window `seg` (length 2·window+1 centred on R at sample `r`)."""
        h, s = self.half, 2
        core = seg[s:s + 2 * h + 1]
        f = self.features(seg, r)
        label: BeatLabel = "N"
        if f is None:
            self._init.append(core.copy())
            if len(self._init) >= INIT_BEATS:
                stack = np.array(self._init)
                sims = [sum(_corr(a, b) for b in stack) for a in stack]
                self.template = stack[int(np.argmax(sims))].copy()
                self._init = []
        else:
            label = decide(f)
            if label == "N" and f.corr > 0.9:
                self.template = 0.9 * self.template + 0.1 * core if self.template is not None else core
        rr = None if self._last_r is None else r - self._last_r
        if rr is not None and label == "N":
            self._rr.append(float(rr))
        self._last_r = r
        return label, f


def decide(f: BeatFeatures) -> BeatLabel:
    """The decision rule on features (see module docstring)."""
    if f.corr < CORR_V:
        return "V"
    if f.corr < CORR_WIDE and (f.width_ratio > WIDTH_V or f.amp_ratio > AMP_V):
        return "V"
    if f.prematurity < PREMATURE_S and f.rr_cv < REGULAR_CV and f.corr >= CORR_WIDE:
        return "S"
    return "N"
