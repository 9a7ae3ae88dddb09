"""The daemon's device path end to end: a CMS50D+ on a pseudo-terminal and a Polar H10 over BLE (bleak with
the bumble backend: real GATT in-process), a real mosquitto and a real SQLite store.

Asserts that vitals and ECG reach the bus and the store, that corrupt serial bytes are counted (not fatal),
and that unplugging either device raises the `device_disconnected` technical alarm, which clears on replug.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vigil.bus import subscribe
from vigil.config import parse_config
from vigil.edge.daemon import Daemon
from vigil.edge.parsers import polar_pmd
from vigil.edge.transports.ble import reset_adapter_slots
from vigil.model import DeviceState
from vigil.store import RecordStore
from vigil.testing.bumble_backend import BumbleClient, BumbleScanner, PolarEcgPeripheral, VirtualAir
from vigil.testing.cms50_emulator import Cms50Emulator

pytestmark = pytest.mark.timeout(90)

H10 = "F1:00:00:00:00:01"


def _config(tmp: Path, port: int, serial_port: str) -> Path:
    text = f"""
[site]
name = "test"
room = "t1"
[store]
path = "{tmp / 'vigil.db'}"
min_free_mb = 1
[mqtt]
port = {port}
[alarms]
sound_enabled = false
[[devices]]
id = "h10"
profile = "polar-h10"
address = "{H10}"
[[devices]]
id = "ox"
profile = "contec-cms50d-plus"
port = "{serial_port}"
[[guests]]
mat = "G1"
name = "Secret Name G1"
devices = ["h10", "ox"]
"""
    path = tmp / "config.toml"
    path.write_text(text)
    return path


class BusLog:
    """Everything the daemon publishes under vigil/t1/#, kept in arrival order."""

    def __init__(self) -> None:
        self.msgs: list[tuple[float, str, Any]] = []
        self.latest: dict[str, Any] = {}

    async def run(self, port: int, ready: asyncio.Event) -> None:
        async with subscribe("127.0.0.1", port, ["vigil/t1/#"]) as messages:
            ready.set()
            async for topic, payload, _retained in messages:
                self.msgs.append((time.monotonic(), topic, payload))
                self.latest[topic] = payload

    def topic(self, suffix: str) -> list[Any]:
        return [p for _t, tp, p in self.msgs if tp == f"vigil/t1/{suffix}"]


async def until(pred: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for `pred`; returns the seconds it took."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


def active(daemon: Daemon, condition: str) -> bool:
    assert daemon.pipeline is not None
    return any(a.condition == condition and a.state.value == "active" for a in daemon.pipeline.active_alarms("G1"))


async def test_ble_and_serial_devices_through_the_daemon(tmp_path: Path, mosquitto) -> None:
    reset_adapter_slots()
    air = await VirtualAir().start()
    h10 = await air.add(PolarEcgPeripheral(H10, heart_rate=75))
    cms = Cms50Emulator(tmp_path / "cms50", firmware="v46", spo2=96, pulse_rate=74).start()
    cms.garbage_every = 20  # a truncated packet every 20 packets: ~3 corrupt frames per second
    cfg = parse_config(_config(tmp_path, mosquitto.port, str(cms.link)).read_text(), tmp_path / "config.toml")
    daemon = Daemon(cfg, ble_options={"backend": BumbleClient, "scanner_backend": BumbleScanner,
                                      "backend_kwargs": {"air": air}, "scan_timeout_s": 2.0})
    bus = BusLog()
    sub_ready = asyncio.Event()
    sub = asyncio.create_task(bus.run(mosquitto.port, sub_ready))
    stop = asyncio.Event()
    run = asyncio.create_task(daemon.run(stop, handle_signals=False))
    try:
        await asyncio.wait_for(sub_ready.wait(), 10)
        await asyncio.wait_for(daemon.ready.wait(), 20)
        sups = daemon.supervisors
        await until(lambda: all(s.state is DeviceState.STREAMING for s in sups.values()), 15, "both devices streaming")

        # vitals from both devices on the bus: HR from the strap, SpO2/PR from the oximeter
        def vitals() -> dict[str, Any]:
            v = bus.latest.get("vigil/t1/guest/G1/vitals", {}).get("vitals", {})
            return {k: x["value"] for k, x in v.items()}

        await until(lambda: {"hr", "spo2", "pulse_rate"} <= set(vitals()), 10, "HR, SpO2 and PR on the bus")
        assert vitals()["hr"] == 75 and vitals()["spo2"] == 96 and vitals()["pulse_rate"] == 74
        await until(lambda: len(bus.topic("guest/G1/ecg")) >= 4, 5, "ECG frames on the bus")
        frames = bus.topic("guest/G1/ecg")
        assert all(f["fs"] * f["decimation"] == 130 and f["unit"] == "uV" for f in frames)
        assert max(max(f["samples"]) for f in frames) > 500  # the R spikes of the virtual strap (pair means)
        assert "Secret Name" not in str(bus.msgs)

        # corrupt bytes are counted, not fatal, and reported in the status heartbeat
        await asyncio.sleep(1.2)
        assert sups["ox"].state is DeviceState.STREAMING and sups["ox"].corrupt_frames >= 2
        status = bus.latest["vigil/t1/status"]
        assert status["devices"] == {"h10": "streaming", "ox": "streaming"}
        assert status["device_stats"]["ox"]["corrupt_frames"] >= 1
        assert status["device_stats"]["h10"]["corrupt_frames"] == 0

        # unplug the oximeter: device_disconnected raised for the guest, on the bus; replug clears it
        cms.unplug()
        took = await until(lambda: active(daemon, "device_disconnected"), 5, "device_disconnected alarm")
        assert took < 2.0  # the hang-up is seen at once, not after the stale timer
        await until(lambda: any(a["condition"] == "device_disconnected" for a in
                                bus.latest.get("vigil/t1/guest/G1/alarms", {}).get("alarms", [])), 5,
                    "device_disconnected on guest/G1/alarms")
        assert sups["h10"].state is DeviceState.STREAMING  # the other device is unaffected
        await asyncio.sleep(1.0)
        cms.plug()
        await until(lambda: sups["ox"].state is DeviceState.STREAMING, 10, "oximeter back")
        await until(lambda: not active(daemon, "device_disconnected"), 5, "device_disconnected cleared")

        # a BLE radio drop: same condition, then re-discovery, reconnection and a fresh PMD start
        starts_before = h10.commands.count(polar_pmd.start_command())
        connects_before = sups["h10"].connects
        await h10.drop_connections()
        await until(lambda: active(daemon, "device_disconnected"), 5, "device_disconnected after BLE drop")
        await until(lambda: sups["h10"].connects > connects_before and sups["h10"].state is DeviceState.STREAMING,
                    15, "strap reconnected")
        await until(lambda: not active(daemon, "device_disconnected"), 5, "cleared after BLE reconnect")
        assert h10.commands.count(polar_pmd.start_command()) == starts_before + 1
        await asyncio.sleep(1.0)
        ox_corrupt = sups["ox"].corrupt_frames
        events = [(e["guest"], e["event"], e["priority"]) for e in bus.topic("alarms/events")
                  if e["condition"] == "device_disconnected"]
        assert events == [("G1", "raised", "medium"), ("G1", "cleared", "medium")] * 2, events
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)
        sub.cancel()
        await asyncio.gather(sub, return_exceptions=True)
        cms.stop()
        await air.close()
    await asyncio.sleep(0.1)
    assert h10.commands[-1] == polar_pmd.stop_command()  # the strap was told to stop at shutdown
    assert ox_corrupt >= 5

    store = RecordStore.open(tmp_path / "vigil.db")
    try:
        (session,) = store.sessions()
        ecg = list(store.iter_chunks(session.id, mat="G1", channel="ecg"))
        assert ecg and all(b.fs == 130 and b.device_id == "h10" for b in ecg)
        assert all(b.seq >= a.end_seq for a, b in zip(ecg, ecg[1:], strict=False))  # never overlapping
        stored = sum(len(b.samples) for b in ecg)
        assert stored >= 130 * 4
        pleth = list(store.iter_chunks(session.id, mat="G1", channel="pleth"))
        assert pleth and all(b.fs == 60 and b.device_id == "ox" for b in pleth)
        spo2 = [r.value for _m, r in store.readings(session.id, mat="G1", metric="spo2")]
        pleth_s = sum(len(b.samples) for b in pleth) / 60
        assert pleth_s >= 4 and len(spo2) >= pleth_s - 2 and set(spo2) == {96.0}  # numerics ~1/s while streaming
        gaps = [g for g in store.gaps(session.id) if g.device_id == "h10"]
        assert len(gaps) == 1 and gaps[0].to_seq > gaps[0].from_seq  # the BLE drop is a recorded gap
        # every sample number from first to last is either stored or inside the recorded gap
        assert ecg[-1].end_seq - ecg[0].seq == stored + (gaps[0].to_seq - gaps[0].from_seq)
        techs = [(e.detail["kind"], e.detail["active"], e.detail.get("device"))
                 for e in store.audit_entries() if e.action == "technical"]
        disc = [(a, d) for k, a, d in techs if k == "device_disconnected"]
        assert disc == [(True, "ox"), (False, "ox"), (True, "h10"), (False, "h10")], techs
    finally:
        store.close()


async def test_daemon_stop_lets_a_slow_transport_close_gracefully() -> None:
    """A BLE disconnect (stop command + link teardown) may take longer than 0.1 s; shutdown must not cut it."""
    from vigil.clock import SystemClock
    from vigil.edge.daemon import _close_supervisor
    from vigil.edge.profiles import get_profile
    from vigil.edge.supervisor import DeviceSupervisor
    from vigil.edge.transports.base import QueueTransport

    closed: list[str] = []

    class SlowClose(QueueTransport):
        async def open(self) -> None:
            self.put([])

        async def close(self) -> None:
            await asyncio.sleep(0.4)  # e.g. write the PMD stop command with response, then disconnect
            closed.append(self.device_id)

    profile = get_profile("polar-h10")
    sup = DeviceSupervisor("h10", profile, lambda st: SlowClose(st.device_id), SystemClock())
    await sup.__aenter__()
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    await asyncio.wait_for(_close_supervisor(sup), 10)
    assert closed == ["h10"]  # the close ran to its end
    assert time.monotonic() - t0 < 2.0
