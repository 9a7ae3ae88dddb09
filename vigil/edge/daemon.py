"""`vigil run`: wiring and lifecycle of the monitoring daemon.

Start, in order: record store (+ writer thread, session row) → pipeline (alarm engine, analysers) →
MQTT bus (connects in the background; an unreachable broker is a BROKER_DOWN technical alarm, never a
reason not to start) → devices (one supervisor each) → alarm loop (ticks the engine, pings the systemd
watchdog) → live-state publisher. Stop is the reverse: devices, then a final flush of the
analysers, the bus (retained "stopped" status), and last the store (end of session, flush, close).

Nothing on the alarm path awaits the network, the broker or the disk: devices feed the pipeline
synchronously, the store is written by its own thread, the bus publishes from a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from vigil.alarms.conditions import SYSTEM_GUEST
from vigil.bus import Bus
from vigil.clock import Clock, SystemClock
from vigil.config import VigilConfig, read_secret
from vigil.edge.history import GuestHistory
from vigil.edge.pipeline import Pipeline, PipelineSink, StoreSink
from vigil.edge.sdnotify import SdNotify
from vigil.errors import ConfigError, VigilError
from vigil.model import (
    AlarmEvent,
    AnalysisOutput,
    Beat,
    ChannelKind,
    GuestInfo,
    Metric,
    SampleBlock,
    TechnicalEvent,
    TechnicalKind,
)

log = logging.getLogger(__name__)

ECG_PUBLISH_S = 0.25  # ~4 waveform frames per second per guest
ECG_BUS_MAX_FS = 125.0  # decimate the bus waveform to at most this rate
VITALS_PUBLISH_S = 1.0
ALARM_TICK_S = 0.1


# --------------------------------------------------------------------------- the bus sink

class BusSink(PipelineSink):
    """Publishes alarm events at once, and buffers ECG (with its labelled beats) for ~4 decimated frames a second."""

    MAX_PENDING_BEATS = 64  # per guest; beats come <= 1 s after their samples, frames go 4 times a second

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._ecg: dict[str, tuple[int, float, list[np.ndarray]]] = {}  # mat -> (first seq, fs, chunks)
        self._remainder: dict[str, np.ndarray] = {}
        self._beats: dict[str, list[list[int | str]]] = {}  # mat -> [[seq, label], ...] not yet published
        self.history: dict[str, GuestHistory] = {}  # mat -> trends and recent events, for late dashboards
        self.history_dirty: set[str] = set()
        self._history_sent: dict[str, float] = {}  # mat -> monotonic time of its last history publish

    def block(self, mat: str, block: SampleBlock) -> None:
        """Buffer the primary ECG channel."""
        if block.kind is not ChannelKind.ECG or block.channel != "ecg":
            return
        cur = self._ecg.get(mat)
        if cur is None or cur[1] != block.fs or cur[0] + sum(len(c) for c in cur[2]) != block.seq:
            cur = (block.seq, block.fs, [])  # new stream or a gap: start a new frame
            self._remainder.pop(mat, None)
            self._ecg[mat] = cur
        cur[2].append(block.samples)

    def analysis(self, mat: str, outputs: Sequence[AnalysisOutput], t_mono: float) -> None:
        """Keep the primary lead's new beats for the next frame (the dashboard labels its strip with them)."""
        new: list[list[int | str]] = [[b.sample, b.label] for b in outputs if isinstance(b, Beat) and b.channel == "ecg"]
        if new:
            pending = self._beats.setdefault(mat, [])
            pending.extend(new)
            del pending[:-self.MAX_PENDING_BEATS]

    def alarm(self, event: AlarmEvent) -> None:
        """Every transition goes out on alarms/events."""
        payload = asdict(event)
        payload["priority"] = event.priority.label
        self.bus.publish_alarm_event(payload)
        if event.guest != SYSTEM_GUEST:
            self.history_of(event.guest).add_event(json.loads(json.dumps(payload, default=str)))
            self.history_dirty.add(event.guest)

    def history_of(self, mat: str) -> GuestHistory:
        """The guest's history (created on first use)."""
        h = self.history.get(mat)
        if h is None:
            h = self.history[mat] = GuestHistory()
        return h

    HISTORY_EVENT_MIN_S = 10.0  # events re-publish the (up to 12 h) history at most this often per guest

    def publish_history(self, mat: str, vitals: dict[str, Any], wall: float) -> None:
        """Feed one vitals sample; publish the retained history when a minute closed, or after alarm events
        (at most every HISTORY_EVENT_MIN_S: live dashboards get the events on alarms/events anyway)."""
        now = time.monotonic()
        closed = self.history_of(mat).add_vitals(wall, vitals)
        due = mat in self.history_dirty and now - self._history_sent.get(mat, -math.inf) >= self.HISTORY_EVENT_MIN_S
        if closed or due:
            self.history_dirty.discard(mat)
            self._history_sent[mat] = now
            self.bus.publish_history(mat, self.history[mat].payload(mat, wall))

    def flush_ecg(self, wall: float) -> int:
        """Publish one decimated frame per guest with buffered ECG; returns frames published."""
        n = 0
        for mat, (seq, fs, chunks) in list(self._ecg.items()):
            if not chunks:
                continue
            x = np.concatenate(chunks)
            factor = max(1, math.ceil(fs / ECG_BUS_MAX_FS))
            usable = len(x) - len(x) % factor
            if usable == 0:
                continue
            dec = x[:usable].reshape(-1, factor).mean(axis=1).round().astype(int)
            rest = x[usable:]
            self._ecg[mat] = (seq + usable, fs, [rest] if len(rest) else [])
            frame: dict[str, Any] = {"mat": mat, "seq": seq, "fs": fs / factor, "decimation": factor,
                                     "unit": "uV", "t": wall, "samples": dec.tolist()}
            beats = self._beats.pop(mat, None)
            if beats:
                frame["beats"] = beats
            self.bus.publish_ecg(mat, frame)
            n += 1
        return n


# --------------------------------------------------------------------------- helpers

async def _close_supervisor(sup: Any, timeout_s: float = 15.0) -> None:
    """Stop a supervisor: `DeviceSupervisor.close()` is bounded and re-cancels a swallowed cancellation
    (Python 3.11 `wait_for`) itself, but never while the transport disconnects in order (BLE stop command)."""
    try:
        async with asyncio.timeout(timeout_s):
            await sup.close()
    except Exception:
        log.exception("closing device %s failed", getattr(sup, "device_id", "?"))


def _store_key(cfg: VigilConfig) -> bytes | None:
    if not cfg.store.key_file:
        return None
    raw = read_secret(cfg, cfg.store.key_file, what="store.key_file")
    if len(raw) == 32:
        return raw
    try:
        key = bytes.fromhex(raw.decode().strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError("store.key_file must hold 32 raw bytes or 64 hex digits",
                          [("store.key_file", None, "wrong key length")])
    return key


def _operator_secrets(cfg: VigilConfig) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for op in cfg.operators:
        if op.secret_file:
            out[op.name] = read_secret(cfg, op.secret_file, what=f"operator {op.name} secret_file")
    return out


def _alarm_json(a: Any, now: float) -> dict[str, Any]:
    return {"condition": a.condition, "priority": a.priority.label, "state": a.state.value,
            "since_s": round(now - a.since, 1), "latching": a.latching, "value": a.value, "reason": a.reason,
            "pause_left_s": round(a.pause_until - now, 1) if a.pause_until else None}


# --------------------------------------------------------------------------- the daemon

class Daemon:
    """The monitoring daemon of one room; `await Daemon(cfg).run(stop_event)`."""

    def __init__(self, cfg: VigilConfig, clock: Clock | None = None, *, notify: SdNotify | None = None,
                 speed: float | None = None, on_tick: Callable[[Daemon], None] | None = None,
                 ble_options: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.ble_options = dict(ble_options or {})  # extra BleTransport kwargs (tests: the bumble backend)
        self.clock = clock or SystemClock()
        self.notify = notify or SdNotify.from_env()
        self.speed = speed  # overrides each replay device's speed (demo)
        self.on_tick = on_tick
        self.room = cfg.site.room
        self.started_mono = self.clock.monotonic()
        self.store: Any = None
        self.writer: Any = None
        self.session_id: str | None = None
        self.pipeline: Pipeline | None = None
        self.bus: Bus | None = None
        self.bus_sink: BusSink | None = None
        self.supervisors: dict[str, Any] = {}
        self._records: dict[str, Any] = {}
        self.annunciator: Any = None
        self.roster: Any = None  # vigil.edge.roster_apply.RosterApplier
        self.feed: Any = None  # vigil.sync.outbox_feed.OutboxFeed (rows for `vigil sync`), None without [sync]
        self._tasks: list[asyncio.Task[Any]] = []
        self._published_alarms: dict[str, str] = {}
        self.broker_up = False
        self.watchdog_pings = 0
        self.ready = asyncio.Event()
        self.stopped = False

    # ------------------------------------------------------------------ start
    def _start_store(self, loop: asyncio.AbstractEventLoop) -> None:
        from vigil.store.records import RecordStore
        from vigil.store.writer import StoreWriter

        path = self.cfg.resolve_path(self.cfg.store.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.store = RecordStore.open(path, key=_store_key(self.cfg), commit_interval_s=self.cfg.store.commit_interval_s,
                                      chunk_seconds=self.cfg.store.chunk_seconds)
        sid = self.store.start_session(self.room, self.clock.wall(), {"site": self.cfg.site.name})
        for g in self.cfg.guests:
            self.store.upsert_guest(sid, GuestInfo(g.mat, g.name, g.baseline_qtc_ms, tuple(g.devices)))
        mats = {d: g.mat for g in self.cfg.guests for d in g.devices}
        for d in self.cfg.devices:
            self.store.upsert_device(sid, d.id, d.profile, mats.get(d.id))
        self.store.audit("daemon", "start", {"room": self.room, "session": sid})
        self.store.flush()
        self.session_id = sid
        self.writer = StoreWriter(self.store, on_event=self._store_event, loop=loop,
                                  min_free_mb=self.cfg.store.min_free_mb).start()
        log.info("record store %s open, session %s", path, sid)

    def _store_event(self, ev: TechnicalEvent) -> None:
        if self.pipeline is not None:
            self.pipeline.technical(None, ev)

    def _audit(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.submit("audit", actor, action, detail)

    def _broker_state(self, up: bool, why: str) -> None:
        self.broker_up = up
        if self.pipeline is not None:
            ev = TechnicalEvent(TechnicalKind.BROKER_DOWN, not up, self.clock.monotonic(),
                                detail=("broker reachable" if up else f"broker unreachable: {why}")[:200])
            self.pipeline.technical(None, ev)

    def _start_annunciator(self) -> None:
        """Local sound + escalation ladder (vigil.alarms.annunciation), when the alarm engine runs."""
        pipe = self.pipeline
        if pipe is None or pipe.engine is None:
            return
        try:
            from vigil.alarms.annunciation import Annunciator
        except ImportError as exc:
            log.error("alarm sound and escalation unavailable (%s)", exc)
            return

        def emit(ev: AlarmEvent) -> None:  # escalation attempts: to the store and the bus, not back to itself
            for sink in pipe.sinks:
                if sink is not self.annunciator:
                    try:
                        sink.alarm(ev)
                    except Exception:
                        log.exception("alarm sink failed")

        self.annunciator = Annunciator.from_config(self.cfg, self.clock, pipe.engine, emit, audit=self._audit)
        pipe.add_sink(self.annunciator)

    def _start_bus(self) -> None:
        m = self.cfg.mqtt
        password = None
        if m.password_file:
            password = read_secret(self.cfg, m.password_file, what="mqtt.password_file").decode()
        self.bus = Bus(self.room, m.host, m.port, username=m.username, password=password, keepalive=m.keepalive_s,
                       subscriptions=[f"vigil/{self.room}/cmd/+", f"vigil/{self.room}/roster"],
                       on_message=self._on_message,
                       on_state=self._broker_state)
        self.bus_sink = BusSink(self.bus)
        assert self.pipeline is not None
        self.pipeline.add_sink(self.bus_sink)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self.roster is not None and topic == self.roster.topic:
            self.roster.on_message(payload)  # a changed roster is applied at once (no restart)
            return
        parts = topic.split("/")
        if len(parts) != 4 or parts[2] != "cmd" or self.pipeline is None or self.bus is None:
            return  # replies (cmd/<op>/reply) and anything else are not commands
        operator = parts[3]
        try:
            cmd = json.loads(payload)
            if not isinstance(cmd, dict):
                raise ValueError("not an object")
        except ValueError:
            self.bus.publish_reply(operator, {"ok": False, "reason": "command is not a JSON object"})
            return
        if cmd.get("operator") != operator:  # the broker's ACL binds the topic to the operator
            self.bus.publish_reply(operator, {"ok": False, "reason": "operator does not match the topic"})
            return
        result = self.pipeline.command(cmd)
        if result is None:
            self.bus.publish_reply(operator, {"ok": False, "reason": "alarm engine not running"})
        else:
            reply = result.to_json() if hasattr(result, "to_json") else {"ok": bool(result)}
            reply.pop("v", None)
            if "id" in cmd:
                reply["id"] = cmd["id"]
            self.bus.publish_reply(operator, reply)
            for mat in self.pipeline.guests:
                self._publish_guest_alarms(mat, force=True)

    def _factory(self, dev: Any, profile: Any, record: Any) -> Callable[[Any], Any]:
        speed = self.speed or dev.speed
        if profile.transport in ("replay", "simulated"):
            from vigil.edge.transports.replay import ReplayTransport

            return lambda stamper: ReplayTransport(dev.id, record, self.clock, speed=speed, loop=dev.loop)
        if profile.transport == "ble":
            from vigil.edge.transports.ble import BleTransport

            if not dev.address:
                raise ConfigError(f"device {dev.id}: a BLE device needs `address`", [("devices", None, dev.id)])
            return lambda stamper: BleTransport(dev.id, profile, dev.address, stamper, **self.ble_options)
        if profile.transport == "serial":
            from vigil.edge.transports.serial import SerialTransport

            if not dev.port:
                raise ConfigError(f"device {dev.id}: a serial device needs `port`", [("devices", None, dev.id)])
            return lambda stamper: SerialTransport(dev.id, profile, dev.port, stamper, line=dev.line or None)
        raise ConfigError(f"device {dev.id}: unsupported transport {profile.transport!r}", [("devices", None, dev.id)])

    async def _start_devices(self) -> None:
        from vigil.edge.profiles import get_profile
        from vigil.edge.supervisor import DeviceSupervisor

        records = self._records
        for dev in self.cfg.devices:
            profile = get_profile(dev.profile)
            factory = self._factory(dev, profile, records.get(dev.id))
            sup = DeviceSupervisor(dev.id, profile, factory, self.clock,
                                   stale_after_s=max(profile.stale_after_s, self.cfg.alarms.stale_after_s),
                                   low_battery_percent=self.cfg.alarms.low_battery_percent)
            if self.pipeline is not None:  # stored as it arrives, however far behind analysis runs
                sup.on_arrival = self.pipeline.wire_arrival(dev.id)
            await sup.__aenter__()
            self.supervisors[dev.id] = sup
            self._tasks.append(asyncio.create_task(self._consume(dev.id, sup), name=f"device-{dev.id}"))

    async def _consume(self, device_id: str, sup: Any) -> None:
        assert self.pipeline is not None
        async for out in sup:
            self.pipeline.feed(device_id, out)
            if isinstance(out, SampleBlock):
                await asyncio.sleep(0)  # let the alarm loop run between bursts
        for gap in sup.gaps:
            log.debug("%s: gap %s", device_id, gap)

    # ------------------------------------------------------------------ loops
    async def _alarm_loop(self) -> None:
        assert self.pipeline is not None
        interval = SdNotify.watchdog_interval_s()
        last_ping = -math.inf
        while True:
            self.pipeline.tick()
            if self.annunciator is not None:
                try:
                    self.annunciator.tick()
                except Exception:
                    log.exception("alarm annunciation tick failed")
            now = time.monotonic()
            if interval is not None and now - last_ping >= interval:
                if self.notify.watchdog():
                    self.watchdog_pings += 1
                last_ping = now
            if self.on_tick is not None:
                self.on_tick(self)
            await asyncio.sleep(ALARM_TICK_S)

    def status_payload(self, state: str = "running") -> dict[str, Any]:
        """The heartbeat published on vigil/<room>/status."""
        w = self.writer
        store = {"ok": not (w.store_failed if w else True), "queue": w.queue_size if w else None,
                 "dropped": w.dropped if w else None, "error": w.last_error if w else "not open",
                 "free_low": w.free_low if w else None}
        bus = asdict(self.bus.stats) if self.bus else {}
        return {"state": state, "room": self.room, "uptime_s": round(self.clock.monotonic() - self.started_mono, 1),
                "t": self.clock.wall(), "session": self.session_id,
                "devices": {d: s.state.value for d, s in self.supervisors.items()},
                "device_stats": {d: s.stats() for d, s in self.supervisors.items() if hasattr(s, "stats")},
                "store": store, "bus": bus,
                "analysis": bool(self.pipeline and self.pipeline.has_analysis),
                "alarms": bool(self.pipeline and self.pipeline.engine is not None),
                "annunciation": self.annunciator is not None,
                "guests": [g.mat for g in self.cfg.guests]}

    def vitals_payload(self, mat: str) -> dict[str, Any]:
        """Latest numerics of one guest with their ages (retained on guest/<mat>/vitals)."""
        assert self.pipeline is not None
        g = self.pipeline.guests[mat]
        now = self.clock.monotonic()
        vitals = {m.value: {"value": v.value, "age_s": round(now - v.t_mono, 1), "unit": m.unit}
                  for m, v in g.vitals.items()}
        devices = {d: self.supervisors[d].state.value for d in self.pipeline.device_guest
                   if self.pipeline.device_guest[d] == mat and d in self.supervisors}
        return {"mat": mat, "t": self.clock.wall(), "vitals": vitals, "rhythm": g.rhythm, "quality": g.quality,
                "quality_flags": list(g.quality_flags), "beats": g.beats, "devices": devices}

    def _publish_guest_alarms(self, mat: str, force: bool = False) -> None:
        assert self.pipeline is not None and self.bus is not None
        now = self.clock.monotonic()
        active = self.pipeline.active_alarms(mat)
        sig = json.dumps([(a.condition, a.state.value) for a in active])
        if force or self._published_alarms.get(mat) != sig:
            self._published_alarms[mat] = sig
            self.bus.publish_guest_alarms(mat, {"mat": mat, "t": self.clock.wall(),
                                                "alarms": [_alarm_json(a, now) for a in active]})

    async def _publish_loop(self) -> None:
        assert self.bus is not None and self.bus_sink is not None and self.pipeline is not None
        next_vitals = 0.0
        while True:
            self.bus_sink.flush_ecg(self.clock.wall())
            now = time.monotonic()
            if now >= next_vitals:
                next_vitals = now + VITALS_PUBLISH_S
                self.bus.publish_status(self.status_payload())
                for mat in self.pipeline.guests:
                    vitals = self.vitals_payload(mat)
                    self.bus.publish_vitals(mat, vitals)
                    self._publish_guest_alarms(mat)
                    self.bus_sink.publish_history(mat, vitals["vitals"], vitals["t"])
            await asyncio.sleep(ECG_PUBLISH_S)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Ordered start; raises VigilError (config, store, record) before anything streams."""
        from vigil.edge.pipeline import replay_sources
        from vigil.edge.profiles import get_profile

        loop = asyncio.get_running_loop()
        self.started_mono = self.clock.monotonic()
        for dev in self.cfg.devices:
            get_profile(dev.profile)  # ConfigError before anything is opened
        self._records = await asyncio.to_thread(replay_sources, self.cfg)  # RecordError names a bad file
        self._start_store(loop)
        try:
            assert self.session_id is not None
            self.pipeline = Pipeline(self.cfg, self.clock, [StoreSink(self.writer, self.session_id)],
                                     secrets=_operator_secrets(self.cfg), audit=self._audit)
            self._start_annunciator()
            from vigil.edge.roster_apply import RosterApplier

            self.roster = RosterApplier(self.cfg, self.clock, pipeline=self.pipeline, writer=self.writer,
                                        session_id=self.session_id)
            self.roster.start()  # the last roster seen (roster.json), for offline starts
            from vigil.sync.outbox_feed import attach

            self.feed = attach(self)
            self._start_bus()
            assert self.bus is not None
            await self.bus.__aenter__()
            await self._start_devices()
        except BaseException:
            await self.stop()
            raise
        self._tasks.append(asyncio.create_task(self._alarm_loop(), name="alarm-loop"))
        self._tasks.append(asyncio.create_task(self._publish_loop(), name="publisher"))
        if self.feed is not None:
            self._tasks.append(asyncio.create_task(self.feed.run(), name="outbox-feed"))
        self.notify.ready(f"monitoring {len(self.cfg.guests)} guests in room {self.room}")
        self.ready.set()
        log.info("daemon ready: %d devices, %d guests, analysis %s, alarms %s", len(self.supervisors),
                 len(self.cfg.guests), "on" if self.pipeline.has_analysis else "OFF",
                 "on" if self.pipeline.engine is not None else "OFF")

    async def stop(self) -> None:
        """Reverse order: devices, tasks, analysers, bus, store (flush + close)."""
        if self.stopped:
            return
        self.stopped = True
        self.notify.stopping()
        for sup in self.supervisors.values():
            await _close_supervisor(sup)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self.pipeline is not None:
            self.pipeline.finish()
        if self.feed is not None:
            self.feed.close()  # session.ended, summaries: queued before the store closes
        if self.roster is not None:
            await asyncio.to_thread(self.roster.close)
        if self.annunciator is not None:
            try:
                await asyncio.to_thread(self.annunciator.close)
            except Exception:
                log.exception("closing alarm annunciation failed")
            self.annunciator = None
        if self.bus is not None:
            if self.bus_sink is not None:
                self.bus_sink.flush_ecg(self.clock.wall())
            await self.bus.close(final_status=self.status_payload("stopped"))
        if self.writer is not None:
            if self.session_id:
                self.writer.submit("end_session", self.session_id, self.clock.wall())
            self.writer.submit("audit", "daemon", "stop", {"room": self.room})
            await asyncio.to_thread(self.writer.stop)
            self.writer = None
        elif self.store is not None:
            self.store.close()
        self.notify.close()
        log.info("daemon stopped")

    async def run(self, stop: asyncio.Event | None = None, *, handle_signals: bool = True,
                  duration_s: float | None = None) -> int:
        """Start, wait for SIGTERM/SIGINT (or `stop`, or `duration_s`), stop. Returns an exit status."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
                    installed.append(sig)
        try:
            await self.start()
            waiter = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait_for(asyncio.shield(waiter), duration_s)
            except TimeoutError:
                pass
            finally:
                waiter.cancel()
        finally:
            await self.stop()
            for sig in installed:
                loop.remove_signal_handler(sig)
        return 0


def run_daemon(cfg: VigilConfig, *, duration_s: float | None = None, speed: float | None = None,
               on_tick: Callable[[Daemon], None] | None = None, ble_options: dict[str, Any] | None = None) -> int:
    """Blocking entry point used by `vigil run` and `vigil demo`."""
    try:
        return asyncio.run(Daemon(cfg, speed=speed, on_tick=on_tick, ble_options=ble_options).run(duration_s=duration_s))
    except VigilError:
        raise


def summary_line(d: Daemon, mats: Sequence[str] | None = None) -> str:
    """One line per second for headless runs: per guest HR, SpO2, BP, active alarms (no names)."""
    if d.pipeline is None:
        return "starting"
    now = d.clock.monotonic()
    parts = [f"t={now - d.started_mono:5.1f}s", "bus=" + ("up" if d.broker_up else "DOWN")]
    for mat in mats or list(d.pipeline.guests):
        g = d.pipeline.guests[mat]
        hr, label = g.value(Metric.HR, now, 10), "HR"
        if hr is None:
            hr, label = g.value(Metric.PULSE_RATE, now, 10), "PR"
        spo2 = g.value(Metric.SPO2, now, 10)
        sbp, dbp = g.value(Metric.SBP), g.value(Metric.DBP)
        alarms = [a.condition for a in d.pipeline.active_alarms(mat)]
        parts.append(f"{mat}: {label} {hr:.0f}" if hr is not None else f"{mat}: HR --")
        parts[-1] += f" SpO2 {spo2:.0f}" if spo2 is not None else " SpO2 --"
        parts[-1] += f" BP {sbp:.0f}/{dbp:.0f}" if sbp is not None and dbp is not None else " BP --/--"
        parts[-1] += (" alarms " + ",".join(alarms)) if alarms else ""
    return " | ".join(parts)
