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
SHIFT_S = 0.03  # alignment search ±30 ms
MAX_TEMPLATES = 5
MATCH = 0.85  # correlation that counts as the same morphology
DECAY = 0.985  # per-beat decay of template counts
# decision thresholds: grid-searched on MIT-BIH DS1 (non-paced) features, maximising min(VEB Se, +P);
# leave-one-record-out cross-validation of the same search is reported in the README.
CORR_V = 0.40  # below: ventricular regardless of width
CORR_WIDE = 0.80  # below with a wider or taller complex: ventricular
WIDTH_V = 1.25  # width ratio that counts as wider
AMP_V = 1.6  # amplitude ratio that counts as taller
CORR_PREM = 0.90  # below with a very premature beat: ventricular
PREM_V = 0.60  # RR / median RR that counts as very premature
PREMATURE_S = 0.82  # RR / median RR below: supraventricular premature (narrow, matching beat)
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
    """Multi-template beat classifier (one per channel), after Hamilton's OSEA.

    Up to `MAX_TEMPLATES` running templates are kept, each with a decaying count of the beats that
    matched it (correlation ≥ `MATCH`, best over ±30 ms shifts); the template with the largest count
    is the dominant (normal) morphology.  A beat is compared with the dominant template for its
    features; beats that are not yet comparable (before any template) are labelled N.
    """

    def __init__(self, fs: float, n_leads: int = 1) -> None:
        """Create a classifier for a stream at `fs` Hz with `n_leads` band-passed leads per window."""
        self.fs = fs
        self.n_leads = n_leads
        self.half = max(2, int(round(HALF_S * fs)))
        self.shift = max(1, int(round(SHIFT_S * fs)))
        self.reset()

    def reset(self) -> None:
        """Forget the templates and the RR history (after a gap)."""
        self.templates: list[FloatArray] = []
        self.counts: list[float] = []
        self._rr: deque[float] = deque(maxlen=8)
        self._last_r: int | None = None

    @property
    def window(self) -> int:
        """Samples each side of R needed by `classify`."""
        return self.half + self.shift

    def _best(self, seg: FloatArray, tpl: FloatArray) -> tuple[float, int]:
        """Best Pearson correlation of `tpl` against `seg` over the allowed shifts, and the shift."""
        n = 2 * self.half + 1
        views = np.lib.stride_tricks.sliding_window_view(seg, n, axis=-1)  # (leads, shifts, n)
        v = views - views.mean(axis=-1, keepdims=True)
        tt = tpl - tpl.mean(axis=-1, keepdims=True)
        num = np.einsum("lsn,ln->s", v, tt)
        den = np.sqrt(np.einsum("lsn,lsn->s", v, v) * float(np.sum(tt * tt))) + 1e-12
        c = num / den
        k = int(np.argmax(c))
        return float(c[k]), k

    def classify(self, seg: FloatArray, r: int) -> tuple[BeatLabel, BeatFeatures | None]:
        """Label one beat from `seg` (leads × (2·window+1), centred on R at sample `r`)."""
        seg = np.atleast_2d(seg)
        n = 2 * self.half + 1
        rr = None if self._last_r is None else r - self._last_r
        self._last_r = r
        med = float(np.median(self._rr)) if self._rr else None
        prem = rr / med if (rr is not None and med) else 1.0
        cv = float(np.std(self._rr) / med) if (med and len(self._rr) >= 4) else 1.0
        self.counts = [c * DECAY for c in self.counts]
        if not self.templates:
            self.templates.append(seg[:, self.shift:self.shift + n].copy())
            self.counts.append(1.0)
            if rr is not None:
                self._rr.append(float(rr))
            return "N", None
        matches = [self._best(seg, tp) for tp in self.templates]
        k = int(np.argmax([m[0] for m in matches]))
        corr_k, sh_k = matches[k]
        aligned_k = seg[:, sh_k:sh_k + n]
        if corr_k >= MATCH:
            self.templates[k] = 0.92 * self.templates[k] + 0.08 * aligned_k
            self.counts[k] += 1.0
        elif len(self.templates) < MAX_TEMPLATES:
            self.templates.append(seg[:, self.shift:self.shift + n].copy())
            self.counts.append(1.0)
        else:
            j = int(np.argmin(self.counts))
            self.templates[j] = seg[:, self.shift:self.shift + n].copy()
            self.counts[j] = 1.0
        d = int(np.argmax(self.counts))
        dom = self.templates[d]
        corr_d, sh_d = self._best(seg, dom)
        core = seg[:, sh_d:sh_d + n]
        tw = _width(dom[0], self.fs) or 1e-9
        ta = float(np.ptp(dom[0])) or 1e-9
        f = BeatFeatures(corr=corr_d, width_ratio=_width(core[0], self.fs) / tw,
                         amp_ratio=float(np.ptp(core[0])) / ta, prematurity=prem, rr_cv=cv)
        label = decide(f)
        if rr is not None and label == "N":
            self._rr.append(float(rr))
        return label, f


def decide(f: BeatFeatures) -> BeatLabel:
    """The decision rule on features (see module docstring)."""
    if f.corr < CORR_V:
        return "V"
    if f.corr < CORR_WIDE and (f.width_ratio > WIDTH_V or f.amp_ratio > AMP_V):
        return "V"
    if f.corr < CORR_PREM and f.prematurity < PREM_V:
        return "V"
    if f.prematurity < PREMATURE_S and f.rr_cv < REGULAR_CV and f.corr >= CORR_PREM:
        return "S"
    return "N"
