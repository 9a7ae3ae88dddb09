"""What parsers produce: device-level items, before the transport stamps device id and clocks."""

from __future__ import annotations

from dataclasses import dataclass

from vigil.model import Metric, TechnicalKind


@dataclass(frozen=True, slots=True)
class Numeric:
    """One numeric value decoded from device bytes (NaN when the device says invalid)."""

    metric: Metric
    value: float
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Wave:
    """Consecutive waveform samples of one channel, in the channel's integer storage unit."""

    channel: str
    samples: tuple[int, ...]
    device_time_ns: int | None = None  # device time of the LAST sample (Unix ns), when the device says


@dataclass(frozen=True, slots=True)
class Condition:
    """A technical condition the device reports (probe off, lead off...)."""

    kind: TechnicalKind
    active: bool
    detail: str = ""


Item = Numeric | Wave | Condition
