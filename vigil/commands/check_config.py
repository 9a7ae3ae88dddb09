"""`vigil check-config FILE`: validate a config file; every error names its key path and line.

Errors (exit 2): TOML syntax, unknown keys (inline secrets included), wrong types, missing keys,
contradictory thresholds, dangling device references, unknown firmware profiles or alarm
condition ids, secret files readable by group/others. Warnings (exit 0): secret files or replay
records that do not exist yet, no store key, escalation without a reachable contact.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELP = "validate a config file; every error names its key and line"

Problem = tuple[str, int | None, str]


@dataclass(slots=True)
class CheckResult:
    """Outcome of checking one config file."""

    path: str
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    summary: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def as_json(self) -> dict[str, Any]:
        """The JSON document printed by `--json`."""
        def rows(items: list[Problem]) -> list[dict[str, Any]]:
            return [{"key": k, "line": ln, "message": m} for k, ln, m in items]
        return {"ok": self.ok, "file": self.path, "errors": rows(self.errors),
                "warnings": rows(self.warnings), "summary": self.summary}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add check-config's arguments."""
    parser.add_argument("file", nargs="?", default=os.environ.get("VIGIL_CONFIG", "/etc/vigil/config.toml"),
                        help="config file (default: $VIGIL_CONFIG or /etc/vigil/config.toml)")
    parser.add_argument("--json", action="store_true",
                        help='print {"ok": bool, "errors": [{"key", "line", "message"}], "warnings": [...]}')


def _record_exists(path: Path) -> bool:
    return (path.is_file() or Path(f"{path}.hea").is_file() or Path(f"{path}_Signals.csv").is_file())


def _device_checks(cfg: Any, text: str, res: CheckResult) -> None:
    from vigil.config import line_of
    from vigil.edge.profiles import load_profiles
    from vigil.errors import ConfigError

    try:
        profiles = load_profiles()
    except ConfigError as exc:
        res.warnings.append(("devices", None, f"firmware profiles could not be loaded, profile names not checked: {exc}"))
        return
    for i, dev in enumerate(cfg.devices):
        key = f"devices[{i}]"
        profile = profiles.get(dev.profile)
        if profile is None:
            res.errors.append((f"{key}.profile", line_of(text, f"{key}.profile"),
                               f"unknown firmware profile {dev.profile!r} (known: {', '.join(sorted(profiles))})"))
            continue
        if profile.transport == "serial" and not dev.port:
            res.errors.append((f"{key}.port", line_of(text, key),
                               f"a serial device ({dev.profile}) needs `port` (/dev/ttyUSB0, usb:VID:PID or a pyserial URL)"))
        if profile.transport == "ble" and not dev.address:
            res.warnings.append((f"{key}.address", line_of(text, key),
                                 "no BLE `address`: pair it with `vigil devices pair` before the session"))
        if profile.transport == "replay" and dev.record and not _record_exists(cfg.resolve_path(dev.record)):
            res.warnings.append((f"{key}.record", line_of(text, f"{key}.record"),
                                 f"record not found: {cfg.resolve_path(dev.record)} (.hea or _Signals.csv)"))


def _alarm_checks(cfg: Any, text: str, res: CheckResult) -> None:
    from vigil.alarms.conditions import validate_alarm_config
    from vigil.config import line_of
    from vigil.errors import ConfigError

    try:
        validate_alarm_config(cfg)
    except ConfigError as exc:
        for key, line, msg in exc.problems:
            res.errors.append((key, line if line is not None else line_of(text, key), msg))


def _secret_checks(cfg: Any, text: str, res: CheckResult) -> None:
    from vigil.config import check_secret_permissions, cred_dir_path, line_of, secret_candidates, secret_files
    from vigil.errors import SecretError

    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    for key, filename, is_secret in secret_files(cfg):
        candidates = secret_candidates(cfg, filename)
        found = next((p for p in candidates if p.is_file()), None)
        line = line_of(text, key)
        if found is None:
            looked = ", ".join(str(c) for c in candidates)
            res.warnings.append((key, line, f"file {filename!r} not found yet (looked in: {looked})"))
            continue
        if is_secret and not cred_dir_path(found, cred_dir):
            try:
                check_secret_permissions(found, key)
            except SecretError as exc:
                res.errors.append((key, line, str(exc).removeprefix(f"{key}: ")))
    if cfg.store.key_file is None:
        res.warnings.append(("store.key_file", line_of(text, "store"),
                             "no store key: waveforms and guest names are stored unencrypted"))


def _escalation_checks(cfg: Any, text: str, res: CheckResult) -> None:
    from vigil.config import line_of

    esc = cfg.escalation
    sms = esc.twilio is not None or esc.modem is not None
    phones = [c for c in esc.contacts if c.phone]
    if sms and not phones:
        res.warnings.append(("escalation.contacts", line_of(text, "escalation"),
                             "an SMS channel is configured but no contact has a phone"))
    if phones and not sms:
        res.warnings.append(("escalation", line_of(text, "escalation"),
                             "contacts have phones but neither [escalation.twilio] nor [escalation.modem] is set: "
                             "no SMS will be sent"))
    if esc.contacts and not any(c.role == "on_call" for c in esc.contacts):
        res.warnings.append(("escalation.contacts", line_of(text, "escalation.contacts"),
                             "no contact has role \"on_call\": the first step of the ladder reaches nobody"))


def check(path: str | os.PathLike[str]) -> CheckResult:
    """Validate the file at `path` and everything the config names; never raises ConfigError."""
    from vigil.config import load_config
    from vigil.errors import ConfigError

    res = CheckResult(str(path))
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        res.errors = list(exc.problems) or [("(file)", None, str(exc))]
        return res
    text = Path(path).read_text(encoding="utf-8")
    for step in (_device_checks, _alarm_checks, _secret_checks, _escalation_checks):
        step(cfg, text, res)
    res.errors.sort(key=lambda p: (p[1] is None, p[1] or 0))
    res.summary = {"site": cfg.site.name, "room": cfg.site.room, "guests": len(cfg.guests),
                   "devices": len(cfg.devices), "operators": len(cfg.operators),
                   "contacts": len(cfg.escalation.contacts)}
    return res


def render(res: CheckResult) -> list[str]:
    """Human-readable lines: errors, then warnings, then the OK summary when valid."""
    from vigil.config import format_problem

    out = [format_problem(res.path, p) for p in res.errors]
    for key, line, msg in res.warnings:
        out.append(format_problem(res.path, (key, line, f"warning: {msg}")))
    if res.ok and res.summary:
        s = res.summary
        out.append(f"{res.path}: OK: site {s['site']!r}, room {s['room']!r}, {s['guests']} guests, "
                   f"{s['devices']} devices, {s['operators']} operators, {s['contacts']} contacts"
                   + (f" ({len(res.warnings)} warning(s))" if res.warnings else ""))
    elif not res.ok:
        out.append(f"{res.path}: {len(res.errors)} error(s)")
    return out


def run(args: argparse.Namespace) -> int:
    """Check the file; exit 0 when valid, 2 when not."""
    res = check(args.file)
    if args.json:
        print(json.dumps(res.as_json(), indent=2))
    else:
        for line in render(res):
            print(line)
    return 0 if res.ok else 2
