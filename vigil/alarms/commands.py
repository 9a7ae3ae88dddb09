"""Operator commands from dashboards (ack, pause, off, resume): parsing and authentication.

A command is a JSON object published on ``vigil/<room>/cmd/<operator>``::

    {"v": 1, "op": "ack"|"pause"|"off"|"resume", "operator": "anna", "guest": "m01",
     "condition": "hr_high" (optional: all conditions of the guest), "ts": 1700000000.0,
     "nonce": "random-hex", "sig": "hex HMAC-SHA256"}

When the operator has a ``secret_file``, ``sig`` is HMAC-SHA256(secret, canonical JSON of the command
without ``sig``) where canonical = ``json.dumps(obj, sort_keys=True, separators=(",", ":"))``; ``ts``
must be within ``FRESHNESS_S`` of the box's wall clock and ``nonce`` must not have been seen in that
window (replay protection). Operators without a secret are trusted on the broker's ACL alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from vigil.config import Operator, VigilConfig, read_secret
from vigil.errors import VigilError

FRESHNESS_S = 30.0
OPS = ("ack", "pause", "off", "resume")


@dataclass(frozen=True, slots=True)
class Command:
    """A validated, authenticated operator command."""

    op: str
    operator: str
    guest: str
    condition: str | None
    duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The engine's answer to a command (published on cmd/<operator>/reply)."""

    ok: bool
    reason: str
    op: str | None = None
    operator: str | None = None
    affected: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON payload of the reply."""
        return {"v": 1, "ok": self.ok, "reason": self.reason, "op": self.op, "operator": self.operator,
                "affected": list(self.affected), **({"detail": self.detail} if self.detail else {})}


class CommandRefused(VigilError):
    """A command was malformed or not authenticated; `reason` says why."""

    def __init__(self, reason: str, operator: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.operator = operator


def canonical(obj: dict[str, Any]) -> bytes:
    """Canonical bytes that are signed: sorted keys, no spaces, without "sig"."""
    return json.dumps({k: v for k, v in obj.items() if k != "sig"}, sort_keys=True,
                      separators=(",", ":")).encode()


def sign(cmd: dict[str, Any], secret: bytes) -> dict[str, Any]:
    """Return `cmd` with its "sig" field (used by the dashboard and tests)."""
    return {**cmd, "sig": hmac.new(secret, canonical(cmd), hashlib.sha256).hexdigest()}


class CommandAuthenticator:
    """Validates commands against the configured operators; remembers nonces for replay protection."""

    def __init__(self, cfg: VigilConfig, secrets: dict[str, bytes] | None = None) -> None:
        self._cfg = cfg
        self._ops: dict[str, Operator] = {o.name: o for o in cfg.operators}
        self._secrets: dict[str, bytes] = dict(secrets or {})
        self._nonces: OrderedDict[tuple[str, str], float] = OrderedDict()

    def _secret(self, op: Operator) -> bytes:
        if op.name not in self._secrets:
            assert op.secret_file is not None
            self._secrets[op.name] = read_secret(self._cfg, op.secret_file, what=f"operator {op.name}")
        return self._secrets[op.name]

    def may_alarm_off(self, operator: str) -> bool:
        """Whether `operator` may switch an alarm OFF."""
        op = self._ops.get(operator)
        return bool(op and op.may_alarm_off)

    def check(self, raw: Any, now_wall: float) -> Command:
        """Parse and authenticate `raw`; raise CommandRefused with the reason."""
        if not isinstance(raw, dict):
            raise CommandRefused("malformed: command is not a JSON object")
        name = raw.get("operator")
        if not isinstance(name, str) or not name:
            raise CommandRefused("malformed: missing operator")
        op = self._ops.get(name)
        if op is None:
            raise CommandRefused("unknown operator", name)
        verb = raw.get("op")
        if verb not in OPS:
            raise CommandRefused(f"malformed: op must be one of {', '.join(OPS)}", name)
        guest = raw.get("guest")
        if not isinstance(guest, str) or not guest:
            raise CommandRefused("malformed: missing guest", name)
        cond = raw.get("condition")
        if cond is not None and not isinstance(cond, str):
            raise CommandRefused("malformed: condition must be a string", name)
        dur = raw.get("duration_s")
        if dur is not None and (not isinstance(dur, int | float) or isinstance(dur, bool)
                                or not math.isfinite(dur) or not 0 < dur <= 900):
            raise CommandRefused("malformed: duration_s must be a number in (0, 900]", name)
        if op.secret_file is not None:
            self._authenticate(raw, op, now_wall)
        if verb == "off" and not op.may_alarm_off:
            raise CommandRefused("operator may not switch alarms off", name)
        return Command(verb, name, guest, cond, float(dur) if dur is not None else None)

    def _authenticate(self, raw: dict[str, Any], op: Operator, now: float) -> None:
        sig, ts, nonce = raw.get("sig"), raw.get("ts"), raw.get("nonce")
        if not isinstance(sig, str):
            raise CommandRefused("unsigned command from an operator with a secret", op.name)
        if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
            raise CommandRefused("malformed: missing timestamp ts", op.name)
        if not isinstance(nonce, str) or not 8 <= len(nonce) <= 128:
            raise CommandRefused("malformed: nonce must be a string of 8..128 characters", op.name)
        try:
            secret = self._secret(op)
        except VigilError as exc:
            raise CommandRefused(f"operator secret unavailable: {exc}", op.name) from None
        want = hmac.new(secret, canonical(raw), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig.lower()):
            raise CommandRefused("bad signature", op.name)
        if abs(now - ts) > FRESHNESS_S:
            raise CommandRefused(f"stale command (|now - ts| = {abs(now - ts):.0f} s > {FRESHNESS_S:.0f} s)", op.name)
        # forget nonces older than the freshness window
        while self._nonces and next(iter(self._nonces.values())) < now - 2 * FRESHNESS_S:
            self._nonces.popitem(last=False)
        key = (op.name, nonce)
        if key in self._nonces:
            raise CommandRefused("replayed nonce", op.name)
        self._nonces[key] = now
