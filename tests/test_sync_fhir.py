"""FHIR R4 delivery against a real server (sekmet-fhir 0.1.1) behind an OAuth2 + TLS gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from vigil.clock import SimulatedClock, SystemClock
from vigil.store import RecordStore
from vigil.sync import fhir_mapping as fm
from vigil.sync.fhir import FhirDestination
from vigil.sync.oauth import ClientCredentials
from vigil.sync.outcome import make_session
from vigil.sync.worker import SyncWorker
from vigil.testing.fhir_server import SekmetProcess, fhir_gateway
from vigil.testing.tls import TlsFiles, make_ca_and_server

pytestmark = pytest.mark.timeout(120)
WALL = 1_700_000_000.0


@pytest.fixture(scope="module")
def sekmet() -> Iterator[SekmetProcess]:
    with SekmetProcess() as s:
        yield s


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_ca_and_server(tmp_path_factory.mktemp("tls"))


def _payloads(session: str, guests: list[str]) -> list[dict]:
    out = []
    for g in guests:
        guest = {"id": g, "display_name": f"Guest {g}"}
        base = {"session_id": session, "guest": guest, "session_start": WALL}
        for k in range(3):
            out.append({**base, "kind": "vitals", "wall": WALL + 5 * k,
                        "metrics": {"hr": 70 + k, "spo2": 97, "sbp": 120, "dbp": 80, "qtc": 440, "sdnn": 45}})
        out.append({**base, "kind": "ecg_strip", "start_wall": WALL + 20, "fs": 130.0, "lead": "II",
                    "samples_uV": [int(100 * ((i % 130) == 0)) for i in range(1300)], "reason": "alarm hr_high"})
        out.append({**base, "kind": "summary", "session_end": WALL + 3600, "conclusion": "no alarms"})
    return out


def _enqueue(store: RecordStore, payloads: list[dict], tag: str) -> None:
    for i, p in enumerate(payloads):
        store.enqueue("fhir", p["kind"], p, f"{tag}-{i}")
    store.flush()


def _total(sekmet: SekmetProcess, rtype: str, query: str = "") -> int:
    r = requests.get(f"{sekmet.base_url}/{rtype}?_count=1{query}", timeout=10)
    return int(r.json()["total"])


def test_mapping_is_valid_r4b_and_uses_the_right_codes() -> None:
    bundle = fm.bundle_for_payloads(_payloads("S0", ["G1"]))
    fm.validate_bundle(bundle)
    res = [e["resource"] for e in bundle["entry"]]
    kinds = [r["resourceType"] for r in res]
    assert kinds.count("Patient") == 1 and kinds.count("Encounter") == 1  # deduplicated
    codes = {c["code"] for r in res if r["resourceType"] == "Observation" for c in r["code"]["coding"]}
    assert {"8867-4", "2708-6", "59408-5", "85354-9", "8636-3", "80404-7", "131330"} <= codes
    bp = next(r for r in res if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "85354-9")
    assert [c["code"]["coding"][0]["code"] for c in bp["component"]] == ["8480-6", "8462-4"]
    assert bp["component"][0]["valueQuantity"]["code"] == "mm[Hg]"
    assert bp["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/bp"]
    ecg = next(r for r in res if "valueSampledData" in r)
    sd = ecg["valueSampledData"]
    assert ecg["code"]["coding"][0]["system"] == "urn:iso:std:iso:11073:10101"
    assert sd["period"] == pytest.approx(1000 / 130, rel=1e-6) and sd["dimensions"] == 1
    assert len(sd["data"].split()) == 1300
    for e in bundle["entry"]:
        system, value = fm.identifier_of(e["resource"])
        assert e["fullUrl"] != value and value not in e["fullUrl"]
        assert e["request"]["ifNoneExist"] == f"identifier={system}|{value}"
    with pytest.raises(ValueError, match="Observation"):
        fm.validate_resource({**res[2], "status": 5})


def test_transactions_replay_creates_nothing_twice(sekmet: SekmetProcess, tls: TlsFiles, tmp_path: Path) -> None:
    store = RecordStore.open(tmp_path / "v.db")
    with fhir_gateway(sekmet.base_url, ssl_context=tls.server_context(), token_ttl_s=45.0) as gw:
        session = make_session(str(tls.ca_cert))
        auth = ClientCredentials(gw.base_url + "/oauth/token", "vigil", "s3cret", session=session)
        dest = FhirDestination(gw.base_url + "/fhir", session=session, auth=auth, batch_size=4)
        worker = SyncWorker(store, [dest], clock=SystemClock(), idle_poll_s=0.05)
        before = _total(sekmet, "Observation")
        payloads = _payloads("S1", ["G1", "G2"])
        _enqueue(store, payloads, "first")
        assert asyncio.run(worker.drain(60))
        created = _total(sekmet, "Observation") - before
        assert created == 2 * (3 * 5 + 1)  # per guest: 3 × (hr, spo2, qtc, sdnn, bp) + 1 ECG strip
        assert _total(sekmet, "Patient", f"&identifier={fm.PATIENT_SYSTEM}|G1") == 1
        assert _total(sekmet, "DiagnosticReport", f"&identifier={fm.REPORT_SYSTEM}|S1.G2.summary") == 1
        # replay everything as new outbox rows (a crash after sending, a re-sent export ...)
        gw.app.revoke_all()  # and the token was revoked meanwhile: 401 → new token → success
        issued = gw.app.tokens_issued
        _enqueue(store, payloads, "again")
        assert asyncio.run(worker.drain(60))
        assert _total(sekmet, "Observation") - before == created
        assert _total(sekmet, "Patient", f"&identifier={fm.PATIENT_SYSTEM}|G1") == 1
        assert _total(sekmet, "Encounter", f"&identifier={fm.ENCOUNTER_SYSTEM}|S1.G1") == 1
        assert gw.app.unauthorized >= 1 and gw.app.tokens_issued == issued + 1
        assert store.outbox_stats()["fhir"].delivered == 2 * len(payloads)
    store.close()


def test_wrong_ca_is_refused_and_invalid_records_dead_letter(sekmet: SekmetProcess, tls: TlsFiles,
                                                             tmp_path: Path) -> None:
    other = make_ca_and_server(tmp_path / "other")
    store = RecordStore.open(tmp_path / "v.db")
    with fhir_gateway(sekmet.base_url, ssl_context=tls.server_context()) as gw:
        bad_session = make_session(str(other.ca_cert))
        auth = ClientCredentials(gw.base_url + "/oauth/token", "vigil", "s3cret", session=bad_session)
        dest = FhirDestination(gw.base_url + "/fhir", session=bad_session, auth=auth)
        worker = SyncWorker(store, [dest], clock=SystemClock())
        _enqueue(store, _payloads("S2", ["G9"])[:1], "tls")
        assert worker.step("fhir") == -1
        st = store.outbox_stats()["fhir"]
        assert st.delivered == 0 and st.pending == 1 and gw.app.tokens_issued == 0
        assert "unreachable" in (st.last_error or "") or "SSL" in (st.last_error or "")
        # right CA: delivered; a record that cannot be valid FHIR goes to the dead letters with the reason
        good = make_session(str(tls.ca_cert))
        dest2 = FhirDestination(gw.base_url + "/fhir", session=good,
                                auth=ClientCredentials(gw.base_url + "/oauth/token", "vigil", "s3cret", session=good))
        later = SimulatedClock(start_wall=time.time() + 600)  # past the first failure's backoff
        worker2 = SyncWorker(store, [dest2], clock=later)
        broken = {**_payloads("S2", ["G9"])[0], "wall": WALL + 99, "metrics": {"hr": "fast"}}
        _enqueue(store, [broken], "broken")
        assert worker2.step("fhir") == 2
        st = store.outbox_stats()["fhir"]
        assert st.delivered == 1 and st.dead == 1
        assert "cannot map to valid FHIR" in store.dead_letters("fhir")[0][4]
    store.close()


def test_vitals_window_maps_to_median_observations_and_replays_idempotently(sekmet: SekmetProcess,
                                                                            tmp_path: Path) -> None:
    base = {"session_id": "SW", "guest": {"id": "GW"}, "session_start": WALL}
    window = {**base, "kind": "vitals_window", "start_wall": WALL, "period_s": 5.0,
              "series": {"hr": [60, 61, 62, 180, 63, 64, None, 65, 66, 67, 68, 69],  # one artefact, one gap
                         "sbp": [None] * 11 + [121], "dbp": [None] * 11 + [79]}}
    res = fm.resources_for_payload(window)
    for r in res:
        fm.validate_resource(r)
    obs = {r["code"]["coding"][0]["code"]: r for r in res if r["resourceType"] == "Observation"}
    assert set(obs) == {"8867-4", "85354-9"}
    assert obs["8867-4"]["valueQuantity"]["value"] == 65.0  # median of the 11 samples present
    assert obs["8867-4"]["method"]["text"] == "median of 11 samples taken every 5 s"
    assert obs["8867-4"]["effectivePeriod"] == {"start": fm.iso(WALL), "end": fm.iso(WALL + 60)}
    assert [c["valueQuantity"]["value"] for c in obs["85354-9"]["component"]] == [121, 79]
    store = RecordStore.open(tmp_path / "v.db")
    worker = SyncWorker(store, [FhirDestination(sekmet.base_url, session=make_session())], clock=SystemClock(),
                        idle_poll_s=0.05)
    before = _total(sekmet, "Observation")
    _enqueue(store, [window], "w1")
    _enqueue(store, [window], "w2")  # the same window queued twice
    assert asyncio.run(worker.drain(60))
    assert _total(sekmet, "Observation") - before == 2
    store.close()


async def test_daemon_rows_reach_booking_and_the_emr(sekmet: SekmetProcess, tmp_path: Path) -> None:
    """Daemon -> outbox (OutboxFeed) -> SyncWorker -> loopback booking platform and sekmet."""
    from vigil.config import parse_config
    from vigil.datasets import VENDORED_RECORDS
    from vigil.edge.broker import free_port
    from vigil.edge.daemon import Daemon
    from vigil.sync.booking import BookingDestination
    from vigil.testing.booking_server import BookingApp, booking_server

    text = "\n".join([
        "[site]", 'name = "t"', 'room = "t1"', "[store]", 'path = "vigil.db"', "min_free_mb = 1",
        "[mqtt]", f"port = {free_port()}", "[alarms]", "sound_enabled = false",
        "[[devices]]", 'id = "ox"', 'profile = "replay-bidmc"', f'record = "{VENDORED_RECORDS / "bidmc_04"}"',
        "[[guests]]", 'mat = "G1"', 'name = "Secret Name"', 'devices = ["ox"]',
        "[sync.booking]", 'url = "http://127.0.0.1:1/v1/events"', 'secret_file = "b.secret"',
        "[sync.fhir]", f'base_url = "{sekmet.base_url}"']) + "\n"
    (tmp_path / "config.toml").write_text(text)
    cfg = parse_config(text, tmp_path / "config.toml")
    assert not (tmp_path / "b.secret").exists()  # sync secrets missing never stop the daemon
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    run = asyncio.create_task(daemon.run(stop, handle_signals=False))
    await asyncio.wait_for(daemon.ready.wait(), 20)
    await asyncio.sleep(11.5)  # two vitals samples (every 5 s)
    stop.set()
    await asyncio.wait_for(run, 30)
    sid = daemon.session_id
    store = RecordStore.open(tmp_path / "vigil.db")
    before = _total(sekmet, "Observation")
    with booking_server(b"bk-secret") as bk:
        dests = [BookingDestination(bk.base_url + "/v1/events", b"bk-secret", session=make_session()),
                 FhirDestination(sekmet.base_url, session=make_session())]
        worker = SyncWorker(store, dests, clock=SystemClock(), idle_poll_s=0.05)
        assert await worker.drain(60)
        app = bk.app
        assert isinstance(app, BookingApp)
        types = [e["type"] for e in app.applied]
    store.close()
    assert types[:2] == ["session.started", "guest.checked_in"] and types[-1] == "session.ended"
    vitals = [e["data"] for e in app.applied if e["type"] == "vitals.summary"]
    assert len(vitals) == 2 and all(v["spo2"] == pytest.approx(93, abs=3) for v in vitals)  # BIDMC 04 SpO2
    assert vitals[0]["guest"] == f"{sid}-G1" and "Secret Name" not in str(app.applied)
    got = requests.get(f"{sekmet.base_url}/Observation?_count=100", timeout=10).json()
    mine = [e["resource"] for e in got.get("entry", [])
            if e["resource"]["identifier"][0]["value"].startswith(f"{sid}.{sid}-G1.")]
    codes = [o["code"]["coding"][0]["code"] for o in mine]
    assert len(mine) == _total(sekmet, "Observation") - before
    # the partial minute was flushed at stop: one Observation per metric seen, one strip per raised alarm
    raised = [e for e in app.applied if e["type"] == "alarm.raised" and e["data"]["mat"] == "G1"]
    strips = [o for o in mine if o["code"]["coding"][0]["code"] == "131330"]
    assert 1 <= len(strips) <= len(raised)  # alarms less than 5 s apart share one strip
    assert {e["data"]["condition"] for e in raised} == {c.strip() for o in strips
                                                        for c in o["note"][0]["text"].removeprefix("alarm ").split(",")}
    assert {"8867-4", "2708-6"} <= set(codes) and all(codes.count(c) == 1 for c in set(codes) - {"131330"})
    spo2 = next(o for o in mine if o["code"]["coding"][0]["code"] == "2708-6")
    assert spo2["valueQuantity"]["value"] == pytest.approx(93, abs=3) and spo2["method"]["text"].endswith("every 5 s")
    assert _total(sekmet, "DiagnosticReport", f"&identifier={fm.REPORT_SYSTEM}|{sid}.{sid}-G1.summary") == 1
    assert _total(sekmet, "Encounter", f"&identifier={fm.ENCOUNTER_SYSTEM}|{sid}.{sid}-G1") == 1
