"""The fault schedule of a soak night (pure: times in simulated seconds, durations in wall seconds)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# kind -> (occurrences per simulated hour, phase as a fraction of the spacing, wall duration s)
FAULT_RATES: dict[str, tuple[float, float, float]] = {
    "broker_restart": (0.5, 0.20, 4.0),    # mosquitto SIGKILLed, back after the duration
    "serial_garbage": (0.5, 0.30, 20.0),   # a truncated packet after every 5th oximeter packet
    "cloud_outage": (0.5, 0.40, 30.0),     # booking platform refuses connections
    "sync_kill": (0.5, 0.45, 1.0),         # `vigil sync` SIGKILLed mid-delivery, restarted
    "clock_jump": (0.5, 0.50, 0.0),        # wall clock of daemon and sync steps ±1 h (alternating)
    "disk_full": (0.25, 0.55, 25.0),       # ballast leaves less than store.min_free_mb on the store's disk
    "serial_storm": (0.5, 0.65, 8.0),      # oximeters unplugged/replugged once a second
    "cloud_5xx": (0.5, 0.80, 20.0),        # booking platform answers 503
    "ble_storm": (0.5, 0.60, 12.0),        # BLE peripherals drop their links / power off and on once a second
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: starts at `at_s` simulated seconds, lasts `duration_s` wall seconds."""

    at_s: float
    kind: str
    duration_s: float = 0.0
    params: dict[str, float] = field(default_factory=dict)


def schedule(sim_s: float, *, seed: int = 1, kill_every_s: float = 600.0, jitter: float = 0.2,
             kinds: frozenset[str] | None = None) -> list[Fault]:
    """Faults for a night of `sim_s` simulated seconds, sorted by time; every kind at least once.

    `kill_every_s` is the mean simulated interval between daemon SIGKILLs (±`jitter`); the first
    and last 5 % of the night are left quiet so that start-up and the final drain are clean.
    """
    rng = random.Random(seed)
    lo, hi = 0.05 * sim_s, 0.95 * sim_s
    out: list[Fault] = []
    wanted = set(FAULT_RATES) | {"daemon_kill"} if kinds is None else set(kinds)
    for kind, (per_hour, phase, duration) in FAULT_RATES.items():
        if kind not in wanted:
            continue
        n = max(1, round(per_hour * sim_s / 3600.0))
        spacing = (hi - lo) / n
        for i in range(n):
            at = lo + spacing * (i + phase) + rng.uniform(-jitter, jitter) * spacing * 0.5
            params = {"seconds": 3600.0 if i % 2 == 0 else -3600.0} if kind == "clock_jump" else {}
            out.append(Fault(round(min(max(at, lo), hi), 1), kind, duration, params))
    if "daemon_kill" in wanted and kill_every_s > 0:
        t = lo + kill_every_s * rng.uniform(0.3, 0.7)
        while t < hi:
            out.append(Fault(round(t, 1), "daemon_kill", 1.0))
            t += kill_every_s * rng.uniform(1 - jitter, 1 + jitter)
    if "clock_jump" in wanted:  # end where we started: undo a jump left standing
        net = sum(f.params["seconds"] for f in out if f.kind == "clock_jump")
        if net:
            out.append(Fault(round(hi, 1), "clock_jump", 0.0, {"seconds": -net}))
    return sorted(out, key=lambda f: (f.at_s, f.kind))
