"""A simulated single-lead ECG device at a chosen heart rate (neurokit2.ecg_simulate), played like a replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vigil.clock import Clock
from vigil.edge.records import Record, RecordChannel
from vigil.edge.transports.replay import ReplayTransport
from vigil.model import ChannelKind


def simulated_record(heart_rate: float = 70.0, fs: float = 250.0, duration_s: float = 60.0,
                     noise: float = 0.01, seed: int = 42) -> Record:
    """`duration_s` of synthetic ECG (ECGSYN model, McSharry et al., IEEE TBME 2003) in µV integers."""
    import neurokit2 as nk

    mv = nk.ecg_simulate(duration=int(duration_s), sampling_rate=int(fs), heart_rate=heart_rate,
                         noise=noise, method="ecgsyn", random_state=seed)
    samples = np.round(np.asarray(mv, dtype=np.float64) * 1000.0).astype(np.int32)
    ch = RecordChannel("ecg", "simulated", ChannelKind.ECG, float(fs), "uV", 1.0, samples)
    return Record(Path(f"simulated-{heart_rate:g}bpm"), [ch], [])


class SimulatedEcgTransport(ReplayTransport):
    """An endless simulated ECG at `heart_rate` bpm, paced on `clock`."""

    def __init__(self, device_id: str, clock: Clock, heart_rate: float = 70.0, *, fs: float = 250.0,
                 speed: float = 1.0, seed: int = 42) -> None:
        super().__init__(device_id, simulated_record(heart_rate, fs, seed=seed), clock, speed=speed, loop=True)
