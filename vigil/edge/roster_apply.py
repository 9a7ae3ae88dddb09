"""Apply the session roster to the running daemon without a restart.

`vigil sync` pulls the roster from the booking platform and publishes it retained on
``vigil/<room>/roster`` (see docs/INTERFACES.md, Sync). The daemon subscribes; each new roster is
validated, merged over the guests and contacts of ``config.toml`` and put in force at once:

* guests: display name, baseline QTc and threshold overrides of a mat already in the config are
  replaced by the roster's; a roster mat the config does not know becomes a new guest. Config guests
  the roster leaves out stay monitored (a roster is never a reason to stop watching someone).
* devices: a roster guest that lists devices gets them (taken away from any other guest); an empty
  list keeps the config's assignment. Device ids the config does not define are reported, not streamed.
* contacts: a non-empty ``on_call`` list replaces ``escalation.contacts``; an empty one keeps the
  config's, so escalation never ends up with nobody to call.

Every part of the daemon reads guests, thresholds and contacts from the one shared ``VigilConfig``
at the moment it needs them (engine per reading, escalator per ladder step), so replacing those
lists on the event loop is enough; the device→guest maps of the pipeline and engine are rebuilt.
The merge is computed from the config's own lists every time, so a later roster fully replaces an
earlier one.

The applied roster is written to ``roster.json`` (mode 600, next to the store) and loaded from
there at start, so an offline start uses the last roster seen. A corrupt cache or a rejected roster
is a box-wide technical alarm (``alarm_system_fault``, source ``_roster``) with a clear reason; it
clears when a valid roster is applied. Roster contents (names, phone numbers) are never logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vigil.clock import Clock
from vigil.config import Band, Contact, GuestConfig, ThresholdOverrides, Thresholds, VigilConfig
from vigil.model import GuestInfo, TechnicalEvent, TechnicalKind
from vigil.sync.roster import Roster, RosterError, cache_path, parse_roster, read_cache, write_cache

log = logging.getLogger(__name__)

SOURCE = "_roster"  # TechnicalEvent.device_id of roster problems (no device id can start with "_")
_METRICS = ("hr", "qtc", "sbp", "spo2")


@dataclass
class RosterPlan:
    """The effect of one roster on the config: new guest and contact lists and what changed."""

    guests: list[GuestConfig]
    contacts: list[Contact]
    device_guest: dict[str, str]
    added: list[str] = field(default_factory=list)  # mats new to the daemon
    changed: list[str] = field(default_factory=list)  # mats whose name/baseline/thresholds/devices changed
    unknown_devices: list[str] = field(default_factory=list)


def merge_overrides(base: ThresholdOverrides | None, top: ThresholdOverrides | None) -> ThresholdOverrides | None:
    """Config overrides of a guest with the roster's laid over them, limit by limit."""
    if top is None:
        return base
    if base is None:
        return top
    data: dict[str, Any] = {}
    for m in _METRICS:
        b, t = getattr(base, m), getattr(top, m)
        if t is None:
            data[m] = b
        elif b is None:
            data[m] = t
        else:
            merged = b.model_dump(exclude_unset=True, exclude_none=True)
            merged.update(t.model_dump(exclude_unset=True, exclude_none=True))
            data[m] = Band.model_validate(merged)
    data["qtc_rise_ms"] = top.qtc_rise_ms if top.qtc_rise_ms is not None else base.qtc_rise_ms
    return ThresholdOverrides.model_validate({k: v for k, v in data.items() if v is not None})


def plan_roster(base_guests: Sequence[GuestConfig], base_contacts: Sequence[Contact], roster: Roster, *,
                room: str, defaults: Thresholds, known_devices: Sequence[str],
                current: Sequence[GuestConfig] = ()) -> RosterPlan:
    """Merge `roster` over the config's guests and contacts (pure); RosterError when it cannot apply."""
    if roster.room != room:
        raise RosterError(f"roster is for room {roster.room!r}, this box is room {room!r}")
    guests = {g.mat: g.model_copy(deep=True) for g in base_guests}
    claimed = {d for rg in roster.guests for d in rg.devices}
    for g in guests.values():
        g.devices = [d for d in g.devices if d not in claimed]
    for rg in roster.guests:
        old = guests.get(rg.mat)
        try:
            overrides = merge_overrides(old.thresholds if old else None, rg.thresholds)
            defaults.merged(overrides)  # the limits must still make sense together
        except (ValidationError, ValueError) as exc:
            msg = str(exc).splitlines()
            raise RosterError(f"roster thresholds of mat {rg.mat} contradict: {msg[-1] if msg else exc}") from None
        new = GuestConfig(mat=rg.mat, name=rg.display_name,
                          devices=list(rg.devices) if rg.devices else list(old.devices if old else []),
                          baseline_qtc_ms=rg.baseline_qtc_ms if rg.baseline_qtc_ms is not None
                          else (old.baseline_qtc_ms if old else None),
                          thresholds=overrides, conditions=dict(old.conditions) if old else {})
        guests[rg.mat] = new
    before = {g.mat: g for g in current}
    plan = RosterPlan(guests=list(guests.values()),
                      contacts=list(roster.on_call) if roster.on_call else list(base_contacts),
                      device_guest={d: g.mat for g in guests.values() for d in g.devices})
    for g in plan.guests:
        prev = before.get(g.mat)
        if prev is None:
            plan.added.append(g.mat)
        elif prev.model_dump() != g.model_dump():
            plan.changed.append(g.mat)
    known = set(known_devices)
    plan.unknown_devices = sorted(d for d in plan.device_guest if d not in known)
    return plan


class RosterApplier:
    """Keeps the daemon's guests and contacts in step with the roster (`on_message` on the event loop)."""

    def __init__(self, cfg: VigilConfig, clock: Clock, *, pipeline: Any = None, writer: Any = None,
                 session_id: str | None = None, cache: Path | None = None,
                 technical: Callable[[TechnicalEvent], None] | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.pipeline = pipeline
        self.writer = writer
        self.session_id = session_id
        self.cache = cache or cache_path(cfg.resolve_path(cfg.store.path))
        self.topic = f"vigil/{cfg.site.room}/roster"
        self._technical = technical
        self._base_guests = [g.model_copy(deep=True) for g in cfg.guests]
        self._base_contacts = list(cfg.escalation.contacts)
        self.current: Roster | None = None
        self.applied = 0
        self.rejected = 0
        self.fault: str | None = None  # reason of the active technical alarm, if any
        self._write_lock = threading.Lock()
        self._writers: list[threading.Thread] = []

    # ------------------------------------------------------------------ entry points
    def start(self) -> Roster | None:
        """Apply the cached roster (offline start); a corrupt cache raises the technical alarm."""
        try:
            cached = read_cache(self.cache)
        except RosterError as exc:
            self._fault(f"roster cache {self.cache.name} unusable ({exc}); running on config.toml guests "
                        "and contacts until a valid roster arrives")
            return None
        if cached is None:
            return None
        try:
            self.apply(cached, source="cache")
        except RosterError as exc:
            self._fault(f"cached roster rejected ({exc}); running on config.toml guests and contacts")
            return None
        return cached

    def on_message(self, payload: bytes) -> bool:
        """A roster from the bus; True when it was applied (unchanged rosters are ignored)."""
        if not payload:
            return False  # a cleared retained message
        try:
            roster = parse_roster(payload)
            if roster == self.current:
                return False
            self.apply(roster, source="bus")
        except RosterError as exc:
            self.rejected += 1
            self._audit("roster.rejected", {"reason": str(exc)[:300]})
            self._fault(f"roster update rejected ({exc}); the previous roster stays in force")
            return False
        self._persist()
        return True

    def apply(self, roster: Roster, *, source: str) -> RosterPlan:
        """Put `roster` in force now (raises RosterError, changing nothing, when it cannot apply)."""
        plan = plan_roster(self._base_guests, self._base_contacts, roster, room=self.cfg.site.room,
                           defaults=self.cfg.alarms.thresholds, known_devices=[d.id for d in self.cfg.devices],
                           current=self.cfg.guests)
        self.cfg.guests = plan.guests
        self.cfg.escalation.contacts = plan.contacts
        self._rewire(plan)
        self.current = roster
        self.applied += 1
        if plan.unknown_devices:
            log.warning("roster assigns devices this box does not define: %s", ", ".join(plan.unknown_devices))
        log.info("roster applied from %s: %d guest(s) (%d new, %d changed), %d contact(s)", source,
                 len(plan.guests), len(plan.added), len(plan.changed), len(plan.contacts))
        self._record(plan, roster, source)
        if self.fault is not None:
            self.fault = None
            self._emit(False, "a valid roster is in force")
        return plan

    def close(self) -> None:
        """Wait for cache writes in flight."""
        for t in self._writers:
            t.join(timeout=10)
        self._writers.clear()

    # ------------------------------------------------------------------ helpers
    def _rewire(self, plan: RosterPlan) -> None:
        pipe = self.pipeline
        if pipe is None:
            return
        from vigil.edge.pipeline import GuestState

        pipe.device_guest = dict(plan.device_guest)
        for mat in plan.added:
            pipe.guests.setdefault(mat, GuestState(mat))
        engine = getattr(pipe, "engine", None)
        if engine is not None and hasattr(engine, "_device_guest"):
            engine._device_guest = dict(plan.device_guest)  # noqa: SLF001 - the engine's device map

    def _record(self, plan: RosterPlan, roster: Roster, source: str) -> None:
        if self.writer is None or self.session_id is None:
            return
        profiles = {d.id: d.profile for d in self.cfg.devices}
        for g in plan.guests:
            if g.mat in plan.added or g.mat in plan.changed:
                self.writer.submit("upsert_guest", self.session_id,
                                   GuestInfo(g.mat, g.name, g.baseline_qtc_ms, tuple(g.devices)))
        for dev, mat in plan.device_guest.items():
            if dev in profiles:
                self.writer.submit("upsert_device", self.session_id, dev, profiles[dev], mat)
        self._audit("roster.applied", {"source": source, "roster_session": roster.session_id,
                                       "updated": roster.updated, "guests": len(plan.guests),
                                       "added": plan.added, "changed": plan.changed,
                                       "contacts": len(plan.contacts), "unknown_devices": plan.unknown_devices})

    def _audit(self, action: str, detail: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.submit("audit", "roster", action, detail)

    def _fault(self, reason: str) -> None:
        log.error("%s", reason)
        self.fault = reason
        self._emit(True, reason)

    def _emit(self, active: bool, reason: str) -> None:
        ev = TechnicalEvent(TechnicalKind.ALARM_SYSTEM_FAULT, active, self.clock.monotonic(), device_id=SOURCE,
                            detail=reason[:200])
        if self._technical is not None:
            self._technical(ev)
        elif self.pipeline is not None:
            self.pipeline.technical(None, ev)

    def _persist(self) -> None:
        """Write the roster in force to roster.json off the event loop (latest wins)."""
        def work() -> None:
            with self._write_lock:
                roster = self.current
                if roster is None:
                    return
                try:
                    write_cache(self.cache, roster)
                except OSError as exc:
                    log.error("cannot write the roster cache %s: %s", self.cache, exc)
        self._writers = [t for t in self._writers if t.is_alive()]
        t = threading.Thread(target=work, name="vigil-roster-cache", daemon=True)
        t.start()
        self._writers.append(t)
