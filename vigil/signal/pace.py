"""Pacemaker pulse rejection: find pacing spikes in the raw ECG samples and blank them before analysis.

A pacemaker pulse is a rectangular pulse of 0.1-2 ms and ±2 to ±700 mV at the skin (ANSI/AAMI
EC13:2002 §4.1.4.1, the range a heart rate meter must reject), often followed by a recharge
"tail" of the opposite polarity decaying with a 4-100 ms time constant (§4.1.4.2).  A monitor
digitising at a few hundred Hz sees the pulse as one or two samples that jump away from the ECG and
come straight back — the ADC integrates, so its height is the pulse's area over a sample period: at
500 Hz a 5 mV, 0.5 ms pulse is one sample 1.25 mV off its neighbours.  No cardiac wave does that:
an R wave takes ≥ 20 ms to rise and fall, so its apex has neighbours far from the baseline, and the
signal is already moving before it and still moving after it.

Left in, the pulse (or its tail) is what a QRS detector fires on: with a pacemaker that has lost
capture (pulses, no ventricular response) the monitor counts the pulses as beats and never calls
asystole — the failure EC13's pace-pulse tests exist for.  So each pulse is cut out before anything
else sees the samples (`PaceRejector`), in every lead: the pulse samples are replaced by a straight
line between their neighbours, a tail that fits an exponential is subtracted, and the pulse's sample
index is reported.

A pulse (found in any lead) is a run of 1 to ``ceil(2 ms × fs) + 1`` samples on one side of the
sample before it, starting with a jump of at least `TAILED_MIN_UV` and reaching at least `MIN_UV`
(`TAILED_MIN_UV` when a tail of at least `MIN_UV` follows: most of a short pulse can fall in one
sample period with its tail), such that

* the signal was flat before it: each of the two steps into the sample before the run is at most
  `FLAT_STEP` of the pulse height;
* it comes back: the sample after the run is within `RETURN` of the height of where it started, or
  beyond it (a tail);
* and then it is flat again (the step after the return at most `FLAT_STEP` of the height), unless
  a recharge tail follows: from the return sample or the one after, the samples of the next
  `TAIL_FIT_S` (at least `TAIL_FIT_MIN`) lie beyond the starting level, falling, and an exponential
  fits them within `TAIL_RESIDUAL` of the first (an S wave's return is not exponential).

Below `MIN_FS` the rejector is off: at 250 Hz and less a narrow R wave is one or two samples too, and
on MIT-BIH resampled to those rates R apexes passed the rules above (README "Pacemaker pulses");
a device sampling that slowly has to blank pacemaker pulses itself.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

MIN_FS = 300.0  # below this rate the rejector passes samples through untouched
PULSE_MAX_S = 0.002  # the widest pacemaker pulse (EC13: 0.1-2 ms)
MIN_UV = 300.0  # a pulse's sampled height must reach this (µV; smaller ones trigger nothing downstream) ...
TAILED_MIN_UV = 60.0  # ... or this when a tail of at least MIN_UV follows (a pulse shorter than its sample period)
FLAT_STEP = 0.25  # steps before the pulse and after its return, as a fraction of its height, at most
RETURN = 0.3  # the sample after the pulse is back within this fraction of its height (or beyond)
TAIL_FIT_S = 0.012  # the span after a pulse that decides whether it left a recharge tail, and fits it ...
TAIL_FIT_MIN = 4  # ... in at least this many samples
TAIL_FLOOR = 0.05  # the fit stops at the first sample below this fraction of the tail's first (a fast tail's end is noise)
TAIL_MIN_UV = 100.0  # a tail starting smaller than this is left alone
TAIL_RESIDUAL = 0.06  # an exponential: the fit misses no tail sample by more than this fraction of the first
TAIL_END_UV = 5.0  # a tail is subtracted until it has decayed below this
TAIL_MAX_DECAY = 0.999  # per sample: a fitted tail lasts at most ~1000 samples (2 s at 500 Hz)
CONTEXT = 3  # released samples kept to test the next block's first candidates


class PaceRejector:
    """Streaming pacemaker-pulse blanking on raw samples (n, leads); a block's last samples may wait for the next."""

    def __init__(self, fs: float, n_leads: int = 1, max_pulses: int = 256) -> None:
        """Create a rejector for `n_leads` leads at `fs` Hz, remembering the last `max_pulses` pulse samples."""
        self.fs = fs
        self.n_leads = n_leads
        self.enabled = fs >= MIN_FS
        self.max_width = int(math.ceil(PULSE_MAX_S * fs)) + 1
        self.tail_fit = max(TAIL_FIT_MIN, int(math.ceil(TAIL_FIT_S * fs)))
        self.after = 3 + self.tail_fit  # samples needed after a pulse run: the return, up to two more, a tail
        self.hold = self.max_width + self.after if self.enabled else 0  # at most this many samples wait (`_undecided`)
        self.pulses: deque[int] = deque(maxlen=max_pulses)  # sample indices of pulses found, oldest first
        self.count = 0  # pulses found since the stream began
        self.reset(0)

    def reset(self, seq: int) -> None:
        """Start a new stream at index `seq` (after a gap); samples still held are dropped."""
        self._buf = np.zeros((0, self.n_leads))
        self._start = seq  # index of _buf[0]
        self._released = 0  # _buf[:_released] has been handed on (context only)
        self._scanned = CONTEXT  # pulse starts below this _buf index have been tested
        # per lead, the tail being subtracted: (first index, amplitude there, decay per sample, end index)
        self._tail: list[tuple[int, float, float, int]] = [(0, 0.0, 0.0, 0)] * self.n_leads

    def feed(self, x: FloatArray, seq: int) -> tuple[FloatArray, int]:
        """Take samples [seq, seq + len(x)) of shape (n, leads); return the samples now released and the first's index."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), self.n_leads)
        if not self.enabled:
            return x, seq
        if seq != self._start + len(self._buf):
            self.reset(seq)
        old = len(self._buf)
        buf = np.concatenate([self._buf, x]) if old else x.copy()
        n = len(buf)
        self._subtract_tails(buf, old)
        last_start = n - self.max_width - self.after + 1  # a start needs its run and `after` samples
        if last_start > self._scanned:
            self._scan(buf, self._scanned, last_start)
            self._scanned = last_start
        upto = max(self._released, self._undecided(buf, max(self._scanned, CONTEXT), n))
        self._scanned = max(self._scanned, upto)  # the starts released untested could not begin a pulse
        out = buf[self._released:upto].copy()
        first = self._start + self._released
        keep = max(0, upto - CONTEXT)
        self._buf = buf[keep:]
        self._start += keep
        self._released = upto - keep
        self._scanned -= keep
        return out, first

    def _undecided(self, buf: FloatArray, lo: int, n: int) -> int:
        """The first start in [lo, n) that could still begin a pulse, else n: a jump of `TAILED_MIN_UV` in some lead.

        Samples before it are final and are released at once, so a block is held back only when one
        of its last samples jumps (within a QRS, say), not by a fixed delay — which, with blocks
        aligned to the analysis steps, delayed every step by a whole block.
        """
        if lo >= n:
            return n
        jumps = np.abs(buf[lo:n] - buf[lo - 1:n - 1]).max(axis=1) >= TAILED_MIN_UV
        first = int(np.argmax(jumps))
        return lo + first if jumps[first] else n

    def flush(self) -> tuple[FloatArray, int]:
        """Release the held samples at the end of a stream (the last few are not tested for pulses)."""
        out = self._buf[self._released:].copy()
        first = self._start + self._released
        self._released = self._scanned = len(self._buf)
        return out, first

    # ------------------------------------------------------------------ detection
    def _scan(self, buf: FloatArray, lo: int, hi: int) -> None:
        """Find and cut out the pulses starting in buf[lo:hi]."""
        done = lo
        for i in self._candidates(buf, lo, hi):
            if i < done:
                continue  # inside the run just cut out
            w = self._pulse_at(buf, i)
            if not w:
                continue
            peak = i + int(np.argmax(np.abs(buf[i:i + w] - buf[i - 1]).max(axis=1)))
            ends = []
            for k in range(self.n_leads):
                j = self._cut_tail(buf, i, w, k)  # where the blanked run ends in this lead
                a, b = buf[i - 1, k], buf[j, k]
                buf[i:j, k] = a + (b - a) * np.arange(1, j - i + 1) / (j - i + 1)
                ends.append(j)
            self.pulses.append(self._start + peak)
            self.count += 1
            done = max(ends)

    def _candidates(self, buf: FloatArray, lo: int, hi: int) -> list[int]:
        """Starts in [lo, hi) that may hold a pulse in some lead: flat before, `TAILED_MIN_UV` reached, and back.

        Necessary conditions of `_pulse_at` on contiguous slices (a pulse's height is at most the reach
        over the longest run; its return at least the lowest after any run), so that its exact tests
        run only on the few starts that pass.
        """
        hit: npt.NDArray[np.bool_] | None = None
        for k in range(self.n_leads):
            col = buf[:, k]
            level = col[lo - 1:hi - 1]
            before = col[lo - 2:hi - 2]
            pre = np.maximum(np.abs(level - before), np.abs(before - col[lo - 3:hi - 3]))
            first = col[lo:hi] - level
            sign = np.sign(first)  # the run's side (all its samples lie on the side of the first)
            reach = np.abs(first)
            back = sign * (col[lo + 1:hi + 1] - level)  # the lowest return after any run length
            for w in range(2, self.max_width + 1):
                np.maximum(reach, np.abs(col[lo + w - 1:hi + w - 1] - level), out=reach)
                np.minimum(back, sign * (col[lo + w:hi + w] - level), out=back)
            ok = (np.abs(first) >= TAILED_MIN_UV) & (pre <= FLAT_STEP * reach) & (back <= RETURN * reach)
            hit = ok if hit is None else hit | ok
        if hit is None or not hit.any():
            return []
        return (np.flatnonzero(hit) + lo).tolist()

    def _pulse_at(self, buf: FloatArray, i: int) -> int:
        """Width (samples) of a pulse starting at buf[i] in some lead (every rule of the module doc), or 0."""
        for k in range(self.n_leads):
            col = buf[:, k]
            level = float(col[i - 1])
            pre = max(abs(level - col[i - 2]), abs(col[i - 2] - col[i - 3]))
            if abs(col[i] - level) < TAILED_MIN_UV:
                continue  # a run starts with a jump (the same rule `_undecided` releases by)
            for w in range(1, self.max_width + 1):
                dev = col[i:i + w] - level
                if not (np.all(dev > 0) or np.all(dev < 0)):
                    break
                height = float(np.abs(dev).max())
                sign = 1.0 if dev[0] > 0 else -1.0
                if height < TAILED_MIN_UV or pre > FLAT_STEP * height:
                    continue
                if sign * (col[i + w] - level) > RETURN * height:
                    continue
                if height >= MIN_UV and abs(col[i + w + 1] - col[i + w]) <= FLAT_STEP * height:
                    return w  # flat after its return
                tail = self._tail_fit(col, i, w)
                if tail is not None and (height >= MIN_UV or abs(tail[1]) >= MIN_UV):
                    return w
        return 0

    # ------------------------------------------------------------------ tails
    def _tail_fit(self, col: FloatArray, i: int, w: int) -> tuple[int, float, float] | None:
        """(first tail sample, its fitted amplitude, decay per sample) of the recharge tail after buf[i:i+w], or None.

        The tail starts in the sample after the pulse or the next (the first may share the pulse's own
        sample period): from there the samples of `TAIL_FIT_S` lie beyond the level before the pulse, on
        the side opposite to the pulse, falling as an exponential (weighted least squares on the log,
        over the samples down to `TAIL_FLOOR` of the first; at least `TAIL_FIT_MIN` of them).
        """
        level = float(col[i - 1])
        sign = -1.0 if col[i:i + w].mean() > level else 1.0  # the tail's side
        for j in (i + w, i + w + 1):
            e = sign * (col[j:j + self.tail_fit] - level)
            if len(e) < self.tail_fit or e[0] < TAIL_MIN_UV:
                continue
            low = np.flatnonzero(e < TAIL_FLOOR * e[0])
            e = e[:low[0]] if low.size else e
            if len(e) < TAIL_FIT_MIN:
                continue
            ks = np.arange(len(e), dtype=np.float64)
            slope, icpt = np.polyfit(ks, np.log(e), 1, w=e)
            if slope >= 0 or e[-1] >= e[0] or np.abs(e - np.exp(icpt + slope * ks)).max() > TAIL_RESIDUAL * e[0]:
                continue
            return j, sign * float(np.exp(icpt)), min(float(np.exp(slope)), TAIL_MAX_DECAY)
        return None

    def _cut_tail(self, buf: FloatArray, i: int, w: int, k: int) -> int:
        """Subtract lead `k`'s tail after the pulse buf[i:i+w], if it has one; return where blanking ends.

        With a tail, blanking ends where it peaks and the fitted exponential is subtracted from there
        on (here and, through `_tail`, from the samples that arrive later).  Without one the blanked run
        takes the sample after the pulse too (it may hold the rest of a pulse that straddled two
        sample periods).
        """
        fit = self._tail_fit(buf[:, k], i, w)
        if fit is None:  # the sample after the pulse may hold the rest of it (a pulse straddling two periods)
            fit = self._tail_fit(buf[:, k], i, w + 1)
        if fit is None:
            return i + w + 1
        j, amp, decay = fit
        length = int(math.ceil(math.log(TAIL_END_UV / abs(amp)) / math.log(decay))) if abs(amp) > TAIL_END_UV else 0
        self._tail[k] = (self._start + j, amp, decay, self._start + j + length)
        self._subtract_tails(buf, j, leads=(k,))
        return j

    def _subtract_tails(self, buf: FloatArray, lo: int, leads: tuple[int, ...] | None = None) -> None:
        """Subtract the pending tails from buf[lo:] (each sample from its absolute index: any block split agrees)."""
        for k in range(self.n_leads) if leads is None else leads:
            start, amp, decay, end = self._tail[k]
            a = max(lo, start - self._start)
            b = min(len(buf), end - self._start)
            if a < b:
                buf[a:b, k] -= amp * decay ** np.arange(a + self._start - start, b + self._start - start)
