"""Daemon lifecycle against real parts: mosquitto, SQLite store, replayed records, sd_notify socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vigil.bus import subscribe
from vigil.clock import SimulatedClock
from vigil.config import parse_config
from vigil.datasets import VENDORED_RECORDS
from vigil.edge.broker import Mosquitto, free_port
from vigil.edge.daemon import Daemon
from vigil.edge.pipeline import MemorySink, run_replay
from vigil.store import RecordStore


def _config(tmp: Path, port: int, guests: list[tuple[str, str, str]], speed: float = 1.0) -> Path:
    lines = ["[site]", 'name = "test"', 'room = "t1"', "[store]", f'path = "{tmp / "vigil.db"}"',
             "min_free_mb = 1", "[mqtt]", f"port = {port}", "[alarms]", "sound_enabled = false"]
    for mat, record, profile in guests:
        lines += ["[[devices]]", f'id = "dev-{mat}"', f'profile = "{profile}"',
                  f'record = "{VENDORED_RECORDS / record}"', f"speed = {speed}"]
    for mat, _r, _p in guests:
        lines += ["[[guests]]", f'mat = "{mat}"', f'name = "Secret Name {mat}"', f'devices = ["dev-{mat}"]']
    path = tmp / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


GUESTS = [("G1", "119", "replay-wfdb"), ("G2", "bidmc_04", "replay-bidmc")]


async def test_starts_with_broker_down_reports_it_then_connects(tmp_path: Path) -> None:
    port = free_port()
    cfg = parse_config(_config(tmp_path, port, GUESTS).read_text(), tmp_path / "config.toml")
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    run = asyncio.create_task(daemon.run(stop, handle_signals=False))
    broker = Mosquitto(tmp_path / "broker", port=port)
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)  # started although nothing listens on the port
        await asyncio.sleep(1.5)
        assert not daemon.broker_up and daemon.bus is not None and daemon.bus.stats.failures >= 1
        assert daemon.pipeline is not None and (daemon.pipeline.guests["G1"].ecg_seq or 0) >= 360  # monitoring goes on
        broker_alarms = [a for a in daemon.pipeline.active_alarms() if a.condition == "broker_down"]
        assert broker_alarms, "broker outage must be an active technical alarm"
        broker.start()
        assert await daemon.bus.wait_connected(15)
        assert daemon.broker_up
        async with subscribe("127.0.0.1", port, ["vigil/t1/status", "vigil/t1/guest/+/vitals"]) as messages:
            seen: dict[str, dict] = {}

            async def until_all() -> None:
                async for topic, payload, _retained in messages:
                    seen[topic] = payload
                    if len(seen) == 3 and seen["vigil/t1/status"]["state"] == "running":
                        return
            await asyncio.wait_for(until_all(), 10)
        status = seen["vigil/t1/status"]
        assert status["v"] == 1 and status["devices"] == {"dev-G1": "streaming", "dev-G2": "streaming"}
        assert status["bus"]["failures"] >= 1 and status["store"]["ok"] is True
        vit = seen["vigil/t1/guest/G2/vitals"]["vitals"]
        assert vit["spo2"]["value"] == pytest.approx(93, abs=3)  # BIDMC 04 monitor SpO2
        assert "Secret Name" not in str(seen)
        await asyncio.sleep(1.2)
        assert not [a for a in daemon.pipeline.active_alarms() if a.condition == "broker_down"
                    and a.state.value == "active"]
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)
        broker.stop()
    store = RecordStore.open(tmp_path / "vigil.db")
    try:
        techs = [(e.detail["kind"], e.detail["active"]) for e in store.audit_entries() if e.action == "technical"]
        assert ("broker_down", True) in techs and ("broker_down", False) in techs
        assert techs.index(("broker_down", True)) < techs.index(("broker_down", False))
    finally:
        store.close()


def test_sigterm_stops_cleanly_and_the_store_holds_the_data(tmp_path: Path, mosquitto) -> None:
    cfg_path = _config(tmp_path, mosquitto.port, GUESTS)
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen([sys.executable, "-m", "vigil", "run", "--config", str(cfg_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        msgs: list[str] = []
        while not any("READY=1" in m for m in msgs):
            msgs.append(sock.recv(4096).decode())
        ready_at = time.monotonic()
        sock.settimeout(0.5)
        while time.monotonic() - ready_at < 4.0:
            msgs.append(sock.recv(4096).decode())
        pings = sum(m == "WATCHDOG=1" for m in msgs)
        assert 12 <= pings <= 25  # every 0.2 s (half of WATCHDOG_USEC) from the alarm loop
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        ran_s = time.monotonic() - ready_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sock.close()
    assert proc.returncode == 0, err[-2000:]
    assert "Secret Name" not in err  # no PHI in logs
    store = RecordStore.open(tmp_path / "vigil.db")
    try:
        assert store.integrity_check() == "ok"
        (session,) = store.sessions()
        assert session.ended_wall is not None and session.room == "t1"
        ecg = list(store.iter_chunks(session.id, mat="G1", channel="ecg"))
        n = sum(len(b.samples) for b in ecg)
        assert all(a.end_seq == b.seq for a, b in zip(ecg, ecg[1:], strict=False))
        assert 360 * (ran_s - 1.0) <= n <= 360 * (ran_s + 2.5)  # every sample until the stop was written
        spo2 = [r for _m, r in store.readings(session.id, mat="G2", metric="spo2")]
        assert len(spo2) >= int(ran_s) - 1
        actions = [e.action for e in store.audit_entries()]
        assert actions[0] == "start" and actions[-1] == "stop"
    finally:
        store.close()


def test_demo_headless_prints_per_second_summaries_and_exits_0(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "vigil", "demo", "--headless", "--duration", "8",
                           "--run-dir", str(tmp_path / "demo")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("t=")]
    assert 7 <= len(lines) <= 9
    for ln in lines[-3:]:
        for mat in ("A1", "A2", "A3", "A4"):
            assert f"{mat}: " in ln
    assert "SpO2 9" in lines[-1]  # BIDMC guest shows its monitor's SpO2
    assert "Demo Guest" not in proc.stdout + proc.stderr
    assert "mosquitto" not in subprocess.run(["pgrep", "-af", str(tmp_path)], capture_output=True, text=True).stdout


def test_replay_pipeline_is_deterministic_and_raises_the_true_vt_alarm(tmp_path: Path) -> None:
    cfg = parse_config(_config(tmp_path, 1883, [("V", "v221l", "replay-wfdb")]).read_text())

    def once() -> list[tuple[str, str, float]]:
        mem = MemorySink()
        run_replay(cfg, SimulatedClock(), duration_s=302, sinks=[mem])
        return [(e.condition, e.event, round(e.t_mono, 3)) for e in mem.alarms]

    first, second = once(), once()
    # same events at the same simulated times (the engine may order simultaneous transitions differently)
    assert sorted(first, key=lambda e: (e[2], e[0], e[1])) == sorted(second, key=lambda e: (e[2], e[0], e[1]))
    assert len(first) > 10
    # Challenge 2015 v221l: a true VT alarm fired at 300 s for an event in the preceding 16 s
    assert any(c == "vt" and ev == "raised" and 284 <= t <= 302 for c, ev, t in first), first


def test_run_with_an_unreadable_record_exits_2_naming_the_file(tmp_path: Path) -> None:
    cfg_path = _config(tmp_path, free_port(), [("G1", "119", "replay-wfdb")])
    cfg_path.write_text(cfg_path.read_text().replace("/119", "/no-such-record"))
    proc = subprocess.run([sys.executable, "-m", "vigil", "run", "--config", str(cfg_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no-such-record.hea: header file not found" in proc.stderr
    assert not (tmp_path / "vigil.db").exists()  # nothing was opened for a config that cannot run


class FakeEcgBus:
    """Keeps the ECG frames a BusSink publishes."""

    def __init__(self) -> None:
        self.frames: list[dict] = []

    def publish_ecg(self, mat: str, payload: dict) -> None:
        self.frames.append(payload)


def ecg_block(seq: int, samples: object, fs: float) -> object:
    """A primary-lead ECG SampleBlock."""
    from vigil.model import ChannelKind, SampleBlock

    return SampleBlock("d", "ecg", ChannelKind.ECG, fs, "uV", 1.0, seq, samples, 0.0, 0.0)  # type: ignore[arg-type]


def test_bus_ecg_frames_are_decimated_and_contiguous() -> None:
    import numpy as np

    from vigil.edge.daemon import BusSink

    bus = FakeEcgBus()
    sink = BusSink(bus)  # type: ignore[arg-type]
    x = np.arange(360 * 3, dtype=np.int32)
    for start in range(0, len(x), 100):  # odd block size: remainders carry over between frames
        sink.block("M", ecg_block(start, x[start:start + 100], 360.0))  # type: ignore[arg-type]
        sink.flush_ecg(0.0)
    frames = bus.frames
    assert all(f["fs"] == 120.0 and f["decimation"] == 3 for f in frames)
    assert all(a["seq"] + 3 * len(a["samples"]) == b["seq"] for a, b in zip(frames, frames[1:], strict=False))
    joined = np.concatenate([f["samples"] for f in frames])
    assert np.array_equal(joined, x[: len(joined) * 3].reshape(-1, 3).mean(axis=1).round())
    assert len(joined) == 360  # all 3 s published at 120 Hz
    assert not any("beats" in f for f in frames)  # no analysis yet: no beats field


def test_bus_ecg_frames_carry_the_new_labelled_beats_once() -> None:
    import numpy as np

    from vigil.edge.daemon import BusSink
    from vigil.model import Beat, Measurement, Metric

    bus = FakeEcgBus()
    sink = BusSink(bus)  # type: ignore[arg-type]
    x = np.zeros(500, dtype=np.int32)
    sink.block("M", ecg_block(1000, x, 500.0))  # type: ignore[arg-type]
    sink.analysis("M", [Beat(1100, "N"), Beat(1300, "V"), Beat(1310, "N", channel="ecg2"),
                        Measurement(Metric.HR, 60.0, 1300)], 0.0)
    sink.flush_ecg(0.0)
    sink.block("M", ecg_block(1500, x, 500.0))  # type: ignore[arg-type]
    sink.flush_ecg(0.0)
    assert bus.frames[0]["beats"] == [[1100, "N"], [1300, "V"]]  # primary lead only, device numbering
    assert "beats" not in bus.frames[1]  # each beat goes out once
    for i in range(200):  # a dashboard-less backlog is bounded
        sink.analysis("M", [Beat(2000 + i, "N")], 0.0)
    sink.block("M", ecg_block(2000, x, 500.0))  # type: ignore[arg-type]
    sink.flush_ecg(0.0)
    assert [b[0] for b in bus.frames[2]["beats"]] == list(range(2136, 2200))


async def test_commands_over_the_bus_are_answered_and_ecg_streams_at_4_per_second(tmp_path: Path, mosquitto) -> None:
    import json
    import secrets as pysecrets

    from vigil.alarms.commands import sign

    secret = tmp_path / "ana.secret"
    secret.write_bytes(pysecrets.token_hex(16).encode())
    secret.chmod(0o600)
    cfg_path = _config(tmp_path, mosquitto.port, [("G1", "119", "replay-wfdb")])
    cfg_path.write_text(cfg_path.read_text() + '[[operators]]\nname = "ana"\nsecret_file = "ana.secret"\n')
    cfg = parse_config(cfg_path.read_text(), cfg_path)
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    run = asyncio.create_task(daemon.run(stop, handle_signals=False))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        assert daemon.bus is not None and await daemon.bus.wait_connected(10)
        import aiomqtt

        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe("vigil/t1/cmd/ana/reply")
            await client.subscribe("vigil/t1/guest/G1/ecg")
            await asyncio.sleep(0.3)
            base = {"v": 1, "op": "pause", "operator": "ana", "guest": "G1", "duration_s": 60}
            good = sign({**base, "ts": time.time(), "nonce": pysecrets.token_hex(8), "id": "c1"},
                        secret.read_bytes())
            forged = {**good, "nonce": pysecrets.token_hex(8), "id": "c2"}  # signature no longer matches
            await client.publish("vigil/t1/cmd/ana", json.dumps(good))
            await client.publish("vigil/t1/cmd/ana", json.dumps(forged))
            await client.publish("vigil/t1/cmd/ana", b"not json")
            await client.publish("vigil/t1/cmd/ana", json.dumps({**base, "operator": "bob"}))
            replies: list[dict] = []
            ecg: list[dict] = []
            t0 = time.monotonic()

            async def collect() -> None:
                async for m in client.messages:
                    body = json.loads(m.payload)
                    (replies if str(m.topic).endswith("/reply") else ecg).append(body)
                    if len(replies) == 4 and time.monotonic() - t0 >= 2.0:
                        return
            await asyncio.wait_for(collect(), 10)
            elapsed = time.monotonic() - t0
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)
    by_id = {r.get("id"): r for r in replies}
    assert by_id["c1"]["ok"] is True and by_id["c1"]["op"] == "pause"
    assert by_id["c2"]["ok"] is False and by_id["c2"]["reason"] == "bad signature"
    others = [r for r in replies if r.get("id") is None]
    assert sorted(r["reason"] for r in others) == ["command is not a JSON object",
                                                  "operator does not match the topic"]
    assert 3.0 <= len(ecg) / elapsed <= 5.0  # ~4 frames per second
    assert all(e["v"] == 1 and e["fs"] == 120.0 for e in ecg)
    beats = [b for e in ecg for b in e.get("beats", [])]
    assert len(beats) >= 2 and all(lab in "NVSFQ" for _, lab in beats)  # 119 at ~70 bpm over >= 2 s
    first, last = ecg[0]["seq"], ecg[-1]["seq"] + 3 * len(ecg[-1]["samples"])
    assert all(first - 360 <= s < last for s, _ in beats)  # in the frames' own numbering


async def test_a_true_vt_sounds_locally_through_the_daemon(tmp_path: Path) -> None:
    sounds = tmp_path / "sounds"
    sounds.mkdir()
    cfg_path = _config(tmp_path, free_port(), [("V", "v221l", "replay-wfdb")], speed=10.0)
    text = cfg_path.read_text().replace("sound_enabled = false", f'sound_enabled = true\nsound_device = "file:{sounds}"')
    cfg_path.write_text(text.replace("speed = 10.0", "speed = 10.0\nstart_s = 260\nloop = false"))
    cfg = parse_config(cfg_path.read_text(), cfg_path)
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    run = asyncio.create_task(daemon.run(stop, handle_signals=False))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        assert daemon.annunciator is not None and daemon.pipeline is not None
        for _ in range(100):  # 40 s of record at 10x: the VT before the 300 s alarm falls inside
            if list(sounds.glob("*high*.wav")):
                break
            await asyncio.sleep(0.1)
        active = {a.condition: a.priority.label for a in daemon.pipeline.active_alarms("V")}
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)
    assert list(sounds.glob("*high*.wav")), "no high-priority alarm sound was rendered"
    assert active.get("vt") == "high", active  # latched until acknowledged
    assert list(sounds.glob("*medium*.wav"))  # the broker outage (nothing listens) sounded as a medium alarm


def test_demo_with_a_dashboard_runs_the_daemon_beside_it_and_cleans_up(tmp_path: Path, monkeypatch) -> None:
    import argparse
    import types

    from vigil.commands import demo

    seen: dict[str, object] = {}

    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", required=True)

    def run(args: argparse.Namespace) -> int:  # a stand-in dashboard: watch the bus until the daemon runs
        cfg = parse_config(Path(args.config).read_text())

        async def watch() -> dict:
            async with subscribe(cfg.mqtt.host, cfg.mqtt.port, ["vigil/demo/status"]) as messages:
                async for _t, payload, _r in messages:
                    if payload.get("state") == "running" and len(payload["devices"]) == 4:
                        return payload
            return {}
        seen["status"] = asyncio.run(asyncio.wait_for(watch(), 40))
        seen["port"] = cfg.mqtt.port
        return 0

    stand_in = types.SimpleNamespace(configure=configure, run=run)
    monkeypatch.setitem(sys.modules, "vigil.commands.tui", stand_in)
    import vigil.commands  # `from vigil.commands import tui` takes the package attribute once the real one was imported
    monkeypatch.setattr(vigil.commands, "tui", stand_in, raising=False)
    monkeypatch.setattr(demo, "_tui_available", lambda: None)
    args = argparse.Namespace(headless=False, duration=None, speed=1.0, run_dir=str(tmp_path / "demo"))
    assert demo.run(args) == 0
    assert seen["status"]["state"] == "running"  # type: ignore[index]
    from vigil.edge.broker import port_open
    assert not port_open("127.0.0.1", int(seen["port"]))  # type: ignore[call-overload]  # broker stopped
    store = RecordStore.open(tmp_path / "demo" / "vigil.db")
    try:
        (session,) = store.sessions()
        assert session.ended_wall is not None  # the daemon got SIGTERM and closed its session
    finally:
        store.close()


@contextlib.asynccontextmanager
async def connected_daemon(cfg: object) -> AsyncIterator[Daemon]:
    """A running daemon (ready, bus connected); stopped on exit."""
    daemon = Daemon(cfg)  # type: ignore[arg-type]
    stop = asyncio.Event()
    run = asyncio.create_task(daemon.run(stop, handle_signals=False))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        assert daemon.bus is not None and await daemon.bus.wait_connected(10)
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)


async def test_a_dashboard_subscribing_late_gets_the_guests_retained_history(tmp_path: Path, mosquitto) -> None:
    """Alarm events that happened before a dashboard connected come back to it in guest/<mat>/history."""
    cfg_path = _config(tmp_path, mosquitto.port, [("V", "v221l", "replay-wfdb")], speed=10.0)
    cfg_path.write_text(cfg_path.read_text().replace("speed = 10.0", "speed = 10.0\nstart_s = 260\nloop = false"))
    async with connected_daemon(parse_config(cfg_path.read_text(), cfg_path)) as daemon:
        assert daemon.pipeline is not None and daemon.bus_sink is not None
        daemon.bus_sink.HISTORY_EVENT_MIN_S = 0.5  # the 10-s event throttle has its own test
        for _ in range(150):  # the VT of v221l raises within a few seconds at 10x
            if any(a.condition == "vt" for a in daemon.pipeline.active_alarms("V")):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # the next 1-s publish carries the events
        async with subscribe("127.0.0.1", mosquitto.port, ["vigil/t1/guest/V/history"]) as messages:
            async def first() -> tuple[dict, bool]:
                async for _topic, payload, retained in messages:
                    return payload, retained
                raise AssertionError("no history")
            payload, retained = await asyncio.wait_for(first(), 10)
    assert retained and payload["mat"] == "V" and payload["step_s"] == 60
    assert ("vt", "raised") in [(e["condition"], e["event"]) for e in payload["events"]]
    assert all(e["guest"] == "V" and isinstance(e["wall"], float) for e in payload["events"])
    assert set(payload["trends"]) == {"hr", "spo2", "sbp", "qtc"}


def test_history_is_republished_for_events_at_most_every_10_s_but_every_minute_close() -> None:
    from vigil.edge.daemon import BusSink
    from vigil.model import AlarmEvent, AlarmState, Priority

    class FakeBus:
        def __init__(self) -> None:
            self.history: list[dict] = []

        def publish_alarm_event(self, payload: dict) -> None:
            pass

        def publish_history(self, mat: str, payload: dict) -> None:
            self.history.append(payload)

    bus = FakeBus()
    sink = BusSink(bus)  # type: ignore[arg-type]
    t0 = 1_700_000_000.0  # a minute boundary
    ev = AlarmEvent("M", "sbp_high", Priority.MEDIUM, "raised", AlarmState.ACTIVE, 0.0, t0)
    sink.alarm(ev)
    sink.publish_history("M", {}, t0)
    sink.alarm(ev)
    sink.publish_history("M", {}, t0 + 1)  # a second event within 10 s waits...
    assert len(bus.history) == 1 and len(bus.history[0]["events"]) == 1
    sink.publish_history("M", {}, t0 + 60)  # ...but a closed minute publishes it anyway
    assert len(bus.history) == 2 and len(bus.history[1]["events"]) == 2
