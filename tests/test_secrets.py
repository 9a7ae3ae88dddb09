"""Secrets come only from files or $CREDENTIALS_DIRECTORY, are refused when too open, and never leak;
cloud clients verify TLS certificates."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from vigil.config import parse_config, read_secret
from vigil.edge.broker import free_port
from vigil.errors import ConfigError, SecretError
from vigil.store.crypto import load_key

REPO = Path(__file__).resolve().parents[1]
KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def _cfg(tmp: Path, extra: str = "") -> object:
    text = f'[site]\nname = "t"\nroom = "r"\n[store]\npath = "{tmp / "v.db"}"\nkey_file = "store.key"\n{extra}'
    (tmp / "config.toml").write_text(text)
    return parse_config(text, tmp / "config.toml")


def _write(path: Path, data: str, mode: int) -> Path:
    path.write_text(data)
    path.chmod(mode)
    return path


@pytest.fixture(autouse=True)
def _no_credentials_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o620])
def test_store_key_refused_when_group_or_others_have_any_access(tmp_path: Path, mode: int) -> None:
    cfg = _cfg(tmp_path)
    key = _write(tmp_path / "store.key", KEY_HEX, mode)
    with pytest.raises(SecretError) as ei:
        load_key(cfg, "store.key")  # type: ignore[arg-type]
    msg = str(ei.value)
    assert f"{mode:04o}" in msg and msg.endswith(f"run: chmod 600 {key}")
    assert KEY_HEX not in msg  # the error names the file, never its content


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_store_key_accepted_when_owner_only(tmp_path: Path, mode: int) -> None:
    cfg = _cfg(tmp_path)
    _write(tmp_path / "store.key", KEY_HEX, mode)
    assert load_key(cfg, "store.key") == bytes.fromhex(KEY_HEX)  # type: ignore[arg-type]


def test_absolute_secret_path_is_checked_too(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = _write(elsewhere / "mqtt.password", "pw", 0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        read_secret(cfg, str(p), what="mqtt")  # type: ignore[arg-type]


def test_credentials_directory_wins_over_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd LoadCredential= files (in $CREDENTIALS_DIRECTORY) are used before files next to the config."""
    cfg = _cfg(tmp_path)
    _write(tmp_path / "store.key", "ff" * 32, 0o600)
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o500)
    _write(creds / "store.key", KEY_HEX, 0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_key(cfg, "store.key") == bytes.fromhex(KEY_HEX)  # type: ignore[arg-type]
    # a credential that only exists next to the config still resolves there (dev setups)
    _write(tmp_path / "other.secret", "x", 0o600)
    assert read_secret(cfg, "other.secret", what="x") == b"x"  # type: ignore[arg-type]


def test_missing_secret_is_an_error_not_an_environment_fallback(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tmp_path)
    for name in ("STORE_KEY", "VIGIL_STORE_KEY", "store.key", "MQTT_PASSWORD", "VIGIL_MQTT_PASSWORD"):
        monkeypatch.setenv(name, KEY_HEX)
    with pytest.raises(SecretError, match="not found"):
        load_key(cfg, "store.key")  # type: ignore[arg-type]


@pytest.mark.parametrize("table,key", [("mqtt", "password"), ("store", "key"), ("sync.booking", "secret"),
                                       ("escalation.twilio", "auth_token")])
def test_inline_secret_values_are_config_errors(tmp_path: Path, table: str, key: str) -> None:
    base = '[site]\nname = "t"\nroom = "r"\n'
    extra = {"sync.booking": 'url = "https://b.example/e"\nsecret_file = "b.secret"\n',
             "escalation.twilio": 'account_sid = "AC1"\nfrom_number = "+15555550100"\nauth_token_file = "t"\n'}
    text = base + f"[{table}]\n" + extra.get(table, "") + f'{key} = "hunter2"\n'
    with pytest.raises(ConfigError) as ei:
        parse_config(text, tmp_path / "config.toml")
    assert any(k.endswith(key) and f"{key}_file" in m for k, _line, m in ei.value.problems), ei.value.problems
    assert "hunter2" not in str(ei.value)


def test_no_code_reads_secrets_from_the_environment() -> None:
    """The only environment variable a secret path may come from is $CREDENTIALS_DIRECTORY."""
    pattern = re.compile(r"(?:environ(?:\.get)?\s*[\[(]|getenv\s*\()\s*[\"']([A-Z0-9_]+)[\"']")
    found = set()
    for path in (REPO / "vigil").rglob("*.py"):
        if "testing" in path.parts:
            continue
        found |= {(path.name, name) for name in pattern.findall(path.read_text())}
    secretish = {(f, n) for f, n in found if re.search(r"PASS|TOKEN|SECRET|KEY|AUTH|CRED", n)}
    assert {n for _f, n in secretish} <= {"CREDENTIALS_DIRECTORY"}, secretish
    assert ("config.py", "CREDENTIALS_DIRECTORY") in found  # the scan does see environment reads


def test_daemon_refuses_to_start_with_an_open_broker_password(tmp_path: Path) -> None:
    port = free_port()
    text = (f'[site]\nname = "t"\nroom = "r"\n[store]\npath = "{tmp_path / "v.db"}"\nmin_free_mb = 1\n'
            f'[mqtt]\nport = {port}\nusername = "vigil-daemon"\npassword_file = "mqtt.password"\n'
            '[alarms]\nsound_enabled = false\n')
    (tmp_path / "config.toml").write_text(text)
    pw = _write(tmp_path / "mqtt.password", "s3cret-broker-pw", 0o644)
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    res = subprocess.run([sys.executable, "-m", "vigil", "run", "--config", str(tmp_path / "config.toml"),
                          "--duration", "5"], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode != 0
    assert f"chmod 600 {pw}" in res.stderr and "s3cret-broker-pw" not in res.stderr + res.stdout


def test_no_cloud_client_disables_certificate_verification() -> None:
    bad = re.compile(r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|_create_unverified_context")
    hits = [str(p.relative_to(REPO)) for p in (REPO / "vigil").rglob("*.py")
            if "testing" not in p.parts and bad.search(p.read_text())]
    assert hits == []


def test_sync_session_refuses_an_untrusted_certificate_and_accepts_the_configured_ca(tmp_path: Path) -> None:
    from vigil.sync.outcome import make_session
    from vigil.testing.booking_server import booking_server
    from vigil.testing.tls import make_ca_and_server

    tls = make_ca_and_server(tmp_path / "ca")
    with booking_server(b"s", ssl_context=tls.server_context()) as srv:
        with pytest.raises(requests.exceptions.SSLError):
            make_session().get(srv.base_url + "/health", timeout=5)
        with pytest.raises(requests.exceptions.SSLError):
            make_session(str(make_ca_and_server(tmp_path / "other").ca_cert)).get(srv.base_url + "/health", timeout=5)
        assert make_session(str(tls.ca_cert)).get(srv.base_url + "/health", timeout=5).status_code == 200
