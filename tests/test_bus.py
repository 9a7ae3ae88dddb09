"""The bus against a real mosquitto: versioned payloads, retained state, last will, non-blocking publish."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from vigil.bus import Bus, Topics, decode, encode, subscribe


async def _collect(host: str, port: int, topics: list[str], n: int, timeout: float = 5.0) -> list[tuple[str, dict, bool]]:
    out: list[tuple[str, dict, bool]] = []
    async with subscribe(host, port, topics) as messages:
        async def take() -> None:
            async for m in messages:
                out.append(m)
                if len(out) >= n:
                    return
        await asyncio.wait_for(take(), timeout)
    return out


def test_payloads_are_versioned_and_nan_safe() -> None:
    data = encode({"hr": float("nan"), "spo2": 97.0, "flags": ("a",)})
    assert decode(data) == {"v": 1, "hr": None, "spo2": 97.0, "flags": ["a"]}
    with pytest.raises(ValueError):
        decode(b'{"v": 2}')
    with pytest.raises(ValueError):
        decode(b"[1, 2]")


def test_topic_tree() -> None:
    t = Topics("room1")
    assert t.status() == "vigil/room1/status"
    assert t.vitals("m3") == "vigil/room1/guest/m3/vitals"
    assert t.ecg("m3") == "vigil/room1/guest/m3/ecg"
    assert t.guest_alarms("m3") == "vigil/room1/guest/m3/alarms"
    assert t.alarm_events() == "vigil/room1/alarms/events"
    assert t.cmd_reply("ana") == "vigil/room1/cmd/ana/reply"


async def test_retained_state_reaches_a_late_subscriber(mosquitto) -> None:
    async with Bus("r1", mosquitto.host, mosquitto.port) as bus:
        assert await bus.wait_connected(5)
        bus.publish_vitals("m1", {"hr": 61.0})
        bus.publish_vitals("m1", {"hr": 72.0})  # coalesced: latest wins
        bus.publish_status({"state": "running", "uptime_s": 1.0})
        for _ in range(100):
            if bus.stats.published >= 2 and not bus._dirty:
                break
            await asyncio.sleep(0.02)
        # a subscriber that arrives later gets the last-known state, flagged retained
        got = await _collect(mosquitto.host, mosquitto.port, ["vigil/r1/guest/+/vitals", "vigil/r1/status"], 2)
        by_topic = {t: (p, r) for t, p, r in got}
        assert by_topic["vigil/r1/guest/m1/vitals"] == ({"v": 1, "hr": 72.0}, True)
        assert by_topic["vigil/r1/status"][0]["state"] == "running"


async def test_last_will_marks_room_offline_when_client_is_killed(mosquitto, tmp_path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys
        from vigil.bus import Bus
        async def main():
            async with Bus("r2", "127.0.0.1", {mosquitto.port}, keepalive=2) as bus:
                await bus.wait_connected(5)
                bus.publish_status({{"state": "running"}})
                await asyncio.sleep(0.5)
                print("up", flush=True)
                await asyncio.sleep(60)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "up"
        got = await _collect(mosquitto.host, mosquitto.port, ["vigil/r2/status"], 1)
        assert got[0][1]["state"] == "running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        # the broker publishes the will (retained) once it sees the socket close
        async with subscribe(mosquitto.host, mosquitto.port, ["vigil/r2/status"]) as messages:
            async def until_offline() -> dict:
                async for _t, payload, _r in messages:
                    if payload.get("state") == "offline":
                        return payload
                raise AssertionError("no offline")
            payload = await asyncio.wait_for(until_offline(), 10)
        assert payload == {"v": 1, "state": "offline"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_publish_never_blocks_with_broker_down_then_recovers(mosquitto) -> None:
    states: list[bool] = []
    bus = Bus("r3", mosquitto.host, mosquitto.port, on_state=lambda up, why: states.append(up),
              backoff_base_s=0.1, backoff_cap_s=0.3, max_queue=5)
    async with bus:
        assert await bus.wait_connected(5)
        mosquitto.server.kill()
        for _ in range(100):
            if not bus.connected:
                break
            bus.publish_status({"state": "running"})  # makes the dead link visible quickly
            await asyncio.sleep(0.05)
        assert not bus.connected and states == [True, False]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(500):
            bus.publish_ecg("m1", {"seq": i, "samples": [0] * 30})
            bus.publish_alarm_event({"n": i})
            bus.publish_vitals("m1", {"hr": float(i)})
        assert loop.time() - t0 < 0.5  # 1500 publishes, none waited on the network
        assert bus.stats.dropped_ecg == 500
        assert bus.stats.dropped_queue == 495  # bounded queue keeps the 5 newest events
        mosquitto.restart()
        assert await bus.wait_connected(10)
        got = await _collect(mosquitto.host, mosquitto.port, ["vigil/r3/guest/m1/vitals"], 1)
        assert got[0][1]["hr"] == 499.0  # the latest retained state was re-sent after reconnect
        assert states == [True, False, True]
