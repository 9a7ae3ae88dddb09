"""End-to-end HR alarm delay through the live pipeline (analysis averaging + condition delay) <= 10 s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vigil.clock import SimulatedClock
from vigil.config import VigilConfig
from vigil.edge.records import Record, RecordChannel
from vigil.edge.transports.simulated import simulated_record
from vigil.model import ChannelKind


def _step_record(before: float, after: float, seconds: int = 40) -> Record:
    a = simulated_record(before, duration_s=seconds, seed=1).channels[0].samples
    b = simulated_record(after, duration_s=seconds, seed=2).channels[0].samples
    ch = RecordChannel("ecg", "sim", ChannelKind.ECG, 250.0, "uV", 1.0, np.concatenate([a, b]))
    return Record(Path(f"step-{before:g}-{after:g}"), [ch], [])


@pytest.mark.parametrize("before,after,cond", [(80, 130, "hr_high_critical"), (80, 35, "hr_low_critical")])
def test_hr_step_alarm_within_10_s(before, after, cond):
    pytest.importorskip("neurokit2")
    from vigil.edge.pipeline import MemorySink, run_replay

    cfg = VigilConfig.model_validate({"site": {"name": "t", "room": "t"},
                                      "devices": [{"id": "sim", "profile": "simulated-ecg"}],
                                      "guests": [{"mat": "m01", "name": "G", "devices": ["sim"]}]})
    sink = MemorySink()
    run_replay(cfg, SimulatedClock(), sinks=[sink], records={"sim": _step_record(before, after)})
    raised = [e.t_mono for e in sink.alarms if e.condition == cond and e.event == "raised"]
    early = [e for e in sink.alarms if e.event == "raised" and e.t_mono < 40 and e.condition.startswith("hr_")]
    assert not early, f"HR alarm before the step: {early}"
    assert raised, f"no {cond} after the step"
    delay = raised[0] - 40.0
    assert 0 < delay <= 10.0, delay
