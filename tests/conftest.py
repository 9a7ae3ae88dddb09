"""Shared fixtures: a real mosquitto on a free loopback port, and the record roots."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vigil.datasets import VENDORED_RECORDS
from vigil.datasets import data_root as _data_root
from vigil.edge.broker import Mosquitto


@dataclass
class Broker:
    """A running mosquitto: where it listens and the handle to stop/kill/restart it."""

    host: str
    port: int
    server: Mosquitto

    def restart(self) -> None:
        """Start again on the same port (after kill/stop)."""
        self.server.start()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """Start mosquitto on a free loopback port with a generated config in tmp; yields host/port."""
    server = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield Broker(server.host, server.port, server)
    finally:
        server.stop()


@pytest.fixture
def data_root() -> Path:
    """Root of the PhysioNet records ($VIGIL_DATA or ../shared/data); skips when absent."""
    root = _data_root()
    if not root.is_dir():
        pytest.skip(f"PhysioNet records not found at {root} (set VIGIL_DATA)")
    return root


@pytest.fixture
def vendored_records() -> Path:
    """The records shipped in vigil/data/records (always present)."""
    return VENDORED_RECORDS
