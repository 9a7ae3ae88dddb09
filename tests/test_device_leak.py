"""20 devices connecting and disconnecting repeatedly: no growth in tasks, file descriptors, threads or RSS.

10 BLE devices (bleak + bumble: Polar ECG, heart-rate straps, pulse oximeters, BP cuffs, on two adapters),
6 CMS50D+ on pseudo-terminals and 4 Datex S/5 over socket://, each under a real DeviceSupervisor.
One round unplugs all 20 and plugs them back (one reconnect per device); resources are compared
between two moments when all 20 are streaming. The hour-long version is
`python -m vigil.testing.device_fleet --minutes 60` (see README "Monitors").
"""

from __future__ import annotations

import pytest

from vigil.testing.device_fleet import DeviceFleet, snapshot

pytestmark = pytest.mark.timeout(150)

ROUNDS = 6


async def test_twenty_devices_reconnecting_do_not_leak(tmp_path) -> None:
    fleet = await DeviceFleet.start(n_ble=10, n_pty=6, n_socket=4, workdir=tmp_path)
    try:
        assert len(fleet.devices) == 20
        await fleet.wait_streaming(40)
        await fleet.churn(2)  # warm-up: caches, first-use allocations, lazily created adapter slots
        before = snapshot()
        totals_before = fleet.totals()
        await fleet.churn(ROUNDS)
        after = snapshot()
        totals = fleet.totals()
    finally:
        await fleet.close()
    reconnects = totals["connects"] - totals_before["connects"]
    assert reconnects >= 20 * ROUNDS  # every device really went down and came back each round
    assert totals["samples"] > totals_before["samples"] and totals["readings"] > totals_before["readings"]
    assert totals["gaps"] >= 20  # lost time is recorded (ECG/pleth channels)
    assert totals["corrupt_frames"] > 0  # the CMS50 emulators inject truncated packets: counted, not fatal
    # a leak of one object per reconnect would show as >= 120 here
    assert after.tasks <= before.tasks + 3, (before, after)
    assert after.fds <= before.fds + 3, (before, after)
    assert after.threads <= before.threads, (before, after)
    assert after.rss_mb <= before.rss_mb + 12, (before, after)


async def test_fleet_close_leaves_nothing_running(tmp_path) -> None:
    import asyncio

    start = snapshot()
    fleet = await DeviceFleet.start(n_ble=2, n_pty=1, n_socket=1, workdir=tmp_path)
    await fleet.wait_streaming(30)
    await fleet.close()
    await asyncio.sleep(0.3)
    end = snapshot()
    left = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [n for n in left if n.startswith(("supervisor-", "pump-", "fleet-consumer-"))], left
    assert end.threads <= start.threads
    assert end.fds <= start.fds + 2, (start, end)
