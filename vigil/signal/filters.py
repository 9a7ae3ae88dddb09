"""Causal IIR/FIR filters with kept state, so that a stream cut into blocks of any size gives
exactly the output of one pass over the whole stream.

All filters are designed with SciPy (Butterworth, second-order sections) and run with
``sosfilt``/``lfilter`` carrying their ``zi`` state between blocks.  On the first sample (and
after ``reset``) the state is set to the steady state for that sample, so a DC offset does not ring.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.signal as sps

FloatArray = npt.NDArray[np.float64]


def _sosfilt_kernel() -> object | None:
    """SciPy's compiled SOS kernel, if it behaves like ``sosfilt`` here (else None: use ``sosfilt``).

    ``sosfilt`` spends ~50 µs per call validating and reshaping its arguments, which dominates on the
    small blocks of a live stream; the kernel itself takes ~2 µs.  It is private API, so it is used
    only after checking it against ``sosfilt`` on a test signal.
    """
    try:
        from scipy.signal._sosfilt import _sosfilt as kernel
    except ImportError:  # pragma: no cover - depends on the SciPy version
        return None
    try:
        sos = sps.butter(2, [0.1, 0.3], btype="bandpass", output="sos")
        x = np.sin(np.arange(50.0)) + 1.0
        zi0 = sps.sosfilt_zi(sos)
        want, want_zi = sps.sosfilt(sos, x, zi=zi0)
        y = x[None, :].copy()
        zi = np.ascontiguousarray(zi0.reshape(1, len(sos), 2))
        kernel(np.ascontiguousarray(sos), y, zi)
        if np.allclose(y[0], want) and np.allclose(zi[0], want_zi):
            return kernel
    except Exception:  # pragma: no cover - a changed private signature: fall back
        pass
    return None  # pragma: no cover


_KERNEL = _sosfilt_kernel()


def _linear_filter_kernel() -> object | None:
    """SciPy's compiled ``lfilter`` kernel, if it behaves like ``lfilter`` here (else None: use ``lfilter``).

    For a denominator of two or more taps with a given state, ``lfilter`` only validates its
    arguments and calls this kernel; the checks cost ~15 µs per call on a live stream's small blocks.
    """
    try:
        from scipy.signal._sigtools import _linear_filter as kernel
    except ImportError:  # pragma: no cover - depends on the SciPy version
        return None
    try:
        b, a = sps.butter(2, [0.1, 0.3], btype="bandpass")
        x = np.column_stack((np.sin(np.arange(60.0)), np.cos(np.arange(60.0) * 0.3)))
        zi = sps.lfilter_zi(b, a)[:, None] * x[0][None, :]
        want, want_zi = sps.lfilter(b, a, x, axis=0, zi=zi)
        got, got_zi = kernel(np.asarray(b, dtype=float), np.asarray(a, dtype=float), x, 0, zi)
        if np.array_equal(got, want) and np.array_equal(got_zi, want_zi):
            return kernel
    except Exception:  # pragma: no cover - a changed private signature: fall back
        pass
    return None  # pragma: no cover


_LINEAR = _linear_filter_kernel()


def lfilter(b: FloatArray, a: FloatArray, x: FloatArray, zi: FloatArray,
            axis: int = -1) -> tuple[FloatArray, FloatArray]:
    """``scipy.signal.lfilter(b, a, x, axis=axis, zi=zi)`` for float64 `b`, `a` (len(a) ≥ 2), `x`, `zi`, bit for bit."""
    if _LINEAR is None or len(a) < 2:  # pragma: no cover - depends on the SciPy version
        y, zf = sps.lfilter(b, a, x, axis=axis, zi=zi)
        return np.asarray(y), np.asarray(zf)
    y, zf = _LINEAR(b, a, np.asarray(x), axis, np.asarray(zi))  # type: ignore[operator]
    return y, zf


class SosFilter:
    """A causal second-order-sections filter that keeps its state between blocks."""

    def __init__(self, sos: FloatArray) -> None:
        """Wrap `sos` (shape (n_sections, 6))."""
        self.sos = np.asarray(sos, dtype=np.float64)
        self._zi_unit = sps.sosfilt_zi(self.sos)
        self._zi: FloatArray | None = None
        self._zi3: FloatArray | None = None

    def reset(self) -> None:
        """Forget the state; the next sample re-initialises it (steady state)."""
        self._zi = None

    def __call__(self, x: FloatArray) -> FloatArray:
        """Filter one block (1-D) and keep the state."""
        if x.size == 0:
            return x.astype(np.float64)
        if self._zi is None:
            self._zi = self._zi_unit * float(x[0])
        if _KERNEL is not None:
            y = np.array(x, dtype=np.float64, ndmin=2)  # a copy, filtered in place
            zi = self._zi3
            if zi is None or zi.base is not self._zi:  # a (1, sections, 2) view of the state, updated in place
                zi = self._zi3 = self._zi.reshape(1, len(self.sos), 2)
            _KERNEL(self.sos, y, zi)  # type: ignore[operator]
            return y[0]
        y, self._zi = sps.sosfilt(self.sos, x, zi=self._zi)
        return np.asarray(y, dtype=np.float64)


class FirFilter:
    """A causal FIR filter (``lfilter(b, 1)``) that keeps its state; starts from zero state."""

    def __init__(self, b: FloatArray) -> None:
        """Wrap taps `b`."""
        self.b = np.asarray(b, dtype=np.float64)
        self._hist = np.zeros(len(self.b) - 1)  # the last len(b)-1 inputs (zero at start)

    def reset(self) -> None:
        """Zero the state."""
        self._hist = np.zeros(len(self.b) - 1)

    def __call__(self, x: FloatArray) -> FloatArray:
        """Filter one block (1-D) and keep the state (a direct convolution: no per-call overhead)."""
        if x.size == 0:
            return x.astype(np.float64)
        xx = np.concatenate((self._hist, np.asarray(x, dtype=np.float64)))
        if len(self._hist):
            self._hist = xx[-len(self._hist):]  # a view of this call's own array
        return np.asarray(np.convolve(xx, self.b, mode="valid"), dtype=np.float64)


def _clip_hz(f: float, fs: float) -> float:
    return min(f, 0.45 * fs)


def baseline_filter(fs: float) -> SosFilter:
    """First-order 0.5 Hz Butterworth high-pass: removes baseline wander only (monitoring mode)."""
    return SosFilter(sps.butter(1, 0.5, btype="highpass", fs=fs, output="sos"))


def lowpass_filter(fs: float, cutoff: float = 40.0) -> SosFilter:
    """Second-order Butterworth low-pass (40 Hz, or 0.45·fs at low rates)."""
    return SosFilter(sps.butter(2, _clip_hz(cutoff, fs), btype="lowpass", fs=fs, output="sos"))


def lowpass_delay(fs: float, cutoff: float = 40.0) -> float:
    """Low-frequency group delay (samples) of `lowpass_filter`: √2/(2π·fc) for 2nd-order Butterworth."""
    return float(np.sqrt(2.0) / (2 * np.pi * _clip_hz(cutoff, fs)) * fs)


def qrs_bandpass(fs: float) -> SosFilter:
    """5–15 Hz Butterworth band-pass of the QRS detector (Pan & Tompkins 1985 pass band)."""
    return SosFilter(sps.butter(2, [5.0, _clip_hz(15.0, fs)], btype="bandpass", fs=fs, output="sos"))


def derivative_taps(fs: float) -> FloatArray:
    """Five-point derivative of Pan & Tompkins (1985), scaled to units per second."""
    return np.array([2.0, 1.0, 0.0, -1.0, -2.0]) * fs / 8.0


def moving_average_taps(fs: float, seconds: float = 0.150) -> FloatArray:
    """Moving-window integrator taps (150 ms, Pan & Tompkins 1985)."""
    n = max(1, int(round(seconds * fs)))
    return np.full(n, 1.0 / n)


def one_pole_lowpass(fs: float, tau_s: float) -> tuple[FloatArray, FloatArray]:
    """(b, a) of an exponential smoother with time constant `tau_s`."""
    alpha = 1.0 - float(np.exp(-1.0 / (tau_s * fs)))
    return np.array([alpha]), np.array([1.0, alpha - 1.0])


class OnePole:
    """Exponential smoother with kept state (first sample initialises it)."""

    def __init__(self, fs: float, tau_s: float) -> None:
        """Create with time constant `tau_s` seconds."""
        self.b, self.a = one_pole_lowpass(fs, tau_s)
        self._zi: FloatArray | None = None

    def reset(self) -> None:
        """Forget the state."""
        self._zi = None

    def __call__(self, x: FloatArray) -> FloatArray:
        """Smooth one block."""
        if x.size == 0:
            return x.astype(np.float64)
        if self._zi is None:
            self._zi = sps.lfilter_zi(self.b, self.a) * float(x[0])
        y, self._zi = lfilter(self.b, self.a, x, self._zi)
        return np.asarray(y, dtype=np.float64)


class RunningMean:
    """Running mean energy: the cumulative mean over the first `tau_s`, then an exponential average.

    The warm-up by cumulative mean avoids the start-up transient of a plain exponential smoother.
    """

    def __init__(self, fs: float, tau_s: float) -> None:
        """Create with time constant `tau_s` seconds."""
        self.n_warm = max(1, int(tau_s * fs))
        self.b, self.a = one_pole_lowpass(fs, tau_s)
        self.reset()

    def reset(self) -> None:
        """Forget the state."""
        self._count = 0
        self._sum = 0.0
        self._zi: FloatArray | None = None

    def __call__(self, x: FloatArray) -> FloatArray:
        """Return the running mean at every sample of the block."""
        out = np.empty(len(x))
        k = 0
        if self._count < self.n_warm:
            k = min(len(x), self.n_warm - self._count)
            cs = self._sum + np.cumsum(x[:k])
            out[:k] = cs / (self._count + np.arange(1, k + 1))
            self._count += k
            self._sum = float(cs[-1]) if k else self._sum
            if self._count >= self.n_warm:
                self._zi = sps.lfilter_zi(self.b, self.a) * float(out[k - 1])
        if k < len(x):
            assert self._zi is not None
            y, self._zi = lfilter(self.b, self.a, x[k:], self._zi)
            out[k:] = y
        return out


_ZI_CACHE: dict[bytes, FloatArray] = {}


def sosfiltfilt(sos: FloatArray, x: FloatArray, padlen: int) -> FloatArray:
    """``scipy.signal.sosfiltfilt(sos, x, padlen=padlen)`` (odd padding) for a 1-D `x`, bit for bit.

    The same steps as SciPy (odd extension, forward pass from ``sosfilt_zi·x[0]``, backward pass
    from ``sosfilt_zi·y[-1]``) on its compiled kernel, with ``sosfilt_zi`` cached per design: SciPy
    spends most of a short beat's time validating arguments and re-solving for ``sosfilt_zi``.
    """
    sos = np.asarray(sos, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if _KERNEL is None or x.ndim != 1:  # pragma: no cover - depends on the SciPy version
        return np.asarray(sps.sosfiltfilt(sos, x, padlen=padlen), dtype=np.float64)
    edge = int(padlen)
    if len(x) <= edge:
        raise ValueError(f"The length of the input vector x must be greater than padlen, which is {edge}.")
    key = sos.tobytes()
    zi = _ZI_CACHE.get(key)
    if zi is None:
        zi = _ZI_CACHE[key] = sps.sosfilt_zi(sos)
    # odd extension by `edge` samples at each end (scipy.signal._arraytools.odd_ext)
    ext = np.concatenate((2 * x[0:1] - x[edge:0:-1], x, 2 * x[-1:] - x[-2:-(edge + 2):-1])) if edge > 0 else x
    n_sections = len(sos)
    y = np.array(ext, dtype=np.float64, ndmin=2)  # filtered in place
    _KERNEL(sos, y, np.ascontiguousarray((zi * ext[0:1]).reshape(1, n_sections, 2)))  # type: ignore[operator]
    z = np.array(y[0, ::-1], ndmin=2)
    _KERNEL(sos, z, np.ascontiguousarray((zi * y[0, -1:]).reshape(1, n_sections, 2)))  # type: ignore[operator]
    out = z[0, ::-1]
    return out[edge:-edge] if edge > 0 else out
