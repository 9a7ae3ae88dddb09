"""Alarm path benchmarks: engine CPU for 20 guests, raised -> MQTT latency, timer expiry -> SMS request latency.

1. CPU: 20 guests, every condition fed at realistic rates (2 ECG leads at 250 Hz and a pleth at 125 Hz
   in 0.25-s blocks to the VT stage; per guest per second: ~1.2 beats, HR + RR
   measurements, a quality report, SpO2, two pulsatility verdicts; QTc every 10 s, SBP every 5 min,
   battery every minute, rhythm episodes and technical events that come and go), ticks at 10 Hz,
   on a SimulatedClock as fast as possible: CPU % = process CPU seconds / simulated seconds.
2. raised -> MQTT: a real mosquitto on a free loopback port, the `vigil.bus.Bus` publisher and a
   subscriber in the same process; latency from the engine's emit to the subscriber's receipt.
3. escalation: the loopback Twilio server; latency from ladder timer expiry to the POST arriving.

Run: ``python -m vigil.benchmarks.bench_alarms [--seconds N]``. Targets: CPU < 1 %, MQTT <= 100 ms,
SMS request <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from typing import Any, cast

from vigil.alarms.audit import event_json
from vigil.alarms.engine import AlarmEngine
from vigil.cliargs import parse, summary
from vigil.clock import SimulatedClock, SystemClock
from vigil.config import VigilConfig
from vigil.model import (
    Beat,
    Measurement,
    Metric,
    NumericReading,
    QualityReport,
    RhythmEpisode,
    TechnicalEvent,
    TechnicalKind,
)

GUESTS = 20


def _cfg(extra: dict[str, Any] | None = None) -> VigilConfig:
    data: dict[str, Any] = {"site": {"name": "bench", "room": "bench"},
                            "devices": [{"id": f"d{i}", "profile": "polar-h10"} for i in range(GUESTS)],
                            "guests": [{"mat": f"m{i:02d}", "name": "G", "devices": [f"d{i}"],
                                        "baseline_qtc_ms": 420} for i in range(GUESTS)],
                            "operators": [{"name": "op"}]}
    data.update(extra or {})
    return VigilConfig.model_validate(data)


ECG_BLOCK = 62  # samples per 0.25-s ECG block at 250 Hz (pleth: half that at 125 Hz)


def _waves() -> tuple[Any, Any]:
    """60 s of synthetic 2-lead ECG (µV, narrow QRS at 75 /min with a 10-s wide run at 160 /min) and pleth."""
    import numpy as np

    t = np.arange(60 * 250) / 250.0
    x = np.zeros_like(t)
    for tb in np.arange(0.2, 60.0, 0.8):
        if not 40.0 <= tb < 50.0:
            x += 1000 * np.exp(-((t - tb) / 0.012) ** 2 / 2) + 300 * np.exp(-((t - tb - 0.25) / 0.04) ** 2 / 2)
    for tb in np.arange(40.0, 50.0, 0.375):
        x -= 1600 * ((t - tb) / 0.05) * np.exp(-((t - tb) / 0.05) ** 2 / 2)
    tp = np.arange(60 * 125) / 125.0
    pleth = sum(np.exp(-((tp - tb - 0.3) / 0.15) ** 2) for tb in np.arange(0.2, 60.0, 0.8))
    return np.column_stack([x, 0.6 * x]), np.asarray(pleth)


def cpu_load(sim_seconds: int = 600) -> dict[str, float]:
    """Engine CPU % for 20 guests fed at realistic rates (simulated time, process CPU time)."""
    clock = SimulatedClock()
    events: list[Any] = []
    eng = AlarmEngine(_cfg(), clock, events.append)
    labels = ["VT", "ASYSTOLE", "VF", "AF", "PAUSE", "BRADY_EXTREME", "TACHY_EXTREME", "COUPLET"]
    ecg, pleth = _waves()
    import scipy.signal  # noqa: F401  # the VT stage's lazy import: a one-off start cost, not steady load

    cpu0 = time.process_time()
    calls = 0
    for s in range(sim_seconds):
        for g in range(GUESTS):
            mat, phase = f"m{g:02d}", (s + 7 * g)
            hr = 75 + 60 * math.sin(phase / 40.0)  # sweeps through hr_low/high(_critical)
            for k in range(10):
                clock.set(s + k / 10)
                if k in (0, 3, 5, 8):  # 2 ECG leads at 250 Hz and a pleth at 125 Hz in 0.25-s blocks
                    q = (4 * phase + (0, 3, 5, 8).index(k)) % (len(ecg) // ECG_BLOCK)
                    for ch, lead in (("ecg", 0), ("ecg2", 1)):
                        eng.on_ecg_wave(mat, ecg[q * ECG_BLOCK:(q + 1) * ECG_BLOCK, lead], 250.0, clock.monotonic(), ch)
                    qp = q % (len(pleth) // (ECG_BLOCK // 2))
                    eng.on_pulse_wave(mat, "pleth", pleth[qp * (ECG_BLOCK // 2):(qp + 1) * (ECG_BLOCK // 2)], 125.0,
                                      clock.monotonic())
                    calls += 3
                if k == 0:
                    eng.on_analysis(mat, Beat(s * 250, "N"))
                    eng.on_analysis(mat, Measurement(Metric.HR, hr, s * 250))
                    eng.on_analysis(mat, Measurement(Metric.RR, 60000 / max(hr, 1), s * 250))
                    eng.on_analysis(mat, QualityReport(s * 250, 0.3 if phase % 97 < 12 else 0.95,
                                                       ("lead_off",) if phase % 211 < 5 else ()))
                    eng.on_reading(mat, NumericReading(f"d{g}", Metric.SPO2, 92 - 8 * math.sin(phase / 50), s, s))
                    eng.on_waveform_pulsatile(mat, "pleth", phase % 89 > 10)
                    eng.on_waveform_pulsatile(mat, "abp", phase % 89 > 10)
                    calls += 7
                    if phase % 10 == 0:
                        eng.on_analysis(mat, Measurement(Metric.QTC, 440 + 80 * math.sin(phase / 300), s * 250))
                        calls += 1
                    if phase % 60 == 0:
                        eng.on_reading(mat, NumericReading(f"d{g}", Metric.BATTERY, 50 - (phase % 600) / 10, s, s))
                        calls += 1
                    if phase % 300 == 0:
                        eng.on_reading(mat, NumericReading(f"d{g}", Metric.SBP, 120 + 70 * math.sin(phase), s, s))
                        calls += 1
                    if phase % 45 == 0:
                        lab = labels[(phase // 45) % len(labels)]
                        eng.on_analysis(mat, RhythmEpisode(cast(Any, lab), s * 250, None))
                        calls += 1
                    if phase % 45 == 20:
                        lab = labels[(phase // 45) % len(labels)]
                        eng.on_analysis(mat, RhythmEpisode(cast(Any, lab), s * 250 - 5000, s * 250))
                        eng.command({"op": "ack", "operator": "op", "guest": mat})
                        calls += 2
                    if phase % 120 == 0:
                        eng.on_technical(None, TechnicalEvent(TechnicalKind.DEVICE_STALE, (phase // 120) % 2 == 0,
                                                              clock.monotonic(), device_id=f"d{g}"))
                        calls += 1
        for k in range(10):
            clock.set(s + k / 10)
            eng.tick()
    cpu = time.process_time() - cpu0
    conds = {(e.guest, e.condition) for e in events if e.event == "raised"}
    return {"sim_s": sim_seconds, "cpu_s": cpu, "cpu_pct": 100 * cpu / sim_seconds, "inputs": calls,
            "events": len(events), "distinct_conditions": len({c for _, c in conds})}


async def mqtt_latency(n: int = 60) -> dict[str, float]:
    """Engine emit -> subscriber receipt through a real mosquitto (ms)."""
    from vigil.bus import Bus, subscribe
    from vigil.edge.broker import Mosquitto

    lat: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(tmp).start()
        try:
            async with Bus("bench", broker.host, broker.port) as bus:
                await bus.wait_connected(10)
                emitted: dict[str, float] = {}

                def emit(ev: Any) -> None:
                    payload = event_json(ev, "bench")
                    key = f"{ev.guest}/{ev.condition}/{ev.event}/{ev.t_mono:.6f}"
                    payload["bench_key"] = key
                    emitted[key] = time.perf_counter()
                    bus.publish_alarm_event(payload)

                eng = AlarmEngine(_cfg(), SystemClock(), emit)
                async with subscribe(broker.host, broker.port, [bus.topics.alarm_events()]) as msgs:
                    async def reader() -> None:
                        async for _topic, payload, _ in msgs:
                            k = payload.get("bench_key")
                            if k in emitted:
                                lat.append(1000 * (time.perf_counter() - emitted[k]))
                            if len(lat) >= n:
                                return
                    task = asyncio.create_task(reader())
                    await asyncio.sleep(0.3)
                    for i in range(n // 2 + 1):
                        mat = f"m{i % GUESTS:02d}"
                        eng.on_analysis(mat, RhythmEpisode("VF", 0, None))  # raised
                        await asyncio.sleep(0.02)
                        eng.command({"op": "ack", "operator": "op", "guest": mat})  # acknowledged
                        eng.on_analysis(mat, RhythmEpisode("VF", 0, 100))  # cleared
                        await asyncio.sleep(0.02)
                    await asyncio.wait_for(task, 10)
        finally:
            broker.stop()
    return _stats(lat)


def sms_latency(n: int = GUESTS, contacts_n: int = 2) -> dict[str, float]:
    """Ladder timer expiry -> message created at the loopback Twilio server (ms); all guests alarm at once.

    Ticks at 10 Hz on the real clock; each alarm messages `contacts_n` on-call contacts.
    """
    import re

    from vigil.alarms.cloud_sms import TwilioSender
    from vigil.alarms.escalation import Escalator
    from vigil.config import TwilioSettings
    from vigil.testing.twilio_server import TwilioServer

    after = 1.0
    contacts = [{"name": f"c{i}", "role": "on_call", "phone": f"+4179000{i:04d}"} for i in range(contacts_n)]
    cfg = _cfg({"escalation": {"contacts": contacts, "high": {"on_call_after_s": after},
                               "min_interval_per_contact_s": 0}})
    clock = SystemClock()
    lat: list[float] = []
    with TwilioServer() as tw:
        ts = TwilioSettings(base_url=tw.base_url, account_sid=tw.account_sid, from_number="+41780000000",
                            auth_token_file="unused", timeout_s=5)
        esc = Escalator(cfg, clock, lambda e: None, cloud=TwilioSender(ts, tw.auth_token))
        raised: dict[str, float] = {}

        def emit(ev: Any) -> None:
            if ev.event == "raised":
                raised[ev.guest] = ev.t_mono
            esc.on_event(ev)

        eng = AlarmEngine(cfg, clock, emit)
        for g in range(n):
            eng.on_analysis(f"m{g:02d}", RhythmEpisode("VF", 0, None))
        deadline = time.monotonic() + after + 15
        while time.monotonic() < deadline and len(tw.twilio.messages) < n * contacts_n:
            eng.tick()
            esc.tick()
            time.sleep(0.1)
        esc.wait_idle(10)
        esc.close()
        for m in tw.twilio.messages:
            mat = re.search(r"mat (m\d+)", m["body"])
            if mat and mat.group(1) in raised:
                lat.append(1000 * (m["created_mono"] - (raised[mat.group(1)] + after)))
        count = len(tw.twilio.messages)
    out = _stats(lat)
    out["messages"] = count
    return out


def _stats(x: list[float]) -> dict[str, float]:
    if not x:
        return {"n": 0}
    xs = sorted(x)
    return {"n": len(xs), "median_ms": statistics.median(xs), "p95_ms": xs[int(0.95 * (len(xs) - 1))],
            "max_ms": xs[-1]}


def main(argv: list[str]) -> int:
    """Run the three benchmarks and print a table."""
    p = argparse.ArgumentParser(prog="python -m vigil.benchmarks.bench_alarms", description=summary(__doc__),
                                allow_abbrev=False)
    p.add_argument("--seconds", type=int, default=600, metavar="N",
                   help="simulated seconds of the engine CPU benchmark (default: 600)")
    seconds = parse(p, argv).seconds
    c = cpu_load(seconds)
    print(f"engine CPU, {GUESTS} guests, {c['sim_s']} simulated s: {c['cpu_s']:.2f} CPU s -> {c['cpu_pct']:.3f} % "
          f"(target < 1 %); {c['inputs']} inputs, {c['events']} alarm events, "
          f"{c['distinct_conditions']} distinct conditions raised")
    m = asyncio.run(mqtt_latency())
    print(f"raised -> MQTT subscriber (real mosquitto): n={m.get('n')} median {m.get('median_ms', math.nan):.1f} ms "
          f"p95 {m.get('p95_ms', math.nan):.1f} ms max {m.get('max_ms', math.nan):.1f} ms (target <= 100 ms)")
    s = sms_latency()
    print(f"escalation timer expiry -> message at Twilio: {GUESTS} simultaneous high alarms x 2 on-call contacts, "
          f"{s.get('messages')} messages: median {s.get('median_ms', math.nan):.0f} ms "
          f"p95 {s.get('p95_ms', math.nan):.0f} ms max {s.get('max_ms', math.nan):.0f} ms (target <= 1000 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
