"""ASYSTOLE on real ECG whose ventricles are stopped (see `vigil.evaluation.eval_asystole`), and the rules behind it."""

from __future__ import annotations

import numpy as np
import pytest
from test_rhythm import _synthetic_ecg, stream  # the shared synthetic-signal and streaming helpers

from vigil.evaluation.ec57 import read_reference
from vigil.evaluation.eval_asystole import onsets, run_onset
from vigil.model import Beat, QualityReport, RhythmEpisode
from vigil.signal.quality import QualityAssessor
from vigil.signal.rhythm import largest_local_swing

FS = 250.0


@pytest.mark.parametrize("record", ["119", "203"])
def test_stopped_real_ecg_is_called_asystole_within_5_s(record: str) -> None:
    """Before session 5: a T wave after the last beat held the call back until it left the 12 s buffer, and
    the horizon moved in searchback-sized steps (calls 5-6.5 s after the last beat, a third never)."""
    import wfdb

    from vigil.datasets import vendored

    path = str(vendored(record))
    x = np.nan_to_num(wfdb.rdrecord(path).p_signal[:, :1] * 1000.0)
    ref, fs = read_reference(path)
    cases = onsets(ref, fs, len(x), every_s=37.0)
    assert len(cases) >= 12
    for k, (last_r, cut) in enumerate(cases):
        for hum in (False, True):
            since_last, since_start, early = run_onset(x, fs, last_r, cut, hum=hum, seed=k)
            assert not early, f"ASYSTOLE before the onset at {cut / fs:.1f} s"
            assert since_last is not None and since_start is not None, f"no ASYSTOLE after {cut / fs:.1f} s"
            assert 4.0 <= since_start <= 5.0 and since_last <= 5.0, (cut / fs, since_last, since_start)


def _regular(n_beats: int, start: int = 50) -> list[Beat]:
    return [Beat(start + int(i * 0.8 * FS), "N") for i in range(n_beats)]


def _signal(beats: list[Beat], n: int, noise_uv: float, t_wave_uv: float = 0.0) -> np.ndarray:
    """test_rhythm's synthetic ECG (1 mV QRS over white noise), with optional T waves 300 ms after each R."""
    x = _synthetic_ecg(beats, n, noise_uV=noise_uv)
    tw = np.arange(-30, 31)
    t_wave = t_wave_uv * np.exp(-(tw / 15.0) ** 2)
    for b in beats:
        c = b.sample + int(0.3 * FS)
        if t_wave_uv and c + 31 <= n:
            x[c - 30:c + 31] += t_wave
    return x


def _run(beats: list[Beat], x: np.ndarray, quality: list[QualityReport]) -> tuple[list[RhythmEpisode], dict]:
    """The tracker fed like the analyser does, in 0.25 s chunks, beats released 0.3 s late."""
    return stream(beats, len(x), signal=x, quality=quality, chunk=62, delay=75, fs=FS)


def test_the_last_beats_t_wave_does_not_hold_asystole_back() -> None:
    beats = _regular(30)
    n = beats[-1].sample + int(10 * FS)
    x = _signal(beats, n, noise_uv=10.0, t_wave_uv=450.0)  # T wave 45 % of the QRS
    quality = [QualityReport(int(s), 1.0) for s in np.arange(FS, n, FS)]
    eps, emitted = _run(beats, x, quality)
    asy = [e for e in eps if e.label == "ASYSTOLE" and e.end is None]
    assert asy and asy[0].start == beats[-1].sample
    assert (emitted["ASYSTOLE", asy[0].start] - beats[-1].sample) / FS <= 5.0


@pytest.mark.parametrize(("flags", "called"), [
    (("noise",), False),  # noise that could hide a QRS
    (("saturation",), False),
    (("noise", "qrs_visible"), True),  # a quiet line's own noise: a QRS would stand out
    (("noise", "wander"), True),  # slow wander hides no QRS
])
def test_asystole_is_held_back_only_by_seconds_that_could_hide_a_qrs(flags: tuple[str, ...], called: bool) -> None:
    beats = _regular(30)
    n = beats[-1].sample + int(10 * FS)
    x = _signal(beats, n, noise_uv=10.0)
    quality = [QualityReport(int(s), 0.3 if s > beats[-1].sample + FS else 1.0,
                             flags if s > beats[-1].sample + FS else ()) for s in np.arange(FS, n, FS)]
    eps, _ = _run(beats, x, quality)
    assert any(e.label == "ASYSTOLE" for e in eps) == called


def test_complexes_missed_more_than_4_s_ago_do_not_hold_asystole_back() -> None:
    """Two complexes the detector did not report, 1-1.8 s after its last beat; then nothing for 4 s."""
    beats = _regular(30)
    last = beats[-1].sample
    n = last + int(12 * FS)
    missed = [Beat(last + int(1.0 * FS), "N"), Beat(last + int(1.8 * FS), "N")]
    x = _signal(beats + missed, n, noise_uv=10.0)
    quality = [QualityReport(int(s), 1.0) for s in np.arange(FS, n, FS)]
    eps, emitted = _run(beats, x, quality)
    asy = [e for e in eps if e.label == "ASYSTOLE" and e.end is None]
    assert asy, "never called"
    assert asy[0].start >= missed[-1].sample  # not back-dated over the complexes
    assert (emitted["ASYSTOLE", asy[0].start] - missed[-1].sample) / FS <= 5.0


def test_a_quiet_lines_amplifier_noise_is_flagged_qrs_visible_but_muscle_noise_is_not() -> None:
    qa = QualityAssessor(FS)
    rng = np.random.default_rng(3)
    for noise_uv, visible in ((8.0, True), (250.0, False)):
        raw = rng.normal(0.0, noise_uv, int(FS))
        hp = raw - raw.mean()
        bp = np.convolve(hp, np.ones(7) / 7, mode="same")  # roughly the 40 Hz low-pass
        report = qa.assess(int(FS), raw, hp, bp, np.abs(np.diff(bp, prepend=0.0)), 0, 0.0, qrs_uv=1000.0)
        assert "noise" in report.flags
        assert ("qrs_visible" in report.flags) == visible, (noise_uv, report.flags)


def test_largest_local_swing_ignores_slow_drift() -> None:
    t = np.arange(int(4 * FS)) / FS
    drift = 800.0 * t / 4.0  # 0.8 mV over 4 s
    assert largest_local_swing(drift, 30) < 30.0
    spike = drift.copy()
    spike[500:510] += 400.0
    assert largest_local_swing(spike, 30) >= 400.0


def test_asystole_alarm_through_the_live_pipeline_within_5_s(tmp_path) -> None:
    """A stopped real ECG written as a WFDB record and replayed like a monitor (`vigil replay`): the red alarm."""
    import wfdb

    from vigil.commands.replay import replay_record
    from vigil.datasets import vendored
    from vigil.evaluation.eval_asystole import stopped

    path = str(vendored("119"))
    rec = wfdb.rdrecord(path)
    fs = float(rec.fs)
    ref, _ = read_reference(path)
    beats = [s for s, _ in ref]
    last, nxt = beats[60], beats[61]
    cut = max(nxt - int(0.35 * fs), last + int(0.45 * fs))
    y = stopped(rec.p_signal[:, :1] * 1000.0, cut, int(15 * fs), fs, False, np.random.default_rng(1))
    wfdb.wrsamp("stopped", fs=fs, units=["mV"], sig_name=["MLII"], p_signal=y / 1000.0, fmt=["16"],
                write_dir=str(tmp_path))
    events = replay_record(tmp_path / "stopped").lines()
    raised = [e["t"] for e in events if e["condition"] == "asystole" and e["event"] == "raised"]
    assert raised, [(e["t"], e["condition"], e["event"]) for e in events]
    assert 4.0 <= raised[0] - last / fs <= 5.0
    assert all(e["priority"] == "high" for e in events if e["condition"] == "asystole")


def test_a_line_still_recovering_from_a_step_is_not_asystole_until_it_settles() -> None:
    """mitdb 208 at 1383.8 s: a ~4 mV step, then lead 0 decays for ~4.5 s while the heart goes on beating."""
    beats = _regular(30)
    last = beats[-1].sample
    n = last + int(14 * FS)
    x = _signal(beats, n, noise_uv=10.0)
    step = last + int(0.6 * FS)
    t = np.arange(n - step) / FS
    x[step:] += 2500.0 * np.exp(-t / 1.5)  # 2.5 QRS amplitudes, time constant 1.5 s
    quality = [QualityReport(int(s), 1.0) for s in np.arange(FS, n, FS)]
    eps, emitted = _run(beats, x, quality)
    asy = [e for e in eps if e.label == "ASYSTOLE" and e.end is None]
    assert asy, "never called once settled"
    opened = emitted["ASYSTOLE", asy[0].start] / FS
    assert opened - step / FS >= 4.5, "called while the line was still recovering"
