"""`vigil doctor`: check the appliance and print a table of problems, each with its fix."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HELP = "check the appliance and print a table of problems with fixes"


@dataclass(frozen=True, slots=True)
class Check:
    """Outcome of one check."""

    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add doctor's arguments."""
    parser.add_argument("--config", default=os.environ.get("VIGIL_CONFIG", "/etc/vigil/config.toml"))
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")


def check_config(path: str) -> tuple[Check, object | None]:
    """Load and validate the config."""
    from vigil.config import load_config
    from vigil.errors import ConfigError

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else ("", None, str(exc))
        where = f"line {first[1]}: " if first[1] else ""
        return Check("config", "fail", f"{len(exc.problems) or 1} error(s); {where}{first[0]}: {first[2]}",
                     f"run: vigil check-config {path}"), None
    return Check("config", "ok", f"{path}: {len(cfg.guests)} guests, {len(cfg.devices)} devices"), cfg


def check_store(cfg: object) -> list[Check]:
    """Store file opens, passes a quick integrity check, and the disk has room."""
    from vigil.config import VigilConfig

    assert isinstance(cfg, VigilConfig)
    out: list[Check] = []
    path = cfg.resolve_path(cfg.store.path)
    folder = path.parent
    if not folder.exists():
        out.append(Check("store", "warn", f"{folder} does not exist yet", f"mkdir -p {folder} (the daemon creates the file)"))
    elif not os.access(folder, os.W_OK):
        out.append(Check("store", "fail", f"{folder} is not writable", f"chown vigil: {folder}"))
    elif path.exists():
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
            res = con.execute("PRAGMA quick_check").fetchone()[0]
            con.close()
            out.append(Check("store", "ok" if res == "ok" else "fail", f"{path}: quick_check {res}",
                             "" if res == "ok" else "stop vigil, copy the file aside, run: sqlite3 FILE .recover"))
        except sqlite3.Error as exc:
            out.append(Check("store", "fail", f"{path}: {exc}", "check the file permissions and disk"))
    else:
        out.append(Check("store", "ok", f"{path} will be created on first start"))
    if folder.exists():
        free_mb = shutil.disk_usage(folder).free / 1e6
        need = cfg.store.min_free_mb
        out.append(Check("disk", "ok" if free_mb > need else "fail", f"{free_mb:,.0f} MB free (minimum {need:,.0f} MB)",
                         "" if free_mb > need else "free space or export and remove old sessions"))
    if cfg.store.key_file:
        out.append(_secret_check(cfg, cfg.store.key_file, "store key"))
    else:
        out.append(Check("keys", "warn", "no store.key_file: waveforms and PHI are stored unencrypted",
                         "head -c 32 /dev/urandom > /etc/vigil/credentials/store.key; chmod 600 it; set store.key_file"))
    return out


def _secret_check(cfg: object, filename: str, what: str) -> Check:
    from vigil.config import VigilConfig, read_secret
    from vigil.errors import SecretError

    assert isinstance(cfg, VigilConfig)
    try:
        read_secret(cfg, filename, what=what)
    except SecretError as exc:
        return Check(f"secret: {what}", "fail", str(exc), "create the file with mode 600 or load it with LoadCredential=")
    return Check(f"secret: {what}", "ok", f"{filename} readable, permissions tight")


def check_broker(cfg: object) -> Check:
    """The MQTT broker accepts TCP connections."""
    from vigil.config import VigilConfig

    assert isinstance(cfg, VigilConfig)
    try:
        with socket.create_connection((cfg.mqtt.host, cfg.mqtt.port), timeout=2):
            return Check("broker", "ok", f"{cfg.mqtt.host}:{cfg.mqtt.port} reachable")
    except OSError as exc:
        return Check("broker", "fail", f"{cfg.mqtt.host}:{cfg.mqtt.port}: {exc.strerror or exc}",
                     "systemctl start mosquitto (see systemd/mosquitto-vigil.conf)")


def check_audio() -> Check:
    """An ALSA playback device exists."""
    cards = Path("/proc/asound/cards")
    text = cards.read_text() if cards.exists() else ""
    if not text.strip() or "no soundcards" in text:
        return Check("audio", "fail", "no ALSA sound card: local alarm sound cannot play",
                     "connect a speaker (USB sound card or HDMI/3.5 mm) and check `aplay -l`")
    if not shutil.which("aplay"):
        return Check("audio", "fail", "aplay not found", "apt-get install alsa-utils")
    return Check("audio", "ok", text.strip().splitlines()[0].strip())


def check_bluetooth() -> Check:
    """A Bluetooth adapter is present."""
    adapters = list(Path("/sys/class/bluetooth").glob("hci*")) if Path("/sys/class/bluetooth").exists() else []
    if not adapters:
        return Check("bluetooth", "warn", "no Bluetooth adapter (BLE monitors cannot connect)",
                     "enable Bluetooth (Raspberry Pi: dtoverlay, `rfkill unblock bluetooth`, apt-get install bluez)")
    return Check("bluetooth", "ok", ", ".join(a.name for a in adapters))


def check_serial(cfg: object) -> list[Check]:
    """Configured serial ports and the modem exist and are accessible."""
    from vigil.config import VigilConfig

    assert isinstance(cfg, VigilConfig)
    out: list[Check] = []
    ports = [(d.id, d.port) for d in cfg.devices if d.port]
    if cfg.escalation.modem:
        ports.append(("gsm-modem", cfg.escalation.modem.port))
    for name, port in ports:
        if port is None or "://" in port or port.startswith("usb:"):
            out.append(Check(f"serial: {name}", "ok", f"{port} (resolved at connect time)"))
            continue
        if not os.path.exists(port):
            out.append(Check(f"serial: {name}", "fail", f"{port} does not exist", "plug the adapter in; check `ls /dev/serial/by-id`"))
        elif not os.access(port, os.R_OK | os.W_OK):
            out.append(Check(f"serial: {name}", "fail", f"{port} not accessible", "add the vigil user to the dialout group"))
        else:
            out.append(Check(f"serial: {name}", "ok", port))
    if not cfg.escalation.modem:
        out.append(Check("modem", "warn", "no GSM modem configured: no SMS escalation while offline",
                         "add [escalation.modem] with the modem's port"))
    return out


def check_clock() -> Check:
    """The wall clock is synchronised (a Pi has no RTC)."""
    if shutil.which("timedatectl"):
        try:
            res = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                                 capture_output=True, text=True, timeout=3)
            if res.returncode == 0 and res.stdout.strip():
                ok = res.stdout.strip() == "yes"
                return Check("clock", "ok" if ok else "warn", f"NTP synchronised: {res.stdout.strip()}",
                             "" if ok else "records keep device and monotonic time; enable systemd-timesyncd when online")
        except (OSError, subprocess.TimeoutExpired):
            pass
    return Check("clock", "warn", "cannot tell whether the clock is synchronised",
                 "install systemd-timesyncd or chrony; Vigil tolerates clock steps")


def run_checks(config_path: str) -> list[Check]:
    """All checks, in the order a technician would fix them."""
    checks: list[Check] = []
    cfg_check, cfg = check_config(config_path)
    checks.append(cfg_check)
    if cfg is not None:
        steps: list[Callable[[], Check | list[Check]]] = [
            lambda: check_store(cfg), lambda: check_broker(cfg), lambda: check_serial(cfg)]
        for step in steps:
            result = step()
            checks.extend(result if isinstance(result, list) else [result])
    checks.extend([check_audio(), check_bluetooth(), check_clock()])
    return checks


def run(args: argparse.Namespace) -> int:
    """Print the table; exit 1 when any check failed."""
    checks = run_checks(args.config)
    if args.json:
        print(json.dumps([{"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in checks], indent=2))
    else:
        width = max(len(c.name) for c in checks)
        mark = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL"}
        for c in checks:
            print(f"{mark[c.status]}  {c.name:<{width}}  {c.detail}")
            if c.fix and c.status != "ok":
                print(f"      {'':<{width}}  fix: {c.fix}")
    return 1 if any(c.status == "fail" for c in checks) else 0
