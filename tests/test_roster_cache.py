"""Roster pull fallback: booking platform down or misbehaving -> the cached roster stays in force and is published."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from vigil.config import parse_config
from vigil.store import RecordStore
from vigil.sync.outcome import make_session
from vigil.sync.roster import RosterError, RosterPuller, load_cache, parse_roster, write_cache
from vigil.sync.service import build_destinations, run_service
from vigil.testing.booking_server import booking_server
from vigil.testing.loopback import Fault

pytestmark = pytest.mark.timeout(60)
SECRET = b"roster-secret"
ROSTER = {"v": 1, "room": "t1", "session_id": "B-1",
          "guests": [{"id": "P-1", "mat": "G1", "display_name": "Cached Guest", "devices": ["dev-1"]}],
          "on_call": [{"name": "Nurse", "role": "on_call", "phone": "+15550000002"}]}


def test_puller_keeps_the_cache_when_the_platform_is_down_or_answers_badly(tmp_path: Path) -> None:
    cache = tmp_path / "roster.json"
    write_cache(cache, parse_roster(json.dumps(ROSTER)))
    with booking_server(SECRET) as srv:
        url = srv.base_url + "/v1/rooms/t1/roster"
        puller = RosterPuller(url, SECRET, session=make_session(), cache=cache, timeout_s=1.0)
        assert puller.current is not None and puller.current.guests[0].id == "P-1"  # loaded at start
        with pytest.raises(RosterError, match="HTTP 404; using the cached roster"):
            puller.fetch()  # no roster published yet
        srv.faults.push(Fault("status", 503))
        srv.app.set_roster({**ROSTER, "guests": []})
        with pytest.raises(RosterError, match="HTTP 503"):
            puller.fetch()
        srv.faults.push(Fault("garbage"))
        with pytest.raises(RosterError, match="malformed roster: not JSON"):
            puller.fetch()
        srv.app.set_roster_raw(json.dumps({**ROSTER, "room": "t1", "on_call": [{"name": "X"}]}).encode())
        with pytest.raises(RosterError, match=r"on_call\.0"):
            puller.fetch()  # a contact with neither phone nor email
        assert load_cache(cache) == puller.current and puller.current.guests  # the cache was not touched
        srv.down()
        with pytest.raises(RosterError, match="unreachable"):
            puller.fetch()
        srv.up()
        srv.app.set_roster({**ROSTER, "guests": []})
        new = puller.fetch()
        assert new is not None and new.guests == [] and load_cache(cache) == new
        assert puller.fetch() is None  # ETag: 304, nothing new
        assert cache.stat().st_mode & 0o777 == 0o600


async def test_sync_publishes_the_cached_roster_while_the_platform_is_down(tmp_path: Path, mosquitto: Any) -> None:
    import aiomqtt

    (tmp_path / "b.secret").write_bytes(SECRET)
    (tmp_path / "b.secret").chmod(0o600)
    write_cache(tmp_path / "roster.json", parse_roster(json.dumps(ROSTER)))
    text = "\n".join(["[site]", 'name = "t"', 'room = "t1"', "[store]", 'path = "vigil.db"',
                      "[mqtt]", f"port = {mosquitto.port}",
                      "[sync.booking]", 'url = "http://127.0.0.1:9/v1/events"', 'secret_file = "b.secret"',
                      'roster_url = "http://127.0.0.1:9/v1/rooms/t1/roster"']) + "\n"
    (tmp_path / "config.toml").write_text(text)
    cfg = parse_config(text, tmp_path / "config.toml")
    setup = build_destinations(cfg)
    store = RecordStore.open(tmp_path / "vigil.db")
    stop = asyncio.Event()
    got: list[dict[str, Any]] = []
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe("vigil/t1/roster", qos=1)
            task = asyncio.ensure_future(run_service(cfg, setup, store, stop=stop, roster_interval_s=0.2,
                                                     status_interval_s=0.2))

            async def first() -> None:
                async for m in client.messages:
                    got.append(json.loads(m.payload))
                    return
            await asyncio.wait_for(first(), 10)
            await asyncio.sleep(0.5)  # a few failed pulls: the cache stays in force
            stop.set()
            await asyncio.wait_for(task, 10)
    finally:
        stop.set()
        store.close()
    assert got[0]["guests"][0]["id"] == "P-1" and got[0]["room"] == "t1"
    assert parse_roster(json.dumps(got[0])) == load_cache(tmp_path / "roster.json")
    assert setup.roster.last_error is not None and "using the cached roster" in setup.roster.last_error
