"""A real FHIR R4 server for tests: sekmet-fhir 0.1.1 behind a loopback OAuth2 gateway.

``sekmet serve --host 127.0.0.1 --port P`` runs in a temporary folder (it writes ``./data``); we
wait until ``/fhir/metadata`` answers. In front of it, a `LoopbackServer` (fault injection, TLS)
serves ``POST /oauth/token`` (client-credentials, short-lived tokens) and forwards ``/fhir...`` to
sekmet only with a valid, unexpired bearer token (401 otherwise).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import requests

from vigil.testing.loopback import App, LoopbackServer, Reply

SEKMET_VERSION = "0.1.1"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sekmet_executable() -> str:
    exe = Path(sys.executable).with_name("sekmet")
    return str(exe) if exe.exists() else (shutil.which("sekmet") or "sekmet")


class SekmetProcess:
    """sekmet-fhir in a temp dir on a free loopback port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="vigil-sekmet-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """FHIR base URL."""
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self, timeout_s: float = 30.0) -> SekmetProcess:
        """Start and wait for /fhir/metadata."""
        log = open(self.workdir / "sekmet.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([_sekmet_executable(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                     cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "NO_COLOR": "1"})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sekmet exited with {self.proc.returncode}: "
                                   + (self.workdir / "sekmet.log").read_text(errors="replace")[-2000:])
            try:
                if requests.get(self.base_url + "/metadata", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"sekmet did not answer /fhir/metadata within {timeout_s} s")

    def stop(self) -> None:
        """Terminate and remove the temp dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SekmetProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayApp(App):
    """OAuth2 token endpoint + bearer-checking forwarder to the FHIR server."""

    def __init__(self, upstream: str, client_id: str, client_secret: str, token_ttl_s: float = 300.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.tokens: dict[str, float] = {}
        self.tokens_issued = 0
        self.unauthorized = 0
        self.transactions = 0
        self.bytes_in = 0  # transaction Bundle bodies forwarded (what went on the wire)
        self.entries = 0  # Bundle entries forwarded
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False

    def revoke_all(self) -> None:
        """Make every issued token invalid (the next FHIR call gets 401)."""
        with self._lock:
            self.tokens.clear()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        """Token endpoint or authenticated forwarding."""
        if method == "POST" and path == "/oauth/token":
            return self._token(headers, body)
        if not path.startswith("/fhir"):
            return Reply.json(404, {"error": "not found"})
        auth = headers.get("authorization", "")
        tok = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        with self._lock:
            exp = self.tokens.get(tok)
            if exp is None or exp < time.monotonic():
                self.unauthorized += 1
                return Reply.json(401, {"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "login", "diagnostics": "missing or expired bearer token"}]},
                    {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if method == "POST" and path.rstrip("/") == "/fhir":
            with self._lock:
                self.transactions += 1
                self.bytes_in += len(body)
                self.entries += body.count(b'"request":')
        up = self._session.request(method, self.upstream + path.removeprefix("/fhir"), data=body or None,
                                   headers={k: v for k, v in headers.items()
                                            if k in ("content-type", "accept", "if-none-exist")}, timeout=60)
        return Reply(up.status_code, up.content, {"Content-Type": up.headers.get("Content-Type", "application/json")})

    def _token(self, headers: dict[str, str], body: bytes) -> Reply:
        form = dict(urllib.parse.parse_qsl(body.decode()))
        cid, csec = form.get("client_id"), form.get("client_secret")
        auth = headers.get("authorization", "")
        if auth.startswith("Basic "):
            cid, _, csec = base64.b64decode(auth[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials":
            return Reply.json(400, {"error": "unsupported_grant_type"})
        if cid != self.client_id or csec != self.client_secret:
            return Reply.json(401, {"error": "invalid_client"})
        tok = secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[tok] = time.monotonic() + self.token_ttl_s
            self.tokens_issued += 1
        return Reply.json(200, {"access_token": tok, "token_type": "Bearer", "expires_in": self.token_ttl_s})


def fhir_gateway(upstream: str, client_id: str = "vigil", client_secret: str = "s3cret", **kw: Any) -> LoopbackServer:
    """A loopback gateway to `upstream` (use as a context manager)."""
    app = GatewayApp(upstream, client_id, client_secret, token_ttl_s=kw.pop("token_ttl_s", 300.0))
    return LoopbackServer(app, name="fhir-gateway", **kw)
