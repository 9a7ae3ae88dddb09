"""Waveform analysis of the IEC 60601-1-8 bursts and the player's failure handling."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vigil.alarms.player import AlarmPlayer, AplaySink, FileSink, make_sink
from vigil.alarms.sound import PATTERNS, SAMPLE_RATE, read_wav, render_burst, render_pulse, to_wav
from vigil.model import Priority


def pulses(x: np.ndarray, fs: int) -> list[tuple[float, float]]:
    """(onset, duration) of each pulse, from a 5 ms RMS envelope."""
    win = int(0.005 * fs)
    env = np.sqrt(np.convolve(x ** 2, np.ones(win) / win, mode="same"))
    on = env > 0.1 * env.max()
    edges = np.flatnonzero(np.diff(on.astype(int)))
    starts = [e + 1 for e in edges if not on[e]]
    ends = [e + 1 for e in edges if on[e]]
    if on[0]:
        starts = [0] + starts
    return [(s / fs, (e - s) / fs) for s, e in zip(starts, ends, strict=False)]


@pytest.mark.parametrize("prio,count", [(Priority.HIGH, 10), (Priority.MEDIUM, 3), (Priority.LOW, 2)])
def test_pulse_counts(prio, count):
    x = render_burst(prio)
    ps = pulses(x, SAMPLE_RATE)
    assert len(ps) == count
    for _, d in ps:
        assert d == pytest.approx(PATTERNS[prio].pulse_s, abs=0.03)


def test_high_priority_is_3_2_3_2():
    ps = pulses(render_burst(Priority.HIGH), SAMPLE_RATE)
    onsets = np.array([o for o, _ in ps])
    gaps = np.diff(onsets)
    # pulse-to-pulse within a group ~0.23 s; 3->2 gap longer; the two 3+2 halves separated the most
    inner = gaps[[0, 1, 3, 5, 6, 8]]
    assert np.all(np.abs(inner - inner[0]) < 0.01)
    assert gaps[2] > inner[0] + 0.2 and gaps[7] > inner[0] + 0.2
    assert gaps[4] > gaps[2] + 0.4  # separation of the two 3+2 groups
    assert gaps[2] == pytest.approx(gaps[7], abs=0.01)


@pytest.mark.parametrize("prio", list(Priority))
def test_spectrum_fundamental_and_four_harmonics_within_15db(prio):
    p = PATTERNS[prio]
    assert 150 <= p.f0 <= 1000
    x = render_pulse(p.f0, 0.5, p.ramp_s)  # longer pulse for frequency resolution
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    peak_f = freqs[np.argmax(spec)]
    assert peak_f == pytest.approx(p.f0, abs=5)  # the strongest component is the fundamental
    levels = []
    for k in range(1, 6):
        band = (freqs > k * p.f0 - 10) & (freqs < k * p.f0 + 10)
        levels.append(20 * np.log10(spec[band].max()))
        assert k * p.f0 <= 4000
    levels = np.array(levels)
    assert np.all(levels.max() - levels <= 15.0)
    # nothing but harmonics: energy between harmonics is far below
    between = (freqs > 1.5 * p.f0 - 5) & (freqs < 1.5 * p.f0 + 5)
    assert 20 * np.log10(spec[between].max()) < levels.min() - 30


def test_pulse_has_rise_and_fall_envelope():
    p = PATTERNS[Priority.HIGH]
    x = render_pulse(p.f0, p.pulse_s, p.ramp_s)
    r = int(p.ramp_s * SAMPLE_RATE)
    assert np.abs(x[: r // 4]).max() < 0.3 * np.abs(x).max()
    assert np.abs(x[-r // 4:]).max() < 0.3 * np.abs(x).max()


def test_fundamental_range_enforced():
    with pytest.raises(ValueError):
        render_pulse(100.0, 0.1, 0.01)


def test_wav_roundtrip():
    x = render_burst(Priority.MEDIUM)
    y, fs = read_wav(to_wav(x))
    assert fs == SAMPLE_RATE and len(y) == len(x)
    assert np.max(np.abs(y - x)) < 1e-4


def test_player_file_sink_plays_and_switches_priority(tmp_path):
    sink = FileSink(tmp_path)
    pl = AlarmPlayer(sink, repeat_scale=0.005).start()
    try:
        pl.set_priority(Priority.MEDIUM)
        deadline = time.time() + 5
        while sink.count < 2 and time.time() < deadline:
            time.sleep(0.01)
        pl.set_priority(Priority.HIGH)
        while not any(f.name.endswith("high.wav") for f in tmp_path.iterdir()) and time.time() < deadline:
            time.sleep(0.01)
        pl.set_priority(None)
    finally:
        pl.stop()
    files = sorted(tmp_path.iterdir())
    assert any(f.name.endswith("medium.wav") for f in files) and any(f.name.endswith("high.wav") for f in files)
    x, fs = read_wav(next(f for f in files if f.name.endswith("high.wav")).read_bytes())
    assert len(pulses(x, fs)) == 10


def test_aplay_without_sound_card_becomes_sound_failed_not_crash():
    failures: list[str] = []
    got = threading.Event()
    pl = AlarmPlayer(make_sink("aplay:default"), on_failure=lambda r: (failures.append(r), got.set()),
                     repeat_scale=0.01).start()
    try:
        pl.set_priority(Priority.HIGH)
        assert got.wait(20), "sound failure was not reported"
    finally:
        pl.stop()
    assert pl.failed and pl.failures >= 1 and pl.played == 0
    assert failures and ("aplay" in failures[0])
    assert isinstance(make_sink("default"), AplaySink)


class FlakySink(FileSink):
    def __init__(self, folder, fail_times):
        super().__init__(folder)
        self.fail_times = fail_times

    def play(self, wav, priority):
        if self.fail_times > 0:
            self.fail_times -= 1
            raise OSError("device busy")
        super().play(wav, priority)


def test_player_reports_recovery(tmp_path):
    events: list[str] = []
    pl = AlarmPlayer(FlakySink(tmp_path, 2), on_failure=lambda r: events.append("fail:" + r),
                     on_recovered=lambda: events.append("ok"), repeat_scale=0.002).start()
    try:
        pl.set_priority(Priority.LOW)
        deadline = time.time() + 5
        while "ok" not in events and time.time() < deadline:
            time.sleep(0.01)
    finally:
        pl.stop()
    assert events == ["fail:device busy", "ok"]  # one failure report per outage, then recovery
