"""config.toml schema (pydantic, extra="forbid") and loading with errors that name key and line.

Secrets are never written inline: every secret field ends in ``_file`` and names a file, looked
up in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) first, then relative to the config
file's folder. A key such as ``password = "..."`` is an unknown key, and the error says which
``*_file`` key to use instead. See ``config.toml`` at the top of the repository for a complete
commented example, and ``vigil check-config FILE`` for the command that reports every problem.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import stat
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from vigil.errors import ConfigError, SecretError

Loc = tuple[str | int, ...]
Problem = tuple[str, int | None, str]  # (key path, 1-based line or None, message)


class KeyedValueError(ValueError):
    """A validation failure that names the exact keys at fault, relative to the model raising it."""

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(f"{_format_loc(loc)}: {msg}" for loc, msg in problems))
        self.problems = problems


class Strict(BaseModel):
    """Base model: unknown keys are errors, values are not coerced across types ("50" is not 50)."""

    model_config = ConfigDict(extra="forbid", frozen=False, strict=True)


# --------------------------------------------------------------------------- thresholds

_BAND_FIELDS = ("warning_low", "warning_high", "critical_low", "critical_high")


def band_problems(values: dict[str, float | None], blame: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """Contradictions in one band as (field, message); the field blamed is one in `blame` when possible."""
    wl, wh = values.get("warning_low"), values.get("warning_high")
    cl, ch = values.get("critical_low"), values.get("critical_high")

    def pick(first: str, second: str) -> str:
        return first if first in blame or second not in blame else second

    out: list[tuple[str, str]] = []
    if wl is not None and wh is not None and wl >= wh:
        out.append((pick("warning_low", "warning_high"),
                    f"warning_low ({wl:g}) must be below warning_high ({wh:g})"))
    if cl is not None and ch is not None and cl >= ch:
        out.append((pick("critical_low", "critical_high"),
                    f"critical_low ({cl:g}) must be below critical_high ({ch:g})"))
    if cl is not None and wl is not None and cl > wl:
        out.append((pick("warning_low", "critical_low"),
                    f"warning_low ({wl:g}) is below critical_low ({cl:g}): the warning limit must lie "
                    "between normal and the critical limit (warning_low >= critical_low)"))
    if ch is not None and wh is not None and ch < wh:
        out.append((pick("warning_high", "critical_high"),
                    f"warning_high ({wh:g}) is above critical_high ({ch:g}): the warning limit must lie "
                    "between normal and the critical limit (warning_high <= critical_high)"))
    return out


class Band(Strict):
    """Warning (medium) and critical (high) limits of one metric; None = no limit on that side."""

    warning_low: float | None = Field(default=None, ge=0)
    warning_high: float | None = Field(default=None, ge=0)
    critical_low: float | None = Field(default=None, ge=0)
    critical_high: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Band:
        problems = band_problems(self.model_dump(), set(self.model_fields_set))
        if problems:
            raise KeyedValueError([((f,), m) for f, m in problems])
        return self

    def merged(self, override: Band | None) -> Band:
        """This band with the limits given in `override` replaced (None in an override means "not given")."""
        if override is None:
            return self
        data = self.model_dump()
        data.update(override.model_dump(exclude_unset=True, exclude_none=True))
        return Band.model_validate(data)


# Seed table of DESIGN §6 (+ SpO2). A band written in config.toml replaces only the keys it names.
SEED_BANDS: dict[str, dict[str, float | None]] = {
    "hr": {"warning_low": 50, "warning_high": 100, "critical_low": 40, "critical_high": 120},
    "qtc": {"warning_low": None, "warning_high": 450, "critical_low": None, "critical_high": 500},
    "sbp": {"warning_low": 90, "warning_high": 150, "critical_low": 80, "critical_high": 180},
    "spo2": {"warning_low": 90, "warning_high": None, "critical_low": 85, "critical_high": None},
}
_METRICS = tuple(SEED_BANDS)


class Thresholds(Strict):
    """Alarm limits. Defaults are the seed table of DESIGN §6; keys left out keep the seed value."""

    hr: Band = Band(warning_low=50, warning_high=100, critical_low=40, critical_high=120)
    qtc: Band = Band(warning_high=450, critical_high=500)
    sbp: Band = Band(warning_low=90, warning_high=150, critical_low=80, critical_high=180)
    spo2: Band = Band(warning_low=90, critical_low=85)
    qtc_rise_ms: float = Field(default=60.0, gt=0, description="rise of QTc over the guest's baseline that raises a high alarm")

    @model_validator(mode="after")
    def _over_seed(self) -> Thresholds:
        problems: list[tuple[Loc, str]] = []
        for metric in _METRICS:
            band: Band = getattr(self, metric)
            given = band.model_dump(exclude_unset=True)
            if set(given) == set(_BAND_FIELDS):
                continue
            merged = dict(SEED_BANDS[metric]) | given
            found = band_problems(merged, set(given))
            if found:
                problems += [((metric, f), f"{m} (keys not given keep the seed value)") for f, m in found]
            else:
                setattr(self, metric, Band.model_validate(merged))
        if problems:
            raise KeyedValueError(problems)
        return self

    def merged(self, override: ThresholdOverrides | None) -> Thresholds:
        """Apply a guest's overrides field by field."""
        if override is None:
            return self
        return Thresholds(
            hr=self.hr.merged(override.hr), qtc=self.qtc.merged(override.qtc),
            sbp=self.sbp.merged(override.sbp), spo2=self.spo2.merged(override.spo2),
            qtc_rise_ms=override.qtc_rise_ms if override.qtc_rise_ms is not None else self.qtc_rise_ms)


class ThresholdOverrides(Strict):
    """Per-guest overrides; only the fields given replace the defaults."""

    hr: Band | None = None
    qtc: Band | None = None
    sbp: Band | None = None
    spo2: Band | None = None
    qtc_rise_ms: float | None = Field(default=None, gt=0)


class ConditionSettings(Strict):
    """Override of one alarm condition's behaviour (by stable condition id)."""

    enabled: bool = True
    priority: Literal["high", "medium", "low"] | None = None
    delay_s: float | None = Field(default=None, ge=0, le=600)
    latching: bool | None = None


class AlarmSettings(Strict):
    """Alarm engine defaults."""

    thresholds: Thresholds = Thresholds()
    audio_pause_s: float = Field(default=120.0, gt=0, le=900)
    alarm_off_reminder_s: float = Field(default=600.0, gt=0)
    hr_delay_s: float = Field(default=2.0, ge=0, le=10)  # + ~7 s analysis averaging at a 80->130 step: total <= 10 s
    spo2_delay_s: float = Field(default=6.0, ge=0, le=30)
    qtc_delay_s: float = Field(default=60.0, ge=0)
    stale_after_s: float = Field(default=5.0, gt=0)
    low_battery_percent: float = Field(default=15.0, ge=0, le=100)
    conditions: dict[str, ConditionSettings] = {}
    sound_device: str = "default"
    sound_enabled: bool = True


# --------------------------------------------------------------------------- people, devices

E164 = r"^\+[1-9]\d{6,14}$"


class Contact(Strict):
    """Someone who may be messaged (PHI-free identifiers only in logs)."""

    name: str
    role: Literal["on_call", "backup", "clinician"] = "on_call"
    phone: str | None = Field(default=None, pattern=E164, description="E.164")
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

    @model_validator(mode="after")
    def _reachable(self) -> Contact:
        if self.phone is None and self.email is None:
            raise KeyedValueError([(("phone",), "a contact needs a phone (E.164) or an email")])
        return self


class LadderStep(Strict):
    """Escalation timers for one priority, in seconds unacknowledged."""

    on_call_after_s: float | None = Field(default=None, ge=0)
    backup_after_s: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> LadderStep:
        if (self.on_call_after_s is not None and self.backup_after_s is not None
                and self.backup_after_s < self.on_call_after_s):
            raise KeyedValueError([(("backup_after_s",), f"backup_after_s ({self.backup_after_s:g}) must not be "
                                    f"before on_call_after_s ({self.on_call_after_s:g})")])
        return self


class TwilioSettings(Strict):
    """Twilio-style SMS REST API."""

    base_url: str = "https://api.twilio.com"
    account_sid: str
    from_number: str = Field(pattern=E164)
    auth_token_file: str
    timeout_s: float = Field(default=5.0, gt=0)
    ca_file: str | None = None


class ModemSettings(Strict):
    """GSM modem on a serial port (AT commands, text mode)."""

    port: str  # /dev/ttyUSB2, or a pyserial URL such as socket://127.0.0.1:7000
    baudrate: int = 115200
    parity: Literal["N", "E", "O"] = "N"
    pin_file: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)


class EscalationSettings(Strict):
    """Who is messaged, when, and through which channels."""

    contacts: list[Contact] = []
    high: LadderStep = LadderStep(on_call_after_s=30, backup_after_s=90)
    medium: LadderStep = LadderStep(on_call_after_s=120, backup_after_s=300)
    low: LadderStep = LadderStep()
    min_interval_per_contact_s: float = Field(default=60.0, ge=0)
    twilio: TwilioSettings | None = None
    modem: ModemSettings | None = None


DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class DeviceConfig(Strict):
    """One monitor: a firmware profile plus where to find it."""

    id: DeviceId
    profile: str  # name of a firmware-profiles/*.toml (e.g. "polar-h10", "replay-wfdb")
    address: str | None = None  # BLE address
    port: str | None = None  # serial port path, pyserial URL, or "usb:VID:PID"
    record: str | None = None  # replay: path to a WFDB record (no extension) or BIDMC CSV
    channel: int | str | None = None  # replay: which signal (index or name)
    speed: float = Field(default=1.0, gt=0, le=1000)  # replay speed (× real time)
    loop: bool = True  # replay: start again at the end
    start_s: float = Field(default=0.0, ge=0)  # replay: offset into the record
    heart_rate: float | None = Field(default=None, gt=10, lt=300)  # simulated ECG
    line: dict[str, Any] = {}  # serial line settings override (baudrate, parity, ...)

    @model_validator(mode="after")
    def _where(self) -> DeviceConfig:
        if self.profile.startswith("replay") and not self.record:
            raise KeyedValueError([(("record",), "a replay device needs `record` (path of a WFDB record "
                                    "without extension, or of a BIDMC CSV)")])
        return self


class GuestConfig(Strict):
    """A guest on a mat."""

    mat: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,16}$")]
    name: str = Field(min_length=1, max_length=80)
    devices: list[str] = []
    baseline_qtc_ms: float | None = Field(default=None, gt=250, lt=700)
    thresholds: ThresholdOverrides | None = None
    conditions: dict[str, ConditionSettings] = {}


class Operator(Strict):
    """A facilitator allowed to acknowledge/pause alarms."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
    secret_file: str | None = None  # shared secret for signing commands (HMAC-SHA256)
    may_alarm_off: bool = False
    mqtt_password_file: str | None = None  # this operator's dashboard broker password (broker user = name)


# --------------------------------------------------------------------------- infrastructure

class SiteConfig(Strict):
    """Where this box is."""

    name: str
    room: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]


class StoreConfig(Strict):
    """Record store."""

    path: str = "/var/lib/vigil/vigil.db"
    key_file: str | None = None  # 32-byte AES-256 key (raw or hex); encrypts waveforms and PHI
    commit_interval_s: float = Field(default=1.0, gt=0, le=10)
    chunk_seconds: float = Field(default=2.0, ge=1, le=10)
    min_free_mb: float = Field(default=200.0, ge=0)


class MqttRole(Strict):
    """Broker credentials of one process role other than the daemon (e.g. `vigil sync`)."""

    username: str
    password_file: str | None = None


class MqttConfig(Strict):
    """The room's broker; `username`/`password_file` are the daemon's (per-role users: mosquitto-vigil.acl)."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, gt=0, lt=65536)
    username: str | None = None
    password_file: str | None = None
    tls_ca_file: str | None = None
    keepalive_s: int = Field(default=10, ge=2, le=600)
    sync: MqttRole | None = None  # `vigil sync`'s read-only broker user; None = the daemon's credentials


class BookingSync(Strict):
    """Booking platform events API."""

    url: str
    secret_file: str  # HMAC signing secret
    roster_url: str | None = None
    batch_size: int = Field(default=100, ge=1, le=1000)
    ca_file: str | None = None


class FhirSync(Strict):
    """EMR (FHIR R4) endpoint."""

    base_url: str
    token_url: str | None = None
    client_id: str | None = None
    client_secret_file: str | None = None
    ca_file: str | None = None
    vitals_window_s: int = Field(default=60, ge=5, le=3600, multiple_of=5,
                                 description="one FHIR vitals Observation per metric per window (median of the 5-s samples)")


class SendgridSettings(Strict):
    """SendGrid-style email API."""

    base_url: str = "https://api.sendgrid.com"
    api_key_file: str
    from_email: str
    ca_file: str | None = None


class SyncConfig(Strict):
    """Cloud destinations; any may be left out."""

    booking: BookingSync | None = None
    fhir: FhirSync | None = None
    sendgrid: SendgridSettings | None = None
    probe_url: str | None = None
    max_backoff_s: float = Field(default=300.0, gt=0)


class VigilConfig(Strict):
    """The whole config.toml."""

    site: SiteConfig
    store: StoreConfig = StoreConfig()
    mqtt: MqttConfig = MqttConfig()
    alarms: AlarmSettings = AlarmSettings()
    escalation: EscalationSettings = EscalationSettings()
    operators: list[Operator] = []
    devices: list[DeviceConfig] = []
    guests: list[GuestConfig] = []
    sync: SyncConfig = SyncConfig()

    # path of the file this was loaded from (not part of the TOML)
    source_path: Path | None = Field(default=None, exclude=True)

    # Cross-table checks are field validators so that they run (and report) even when another
    # table has errors; each sees the tables declared before it that validated.
    @field_validator("operators")
    @classmethod
    def _unique_operators(cls, operators: list[Operator]) -> list[Operator]:
        _raise_relative("operators", _duplicates("operators", [o.name for o in operators], "name"))
        return operators

    @field_validator("devices")
    @classmethod
    def _unique_devices(cls, devices: list[DeviceConfig]) -> list[DeviceConfig]:
        _raise_relative("devices", _duplicates("devices", [d.id for d in devices], "id"))
        return devices

    @field_validator("guests")
    @classmethod
    def _guest_references(cls, guests: list[GuestConfig], info: ValidationInfo) -> list[GuestConfig]:
        _raise_relative("guests", guest_problems(guests, info.data.get("alarms"), info.data.get("devices")))
        return guests

    def thresholds_for(self, mat: str) -> Thresholds:
        """Effective thresholds of one guest."""
        guest = self.guest(mat)
        return self.alarms.thresholds.merged(guest.thresholds if guest else None)

    def guest(self, mat: str) -> GuestConfig | None:
        """The guest on `mat`, if any."""
        return next((g for g in self.guests if g.mat == mat), None)

    def device(self, device_id: str) -> DeviceConfig | None:
        """The device with `device_id`, if any."""
        return next((d for d in self.devices if d.id == device_id), None)

    def mqtt_credentials(self, role: Literal["daemon", "sync", "dashboard"],
                         operator: str | None = None) -> tuple[str | None, str | None]:
        """Broker (username, password_file) of a process role.

        daemon: [mqtt]; sync: [mqtt.sync] when given; dashboard: the operator's name with its
        `mqtt_password_file` when given. A role without its own credentials uses [mqtt]'s.
        """
        m = self.mqtt
        if role == "sync" and m.sync is not None:
            return m.sync.username, m.sync.password_file
        if role == "dashboard" and operator is not None:
            op = next((o for o in self.operators if o.name == operator), None)
            if op is not None and op.mqtt_password_file:
                return op.name, op.mqtt_password_file
        return m.username, m.password_file

    def resolve_path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(os.path.expandvars(value)).expanduser()
        if not p.is_absolute() and self.source_path is not None:
            p = self.source_path.parent / p
        return p


def _raise_relative(field: str, problems: list[tuple[Loc, str]]) -> None:
    if problems:
        raise KeyedValueError([(loc[1:] if loc[:1] == (field,) else loc, msg) for loc, msg in problems])


def _duplicates(field: str, items: list[str], what: str) -> list[tuple[Loc, str]]:
    first: dict[str, int] = {}
    out: list[tuple[Loc, str]] = []
    for i, item in enumerate(items):
        if item in first:
            out.append(((field, i, what), f"{what} {item!r} is already used by {field}[{first[item]}]"))
        else:
            first[item] = i
    return out


def guest_problems(guests: list[GuestConfig], alarms: AlarmSettings | None,
                   devices: list[DeviceConfig] | None) -> list[tuple[Loc, str]]:
    """Duplicate mats, dangling or shared device references, and per-guest thresholds that contradict
    the global ones once merged. `alarms`/`devices` None (they had errors) skips those checks."""
    problems = _duplicates("guests", [g.mat for g in guests], "mat")
    ids = {d.id for d in devices} if devices is not None else None
    owner: dict[str, int] = {}
    for i, g in enumerate(guests):
        for j, dev in enumerate(g.devices):
            if ids is not None and dev not in ids:
                known = ", ".join(sorted(ids)) or "none"
                problems.append((("guests", i, "devices", j), f"unknown device {dev!r} (declared [[devices]] ids: {known})"))
            elif dev in owner:
                problems.append((("guests", i, "devices", j),
                                 f"device {dev!r} is already assigned to guests[{owner[dev]}] (one device, one mat)"))
            else:
                owner[dev] = i
        if g.thresholds is None or alarms is None:
            continue
        for metric in _METRICS:
            override: Band | None = getattr(g.thresholds, metric)
            if override is None:
                continue
            given = override.model_dump(exclude_unset=True, exclude_none=True)
            merged = getattr(alarms.thresholds, metric).model_dump() | given
            for f, m in band_problems(merged, set(given)):
                problems.append((("guests", i, "thresholds", metric, f),
                                 f"{m} (after merging with [alarms.thresholds.{metric}])"))
    return problems


def cross_problems(cfg: VigilConfig) -> list[tuple[Loc, str]]:
    """Problems that span several tables: duplicate names, dangling references, merged thresholds."""
    return (_duplicates("operators", [o.name for o in cfg.operators], "name")
            + _duplicates("devices", [d.id for d in cfg.devices], "id")
            + guest_problems(cfg.guests, cfg.alarms, cfg.devices))


# --------------------------------------------------------------------------- key -> line mapping

class _Stop(Exception):
    """The line scanner met something it does not understand; keep what was mapped so far."""


_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _LineScanner:
    """A small TOML reader that records the line of every key, table and array element."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.i = 0
        self.line = 1
        self.lines: dict[Loc, int] = {}

    # -- characters
    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < self.n else ""

    def adv(self, k: int = 1) -> None:
        for _ in range(k):
            if self.i < self.n and self.s[self.i] == "\n":
                self.line += 1
            self.i += 1

    def ws(self) -> None:
        while self.peek() in (" ", "\t") and self.i < self.n:
            self.adv()

    def comment(self) -> None:
        if self.peek() == "#":
            while self.i < self.n and self.peek() != "\n":
                self.adv()

    def ws_nl(self) -> None:
        while self.i < self.n:
            self.ws()
            self.comment()
            if self.peek() in ("\n", "\r") and self.i < self.n:
                self.adv()
            else:
                return

    def expect(self, c: str) -> None:
        if self.peek() != c:
            raise _Stop
        self.adv()

    # -- pieces
    def record(self, loc: Loc, line: int) -> None:
        self.lines.setdefault(loc, line)

    def string(self) -> str:
        q = self.peek()
        multi = self.s.startswith(q * 3, self.i)
        self.adv(3 if multi else 1)
        out: list[str] = []
        while self.i < self.n:
            c = self.peek()
            if multi and self.s.startswith(q * 3, self.i):
                self.adv(3)
                while self.peek() == q:  # up to two quotes may close the content
                    out.append(q)
                    self.adv()
                return "".join(out)
            if not multi and c == q:
                self.adv()
                return "".join(out)
            if not multi and c == "\n":
                raise _Stop
            if q == '"' and c == "\\":
                out.append(self.peek(1))
                self.adv(2)
                continue
            out.append(c)
            self.adv()
        raise _Stop

    def key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self.ws()
            c = self.peek()
            if c in ('"', "'"):
                parts.append(self.string())
            else:
                start = self.i
                while self.peek() in _BARE and self.i < self.n:
                    self.adv()
                if self.i == start:
                    raise _Stop
                parts.append(self.s[start:self.i])
            self.ws()
            if self.peek() == ".":
                self.adv()
                continue
            return parts

    def keyval(self, table: Loc) -> None:
        line = self.line
        parts = self.key()
        for j in range(1, len(parts) + 1):
            self.record(table + tuple(parts[:j]), line)
        self.ws()
        self.expect("=")
        self.value(table + tuple(parts))

    def value(self, loc: Loc) -> None:
        self.ws()
        c = self.peek()
        if c == "[":
            self.adv()
            index = 0
            while True:
                self.ws_nl()
                if self.peek() == "]":
                    self.adv()
                    return
                self.record(loc + (index,), self.line)
                self.value(loc + (index,))
                index += 1
                self.ws_nl()
                if self.peek() == ",":
                    self.adv()
                elif self.peek() == "]":
                    self.adv()
                    return
                else:
                    raise _Stop
        elif c == "{":
            self.adv()
            while True:
                self.ws_nl()
                if self.peek() == "}":
                    self.adv()
                    return
                self.keyval(loc)
                self.ws_nl()
                if self.peek() == ",":
                    self.adv()
                elif self.peek() == "}":
                    self.adv()
                    return
                else:
                    raise _Stop
        elif c in ('"', "'"):
            self.string()
        else:
            start = self.i
            while self.i < self.n and self.peek() not in (",", "]", "}", "#", "\n", "\r"):
                self.adv()
            if self.i == start:
                raise _Stop

    def document(self) -> dict[Loc, int]:
        table: Loc = ()
        arrays: dict[Loc, int] = {}  # array-of-tables path (with parent indices) -> current index
        try:
            while True:
                self.ws_nl()
                if self.i >= self.n:
                    break
                line = self.line
                if self.peek() == "[":
                    aot = self.peek(1) == "["
                    self.adv(2 if aot else 1)
                    names = self.key()
                    self.expect("]")
                    if aot:
                        self.expect("]")
                    path: list[str | int] = []
                    for k, name in enumerate(names):
                        path.append(name)
                        last = k == len(names) - 1
                        if aot and last:
                            self.record(tuple(path), line)
                            arrays[tuple(path)] = arrays.get(tuple(path), -1) + 1
                            path.append(arrays[tuple(path)])
                        elif tuple(path) in arrays:
                            path.append(arrays[tuple(path)])
                        self.record(tuple(path), line)
                    table = tuple(path)
                else:
                    self.keyval(table)
                self.ws()
                self.comment()
        except _Stop:
            pass
        return self.lines


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Map every key path in a TOML document to its 1-based line number.

    Handles ``[tables]``, ``[[arrays.of.tables]]`` (paths carry the element index), tables nested
    under an array element (``[guests.thresholds]`` after ``[[guests]]``), dotted keys, inline tables
    and arrays (each element gets its index). Stops quietly at anything it cannot read.
    """
    return _LineScanner(text).document()


def _line_for(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    """Line of `loc`, or of its closest enclosing key/table that appears in the file."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _format_loc(loc: tuple[Any, ...]) -> str:
    """("guests", 1, "thresholds", "hr") -> "guests[1].thresholds.hr"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out or "(top level)"


def parse_loc(key: str) -> Loc:
    """Inverse of `_format_loc`: "guests[1].thresholds.hr" -> ("guests", 1, "thresholds", "hr")."""
    out: list[str | int] = []
    for m in re.finditer(r"\[(\d+)\]|([^.\[\]]+)", key):
        out.append(int(m.group(1)) if m.group(1) is not None else m.group(2))
    return tuple(out)


def line_of(text: str, key: str) -> int | None:
    """Line of a formatted key path (e.g. "guests[1].devices[0]") in TOML text, or of its parent."""
    return _line_for(parse_loc(key), key_lines(text))


# --------------------------------------------------------------------------- error messages

_SECRET_WORD = re.compile(r"pass(word|wd|phrase)?|token|secret|api_?key|^key$|_key$|^pin$|credential", re.I)



def looks_secret(name: str) -> bool:
    """True for key names that would hold a secret value (password, token, api_key, ...), not a file name."""
    return bool(_SECRET_WORD.search(name)) and not name.endswith(("_file", "_url", "_id"))


_PATTERN_HINTS: dict[str, str] = {
    "phone": "must be an E.164 number such as +14155550123 (a plus sign, country code, no spaces)",
    "from_number": "must be an E.164 number such as +14155550123 (a plus sign, country code, no spaces)",
    "email": "must be an email address such as ops@example.org",
    "mat": "must be 1-16 letters, digits, '_' or '-'",
    "room": "must be 1-32 lower-case letters, digits, '_' or '-', starting with a letter or digit",
    "id": "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    "name": "must be 1-32 letters, digits, '_', '.' or '-'",
}

_TOML_TYPE = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}


def _unwrap_models(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic models reachable from an annotation (through Optional, list, dict, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None:
        return []
    out: list[type[BaseModel]] = []
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        args = args[:1]
    elif origin is dict:
        args = args[1:]
    elif origin not in (list, typing.Union, types.UnionType):
        return []
    for a in args:
        out += _unwrap_models(a)
    return out


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that holds the last element of `loc` (indices and dict keys are skipped)."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int) or part not in model.model_fields:
            continue  # list index, or a dict key (conditions.<id>)
        found = _unwrap_models(model.model_fields[part].annotation)
        model = found[0] if found else None
    return model


def _unknown_key_message(root: type[BaseModel], loc: Loc) -> str:
    name = str(loc[-1])
    model = _model_at(root, loc)
    fields = [f for f in model.model_fields if f != "source_path"] if model else []
    if f"{name}_file" in fields:
        return (f"unknown key {name!r}: secrets go in files: use {name}_file = \"<file name>\" (read from "
                "$CREDENTIALS_DIRECTORY, else relative to this config file; chmod 600)")
    if looks_secret(name):
        secret_keys = [f for f in fields if f.endswith("_file") and not f.endswith("ca_file")]
        table = _format_loc(loc[:-1]) if loc[:-1] else "the top level"
        where = (f"use {' or '.join(secret_keys)}" if secret_keys
                 else f"no secret belongs in {table}; secret keys end in _file")
        return f"unknown key {name!r}: secrets never go inline, secrets go in files: {where}"
    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else (f"; allowed keys: {', '.join(fields)}" if fields else "")
    return f"unknown key {name!r}{hint}"


def _value_at(data: Any, loc: Loc) -> tuple[int, Any]:
    """How many leading parts of `loc` exist in `data`, and the value there."""
    cur = data
    for n, part in enumerate(loc):
        in_dict = isinstance(cur, dict) and isinstance(part, str) and part in cur
        in_list = isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        if in_dict or in_list:
            cur = cur[part]
        else:
            return n, cur
    return len(loc), cur


def _describe(value: Any) -> str:
    kind = _TOML_TYPE.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return kind
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def validation_problems(exc: ValidationError, data: Any, text: str,
                        root: type[BaseModel] = BaseModel) -> list[Problem]:
    """Turn a pydantic ValidationError into (key path, line, message) triples, one per distinct problem."""
    lines = key_lines(text)
    merged: dict[Loc, list[str]] = {}
    got: dict[Loc, str] = {}
    for err in exc.errors():
        loc: Loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, KeyedValueError):
            for sub, msg in ctx_error.problems:
                merged.setdefault(loc + sub, []).append(msg)
            continue
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = _unknown_key_message(root, loc) if root is not BaseModel else f"unknown key {loc[-1]!r}"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            # union members add their type name to loc: cut loc back to what exists in the file
            found, value = _value_at(data, loc)
            if found:
                loc = loc[:found]
                got[loc] = _describe(value)
            msg = err["msg"].removeprefix("Value error, ")
            if kind == "string_pattern_mismatch" and loc and str(loc[-1]) in _PATTERN_HINTS:
                msg = f"{loc[-1]} {_PATTERN_HINTS[str(loc[-1])]}"
        bucket = merged.setdefault(loc, [])
        if msg not in bucket:
            bucket.append(msg)
    out: list[Problem] = []
    for loc, msgs in merged.items():
        if len(msgs) > 1 and all(m.startswith("Input should be ") for m in msgs):
            text_ = "Input should be " + " or ".join(m.removeprefix("Input should be ") for m in msgs)
        else:
            text_ = "; ".join(msgs)
        if loc in got:
            text_ += f" (got {got[loc]})"
        out.append((_format_loc(loc), _line_for(loc, lines), text_))
    return sorted(out, key=lambda p: (p[1] is None, p[1] or 0))


def format_problem(source: str, problem: Problem) -> str:
    """One error line: `config.toml:42: guests[1].thresholds.hr.warning_low: message`."""
    key, line, msg = problem
    return f"{source}:{line}: {key}: {msg}" if line else f"{source}: {key}: {msg}"


# --------------------------------------------------------------------------- loading

def parse_config(text: str, source: Path | None = None) -> VigilConfig:
    """Validate TOML text; raise ConfigError listing (key path, line, message) for every problem."""
    name = str(source) if source else "<config>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = int(m.group(1)) if m else None
        problem: Problem = ("(syntax)", line, f"not valid TOML: {exc}")
        raise ConfigError(format_problem(name, problem), [problem]) from None
    try:
        cfg = VigilConfig.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, data, text, VigilConfig)
        summary = "\n".join(format_problem(name, p) for p in problems)
        raise ConfigError(f"{name}: {len(problems)} error(s):\n{summary}", problems) from None
    cfg.source_path = source.resolve() if source else None
    return cfg


def load_config(path: str | os.PathLike[str]) -> VigilConfig:
    """Read and validate a config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}", [("(file)", None, f"config file not found: {p}")]) from None
    except IsADirectoryError:
        raise ConfigError(f"{p} is a directory, not a config file", [("(file)", None, "is a directory")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}", [("(file)", None, f"cannot read: {exc}")]) from None
    return parse_config(text, p)


# --------------------------------------------------------------------------- secrets

def secret_files(cfg: VigilConfig) -> list[tuple[str, str, bool]]:
    """Every `*_file` value in the config as (key path, file name, is_secret); CA bundles are not secret."""
    out: list[tuple[str, str, bool]] = []

    def walk(obj: Any, loc: Loc) -> None:
        if isinstance(obj, BaseModel):
            for fname in type(obj).model_fields:
                value = getattr(obj, fname)
                if fname.endswith("_file") and isinstance(value, str):
                    out.append((_format_loc(loc + (fname,)), value, not fname.endswith("ca_file")))
                else:
                    walk(value, loc + (fname,))
        elif isinstance(obj, list):
            for i, item in enumerate(obj):
                walk(item, loc + (i,))
        elif isinstance(obj, dict):
            for k, item in obj.items():
                walk(item, loc + (str(k),))

    walk(cfg, ())
    return out


def secret_candidates(cfg: VigilConfig | None, filename: str) -> list[Path]:
    """Where `filename` is looked for: $CREDENTIALS_DIRECTORY first, then relative to the config."""
    candidates: list[Path] = []
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and not os.path.isabs(filename):
        candidates.append(Path(cred_dir) / filename)
    candidates.append(cfg.resolve_path(filename) if cfg else Path(filename))
    return candidates


def check_secret_permissions(path: Path, what: str) -> None:
    """Refuse a secret file that group or others may read or write; the error carries the chmod fix."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretError(f"{what}: secret file {path} is accessible by group/others (mode {mode:04o}); "
                          f"run: chmod 600 {shlex.quote(str(path))}")


def read_secret(cfg: VigilConfig | None, filename: str, *, what: str, check_permissions: bool = True) -> bytes:
    """Read a secret file from $CREDENTIALS_DIRECTORY or next to the config; refuse world/group-readable files."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    candidates = secret_candidates(cfg, filename)
    for path in candidates:
        if path.is_file():
            if check_permissions and not cred_dir_path(path, cred_dir):
                check_secret_permissions(path, what)
            try:
                return path.read_bytes().strip()
            except OSError as exc:
                raise SecretError(f"{what}: cannot read secret file {path}: {exc.strerror or exc}") from None
    raise SecretError(f"{what}: secret file {filename!r} not found (looked in: "
                      + ", ".join(str(c) for c in candidates) + ")")


def cred_dir_path(path: Path, cred_dir: str | None) -> bool:
    """True when `path` lies in systemd's credentials directory (already protected by systemd)."""
    return bool(cred_dir) and Path(str(cred_dir)).resolve() in path.resolve().parents
