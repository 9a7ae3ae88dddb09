"""`vigil replay`: records through the live pipeline, and stored sessions re-run under another config."""

from __future__ import annotations

import json

import pytest

from vigil.cli import main
from vigil.commands.replay import burden, replay_record, replay_session
from vigil.config import parse_config
from vigil.datasets import data_root
from vigil.model import GuestInfo, Metric, NumericReading
from vigil.store import RecordStore

CHALLENGE = data_root() / "challenge2015"


@pytest.mark.data
@pytest.mark.skipif(not (CHALLENGE / "a103l.hea").exists(), reason="needs the PhysioNet records (VIGIL_DATA)")
def test_record_replay_json_lines_and_determinism(capsys):
    rc = main(["replay", str(CHALLENGE / "a103l"), "--json", "--until", "300"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines, "the asystole record produced no alarm event at all"
    for x in lines:
        assert set(x) == {"t", "condition", "priority", "event"}
        assert 0 <= x["t"] <= 300.0 + 1e-6
        assert x["priority"] in ("high", "medium", "low")
    assert [x["t"] for x in lines] == sorted(x["t"] for x in lines)
    again = replay_record(CHALLENGE / "a103l", until=300)
    assert again.lines() == lines  # simulated clock: identical on every run
    # multi-signal challenge record -> one guest, one device per signal
    assert sorted(again.pipeline.device_guest) == ["a103l-ecg", "a103l-ecg2", "a103l-pleth"]  # both ECG leads
    multi = replay_record(CHALLENGE / "v221l", until=5)
    assert sorted(multi.pipeline.device_guest) == ["v221l-abp", "v221l-ecg", "v221l-ecg2", "v221l-pleth"]
    assert set(multi.pipeline.device_guest.values()) == {"r1"}


def _store_session(path):
    store = RecordStore.open(path, commit_interval_s=0.1)
    sid = store.start_session("r1", 1_700_000_000.0, {})
    store.upsert_guest(sid, GuestInfo("m01", "Guest", devices=("ox1",)))
    store.upsert_device(sid, "ox1", "generic-pulse-oximeter", "m01")
    for i in range(1800):  # 30 min at 1 Hz: SpO2 88 % for minutes 10..20, else 97 %
        v = 88.0 if 600 <= i < 1200 else 97.0
        store.add_reading(sid, "m01", NumericReading("ox1", Metric.SPO2, v, 100.0 + i, 1_700_000_000.0 + i))
    store.flush()
    store.close()
    return sid


def test_stored_session_burden_under_two_configs(tmp_path):
    db = tmp_path / "vigil.db"
    sid = _store_session(db)
    res = replay_session(db, None, sid)
    b = burden(res)
    assert b["guest_hours"] == pytest.approx(1799 / 3600, rel=1e-3)
    assert {(r["condition"], r["priority"], r["count"]) for r in b["by_condition"]} == {("spo2_low", "medium", 1)}
    assert b["per_guest_hour"] == pytest.approx(1 / (1799 / 3600), rel=1e-3)
    raised = [e for e in res.events if e.event == "raised"]
    assert raised[0].t_mono == pytest.approx(600 + 6, abs=0.2)  # 6 s SpO2 condition delay
    cfg = parse_config('[site]\nname="x"\nroom="r1"\n[alarms.thresholds.spo2]\nwarning_low = 85\ncritical_low = 80\n')
    assert burden(replay_session(db, cfg, sid))["raised"] == 0


def test_stored_session_cli_json(tmp_path, capsys):
    db = tmp_path / "vigil.db"
    _store_session(db)
    assert main(["replay", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["raised"] == 1 and out["by_priority"]["medium"]["count"] == 1
