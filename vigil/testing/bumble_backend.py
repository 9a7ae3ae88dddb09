"""A bleak backend over bumble's in-process LocalLink: real ATT/GATT to virtual peripherals.

This machine (and CI) has no Bluetooth kernel support, so instead of BlueZ the "radio" is a bumble
`LocalLink` shared by one central controller (our adapter) and virtual peripherals that advertise and
serve real GATT databases. Application code uses bleak's own API unchanged::

    air = VirtualAir(); await air.start()
    h10 = await air.add(PolarEcgPeripheral("F1:00:00:00:00:01"))
    async with BleakClient("F1:00:00:00:00:01", backend=BumbleClient, air=air) as client:
        await client.start_notify(PMD_DATA, callback)
    devices = await BleakScanner.discover(timeout=1, backend=BumbleScanner, air=air)

Peripherals: Heart Rate (0x180D), Blood Pressure (0x1810), Pulse Oximeter (0x1822) and a
Polar-PMD-like ECG service (protocols.md §2, §5a), each with Battery (0x180F).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device, Peer
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from vigil.edge.parsers import polar_pmd
from vigil.edge.parsers.sfloat import encode_sfloat

log = logging.getLogger(__name__)

CENTRAL_ADDRESS = "F0:F0:F0:F0:F0:F0"
PMD_MTU = 232


def _uuid128(u: UUID) -> str:
    return str(u.to_hex_str("-")).lower() if len(u.uuid_bytes) == 16 else f"0000{u.to_hex_str().lower()}-0000-1000-8000-00805f9b34fb"


# ============================================================================ the air

class VirtualAir:
    """One LocalLink with a central (the adapter) and any number of virtual peripherals."""

    default: VirtualAir | None = None

    def __init__(self) -> None:
        self.link = LocalLink()
        self.central = self._device(CENTRAL_ADDRESS, "vigil-central")
        self.peripherals: dict[str, VirtualPeripheral] = {}
        self._scanners = 0
        self._scan_lock = asyncio.Lock()
        self.connect_lock = asyncio.Lock()  # one pending LE Create Connection per controller, as in HCI

    def _device(self, address: str, name: str) -> Device:
        controller = Controller(name, link=self.link, public_address=address)
        return Device(name=name, address=Address(address), host=Host(controller, AsyncPipeSink(controller)))

    async def start(self) -> VirtualAir:
        """Power on the central."""
        await self.central.power_on()
        VirtualAir.default = self
        return self

    async def add(self, peripheral: VirtualPeripheral) -> VirtualPeripheral:
        """Create, power on and start advertising a peripheral."""
        peripheral.device = self._device(peripheral.address, peripheral.name)
        peripheral.build()
        await peripheral.device.power_on()
        await peripheral.advertise()
        self.peripherals[peripheral.address.upper()] = peripheral
        return peripheral

    async def scan_acquire(self) -> None:
        """Start scanning (reference-counted: several bleak scanners share the controller)."""
        async with self._scan_lock:
            self._scanners += 1
            if self._scanners == 1:
                await self.central.start_scanning(filter_duplicates=False)

    async def scan_release(self) -> None:
        """Stop scanning when the last scanner stops."""
        async with self._scan_lock:
            self._scanners = max(0, self._scanners - 1)
            if self._scanners == 0:
                with contextlib.suppress(Exception):
                    await self.central.stop_scanning()

    async def close(self) -> None:
        """Stop every peripheral."""
        for p in self.peripherals.values():
            await p.stop()
        if VirtualAir.default is self:
            VirtualAir.default = None


async def _ready(air: VirtualAir) -> None:
    """Let an air that connects lazily (RemoteAir) open its HCI transport; VirtualAir is ready once started."""
    ensure = getattr(air, "ensure_started", None)
    if ensure is not None:
        try:
            await ensure()
        except (OSError, ConnectionError) as exc:
            raise BleakError(f"test radio unreachable: {exc}") from None


def _air(kwargs: dict[str, Any]) -> VirtualAir:
    air = kwargs.get("air") or VirtualAir.default
    if air is None:
        raise BleakError("no VirtualAir: pass air=... or start one first")
    return air


# ============================================================================ bleak backend: scanner

class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend: real advertising reports from the LocalLink."""

    def __init__(self, detection_callback: Any, service_uuids: list[str] | None, scanning_mode: str = "active",
                 **kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)
        self._air = _air(kwargs)
        self._scanning = False

    def _on_advertisement(self, adv: Any) -> None:
        data: AdvertisingData = adv.data
        name_raw = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(AdvertisingData.SHORTENED_LOCAL_NAME)
        name = name_raw.decode() if isinstance(name_raw, bytes) else name_raw
        uuids: list[str] = []
        for t in (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                  AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                  AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS):
            for u in data.get_all(t) or []:
                for x in (u if isinstance(u, list) else [u]):
                    uuids.append(_uuid128(x))
        manufacturer: dict[int, bytes] = {}
        for m in data.get_all(AdvertisingData.MANUFACTURER_SPECIFIC_DATA) or []:
            company, payload = m
            manufacturer[int(company)] = bytes(payload)
        uuids = list(dict.fromkeys(uuids))
        if not self.is_allowed_uuid(uuids):
            return
        address = str(adv.address).split("/")[0]
        ad = AdvertisementData(name, manufacturer, {}, uuids, None, int(adv.rssi), (adv,))
        device = self.create_or_update_device(address, address, name, adv, ad)
        self.call_detection_callbacks(device, ad)

    async def start(self) -> None:
        """Start receiving advertisements."""
        self.seen_devices = {}
        await _ready(self._air)
        self._air.central.on("advertisement", self._on_advertisement)
        await self._air.scan_acquire()
        self._scanning = True

    async def stop(self) -> None:
        """Stop receiving advertisements."""
        if self._scanning:
            self._scanning = False
            self._air.central.remove_listener("advertisement", self._on_advertisement)
            await self._air.scan_release()


# ============================================================================ bleak backend: client

_PROPS = [(Characteristic.Properties.BROADCAST, "broadcast"), (Characteristic.Properties.READ, "read"),
          (Characteristic.Properties.WRITE_WITHOUT_RESPONSE, "write-without-response"),
          (Characteristic.Properties.WRITE, "write"), (Characteristic.Properties.NOTIFY, "notify"),
          (Characteristic.Properties.INDICATE, "indicate"),
          (Characteristic.Properties.AUTHENTICATED_SIGNED_WRITES, "authenticated-signed-writes"),
          (Characteristic.Properties.EXTENDED_PROPERTIES, "extended-properties")]


class BumbleClient(BaseBleakClient):
    """bleak client backend: connect, discover, read, write and subscribe over real ATT."""

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=kwargs.get("disconnected_callback"),
                         timeout=kwargs.get("timeout", 10.0))
        self._air = _air(kwargs)
        self._conn: Connection | None = None
        self._peer: Peer | None = None
        self._mtu = 23

    @property
    def name(self) -> str:
        """Peer name (the address; GAP name is not read)."""
        return self.address

    @property
    def mtu_size(self) -> int:
        """Negotiated ATT MTU."""
        return self._mtu

    @property
    def is_connected(self) -> bool:
        """True while the LE connection is up."""
        return self._conn is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Create the LE connection, negotiate MTU, discover the whole GATT database."""
        await _ready(self._air)
        if self.address.upper() not in self._air.peripherals:
            raise BleakDeviceNotFoundError(self.address, f"device {self.address} not found")
        try:
            async with self._air.connect_lock:
                conn = await asyncio.wait_for(self._air.central.connect(Address(self.address)), self._timeout)
        except (TimeoutError, Exception) as exc:
            raise BleakError(f"connect to {self.address} failed: {exc}") from None
        self._conn = conn
        conn.on("disconnection", self._on_disconnection)
        peer = self._peer = Peer(conn)
        try:
            self._mtu = await peer.request_mtu(PMD_MTU)
            await peer.discover_services()
            services = BleakGATTServiceCollection()
            for s in peer.services:
                await s.discover_characteristics()
                bs = BleakGATTService(s, s.handle, _uuid128(s.uuid))
                services.add_service(bs)
                for c in s.characteristics:
                    await c.discover_descriptors()
                    props = [n for flag, n in _PROPS if c.properties & flag]
                    bc = BleakGATTCharacteristic(c, c.handle, _uuid128(c.uuid), props,  # type: ignore[arg-type]
                                                 lambda: self._mtu - 3, bs)
                    services.add_characteristic(bc)
                    for d in c.descriptors:
                        services.add_descriptor(BleakGATTDescriptor(d, d.handle, _uuid128(d.type), bc))
            self.services = services
        except Exception:
            await self.disconnect()
            raise

    def _on_disconnection(self, reason: int) -> None:
        was = self._conn is not None
        self._conn = None
        self._peer = None
        if was and self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        """Disconnect (no callback: only unsolicited disconnections call it)."""
        conn, self._conn, self._peer = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Not needed by the virtual peripherals."""
        log.debug("pairing is not emulated")

    async def unpair(self) -> None:
        """Not needed by the virtual peripherals."""
        log.debug("pairing is not emulated")

    def _need_peer(self) -> Peer:
        if self._peer is None:
            raise BleakError("not connected")
        return self._peer

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False,
                             **kwargs: Any) -> bytearray:
        """ATT read."""
        return bytearray(await self._need_peer().read_value(characteristic.obj))

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False,
                                   **kwargs: Any) -> bytearray:
        """ATT read of a descriptor."""
        return bytearray(await self._need_peer().read_value(descriptor.handle))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: Any, response: bool) -> None:
        """ATT write (request or command)."""
        await self._need_peer().write_value(characteristic.obj, bytes(data), with_response=response)

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        """ATT write of a descriptor."""
        await self._need_peer().write_value(descriptor.handle, bytes(data), with_response=True)

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback,
                           **kwargs: Any) -> None:
        """Write the CCCD; notifications preferred over indications."""
        await self._need_peer().subscribe(characteristic.obj, lambda v: callback(bytearray(v)), prefer_notify=True)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        """Clear the CCCD."""
        await self._need_peer().unsubscribe(characteristic.obj)


# ============================================================================ virtual peripherals

class VirtualPeripheral:
    """A peripheral: GATT database, advertising, a streaming task, battery level."""

    services_adv: tuple[str, ...] = ()
    manufacturer_id: int | None = None

    def __init__(self, address: str, name: str, speed: float = 1.0, battery: int = 85) -> None:
        self.address = address
        self.name = name
        self.speed = speed
        self.battery_level = battery
        self.device: Device = None  # type: ignore[assignment]
        self.battery_char = Characteristic("2A19", Characteristic.Properties.READ | Characteristic.Properties.NOTIFY,
                                           Characteristic.READABLE, CharacteristicValue(read=lambda _c: bytes((self.battery_level,))))
        self._task: asyncio.Task[None] | None = None
        self.notifications_sent = 0
        self.connections_seen = 0

    def services(self) -> list[Service]:
        """The GATT services (battery added by build)."""
        raise NotImplementedError

    def build(self) -> None:
        """Add services and connection handlers to the bumble device."""
        self.device.add_services([*self.services(), Service("180F", [self.battery_char])])
        self.device.on("connection", self._on_connection)
        ad: list[tuple[int, bytes]] = [(AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode())]
        if self.services_adv:
            ad.append((AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                       b"".join(bytes(UUID(u)) for u in self.services_adv)))
        if self.manufacturer_id is not None:
            ad.append((AdvertisingData.MANUFACTURER_SPECIFIC_DATA, self.manufacturer_id.to_bytes(2, "little") + b"\x00"))
        self.device.advertising_data = bytes(AdvertisingData(ad))

    def _on_connection(self, conn: Connection) -> None:
        self.connections_seen += 1
        conn.on("disconnection", lambda _r: self._on_disconnection())
        if self._task is None:
            self._task = asyncio.create_task(self.stream(), name=f"peripheral-{self.address}")

    def _on_disconnection(self) -> None:
        if not self.device.connections and self._task is not None:
            self._task.cancel()
            self._task = None
        self.on_disconnected()

    def on_disconnected(self) -> None:
        """Reset per-connection state."""

    async def advertise(self) -> None:
        """Advertise (re-started automatically after each disconnection)."""
        await self.device.start_advertising(auto_restart=True, advertising_interval_min=20, advertising_interval_max=20)

    async def drop_connections(self) -> None:
        """Disconnect every central (a radio drop seen from the peripheral)."""
        for conn in list(self.device.connections.values()):
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def power_off(self) -> None:
        """Stop advertising and drop connections (walked out of range)."""
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()
        self.device.auto_restart_advertising = False
        await self.drop_connections()

    async def power_on(self) -> None:
        """Advertise again."""
        await self.advertise()

    async def stop(self) -> None:
        """Stop streaming and go silent."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.power_off()

    async def notify(self, char: Characteristic, value: bytes) -> None:
        """Notify every subscribed central."""
        await self.device.notify_subscribers(char, value)
        self.notifications_sent += 1

    async def stream(self) -> None:
        """Per-connection behaviour (notifications)."""

    async def tick(self, seconds: float) -> None:
        """Sleep `seconds` of device time (scaled by `speed`)."""
        await asyncio.sleep(seconds / self.speed)

    async def until_subscribed(self, *chars: Characteristic, poll_s: float = 0.01) -> None:
        """Wait (real time) until a connected central has enabled notifications or indications of one of `chars`."""
        while not any(cccds.get(c.handle, b"\x00\x00")[0] & 0x03
                      for cccds in self.device.gatt_server.subscribers.values() for c in chars):
            await asyncio.sleep(poll_s)


class HeartRatePeripheral(VirtualPeripheral):
    """Heart Rate Service strap: HRM with contact and RR every second."""

    services_adv = ("180D",)

    def __init__(self, address: str, name: str = "HRM-Sim", heart_rate: int = 72, **kw: Any) -> None:
        super().__init__(address, name, **kw)
        self.heart_rate = heart_rate
        self.contact = True
        self.hrm = Characteristic("2A37", Characteristic.Properties.NOTIFY, 0, b"")

    def services(self) -> list[Service]:
        """Heart Rate service."""
        return [Service("180D", [self.hrm, Characteristic("2A38", Characteristic.Properties.READ, Characteristic.READABLE, b"\x01")])]

    def measurement(self) -> bytes:
        """Encode one HRM (u8 HR, contact bits, one RR)."""
        rr = round(60.0 / self.heart_rate * 1024)
        flags = 0x04 | (0x02 if self.contact else 0) | 0x10
        return bytes((flags, self.heart_rate)) + rr.to_bytes(2, "little")

    async def stream(self) -> None:
        """One HRM per second."""
        while True:
            await self.tick(1.0)
            await self.notify(self.hrm, self.measurement())


class BloodPressurePeripheral(VirtualPeripheral):
    """Blood Pressure Service cuff: on connection, an inflation (ICP) then one indicated measurement."""

    services_adv = ("1810",)

    def __init__(self, address: str, name: str = "BP-Sim", reading: tuple[float, float, float, float] = (120, 80, 93, 72),
                 **kw: Any) -> None:
        super().__init__(address, name, **kw)
        self.reading = reading
        self.bpm = Characteristic("2A35", Characteristic.Properties.INDICATE, 0, b"")
        self.icp = Characteristic("2A36", Characteristic.Properties.NOTIFY, 0, b"")

    def services(self) -> list[Service]:
        """Blood Pressure service."""
        return [Service("1810", [self.bpm, self.icp, Characteristic("2A49", Characteristic.Properties.READ, Characteristic.READABLE, b"\x00\x00")])]

    async def stream(self) -> None:
        """Once the central listens to the cuff pressure, inflate (ICP every 0.2 s) then indicate the result; every 30 s.

        Waiting for the subscription (not a fixed delay after connecting) keeps a slow central from missing
        the first pressures: like a cuff whose measurement is started once the station is connected.  A
        central that subscribes to the measurement only starts it too.
        """
        nan = encode_sfloat(math.nan)
        await self.until_subscribed(self.icp, self.bpm)
        while True:
            await self.tick(0.5)
            for p in (40, 80, 120, 160, 140, 110, 90):
                await self.notify(self.icp, b"\x00" + encode_sfloat(p) + nan + nan)
                await self.tick(0.2)
            s, d, m, pr = self.reading
            value = bytes((0x04,)) + encode_sfloat(s) + encode_sfloat(d) + encode_sfloat(m) + encode_sfloat(pr)
            await self.device.indicate_subscribers(self.bpm, value)
            self.notifications_sent += 1
            await self.tick(30.0)


class PulseOximeterPeripheral(VirtualPeripheral):
    """Pulse Oximeter Service: PLX continuous at `rate_hz` with status and PAI."""

    services_adv = ("1822",)

    def __init__(self, address: str, name: str = "Nonin3230-Sim", spo2: float = 97, pulse_rate: float = 68,
                 rate_hz: float = 1.0, **kw: Any) -> None:
        super().__init__(address, name, **kw)
        self.spo2, self.pulse_rate, self.rate_hz = spo2, pulse_rate, rate_hz
        self.sensor_off = False
        self.cont = Characteristic("2A5F", Characteristic.Properties.NOTIFY, 0, b"")
        self.spot = Characteristic("2A5E", Characteristic.Properties.INDICATE, 0, b"")

    def services(self) -> list[Service]:
        """Pulse Oximeter service."""
        return [Service("1822", [self.spot, self.cont, Characteristic("2A60", Characteristic.Properties.READ, Characteristic.READABLE, b"\x00\x00")])]

    def measurement(self) -> bytes:
        """Continuous measurement with status, device/sensor status and PAI."""
        dev = (1 << 15) if self.sensor_off else 0
        return (b"\x1c" + encode_sfloat(self.spo2) + encode_sfloat(self.pulse_rate) + (1 << 5).to_bytes(2, "little")
                + dev.to_bytes(3, "little") + encode_sfloat(2.5))

    async def stream(self) -> None:
        """Notify continuously."""
        while True:
            await self.tick(1.0 / self.rate_hz)
            await self.notify(self.cont, self.measurement())


class PolarEcgPeripheral(VirtualPeripheral):
    """Polar-H10-like strap: PMD control point + data (ECG 130 Hz, 73 samples per frame), HR service."""

    manufacturer_id = 107
    SAMPLES_PER_FRAME = 73

    def __init__(self, address: str, name: str = "Polar H10 SIM00001", heart_rate: float = 60.0, **kw: Any) -> None:
        super().__init__(address, name, **kw)
        self.heart_rate = heart_rate
        self.streaming = False
        self.charging = False
        self.k = 0
        self.t0_ns = time.time_ns()
        self._mono0 = time.monotonic()
        self.control = Characteristic(polar_pmd.PMD_CONTROL, Characteristic.Properties.READ | Characteristic.Properties.WRITE
                                      | Characteristic.Properties.INDICATE, Characteristic.READABLE | Characteristic.WRITEABLE,
                                      CharacteristicValue(read=lambda _c: b"\x0f\x05\x00", write=self._on_control))
        self.data = Characteristic(polar_pmd.PMD_DATA, Characteristic.Properties.NOTIFY, 0, b"")
        self.hrm = Characteristic("2A37", Characteristic.Properties.NOTIFY, 0, b"")
        self.commands: list[bytes] = []

    def services(self) -> list[Service]:
        """PMD service and Heart Rate service."""
        return [Service(polar_pmd.PMD_SERVICE, [self.control, self.data]), Service("180D", [self.hrm])]

    def _on_control(self, _conn: Connection, value: bytes) -> None:
        value = bytes(value)
        self.commands.append(value)
        op = value[0] if value else 0
        mtype = value[1] if len(value) > 1 else 0
        if self.charging:
            status = 13
        elif op == polar_pmd.OP_START:
            status = 6 if self.streaming else (0 if mtype == 0 else 3)
            self.streaming = self.streaming or status == 0
        elif op == polar_pmd.OP_STOP:
            status, self.streaming = 0, False
        else:
            status = 1
        asyncio.get_running_loop().create_task(
            self.device.indicate_subscribers(self.control, bytes((0xF0, op, mtype, status, 0))))

    def on_disconnected(self) -> None:
        """The H10 stops measurement when the link drops."""
        self.streaming = False

    def ecg(self, k: int) -> int:
        """Synthetic µV sample k: an R spike per beat on a small baseline wander."""
        t = k / 130.0
        phase = (t * self.heart_rate / 60.0) % 1.0
        return int(1200 * math.exp(-((phase - 0.3) / 0.015) ** 2) + 150 * math.exp(-((phase - 0.6) / 0.06) ** 2)
                   + 30 * math.sin(2 * math.pi * 0.25 * t))

    def device_index(self) -> int:
        """Index of the sample the (free-running) device clock is at now."""
        return int((time.monotonic() - self._mono0) * self.speed * 130.0)

    async def stream(self) -> None:
        """While started: 73-sample frames as the device clock advances; one HRM per second regardless.

        The device clock keeps running while disconnected, so samples of a dropped link are lost (a gap).
        """
        frame_s = self.SAMPLES_PER_FRAME / 130.0
        next_hr = 0.0
        elapsed = 0.0
        self.k = self.device_index()
        while True:
            await self.tick(frame_s)
            elapsed += frame_s
            target = self.device_index()
            if not self.streaming:
                self.k = target
            while self.streaming and target - self.k >= self.SAMPLES_PER_FRAME:
                samples = [self.ecg(self.k + i) for i in range(self.SAMPLES_PER_FRAME)]
                self.k += self.SAMPLES_PER_FRAME
                last_ns = self.t0_ns + round((self.k - 1) * 1e9 / 130.0)
                await self.notify(self.data, polar_pmd.ecg_frame(samples, last_ns))
            if elapsed >= next_hr:
                next_hr += 1.0
                rr = round(60.0 / self.heart_rate * 1024)
                await self.notify(self.hrm, bytes((0x16, int(self.heart_rate))) + rr.to_bytes(2, "little"))


PeripheralFactory = Callable[..., VirtualPeripheral]


# ============================================================================ the air across processes

class RemoteAir(VirtualAir):
    """The VirtualAir interface for a central whose controller lives in another process, reached over HCI.

    `spec` is a bumble transport name, e.g. ``tcp-client:127.0.0.1:PORT`` served by `HciAirServer`. The
    transport opens lazily on first use (the daemon builds its BLE options before its event loop runs);
    `peripherals` holds the addresses the central has heard advertising, so `BumbleClient.connect` can
    refuse an address that was never seen, as it does in-process.
    """

    def __init__(self, spec: str) -> None:  # noqa: D107 - VirtualAir.__init__ is deliberately not called
        self.spec = spec
        self.central: Device = None  # type: ignore[assignment]
        self.peripherals: dict[str, Any] = {}  # type: ignore[assignment]
        self._scanners = 0
        self._scan_lock = asyncio.Lock()
        self.connect_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._transport: Any = None

    async def ensure_started(self) -> None:
        """Open the HCI transport and power the central on (once; OSError when nobody serves `spec`)."""
        if self.central is not None:
            return
        async with self._start_lock:
            if self.central is not None:
                return
            from bumble.transport import open_transport

            transport = await open_transport(self.spec)
            try:
                device = Device.with_hci("vigil-central", Address(CENTRAL_ADDRESS), transport.source, transport.sink)
                device.on("advertisement", self._heard)
                await asyncio.wait_for(device.power_on(), 10.0)
            except BaseException:
                await transport.close()
                raise
            self._transport, self.central = transport, device
            log.info("test radio: central up over %s", self.spec)

    def _heard(self, adv: Any) -> None:
        self.peripherals.setdefault(str(adv.address).split("/")[0].upper(), None)

    async def start(self) -> RemoteAir:
        """Connect now instead of on first use."""
        await self.ensure_started()
        return self

    async def add(self, peripheral: VirtualPeripheral) -> VirtualPeripheral:
        """Peripherals live with the server, not here."""
        raise BleakError("RemoteAir cannot host peripherals: add them to the HciAirServer")

    async def close(self) -> None:
        """Close the HCI transport."""
        transport, self._transport, self.central = self._transport, None, None  # type: ignore[assignment]
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close()


class _HostLink(asyncio.Protocol):
    """One host (a daemon) connected over TCP: bytes in to its controller, HCI packets out."""

    def __init__(self, server: HciAirServer) -> None:
        from bumble.transport.common import StreamPacketSource

        self.server = server
        self.source = StreamPacketSource()  # a fresh H4 parser per host: a killed host may die mid-packet
        self.transport: asyncio.Transport | None = None
        self.controller: Controller | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._attach(self)

    def data_received(self, data: bytes) -> None:
        self.source.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server._detach(self)

    def on_packet(self, packet: bytes) -> None:
        if self.transport is not None:
            self.transport.write(packet)


class HciAirServer:
    """Virtual peripherals on a LocalLink, and the central's controller served to one host at a time over TCP.

    Each host connection gets a fresh `Controller` (bumble's HCI Reset does not clear links); when the host
    goes away (a SIGKILLed daemon) every peripheral's connection to it is dropped, so they advertise again,
    and its controller leaves the link. The peripherals keep streaming as before; only the central moved.
    """

    def __init__(self) -> None:
        self.link = LocalLink()
        self.peripherals: dict[str, VirtualPeripheral] = {}
        self.hosts_served = 0
        self._host: _HostLink | None = None
        self._server: asyncio.Server | None = None
        self._cleanups: set[asyncio.Task[None]] = set()

    async def add(self, peripheral: VirtualPeripheral) -> VirtualPeripheral:
        """Create, power on and start advertising a peripheral."""
        controller = Controller(peripheral.name, link=self.link, public_address=peripheral.address)
        peripheral.device = Device(name=peripheral.name, address=Address(peripheral.address),
                                   host=Host(controller, AsyncPipeSink(controller)))
        peripheral.build()
        await peripheral.device.power_on()
        await peripheral.advertise()
        self.peripherals[peripheral.address.upper()] = peripheral
        return peripheral

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen for the host; returns the port (spec for the client: ``tcp-client:HOST:PORT``)."""
        self._server = await asyncio.get_running_loop().create_server(lambda: _HostLink(self), host, port)
        return int(self._server.sockets[0].getsockname()[1])

    def _attach(self, link: _HostLink) -> None:
        if self._host is not None and self._host.transport is not None:
            log.warning("a second HCI host connected: the first one is dropped")
            self._host.transport.close()
        link.controller = Controller(f"central-{self.hosts_served + 1}", host_source=link.source, host_sink=link,
                                     link=self.link, public_address=CENTRAL_ADDRESS)
        self._host = link
        self.hosts_served += 1

    def _detach(self, link: _HostLink) -> None:
        if self._host is link:
            self._host = None
        task = asyncio.get_running_loop().create_task(self._forget(link))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _forget(self, link: _HostLink) -> None:
        """The host is gone: peripherals drop their links to it, then its controller leaves the air."""
        for p in self.peripherals.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.drop_connections(), 5.0)
        if link.controller is not None:
            with contextlib.suppress(KeyError):
                self.link.remove_controller(link.controller)
            link.controller = None

    async def close(self) -> None:
        """Stop serving and silence every peripheral."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._host is not None and self._host.transport is not None:
            self._host.transport.close()
        await asyncio.sleep(0)  # let connection_lost schedule the last host's cleanup
        if self._cleanups:  # its link drops first: a peripheral's host runs one HCI command at a time
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        for p in self.peripherals.values():
            with contextlib.suppress(Exception):
                await p.stop()
