"""Audit trail of the alarm subsystem: who did what and why, as (actor, action, detail) rows.

The daemon connects `AuditSink` to ``StoreWriter.submit("audit", ...)``; tests and replay use
`MemoryAudit`. Detail dicts must never carry guest names (PHI).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vigil.model import AlarmEvent

log = logging.getLogger(__name__)

AuditSink = Callable[[str, str, dict[str, Any]], None]


@dataclass
class MemoryAudit:
    """Collects audit rows in memory (tests, replay)."""

    rows: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        """Record one row."""
        self.rows.append((actor, action, detail))

    def actions(self) -> list[str]:
        """The action names recorded so far."""
        return [a for _, a, _ in self.rows]


def event_detail(ev: AlarmEvent) -> dict[str, Any]:
    """JSON-able audit detail of an alarm event."""
    d: dict[str, Any] = {"guest": ev.guest, "condition": ev.condition, "priority": ev.priority.label,
                         "event": ev.event, "state": ev.state.value, "t_mono": round(ev.t_mono, 3),
                         "wall": round(ev.wall, 3), "reason": ev.reason}
    if ev.value is not None:
        d["value"] = ev.value
    if ev.detail:
        d["detail"] = ev.detail
    return d


def event_json(ev: AlarmEvent, room: str | None = None) -> dict[str, Any]:
    """Bus payload of an alarm event (vigil/<room>/alarms/events)."""
    d = {"v": 1, **event_detail(ev), "operator": ev.operator}
    if room:
        d["room"] = room
    return d


def audit_event(sink: AuditSink | None, ev: AlarmEvent) -> None:
    """Write one alarm transition to the audit trail; never raises."""
    if sink is None:
        return
    try:
        sink(ev.operator or "system", f"alarm.{ev.event}", event_detail(ev))
    except Exception:  # the audit must never take the alarm loop down
        log.exception("audit write failed for %s/%s", ev.condition, ev.event)
