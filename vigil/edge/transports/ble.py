"""BLE transport over bleak: re-discover, connect, subscribe per profile, start commands, battery polls.

`backend`/`scanner_backend` are bleak backend classes (None = the platform's BlueZ backend); tests pass
the bumble backend from vigil.testing.bumble_backend with `backend_kwargs={"air": air}`.
Simultaneous links per adapter are capped with a per-adapter semaphore held for the link's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from vigil.edge.parsers.registry import packet_parser
from vigil.edge.profiles import Profile, full_uuid
from vigil.edge.transports.base import QueueTransport, Stamper
from vigil.errors import ParseError, TransportError

log = logging.getLogger(__name__)

BATTERY_LEVEL = full_uuid("2a19")
MAX_LINKS_PER_ADAPTER = 7  # BlueZ + common controllers handle ~7 LE links reliably (e.g. Pi 4's CYW43455)

_adapters: dict[str, asyncio.Semaphore] = {}


def adapter_slots(adapter: str, limit: int = MAX_LINKS_PER_ADAPTER) -> asyncio.Semaphore:
    """The semaphore capping simultaneous links on `adapter` (created on first use)."""
    sem = _adapters.get(adapter)
    if sem is None:
        sem = _adapters[adapter] = asyncio.Semaphore(limit)
    return sem


def reset_adapter_slots() -> None:
    """Forget adapter semaphores (tests create a fresh event loop per test)."""
    _adapters.clear()


class BleTransport(QueueTransport):
    """One BLE link to one device, driven by its firmware profile."""

    def __init__(self, device_id: str, profile: Profile, address: str, stamper: Stamper, *,
                 backend: type | None = None, scanner_backend: type | None = None,
                 backend_kwargs: dict[str, Any] | None = None, adapter: str = "hci0",
                 rediscover: bool = True, scan_timeout_s: float = 5.0, connect_timeout_s: float = 10.0,
                 battery_poll_s: float | None = None, slot_timeout_s: float = 30.0) -> None:
        super().__init__(device_id)
        if profile.transport != "ble":
            raise TransportError(f"profile {profile.name!r} is not a BLE profile")
        self.profile = profile
        self.address = address
        self.stamper = stamper
        self.backend = backend
        self.scanner_backend = scanner_backend
        self.backend_kwargs = dict(backend_kwargs or {})
        self.adapter = adapter
        self.rediscover = rediscover
        self.scan_timeout_s = scan_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.battery_poll_s = battery_poll_s if battery_poll_s is not None else profile.battery_poll_s
        self.slot_timeout_s = slot_timeout_s
        self.client: Any = None
        self._slot: asyncio.Semaphore | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def open(self) -> None:
        """Take an adapter slot, re-discover, connect, subscribe and send start commands."""
        from bleak import BleakClient, BleakScanner
        from bleak.exc import BleakError

        sem = adapter_slots(self.adapter)
        try:
            async with asyncio.timeout(self.slot_timeout_s):  # not wait_for: 3.11 can swallow a cancel there
                await sem.acquire()
        except TimeoutError:
            raise TransportError(f"{self.adapter}: all link slots busy") from None
        self._slot = sem
        target: Any = self.address
        try:
            if self.rediscover:
                scan_kwargs: dict[str, Any] = dict(self.backend_kwargs)
                if self.scanner_backend is not None:
                    scan_kwargs["backend"] = self.scanner_backend
                found = await BleakScanner.find_device_by_address(self.address, timeout=self.scan_timeout_s,
                                                                  **scan_kwargs)
                if found is None:
                    raise TransportError(f"{self.address} is not advertising")
                target = found
            kwargs: dict[str, Any] = dict(self.backend_kwargs)
            if self.backend is not None:
                kwargs["backend"] = self.backend
            self.client = BleakClient(target, disconnected_callback=self._on_disconnect,
                                      timeout=self.connect_timeout_s, **kwargs)
            await self.client.connect()
            await self._subscribe()
            for cmd in self.profile.commands:
                if not cmd.on_stop and cmd.characteristic:
                    await self.client.write_gatt_char(cmd.characteristic, cmd.payload(), response=True)
            if self.battery_poll_s:
                self._tasks.append(asyncio.create_task(self._poll(BATTERY_LEVEL, "battery", self.battery_poll_s)))
        except BleakError as exc:
            raise TransportError(f"{self.address}: {exc}") from None
        except (TimeoutError, OSError) as exc:
            raise TransportError(f"{self.address}: {exc!r}") from None
        log.info("%s: BLE link up (mtu %s)", self.device_id, getattr(self.client, "mtu_size", "?"))

    async def _subscribe(self) -> None:
        services = self.client.services
        for s in self.profile.streams:
            char = services.get_characteristic(s.characteristic)
            if char is None:
                if s.optional:
                    continue
                raise TransportError(f"{self.address} lacks characteristic {s.characteristic} ({s.name})")
            if s.mode == "read":
                self._tasks.append(asyncio.create_task(self._poll(char.uuid, s.parser, s.poll_s or 60.0)))
                continue
            parse = packet_parser(s.parser)
            await self.client.start_notify(char, self._callback(parse))
        # the PMD control point answers through indications: subscribe when the profile writes to it
        for cmd in self.profile.commands:
            if cmd.characteristic:
                char = services.get_characteristic(cmd.characteristic)
                if char is not None and "indicate" in char.properties:
                    await self.client.start_notify(char, self._on_control)

    def _callback(self, parse: Any) -> Any:
        def on_value(_char: Any, data: bytearray) -> None:
            try:
                items = parse(bytes(data))
            except ParseError as exc:
                self.parse_errors += 1
                log.debug("%s: %s", self.device_id, exc)
                return
            self.put(self.stamper.stamp(items))

        return on_value

    def _on_control(self, _char: Any, data: bytearray) -> None:
        from vigil.edge.parsers.polar_pmd import parse_control_response

        try:
            resp = parse_control_response(bytes(data))
        except ParseError:
            return
        if not resp.ok and resp.status != 6:  # 6 = already streaming: fine
            log.warning("%s: control point refused op %d: %s", self.device_id, resp.op, resp.status_text)
            self.fail(f"control point refused op {resp.op}: {resp.status_text}")

    async def _poll(self, uuid: str, parser: str, every: float) -> None:
        parse = packet_parser(parser)
        while True:
            try:
                data = await self.client.read_gatt_char(uuid)
                self.put(self.stamper.stamp(parse(bytes(data))))
            except ParseError:
                self.parse_errors += 1
            except Exception as exc:  # noqa: BLE001 - a failed poll is not fatal; the link watchdog decides
                log.debug("%s: poll %s failed: %s", self.device_id, uuid, exc)
            await asyncio.sleep(every)

    def _on_disconnect(self, _client: Any) -> None:
        if not self._closing:
            self.fail("disconnected")

    async def close(self) -> None:
        """Stop polls, send stop commands, disconnect, free the adapter slot."""
        self._closing = True
        for t in self._tasks:
            t.cancel()
        # gather, not `suppress(CancelledError)`: the tasks' cancellations are collected, ours is not swallowed
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                if client.is_connected:
                    for cmd in self.profile.commands:
                        if cmd.on_stop and cmd.characteristic:
                            async with asyncio.timeout(2):
                                await client.write_gatt_char(cmd.characteristic, cmd.payload(), response=True)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await client.disconnect()
        if self._slot is not None:
            self._slot.release()
            self._slot = None


BATTERY_SERVICE = full_uuid("180f")


async def read_battery(device: Any, *, timeout: float = 6.0, backend: type | None = None,
                       backend_kwargs: dict[str, Any] | None = None) -> int | None:
    """Connect briefly and read Battery Level 0x2A19 (None when the device has none or does not answer)."""
    from bleak import BleakClient

    from vigil.edge.parsers.battery import parse_battery

    kwargs: dict[str, Any] = dict(backend_kwargs or {})
    if backend is not None:
        kwargs["backend"] = backend
    try:
        async with asyncio.timeout(timeout):
            async with BleakClient(device, timeout=timeout, **kwargs) as client:
                if client.services.get_characteristic(BATTERY_LEVEL) is None:
                    return None
                return parse_battery(bytes(await client.read_gatt_char(BATTERY_LEVEL)))
    except Exception as exc:  # noqa: BLE001 - a scan lists what it can; one silent device must not end it
        log.debug("battery read failed: %s", type(exc).__name__)
        return None


async def scan(timeout: float = 8.0, scanner_backend: type | None = None,
               backend_kwargs: dict[str, Any] | None = None, *, battery: bool = False,
               client_backend: type | None = None, battery_timeout: float = 6.0) -> list[dict[str, Any]]:
    """Scan and return [{address, name, rssi, profile, service_uuids, manufacturer_ids, battery}] by RSSI.

    With `battery`, each device matched to a profile is connected to briefly (one at a time) and its
    Battery Level read; `battery` is None when it was not asked for, absent or unreadable.
    """
    from bleak import BleakScanner

    from vigil.edge.profiles import load_profiles

    profiles = [p for p in load_profiles().values() if p.transport == "ble"]
    kwargs: dict[str, Any] = dict(backend_kwargs or {})
    if scanner_backend is not None:
        kwargs["backend"] = scanner_backend
    found = await BleakScanner.discover(timeout=timeout, return_adv=True, **kwargs)
    out = []
    for device, adv in found.values():
        match = next((p.name for p in profiles
                      if p.matches_advertisement(adv.local_name or device.name, adv.service_uuids,
                                                 list(adv.manufacturer_data))), None)
        level = None
        if battery and match is not None:
            level = await read_battery(device, timeout=battery_timeout, backend=client_backend,
                                       backend_kwargs=backend_kwargs)
        out.append({"address": device.address, "name": adv.local_name or device.name, "rssi": adv.rssi,
                    "profile": match, "service_uuids": adv.service_uuids,
                    "manufacturer_ids": sorted(adv.manufacturer_data), "battery": level})
    return sorted(out, key=lambda d: -d["rssi"])
