"""Broker auth and per-role ACLs against the real mosquitto, with systemd/mosquitto-vigil.conf and .acl.

Roles (mosquitto-vigil.acl): the daemon publishes telemetry and reads commands; a dashboard reads
telemetry and may publish only vigil/<room>/cmd/<its own operator>; sync reads and publishes only its
status and the roster; clients without credentials are refused.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from vigil.config import parse_config, read_secret
from vigil.edge.broker import Mosquitto

REPO = Path(__file__).resolve().parents[1]
ROOM = "ceremony-1"
BASE = f"vigil/{ROOM}"

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")


class SecuredMosquitto(Mosquitto):
    """mosquitto with the shipped conf and ACL, rewritten for a tmp port, password file and no persistence."""

    def __init__(self, run_dir: Path, passwd: Path) -> None:
        super().__init__(run_dir)
        self.passwd = passwd

    def write_config(self) -> Path:
        """The shipped config with the listener, file paths and persistence adapted to the test."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for line in (REPO / "systemd/mosquitto-vigil.conf").read_text().splitlines():
            key = line.split(" ", 1)[0]
            if key == "listener":
                line = f"listener {self.port} {self.host}"
            elif key == "password_file":
                line = f"password_file {self.passwd}"
            elif key == "acl_file":
                line = f"acl_file {REPO / 'systemd/mosquitto-vigil.acl'}"
            elif key == "persistence":
                line = "persistence false"
            lines.append(line)
        lines += ["log_dest stderr", "log_type error", "log_type warning"]
        if os.getuid() == 0:  # mosquitto drops root to `mosquitto`, which cannot enter pytest's 0700 tmp
            lines.append("user root")
        self.conf_path.write_text("\n".join(lines) + "\n")
        return self.conf_path


CONFIG = f"""
[site]
name = "t"
room = "{ROOM}"
[mqtt]
username = "vigil-daemon"
password_file = "mqtt-daemon.password"
[mqtt.sync]
username = "vigil-sync"
password_file = "mqtt-sync.password"
[[operators]]
name = "lead"
secret_file = "operator-lead.secret"
mqtt_password_file = "mqtt-lead.password"
[[operators]]
name = "assistant"
mqtt_password_file = "mqtt-assistant.password"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mosquitto, dict[str, tuple[str, str]]]]:
    """A config with per-role credentials, its password files (mode 600), the broker's password file."""
    tmp = tmp_path_factory.mktemp("acl")
    (tmp / "config.toml").write_text(CONFIG)
    cfg = parse_config(CONFIG, tmp / "config.toml")
    passwd = tmp / "vigil.passwd"
    passwd.touch(mode=0o600)
    creds: dict[str, tuple[str, str]] = {}
    for role, op in [("daemon", None), ("sync", None), ("dashboard", "lead"), ("dashboard", "assistant")]:
        user, pw_file = cfg.mqtt_credentials(role, op)  # type: ignore[arg-type]
        assert user and pw_file
        f = tmp / pw_file
        f.write_text(uuid.uuid4().hex)
        f.chmod(0o600)
        password = read_secret(cfg, pw_file, what=role).decode()
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, timeout=30)
        creds[op or role] = (user, password)
    server = SecuredMosquitto(tmp / "broker", passwd).start()
    try:
        yield server, creds
    finally:
        server.stop()


class Client:
    """A paho client that records the connect result and every message received."""

    def __init__(self, server: Mosquitto, cred: tuple[str, str] | None) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        if cred:
            self.c.username_pw_set(*cred)
        self.connack: queue.Queue[int] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc.value)
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put([r.value for r in rcs])
        self.c.connect(server.host, server.port, keepalive=10)
        self.c.loop_start()
        self.rc = self.connack.get(timeout=5)

    def subscribe(self, topic: str) -> None:
        """Subscribe and wait for the SUBACK."""
        self.c.subscribe(topic, qos=1)
        self.subacks.get(timeout=5)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """QoS 1 publish, waiting for the broker's PUBACK (which it sends even when the ACL drops it)."""
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def until(self, payload: bytes, timeout: float = 5.0) -> list[tuple[str, bytes]]:
        """Every message received up to and including `payload` (AssertionError if it never comes)."""
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            got.append(msg)
            if msg[1] == payload:
                return got
        raise AssertionError(f"{payload!r} never arrived; got {got}")

    def drain(self, wait_s: float = 0.3) -> list[tuple[str, bytes]]:
        """Whatever arrives within `wait_s`."""
        time.sleep(wait_s)
        out = []
        while not self.messages.empty():
            out.append(self.messages.get_nowait())
        return out

    def close(self) -> None:
        """Disconnect."""
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients(site: tuple[Mosquitto, dict[str, tuple[str, str]]]) -> Iterator[dict[str, Client]]:
    """Connected daemon (subscribed to its whole room), sync, lead and assistant dashboards."""
    server, creds = site
    made = {name: Client(server, cred) for name, cred in creds.items()}
    assert all(c.rc == 0 for c in made.values()), {n: c.rc for n, c in made.items()}
    made["daemon"].subscribe(f"{BASE}/#")
    try:
        yield made
    finally:
        for c in made.values():
            c.close()


def _marker() -> bytes:
    return f"marker-{uuid.uuid4().hex}".encode()


def test_client_without_or_with_wrong_credentials_is_refused(site: tuple[Mosquitto, dict[str, tuple[str, str]]],
                                                             clients: dict[str, Client]) -> None:
    server, creds = site
    anonymous = Client(server, None)
    wrong = Client(server, ("lead", "not-the-password"))
    try:
        # CONNACK "not authorised" (3.1.1 code 5, which paho reports as reason code 135): the broker
        # closes the connection, so nothing can be subscribed or sent
        assert anonymous.rc == 135 and wrong.rc == 135
        clients["daemon"].publish(f"{BASE}/guest/A1/vitals", b'{"v":1,"hr":61}', retain=True)
        anonymous.c.subscribe(f"{BASE}/#")
        anonymous.c.publish(f"{BASE}/cmd/lead", b'{"v":1,"op":"ack"}')
        assert anonymous.drain() == [] and wrong.drain() == []
        end = _marker()
        clients["lead"].publish(f"{BASE}/cmd/lead", end)
        got = clients["daemon"].until(end)
        assert all(p != b'{"v":1,"op":"ack"}' for _, p in got)
    finally:
        anonymous.close()
        wrong.close()
        clients["daemon"].publish(f"{BASE}/guest/A1/vitals", b"", retain=True)


def test_daemon_publishes_telemetry_that_dashboards_and_sync_read(clients: dict[str, Client]) -> None:
    for name in ("lead", "sync"):
        clients[name].subscribe(f"{BASE}/guest/#")
        clients[name].subscribe(f"{BASE}/alarms/#")
    vitals, event = _marker(), _marker()
    clients["daemon"].publish(f"{BASE}/guest/A1/vitals", vitals)
    clients["daemon"].publish(f"{BASE}/alarms/events", event)
    for name in ("lead", "sync"):
        got = clients[name].until(event)
        assert (f"{BASE}/guest/A1/vitals", vitals) in got


def test_dashboard_reads_the_roster_sync_publishes(clients: dict[str, Client]) -> None:
    lead = clients["lead"]
    lead.subscribe(f"{BASE}/roster")
    roster = _marker()
    clients["sync"].publish(f"{BASE}/roster", roster)
    assert lead.until(roster) == [(f"{BASE}/roster", roster)]


def test_dashboard_publishes_only_its_own_commands(clients: dict[str, Client]) -> None:
    lead, daemon = clients["lead"], clients["daemon"]
    forged_vitals, other_op, status = b"forged-vitals", b"as-assistant", b"forged-status"
    lead.publish(f"{BASE}/guest/A1/vitals", forged_vitals)
    lead.publish(f"{BASE}/alarms/events", forged_vitals)
    lead.publish(f"{BASE}/cmd/assistant", other_op)
    lead.publish(f"{BASE}/status", status)
    lead.publish(f"{BASE}/cmd/lead/reply", b"forged-reply")
    own = _marker()
    lead.publish(f"{BASE}/cmd/lead", own)
    got = daemon.until(own)
    assert got == [(f"{BASE}/cmd/lead", own)]


def test_dashboard_reads_its_own_replies_not_other_operators_commands(clients: dict[str, Client]) -> None:
    lead, assistant, daemon = clients["lead"], clients["assistant"], clients["daemon"]
    lead.subscribe(f"{BASE}/cmd/#")
    assistant.publish(f"{BASE}/cmd/assistant", b"assistant-cmd")
    daemon.publish(f"{BASE}/cmd/assistant/reply", b"assistant-reply")
    mine = _marker()
    daemon.publish(f"{BASE}/cmd/lead/reply", mine)
    got = lead.until(mine)
    assert got == [(f"{BASE}/cmd/lead/reply", mine)]


def test_sync_is_read_only_except_its_status_and_roster(clients: dict[str, Client]) -> None:
    sync, daemon = clients["sync"], clients["daemon"]
    sync.publish(f"{BASE}/guest/A1/vitals", b"sync-vitals")
    sync.publish(f"{BASE}/cmd/lead", b"sync-cmd")
    sync.publish(f"{BASE}/alarms/events", b"sync-event")
    sync.publish(f"{BASE}/status", b"sync-daemon-status")
    status, roster = _marker(), _marker()
    sync.publish(f"{BASE}/sync/status", status)
    sync.publish(f"{BASE}/roster", roster)
    got = daemon.until(roster)
    assert got == [(f"{BASE}/sync/status", status), (f"{BASE}/roster", roster)]


def test_no_role_reaches_another_room(clients: dict[str, Client]) -> None:
    """Topics outside vigil/ are denied to every role (the ACL is per room tree only)."""
    daemon = clients["daemon"]
    daemon.subscribe("#")
    for name in ("lead", "sync"):
        clients[name].publish("other/topic", b"out-of-tree")
    end = _marker()
    clients["lead"].publish(f"{BASE}/cmd/lead", end)
    got = daemon.until(end)
    assert all(t.startswith(f"{BASE}/") for t, _ in got), got


def test_mqtt_credentials_per_role_fall_back_to_the_daemons() -> None:
    cfg = parse_config(CONFIG, Path("/etc/vigil/config.toml"))
    assert cfg.mqtt_credentials("daemon") == ("vigil-daemon", "mqtt-daemon.password")
    assert cfg.mqtt_credentials("sync") == ("vigil-sync", "mqtt-sync.password")
    assert cfg.mqtt_credentials("dashboard", "lead") == ("lead", "mqtt-lead.password")
    bare = parse_config(f'[site]\nname = "t"\nroom = "{ROOM}"\n[mqtt]\nusername = "u"\npassword_file = "p"\n'
                        '[[operators]]\nname = "x"\n', None)
    assert bare.mqtt_credentials("sync") == ("u", "p")
    assert bare.mqtt_credentials("dashboard", "x") == ("u", "p")
    assert bare.mqtt_credentials("dashboard", "nobody") == ("u", "p")


def test_sync_and_dashboard_processes_log_in_as_their_own_roles(
        site: tuple[SecuredMosquitto, dict[str, tuple[str, str]]]) -> None:
    """`vigil sync` and `vigil tui --operator` resolve their own users from the config; the broker accepts them."""
    from vigil.commands.tui import connection
    from vigil.sync.service import broker_login

    server, creds = site
    cfg = parse_config(CONFIG, server.passwd.parent / "config.toml")
    assert broker_login(cfg) == creds["sync"]
    conn = connection(cfg, "assistant")
    assert (conn.username, conn.password) == creds["assistant"]  # type: ignore[attr-defined]
    for cred in (broker_login(cfg), creds["assistant"]):
        c = Client(server, (str(cred[0]), str(cred[1])))
        try:
            assert c.rc == 0
        finally:
            c.close()
