"""`vigil sync` (drain the outbox to the cloud) and `vigil sync status [--json]`."""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = "drain the outbox to the cloud; `sync status` shows the queues"


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `vigil sync`."""
    parser.add_argument("action", nargs="?", choices=["run", "status"], default="run",
                        help="run the worker (default) or show the status")
    parser.add_argument("--config", default=os.environ.get("VIGIL_CONFIG", "/etc/vigil/config.toml"))
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.add_argument("--drain", action="store_true", help="exit once every queue is empty")
    parser.add_argument("--roster-interval", type=float, default=30.0, metavar="S",
                        help="seconds between roster pulls (default 30)")


def _status(cfg: object, as_json: bool) -> int:
    from vigil.config import VigilConfig
    from vigil.store import RecordStore
    from vigil.sync.service import STATUS_FILE
    from vigil.sync.status import format_table, read_status_file
    from vigil.sync.worker import build_status

    assert isinstance(cfg, VigilConfig)
    path = cfg.resolve_path(cfg.store.path)
    if not path.exists():
        print(f"no record store at {path}", file=sys.stderr)
        return 1
    store = RecordStore.open(path)
    try:
        stats = store.outbox_stats()
    finally:
        store.close()
    live = read_status_file(path.parent / STATUS_FILE) or {}
    streams = {n: d for n, d in live.get("destinations", {}).items()}
    import time

    status = build_status(stats, streams, time.time())  # counts fresh from the store, breaker from the worker
    for name, d in status["destinations"].items():
        if name not in streams:
            d["breaker"] = "not running"
    status["worker_updated"] = live.get("updated")
    if as_json:
        print(json.dumps(status, indent=1))
    else:
        print(format_table(status))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the worker or print the status."""
    from vigil.config import load_config
    from vigil.errors import ConfigError, SecretError, SyncError

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"vigil sync: {exc}", file=sys.stderr)
        return 78
    if args.action == "status":
        return _status(cfg, args.json)
    from vigil.sync.service import run_sync

    try:
        return run_sync(cfg, drain=args.drain, roster_interval_s=args.roster_interval)
    except SecretError as exc:
        print(f"vigil sync: cannot start: {exc}. Sync stays stopped; the monitoring daemon is not affected.",
              file=sys.stderr)
        return 78
    except SyncError as exc:
        print(f"vigil sync: {exc}", file=sys.stderr)
        return 1
