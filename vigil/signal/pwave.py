"""P-wave presence on an ensemble of recent beats (used to veto AF calls in sinus rhythm with ectopy).

The PR region of each beat (250 ms to 60 ms before the fiducial point; only beats whose previous RR
leaves room for the preceding T wave, ≥ 650 ms) is averaged over two
interleaved halves of the ensemble.  A genuine P wave is time-locked to the QRS and so repeats
in both half-averages (high split-half correlation) with an amplitude that is a visible fraction
of the QRS; AF fibrillatory waves are not time-locked and average towards noise.  This is the
ensemble-averaging idea used for P-wave based AF detection (e.g. Ladavich & Ghoraani, "Rate-
independent detection of atrial fibrillation by statistical modeling of atrial activity",
Biomed. Signal Process. Control 18 (2015) 274-281), reduced to two robust numbers.
"""

from __future__ import annotations

import numpy as np

PR_FROM_S = 0.25
PR_TO_S = 0.06
MIN_BEATS = 8
MIN_CORRELATION = 0.5  # P waves present enough to veto an AF onset
CLEAR_CORRELATION = 0.8  # ... and clear enough (sustained) to end an ongoing AF episode
MIN_RELATIVE_AMPLITUDE = 0.02


def p_wave_score(segments: np.ndarray, qrs_amplitude: float) -> float | None:
    """Split-half correlation of the PR-region averages (0 when the wave is below the amplitude floor)."""
    if segments.ndim != 2 or segments.shape[0] < MIN_BEATS or segments.shape[1] < 8 or qrs_amplitude <= 0:
        return None
    seg = segments - np.median(segments, axis=1, keepdims=True)
    a = np.mean(seg[0::2], axis=0)
    b = np.mean(seg[1::2], axis=0)
    a = a - np.linspace(a[0], a[-1], len(a))
    b = b - np.linspace(b[0], b[-1], len(b))
    if np.std(a) <= 0 or np.std(b) <= 0:
        return 0.0
    if float(np.ptp((a + b) / 2.0)) < MIN_RELATIVE_AMPLITUDE * qrs_amplitude:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def p_wave_present(segments: np.ndarray, qrs_amplitude: float) -> bool | None:
    """Decide P-wave presence from `segments` (beats × samples of the PR region); None if too few beats."""
    score = p_wave_score(segments, qrs_amplitude)
    return None if score is None else score >= MIN_CORRELATION
