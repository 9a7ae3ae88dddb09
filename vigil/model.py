"""Value types shared by every part of Vigil.

Conventions
-----------
* Waveform samples are integers in the channel's storage unit (ECG in µV, pressure in
  0.01 mmHg... whatever ``SampleBlock.unit`` says); ``seq`` is the device sample index of the
  first sample, so gaps show as jumps in ``seq`` and are never padded.
* ``t_mono`` is the daemon's monotonic clock (seconds) when the data arrived; ``wall`` is the
  wall clock (Unix seconds) at the same moment and may jump.
* Sample indices emitted by ``vigil.signal`` are in the stream's own numbering (``seq``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

SCHEMA_VERSION = 1  # version of JSON payloads on the bus and in the outbox


class Priority(enum.IntEnum):
    """IEC 60601-1-8 alarm priority; larger is more urgent."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        """Lower-case name used in JSON ("high", "medium", "low")."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Priority:
        """Parse "high"/"medium"/"low" (any case)."""
        return cls[text.strip().upper()]


class ChannelKind(str, enum.Enum):
    """What a waveform channel carries."""

    ECG = "ecg"
    PLETH = "pleth"
    ABP = "abp"
    RESP = "resp"
    CUFF = "cuff"


class Metric(str, enum.Enum):
    """Numeric quantities read from devices or computed by analysis."""

    HR = "hr"  # bpm, from ECG analysis
    PULSE_RATE = "pulse_rate"  # bpm, from oximeter/cuff
    SPO2 = "spo2"  # %
    SBP = "sbp"  # mmHg
    DBP = "dbp"  # mmHg
    MAP = "map"  # mmHg
    QT = "qt"  # ms
    QTC = "qtc"  # ms
    RR = "rr"  # ms, instantaneous
    SDNN = "sdnn"  # ms
    RMSSD = "rmssd"  # ms
    PNN50 = "pnn50"  # %
    LF = "lf"  # ms^2
    HF = "hf"  # ms^2
    LF_HF = "lf_hf"  # ratio
    PI = "pi"  # perfusion index, %
    BATTERY = "battery"  # %
    CUFF_PRESSURE = "cuff_pressure"  # mmHg, intermediate
    SIGNAL_QUALITY = "signal_quality"  # 0..1

    @property
    def unit(self) -> str:
        """UCUM-ish unit of the metric."""
        return _METRIC_UNITS[self]


_METRIC_UNITS: dict[Metric, str] = {
    Metric.HR: "/min",
    Metric.PULSE_RATE: "/min",
    Metric.SPO2: "%",
    Metric.SBP: "mm[Hg]",
    Metric.DBP: "mm[Hg]",
    Metric.MAP: "mm[Hg]",
    Metric.QT: "ms",
    Metric.QTC: "ms",
    Metric.RR: "ms",
    Metric.SDNN: "ms",
    Metric.RMSSD: "ms",
    Metric.PNN50: "%",
    Metric.LF: "ms2",
    Metric.HF: "ms2",
    Metric.LF_HF: "1",
    Metric.PI: "%",
    Metric.BATTERY: "%",
    Metric.CUFF_PRESSURE: "mm[Hg]",
    Metric.SIGNAL_QUALITY: "1",
}

BeatLabel = Literal["N", "V", "S", "F", "Q"]
RhythmLabel = Literal["AF", "AFL", "VT", "VF", "ASYSTOLE", "BRADY", "TACHY", "PAUSE", "SINUS", "NOISE",
                      "BIGEMINY", "TRIGEMINY", "COUPLET", "BRADY_EXTREME", "TACHY_EXTREME"]


@dataclass(frozen=True, slots=True)
class SampleBlock:
    """A contiguous run of samples from one channel of one device."""

    device_id: str
    channel: str  # e.g. "ecg", "ecg2", "pleth", "abp"
    kind: ChannelKind
    fs: float  # samples per second
    unit: str  # unit of one integer step after applying `gain`: physical = samples * gain
    gain: float  # physical value per integer step (e.g. 1.0 for µV integers)
    seq: int  # device sample index of samples[0]
    samples: npt.NDArray[np.int32]
    t_mono: float  # daemon monotonic time when the block arrived
    wall: float  # wall-clock Unix time when the block arrived

    @property
    def end_seq(self) -> int:
        """Sample index one past the last sample."""
        return self.seq + len(self.samples)


@dataclass(frozen=True, slots=True)
class NumericReading:
    """One numeric value from a device (or from analysis)."""

    device_id: str
    metric: Metric
    value: float  # NaN when the device says "invalid / not available"
    t_mono: float
    wall: float
    flags: tuple[str, ...] = ()  # e.g. ("irregular_pulse", "finger_out")


@dataclass(frozen=True, slots=True)
class Beat:
    """A detected (or annotated) heartbeat."""

    sample: int  # in the stream's numbering
    label: BeatLabel = "N"
    channel: str = "ecg"
    # The label on the V evidence that VT runs, AF's ectopic intervals and the VT alarm count (in
    # vigil.signal.beats: the rule's V call not vetoed, while `label` comes from the gated label
    # model); None when it equals `label` (annotated beats, most detected ones).
    strict_label: BeatLabel | None = None

    @property
    def rhythm_label(self) -> BeatLabel:
        """The label rhythm calls and the VT alarm use: `strict_label` when set, else `label`."""
        return self.label if self.strict_label is None else self.strict_label


@dataclass(frozen=True, slots=True)
class Measurement:
    """A value computed by streaming analysis at a point of the stream."""

    metric: Metric
    value: float
    sample: int  # sample index the value refers to (end of its window)
    channel: str = "ecg"
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. {"formula": "fridericia", "qt_ms": 410}


@dataclass(frozen=True, slots=True)
class RhythmEpisode:
    """A rhythm episode; `end` is None while it is ongoing (an "open" update)."""

    label: RhythmLabel
    start: int
    end: int | None
    channel: str = "ecg"


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Per-second signal quality of one channel."""

    sample: int  # end of the assessed second
    quality: float  # 0 (unusable) .. 1 (clean)
    flags: tuple[str, ...] = ()  # "flatline", "saturation", "lead_off", "noise" (+ "wander" or "qrs_visible" saying why it cannot hide a QRS), "detector_disagreement", "pacer" (pacemaker pulses were cut out of it)
    channel: str = "ecg"


AnalysisOutput = Beat | Measurement | RhythmEpisode | QualityReport


class TechnicalKind(str, enum.Enum):
    """Technical (equipment) conditions."""

    DEVICE_STALE = "device_stale"
    DEVICE_DISCONNECTED = "device_disconnected"
    LEAD_OFF = "lead_off"
    POOR_SIGNAL = "poor_signal"
    LOW_BATTERY = "low_battery"
    BROKER_DOWN = "broker_down"
    DISK_LOW = "disk_low"
    STORE_FAILED = "store_failed"
    ESCALATION_CHANNEL_FAILED = "escalation_channel_failed"
    SOUND_FAILED = "sound_failed"
    ALARM_SYSTEM_FAULT = "alarm_system_fault"


@dataclass(frozen=True, slots=True)
class TechnicalEvent:
    """A technical condition starting (active=True) or ending."""

    kind: TechnicalKind
    active: bool
    t_mono: float
    device_id: str | None = None
    detail: str = ""


class DeviceState(str, enum.Enum):
    """Connection state of one device, owned by the supervisor."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALE = "stale"
    LOST = "lost"
    STOPPED = "stopped"


class AlarmState(str, enum.Enum):
    """State of one alarm condition (IEC 60601-1-8)."""

    INACTIVE = "inactive"
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    AUDIO_PAUSED = "audio_paused"
    ALARM_OFF = "alarm_off"
    LATCHED = "latched"  # condition gone, awaiting acknowledgement


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """A transition of one alarm condition of one guest."""

    guest: str  # mat id
    condition: str  # stable condition id, e.g. "hr_high", "asystole"
    priority: Priority
    event: str  # raised|cleared|acknowledged|paused|off|escalated|latched|reset|reminder
    state: AlarmState
    t_mono: float
    wall: float
    operator: str | None = None
    reason: str = ""
    value: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GuestInfo:
    """A guest on a mat (PHI: display name is never logged)."""

    mat: str
    display_name: str
    baseline_qtc_ms: float | None = None
    devices: tuple[str, ...] = ()
