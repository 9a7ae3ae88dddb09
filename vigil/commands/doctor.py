"""`vigil doctor`: check the appliance and print a table of problems, each with its fix."""

from __future__ import annotations

import argparse
import contextlib
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
            damaged = isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)
            out.append(Check("store", "fail", f"{path}: {exc}",
                             "stop vigil, copy the file aside, run: sqlite3 FILE .recover" if damaged
                             else "check the file permissions and disk"))
    else:
        out.append(Check("store", "ok", f"{path} will be created on first start"))
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists():
        free_mb = shutil.disk_usage(probe).free / 1e6
        need = cfg.store.min_free_mb
        out.append(Check("disk", "ok" if free_mb > need else "fail", f"{free_mb:,.0f} MB free (minimum {need:,.0f} MB)",
                         "" if free_mb > need else "free space or export and remove old sessions"))
    return out


def check_keys(cfg: object) -> list[Check]:
    """Every secret file named in the config exists, is readable and is not group/other accessible."""
    from vigil.config import VigilConfig, secret_files

    assert isinstance(cfg, VigilConfig)
    out: list[Check] = []
    if not cfg.store.key_file:
        out.append(Check("keys", "warn", "no store.key_file: waveforms and PHI are stored unencrypted",
                         "head -c 32 /dev/urandom > /etc/vigil/credentials/store.key; chmod 600 it; set store.key_file"))
    for key, filename, is_secret in secret_files(cfg):
        if is_secret:
            out.append(_secret_check(cfg, filename, key))
    return out


def _secret_check(cfg: object, filename: str, what: str) -> Check:
    from vigil.config import VigilConfig, read_secret
    from vigil.errors import SecretError

    assert isinstance(cfg, VigilConfig)
    try:
        value = read_secret(cfg, filename, what=what)
    except SecretError as exc:
        text = str(exc)
        fix = (text.split("run: ", 1)[1] if "run: " in text else
               f"create {filename} (mode 600) in /etc/vigil/credentials and load it with LoadCredential=")
        detail = text.split("; run: ", 1)[0].removeprefix(f"{what}: ")
        return Check(f"key: {what}", "fail", detail, fix)
    if not value:
        return Check(f"key: {what}", "fail", f"{filename} is empty", f"put the secret into {filename} (mode 600)")
    return Check(f"key: {what}", "ok", f"{filename} readable, permissions tight")


def check_broker(cfg: object) -> Check:
    """The MQTT broker accepts TCP connections."""
    from vigil.config import VigilConfig

    assert isinstance(cfg, VigilConfig)
    where = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
    try:
        with socket.create_connection((cfg.mqtt.host, cfg.mqtt.port), timeout=2):
            pass
    except OSError as exc:
        return Check("broker", "fail", f"{where}: {exc.strerror or exc}",
                     "systemctl start mosquitto; check /etc/mosquitto/conf.d/vigil.conf (listener)")
    user, pw_file = cfg.mqtt_credentials("daemon")
    password = None
    if pw_file:
        try:
            password = read_secret_text(cfg, pw_file)
        except Exception as exc:  # reported by the keys check
            return Check("broker", "warn", f"{where} reachable; cannot log in: {exc}", "fix the key row below")
    rc = mqtt_login(cfg.mqtt.host, cfg.mqtt.port, user, password)
    if rc is None:
        return Check("broker", "fail", f"{where} accepts TCP but does not answer MQTT CONNECT",
                     "journalctl -u mosquitto; systemctl restart mosquitto")
    if rc != 0:
        who = user or "anonymous"
        return Check("broker", "fail", f"{where} refused login as {who} (CONNACK {rc})",
                     f"mosquitto_passwd -b /etc/mosquitto/vigil.passwd {who} \"$(cat CREDENTIAL)\"; "
                     "systemctl restart mosquitto" if user else "set mqtt.username and mqtt.password_file")
    return Check("broker", "ok", f"{where} reachable, login as {user or 'anonymous'} accepted")


def read_secret_text(cfg: object, filename: str) -> str:
    """A secret file's content as text (permission-checked)."""
    from vigil.config import VigilConfig, read_secret

    assert isinstance(cfg, VigilConfig)
    return read_secret(cfg, filename, what="mqtt password").decode()


def mqtt_login(host: str, port: int, username: str | None, password: str | None, timeout: float = 3.0) -> int | None:
    """Send one MQTT 3.1.1 CONNECT and return the CONNACK return code (0 = accepted), None on no answer."""
    user_b = (username or "").encode()
    pw_b = (password or "").encode()
    flags = 0x02 | (0x80 if username else 0) | (0x40 if username and password is not None else 0)
    client_id = f"vigil-doctor-{os.getpid()}".encode()
    var = b"\x00\x04MQTT\x04" + bytes([flags]) + (10).to_bytes(2, "big")
    payload = len(client_id).to_bytes(2, "big") + client_id
    if username:
        payload += len(user_b).to_bytes(2, "big") + user_b
        if password is not None:
            payload += len(pw_b).to_bytes(2, "big") + pw_b
    body = var + payload
    length = b""
    n = len(body)
    while True:
        byte, n = n % 128, n // 128
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"\x10" + length + body)
            reply = b""
            while len(reply) < 4:
                chunk = s.recv(4 - len(reply))
                if not chunk:
                    break
                reply += chunk
            if len(reply) == 4 and reply[0] == 0x20:
                with contextlib.suppress(OSError):
                    s.sendall(b"\xe0\x00")  # DISCONNECT
                return reply[3]
    except OSError:
        return None
    return None


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
        ports.append(("modem", cfg.escalation.modem.port))
    for dev, port in ports:
        name = "modem" if dev == "modem" else f"serial: {dev}"
        if port is None or "://" in port or port.startswith("usb:"):
            out.append(Check(name, "ok", f"{port} (resolved at connect time)"))
            continue
        if not os.path.exists(port):
            out.append(Check(name, "fail", f"{port} does not exist", "plug the adapter in; check `ls /dev/serial/by-id`"))
        elif not os.access(port, os.R_OK | os.W_OK):
            out.append(Check(name, "fail", f"{port} not accessible", "add the vigil user to the dialout group"))
        else:
            out.append(Check(name, "ok", port))
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
            lambda: check_store(cfg), lambda: check_keys(cfg), lambda: check_broker(cfg), lambda: check_serial(cfg)]
        for step in steps:
            result = step()
            checks.extend(result if isinstance(result, list) else [result])
    checks.extend([check_audio(), check_bluetooth(), check_clock()])
    return checks


def format_table(checks: list[Check], width: int = 48) -> str:
    """STATUS | CHECK | DETAIL | FIX table (FIX only for problems, long cells wrapped), then a summary."""
    import textwrap

    mark = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}
    rows = [("STATUS", "CHECK", "DETAIL", "FIX")] + [
        (mark[c.status], c.name, c.detail, c.fix if c.status != "ok" else "") for c in checks]
    cells = [[textwrap.wrap(cell, width, break_on_hyphens=False) or [""] for cell in r] for r in rows]
    w = [max(len(line) for r in cells for line in r[i]) for i in range(4)]
    lines: list[str] = []
    for n, r in enumerate(cells):
        for k in range(max(len(c) for c in r)):
            parts = [c[k] if k < len(c) else "" for c in r]
            lines.append("  ".join(f"{p:<{w[i]}}" for i, p in enumerate(parts)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * x for x in w))
    fails = sum(c.status == "fail" for c in checks)
    warns = sum(c.status == "warn" for c in checks)
    lines.append(f"\n{len(checks)} checks: {fails} failed, {warns} warnings")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the table; exit 1 when any check failed."""
    checks = run_checks(args.config)
    if args.json:
        print(json.dumps([{"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in checks], indent=2))
    else:
        print(format_table(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0
