"""Per-guest wiring, clock-injected and deterministic: device outputs → ECG analysis → alarm engine → sinks.

One `Pipeline` serves a room (the alarm engine is room-wide; analysers are per guest). It is plain
synchronous code with no I/O of its own, so the same object runs in the daemon (fed by device
supervisors on the event loop) and in `vigil replay` / tests (fed by `replay_fast` under a
`SimulatedClock`)::

    pipe = Pipeline(cfg, clock, sinks=[MemorySink()])
    pipe.feed(device_id, output)      # SampleBlock | NumericReading | TechnicalEvent
    pipe.tick()                       # alarm timers; call a few times per second of (simulated) time
    pipe.finish()                     # flush analysers at the end of a replay

`run_replay(cfg, clock, ...)` drives every replay/simulated device of a config through a pipeline
as fast as possible on a `SimulatedClock` (what `vigil replay` builds on).

Sinks receive everything that should be stored or shown (`PipelineSink`: no-op base class).
The ECG analyser (`vigil.signal.analyzer.EcgAnalyzer`) and the alarm engine
(`vigil.alarms.engine.AlarmEngine`) are imported lazily; when one is missing the pipeline runs
without it and says so once in the log.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.clock import Clock, SimulatedClock
from vigil.config import VigilConfig
from vigil.model import (
    AlarmEvent,
    AnalysisOutput,
    Beat,
    ChannelKind,
    Measurement,
    Metric,
    NumericReading,
    QualityReport,
    RhythmEpisode,
    SampleBlock,
    TechnicalEvent,
    TechnicalKind,
)

log = logging.getLogger(__name__)

Output = SampleBlock | NumericReading | TechnicalEvent

# metrics shown as vitals (analysis HR/QTc, device numerics)
LAG_ALARM_S = 10.0  # data analysed this long after it arrived: the alarm path is behind (box overloaded)
LAG_CLEAR_S = 2.0  # ... until every lagging device is back within this
LAG_SOURCE = "_processing"  # source id of that box-wide alarm_system_fault

VITAL_METRICS = (Metric.HR, Metric.PULSE_RATE, Metric.SPO2, Metric.SBP, Metric.DBP, Metric.MAP,
                 Metric.QTC, Metric.QT, Metric.RMSSD, Metric.SDNN, Metric.BATTERY, Metric.PI)


class PipelineSink:
    """Receiver of pipeline results; override what you need (every method is a no-op)."""

    # True: `block`/`reading`/`gap` are called when the data arrives (Pipeline.arrive), for devices wired
    # that way, not when the data reaches analysis
    at_arrival = False

    def block(self, mat: str, block: SampleBlock) -> None:
        """A waveform block of guest `mat` (as received)."""

    def reading(self, mat: str, reading: NumericReading) -> None:
        """A device numeric of guest `mat`."""

    def analysis(self, mat: str, outputs: Sequence[AnalysisOutput], t_mono: float) -> None:
        """Analyser outputs of one ECG block."""

    def technical(self, mat: str | None, event: TechnicalEvent) -> None:
        """A technical condition (mat None: box-wide)."""

    def alarm(self, event: AlarmEvent) -> None:
        """An alarm transition from the engine."""

    def gap(self, mat: str, device_id: str, channel: str, from_seq: int, to_seq: int, reason: str) -> None:
        """Samples that never arrived (a jump in seq)."""


@dataclass
class Vital:
    """Latest value of one metric and when it arrived."""

    value: float
    t_mono: float
    source: str  # "analysis" or a device id


@dataclass
class GuestState:
    """What the pipeline knows now about one guest (for the bus, the dashboard and summaries)."""

    mat: str
    vitals: dict[Metric, Vital] = field(default_factory=dict)
    rhythm: str | None = None  # label of the open rhythm episode, if any
    quality: float | None = None
    quality_flags: tuple[str, ...] = ()
    beats: int = 0
    beat_labels: dict[str, int] = field(default_factory=dict)
    ecg_seq: int | None = None  # next expected ECG sample
    ecg_fs: float | None = None
    last_block_mono: float | None = None

    def value(self, metric: Metric, now: float | None = None, max_age_s: float | None = None) -> float | None:
        """Latest value of `metric` (None if unknown, NaN or older than max_age_s)."""
        v = self.vitals.get(metric)
        if v is None or not math.isfinite(v.value):
            return None
        if max_age_s is not None and now is not None and now - v.t_mono > max_age_s:
            return None
        return v.value


PERIODICITY_MIN = 0.4  # band-passed white noise stayed < 0.33 over 8 s (300 trials); clean pulses reach 0.8-0.9


class Pulsatility:
    """Is a pleth/ABP wave pulsatile? Regular prominent peaks over the last `window_s` (pure, per second)."""

    def __init__(self, fs: float, kind: str, window_s: float = 8.0) -> None:
        self.fs = fs
        self.kind = kind
        self.window = int(window_s * fs)
        self.buf: deque[npt.NDArray[np.float64]] = deque()
        self.n = 0
        self.since_eval = 0
        self._sos: npt.NDArray[np.float64] | None = None  # band-pass designed on first use (scipy is imported lazily)
        self._edge = 0

    def feed(self, physical: npt.NDArray[np.float64]) -> bool | None:
        """Add samples; returns a verdict once per second of signal (None in between)."""
        self.buf.append(physical)
        self.n += len(physical)
        self.since_eval += len(physical)
        while self.n - len(self.buf[0]) >= self.window:
            self.n -= len(self.buf.popleft())
        if self.since_eval < self.fs or self.n < self.window:
            return None
        self.since_eval = 0
        return self.pulsatile(np.concatenate(self.buf)[-self.window:])

    def _zero_phase_bandpass(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """`scipy.signal.sosfiltfilt` (odd padding, default length), bit for bit, with the design cached."""
        import scipy.signal as sps

        from vigil.signal import filters

        if self._sos is None:
            self._sos = sps.butter(2, [0.5, min(8.0, self.fs / 2.5)], btype="bandpass", fs=self.fs, output="sos")
            taps = 2 * len(self._sos) + 1 - min(int((self._sos[:, 2] == 0).sum()), int((self._sos[:, 5] == 0).sum()))
            self._edge = 3 * taps  # SciPy's default padlen
        if len(x) <= self._edge:  # too short to pad: let scipy say so
            return np.asarray(sps.sosfiltfilt(self._sos, x))
        return filters.sosfiltfilt(self._sos, x, padlen=self._edge)

    def pulsatile(self, x: npt.NDArray[np.float64]) -> bool:
        """Pulsatile = ≥ 2 prominent peaks, none > 2.5 s apart nor > 2.5 s before the end, median interval
        ≥ 0.25 s, and a periodic shape.

        Periodic: the normalised (unbiased, 0.5–8 Hz band-passed) autocorrelation peaks ≥ 0.4 at a lag of 0.3–2 s (one beat). ABP also needs
        ≥ 10 mmHg of pulse pressure. In doubt the answer is "not pulsatile", so no alarm is vetoed.
        """
        import scipy.signal as sps

        p5, p95 = np.percentile(x, (5, 95))
        spread = float(p95 - p5)
        if spread <= 0 or (self.kind == "abp" and spread < 10.0):
            return False
        peaks, _ = sps.find_peaks(x, distance=max(1, int(0.25 * self.fs)), prominence=0.4 * spread)
        if len(peaks) < 2:
            return False
        ibi = np.diff(peaks) / self.fs
        since_last = (len(x) - 1 - peaks[-1]) / self.fs  # pulses that stopped are no pulse, however regular before
        if not (ibi.max() <= 2.5 and since_last <= 2.5 and np.median(ibi) >= 0.25):
            return False
        # periodicity: noise from a loose sensor has peaks too, but no repeating beat shape
        y = self._zero_phase_bandpass(x - x.mean())
        n = len(y)
        ac = sps.correlate(y, y, mode="full", method="fft")[n - 1:] / (n - np.arange(n))  # unbiased
        if ac[0] <= 0:
            return False
        lo, hi = int(0.3 * self.fs), min(n - 1, int(2.0 * self.fs))
        return bool(hi > lo and (ac[lo:hi + 1] / ac[0]).max() >= PERIODICITY_MIN)


def _load_analyzer_factory() -> Callable[[float, str], Any] | None:
    try:
        from vigil.signal.analyzer import EcgAnalyzer
    except ImportError as exc:
        log.warning("ECG analysis unavailable (%s): running without it", exc)
        return None

    def make(fs: float, channel: str) -> Any:
        return EcgAnalyzer(fs, channel=channel)
    return make


class Pipeline:
    """Room-wide data path: analysers per guest, one alarm engine, fan-out to sinks."""

    def __init__(self, cfg: VigilConfig, clock: Clock, sinks: Iterable[PipelineSink] = (), *,
                 analyzer_factory: Callable[[float, str], Any] | None | bool = True,
                 engine: Any | None | bool = True, secrets: dict[str, bytes] | None = None,
                 audit: Callable[[str, str, dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.sinks: list[PipelineSink] = list(sinks)
        self.device_guest: dict[str, str] = {d: g.mat for g in cfg.guests for d in g.devices}
        self.guests: dict[str, GuestState] = {g.mat: GuestState(g.mat) for g in cfg.guests}
        self._analyzers: dict[str, Any] = {}
        self._pulse: dict[tuple[str, str], Pulsatility] = {}
        self._next_seq: dict[tuple[str, str], int] = {}  # (device, channel) -> next expected sample
        self._arrival_devices: set[str] = set()  # devices whose data the at-arrival sinks got in `arrive`
        self._unassigned: set[str] = set()
        self._lagging: dict[str, float] = {}  # device -> worst lag (s) since it went over LAG_ALARM_S
        self.max_lag_s = 0.0
        self.analysis_errors = 0
        if analyzer_factory is True:
            self._make_analyzer = _load_analyzer_factory()
        else:
            self._make_analyzer = analyzer_factory or None
        if engine is True:
            self.engine = self._load_engine(secrets, audit)
        else:
            self.engine = engine or None

    # ------------------------------------------------------------------ construction helpers
    def _load_engine(self, secrets: dict[str, bytes] | None,
                     audit: Callable[[str, str, dict[str, Any]], None] | None) -> Any | None:
        try:
            from vigil.alarms.engine import AlarmEngine
        except ImportError as exc:
            log.warning("alarm engine unavailable (%s): running without alarms", exc)
            return None
        return AlarmEngine(self.cfg, self.clock, self._on_alarm, audit=audit, secrets=secrets)

    @property
    def has_analysis(self) -> bool:
        """True when ECG analysis runs."""
        return self._make_analyzer is not None

    def add_sink(self, sink: PipelineSink) -> None:
        """Add a receiver."""
        self.sinks.append(sink)

    # ------------------------------------------------------------------ inputs
    def mat_of(self, device_id: str | None) -> str | None:
        """The guest wearing `device_id` (None if unassigned)."""
        return self.device_guest.get(device_id) if device_id else None

    def wire_arrival(self, device_id: str) -> Callable[[Output], None]:
        """Hook for a device's supervisor: its data reaches the at-arrival sinks (the store) as it arrives."""
        self._arrival_devices.add(device_id)
        return lambda out: self.arrive(device_id, out)

    def arrive(self, device_id: str, out: Output) -> None:
        """Store a block or numeric the moment it arrives, ahead of analysis (see `wire_arrival`).

        Analysis and alarms may run seconds behind on a loaded box; what has arrived must not wait
        for them to be stored, or a power cut or SIGKILL would lose more than the commit window.
        """
        mat = self.mat_of(device_id)
        if mat is None:
            return
        early = [s for s in self.sinks if getattr(s, "at_arrival", False)]
        if isinstance(out, SampleBlock):
            self._check_seq(mat, out, early)
            for s in early:
                _safe(s.block, mat, out)
        elif isinstance(out, NumericReading):
            for s in early:
                _safe(s.reading, mat, out)

    def _late_sinks(self, device_id: str) -> list[PipelineSink]:
        """The sinks `feed` serves for this device's data (all, unless the at-arrival ones had it)."""
        if device_id in self._arrival_devices:
            return [s for s in self.sinks if not getattr(s, "at_arrival", False)]
        return self.sinks

    def _check_seq(self, mat: str, block: SampleBlock, sinks: Sequence[PipelineSink]) -> None:
        key = (block.device_id, block.channel)
        expected = self._next_seq.get(key)
        if expected is not None and block.seq > expected:  # reconnects and lost frames of every channel
            for s in sinks:
                _safe(s.gap, mat, block.device_id, block.channel, expected, block.seq, "seq jump")
        self._next_seq[key] = block.end_seq

    def feed(self, device_id: str, out: Output) -> None:
        """One output of a device (through its supervisor)."""
        if isinstance(out, TechnicalEvent):
            self.technical(self.mat_of(out.device_id or device_id), out)
            return
        mat = self.mat_of(device_id)
        if mat is None:
            if device_id not in self._unassigned:
                self._unassigned.add(device_id)
                log.info("device %s is not assigned to a guest: its data is ignored", device_id)
            return
        self._check_lag(device_id, self.clock.monotonic() - out.t_mono)
        if isinstance(out, SampleBlock):
            self._block(mat, out)
        elif isinstance(out, NumericReading):
            self._reading(mat, out)

    def _check_lag(self, device_id: str, lag: float) -> None:
        """Raise a box-wide alarm_system_fault while data reaches analysis > LAG_ALARM_S after it arrived.

        The alarm path must never silently run behind: an overloaded box (CPU starved, a backlog in a
        device queue) would otherwise raise alarms for data that is already tens of seconds old.
        """
        self.max_lag_s = max(self.max_lag_s, lag)
        if device_id in self._lagging:
            if lag < LAG_CLEAR_S:
                del self._lagging[device_id]
                if not self._lagging:
                    self.technical(None, TechnicalEvent(TechnicalKind.ALARM_SYSTEM_FAULT, False,
                                                        self.clock.monotonic(), LAG_SOURCE,
                                                        "analysis has caught up with the data"))
            else:
                self._lagging[device_id] = max(self._lagging[device_id], lag)
        elif lag > LAG_ALARM_S:
            first = not self._lagging
            self._lagging[device_id] = lag
            log.warning("device %s: data analysed %.0f s after it arrived (box overloaded?)", device_id, lag)
            if first:
                self.technical(None, TechnicalEvent(
                    TechnicalKind.ALARM_SYSTEM_FAULT, True, self.clock.monotonic(), LAG_SOURCE,
                    f"analysis is {lag:.0f} s behind the data: alarms come late (box overloaded)"))

    def technical(self, mat: str | None, event: TechnicalEvent) -> None:
        """A technical condition (device, broker, store...)."""
        for s in self.sinks:
            _safe(s.technical, mat, event)
        if self.engine is not None:
            _safe(self.engine.on_technical, mat, event)

    def _block(self, mat: str, block: SampleBlock) -> None:
        g = self.guests[mat]
        if block.device_id not in self._arrival_devices:  # else `arrive` checked it
            self._check_seq(mat, block, self.sinks)
        for s in self._late_sinks(block.device_id):
            _safe(s.block, mat, block)
        if block.kind is ChannelKind.ECG and self.engine is not None and hasattr(self.engine, "on_ecg_wave"):
            _safe(self.engine.on_ecg_wave, mat, block.samples.astype(np.float64) * block.gain, block.fs,
                  block.t_mono, block.channel)  # every ECG lead to the VT stage's spectral detector
        if block.kind is ChannelKind.ECG and block.channel == "ecg":
            g.ecg_seq, g.ecg_fs, g.last_block_mono = block.end_seq, block.fs, block.t_mono
            self._analyse(mat, g, block)
        elif block.kind in (ChannelKind.PLETH, ChannelKind.ABP):
            key = (mat, block.kind.value)
            tracker = self._pulse.get(key)
            if tracker is None or tracker.fs != block.fs:
                tracker = self._pulse[key] = Pulsatility(block.fs, block.kind.value)
            phys = block.samples.astype(np.float64) * block.gain
            if self.engine is not None and hasattr(self.engine, "on_pulse_wave"):
                _safe(self.engine.on_pulse_wave, mat, block.kind.value, phys, block.fs, block.t_mono)
            verdict = tracker.feed(phys)
            if verdict is not None and self.engine is not None:
                _safe(self.engine.on_waveform_pulsatile, mat, block.kind.value, verdict, block.t_mono)

    def _analyse(self, mat: str, g: GuestState, block: SampleBlock) -> None:
        if self._make_analyzer is None:
            return
        an = self._analyzers.get(mat)
        if an is None or getattr(an, "fs", block.fs) != block.fs:
            an = self._analyzers[mat] = self._make_analyzer(block.fs, "ecg")
        try:
            outputs = an.feed(block.samples, block.seq)
        except Exception:
            self.analysis_errors += 1
            if self.analysis_errors == 1 or self.analysis_errors % 1000 == 0:
                log.exception("ECG analysis failed on guest block (%d failures)", self.analysis_errors)
            return
        self._outputs(mat, g, outputs, block.t_mono)

    def _outputs(self, mat: str, g: GuestState, outputs: Sequence[AnalysisOutput], t_mono: float) -> None:
        if not outputs:
            return
        for o in outputs:
            if isinstance(o, Measurement):
                if o.metric in VITAL_METRICS:
                    g.vitals[o.metric] = Vital(float(o.value), t_mono, "analysis")
            elif isinstance(o, RhythmEpisode):
                if o.end is None:
                    g.rhythm = o.label
                elif g.rhythm == o.label:
                    g.rhythm = None
            elif isinstance(o, QualityReport):
                g.quality, g.quality_flags = o.quality, o.flags
            elif isinstance(o, Beat):
                g.beats += 1
                g.beat_labels[o.label] = g.beat_labels.get(o.label, 0) + 1
            if self.engine is not None:
                _safe(self.engine.on_analysis, mat, o, t_mono)
        for s in self.sinks:
            _safe(s.analysis, mat, outputs, t_mono)

    def _reading(self, mat: str, r: NumericReading) -> None:
        g = self.guests[mat]
        g.vitals[r.metric] = Vital(float(r.value), r.t_mono, r.device_id)
        for s in self._late_sinks(r.device_id):
            _safe(s.reading, mat, r)
        if self.engine is not None:
            _safe(self.engine.on_reading, mat, r)

    def _on_alarm(self, ev: AlarmEvent) -> None:
        for s in self.sinks:
            _safe(s.alarm, ev)

    # ------------------------------------------------------------------ timers, commands, state
    def tick(self) -> None:
        """Advance the alarm engine's timers (call a few times per second)."""
        if self.engine is not None:
            self.engine.tick()

    def finish(self) -> None:
        """Flush the analysers (end of a replay)."""
        for mat, an in self._analyzers.items():
            flush = getattr(an, "flush", None)
            if flush is None:
                continue
            try:
                outputs = flush()
            except Exception:
                log.exception("ECG analysis flush failed")
                continue
            self._outputs(mat, self.guests[mat], outputs, self.clock.monotonic())

    def command(self, cmd: dict[str, Any]) -> Any:
        """Hand an operator command to the alarm engine (None when there is no engine)."""
        return self.engine.command(cmd) if self.engine is not None else None

    def active_alarms(self, mat: str | None = None) -> list[Any]:
        """Active alarm conditions (AlarmStatus), highest priority first."""
        if self.engine is None:
            return []
        return list(self.engine.active(mat))


def _safe(fn: Callable[..., Any], *args: Any) -> None:
    """Call a sink/engine input; a failing consumer is logged, never propagated to the data path."""
    try:
        fn(*args)
    except Exception:
        log.exception("pipeline consumer %s failed", getattr(fn, "__qualname__", fn))


# --------------------------------------------------------------------------- sinks used everywhere

class MemorySink(PipelineSink):
    """Keeps everything in lists (tests, `vigil replay`)."""

    def __init__(self, keep_blocks: bool = False) -> None:
        self.keep_blocks = keep_blocks
        self.blocks: list[tuple[str, SampleBlock]] = []
        self.readings: list[tuple[str, NumericReading]] = []
        self.outputs: list[tuple[str, AnalysisOutput, float]] = []
        self.technicals: list[tuple[str | None, TechnicalEvent]] = []
        self.alarms: list[AlarmEvent] = []
        self.gaps: list[tuple[str, str, str, int, int, str]] = []

    def block(self, mat: str, block: SampleBlock) -> None:
        """Keep blocks only when asked (they are big)."""
        if self.keep_blocks:
            self.blocks.append((mat, block))

    def reading(self, mat: str, reading: NumericReading) -> None:
        """Keep."""
        self.readings.append((mat, reading))

    def analysis(self, mat: str, outputs: Sequence[AnalysisOutput], t_mono: float) -> None:
        """Keep."""
        self.outputs.extend((mat, o, t_mono) for o in outputs)

    def technical(self, mat: str | None, event: TechnicalEvent) -> None:
        """Keep."""
        self.technicals.append((mat, event))

    def alarm(self, event: AlarmEvent) -> None:
        """Keep."""
        self.alarms.append(event)

    def gap(self, mat: str, device_id: str, channel: str, from_seq: int, to_seq: int, reason: str) -> None:
        """Keep."""
        self.gaps.append((mat, device_id, channel, from_seq, to_seq, reason))


class StoreSink(PipelineSink):
    """Writes through a `StoreWriter` (never blocks: `submit` queues to the writer thread)."""

    at_arrival = True

    def __init__(self, writer: Any, session_id: str) -> None:
        self.writer = writer
        self.sid = session_id

    def block(self, mat: str, block: SampleBlock) -> None:
        """Waveform chunking happens in the store."""
        self.writer.submit("add_block", self.sid, mat, block)

    def reading(self, mat: str, reading: NumericReading) -> None:
        """Numeric row."""
        self.writer.submit("add_reading", self.sid, mat, reading)

    def analysis(self, mat: str, outputs: Sequence[AnalysisOutput], t_mono: float) -> None:
        """Beats in one batch; measurements; closed rhythm episodes."""
        beats = [o for o in outputs if isinstance(o, Beat)]
        if beats:
            self.writer.submit("add_beats", self.sid, mat, beats[0].channel, beats)
        for o in outputs:
            if isinstance(o, Measurement):
                self.writer.submit("add_measurement", self.sid, mat, o)
            elif isinstance(o, RhythmEpisode) and o.end is not None:
                self.writer.submit("add_episode", self.sid, mat, o)

    def alarm(self, event: AlarmEvent) -> None:
        """Alarm event row (+ outbox, by the store)."""
        self.writer.submit("add_alarm_event", self.sid, event)

    def technical(self, mat: str | None, event: TechnicalEvent) -> None:
        """Technical conditions go to the audit log."""
        self.writer.submit("audit", "daemon", "technical", {
            "mat": mat, "kind": event.kind.value, "active": event.active, "device": event.device_id,
            "detail": event.detail})

    def gap(self, mat: str, device_id: str, channel: str, from_seq: int, to_seq: int, reason: str) -> None:
        """Gap row."""
        self.writer.submit("add_gap", self.sid, device_id, channel, from_seq, to_seq, reason)


# --------------------------------------------------------------------------- replay driver

def replay_sources(cfg: VigilConfig, start_s: float | None = None) -> dict[str, Any]:
    """Load every replay/simulated device of `cfg` as a Record (RecordError names a bad file)."""
    from vigil.edge.records import load_record
    from vigil.edge.transports.simulated import simulated_record

    out: dict[str, Any] = {}
    for d in cfg.devices:
        if d.record:
            out[d.id] = load_record(cfg.resolve_path(d.record), channel=d.channel,
                                    start_s=d.start_s if start_s is None else start_s)
        elif d.heart_rate is not None or d.profile.startswith("simulated"):
            out[d.id] = simulated_record(d.heart_rate or 70.0)
    return out


def run_replay(cfg: VigilConfig, clock: SimulatedClock, *, duration_s: float | None = None,
               sinks: Iterable[PipelineSink] = (), pipeline: Pipeline | None = None,
               records: dict[str, Any] | None = None, tick_s: float = 0.1, loop: bool = False,
               block_s: float = 0.25) -> Pipeline:
    """Drive every replay/simulated device of `cfg` through a pipeline, as fast as possible.

    Devices are merged in time order; `clock` is advanced to each arrival and the alarm engine is
    ticked every `tick_s` of simulated time, so results are deterministic. Stops at the end of the
    longest record (or `duration_s`), flushes the analysers and returns the pipeline.
    """
    import heapq

    from vigil.edge.transports.replay import replay_events, to_output

    pipe = pipeline or Pipeline(cfg, clock, sinks)
    recs = records if records is not None else replay_sources(cfg)
    t0 = clock.monotonic()
    def tagged(i: int, dev: str, rec: Any) -> Any:
        for t, item in replay_events(rec, block_s, loop):
            yield t, i, dev, item

    streams = [tagged(i, dev, rec) for i, (dev, rec) in enumerate(recs.items())]
    next_tick = 0.0
    for t, _i, dev, item in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
        if duration_s is not None and t > duration_s:
            break
        while next_tick <= t:
            clock.set(t0 + next_tick)
            pipe.tick()
            next_tick += tick_s
        clock.set(t0 + t)
        pipe.feed(dev, to_output(dev, item, clock.monotonic(), clock.wall()))
    end = duration_s if duration_s is not None else max((r.duration_s for r in recs.values()), default=0.0)
    while next_tick <= end:
        clock.set(t0 + next_tick)
        pipe.tick()
        next_tick += tick_s
    pipe.finish()
    pipe.tick()
    return pipe
