"""`vigil sessions [--json]`: the stored sessions with start/end, guests and hours of ECG stored."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "list stored sessions"


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `vigil sessions`."""
    from vigil.commands.export import add_store_args

    parser.add_argument("--json", action="store_true", help="one JSON document")
    add_store_args(parser)


def session_rows(store: Any) -> list[dict[str, Any]]:
    """One dict per session: id, room, start, end, guests (mats), hours of ECG stored, alarm events."""
    from vigil.export.common import iso, session_mats

    conn = store._conn  # noqa: SLF001 - aggregate query on the store's connection
    rows = []
    for s in store.sessions():
        hours = conn.execute("SELECT COALESCE(SUM(n / fs), 0) FROM waveform_chunks WHERE session_id=? AND kind='ecg'",
                             (s.id,)).fetchone()[0] / 3600.0
        alarms = conn.execute("SELECT COUNT(*) FROM alarm_events WHERE session_id=? AND event='raised'",
                              (s.id,)).fetchone()[0]
        rows.append({"id": s.id, "room": s.room, "start": iso(s.started_wall),
                     "end": iso(s.ended_wall) if s.ended_wall is not None else None,
                     "guests": session_mats(store, s.id), "ecg_hours": round(hours, 3), "alarms_raised": alarms})
    return rows


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON)."""
    from vigil.commands.export import open_store

    _cfg, store = open_store(args)
    try:
        rows = session_rows(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"sessions": rows}, indent=1))
        return 0
    if not rows:
        print("no stored sessions")
        return 0
    print(f"{'session':<26} {'room':<10} {'start (UTC)':<20} {'end (UTC)':<20} {'ECG h':>7} {'alarms':>6}  guests")
    for r in rows:
        end = r["end"][:19].replace("T", " ") if r["end"] else "(running)"
        print(f"{r['id']:<26} {r['room'][:10]:<10} {r['start'][:19].replace('T', ' '):<20} {end:<20} "
              f"{r['ecg_hours']:7.2f} {r['alarms_raised']:6d}  {len(r['guests'])}: {' '.join(r['guests'])}")
    return 0
