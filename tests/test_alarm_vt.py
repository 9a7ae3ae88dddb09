"""VT confirmation stage (vigil.signal.vt) and its place in the alarm engine; CinC 2015 VT records."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.alarms.engine import AlarmEngine
from vigil.clock import SimulatedClock
from vigil.config import VigilConfig
from vigil.datasets import data_root
from vigil.model import Beat, QualityReport, RhythmEpisode
from vigil.signal.vt import DEFAULT_PARAMS, VtParams, VtStage, params_override, pulse_response

FS = 125.0
CHALLENGE = data_root() / "challenge2015"


def pulse_train(beat_times: list[float], amps: list[float] | None = None, duration: float = 40.0,
                noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """A pleth-like wave: a skewed bump per beat (rise 0.12 s, decay 0.3 s) plus white noise."""
    t = np.arange(int(duration * FS)) / FS
    x = np.zeros_like(t)
    for k, tb in enumerate(beat_times):
        a = 1.0 if amps is None else amps[k]
        dt = t - tb
        x += a * np.where(dt < 0, np.exp(-(dt / 0.12) ** 2), np.exp(-(dt / 0.30) ** 2))
    return x + noise * np.random.default_rng(seed).standard_normal(len(t))


def regular(until: float, ibi: float = 0.8, start: float = 0.3) -> list[float]:
    return list(np.arange(start, until, ibi))


def test_pulse_going_on_as_before_is_unchanged() -> None:
    x = pulse_train(regular(40.0))
    r = pulse_response(x, FS, 0.0, 30.0, 33.0, DEFAULT_PARAMS)
    assert r.verdict == "unchanged"
    assert r.baseline_ibi_s == pytest.approx(0.8, abs=0.02)
    assert len(r.ibi_ratios) >= 2 and all(abs(v - 1) < 0.05 for v in r.ibi_ratios)


def test_pulse_following_a_fast_rhythm_is_changed() -> None:
    beats = regular(30.0) + list(np.arange(30.2, 40.0, 0.4))  # 75 -> 150 bpm at the run
    r = pulse_response(pulse_train(beats), FS, 0.0, 30.0, 33.0, DEFAULT_PARAMS)
    assert r.verdict == "changed"
    assert min(r.ibi_ratios) < 0.6


def test_weak_pulses_during_the_run_are_changed() -> None:
    beats = regular(40.0)
    amps = [0.35 if 30.0 <= b <= 33.0 else 1.0 for b in beats]
    r = pulse_response(pulse_train(beats, amps), FS, 0.0, 30.0, 33.0, DEFAULT_PARAMS)
    assert r.verdict == "changed"
    assert min(r.amp_ratios) < DEFAULT_PARAMS.amp_floor


def test_pulse_that_stops_is_changed() -> None:
    r = pulse_response(pulse_train(regular(30.0)), FS, 0.0, 30.0, 34.0, DEFAULT_PARAMS)
    assert r.verdict == "changed" and "stopped" in r.why


def test_no_opinion_without_a_regular_baseline_or_history() -> None:
    rng = np.random.default_rng(3)
    irregular = list(np.cumsum(rng.uniform(0.4, 1.3, 60)))
    assert pulse_response(pulse_train(irregular), FS, 0.0, 30.0, 33.0).verdict == "unknown"
    short = pulse_train(regular(10.0), duration=10.0)
    assert pulse_response(short, FS, 0.0, 8.0, 10.0).verdict == "unknown"  # 8 s of history < 20 s baseline
    noise = np.random.default_rng(4).standard_normal(int(40 * FS))
    assert pulse_response(noise, FS, 0.0, 30.0, 33.0).verdict in ("unknown", "changed")


def test_min_intervals_governs_how_soon_unchanged_is_said() -> None:
    x = pulse_train(regular(40.0))
    strict = VtParams(min_intervals=3)
    assert pulse_response(x, FS, 0.0, 30.0, 31.6, strict).verdict == "unknown"  # ~1 interval so far
    assert pulse_response(x, FS, 0.0, 30.0, 34.0, strict).verdict == "unchanged"


def _engine() -> tuple[AlarmEngine, SimulatedClock, list]:
    cfg = VigilConfig.model_validate({"site": {"name": "t", "room": "t"},
                                      "guests": [{"mat": "m1", "name": "G", "devices": []}]})
    clock = SimulatedClock()
    events: list = []
    audit: list = []
    eng = AlarmEngine(cfg, clock, events.append, audit=lambda a, b, c: audit.append((a, b, c)))
    return eng, clock, [events, audit]


def _drive(pulse: np.ndarray, vt_at: float = 30.0, until: float = 36.0,
           run_ibi: float = 0.45) -> tuple[list, list, AlarmEngine]:
    """Feed beats every 0.8 s, a VT episode opening at `vt_at` (run from vt_at - 2 s) and the pulse in 0.25-s blocks."""
    eng, clock, (events, audit) = _engine()
    ecg_fs = 250
    blk = int(0.25 * FS)
    next_beat = 0.5
    run_first: int | None = None
    opened = False
    for i in range(0, int(until * FS), blk):
        t = (i + blk) / FS
        clock.set(t)
        eng.on_pulse_wave("m1", "pleth", pulse[i:i + blk], FS, t)
        while next_beat <= t - 0.3:  # beats reach the engine ~0.3 s after their R peak
            in_run = next_beat >= vt_at - 2.0
            s = int(next_beat * ecg_fs)
            eng.on_analysis("m1", Beat(s, "V" if in_run else "N"), t)
            if in_run and run_first is None:
                run_first = s
            next_beat += run_ibi if in_run else 0.8
        if run_first is not None and t >= vt_at and not opened:
            eng.on_analysis("m1", RhythmEpisode("VT", run_first, None), t)
            opened = True
        eng.tick()
    return events, audit, eng


def test_engine_holds_vt_back_while_the_pulse_goes_on_unchanged() -> None:
    events, audit, eng = _drive(pulse_train(regular(40.0)))
    assert not [e for e in events if e.condition == "vt" and e.event == "raised"]
    vetoes = [d for _, action, d in audit if action == "alarm.vetoed" and d["condition"] == "vt"]
    assert vetoes and "pulse unchanged" in vetoes[0]["reason"]


def test_unchanged_pulse_does_not_veto_a_run_at_the_pulse_rate() -> None:
    # V beats every 0.7 s against a pulse every 0.8 s: the pulse could be following the run, so no veto
    events, audit, _ = _drive(pulse_train(regular(40.0)), run_ibi=0.7)
    assert [e.event for e in events if e.condition == "vt"][:1] == ["raised"]
    assert not [d for _, a, d in audit if a == "alarm.vetoed" and d["condition"] == "vt"]


def test_cinc_score_formula_and_stratified_folds() -> None:
    from vigil.evaluation.eval_alarms import Counts, Tape, cv_folds, tally

    assert Counts(tp=6, tn=23, fp=7, fn=4).score == pytest.approx(100 * 29 / 56)  # FN weighs 5
    c = tally([("vt", True, True), ("vt", True, False), ("vt", False, True), ("vt", False, False)])["vt"]
    assert (c.tp, c.fn, c.fp, c.tn) == (1, 1, 1, 1) and c.score == pytest.approx(100 * 2 / 8)
    tapes = [Tape(f"r{i:02d}", "Ventricular_Tachycardia", i < 10, None, 0.0, []) for i in range(40)]
    folds = cv_folds(tapes)
    for f in range(5):
        members = [t for t, x in zip(tapes, folds, strict=True) if x == f]
        assert len(members) == 8 and sum(t.truth for t in members) == 2


def test_engine_raises_vt_when_the_pulse_changes_or_is_absent() -> None:
    beats = regular(28.0) + list(np.arange(28.2, 40.0, 0.45))  # pulse follows the fast run
    events, _, _ = _drive(pulse_train(beats))
    raised = [e.t_mono for e in events if e.condition == "vt" and e.event == "raised"]
    assert raised and raised[0] == pytest.approx(30.0, abs=0.5)
    eng, clock, (ev2, _) = _engine()  # no pulse wave at all: the classifier's VT stands at once
    clock.set(10.0)
    eng.on_analysis("m1", RhythmEpisode("VT", 100, None), 10.0)
    assert [e.event for e in ev2 if e.condition == "vt"] == ["raised"]


def test_params_override_applies_to_new_stages_only() -> None:
    before = VtStage()
    with params_override(VtParams(ibi_tol=0.05)):
        inside = VtStage()
    assert inside.params.ibi_tol == 0.05
    assert before.params == VtStage().params == DEFAULT_PARAMS


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.skipif(not (CHALLENGE / "v663l.hea").exists(), reason="needs the PhysioNet records (VIGIL_DATA)")
def test_challenge_records_false_vt_vetoed_true_vt_kept_and_found() -> None:
    from vigil.evaluation.eval_alarms import alarmed, record_tape, replay_tape

    off = VtParams(min_intervals=10**6, run_min_v=0, noise_max=0, spi_min=2.0)  # stage off
    # v663l: false alarm, ECG movement artefact read as a VT run while ABP and pleth beat on as before
    tape, events = record_tape(CHALLENGE / "v663l", "Ventricular_Tachycardia", False)
    assert alarmed(replay_tape(tape, off), "vt", tape.t0), "the classifier alone calls VT here"
    assert not alarmed(events, "vt", tape.t0)
    # v221l: true VT; ABP and pleth pulses shorten and weaken with the run
    tape, events = record_tape(CHALLENGE / "v221l", "Ventricular_Tachycardia", True)
    assert alarmed(events, "vt", tape.t0)
    # v197l: true VT the classifier labels only as short V runs; the ABP changes with them
    tape, events = record_tape(CHALLENGE / "v197l", "Ventricular_Tachycardia", True)
    assert not alarmed(replay_tape(tape, off), "vt", tape.t0)
    raised = [e for e in events if e.condition == "vt" and e.event == "raised" and e.t_mono - tape.t0 >= 284]
    assert raised and "changed pulse" in raised[0].reason


def _feed_history(eng: AlarmEngine, clock: SimulatedClock, pulse: np.ndarray, until: float,
                  labels: list[tuple[float, str]]) -> None:
    """Pulse in 0.25-s blocks and beats (time, label) reported 0.3 s after they happen, at 250 Hz."""
    blk = int(0.25 * FS)
    todo = sorted(labels)
    for i in range(0, int(until * FS), blk):
        t = (i + blk) / FS
        clock.set(t)
        eng.on_pulse_wave("m1", "pleth", pulse[i:i + blk], FS, t)
        while todo and todo[0][0] <= t - 0.3:
            tb, lab = todo.pop(0)
            eng.on_analysis("m1", Beat(int(tb * 250), lab), t)
        eng.tick()


def test_short_ventricular_run_with_a_changed_pulse_raises_vt() -> None:
    beats = [(t, "N") for t in regular(30.0, start=0.5)] + [(30.1 + 0.4 * k, "V") for k in range(3)]
    beats += [(31.5 + 0.8 * k, "N") for k in range(5)]
    fast_pulse = regular(30.0) + list(np.arange(30.5, 31.8, 0.4)) + regular(40.0, start=32.3)
    eng, clock, (events, _) = _engine()
    _feed_history(eng, clock, pulse_train(fast_pulse), 36.0, beats)
    raised = [e for e in events if e.condition == "vt" and e.event == "raised"]
    assert len(raised) == 1 and 30.5 <= raised[0].t_mono <= 32.5
    assert "changed pulse" in raised[0].reason
    # the same three V beats while the pulse beats on unchanged: no VT
    eng, clock, (events, _) = _engine()
    _feed_history(eng, clock, pulse_train(regular(40.0)), 36.0, beats)
    assert not [e for e in events if e.condition == "vt"]


def test_noisy_ecg_without_pulse_support_holds_vt_back_unless_pulseless() -> None:
    eng, clock, (events, audit) = _engine()
    clock.set(10.0)
    for k in range(3):
        eng.on_analysis("m1", QualityReport(int((8 + k) * 250), 0.7, ("noise",)), 10.0)
    eng.on_analysis("m1", RhythmEpisode("VT", 2000, None), 10.0)
    eng.tick()
    assert not [e for e in events if e.condition == "vt"]
    assert any(d.get("condition") == "vt" and "noisy" in d["reason"] for _, a, d in audit if a == "alarm.vetoed")
    clock.set(11.0)
    eng.on_waveform_pulsatile("m1", "pleth", False, 11.0)  # the oximeter finds no pulse: corroborated
    assert [e.event for e in events if e.condition == "vt"] == ["raised"]
    # the noise is forgotten after the window: a later VT on a clean ECG is raised at once
    eng2, clock2, (ev2, _) = _engine()
    clock2.set(10.0)
    for k in range(3):
        eng2.on_analysis("m1", QualityReport(int((8 + k) * 250), 0.7, ("noise",)), 10.0)
    clock2.set(10.0 + DEFAULT_PARAMS.noise_window_s + 1)
    eng2.on_analysis("m1", RhythmEpisode("VT", 6000, None), clock2.monotonic())
    assert [e.event for e in ev2 if e.condition == "vt"] == ["raised"]
