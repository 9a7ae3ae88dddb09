"""systemd units: `systemd-analyze verify` clean, hardening present, and `make install` staged into a tmp root."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "systemd"
INSTALLED_VIGIL = "/opt/vigil/.venv/bin/vigil"
VENV_VIGIL = Path(sys.executable).parent / "vigil"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value given (systemd keys may repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def render(src: Path, dest_dir: Path, name: str | None = None) -> Path:
    """Copy a unit with ExecStart pointing at this venv's `vigil` (as installed units point at /opt/vigil)."""
    text = src.read_text().replace(INSTALLED_VIGIL, str(VENV_VIGIL))
    dest = dest_dir / (name or src.name)
    dest.write_text(text)
    return dest


def verify(unit: Path) -> tuple[int, str]:
    """Run `systemd-analyze verify`; (exit status, every line it printed)."""
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                         timeout=60, cwd=unit.parent)
    return res.returncode, (res.stdout + res.stderr).strip()


@pytest.mark.parametrize("unit,instance", [("vigil.service", None), ("vigil-sync.service", None),
                                           ("vigil-tui@.service", "vigil-tui@tty1.service")])
def test_unit_verifies_without_warnings(tmp_path: Path, unit: str, instance: str | None) -> None:
    assert VENV_VIGIL.exists()
    path = render(UNITS / unit, tmp_path, instance)
    code, output = verify(path)
    assert code == 0 and output == "", output


def test_verify_reports_a_misspelled_directive_and_a_missing_binary(tmp_path: Path) -> None:
    """The check above can fail: a typo and an ExecStart that does not exist are both reported."""
    text = render(UNITS / "vigil.service", tmp_path).read_text().replace("NoNewPrivileges=", "NoNewPrivilegs=")
    bad = tmp_path / "typo.service"
    bad.write_text(text)
    code, output = verify(bad)
    assert "Unknown key" in output and "NoNewPrivilegs" in output
    missing = tmp_path / "missing.service"
    missing.write_text((UNITS / "vigil.service").read_text().replace(INSTALLED_VIGIL, str(tmp_path / "nope/vigil")))
    code, output = verify(missing)
    assert code != 0 and "not executable" in output


def test_daemon_unit_hardening() -> None:
    svc = parse_unit((UNITS / "vigil.service").read_text())["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    assert one["Type"] == "notify"
    assert float(one["WatchdogSec"]) > 0
    assert one["Restart"] == "always"
    assert one["ProtectSystem"] == "strict"
    assert one["PrivateTmp"] == "true" and one["NoNewPrivileges"] == "true"
    assert one["ReadWritePaths"] == "/var/lib/vigil" and one["StateDirectory"] == "vigil"
    assert set(one["SupplementaryGroups"].split()) == {"dialout", "bluetooth", "audio"}
    assert one["User"] == "vigil"
    creds = {v.split(":", 1)[0]: v.split(":", 1)[1] for v in svc["LoadCredential"]}
    assert {"store.key", "mqtt-daemon.password"} <= set(creds)
    assert all(p.startswith("/etc/vigil/credentials/") for p in creds.values())
    # BLE needs AF_BLUETOOTH; the watchdog needs the notify socket of the main process
    assert "AF_BLUETOOTH" in one["RestrictAddressFamilies"].split()
    assert one["NotifyAccess"] == "main"


@pytest.mark.parametrize("unit", ["vigil-sync.service", "vigil-tui@.service"])
def test_other_units_hardening(unit: str) -> None:
    svc = parse_unit((UNITS / unit).read_text())["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    assert one["Restart"] == "always"
    assert one["ProtectSystem"] == "strict" and one["PrivateTmp"] == "true" and one["NoNewPrivileges"] == "true"
    assert one["User"] != "root"
    assert unit.startswith("vigil-tui") or svc["LoadCredential"]  # the dashboard's come from its drop-in
    assert not any("password=" in v.lower() or "secret=" in v.lower() for v in svc.get("Environment", []))


def test_units_run_commands_with_arguments_vigil_accepts() -> None:
    """The ExecStart arguments exist in the vigil CLI (systemd-analyze does not check them)."""
    from vigil.cli import build_parser

    svc = parse_unit((UNITS / "vigil-tui@.service").read_text())["Service"]
    argv = svc["ExecStart"][-1].split()[1:]
    assert argv[:3] == ["tui", "--config", "/etc/vigil/config.toml"]
    args = build_parser("tui").parse_args([a.replace("${VIGIL_OPERATOR}", "lead") for a in argv])
    assert args.operator == "lead"
    for unit, cmd in [("vigil.service", "run"), ("vigil-sync.service", "sync")]:
        argv = parse_unit((UNITS / unit).read_text())["Service"]["ExecStart"][-1].split()[1:]
        assert argv[0] == cmd and build_parser(cmd).parse_args(argv).config == "/etc/vigil/config.toml"


def test_sync_unit_has_its_own_broker_user_credential() -> None:
    svc = parse_unit((UNITS / "vigil-sync.service").read_text())["Service"]
    names = {v.split(":", 1)[0] for v in svc["LoadCredential"]}
    assert "mqtt-sync.password" in names and "mqtt-daemon.password" not in names


def test_watchdog_interval_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """WatchdogSec=10 gives WATCHDOG_USEC=10e6: the daemon pings every 5 s (half), only in the main pid."""
    from vigil.edge.sdnotify import SdNotify

    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert SdNotify.watchdog_interval_s() == pytest.approx(5.0)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert SdNotify.watchdog_interval_s() is None


# --------------------------------------------------------------------------- make install (staged)

@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`scripts/install.sh --destdir ROOT --no-venv` into a tmp root."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd not installed")
    root = tmp_path_factory.mktemp("root")
    res = subprocess.run([str(REPO / "scripts/install.sh"), "--destdir", str(root), "--no-venv"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return root


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_install_lays_out_code_config_state_and_broker(staged: Path) -> None:
    assert (staged / "opt/vigil/vigil/cli.py").is_file()
    assert (staged / "opt/vigil/firmware-profiles").is_dir()
    assert not (staged / "opt/vigil/.git").exists() and not (staged / "opt/vigil/.venv").exists()
    cfg = staged / "etc/vigil/config.toml"
    assert cfg.is_file() and _mode(cfg) == 0o640
    assert _mode(staged / "var/lib/vigil") == 0o700
    conf = (staged / "etc/mosquitto/conf.d/vigil.conf").read_text()
    assert "allow_anonymous false" in conf and "acl_file /etc/mosquitto/vigil.acl" in conf
    assert (staged / "etc/mosquitto/vigil.acl").read_text() == (UNITS / "mosquitto-vigil.acl").read_text()


def test_install_generates_tight_secrets_and_a_hashed_password_file(staged: Path) -> None:
    cred = staged / "etc/vigil/credentials"
    assert _mode(cred) == 0o700
    for f in cred.iterdir():
        assert _mode(f) == 0o600, f
    key = (cred / "store.key").read_text()
    assert len(key) == 64 and int(key, 16) >= 0
    passwd = (staged / "etc/mosquitto/vigil.passwd").read_text()
    users = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in passwd.splitlines()}
    assert set(users) == {"vigil-daemon", "vigil-sync", "lead", "assistant"}  # operators of config.toml
    daemon_pw = (cred / "mqtt-daemon.password").read_text()
    assert all(v.startswith("$7$") for v in users.values()) and daemon_pw not in passwd
    assert _mode(staged / "etc/mosquitto/vigil.passwd") == 0o640
    assert {"mqtt-lead.password", "operator-lead.secret", "mqtt-assistant.password"} <= {f.name for f in cred.iterdir()}


def test_install_plans_users_groups_and_enables_units(staged: Path) -> None:
    plan = (staged / "install-plan.txt").read_text().splitlines()
    assert any(p.startswith("useradd --system") and p.endswith(" vigil") for p in plan) or \
        subprocess.run(["id", "vigil"], capture_output=True).returncode == 0
    assert "usermod -a -G dialout,bluetooth,audio vigil" in plan
    assert "chown vigil:vigil /var/lib/vigil" in plan
    assert "systemctl enable mosquitto.service vigil.service vigil-sync.service" in plan
    assert plan.index("systemctl daemon-reload") < plan.index(
        "systemctl enable mosquitto.service vigil.service vigil-sync.service")


def test_install_is_idempotent_and_keeps_secrets(staged: Path) -> None:
    cred = staged / "etc/vigil/credentials"
    before = {f.name: f.read_bytes() for f in cred.iterdir()}
    res = subprocess.run([str(REPO / "scripts/install.sh"), "--destdir", str(staged), "--no-venv"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert {f.name: f.read_bytes() for f in cred.iterdir()} == before


def test_installed_units_verify(staged: Path, tmp_path: Path) -> None:
    units = staged / "etc/systemd/system"
    dropin = (units / "vigil.service.d/operators.conf").read_text()
    assert "LoadCredential=operator-lead.secret:/etc/vigil/credentials/operator-lead.secret" in dropin
    tui = (units / "vigil-tui@.service.d/operator.conf").read_text()
    assert "Environment=VIGIL_OPERATOR=lead" in tui
    assert "LoadCredential=mqtt-lead.password:/etc/vigil/credentials/mqtt-lead.password" in tui
    for unit, instance in [("vigil.service", None), ("vigil-sync.service", None),
                           ("vigil-tui@.service", "vigil-tui@tty2.service")]:
        assert f"ExecStart={INSTALLED_VIGIL} " in (units / unit).read_text()
        path = render(units / unit, tmp_path, instance)
        if unit == "vigil.service":
            (tmp_path / "vigil.service.d").mkdir(exist_ok=True)
            (tmp_path / "vigil.service.d/operators.conf").write_text(dropin)
        if instance:  # an instance picks up the template's drop-ins
            (tmp_path / "vigil-tui@.service.d").mkdir(exist_ok=True)
            (tmp_path / "vigil-tui@.service.d/operator.conf").write_text(tui)
        code, output = verify(path)
        assert code == 0 and output == "", (unit, output)

