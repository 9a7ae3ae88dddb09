"""Firmware profiles load, validate, and fail with errors that name file, key and line."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from vigil.cli import main
from vigil.config import parse_config
from vigil.edge.profiles import get_profile, load_profile, load_profiles, parse_profile, profiles_dir
from vigil.errors import ConfigError

REQUIRED = {"polar-h10", "generic-heart-rate", "generic-blood-pressure", "generic-pulse-oximeter",
            "contec-cms50d-plus", "datex-s5", "replay-wfdb", "replay-bidmc", "simulated-ecg"}


def test_shipped_profiles_load() -> None:
    profiles = load_profiles()
    assert set(profiles) >= REQUIRED
    h10 = profiles["polar-h10"]
    assert h10.transport == "ble" and h10.match.manufacturer_id == 107
    assert h10.streams[0].characteristic == "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
    assert h10.streams[1].characteristic == "00002a37-0000-1000-8000-00805f9b34fb"
    assert h10.channel("ecg").fs == 130
    start = [c for c in h10.commands if not c.on_stop][0].payload()
    assert start == bytes.fromhex("0200000182000101 0e00".replace(" ", ""))
    cms = profiles["contec-cms50d-plus"]
    assert cms.line.baudrate == 115200 and cms.commands[0].repeat_s == 15
    assert cms.commands[0].payload() == bytes.fromhex("7d81a1808080808080")
    assert profiles["datex-s5"].line.parity == "E" and profiles["datex-s5"].commands[0].payload()[0] == 0x7E


def test_advertisement_matching() -> None:
    p = load_profiles()
    assert p["polar-h10"].matches_advertisement("Polar H10 ABCD1234", [], [])
    assert p["polar-h10"].matches_advertisement(None, [], [107])
    assert p["generic-heart-rate"].matches_advertisement("X", ["0000180d-0000-1000-8000-00805f9b34fb"], [])
    assert not p["generic-blood-pressure"].matches_advertisement("Polar H10", ["0000180d-0000-1000-8000-00805f9b34fb"], [])


GOOD = """name = "x"
transport = "ble"
[[streams]]
name = "hr"
characteristic = "2a37"
parser = "heart_rate"
"""


def test_unknown_parser_is_an_error_naming_key_and_line() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_profile(GOOD.replace('"heart_rate"', '"hart_rate"'), "x.toml")
    key, line, msg = ei.value.problems[0]
    assert key == "streams[0].parser" and line == 6 and "unknown parser 'hart_rate'" in msg
    assert "x.toml" in str(ei.value)


@pytest.mark.parametrize(("text", "key"), [
    (GOOD + "colour = 1\n", "streams[0].colour"),
    (GOOD.replace('transport = "ble"', 'transport = "radio"'), "transport"),
    (GOOD.replace('"2a37"', '"zz"'), "streams[0].characteristic"),
    (GOOD + "[match]\nusb = ['10c4-ea60']\n", "match.usb"),
    (GOOD + "[[commands]]\ndata = '7d 81'\nbuilder = 'cms50d_start'\n", "commands[0]"),
    (GOOD + "[[commands]]\nbuilder = 'nope'\n", "commands[0].builder"),
    (GOOD.replace('transport = "ble"', 'transport = "serial"'), "(top level)"),
])
def test_invalid_profiles(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_profile(text, "bad.toml")
    assert ei.value.problems[0][0] == key


def test_name_must_match_file(tmp_path: Path) -> None:
    (tmp_path / "y.toml").write_text(GOOD)
    with pytest.raises(ConfigError, match="must equal the file name"):
        load_profile(tmp_path / "y.toml")
    with pytest.raises(ConfigError, match="unknown firmware profile 'nope'"):
        get_profile("nope", profiles_dir())


def test_cli_devices_profiles_lists_all() -> None:
    out = subprocess.run([sys.executable, "-m", "vigil", "devices", "profiles"], capture_output=True, text=True,
                         check=True).stdout
    for name in REQUIRED:
        assert name in out
    assert "polar_pmd_ecg" in out


# --------------------------------------------------------------------------- vigil devices pair / scan

CONFIG = """# my room
[site]
name = "Room"  # keep me
room = "r1"

[[devices]]
id = "ecg1"
profile = "polar-h10"
address = "AA:BB:CC:DD:EE:01"

[[guests]]
mat = "m1"
name = "Guest One"
devices = ["ecg1"]  # straps

[[guests]]
mat = "m2"
name = "Guest Two"
"""


def test_pair_adds_device_and_keeps_comments(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG)
    assert main(["devices", "pair", "m2", "ox2", "--profile", "contec-cms50d-plus", "--port", "usb:10c4:ea60",
                 "--config", str(cfg)]) == 0
    assert main(["devices", "pair", "m1", "ecg1", "--profile", "generic-heart-rate", "--address", "AA:BB:CC:DD:EE:09",
                 "--config", str(cfg)]) == 0
    text = cfg.read_text()
    assert "# my room" in text and "# keep me" in text and "# straps" in text
    data = tomllib.loads(text)
    assert data["devices"][0] == {"id": "ecg1", "profile": "generic-heart-rate", "address": "AA:BB:CC:DD:EE:09"}
    assert data["devices"][1] == {"id": "ox2", "profile": "contec-cms50d-plus", "port": "usb:10c4:ea60"}
    assert data["guests"][1]["devices"] == ["ox2"] and data["guests"][0]["devices"] == ["ecg1"]
    parse_config(text)


def test_pair_refuses_unknown_guest_and_profile(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG)
    assert main(["devices", "pair", "m9", "x", "--profile", "polar-h10", "--address", "A", "--config", str(cfg)]) == 2
    assert main(["devices", "pair", "m2", "x", "--profile", "nope", "--address", "A", "--config", str(cfg)]) == 2
    assert cfg.read_text() == CONFIG


def test_scan_without_adapter_says_so(capsys) -> None:
    assert main(["devices", "scan", "--timeout", "0.5"]) == 2
    assert "no usable Bluetooth adapter" in capsys.readouterr().err
