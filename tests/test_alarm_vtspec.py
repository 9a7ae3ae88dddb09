"""Spectral wide-complex VT detector (vigil.signal.vtspec) and its place in the VT stage and engine."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.alarms.engine import AlarmEngine
from vigil.clock import SimulatedClock
from vigil.config import VigilConfig
from vigil.datasets import data_root
from vigil.signal.vt import VtParams, VtStage, params_override
from vigil.signal.vtspec import SpecParams, SpectralVtDetector, spectral_purity

FS = 250.0
CHALLENGE = data_root() / "challenge2015"


def ecg(beat_times: np.ndarray, duration: float, shape: str, amp: float = 1000.0) -> np.ndarray:
    """Synthetic ECG (µV): narrow QRS (σ 12 ms) + T wave, or a wide biphasic complex (σ 50 ms)."""
    t = np.arange(int(duration * FS)) / FS
    x = np.zeros_like(t)
    for tb in beat_times:
        d = t - tb
        if shape == "narrow":
            x += amp * np.exp(-(d / 0.012) ** 2 / 2) + 0.3 * amp * np.exp(-((d - 0.25) / 0.04) ** 2 / 2)
        else:
            x += -1.6 * amp * (d / 0.05) * np.exp(-(d / 0.05) ** 2 / 2)
    return x


def sinus_then_vt(sinus_s: float = 20.0, vt_s: float = 8.0, vt_ibi: float = 0.375, amp: float = 1000.0) -> np.ndarray:
    return np.concatenate([ecg(np.arange(0.2, sinus_s, 0.8), sinus_s, "narrow"),
                           ecg(np.arange(0.2, vt_s, vt_ibi), vt_s, "wide", amp)])


def test_purity_separates_wide_fast_from_narrow_and_noise() -> None:
    f0, spi = spectral_purity(ecg(np.arange(0.2, 8, 0.375), 8, "wide")[-1000:], FS)
    assert f0 == pytest.approx(160 / 60, abs=0.1) and spi > 0.6
    for x in (ecg(np.arange(0.2, 8, 0.8), 8, "narrow"), ecg(np.arange(0.2, 8, 0.4), 8, "narrow")):
        assert spectral_purity(x[-1000:], FS)[1] < 0.3  # 75 and 150 /min narrow QRS: power spread over harmonics
    noise = 300 * np.random.default_rng(1).standard_normal(1000)
    assert spectral_purity(noise, FS)[1] < 0.1
    assert spectral_purity(np.zeros(1000), FS)[1] == 0.0
    assert spectral_purity(np.zeros(100), FS)[1] == 0.0  # shorter than a second


def test_detector_turns_on_within_3_s_of_a_wide_run_and_not_before() -> None:
    x = sinus_then_vt()
    det = SpectralVtDetector(FS, 1, SpecParams(spi_min=0.5))
    changes = []
    for i in range(0, len(x), 25):
        if det.feed(x[i:i + 25]):
            changes.append(((i + 25) / FS, det.on))
    assert len(changes) == 1 and changes[0][1] is True
    assert 20.0 < changes[0][0] <= 23.0


@pytest.mark.parametrize("case", ["flutter", "small", "narrow_tachy"])
def test_detector_stays_off(case: str) -> None:
    if case == "flutter":  # 300 /min: ventricular flutter is the vf condition, not VT
        x = sinus_then_vt(vt_ibi=0.2)
    elif case == "small":  # complexes under 0.15 mV are not counted
        x = sinus_then_vt(amp=40.0)
    else:
        x = ecg(np.arange(0.2, 28, 0.4), 28, "narrow")
    det = SpectralVtDetector(FS, 1, SpecParams(spi_min=0.5))
    det.feed(x)
    assert not det.on
    assert det.last  # it did evaluate


def test_detector_output_is_independent_of_the_block_split() -> None:
    x = np.column_stack([sinus_then_vt(), 0.5 * sinus_then_vt()])
    runs = []
    for blk in (1, 7, 250, len(x)):
        det = SpectralVtDetector(FS, 2, SpecParams(spi_min=0.5))
        on = []
        for i in range(0, len(x), blk):
            if det.feed(x[i:i + blk]):
                on.append((i, det.on))
        runs.append((det.on, np.round(np.array(det.last), 9)))
    for on, last in runs[1:]:
        assert on == runs[0][0] and np.array_equal(last, runs[0][1])


def _engine() -> tuple[AlarmEngine, SimulatedClock, list]:
    cfg = VigilConfig.model_validate({"site": {"name": "t", "room": "t"},
                                      "guests": [{"mat": "m1", "name": "G", "devices": []}]})
    clock = SimulatedClock(0.0)
    events: list = []
    with params_override(VtParams(spi_min=0.5, spec_agree=0.0)):
        eng = AlarmEngine(cfg, clock, events.append)
        eng._vt_stage("m1")  # the stage takes its thresholds when created
    return eng, clock, events


def test_engine_raises_vt_from_either_ecg_lead() -> None:
    x = sinus_then_vt()
    quiet = ecg(np.arange(0.2, 28, 0.8), 28, "narrow")
    for lead1, lead2 in ((x, quiet), (quiet, x)):
        eng, clock, events = _engine()
        blk = int(0.25 * FS)
        for i in range(0, len(x), blk):
            t = (i + blk) / FS
            clock.set(t)
            eng.on_ecg_wave("m1", lead1[i:i + blk], FS, t, "ecg")
            eng.on_ecg_wave("m1", lead2[i:i + blk], FS, t, "ecg2")
            eng.tick()
        raised = [e for e in events if e.condition == "vt" and e.event == "raised"]
        assert len(raised) == 1 and 20.0 < raised[0].t_mono <= 23.3  # 0.25-s blocks
        assert "spectrally pure" in raised[0].reason


def test_stage_off_and_unchanged_pulse_veto_the_spectral_call() -> None:
    x = sinus_then_vt()
    off = VtStage(VtParams(spi_min=2.0))
    assert not off.feed_ecg(x, FS, len(x) / FS)
    # the pleth beats on at 75 /min, unchanged, while the "VT" runs at 160 /min: held back
    stage = VtStage(VtParams(spi_min=0.5))
    t = np.arange(len(x)) / FS
    pleth = sum(np.exp(-((t - tb) / 0.15) ** 2) for tb in np.arange(0.3, len(x) / FS, 0.8))
    blk = int(0.25 * FS)
    vetoes = []
    for i in range(0, len(x), blk):
        now = (i + blk) / FS
        stage.feed_pulse("pleth", pleth[i:i + blk], FS, now)
        stage.feed_ecg(x[i:i + blk], FS, now)
        if stage.spectral:
            vetoes.append(stage.veto(now))
    assert vetoes and vetoes[-1] is not None and "unchanged" in vetoes[-1]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.skipif(not (CHALLENGE / "v132s.hea").exists(), reason="needs the PhysioNet records (VIGIL_DATA)")
def test_challenge_true_vt_missed_beat_wise_is_found_on_the_second_lead() -> None:
    from vigil.evaluation.eval_alarms import alarmed, record_tape, replay_tape

    # v132s: true VT; its run beats are partly called N on lead II, the run is plain on lead V
    tape, events = record_tape(CHALLENGE / "v132s", "Ventricular_Tachycardia", True)
    assert alarmed(events, "vt", tape.t0)
    assert not alarmed(replay_tape(tape, VtParams(spi_min=2.0)), "vt", tape.t0), "beat-wise it is missed"
    assert any(name == "on_ecg_wave" and args[4] == "ecg2" for _, name, args in tape.calls)


def test_harmonic_of_a_slow_rhythm_is_not_taken_for_its_rate() -> None:
    from vigil.signal.vtspec import spectral_features

    t = np.arange(1000) / FS
    slow = 600 * np.sin(2 * np.pi * 0.97 * t) + 1000 * np.sin(2 * np.pi * 1.94 * t)  # 58 /min, strong 2nd harmonic
    f0, _, rate = spectral_features(slow, FS)
    assert f0 == pytest.approx(1.94, abs=0.07) and rate == pytest.approx(0.97, abs=0.05)
    fast = 1000 * np.sin(2 * np.pi * 1.94 * t)
    f0, spi, rate = spectral_features(fast, FS)
    assert rate == f0 == pytest.approx(1.94, abs=0.07) and spi > 0.9
    t = np.arange(3000) / FS  # 12 s
    det = SpectralVtDetector(FS, 1, SpecParams(spi_min=0.5))
    changes = [det.feed(x) for x in np.split(600 * np.sin(2 * np.pi * 0.97 * t) + 1000 * np.sin(2 * np.pi * 1.94 * t), 24)]
    assert not any(changes) and det.last[0][0] < 100 / 60
    det = SpectralVtDetector(FS, 1, SpecParams(spi_min=0.5))
    det.feed(1000 * np.sin(2 * np.pi * 1.94 * t))
    assert det.on


def test_detector_stays_on_through_short_dropouts_then_turns_off() -> None:
    x = np.concatenate([sinus_then_vt(), ecg(np.arange(0.2, 12, 0.8), 12, "narrow")])  # VT 20-28 s, sinus after
    det = SpectralVtDetector(FS, 1, SpecParams(spi_min=0.5, off_hold=4))
    changes = []
    for i in range(0, len(x), 125):
        if det.feed(x[i:i + 125]):
            changes.append(((i + 125) / FS, det.on))
    assert [on for _, on in changes] == [True, False]
    assert 28.0 < changes[1][0] <= 32.0  # the 4-s window empties of VT, then 4 evaluations (2 s) without it


def test_lead_agreement_rule_needs_the_other_lead_at_the_same_rate() -> None:
    vt = sinus_then_vt()
    sinus = ecg(np.arange(0.2, 28, 0.8), 28, "narrow")  # the other lead shows a clear 75 /min rhythm
    small = 0.05 * sinus  # the other lead without QRS-sized deflections: no objection
    for other, agree, expected in ((sinus, 0.0, True), (sinus, 0.2, False), (small, 0.2, True), (vt, 0.2, True)):
        stage = VtStage(VtParams(spi_min=0.5, spec_agree=agree))
        blk = int(0.25 * FS)
        seen = False
        for i in range(0, len(vt), blk):
            t = (i + blk) / FS
            stage.feed_ecg(vt[i:i + blk], FS, t, "ecg")
            stage.feed_ecg(other[i:i + blk], FS, t, "ecg2")
            seen = seen or stage.spectral
        assert seen is expected, (agree, expected)


def test_vt_stage_defaults_lie_on_the_cross_validation_grid() -> None:
    from vigil.evaluation.eval_alarms import CV_GRID
    from vigil.signal.vt import DEFAULT_PARAMS

    for key, values in CV_GRID.items():
        assert getattr(DEFAULT_PARAMS, key) in values, key
    assert 2.0 in CV_GRID["spi_min"]  # the grid can switch the spectral detector off
