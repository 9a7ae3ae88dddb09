"""`vigil run --config FILE`: the monitoring daemon (acquisition, analysis, alarms, store, bus)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

HELP = "run the monitoring daemon (acquisition, analysis, alarms, store, bus)"
TEST_HCI_ENV = "VIGIL_BLE_TEST_HCI"  # tests/soak only: BLE through a bumble test radio served over HCI

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the daemon's options."""
    parser.add_argument("--config", "-c", required=True, metavar="FILE", help="config.toml to run")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop after S seconds (default: run until SIGTERM/SIGINT)")
    parser.add_argument("--speed", type=float, default=None, metavar="X",
                        help="override the speed of every replayed device (× real time)")


def run(args: argparse.Namespace) -> int:
    """Load the config and run the daemon until SIGTERM/SIGINT."""
    from vigil.config import load_config
    from vigil.edge.daemon import run_daemon

    cfg = load_config(args.config)
    spec = os.environ.get(TEST_HCI_ENV)
    ble_options = _test_radio(spec) if spec else None
    return run_daemon(cfg, duration_s=args.duration, speed=args.speed, ble_options=ble_options)


def _test_radio(spec: str) -> dict[str, Any]:
    """BleTransport options reaching every BLE device through vigil.testing's bumble backend over `spec`."""
    from vigil.testing.bumble_backend import BumbleClient, BumbleScanner, RemoteAir

    log.warning("%s is set: BLE devices are reached through a TEST radio (%s), not a Bluetooth adapter",
                TEST_HCI_ENV, spec)
    return {"backend": BumbleClient, "scanner_backend": BumbleScanner, "backend_kwargs": {"air": RemoteAir(spec)}}
