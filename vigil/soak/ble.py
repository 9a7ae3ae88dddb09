"""The soak's BLE radio: virtual pulse oximeters (0x1822) served to the daemon over HCI, on a thread.

The runner is synchronous, bumble is asyncio: `BleRadio` runs an `HciAirServer` (vigil.testing) on its own
event loop in a thread and offers blocking calls for the storm. The daemon reaches it through
``VIGIL_BLE_TEST_HCI=tcp-client:127.0.0.1:PORT`` (vigil/commands/run.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

PROFILE = "generic-pulse-oximeter"


def ble_address(i: int) -> str:
    """Address of the soak's i-th BLE oximeter."""
    return f"F3:50:AC:00:00:{i + 1:02X}"


class BleRadio:
    """`n` BLE pulse oximeters at `spo2` %, streaming at `speed` x, behind an HCI server on loopback."""

    def __init__(self, n: int, *, speed: float = 1.0, spo2: float = 82.0) -> None:
        self.n, self.speed, self.spo2 = n, speed, spo2
        self.addresses = [ble_address(i) for i in range(n)]
        self.port = 0
        self.toggles = 0
        self._powered = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None

    @property
    def spec(self) -> str:
        """The bumble transport name the daemon connects to."""
        return f"tcp-client:127.0.0.1:{self.port}"

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> BleRadio:
        """Start the loop thread, the peripherals and the server."""
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="soak-ble-radio", daemon=True)
        self._thread.start()
        self.port = self._call(self._setup())
        return self

    async def _setup(self) -> int:
        from vigil.testing.bumble_backend import HciAirServer, PulseOximeterPeripheral

        self._server = HciAirServer()
        for i, address in enumerate(self.addresses):
            await self._server.add(PulseOximeterPeripheral(address, name=f"Nonin3230-Soak{i + 1}", spo2=self.spo2,
                                                           pulse_rate=70, speed=self.speed))
        return int(await self._server.serve())

    def storm_step(self) -> None:
        """One step of a disconnect storm: powered -> drop the links (every 3rd step) or power off; off -> on."""
        self._call(self._step(), timeout=15.0)

    async def _step(self) -> None:
        peripherals = list(self._server.peripherals.values())
        if self._powered:
            if self.toggles % 3 == 0:  # a radio drop: the peripheral advertises again at once
                await asyncio.gather(*(p.drop_connections() for p in peripherals), return_exceptions=True)
            else:                      # out of range: silent until powered on
                await asyncio.gather(*(p.power_off() for p in peripherals), return_exceptions=True)
                self._powered = False
        else:
            await asyncio.gather(*(p.power_on() for p in peripherals), return_exceptions=True)
            self._powered = True
        self.toggles += 1

    def heal(self) -> None:
        """End of a storm: every peripheral powered on and advertising."""
        if not self._powered:
            self._call(self._heal(), timeout=15.0)

    async def _heal(self) -> None:
        await asyncio.gather(*(p.power_on() for p in self._server.peripherals.values()), return_exceptions=True)
        self._powered = True

    def stats(self) -> dict[str, int]:
        """Notifications sent, connections accepted by the peripherals, hosts (daemon runs) served."""
        ps = list(self._server.peripherals.values()) if self._server is not None else []
        return {"notifications": sum(p.notifications_sent for p in ps), "connections": sum(p.connections_seen for p in ps),
                "hosts": self._server.hosts_served if self._server is not None else 0, "storm_steps": self.toggles}

    def stop(self) -> None:
        """Close the server and stop the thread."""
        if self._loop is None:
            return
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._call(self._server.close(), timeout=15.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None
