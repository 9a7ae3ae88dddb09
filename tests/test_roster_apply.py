"""The daemon applies the session roster without a restart (vigil.edge.roster_apply), caches it, falls back."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from vigil.clock import SimulatedClock
from vigil.config import parse_config
from vigil.datasets import VENDORED_RECORDS
from vigil.edge.broker import free_port
from vigil.edge.daemon import Daemon
from vigil.edge.roster_apply import RosterApplier, plan_roster
from vigil.model import Metric, TechnicalEvent, TechnicalKind
from vigil.store import RecordStore
from vigil.sync.roster import Roster, RosterError, load_cache, parse_roster, write_cache

OLD_PHONE, NEW_PHONE, BACKUP_PHONE = "+15550000001", "+15550000002", "+15550000003"


def _config_text(tmp: Path, mqtt_port: int, twilio: Any = None) -> str:
    lines = ["[site]", 'name = "test"', 'room = "t1"', "[store]", f'path = "{tmp / "vigil.db"}"', "min_free_mb = 1",
             "[mqtt]", f"port = {mqtt_port}", "[alarms]", "sound_enabled = false",
             "[escalation]", "min_interval_per_contact_s = 0",
             "[[escalation.contacts]]", 'name = "Config Nurse"', 'role = "on_call"', f'phone = "{OLD_PHONE}"',
             "[escalation.medium]", "on_call_after_s = 0"]
    if twilio is not None:
        (tmp / "twilio.token").write_text(twilio.auth_token)
        (tmp / "twilio.token").chmod(0o600)
        lines += ["[escalation.twilio]", f'base_url = "{twilio.base_url}"', f'account_sid = "{twilio.account_sid}"',
                  'from_number = "+15559999999"', 'auth_token_file = "twilio.token"', "timeout_s = 2.0"]
    lines += ["[[devices]]", 'id = "dev-ecg"', 'profile = "replay-wfdb"', f'record = "{VENDORED_RECORDS / "119"}"',
              "[[devices]]", 'id = "dev-ox"', 'profile = "replay-bidmc"', f'record = "{VENDORED_RECORDS / "bidmc_04"}"',
              "[[guests]]", 'mat = "G1"', 'name = "Config Name One"', 'devices = ["dev-ecg"]',
              "[guests.thresholds.hr]", "warning_high = 110", "critical_high = 130"]
    return "\n".join(lines) + "\n"


def _cfg(tmp: Path, mqtt_port: int = 1, twilio: Any = None) -> Any:
    path = tmp / "config.toml"
    path.write_text(_config_text(tmp, mqtt_port, twilio))
    return parse_config(path.read_text(), path)


def _roster(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": 1, "room": "t1", "session_id": "B-1", "updated": "2026-11-26T22:00:00Z",
        "guests": [{"id": "P-1", "mat": "G1", "display_name": "Roster Name One", "devices": [],
                    "baseline_qtc_ms": 420.0, "thresholds": {"hr": {"warning_high": 90}}},
                   {"id": "P-9", "mat": "G9", "display_name": "New Guest Nine", "devices": ["dev-ox"],
                    "thresholds": {"spo2": {"warning_low": 93, "critical_low": 88}}}],
        "on_call": [{"name": "Roster Nurse", "role": "on_call", "phone": NEW_PHONE},
                    {"name": "Roster Doctor", "role": "backup", "phone": BACKUP_PHONE}]}
    doc.update(changes)
    return doc


# --------------------------------------------------------------------------- the merge (pure)

def test_plan_merges_roster_over_config_and_keeps_unlisted_config_guests(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    roster = parse_roster(json.dumps(_roster(guests=[_roster()["guests"][1]])))  # G1 not in this roster
    plan = plan_roster(cfg.guests, cfg.escalation.contacts, roster, room="t1", defaults=cfg.alarms.thresholds,
                       known_devices=["dev-ecg", "dev-ox"], current=cfg.guests)
    assert [g.mat for g in plan.guests] == ["G1", "G9"]  # G1 stays monitored with its config settings
    assert plan.guests[0].name == "Config Name One" and plan.added == ["G9"] and plan.changed == []
    assert plan.device_guest == {"dev-ecg": "G1", "dev-ox": "G9"} and plan.unknown_devices == []
    assert [c.phone for c in plan.contacts] == [NEW_PHONE, BACKUP_PHONE]


def test_plan_overrides_limit_by_limit_and_rejects_contradictions(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    roster = parse_roster(json.dumps(_roster()))
    plan = plan_roster(cfg.guests, cfg.escalation.contacts, roster, room="t1", defaults=cfg.alarms.thresholds,
                       known_devices=["dev-ecg"], current=cfg.guests)
    g1 = plan.guests[0]
    cfg.guests = plan.guests
    hr = cfg.thresholds_for("G1").hr
    assert (hr.warning_high, hr.critical_high, hr.warning_low) == (90, 130, 50)  # roster 90, config 130, seed 50
    assert g1.baseline_qtc_ms == 420.0 and g1.devices == ["dev-ecg"]  # empty roster device list keeps config's
    assert plan.changed == ["G1"] and plan.unknown_devices == ["dev-ox"]
    # warning above the config's critical limit: refused as a whole, naming the mat
    bad = parse_roster(json.dumps(_roster(guests=[{**_roster()["guests"][0], "thresholds": {"hr": {"warning_high": 140}}}])))
    with pytest.raises(RosterError, match="mat G1"):
        plan_roster(cfg.guests, cfg.escalation.contacts, bad, room="t1", defaults=cfg.alarms.thresholds,
                    known_devices=[])
    with pytest.raises(RosterError, match="room 'other'"):
        plan_roster(cfg.guests, [], parse_roster(json.dumps(_roster(room="other"))), room="t1",
                    defaults=cfg.alarms.thresholds, known_devices=[])
    # no on-call contacts in the roster: the config's stay (escalation never ends up with nobody)
    plan = plan_roster(cfg.guests, cfg.escalation.contacts, parse_roster(json.dumps(_roster(on_call=[]))),
                       room="t1", defaults=cfg.alarms.thresholds, known_devices=[])
    assert [c.phone for c in plan.contacts] == [OLD_PHONE]


# --------------------------------------------------------------------------- the applier (no daemon)

def test_corrupt_cache_is_a_technical_alarm_cleared_by_the_next_valid_roster(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cache = tmp_path / "roster.json"
    cache.write_text('{"v": 1, "room": "t1", "guests": [{"id": "P-1"')  # torn write
    events: list[TechnicalEvent] = []
    ap = RosterApplier(cfg, SimulatedClock(), technical=events.append)
    assert ap.start() is None  # does not raise
    assert [(e.kind, e.active, e.device_id) for e in events] == [(TechnicalKind.ALARM_SYSTEM_FAULT, True, "_roster")]
    assert "roster cache roster.json unusable" in events[0].detail and "config.toml" in events[0].detail
    assert [c.phone for c in cfg.escalation.contacts] == [OLD_PHONE]  # config still in force
    # a malformed roster on the bus is rejected with a clear reason; nothing changes
    assert not ap.on_message(b'{"v": 1, "room": "t1", "guests": [{"id": "P-1"}]}')
    assert ap.rejected == 1 and "guests.0.mat" in events[-1].detail and [g.mat for g in cfg.guests] == ["G1"]
    assert ap.on_message(json.dumps(_roster()).encode())
    assert events[-1].active is False and ap.fault is None
    ap.close()
    assert load_cache(cache) == ap.current  # the cache was rewritten with the applied roster
    assert cache.stat().st_mode & 0o777 == 0o600


def test_cache_written_600_even_over_a_world_readable_file(tmp_path: Path) -> None:
    cache = tmp_path / "roster.json"
    cache.write_text("{}")
    cache.chmod(0o644)
    old = os.umask(0)
    try:
        write_cache(cache, Roster(room="t1"))
    finally:
        os.umask(old)
    assert cache.stat().st_mode & 0o777 == 0o600
    assert load_cache(cache) == Roster(room="t1")
    assert not [p for p in tmp_path.iterdir() if p.name != "roster.json"]  # no temporary left behind


# --------------------------------------------------------------------------- the daemon, real mosquitto

async def _until(pred: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return bool(pred())


async def test_daemon_applies_roster_from_the_bus_then_restarts_offline_on_the_cache(tmp_path: Path,
                                                                                  mosquitto: Any) -> None:
    import aiomqtt

    from vigil.testing.twilio_server import TwilioServer

    with TwilioServer() as tw:
        cfg = _cfg(tmp_path, mosquitto.port, tw)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:  # what `vigil sync` publishes
            await client.publish("vigil/t1/roster", json.dumps(_roster()), qos=1, retain=True)
        daemon = Daemon(cfg)
        stop = asyncio.Event()
        run = asyncio.create_task(daemon.run(stop, handle_signals=False))
        try:
            await asyncio.wait_for(daemon.ready.wait(), 20)
            assert await _until(lambda: daemon.roster.applied == 1)
            pipe = daemon.pipeline
            assert pipe is not None
            assert [c.phone for c in daemon.cfg.escalation.contacts] == [NEW_PHONE, BACKUP_PHONE]
            assert daemon.cfg.thresholds_for("G1").hr.warning_high == 90
            assert daemon.cfg.thresholds_for("G9").spo2.warning_low == 93
            # the new guest's oximeter now feeds mat G9 (BIDMC 04 SpO2 ~93 %)
            assert await _until(lambda: "G9" in pipe.guests and pipe.guests["G9"].value(Metric.SPO2) is not None)
            assert pipe.guests["G9"].value(Metric.SPO2) == pytest.approx(93, abs=3)
            assert "G9" in daemon.status_payload()["guests"]
            # escalation goes to the roster's on-call nurse, not the config's
            pipe.technical(None, TechnicalEvent(TechnicalKind.SOUND_FAILED, True, daemon.clock.monotonic(), detail="t"))
            assert await _until(lambda: any(m["to"] == NEW_PHONE for m in tw.twilio.messages))
            assert not [m for m in tw.twilio.messages if m["to"] == OLD_PHONE]
            # a changed roster (another guest, another override) reaches the running daemon
            changed = _roster()
            changed["guests"][0]["thresholds"] = {"hr": {"warning_high": 95}}
            changed["guests"].append({"id": "P-5", "mat": "G5", "display_name": "Late Guest", "devices": []})
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
                await client.publish("vigil/t1/roster", json.dumps(changed), qos=1, retain=True)
            assert await _until(lambda: daemon.roster.applied == 2)
            assert daemon.cfg.thresholds_for("G1").hr.warning_high == 95 and "G5" in pipe.guests
            assert daemon.cfg.guest("G5") is not None
        finally:
            stop.set()
            await asyncio.wait_for(run, 30)
        cache = tmp_path / "roster.json"
        assert cache.stat().st_mode & 0o777 == 0o600
        assert [g["mat"] for g in json.loads(cache.read_text())["guests"]] == ["G1", "G9", "G5"]
        store = RecordStore.open(tmp_path / "vigil.db")
        try:
            applied = [e.detail for e in store.audit_entries() if e.action == "roster.applied"]
        finally:
            store.close()
        assert [a["source"] for a in applied] == ["bus", "bus"] and applied[1]["added"] == ["G5"]
        assert "Roster Name" not in json.dumps(applied) and NEW_PHONE not in json.dumps(applied)

    # restart with no broker and no sync: the cached roster is in force
    mosquitto.server.stop()
    cfg2 = _cfg(tmp_path, free_port())
    daemon2 = Daemon(cfg2)
    stop2 = asyncio.Event()
    run2 = asyncio.create_task(daemon2.run(stop2, handle_signals=False))
    try:
        await asyncio.wait_for(daemon2.ready.wait(), 20)
        assert daemon2.roster.applied == 1 and daemon2.roster.fault is None
        assert [c.phone for c in cfg2.escalation.contacts] == [NEW_PHONE, BACKUP_PHONE]
        assert cfg2.thresholds_for("G1").hr.warning_high == 95 and cfg2.guest("G5") is not None
        assert daemon2.pipeline is not None and daemon2.pipeline.mat_of("dev-ox") == "G9"
    finally:
        stop2.set()
        await asyncio.wait_for(run2, 30)


async def test_daemon_starts_on_a_corrupt_cache_with_a_clear_technical_alarm(tmp_path: Path) -> None:
    (tmp_path / "roster.json").write_bytes(b"\x00\x01 not json")
    cfg = _cfg(tmp_path, free_port())
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    run = asyncio.create_task(daemon.run(stop, handle_signals=False))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        assert daemon.pipeline is not None
        faults = [a for a in daemon.pipeline.active_alarms() if a.condition == "alarm_system_fault"]
        assert faults and "roster cache roster.json unusable" in faults[0].reason
        assert [c.phone for c in cfg.escalation.contacts] == [OLD_PHONE]
        assert (daemon.pipeline.guests["G1"].ecg_seq or 0) >= 0  # monitoring runs
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)


def test_roster_limits_and_new_guests_drive_the_alarm_engine(tmp_path: Path) -> None:
    from vigil.edge.pipeline import MemorySink, Pipeline
    from vigil.model import NumericReading

    cfg = _cfg(tmp_path)
    clock = SimulatedClock()
    sink = MemorySink()
    pipe = Pipeline(cfg, clock, [sink], analyzer_factory=False)
    ap = RosterApplier(cfg, clock, pipeline=pipe, technical=lambda ev: None)

    def feed(seconds: int) -> None:
        for _ in range(seconds * 10):
            pipe.feed("dev-ecg", NumericReading("dev-ecg", Metric.HR, 95.0, clock.monotonic(), clock.wall()))
            pipe.feed("dev-ox", NumericReading("dev-ox", Metric.SPO2, 91.0, clock.monotonic(), clock.wall()))
            clock.advance(0.1)
            pipe.tick()

    def raised() -> set[tuple[str, str]]:
        return {(e.guest, e.condition) for e in sink.alarms if e.event == "raised"}

    feed(10)
    assert raised() == set()  # HR 95 is under the config's 110; dev-ox is nobody's yet
    assert ap.on_message(json.dumps(_roster()).encode())
    feed(10)
    assert raised() == {("G1", "hr_high"), ("G9", "spo2_low")}  # roster limit 90; new guest G9 with limit 93
    ap.close()
