"""IEC 60601-1-8 auditory alarm signals rendered with numpy (pure functions, no I/O but WAV bytes).

Each pulse is a harmonic complex tone: fundamental f0 in 150-1000 Hz plus harmonics 2..6·f0 (all
below 4 kHz), every harmonic within 15 dB of the strongest, shaped by raised-cosine rise/fall ramps.
Burst patterns (IEC 60601-1-8 Table 3/4 as commonly implemented; see monitoring-anchors §2.1):

* high   : 10 pulses as 3 + 2, pause, 3 + 2 (pulse ~150 ms), repeated every `repeat_s`
* medium : 3 pulses (~200 ms)
* low    : 2 pulses (~250 ms)

Exact min/max timings of the standard's tables are not verified here; the values below sit inside
the ranges reported by manufacturers (Edan X8, Covidien N-560, NXP reference code).
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vigil.model import Priority

SAMPLE_RATE = 22050
HARMONIC_GAINS_DB = (0.0, -3.0, -6.0, -8.0, -10.0)  # f0, 2f0, 3f0, 4f0, 5f0 -> within 15 dB


@dataclass(frozen=True, slots=True)
class BurstPattern:
    """Timing of one burst: pulse onsets (s), pulse duration, ramp, fundamental, repeat interval."""

    onsets: tuple[float, ...]
    pulse_s: float
    ramp_s: float
    f0: float
    repeat_s: float

    @property
    def duration_s(self) -> float:
        """Length of the rendered burst."""
        return self.onsets[-1] + self.pulse_s


def _onsets(groups: list[int], pulse: float, gap: float, group_gaps: list[float]) -> tuple[float, ...]:
    out: list[float] = []
    t = 0.0
    for gi, n in enumerate(groups):
        for i in range(n):
            out.append(round(t, 6))
            t += pulse + (gap if i < n - 1 else 0.0)
        if gi < len(groups) - 1:
            t += group_gaps[gi]
    return tuple(out)


PATTERNS: dict[Priority, BurstPattern] = {
    # 3+2 groups: pulse 150 ms, 80 ms between pulses, 300 ms between 3 and 2, 900 ms between the halves
    Priority.HIGH: BurstPattern(_onsets([3, 2, 3, 2], 0.15, 0.08, [0.30, 0.90, 0.30]), 0.15, 0.02, 660.0, 10.0),
    Priority.MEDIUM: BurstPattern(_onsets([3], 0.20, 0.15, []), 0.20, 0.025, 523.0, 20.0),
    Priority.LOW: BurstPattern(_onsets([2], 0.25, 0.20, []), 0.25, 0.03, 440.0, 30.0),
}


def render_pulse(f0: float, duration_s: float, ramp_s: float, fs: int = SAMPLE_RATE,
                 gains_db: tuple[float, ...] = HARMONIC_GAINS_DB) -> npt.NDArray[np.float64]:
    """One pulse: sum of harmonics k·f0 (k = 1..len(gains_db)) with raised-cosine rise and fall."""
    if not 150.0 <= f0 <= 1000.0:
        raise ValueError(f"fundamental {f0} Hz outside 150-1000 Hz (IEC 60601-1-8)")
    n = int(round(duration_s * fs))
    t = np.arange(n) / fs
    x = np.zeros(n)
    for k, g in enumerate(gains_db, start=1):
        if k * f0 < fs / 2:
            x += 10 ** (g / 20) * np.sin(2 * np.pi * k * f0 * t)
    r = max(1, int(round(ramp_s * fs)))
    env = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(r) / r)
    env[:r] = ramp
    env[n - r:] = ramp[::-1]
    return x * env


def render_burst(priority: Priority, fs: int = SAMPLE_RATE, volume: float = 0.5) -> npt.NDArray[np.float64]:
    """The burst of `priority` as float samples in [-volume, volume]."""
    p = PATTERNS[priority]
    pulse = render_pulse(p.f0, p.pulse_s, p.ramp_s, fs)
    pulse = pulse / np.max(np.abs(pulse))
    out = np.zeros(int(round(p.duration_s * fs)) + 1)
    for onset in p.onsets:
        i = int(round(onset * fs))
        out[i:i + len(pulse)] += pulse
    return np.clip(out * volume, -1.0, 1.0)


def to_wav(samples: npt.NDArray[np.float64], fs: int = SAMPLE_RATE) -> bytes:
    """16-bit mono PCM WAV bytes."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(fs)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def read_wav(data: bytes) -> tuple[npt.NDArray[np.float64], int]:
    """Inverse of `to_wav` (for tests and the file sink)."""
    with wave.open(io.BytesIO(data), "rb") as w:
        fs = w.getframerate()
        raw = w.readframes(w.getnframes())
    return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32767, fs
