"""Firmware profiles: one TOML per device model (firmware-profiles/*.toml), validated with pydantic.

A profile declares the transport, how to recognise the device (BLE name prefix, service UUIDs,
manufacturer id; USB VID:PID), which characteristics/streams go to which parser, the channels
(kind, unit, rate, scaling), start/keep-alive commands and serial line settings.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vigil.errors import ConfigError
from vigil.model import ChannelKind

BASE_UUID = "-0000-1000-8000-00805f9b34fb"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_USB = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$")


def full_uuid(value: str) -> str:
    """Expand a 16-bit UUID ("180d", "0x2A37") to the 128-bit form; lower-case everything."""
    v = value.strip().lower().removeprefix("0x")
    if re.fullmatch(r"[0-9a-f]{4}", v):
        return f"0000{v}{BASE_UUID}"
    if not _UUID.match(v):
        raise ValueError(f"not a UUID: {value!r}")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchRules(_Strict):
    """How a device is recognised; any rule that matches is enough."""

    name_prefix: list[str] = []
    service_uuids: list[str] = []
    manufacturer_id: int | None = Field(default=None, ge=0, le=0xFFFF)
    usb: list[str] = []  # "VID:PID" hex

    @field_validator("service_uuids")
    @classmethod
    def _uuids(cls, v: list[str]) -> list[str]:
        return [full_uuid(u) for u in v]

    @field_validator("usb")
    @classmethod
    def _usb(cls, v: list[str]) -> list[str]:
        for item in v:
            if not _USB.match(item):
                raise ValueError(f"USB id {item!r} must be VID:PID in hex, e.g. 10c4:ea60")
        return [i.lower() for i in v]


class Stream(_Strict):
    """One source of bytes: a BLE characteristic, or the serial byte stream, or a replay/simulated source."""

    name: str
    parser: str
    mode: Literal["notify", "indicate", "read", "stream", "file"] = "notify"
    service: str | None = None
    characteristic: str | None = None
    poll_s: float | None = Field(None, gt=0)  # for mode = "read"
    optional: bool = False  # device may lack it (e.g. ICP on some cuffs)

    @field_validator("service", "characteristic")
    @classmethod
    def _uuid(cls, v: str | None) -> str | None:
        return full_uuid(v) if v is not None else None

    @field_validator("parser")
    @classmethod
    def _known(cls, v: str) -> str:
        from vigil.edge.parsers.registry import known_parsers

        if v not in known_parsers():
            raise ValueError(f"unknown parser {v!r} (known: {', '.join(sorted(known_parsers()))})")
        return v


class Channel(_Strict):
    """A waveform channel: physical = samples * gain in `unit`."""

    name: str
    kind: ChannelKind
    unit: str
    fs: float = Field(gt=0, le=10_000)
    gain: float = Field(1.0, gt=0)


class Command(_Strict):
    """Bytes written at start (and re-sent every `repeat_s` as keep-alive)."""

    data: str | None = None  # hex bytes, spaces allowed
    builder: str | None = None  # name in COMMAND_BUILDERS
    characteristic: str | None = None  # BLE: where to write; serial: None
    repeat_s: float | None = Field(None, gt=0)
    on_stop: bool = False  # sent when stopping instead of at start

    @field_validator("characteristic")
    @classmethod
    def _uuid(cls, v: str | None) -> str | None:
        return full_uuid(v) if v is not None else None

    @field_validator("data")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                bytes.fromhex(v)
            except ValueError:
                raise ValueError(f"data {v!r} is not hex bytes") from None
        return v

    @field_validator("builder")
    @classmethod
    def _builder(cls, v: str | None) -> str | None:
        if v is not None and v not in COMMAND_BUILDERS:
            raise ValueError(f"unknown command builder {v!r} (known: {', '.join(sorted(COMMAND_BUILDERS))})")
        return v

    @model_validator(mode="after")
    def _one(self) -> Command:
        if (self.data is None) == (self.builder is None):
            raise ValueError("a command needs exactly one of `data` or `builder`")
        return self

    def payload(self) -> bytes:
        """The bytes to write."""
        if self.data is not None:
            return bytes.fromhex(self.data)
        assert self.builder is not None
        return COMMAND_BUILDERS[self.builder]()


class LineSettings(_Strict):
    """Serial line settings (pyserial names); overridable per device in config.toml `line`."""

    baudrate: int = Field(9600, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: float = 1  # 1, 1.5 or 2 (a Literal cannot hold 1.5 for the type checker)
    xonxoff: bool = False
    rtscts: bool = False

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, v: float) -> float:
        if v not in (1, 1.5, 2):
            raise ValueError("stopbits must be 1, 1.5 or 2")
        return v


class Profile(_Strict):
    """One firmware profile."""

    name: str
    description: str = ""
    transport: Literal["ble", "serial", "replay", "simulated"]
    match: MatchRules = MatchRules()
    streams: list[Stream] = Field(min_length=1)
    channels: list[Channel] = []
    commands: list[Command] = []
    line: LineSettings | None = None
    battery_poll_s: float | None = Field(None, gt=0)
    stale_after_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names repeat: {names}")
        if self.transport == "ble":
            for s in self.streams:
                if s.characteristic is None:
                    raise ValueError(f"BLE stream {s.name!r} needs `characteristic`")
                if s.mode in ("stream", "file"):
                    raise ValueError(f"BLE stream {s.name!r} mode must be notify, indicate or read")
        if self.transport == "serial":
            if self.line is None:
                raise ValueError("a serial profile needs [line] settings")
            if len(self.streams) != 1 or self.streams[0].mode != "stream":
                raise ValueError("a serial profile has exactly one stream with mode = \"stream\"")
        return self

    def channel(self, name: str) -> Channel | None:
        """The channel called `name`, if declared."""
        return next((c for c in self.channels if c.name == name), None)

    def matches_advertisement(self, name: str | None, service_uuids: list[str],
                              manufacturer_ids: list[int]) -> bool:
        """True when a BLE advertisement fits this profile's match rules."""
        m = self.match
        if name and any(name.startswith(p) for p in m.name_prefix):
            return True
        uuids = {u.lower() for u in service_uuids}
        if any(u in uuids for u in m.service_uuids):
            return True
        return m.manufacturer_id is not None and m.manufacturer_id in manufacturer_ids


def _builders() -> dict[str, Callable[[], bytes]]:
    from vigil.edge.parsers import cms50d, datex_s5, polar_pmd

    return {
        "pmd_start_ecg": lambda: polar_pmd.start_command(0, 130, 14),
        "pmd_stop_ecg": lambda: polar_pmd.stop_command(0),
        "cms50d_start": lambda: cms50d.START,
        "cms50d_stop": lambda: cms50d.STOP,
        "datex_numerics": lambda: datex_s5.frame(datex_s5.numerics_request(5)),
        "datex_ecg_waveform": lambda: datex_s5.frame(datex_s5.waveform_request()),
        "datex_stop_waveform": lambda: datex_s5.frame(datex_s5.waveform_request(start=False)),
    }


COMMAND_BUILDERS: dict[str, Callable[[], bytes]] = _builders()


def profiles_dir() -> Path:
    """$VIGIL_PROFILES, else firmware-profiles/ at the repository root."""
    env = os.environ.get("VIGIL_PROFILES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "firmware-profiles"


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """Validate TOML text; ConfigError names the file, key and line of each problem."""
    from vigil.config import _format_loc, _line_for, key_lines

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}", [("(syntax)", None, str(exc))]) from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        lines = key_lines(text)
        problems: list[tuple[str, int | None, str]] = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc[-1]!r}"
            elif err["type"] == "missing":
                msg = "required key is missing"
            problems.append((_format_loc(loc), _line_for(loc, lines), msg))
        summary = "; ".join(f"{k} (line {ln}): {m}" if ln else f"{k}: {m}" for k, ln, m in problems)
        raise ConfigError(f"{source}: {len(problems)} error(s): {summary}", problems) from None


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Load one profile file; its `name` must equal the file stem."""
    p = Path(path)
    profile = parse_profile(p.read_text(encoding="utf-8"), str(p))
    if profile.name != p.stem:
        raise ConfigError(f"{p}: name {profile.name!r} must equal the file name {p.stem!r}",
                          [("name", None, "must equal the file name")])
    return profile


def load_profiles(directory: str | os.PathLike[str] | None = None) -> dict[str, Profile]:
    """Load every *.toml of the profiles folder, keyed by name."""
    folder = Path(directory) if directory else profiles_dir()
    return {p.stem: load_profile(p) for p in sorted(folder.glob("*.toml"))}


def get_profile(name: str, directory: str | os.PathLike[str] | None = None) -> Profile:
    """Load the profile called `name`."""
    folder = Path(directory) if directory else profiles_dir()
    path = folder / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.toml")))
        raise ConfigError(f"unknown firmware profile {name!r} (known: {known})", [("profile", None, "unknown")])
    return load_profile(path)
