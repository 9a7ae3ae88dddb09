"""VT confirmation stage of the alarm path: does the pulse wave agree that a VT run is happening?

The beat classifier calls VT on ≥ 5 consecutive ventricular beats at > 100 bpm (CinC 2015
definition, Clifford et al., Physiol. Meas. 37(8), 2016). Most arrhythmia alarms in ICU
monitoring are false (88.8 % of those annotated by Drew et al., PLOS ONE 2014, e110274); a frequent
cause is ECG artefact — motion or high-frequency noise read as wide, fast complexes while the heart
keeps beating as before. The
stronger challenge entries (Plesinger et al., "Taming of the monitors"; Kalidas & Tamil;
Eerikäinen et al.; Fallet et al.; all Physiol. Meas. 37(8), 2016) combine the ECG with the
pulsatile channels (ABP, PPG) to accept or reject ECG arrhythmia calls. This stage follows that
idea with a small, transparent rule set instead of a trained classifier (40 records are too few).

Main rule (one-sided: it can only hold a VT call back):

* baseline — pulse peaks of the band-passed (0.5–8 Hz) pleth/ABP over the `baseline_s` before the
  run: ≥ 5 peaks, regular (interval CV ≤ `max_baseline_cv`); median interval and upstroke amplitude;
* during the run (from its first ventricular beat + `transit_s` to now) the pulse is **unchanged**
  when it has ≥ `min_intervals` intervals, every interval lies within ±`ibi_tol` of the baseline
  interval, every pulse upstroke keeps ≥ `amp_floor` of the baseline amplitude, and no pulse is overdue.
  It contradicts the run only when the run's own V-beat interval is shorter than the baseline pulse
  interval by more than `ibi_tol` (otherwise the pulse could simply be following the run).
  A real VT either drives the pulse at its own rate or weakens/irregularises it (stroke volume
  falls on fast ventricular beats), so a pulse that carries on exactly as before contradicts it;
* anything else is **changed** (supports VT) or **unknown** (too little data, irregular or absent
  baseline): no opinion, VT is raised as the beat classifier says.

Two more rules, both tied to the pulse evidence:

* noise — a VT call the pulse does not support ("unknown") is held back when the ECG had
  ≥ `noise_max` noise/saturation seconds in the last `noise_window_s` (an artefact-laden ECG
  cannot raise VT alone: issue 4's fusion rule), unless a
  pulse monitor reports no pulse at all;
* short run — `run_min_v` consecutive V beats at > 100 bpm (fewer than the 5 of the definition:
  the QRS detector drops complexes inside fast wide runs) raise VT when a pulse wave *changed*
  with them (the same pulse-response evidence, used the other way round).

A third source of VT works on the ECG itself, not on the beats: the spectral wide-complex detector
(`vigil.signal.vtspec`, one per ECG lead; off when `spi_min` > 1) raises VT while some lead
oscillates at 100–250 /min with a spectral purity ≥ `spi_min` (the beat path misses runs whose
complexes are dropped or called N, e.g. when the dominant template is itself wide). Its call goes
through the same vetoes as a beat-wise run, with the run's interval taken from the dominant frequency.

Pure numpy/scipy on buffered samples; no I/O, no clock (times are the caller's monotonic seconds).
Thresholds are module defaults chosen by 5-fold cross-validation over challenge2015 records
(``python -m vigil.evaluation.eval_alarms cv``; see README "Alarms").
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from vigil.signal.pace import PaceRejector
from vigil.signal.vtspec import MAX_VT_RATE_HZ, VT_RATE_HZ, SpecParams, SpectralVtDetector

FloatArray = npt.NDArray[np.float64]
Verdict = Literal["unchanged", "changed", "unknown"]

BUFFER_S = 40.0  # pulse history kept per wave
BEAT_LATENCY_S = 0.3  # the analyser reports a beat about this long after its R peak
NOISE_FLAGS = frozenset({"noise", "saturation"})
EVAL_EVERY_S = 0.5  # the pulse evidence of a held VT call is re-assessed this often (engine ticks at 10 Hz)
RISE_S = 0.4  # the pulse upstroke (foot to peak) lies within this before the peak


@dataclass(frozen=True, slots=True)
class VtParams:
    """Thresholds of the pulse-continuity rule (see the module docstring)."""

    ibi_tol: float = 0.25
    amp_floor: float = 0.80
    min_intervals: int = 1
    baseline_s: float = 20.0
    transit_s: float = 0.3
    max_baseline_cv: float = 0.15
    run_min_v: int = 3  # > 0: this many consecutive V beats at > 100 bpm with a changed pulse also raise VT
    noise_max: int = 2  # > 0: VT with no pulse change is held back after this many noisy ECG seconds...
    noise_window_s: float = 10.0  # ...within this window
    spi_min: float = 0.45  # spectral wide-complex detector (vigil.signal.vtspec) raises VT at this purity; > 1: off
    spec_window_s: float = 4.0
    spec_hold: int = 2
    spec_sub_max: float = 0.25
    spec_agree: float = 0.0  # > 0: a lead's spectral VT needs every other usable ECG lead's rate within ±this share


DEFAULT_PARAMS = VtParams()
_active: list[VtParams] = [DEFAULT_PARAMS]


def active_params() -> VtParams:
    """Parameters new stages use (the defaults unless an evaluation overrides them)."""
    return _active[-1]


@contextlib.contextmanager
def params_override(params: VtParams) -> Iterator[VtParams]:
    """Use `params` for stages created inside the block (cross-validation harness only)."""
    _active.append(params)
    try:
        yield params
    finally:
        _active.pop()


@dataclass(frozen=True, slots=True)
class PulseResponse:
    """What one pulse wave did during a VT run."""

    verdict: Verdict
    baseline_ibi_s: float = math.nan
    ibi_ratios: tuple[float, ...] = ()
    amp_ratios: tuple[float, ...] = ()
    why: str = ""


@functools.lru_cache(maxsize=8)
def _bandpass(fs: float) -> FloatArray:
    """0.5–8 Hz 2nd-order Butterworth band-pass (second-order sections) for `fs`."""
    import scipy.signal as sps

    return np.asarray(sps.butter(2, [0.5, min(8.0, fs / 2.5)], btype="bandpass", fs=fs, output="sos"))


def pulse_peaks(x: FloatArray, fs: float, prominence: float) -> tuple[FloatArray, FloatArray]:
    """Peak positions (s from the segment start) and upstroke amplitudes of the 0.5–8 Hz band-passed wave."""
    import scipy.signal as sps

    if len(x) < int(2 * fs):
        return np.zeros(0), np.zeros(0)
    y = sps.sosfiltfilt(_bandpass(fs), x - float(np.mean(x)))
    pk, _ = sps.find_peaks(y, distance=max(1, int(0.25 * fs)), prominence=prominence)
    rise = int(RISE_S * fs)  # amplitude = upstroke from the trough before the peak (needs no later samples)
    amps = np.array([y[k] - y[max(0, k - rise):k + 1].min() for k in pk], dtype=float)
    return pk / fs, amps


def pulse_response(x: FloatArray, fs: float, t0: float, run_start: float, now: float,
                   params: VtParams | None = None) -> PulseResponse:
    """Classify the pulse wave `x` (first sample at time `t0`) during a VT run from `run_start` to `now`.

    Baseline and run criteria as in the module docstring (after Plesinger et al. 2016 and
    Kalidas & Tamil 2016: an arrhythmia the pulse does not show is rejected).
    """
    p = params or active_params()
    x = np.asarray(x, dtype=float)
    b0 = run_start - p.baseline_s
    if t0 > b0 + 0.5 * p.baseline_s or len(x) == 0:
        return PulseResponse("unknown", why="too little pulse history")
    i0 = max(0, int((b0 - t0) * fs))
    i1 = min(len(x), int((now - t0) * fs))
    seg = x[i0:i1]
    base_n = int((run_start - b0) * fs)
    if len(seg) <= base_n + int(fs):
        return PulseResponse("unknown", why="too little pulse data in the run")
    base = seg[:base_n]
    spread = float(np.percentile(base, 95) - np.percentile(base, 5))
    if spread <= 0:
        return PulseResponse("unknown", why="flat pulse baseline")
    ts, prom = pulse_peaks(seg, fs, 0.3 * spread)
    ts = ts + (t0 + i0 / fs)
    in_base = ts < run_start - 0.2
    if in_base.sum() < 5:
        return PulseResponse("unknown", why="no regular pulse before the run")
    ibi_base = np.diff(ts[in_base])
    ibi_b = float(np.median(ibi_base))
    if ibi_b <= 0 or float(np.std(ibi_base) / np.mean(ibi_base)) > p.max_baseline_cv:
        return PulseResponse("unknown", baseline_ibi_s=ibi_b, why="irregular pulse before the run")
    amp_b = float(np.median(prom[in_base]))
    start = run_start + p.transit_s
    edge = now - 0.25  # the filter's last quarter second is not trusted for peaks
    run_idx = np.flatnonzero((ts >= start) & (ts <= edge))
    if len(run_idx) == 0:
        overdue = edge - max(start, float(ts[in_base][-1])) > 1.5 * ibi_b
        return PulseResponse("changed" if overdue else "unknown", ibi_b,
                             why="pulse stopped during the run" if overdue else "no pulse in the run yet")
    first = int(run_idx[0])
    seq = ts[max(0, first - 1):int(run_idx[-1]) + 1]
    ibis = tuple(float(v) / ibi_b for v in np.diff(seq))
    amps = tuple(float(a) / amp_b for a in prom[run_idx])
    overdue = edge - float(ts[run_idx[-1]]) > (1.0 + p.ibi_tol) * ibi_b + 0.1
    deviates = (any(abs(r - 1.0) > p.ibi_tol for r in ibis) or any(a < p.amp_floor for a in amps)
                or overdue)
    if deviates:
        return PulseResponse("changed", ibi_b, ibis, amps, "pulse rate or amplitude changed with the run")
    if len(ibis) < p.min_intervals:
        return PulseResponse("unknown", ibi_b, ibis, amps, "too few pulses in the run yet")
    return PulseResponse("unchanged", ibi_b, ibis, amps, "pulse unchanged through the run")


class _Wave:
    """Ring of one pulse wave with the monotonic time of its first sample."""

    def __init__(self, fs: float) -> None:
        self.fs = fs
        self.buf: deque[FloatArray] = deque()
        self.n = 0
        self.t_end = -math.inf
        self.cap = int(BUFFER_S * fs)

    def feed(self, x: FloatArray, t_end: float) -> None:
        if self.n and abs(t_end - len(x) / self.fs - self.t_end) > 1.0:  # a jump: start afresh
            self.buf.clear()
            self.n = 0
        self.buf.append(x)
        self.n += len(x)
        self.t_end = t_end
        while self.n - len(self.buf[0]) >= self.cap:
            self.n -= len(self.buf.popleft())

    def array(self) -> tuple[FloatArray, float]:
        x = np.concatenate(list(self.buf)) if self.buf else np.zeros(0)
        return x, self.t_end - len(x) / self.fs


class VtStage:
    """Per-guest VT confirmation: pulse waves, recent beats and ECG quality, the open VT run."""

    def __init__(self, params: VtParams | None = None) -> None:
        """Create a stage (thresholds default to `active_params()`)."""
        self.params = params or active_params()
        self._waves: dict[str, _Wave] = {}
        self._beats: deque[tuple[int, float, str]] = deque(maxlen=64)  # sample, t_mono reported, label
        self._noisy: deque[float] = deque(maxlen=64)  # t_mono of noise-flagged quality seconds
        self._run_start: float | None = None
        self.candidate = False  # a short ventricular run confirmed by a changed pulse (see on_beat)
        self.last: dict[str, PulseResponse] = {}
        self._last_eval: tuple[float, float] | None = None  # (run start, time) of `last`
        self._spec: dict[str, list] = {}  # ECG channel -> [SpectralVtDetector, t_mono of its last sample,
        #                                  its PaceRejector, samples fed to that rejector]
        self._spec_checked = -math.inf  # when `spectral` was last recomputed
        self.spectral = False  # the spectral detector sees a fast wide-complex rhythm (see feed_ecg)
        self._spec_start: float | None = None

    def feed_ecg(self, samples: FloatArray, fs: float, t_end: float, channel: str = "ecg") -> bool:
        """Add ECG samples (µV; n or n × leads) of `channel` ending at monotonic `t_end`.

        Each ECG channel (lead) has its own spectral detector; `spectral` is on while any is.
        Returns True when `spectral` changed.
        """
        p = self.params
        if p.spi_min > 1.0:
            return False
        x = np.asarray(samples, dtype=float)
        if x.ndim == 1:
            x = x[:, None]
        entry = self._spec.get(channel)
        if entry is None or entry[0].fs != fs or entry[0].n_leads != x.shape[1]:
            entry = self._spec[channel] = [SpectralVtDetector(fs, x.shape[1], SpecParams(
                spi_min=p.spi_min, window_s=p.spec_window_s, hold=p.spec_hold, sub_max=p.spec_sub_max)), t_end,
                PaceRejector(fs, x.shape[1]), 0]
        elif abs(t_end - len(x) / fs - entry[1]) > 1.0:  # a jump: start afresh
            entry[0].reset()
            entry[3] = 0
        entry[1] = t_end
        clean, _ = entry[2].feed(x, entry[3])  # pacemaker pulses cut out, as the analyser does (a few samples wait)
        entry[3] += len(x)
        entry[0].feed(clean)
        before = self.spectral
        if entry[0].evaluated or t_end - self._spec_checked >= EVAL_EVERY_S:  # `on` changes only at evaluations
            self._spec_checked = t_end
            self.spectral = any(d.on and now_t >= t_end - 2.0 and self._leads_agree(d, t_end)
                                for d, now_t, *_ in self._spec.values())
        if self.spectral and not before:
            self._spec_start = t_end - p.spec_window_s / 2
        elif not self.spectral:
            self._spec_start = None
        return before != self.spectral

    def feed_pulse(self, kind: str, samples: FloatArray, fs: float, t_end: float) -> None:
        """Add pulse-wave samples (physical units) ending at monotonic time `t_end`."""
        w = self._waves.get(kind)
        if w is None or w.fs != fs:
            w = self._waves[kind] = _Wave(fs)
        w.feed(np.asarray(samples, dtype=float), t_end)

    def on_quality(self, t_mono: float, flags: tuple[str, ...]) -> None:
        """One second of ECG quality; noise/saturation seconds count against a VT call."""
        if NOISE_FLAGS.intersection(flags):
            self._noisy.append(t_mono)

    def on_beat(self, sample: int, t_mono: float, label: str = "N") -> bool:
        """Remember a beat; returns True when `candidate` changed.

        Candidate (off when ``run_min_v`` is 0): the latest ``run_min_v`` or more consecutive V beats
        at > 100 bpm while a pulse wave *changed* with them — one V beat short of the CinC run
        length, which the beat detector misses inside real VT (beats are dropped in fast wide runs).
        """
        self._beats.append((sample, t_mono, label))
        before = self.candidate
        n = self.params.run_min_v
        if n <= 0:
            return False
        run = []
        for s, t, lab in reversed(self._beats):
            if lab != "V":
                break
            run.append((s, t))
        if len(run) < n:
            # no qualifying run (or it just ended): the candidate ends with it
            self.candidate = False
            return before != self.candidate
        run.reverse()
        fs = self._fs()
        rate = 60.0 * (len(run) - 1) * fs / (run[-1][0] - run[0][0]) if fs and run[-1][0] > run[0][0] else 0.0
        if rate > 100.0 and not self.candidate:
            resp = self._responses(run[0][1] - BEAT_LATENCY_S, t_mono)
            verdicts = {r.verdict for r in resp.values()}
            self.candidate = "changed" in verdicts and "unchanged" not in verdicts
        return before != self.candidate

    def _leads_agree(self, det: SpectralVtDetector, now: float) -> bool:
        """True unless another fresh ECG lead with QRS-sized deflections oscillates at another rate."""
        tol = self.params.spec_agree
        if tol <= 0.0:
            return True
        rates = [r for r, spi, _ in det.last if spi >= self.params.spi_min and VT_RATE_HZ < r <= MAX_VT_RATE_HZ]
        if not rates:
            return True
        rate = max(rates)
        for other, t, *_ in self._spec.values():
            if other is det or t < now - 2.0:
                continue
            for r, _, p2p in other.last:
                if p2p >= other.params.min_p2p_uv and math.isfinite(r) and abs(r / rate - 1.0) > tol:
                    return False
        return True

    def _run_interval(self) -> float | None:
        """Mean interval (s) of the V beats of the open run (else the spectral rate's), or None."""
        if self._run_start is None:
            f0 = max((f for d, *_ in self._spec.values() if d.on for f, spi, _ in d.last
                      if spi >= self.params.spi_min and VT_RATE_HZ < f <= MAX_VT_RATE_HZ), default=0.0)
            return 1.0 / f0 if self.spectral and f0 > 0 else None
        fs = self._fs()
        vs = [smp for smp, t, lab in self._beats if lab == "V" and t >= self._run_start + BEAT_LATENCY_S - 1e-6]
        if fs is None or len(vs) < 2 or vs[-1] <= vs[0]:
            return None
        return (vs[-1] - vs[0]) / (len(vs) - 1) / fs

    def _fs(self) -> float | None:
        """ECG sampling rate estimated from beat samples against their report times (≥ 20 s span)."""
        if len(self._beats) < 2:
            return None
        (s0, t0, _), (s1, t1, _) = self._beats[0], self._beats[-1]
        return (s1 - s0) / (t1 - t0) if t1 - t0 >= 20.0 else None

    def on_vt(self, start_sample: int, open_: bool, t_mono: float) -> None:
        """A VT episode opened (first ventricular beat at `start_sample`) or ended."""
        if not open_:
            self._run_start = None
            return
        t = next((tb for s, tb, _ in self._beats if s == start_sample), None)
        if t is None:  # beat not seen (e.g. before a restart): assume the usual 5 beats at 100 bpm
            t = t_mono - 2.4
        self._run_start = t - BEAT_LATENCY_S

    def _responses(self, run_start: float, now: float) -> dict[str, PulseResponse]:
        out = {}
        for kind, w in self._waves.items():
            if now - w.t_end > 2.0:
                continue  # stale wave: no evidence
            x, t0 = w.array()
            out[kind] = pulse_response(x, w.fs, t0, run_start, min(now, w.t_end), self.params)
        return out

    def veto(self, now: float, pulseless: bool = False) -> str | None:
        """Why the open VT run must not raise an alarm now, or None (no contradiction).

        `pulseless`: a pulse monitor reports no pulse at all (corroborates VT; no noise veto then).
        """
        run_start = self._run_start if self._run_start is not None else self._spec_start
        if run_start is None or self.candidate:
            return None
        ev = self._last_eval
        if ev is None or ev[0] != run_start or now - ev[1] >= EVAL_EVERY_S:  # ~2.5 ms per wave
            self.last = self._responses(run_start, now)
            self._last_eval = (run_start, now)
        verdicts = {r.verdict for r in self.last.values()}
        if "changed" in verdicts:
            return None  # the pulse changed with the run: VT stands
        p = self.params
        run_ibi = self._run_interval()
        # an unchanged pulse only contradicts a run clearly faster than it (else it may be following the run)
        unchanged = sorted(k for k, r in self.last.items() if r.verdict == "unchanged" and run_ibi is not None
                           and run_ibi < (1.0 - p.ibi_tol) * r.baseline_ibi_s)
        if unchanged:
            return f"{'/'.join(unchanged)} pulse unchanged through the VT run"
        noisy = sum(1 for t in self._noisy if now - t <= p.noise_window_s)
        if p.noise_max > 0 and noisy >= p.noise_max and not pulseless:
            return f"ECG noisy in {noisy} of the last {p.noise_window_s:g} s and no pulse change"
        return None
