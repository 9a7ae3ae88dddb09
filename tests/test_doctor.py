"""`vigil doctor`: every problem is a row with its fix (real broker, real files, real pty)."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

from vigil.commands.doctor import Check, format_table, mqtt_login, run_checks
from vigil.edge.broker import Mosquitto, free_port

KEY_HEX = "ab" * 32


def _config(tmp: Path, port: int, *, extra: str = "", store: str | None = None, min_free_mb: float = 1) -> Path:
    text = (f'[site]\nname = "t"\nroom = "r"\n'
            f'[store]\npath = "{store or tmp / "state" / "vigil.db"}"\nkey_file = "store.key"\nmin_free_mb = {min_free_mb}\n'
            f'[mqtt]\nport = {port}\n' + extra)
    path = tmp / "config.toml"
    path.write_text(text)
    key = tmp / "store.key"
    if not key.exists():
        key.write_text(KEY_HEX)
        key.chmod(0o600)
    (tmp / "state").mkdir(exist_ok=True)
    return path


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _doctor(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    return subprocess.run([sys.executable, "-m", "vigil", "doctor", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_broker_down_is_a_failed_row_with_the_fix(tmp_path: Path) -> None:
    cfg = _config(tmp_path, free_port())
    res = _doctor(cfg)
    assert res.returncode == 1
    row = next(line for line in res.stdout.splitlines() if line.split()[:2] == ["FAIL", "broker"])
    assert "Connection refused" in row and "systemctl start mosquitto" in row
    header = res.stdout.splitlines()[0].split()
    assert header == ["STATUS", "CHECK", "DETAIL", "FIX"]


def test_healthy_parts_are_ok_rows(tmp_path: Path, mosquitto) -> None:
    cfg = _config(tmp_path, mosquitto.port)
    checks = _by_name(run_checks(str(cfg)))
    assert checks["config"].status == "ok"
    assert checks["broker"].status == "ok" and "login as anonymous accepted" in checks["broker"].detail
    assert checks["store"].status == "ok" and checks["disk"].status == "ok"
    assert checks["key: store.key_file"].status == "ok"
    assert checks["modem"].status == "warn"  # none configured: no SMS while offline


def test_missing_and_open_keys_are_rows_with_fixes(tmp_path: Path) -> None:
    cfg = _config(tmp_path, free_port(), extra='username = "vigil-daemon"\npassword_file = "mqtt.password"\n'
                  '[[operators]]\nname = "lead"\nsecret_file = "lead.secret"\n')
    (tmp_path / "store.key").chmod(0o644)
    (tmp_path / "lead.secret").touch(mode=0o600)
    checks = _by_name(run_checks(str(cfg)))
    store_key = checks["key: store.key_file"]
    assert store_key.status == "fail" and store_key.fix == f"chmod 600 {tmp_path / 'store.key'}"
    mqtt = checks["key: mqtt.password_file"]
    assert mqtt.status == "fail" and "not found" in mqtt.detail and "LoadCredential=" in mqtt.fix
    empty = checks["key: operators[0].secret_file"]
    assert empty.status == "fail" and "empty" in empty.detail
    res = _doctor(cfg, "--json")
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["key: store.key_file"]["fix"].startswith("chmod 600") and res.returncode == 1


def test_no_store_key_warns_unencrypted(tmp_path: Path) -> None:
    cfg = _config(tmp_path, free_port())
    cfg.write_text(cfg.read_text().replace('key_file = "store.key"\n', ""))
    checks = _by_name(run_checks(str(cfg)))
    assert checks["keys"].status == "warn" and "unencrypted" in checks["keys"].detail


def test_broker_refusing_the_login_is_a_row_with_the_mosquitto_passwd_fix(tmp_path: Path) -> None:
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    passwd = broker_dir / "passwd"
    passwd.touch(mode=0o600)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "vigil-daemon", "right"], check=True, timeout=30)

    class AuthBroker(Mosquitto):
        def write_config(self) -> Path:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.conf_path.write_text(f"listener {self.port} {self.host}\nallow_anonymous false\n"
                                      f"password_file {passwd}\npersistence false\n"
                                      + ("user root\n" if os.getuid() == 0 else ""))
            return self.conf_path

    server = AuthBroker(broker_dir).start()
    try:
        assert mqtt_login(server.host, server.port, "vigil-daemon", "right") == 0
        assert mqtt_login(server.host, server.port, None, None) == 5
        cfg = _config(tmp_path, server.port, extra='username = "vigil-daemon"\npassword_file = "mqtt.password"\n')
        pw = tmp_path / "mqtt.password"
        pw.write_text("wrong")
        pw.chmod(0o600)
        broker = _by_name(run_checks(str(cfg)))["broker"]
        assert broker.status == "fail" and "refused login as vigil-daemon (CONNACK 5)" in broker.detail
        assert "mosquitto_passwd" in broker.fix
        pw.write_text("right")
        assert _by_name(run_checks(str(cfg)))["broker"].status == "ok"
    finally:
        server.stop()


def test_corrupt_store_and_full_disk(tmp_path: Path) -> None:
    db = tmp_path / "state" / "vigil.db"
    cfg = _config(tmp_path, free_port(), min_free_mb=1e12)
    con = sqlite3.connect(db)
    con.execute("create table t(x)")
    con.executemany("insert into t values (?)", [(os.urandom(500),) for _ in range(200)])
    con.commit()
    con.close()
    data = bytearray(db.read_bytes())
    for page in range(1, len(data) // 4096):  # smash every b-tree page header after the schema page
        data[page * 4096:page * 4096 + 8] = b"\xff" * 8
    db.write_bytes(bytes(data))
    checks = _by_name(run_checks(str(cfg)))
    assert checks["store"].status == "fail" and ".recover" in checks["store"].fix
    assert checks["disk"].status == "fail" and "free space" in checks["disk"].fix


def test_serial_ports_and_modem(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    try:
        port = os.ttyname(slave)
        extra = (f'[[devices]]\nid = "ox"\nprofile = "contec-cms50d-plus"\nport = "{port}"\n'
                 '[[devices]]\nid = "gone"\nprofile = "contec-cms50d-plus"\nport = "/dev/ttyNOPE9"\n'
                 '[escalation.modem]\nport = "/dev/ttyNOPE7"\n')
        cfg = _config(tmp_path, free_port(), extra=extra)
        checks = _by_name(run_checks(str(cfg)))
    finally:
        os.close(master)
        os.close(slave)
    assert checks["serial: ox"].status == "ok"
    assert checks["serial: gone"].status == "fail" and "/dev/serial/by-id" in checks["serial: gone"].fix
    assert checks["modem"].status == "fail" and "/dev/ttyNOPE7 does not exist" in checks["modem"].detail


def test_bad_config_row_points_at_check_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[site]\nname = "t"\nroom = "Bad Room"\n')
    res = _doctor(cfg)
    assert res.returncode == 1
    row = next(line for line in res.stdout.splitlines() if line.startswith("FAIL") and " config " in line)
    assert "site.room" in row
    assert _by_name(run_checks(str(cfg)))["config"].fix == f"run: vigil check-config {cfg}"
    # machine checks still run without a config
    assert any(line.split()[1:2] == ["audio"] for line in res.stdout.splitlines()[2:] if line.split())


def test_table_wraps_long_cells_and_summarises() -> None:
    checks = [Check("a", "ok", "fine"), Check("b", "fail", "x " * 60, "do " * 40), Check("c", "warn", "hm", "later")]
    out = format_table(checks, width=30).splitlines()
    assert out[0].split() == ["STATUS", "CHECK", "DETAIL", "FIX"]
    assert max(len(line) for line in out) <= 6 + 5 + 30 + 30 + 6 + 2
    assert out[-1] == "3 checks: 1 failed, 1 warnings"
    ok_row = next(line for line in out if line.startswith("ok"))
    assert ok_row.rstrip().endswith("fine")  # no fix shown for a passing check
