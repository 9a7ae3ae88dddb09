"""Streaming beat classification (N, S, V) against the patient's own running dominant-beat template.

Features are computed when a beat is detected (no look-ahead beyond ~0.13 s after the R peak) and
are all relative to the patient's own dominant morphology, so they transfer between patients:

* morphology — Pearson correlation with the dominant template over all leads and on lead 1 (best
  of ±30 ms shifts), and how the matched template itself compares with the dominant one;
* QRS width — effective width (area / peak of the band-passed complex), absolute and as a ratio;
* amplitude, energy, polarity (signed-area balance) and steepest slope relative to the template (the
  polarity change signed by the template's own: + is towards the template's larger deflection, so an
  inverted lead gives the same features);
* rhythm — RR prematurity against the median RR of recent template-matching beats, the RR
  variability of those beats, and the previous beat's correlation (runs);
* template statistics — share of recent beats matching the same template (OSEA-style multi-template
  memory: P. S. Hamilton, "Open source ECG analysis", Computers in Cardiology 29 (2002) 101-104).

None of the features depends on earlier labels, so the classifier trained offline sees the same
features that the stream produces.  V is called by an OSEA-like rule (unlike the dominant beat and
wider, taller or very premature) unless a small gradient-boosted tree ensemble vetoes it; beats
unlike the dominant one (correlation below the model's ``gate_corr``) are also put to the ensemble,
which was trained on exactly those candidates (``vigil/data/models/beat_classifier.json``, trained
by ``vigil.evaluation.train_beats`` on MIT-BIH DS1 only and chosen by leave-one-record-out validation, in the inter-patient spirit of P. de Chazal,
M. O'Dwyer, R. B. Reilly, "Automatic classification of heartbeats using ECG morphology and heartbeat
interval features", IEEE TBME 51(7) (2004) 1196-1206).  The veto removes implausible V calls (noise,
aberrant supraventricular beats); alone, the ensemble generalised no better than the rule.
S is a rule: a narrow, template-matching beat that is clearly premature in a regular rhythm.

Two V decisions (`BeatClassifier.labels`).  The reported label comes from a second, gated ensemble
(``beat_label_model.json``): it decides every beat the rule calls V or that correlates below its
``gate_corr`` with the dominant template (223's V beats correlate ~0.8 with the dominant beat and the
rule misses them); it is the better per-beat classifier under leave-one-record-out validation.  The
*strict* label is the rule's V call not vetoed by ``beat_classifier.json``; it alone is what VT runs
and the VT alarm count (``Beat.strict_label``), because runs of the gated model's extra V calls raised
false VT alarms on CinC 2015 (couplets, bigeminy and trigeminy count the reported label).  The two can disagree either way: a beat
may be labelled V without counting toward VT, or count toward VT while labelled N or S.  The gated
model's log-odds of a beat are blended with those of the earlier beats of the same running template
(`TemplateVote`, parameters in the model file), so one morphology gets one label, as on a bedside monitor;
with one lead the vote decides every beat, not only the model's candidates.  The strict label's veto model
has a template vote of its own.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.model import BeatLabel
from vigil.signal.small import argmax, median, std

FloatArray = npt.NDArray[np.float64]

HALF_S = 0.10  # beat window ±100 ms around R
PRE_S = 0.20  # plus the 200 ms before it (P wave / PR segment: -300 to -100 ms)
SHIFT_S = 0.03  # alignment search ±30 ms
MAX_TEMPLATES = 5
MATCH = 0.85  # correlation that counts as the same morphology
DECAY = 0.985  # per-beat decay of template counts
RR_MATCH = 0.80  # beats correlating at least this with the dominant template feed the RR history
# The reference ("dominant") template is the most frequent one unless a template at most DOM_WIDTH_RATIO as
# wide has at least DOM_COUNT_RATIO of its count and its beats are not premature against it (mean RR before
# them >= DOM_RR_RATIO of the frequent template's): then that narrower one (conducted beats are narrower than
# ventricular ones and come on time), so frequent PVCs or a ventricular run do not become the normal beat.
DOM_COUNT_RATIO = 0.5
DOM_WIDTH_RATIO = 0.8
DOM_RR_RATIO = 0.9
# V rule thresholds (grid-searched on MIT-BIH DS1 in the first version, i.e. in-sample there)
CORR_V = 0.40  # below: ventricular regardless of width
CORR_WIDE = 0.80  # below with a wider or taller complex: ventricular
WIDTH_V = 1.25  # width ratio that counts as wider
AMP_V = 1.6  # amplitude ratio that counts as taller
CORR_PREM = 0.90  # below with a very premature beat: ventricular
PREM_V = 0.60  # RR / median RR that counts as very premature
PREMATURE_S = 0.82  # RR / median RR below: supraventricular premature (narrow, matching beat)
REGULAR_CV = 0.08  # recent RR coefficient of variation under which S may be called
CORR_S = 0.90  # an S beat must match the dominant template at least this well
MODEL_PATH = Path(__file__).resolve().parent.parent / "data" / "models" / "beat_classifier.json"
LABEL_MODEL_PATH = MODEL_PATH.with_name("beat_label_model.json")  # the gated ensemble for the reported label


@dataclass(frozen=True, slots=True)
class BeatFeatures:
    """Features of one beat relative to the dominant template (order = model input order)."""

    corr: float  # all leads, best shift
    corr0: float  # lead 1 at that shift
    width_ratio: float
    width_ms: float
    amp_ratio: float
    amp_ratio_last: float  # last lead (= lead 1 with one lead)
    log_energy_ratio: float
    polarity_change: float  # oriented by the dominant template's larger deflection: the same for an inverted lead
    slope_ratio: float
    prematurity: float  # RR / median recent RR (1.0 when unknown)
    rr_cv: float
    prev_corr: float
    tpl_share: float  # share of recent beats on the matched template
    tpl_is_dominant: float
    tpl_corr: float  # matched template vs dominant template
    pre_corr: float  # -300..-100 ms (P wave, QRS onset) vs the dominant template, all leads
    pre_amp_ratio: float  # peak-to-peak of that segment (lead 1) relative to the template's

    def vector(self) -> list[float]:
        """The features as a list in model order."""
        return list(astuple(self))


FEATURE_NAMES: tuple[str, ...] = tuple(BeatFeatures.__dataclass_fields__)


def _width(x: FloatArray, fs: float) -> float:
    ax = np.abs(x)
    peak = float(ax.max())
    if peak <= 0:
        return 0.0
    return float(ax.sum() / peak / fs)


def _corr(a: FloatArray, b: FloatArray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b)) / d if d > 0 else 0.0


def _polarity(x: FloatArray) -> float:
    hi, lo = float(x.max()), float(x.min())
    return (hi + lo) / (hi - lo) if hi > lo else 0.0


def _slope(x: FloatArray) -> float:
    p = _ptp(x)
    return float(np.abs(x[1:] - x[:-1]).max()) / p if p > 0 else 0.0


def _ptp(x: FloatArray) -> float:
    """``float(np.ptp(x))`` (the same max − min) without the wrapper."""
    return float(x.max() - x.min())


class TreeEnsemble:
    """Gradient-boosted decision trees (log-odds of V) loaded from JSON; pure-Python inference."""

    def __init__(self, doc: dict[str, Any]) -> None:
        """Build from the JSON document written by ``vigil.evaluation.train_beats``."""
        self.features: list[str] = list(doc["features"])
        self.bias = float(doc["bias"])
        self.rate = float(doc["learning_rate"])
        self.threshold = float(doc["threshold"])
        # With "gate_corr", a beat is a V candidate the model decides on when the rule fires or it
        # correlates below gate_corr with the dominant template (the model was trained on exactly those
        # candidates); without it the model only vetoes the rule's V calls.
        gate = doc.get("gate_corr")
        self.gate_corr: float | None = None if gate is None else float(gate)  # see `candidate_v`
        vote = doc.get("template_vote")  # blend a candidate's log-odds with its template's (see TemplateVote)
        self.vote: TemplateVote | None = None if vote is None else TemplateVote(
            float(vote["weight"]), float(vote["rate"]), int(vote["min_beats"]), float(vote["non_candidate"]),
            int(vote.get("every_beat_max_leads", 0)))
        # each tree: parallel lists feature, threshold, left, right, value (leaf when feature < 0)
        self.trees: list[tuple[list[int], list[float], list[int], list[int], list[float]]] = [
            (t["feature"], t["threshold"], t["left"], t["right"], t["value"]) for t in doc["trees"]]

    def logit(self, x: list[float]) -> float:
        """Log-odds that the beat with feature vector `x` is ventricular."""
        s = self.bias
        for feat, thr, left, right, value in self.trees:
            n = 0
            while feat[n] >= 0:
                n = left[n] if x[feat[n]] <= thr[n] else right[n]
            s += self.rate * value[n]
        return s

    def probability(self, x: list[float]) -> float:
        """P(V) for feature vector `x`."""
        return 1.0 / (1.0 + math.exp(-self.logit(x)))


@dataclass(frozen=True, slots=True)
class TemplateVote:
    """A beat's V log-odds blended with the running mean log-odds of the earlier beats of its template.

    Every beat that matched (or created) a running template adds a value to that template's score: its
    own log-odds when it was a V candidate, `non_candidate` otherwise.  The score is the mean of those
    values over the template's first ``1 / rate`` beats and an exponential average (rate `rate`) after.
    A candidate whose template already holds `min_beats` beats is decided on
    ``(1 - weight) · own + weight · score``.  Beats of one morphology are thus labelled together, as a
    bedside monitor labels a template, while the first beats of a new shape are decided on their own.
    The score only looks back, so the label is still final when the beat is emitted.  The parameters
    are chosen with the label model by leave-one-record-out validation (``train_beats --vote-sweep``).

    With at most `every_beat_max_leads` leads the vote decides every beat, not only candidates: a
    non-candidate is V when ``(1 - weight) · non_candidate + weight · score`` passes the threshold.  One
    lead separates shapes less well, so V beats of a ventricular template often correlate ≥ the gate
    with the dominant beat; their template's score labels them (chosen per lead count, leave-one-record-out).
    """

    weight: float
    rate: float
    min_beats: int
    non_candidate: float
    every_beat_max_leads: int = 0

    def every_beat(self, n_leads: int) -> bool:
        """Whether the vote decides every beat (not only the model's candidates) for `n_leads` leads."""
        return n_leads <= self.every_beat_max_leads

    def blend(self, logit: float, score: float, n: int) -> float:
        """The log-odds the threshold applies to: own `logit` blended with a template `score` over `n` beats."""
        return logit if n < self.min_beats else (1.0 - self.weight) * logit + self.weight * score

    def update(self, score: float, n: int, value: float) -> float:
        """The template's score after a beat with `value` joins its `n` earlier beats."""
        return value if n <= 0 else score + max(self.rate, 1.0 / (n + 1)) * (value - score)

    def as_json(self) -> dict[str, float | int]:
        """The ``template_vote`` entry of a model document."""
        return {"weight": self.weight, "rate": self.rate, "min_beats": self.min_beats,
                "non_candidate": self.non_candidate, "every_beat_max_leads": self.every_beat_max_leads}


class _SlotVotes:
    """Per template slot: a `TemplateVote`'s score and the number of beats folded into it."""

    __slots__ = ("n", "score")

    def __init__(self) -> None:
        self.score: list[float] = []
        self.n: list[int] = []

    def clear(self, slot: int) -> None:
        """Forget slot `slot` (a new template there); the slot may be the next one."""
        if slot == len(self.score):
            self.score.append(0.0)
            self.n.append(0)
        else:
            self.score[slot], self.n[slot] = 0.0, 0

    def decide(self, vote: TemplateVote, slot: int, logit: float | None, threshold: float,
               every_beat: bool = False) -> bool:
        """V or not for a beat of `slot` with own `logit` (None: not a candidate); the beat joins the score.

        A non-candidate is decided by the vote too when `every_beat`, else it is not V.
        """
        value = vote.non_candidate if logit is None else logit
        is_v = (logit is not None or every_beat) and vote.blend(value, self.score[slot], self.n[slot]) > threshold
        self.score[slot] = vote.update(self.score[slot], self.n[slot], value)
        self.n[slot] += 1
        return is_v


def voted(logits: npt.NDArray[np.float64], candidate: npt.NDArray[np.bool_], template_ids: npt.NDArray[np.int64],
          vote: TemplateVote, every_beat: bool = False) -> npt.NDArray[np.float64]:
    """Offline `TemplateVote` over one stream's beats in order (what `BeatClassifier.labels` does live).

    `logits` are the beats' own log-odds (used where `candidate`), `template_ids` the serial number of
    the template each beat matched or created (``BeatClassifier.last_template``).  Returns the
    blended log-odds (own log-odds where the template is too young).  Where not a candidate the value
    is the blended `non_candidate` with `every_beat` (V where it passes the threshold), else meaningless.
    """
    out = np.array(logits, dtype=np.float64, copy=True)
    score: dict[int, float] = {}
    count: dict[int, int] = {}
    for i, t in enumerate(np.asarray(template_ids).tolist()):
        n = count.get(t, 0)
        s = score.get(t, 0.0)
        value = float(logits[i]) if candidate[i] else vote.non_candidate
        if candidate[i] or every_beat:
            out[i] = vote.blend(value, s, n)
        score[t] = vote.update(s, n, value)
        count[t] = n + 1
    return out


def load_model(path: Path = MODEL_PATH) -> TreeEnsemble | None:
    """The packaged V classifier, or None when the file is absent (then the fallback rule is used)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    model = TreeEnsemble(doc)
    if tuple(model.features) != FEATURE_NAMES:
        raise ValueError(f"{path}: model features {model.features} do not match {FEATURE_NAMES}")
    return model


_MODEL: TreeEnsemble | None = load_model()
_LABEL_MODEL: TreeEnsemble | None = load_model(LABEL_MODEL_PATH)


class BeatClassifier:
    """Multi-template beat classifier (one per channel), after Hamilton's OSEA.

    Up to `MAX_TEMPLATES` running templates are kept, each with a decaying count of the beats that
    matched it (correlation ≥ `MATCH`, best over ±30 ms shifts); the template with the largest count
    is the dominant (normal) morphology, unless a markedly narrower template whose beats are not
    premature is at least half as frequent (`_dominant`).  Beats before any template are labelled N.
    """

    def __init__(self, fs: float, n_leads: int = 1, model: TreeEnsemble | None = None,
                 label_model: TreeEnsemble | None = None) -> None:
        """Create a classifier for `n_leads` band-passed leads at `fs` Hz (models: default packaged)."""
        self.fs = fs
        self.n_leads = n_leads
        self.model = model if model is not None else _MODEL
        self.label_model = label_model if label_model is not None else _LABEL_MODEL
        self.half = max(2, int(round(HALF_S * fs)))
        self.shift = max(1, int(round(SHIFT_S * fs)))
        self.pre_n = max(1, int(round(PRE_S * fs)))
        self._next_id = 0
        self.reset()

    def reset(self) -> None:
        """Forget the templates and the RR history (after a gap)."""
        self.templates: list[FloatArray] = []
        self._tt: list[tuple[FloatArray, float] | None] = []  # centred template cores (see _centred)
        self._tt_stack: FloatArray | None = None  # (MAX_TEMPLATES, leads, n) centred cores
        self._ee = np.zeros(MAX_TEMPLATES)  # their energies
        self._stats: list[_TemplateStats | None] = []  # per-template feature references (see _tpl_stats)
        self._rstats: list[tuple[float, float] | None] = []  # per-template V-rule references (_rule_stats)
        self.counts: list[float] = []
        self._rr_before: list[float] = []  # per template: running mean RR before its beats (samples; 0 = unknown)
        self._rr: deque[float] = deque(maxlen=8)
        self._last_r: int | None = None
        self._prev_corr = 1.0
        self._label_votes = _SlotVotes()  # the label model's TemplateVote state per template slot
        self._strict_votes = _SlotVotes()  # the veto model's (strict label)
        self._ids: list[int] = []  # per template slot: its serial number (never reused, even after a reset)
        self.last_template = -1  # serial number of the template the last beat matched or created

    @property
    def window(self) -> int:
        """Samples after R needed by `classify`."""
        return self.half + self.shift

    @property
    def pre(self) -> int:
        """Samples before R needed by `classify`."""
        return self.half + self.shift + self.pre_n

    def _best(self, seg: FloatArray, tpl: FloatArray) -> tuple[float, int]:
        """Best Pearson correlation of `tpl` against `seg` over the allowed shifts, and the shift."""
        v, vv = self._shifts(seg)
        n = 2 * self.half + 1
        tpl = tpl[:, -n:]
        tt = tpl - tpl.mean(axis=-1, keepdims=True)
        return self._best_of(v, vv, tt, float(np.sum(tt * tt)))

    def _shifts(self, seg: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Mean-removed sliding windows of `seg` (leads, shifts, n) and their energy per shift."""
        n = 2 * self.half + 1
        base = seg.base
        if (isinstance(base, np.ndarray) and base.flags.c_contiguous and base.dtype == np.float64
                and seg.strides == base.strides and base.ndim == 2):  # a column slice of a C array (the usual case)
            views = np.ndarray((seg.shape[0], seg.shape[1] - n + 1, n), np.float64, buffer=base,
                               offset=seg.__array_interface__["data"][0] - base.__array_interface__["data"][0],
                               strides=(seg.strides[0], seg.strides[1], seg.strides[1]))  # = sliding_window_view
        else:
            views = np.lib.stride_tricks.sliding_window_view(seg, n, axis=-1)  # (leads, shifts, n)
        v = views - views.mean(axis=-1, keepdims=True)
        return v, np.einsum("lsn,lsn->s", v, v)

    def _centred(self, j: int) -> tuple[FloatArray, float]:
        """Mean-removed core of template `j` and its energy (cached until the template changes).

        The cores are kept stacked (slot `j` of ``_tt_stack``) so that one ``einsum`` matches a beat
        against every template (`_match_all`).
        """
        c = self._tt[j]
        if c is None:
            tpl = self.templates[j][:, -(2 * self.half + 1):]
            tt = tpl - tpl.mean(axis=-1, keepdims=True)
            if self._tt_stack is None:  # the first template fixes the shape (leads × core)
                self._tt_stack = np.zeros((MAX_TEMPLATES, *tt.shape))
            self._tt_stack[j] = tt
            self._ee[j] = float(np.sum(tt * tt))
            c = self._tt[j] = (self._tt_stack[j], self._ee[j])
        return c

    def _match_all(self, v: FloatArray, vv: FloatArray) -> list[tuple[float, int]]:
        """`_best_of` against every template at once (the same products and sums, one ``einsum``)."""
        t = len(self.templates)
        for j in range(t):
            self._centred(j)
        assert self._tt_stack is not None
        num = np.einsum("lsn,tln->ts", v, self._tt_stack[:t])
        den = np.sqrt(vv * self._ee[:t, None]) + 1e-12
        c = num / den
        ks = c.argmax(axis=1)
        return [(float(c[j, k]), int(k)) for j, k in enumerate(ks.tolist())]

    @staticmethod
    def _best_of(v: FloatArray, vv: FloatArray, tt: FloatArray, ee: float) -> tuple[float, int]:
        """`_best` from precomputed windows `v`, their energies `vv` and a centred template (`tt`, `ee`)."""
        num = np.einsum("lsn,ln->s", v, tt)
        den = np.sqrt(vv * ee) + 1e-12
        c = num / den
        k = int(np.argmax(c))
        return float(c[k]), k

    def _new_template(self, seg: FloatArray, rr: float = 0.0) -> int:
        """Start a template from this beat (replacing the least frequent when full); its slot."""
        n = 2 * self.half + 1 + self.pre_n
        tpl = seg[:, self.shift:self.shift + n].copy()
        if len(self.templates) < MAX_TEMPLATES:
            self.templates.append(tpl)
            self._tt.append(None)
            self._stats.append(None)
            self._rstats.append(None)
            self.counts.append(1.0)
            self._rr_before.append(rr)
            self._ids.append(self._next_id)
            j = len(self.templates) - 1
        else:
            j = int(np.argmin(self.counts))
            self.templates[j] = tpl
            self._tt[j] = None
            self._stats[j] = None
            self._rstats[j] = None
            self.counts[j] = 1.0
            self._rr_before[j] = rr
            self._ids[j] = self._next_id
        self._label_votes.clear(j)
        self._strict_votes.clear(j)
        self.last_template = self._next_id
        self._next_id += 1
        return j

    def _dominant(self) -> int:
        """Index of the reference template: the most frequent, unless a markedly narrower one is frequent too.

        Among templates at most `DOM_WIDTH_RATIO` as wide (lead 1) as the most frequent one, with at
        least `DOM_COUNT_RATIO` of its decaying count and a mean preceding RR at least `DOM_RR_RATIO` of
        its (not premature: a narrow PVC in a bundle-branch-block patient must not take over), the most
        frequent is taken instead.  Counts alone let frequent PVCs (bigeminy, couplets) or a ventricular
        run become the reference, after which V beats match it and are labelled N (mitdb 208: 158 of 298
        V beats in 7.5-15 min).
        """
        d = argmax(self.counts)
        if len(self.counts) < 2:
            return d
        floor = DOM_COUNT_RATIO * self.counts[d]
        max_width = DOM_WIDTH_RATIO * self._rule_stats(d)[0]
        min_rr = DOM_RR_RATIO * self._rr_before[d]
        best = d
        for j, c in enumerate(self.counts):
            if (j != d and c >= floor and self._rule_stats(j)[0] <= max_width and self._rr_before[j] >= min_rr
                    and (best == d or c > self.counts[best])):
                best = j
        return best

    def _rule_stats(self, j: int) -> tuple[float, float]:
        """Width and peak-to-peak of template `j`, lead 1 (what the V rule compares against; cached)."""
        st = self._rstats[j]
        if st is None:
            dom0 = self.templates[j][0, -(2 * self.half + 1):]
            st = self._rstats[j] = (_width(dom0, self.fs) or 1e-9, _ptp(dom0) or 1e-9)
        return st

    def _tpl_stats(self, j: int) -> _TemplateStats:
        """Per-template numbers the model features compare against (cached until the template changes)."""
        st = self._stats[j]
        if st is None:
            tpl = self.templates[j]
            dom = tpl[:, -(2 * self.half + 1):]
            pre_t = tpl[:, :self.pre_n]
            pt = pre_t - pre_t.mean(axis=-1, keepdims=True)
            st = self._stats[j] = _TemplateStats(
                pt=pt, pt_energy=float(np.sum(pt * pt)), pre_p2p=_ptp(pre_t[0]) or 1e-9,
                p2p_last=_ptp(dom[-1]) or 1e-9, energy=float(np.sum(dom * dom)) or 1e-12,
                slope=_slope(dom[0]) or 1e-9, polarity=_polarity(dom[0]))
        return st

    def _match(self, seg: FloatArray, r: int) -> _Match | None:
        """Update the templates and RR history with one beat; what its features need (None: the first beat)."""
        seg = np.atleast_2d(seg)
        full = seg
        seg = full[:, self.pre_n:]  # the ±(half + shift) core
        n = 2 * self.half + 1
        m = n + self.pre_n
        rr = None if self._last_r is None else r - self._last_r
        self._last_r = r
        med = median(self._rr) if self._rr else None
        prem = rr / med if (rr is not None and med) else 1.0
        cv = std(self._rr) / med if (med and len(self._rr) >= 4) else 1.0
        self.counts = [c * DECAY for c in self.counts]
        if not self.templates:
            self._new_template(full)
            return None
        v, vv = self._shifts(seg)  # shared by every template match of this beat
        matches = self._match_all(v, vv)
        k = argmax([mt[0] for mt in matches])
        corr_k, sh_k = matches[k]
        d_before = self._dominant()
        share = self.counts[k] / (sum(self.counts) or 1.0) if corr_k >= MATCH else 0.0
        is_dom = 1.0 if (corr_k >= MATCH and k == d_before) else 0.0
        tpl_pair: tuple[FloatArray, FloatArray] | None = None  # (matched, dominant) when they differ
        if corr_k >= MATCH:
            if k != d_before:
                tpl_pair = (self.templates[k], self.templates[d_before])  # never modified in place
            self.templates[k] = 0.92 * self.templates[k] + 0.08 * full[:, sh_k:sh_k + m]
            self._tt[k] = None
            self._stats[k] = None
            self._rstats[k] = None
            self.counts[k] += 1.0
            self.last_template = self._ids[k]
            if rr is not None:
                self._rr_before[k] = float(rr) if self._rr_before[k] <= 0 else 0.9 * self._rr_before[k] + 0.1 * rr
            slot = k
        else:
            slot = self._new_template(full, float(rr or 0))
        d = self._dominant()
        corr_d, sh_d = self._best_of(v, vv, *self._centred(d))
        out = _Match(full=full, seg=seg, dom_full=self.templates[d], dom=d, corr=corr_d,
                     shift=sh_d, prematurity=prem, rr_cv=cv, prev_corr=self._prev_corr, share=share,
                     is_dom=is_dom, tpl_corr=1.0 if corr_k >= MATCH else 0.0, tpl_pair=tpl_pair, slot=slot)
        self._prev_corr = corr_d
        if rr is not None and corr_d >= RR_MATCH:
            self._rr.append(float(rr))
        return out

    def _rule_inputs(self, mt: _Match) -> tuple[float, float, float]:
        """(width ratio, width s, amplitude ratio) of a matched beat: what the V rule needs besides corr."""
        core0 = mt.seg[0, mt.shift:mt.shift + 2 * self.half + 1]
        wb = _width(core0, self.fs)
        width, p2p = self._rule_stats(mt.dom)
        return wb / width, wb, _ptp(core0) / p2p

    def _features(self, mt: _Match) -> BeatFeatures:
        """All features of a matched beat (no state changes; call before the next `_match`)."""
        n = 2 * self.half + 1
        st = self._tpl_stats(mt.dom)
        sh_d = mt.shift
        core = mt.seg[:, sh_d:sh_d + n]
        dom = mt.dom_full[:, -n:]
        pre_b = mt.full[:, sh_d:sh_d + self.pre_n]
        pb = pre_b - pre_b.mean(axis=-1, keepdims=True)
        den = float(np.sqrt(np.sum(pb * pb) * st.pt_energy))
        pre_corr = float(np.sum(pb * st.pt)) / den if den > 0 else 0.0
        pre_amp = _ptp(pre_b[0]) / st.pre_p2p
        tpl_corr = mt.tpl_corr
        if mt.tpl_pair is not None:
            tk, td = mt.tpl_pair
            tpl_corr = self._best(np.pad(tk[:, -n:], ((0, 0), (self.shift, self.shift)), mode="edge"), td)[0]
        width_ratio, wb, amp_ratio = self._rule_inputs(mt)
        return BeatFeatures(
            corr=mt.corr, corr0=_corr(core[0], dom[0]), width_ratio=width_ratio, width_ms=1000.0 * wb,
            amp_ratio=amp_ratio, amp_ratio_last=_ptp(core[-1]) / st.p2p_last,
            log_energy_ratio=math.log(max(float(np.sum(core * core)), 1e-12) / st.energy),
            polarity_change=(_polarity(core[0]) - st.polarity) * (1.0 if st.polarity >= 0.0 else -1.0),
            slope_ratio=_slope(core[0]) / st.slope, prematurity=mt.prematurity, rr_cv=mt.rr_cv,
            prev_corr=mt.prev_corr, tpl_share=mt.share, tpl_is_dominant=mt.is_dom, tpl_corr=tpl_corr,
            pre_corr=pre_corr, pre_amp_ratio=pre_amp)

    def features(self, seg: FloatArray, r: int) -> BeatFeatures | None:
        """Update the templates with one beat and return its features (None for the very first).

        `seg` holds leads × (pre + 1 + window) band-passed samples centred on R at sample `r`.
        """
        mt = self._match(seg, r)
        return None if mt is None else self._features(mt)

    def classify(self, seg: FloatArray, r: int) -> tuple[BeatLabel, BeatFeatures | None]:
        """Label one beat from `seg` (leads × (pre + 1 + window), R at column `pre`, sample `r`)."""
        f = self.features(seg, r)
        if f is None:
            return "N", None
        return decide(f, self.model, self.label_model), f

    def label(self, seg: FloatArray, r: int) -> BeatLabel:
        """The reported label of one beat (the first of `labels`)."""
        return self.labels(seg, r)[0]

    def _decide(self, model: TreeEnsemble, votes: _SlotVotes, rule: bool, mt: _Match,
                x: list[float] | None) -> tuple[bool, list[float] | None]:
        """`model`'s V decision on a matched beat (with its template vote, if any) and the feature vector.

        The features are computed only for the model's candidates, once (`x` passes them on).
        """
        cand = _gate(rule, mt.corr, model)
        logit: float | None = None
        if cand:
            if x is None:
                x = self._features(mt).vector()
            logit = model.logit(x)
        if model.vote is not None:
            return votes.decide(model.vote, mt.slot, logit, model.threshold, model.vote.every_beat(self.n_leads)), x
        return logit is not None and logit > model.threshold, x

    def labels(self, seg: FloatArray, r: int) -> tuple[BeatLabel, BeatLabel]:
        """(label, strict label) of one beat, computing the model features only for V candidates.

        The label is the gated label model's V decision (the strict one without a label model); the
        strict label (rule V not vetoed) is what VT runs count.  A subclass that overrides `classify`
        (e.g. to record features) is called through it.
        """
        if type(self).classify is not BeatClassifier.classify:
            lab, f = self.classify(seg, r)
            return lab, (lab if f is None else decide_strict(f, self.model))
        mt = self._match(seg, r)
        if mt is None:
            return "N", "N"
        width_ratio, _, amp_ratio = self._rule_inputs(mt)
        rule = _rule_v(mt.corr, width_ratio, amp_ratio, mt.prematurity)
        strict = rule
        x: list[float] | None = None
        if self.model is not None:
            strict, x = self._decide(self.model, self._strict_votes, rule, mt, x)
        is_v = strict
        if self.label_model is not None:
            is_v, x = self._decide(self.label_model, self._label_votes, rule, mt, x)
        other = _supraventricular(mt.prematurity, mt.rr_cv, mt.corr)
        return ("V" if is_v else other), ("V" if strict else other)


@dataclass(frozen=True, slots=True)
class _TemplateStats:
    """Numbers of one template version used by every beat compared with it."""

    pt: FloatArray  # centred pre-QRS segment (all leads)
    pt_energy: float
    pre_p2p: float  # peak-to-peak of the pre-QRS segment, lead 1
    p2p_last: float
    energy: float
    slope: float
    polarity: float


@dataclass(frozen=True, slots=True)
class _Match:
    """One beat matched against the templates: everything its features are computed from."""

    full: FloatArray
    seg: FloatArray
    dom_full: FloatArray
    dom: int  # index of the dominant template (its cached statistics are valid until the next _match)
    corr: float
    shift: int
    prematurity: float
    rr_cv: float
    prev_corr: float
    share: float
    is_dom: float
    tpl_corr: float
    tpl_pair: tuple[FloatArray, FloatArray] | None
    slot: int  # the template slot the beat matched or created


def _rule_v(corr: float, width_ratio: float, amp_ratio: float, prematurity: float) -> bool:
    return corr < CORR_V or (corr < CORR_WIDE and (width_ratio > WIDTH_V or amp_ratio > AMP_V)) \
        or (corr < CORR_PREM and prematurity < PREM_V)


def _supraventricular(prematurity: float, rr_cv: float, corr: float) -> BeatLabel:
    return "S" if prematurity < PREMATURE_S and rr_cv < REGULAR_CV and corr >= CORR_S else "N"


def rule_v(f: BeatFeatures) -> bool:
    """The hand rule for V (OSEA-like): unlike the dominant beat, and wider, taller or very premature."""
    return _rule_v(f.corr, f.width_ratio, f.amp_ratio, f.prematurity)


def _gate(rule: bool, corr: float, model: TreeEnsemble) -> bool:
    return rule or (model.gate_corr is not None and corr < model.gate_corr)


def candidate_v(f: BeatFeatures, model: TreeEnsemble | None = _MODEL) -> bool:
    """Whether `model` decides on the beat: the rule fires, or (``gate_corr`` models) corr < gate_corr."""
    if model is None:
        return rule_v(f)
    return _gate(rule_v(f), f.corr, model)


def decide_strict(f: BeatFeatures, model: TreeEnsemble | None = _MODEL) -> BeatLabel:
    """V when the beat is a V candidate (`candidate_v`) the ensemble accepts; else S by prematurity; else N."""
    is_v = rule_v(f)
    if model is not None:
        is_v = _gate(is_v, f.corr, model) and model.logit(f.vector()) > model.threshold
    if is_v:
        return "V"
    return _supraventricular(f.prematurity, f.rr_cv, f.corr)


def decide(f: BeatFeatures, model: TreeEnsemble | None = _MODEL,
           label_model: TreeEnsemble | None = None) -> BeatLabel:
    """The reported label: `decide_strict` with `label_model` (when given) deciding V instead of `model`."""
    return decide_strict(f, model if label_model is None else label_model)
