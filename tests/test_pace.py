"""Pacemaker pulse rejection (`vigil.signal.pace`): EC13-style pulses on real ECG, loss of capture, capture."""

from __future__ import annotations

import numpy as np
import pytest

import vigil.signal.pace as pace
from vigil.evaluation.eval_asystole import stopped
from vigil.evaluation.eval_pace import _resample, _stream, pace_pulses
from vigil.model import Beat, QualityReport
from vigil.signal.analyzer import EcgAnalyzer
from vigil.signal.pace import PaceRejector

# (amplitude mV, width ms, tail mV, tail time constant ms): EC13 §4.1.4.1/4.1.4.2 corners and middles
PULSES = [(5.0, 0.5, 0.0, 0.0), (5.0, 2.0, 0.0, 0.0), (700.0, 0.1, 0.0, 0.0), (700.0, 2.0, 0.0, 0.0),
          (5.0, 1.0, 2.0, 4.0), (5.0, 1.0, 2.0, 100.0), (700.0, 2.0, 2.0, 4.0)]


def _record(name: str, leads: int = 1) -> tuple[np.ndarray, float, list[int]]:
    import wfdb

    from vigil.datasets import vendored
    from vigil.evaluation.ec57 import read_reference

    path = str(vendored(name))
    x = np.nan_to_num(wfdb.rdrecord(path).p_signal[:, :leads] * 1000.0)
    ref, fs = read_reference(path)
    return x, fs, [s for s, _ in ref]


def _feed(rej: PaceRejector, x: np.ndarray, block: int) -> np.ndarray:
    out = []
    released = 0
    for s in range(0, len(x), block):
        y, first = rej.feed(x[s:s + block], s)
        assert first == released  # samples come out in order, none twice, none skipped
        released += len(y)
        out.append(y)
    y, first = rej.flush()
    assert first == released and released + len(y) == len(x)
    out.append(y)
    return np.concatenate(out)


def test_pulse_model_keeps_the_pulse_area() -> None:
    fs = 500.0
    y = pace_pulses(5000, fs, [1.0003, 3.0011], 5.0, 0.5)
    assert np.sum(y) / fs == pytest.approx(2 * 5000.0 * 0.0005, rel=1e-9)  # µV·s: amplitude × width, each
    assert np.count_nonzero(y) <= 4  # each lands in one or two sample periods
    tail = pace_pulses(5000, fs, [1.0], 5.0, 1.0, tail_mv=2.0, tau_ms=4.0)
    assert tail.min() < -1000.0  # the tail is 2 mV × 4 ms of the opposite polarity: net area 5 - 8 µV·s
    assert np.sum(tail) / fs == pytest.approx(5000.0 * 0.001 - 2000.0 * 0.004, rel=0.01)


@pytest.mark.parametrize("fs", [360.0, 500.0, 1000.0])
@pytest.mark.parametrize("pulse", PULSES)
def test_every_pulse_is_found_and_cut_out(fs: float, pulse: tuple[float, float, float, float]) -> None:
    rng = np.random.default_rng(7)
    n = int(20 * fs)
    times = 0.5 + 0.85 * np.arange(22) + rng.uniform(0.0, 0.01, 22)
    x = rng.normal(0.0, 10.0, n) + pace_pulses(n, fs, list(times), *pulse)
    rej = PaceRejector(fs)
    y = _feed(rej, x[:, None], int(0.25 * fs))[:, 0]
    assert rej.count == len(times)
    assert np.abs(np.array(rej.pulses) / fs - times).max() < 0.004
    slow_tail = pulse[3] > 50.0
    assert np.abs(y).max() < (700.0 if slow_tail else 200.0) < np.abs(x).max()  # a 100 ms tail is fitted on 4 samples


def test_output_is_the_same_for_any_block_split() -> None:
    fs = 500.0
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 10.0, (6000, 2))
    p = pace_pulses(6000, fs, [1.0, 3.0011, 5.5], 5.0, 1.0, tail_mv=2.0, tau_ms=4.0)
    x += np.stack([p, 0.3 * p], axis=1)
    whole = _feed(PaceRejector(fs, 2), x, len(x))
    for block in (1, 7, 125, 1001):
        rej = PaceRejector(fs, 2)
        np.testing.assert_array_equal(_feed(rej, x, block), whole)
        assert list(rej.pulses) == [500, 1500, 2750]  # the sample holding most of each pulse


@pytest.mark.parametrize("fs", [360.0, 500.0, 1000.0])
def test_real_r_waves_are_not_pulses(fs: float) -> None:
    """Vendored 119 (N + V beats) and 203 (multiform V, AF, noise), both leads, at device rates: no pulse
    but 203's burst of one-sample digital spikes at ~469 s (cut out at 360 Hz, smoothed away by resampling)."""
    for name in ("119", "203"):
        x, rec_fs, _ = _record(name, leads=2)
        rej = PaceRejector(fs, 2)
        rej.feed(_resample(x, rec_fs, fs), 0)
        found = [p / fs for p in rej.pulses]
        assert all(468.0 < t < 470.0 for t in found), (name, found[:5])
        assert len(found) <= (10 if name == "203" else 0)


def test_slow_devices_pass_samples_through() -> None:
    rej = PaceRejector(250.0)
    assert not rej.enabled and rej.hold == 0
    x = np.arange(100.0)[:, None]
    y, first = rej.feed(x, 40)
    assert first == 40 and np.array_equal(y, x)


def _loss_of_capture(fs: float, pulse: tuple[float, float, float, float], rejector: bool = True
                     ) -> tuple[float | None, int]:
    """Vendored 119 stopped at 60.5 s, pacing on at 70 /min: (s from the last beat to ASYSTOLE, beats after)."""
    x, rec_fs, ref = _record("119")
    last_r = max(s for s in ref if s < 60.5 * rec_fs)
    cut = last_r + int(0.45 * rec_fs)
    y = stopped(x[:cut + int(12 * rec_fs)], cut, int(12 * rec_fs), rec_fs, False, np.random.default_rng(0))[:, 0]
    z = _resample(y, rec_fs, fs)
    t_last = last_r / rec_fs
    times = t_last - 0.04 + 0.857 * np.arange(1, 15)
    z = z + pace_pulses(len(z), fs, [t for t in times if t * fs < len(z)], *pulse)
    beats, asystole, _ = _stream(z, fs, rejector)
    late = [at / fs - t_last for _, at in asystole if at / fs > cut / rec_fs]
    return (late[0] if late else None), sum(1 for b in beats if b / fs > cut / rec_fs + 0.1)


@pytest.mark.parametrize("pulse", [(5.0, 2.0, 0.0, 0.0), (700.0, 2.0, 2.0, 4.0)])
def test_loss_of_capture_is_asystole_not_a_paced_rhythm(pulse: tuple[float, float, float, float]) -> None:
    """EC13 §4.1.4: pulses without ventricular response are no heartbeat (before: no ASYSTOLE in 12 s)."""
    delay, beats_after = _loss_of_capture(500.0, pulse)
    assert delay is not None and delay <= 5.0 and beats_after == 0
    old_delay, _ = _loss_of_capture(500.0, pulse, rejector=False)
    assert old_delay is None  # the analyser without the rejector: the pulses kept ASYSTOLE from being called


def test_capture_keeps_every_beat_and_flags_the_seconds() -> None:
    fs = 500.0
    x, rec_fs, ref = _record("119")
    x = _resample(x[:int(120 * rec_fs), 0], rec_fs, fs)
    times = [s / rec_fs - 0.06 for s in ref if s < 120 * rec_fs]
    plain, _, _ = _stream(x, fs)
    paced_x = x + pace_pulses(len(x), fs, times, 20.0, 1.0, tail_mv=2.0, tau_ms=4.0)
    an = EcgAnalyzer(fs)
    outs = []
    for i in range(0, len(paced_x), 125):
        outs += an.feed(paced_x[i:i + 125], i)
    outs += an.flush()
    beats = [o.sample for o in outs if isinstance(o, Beat)]
    assert len(beats) == len(plain) and np.abs(np.array(beats) - np.array(plain)).max() <= 2
    assert an.pace.count == len(times)
    flagged = [q for q in outs if isinstance(q, QualityReport) and "pacer" in q.flags]
    seconds = {int(t) for t in times}
    assert len(flagged) >= 0.9 * len(seconds)
    assert all(q.quality == 1.0 or set(q.flags) - {"pacer"} for q in flagged)  # the flag alone costs no quality


def test_flush_releases_every_sample() -> None:
    rej = PaceRejector(500.0)
    total = 0
    for s in range(0, 1000, 64):
        y, first = rej.feed(np.zeros((64, 1)), s)
        assert first == total
        total += len(y)
    y, first = rej.flush()
    assert first == total and total + len(y) == 1024 and pace.MIN_FS <= 500.0


def test_the_vt_stage_reads_the_ecg_with_the_pulses_cut_out() -> None:
    """The spectral VT detector gets raw ECG from the pipeline, so it cuts pulses out as the analyser does."""
    from vigil.signal.vt import VtStage

    fs = 500.0
    rng = np.random.default_rng(5)
    n = int(12 * fs)
    times = list(0.5 + 0.8 * np.arange(14))
    x = rng.normal(0.0, 10.0, n) + pace_pulses(n, fs, times, 20.0, 1.0, tail_mv=2.0, tau_ms=4.0)
    stage = VtStage()
    for i in range(0, n, 125):
        stage.feed_ecg(x[i:i + 125], fs, (i + 125) / fs)
    rejector = stage._spec["ecg"][2]
    assert rejector.count == len(times)
