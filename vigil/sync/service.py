"""Wiring of `vigil sync`: destinations from the config, secrets, the single-instance lock, the loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.clock import SystemClock
from vigil.config import VigilConfig, read_secret
from vigil.errors import SyncError
from vigil.sync.status import MqttPublisher, roster_topic, status_topic, write_status_file
from vigil.sync.worker import Destination, SyncWorker

log = logging.getLogger(__name__)

LOCK_FILE = "vigil-sync.lock"
STATUS_FILE = "sync-status.json"


@dataclass
class SyncSetup:
    """Everything `vigil sync` runs with."""

    destinations: list[Destination]
    roster: Any = None  # RosterPuller | None
    extras: dict[str, Any] = field(default_factory=dict)


def _secret(cfg: VigilConfig, filename: str, what: str) -> str:
    return read_secret(cfg, filename, what=what).decode("utf-8").strip()


def broker_login(cfg: VigilConfig) -> tuple[str | None, str | None]:
    """The sync process's broker (username, password): [mqtt.sync] when configured, else [mqtt]'s."""
    user, pw_file = cfg.mqtt_credentials("sync")
    what = "mqtt.sync.password_file" if cfg.mqtt.sync is not None else "mqtt.password_file"
    return user, (_secret(cfg, pw_file, what) if pw_file else None)


def build_destinations(cfg: VigilConfig) -> SyncSetup:
    """Destinations for every configured cloud service; a missing secret raises SecretError naming it."""
    from vigil.sync.booking import BookingDestination
    from vigil.sync.fhir import FhirDestination
    from vigil.sync.messaging import SendgridDestination, TwilioDestination
    from vigil.sync.oauth import ClientCredentials
    from vigil.sync.outcome import make_session
    from vigil.sync.roster import RosterPuller, cache_path

    def ca(value: str | None) -> str | None:
        return str(cfg.resolve_path(value)) if value else None

    out = SyncSetup([])
    s = cfg.sync
    if s.booking:
        secret = _secret(cfg, s.booking.secret_file, "sync.booking.secret_file").encode()
        sess = make_session(ca(s.booking.ca_file))
        out.destinations.append(BookingDestination(s.booking.url, secret, session=sess, batch_size=s.booking.batch_size))
        if s.booking.roster_url:
            out.roster = RosterPuller(s.booking.roster_url, secret, session=sess,
                                      cache=cache_path(cfg.resolve_path(cfg.store.path)))
    if s.fhir:
        sess = make_session(ca(s.fhir.ca_file))
        auth = None
        if s.fhir.token_url:
            if not (s.fhir.client_id and s.fhir.client_secret_file):
                raise SyncError("sync.fhir.token_url is set: client_id and client_secret_file are needed too")
            auth = ClientCredentials(s.fhir.token_url, s.fhir.client_id,
                                     _secret(cfg, s.fhir.client_secret_file, "sync.fhir.client_secret_file"),
                                     session=sess)
        out.destinations.append(FhirDestination(s.fhir.base_url, session=sess, auth=auth))
    if s.sendgrid:
        out.destinations.append(SendgridDestination(
            s.sendgrid.base_url, _secret(cfg, s.sendgrid.api_key_file, "sync.sendgrid.api_key_file"),
            s.sendgrid.from_email, session=make_session(ca(s.sendgrid.ca_file))))
    tw = cfg.escalation.twilio
    if tw:
        out.destinations.append(TwilioDestination(
            tw.base_url, tw.account_sid, _secret(cfg, tw.auth_token_file, "escalation.twilio.auth_token_file"),
            tw.from_number, session=make_session(ca(tw.ca_file)), timeout_s=tw.timeout_s))
    return out


def store_key(cfg: VigilConfig) -> bytes | None:
    """The store key (needed to open sealed outbox payloads), or None."""
    if not cfg.store.key_file:
        return None
    from vigil.store.crypto import parse_key

    return parse_key(read_secret(cfg, cfg.store.key_file, what="store.key_file"), source="store.key_file")


@contextlib.contextmanager
def single_instance(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock so only one `vigil sync` drains this store."""
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SyncError(f"another `vigil sync` is already running on this store (lock {path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


async def run_service(cfg: VigilConfig, setup: SyncSetup, store: Any, *, stop: asyncio.Event,
                      drain: bool = False, status_interval_s: float = 1.0, roster_interval_s: float = 30.0,
                      idle_poll_s: float = 1.0) -> int:
    """Run the worker, the status/roster publishers and the roster pull until `stop` (or drained)."""
    from vigil.sync.connectivity import ConnectivityProbe

    probe = ConnectivityProbe(cfg.sync.probe_url) if cfg.sync.probe_url else None
    worker = SyncWorker(store, setup.destinations, clock=SystemClock(), max_backoff_s=cfg.sync.max_backoff_s,
                        probe=probe, idle_poll_s=idle_poll_s)
    folder = cfg.resolve_path(cfg.store.path).parent
    room = cfg.site.room
    mqtt_user, mqtt_password = broker_login(cfg)
    mqtt = MqttPublisher(cfg.mqtt.host, cfg.mqtt.port, username=mqtt_user, password=mqtt_password,
                         client_id=f"vigil-sync-{room}")
    setup.extras["worker"] = worker
    setup.extras["mqtt"] = mqtt

    def publish_roster(roster: Any) -> None:
        mqtt.offer(roster_topic(room), {"v": 1, **roster.model_dump(mode="json")})

    async def status_loop() -> None:
        while not stop.is_set():
            try:
                st = await asyncio.to_thread(worker.status)
                st["worker"] = {"pid": os.getpid(), "online": probe.online if probe else None}
                write_status_file(folder / STATUS_FILE, st)
                mqtt.offer(status_topic(room), st)
            except Exception as exc:  # noqa: BLE001 - status is best effort
                log.warning("status update failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), status_interval_s)

    async def roster_loop() -> None:
        from vigil.sync.roster import RosterError

        puller = setup.roster
        if puller.current is not None:
            publish_roster(puller.current)
        while not stop.is_set():
            try:
                new = await asyncio.to_thread(puller.fetch)
                puller.last_error = None
                if new is not None:
                    publish_roster(new)
            except RosterError as exc:
                if str(exc) != puller.last_error:
                    log.error("%s", exc)
                puller.last_error = str(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), roster_interval_s)

    tasks = [asyncio.ensure_future(worker.run(stop)), asyncio.ensure_future(status_loop()),
             asyncio.ensure_future(mqtt.run(stop))]
    if setup.roster is not None:
        tasks.append(asyncio.ensure_future(roster_loop()))
    log.info("vigil sync running: %s", ", ".join(d.name for d in setup.destinations) or "no destinations")
    try:
        if drain:
            while not stop.is_set():
                if await asyncio.to_thread(worker.drained):
                    break
                await asyncio.sleep(0.1)
            await asyncio.to_thread(worker.outbox_stats, fresh=True)
            write_status_file(folder / STATUS_FILE, await asyncio.to_thread(worker.status))
            stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
    return 0


def run_sync(cfg: VigilConfig, *, drain: bool = False, roster_interval_s: float = 30.0) -> int:
    """Entry of `vigil sync`: open the store, hold the lock, run until SIGTERM/SIGINT."""
    import signal

    from vigil.store import RecordStore

    setup = build_destinations(cfg)  # secrets first: a missing one stops here with its name
    key = store_key(cfg)
    store_path = cfg.resolve_path(cfg.store.path)
    with single_instance(store_path.parent):
        store = RecordStore.open(store_path, key=key)
        try:
            async def main() -> int:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, stop.set)
                return await run_service(cfg, setup, store, stop=stop, drain=drain,
                                         roster_interval_s=roster_interval_s)
            t0 = time.monotonic()
            rc = asyncio.run(main())
            log.info("vigil sync stopped after %.1f s", time.monotonic() - t0)
            return rc
        finally:
            store.close()
