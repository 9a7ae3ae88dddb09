"""config.toml schema (pydantic, extra="forbid") and loading with errors that name key and line.

Secrets are never written inline: every secret field ends in ``_file`` and names a file, looked
up in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) first, then relative to the config
file's folder. See ``config.toml`` at the top of the repository for a complete commented example.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vigil.errors import ConfigError, SecretError


class Strict(BaseModel):
    """Base model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=False)


# --------------------------------------------------------------------------- thresholds

class Band(Strict):
    """Warning (medium) and critical (high) limits of one metric; None = no limit on that side."""

    warning_low: float | None = None
    warning_high: float | None = None
    critical_low: float | None = None
    critical_high: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Band:
        wl, wh, cl, ch = self.warning_low, self.warning_high, self.critical_low, self.critical_high
        if wl is not None and wh is not None and wl >= wh:
            raise ValueError(f"warning_low ({wl}) must be below warning_high ({wh})")
        if cl is not None and ch is not None and cl >= ch:
            raise ValueError(f"critical_low ({cl}) must be below critical_high ({ch})")
        if cl is not None and wl is not None and cl > wl:
            raise ValueError(f"critical_low ({cl}) must not be above warning_low ({wl}): the critical limit lies beyond the warning one")
        if ch is not None and wh is not None and ch < wh:
            raise ValueError(f"critical_high ({ch}) must not be below warning_high ({wh}): the critical limit lies beyond the warning one")
        return self

    def merged(self, override: Band | None) -> Band:
        """This band with the fields set in `override` replaced."""
        if override is None:
            return self
        data = self.model_dump()
        data.update(override.model_dump(exclude_unset=True))
        return Band.model_validate(data)


class Thresholds(Strict):
    """Alarm limits. Defaults are the seed table of DESIGN §6."""

    hr: Band = Band(warning_low=50, warning_high=100, critical_low=40, critical_high=120)
    qtc: Band = Band(warning_high=450, critical_high=500)
    sbp: Band = Band(warning_low=90, warning_high=150, critical_low=80, critical_high=180)
    spo2: Band = Band(warning_low=90, critical_low=85)
    qtc_rise_ms: float = Field(60.0, gt=0, description="rise of QTc over the guest's baseline that raises a high alarm")

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
    qtc_rise_ms: float | None = Field(None, gt=0)


class ConditionSettings(Strict):
    """Override of one alarm condition's behaviour (by stable condition id)."""

    enabled: bool = True
    priority: Literal["high", "medium", "low"] | None = None
    delay_s: float | None = Field(None, ge=0, le=600)
    latching: bool | None = None


class AlarmSettings(Strict):
    """Alarm engine defaults."""

    thresholds: Thresholds = Thresholds()
    audio_pause_s: float = Field(120.0, gt=0, le=900)
    alarm_off_reminder_s: float = Field(600.0, gt=0)
    hr_delay_s: float = Field(4.0, ge=0, le=10)
    spo2_delay_s: float = Field(6.0, ge=0, le=30)
    qtc_delay_s: float = Field(60.0, ge=0)
    stale_after_s: float = Field(5.0, gt=0)
    low_battery_percent: float = Field(15.0, ge=0, le=100)
    conditions: dict[str, ConditionSettings] = {}
    sound_device: str = "default"
    sound_enabled: bool = True


# --------------------------------------------------------------------------- people, devices

class Contact(Strict):
    """Someone who may be messaged (PHI-free identifiers only in logs)."""

    name: str
    role: Literal["on_call", "backup", "clinician"] = "on_call"
    phone: str | None = Field(None, pattern=r"^\+[1-9]\d{6,14}$", description="E.164")
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class LadderStep(Strict):
    """Escalation timers for one priority, in seconds unacknowledged."""

    on_call_after_s: float | None = Field(None, ge=0)
    backup_after_s: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> LadderStep:
        if (self.on_call_after_s is not None and self.backup_after_s is not None
                and self.backup_after_s < self.on_call_after_s):
            raise ValueError("backup_after_s must not be before on_call_after_s")
        return self


class TwilioSettings(Strict):
    """Twilio-style SMS REST API."""

    base_url: str = "https://api.twilio.com"
    account_sid: str
    from_number: str = Field(pattern=r"^\+[1-9]\d{6,14}$")
    auth_token_file: str
    timeout_s: float = Field(5.0, gt=0)
    ca_file: str | None = None


class ModemSettings(Strict):
    """GSM modem on a serial port (AT commands, text mode)."""

    port: str  # /dev/ttyUSB2, or a pyserial URL such as socket://127.0.0.1:7000
    baudrate: int = 115200
    parity: Literal["N", "E", "O"] = "N"
    pin_file: str | None = None
    timeout_s: float = Field(60.0, gt=0)


class EscalationSettings(Strict):
    """Who is messaged, when, and through which channels."""

    contacts: list[Contact] = []
    high: LadderStep = LadderStep(on_call_after_s=30, backup_after_s=90)
    medium: LadderStep = LadderStep(on_call_after_s=120, backup_after_s=300)
    low: LadderStep = LadderStep()
    min_interval_per_contact_s: float = Field(60.0, ge=0)
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
    speed: float = Field(1.0, gt=0, le=1000)  # replay speed (× real time)
    loop: bool = True  # replay: start again at the end
    start_s: float = Field(0.0, ge=0)  # replay: offset into the record
    heart_rate: float | None = Field(None, gt=10, lt=300)  # simulated ECG
    line: dict[str, Any] = {}  # serial line settings override (baudrate, parity, ...)

    @model_validator(mode="after")
    def _where(self) -> DeviceConfig:
        if self.profile.startswith("replay") and not self.record:
            raise ValueError("a replay device needs `record`")
        return self


class GuestConfig(Strict):
    """A guest on a mat."""

    mat: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,16}$")]
    name: str = Field(min_length=1, max_length=80)
    devices: list[str] = []
    baseline_qtc_ms: float | None = Field(None, gt=250, lt=700)
    thresholds: ThresholdOverrides | None = None
    conditions: dict[str, ConditionSettings] = {}


class Operator(Strict):
    """A facilitator allowed to acknowledge/pause alarms."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
    secret_file: str | None = None  # shared secret for signing commands (HMAC-SHA256)
    may_alarm_off: bool = False


# --------------------------------------------------------------------------- infrastructure

class SiteConfig(Strict):
    """Where this box is."""

    name: str
    room: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]


class StoreConfig(Strict):
    """Record store."""

    path: str = "/var/lib/vigil/vigil.db"
    key_file: str | None = None  # 32-byte AES-256 key (raw or hex); encrypts waveforms and PHI
    commit_interval_s: float = Field(1.0, gt=0, le=10)
    chunk_seconds: float = Field(2.0, ge=1, le=10)
    min_free_mb: float = Field(200.0, ge=0)


class MqttConfig(Strict):
    """The room's broker."""

    host: str = "127.0.0.1"
    port: int = Field(1883, gt=0, lt=65536)
    username: str | None = None
    password_file: str | None = None
    tls_ca_file: str | None = None
    keepalive_s: int = Field(10, ge=2, le=600)


class BookingSync(Strict):
    """Booking platform events API."""

    url: str
    secret_file: str  # HMAC signing secret
    roster_url: str | None = None
    batch_size: int = Field(100, ge=1, le=1000)
    ca_file: str | None = None


class FhirSync(Strict):
    """EMR (FHIR R4) endpoint."""

    base_url: str
    token_url: str | None = None
    client_id: str | None = None
    client_secret_file: str | None = None
    ca_file: str | None = None


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
    max_backoff_s: float = Field(300.0, gt=0)


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
    source_path: Path | None = Field(None, exclude=True)

    @field_validator("guests")
    @classmethod
    def _unique_mats(cls, guests: list[GuestConfig]) -> list[GuestConfig]:
        seen: set[str] = set()
        for g in guests:
            if g.mat in seen:
                raise ValueError(f"mat {g.mat!r} is used by two guests")
            seen.add(g.mat)
        return guests

    @model_validator(mode="after")
    def _references(self) -> VigilConfig:
        ids = [d.id for d in self.devices]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"device ids used twice: {sorted(dup)}")
        owner: dict[str, str] = {}
        for g in self.guests:
            for dev in g.devices:
                if dev not in ids:
                    raise ValueError(f"guest on mat {g.mat!r} names unknown device {dev!r}")
                if dev in owner:
                    raise ValueError(f"device {dev!r} is assigned to mats {owner[dev]!r} and {g.mat!r}")
                owner[dev] = g.mat
        return self

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

    def resolve_path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(os.path.expandvars(value)).expanduser()
        if not p.is_absolute() and self.source_path is not None:
            p = self.source_path.parent / p
        return p


# --------------------------------------------------------------------------- loading

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEYLINE = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.\-" ]+?)\s*=""")


def _split_key(text: str) -> list[str]:
    parts = re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', text)
    return [p.strip().strip("\"'") for p in parts if p.strip()]


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Map every key path in a TOML document to its 1-based line number (best effort)."""
    lines: dict[tuple[str | int, ...], int] = {}
    counters: dict[tuple[str | int, ...], int] = {}
    table: tuple[str | int, ...] = ()
    for no, raw in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(raw)
        if m and not raw.lstrip().startswith("#"):
            names = _split_key(m.group(2))
            # resolve parent arrays-of-tables to their current index
            path: list[str | int] = []
            for name in names:
                path.append(name)
                idx = counters.get(tuple(path))
                if idx is not None and (len(path) < len(names) or m.group(1) != "[["):
                    path.append(idx)
            if m.group(1) == "[[":
                key = tuple(path)
                counters[key] = counters.get(key, -1) + 1
                path.append(counters[key])
            table = tuple(path)
            lines.setdefault(table, no)
            continue
        k = _KEYLINE.match(raw)
        if k and not raw.lstrip().startswith("#"):
            full = table + tuple(_split_key(k.group(1)))
            lines.setdefault(full, no)
    return lines


def _line_for(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out or "(top level)"


def parse_config(text: str, source: Path | None = None) -> VigilConfig:
    """Validate TOML text; raise ConfigError listing (key path, line, message) for every problem."""
    name = str(source) if source else "<config>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = int(m.group(1)) if m else None
        raise ConfigError(f"{name}: not valid TOML: {exc}", [("(syntax)", line, str(exc))]) from exc
    try:
        cfg = VigilConfig.model_validate(data)
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
        raise ConfigError(f"{name}: {len(problems)} error(s): {summary}", problems) from None
    cfg.source_path = source.resolve() if source else None
    return cfg


def load_config(path: str | os.PathLike[str]) -> VigilConfig:
    """Read and validate a config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}", [("(file)", None, f"not found: {p}")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}", [("(file)", None, str(exc))]) from None
    return parse_config(text, p)


def read_secret(cfg: VigilConfig | None, filename: str, *, what: str, check_permissions: bool = True) -> bytes:
    """Read a secret file from $CREDENTIALS_DIRECTORY or next to the config; refuse world/group-readable files."""
    candidates: list[Path] = []
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and not os.path.isabs(filename):
        candidates.append(Path(cred_dir) / filename)
    candidates.append(cfg.resolve_path(filename) if cfg else Path(filename))
    for path in candidates:
        if path.is_file():
            if check_permissions and not cred_dir_path(path, cred_dir):
                mode = stat.S_IMODE(path.stat().st_mode)
                if mode & 0o077:
                    raise SecretError(f"{what}: secret file {path} is readable by group/others "
                                      f"(mode {mode:o}); run: chmod 600 {path}")
            return path.read_bytes().strip()
    raise SecretError(f"{what}: secret file {filename!r} not found (looked in: "
                      + ", ".join(str(c) for c in candidates) + ")")


def cred_dir_path(path: Path, cred_dir: str | None) -> bool:
    """True when `path` lies in systemd's credentials directory (already protected by systemd)."""
    return bool(cred_dir) and Path(cred_dir).resolve() in path.resolve().parents
