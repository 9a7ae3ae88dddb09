"""`vigil export SESSION [--guest MAT] [--from T --to T] --format wfdb|edf|pdf|fhir|csv --out DIR`.

Streams the stored session into a new folder ``DIR/<session>_<mat|all>_<format>`` (staged, renamed into
place only when complete), decrypting with the store key of ``--config``. Every export is audited
(``--operator`` or the OS user) and announced to the booking platform (outbox ``export.created``).
Exit 0 on success, 2 with a one-line reason otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

HELP = "export a stored session (wfdb, edf, pdf, fhir, csv)"


def add_store_args(parser: argparse.ArgumentParser) -> None:
    """--config and --store (shared with `vigil sessions`)."""
    parser.add_argument("--config", "-c", default=os.environ.get("VIGIL_CONFIG", "/etc/vigil/config.toml"),
                        help="config.toml naming the store and its key (default: $VIGIL_CONFIG or /etc/vigil/config.toml)")
    parser.add_argument("--store", metavar="FILE", help="record store file (default: store.path of the config)")


def open_store(args: argparse.Namespace) -> tuple[Any, Any]:
    """(config, RecordStore) for `args`; VigilError with the reason when the store or key is unusable."""
    from pathlib import Path

    from vigil.config import VigilConfig, load_config
    from vigil.errors import ExportError
    from vigil.store import RecordStore
    from vigil.store.crypto import load_key

    if os.path.exists(args.config) or not args.store:
        cfg = load_config(args.config)
    else:  # --store alone: default settings, no key
        cfg = VigilConfig.model_validate({"site": {"name": "export", "room": "export"}})
    path = Path(args.store) if args.store else cfg.resolve_path(cfg.store.path)
    if not path.exists():
        raise ExportError(f"no record store at {path}")
    key = load_key(cfg, cfg.store.key_file) if cfg.store.key_file else None
    return cfg, RecordStore.open(path, key=key)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `vigil export`."""
    from vigil.export.common import FORMATS

    parser.add_argument("session", metavar="SESSION", help="session id (or a unique prefix; see `vigil sessions`)")
    parser.add_argument("--format", "-f", required=True, choices=FORMATS)
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="folder to create the export in")
    parser.add_argument("--guest", "-g", metavar="MAT", help="one guest (default: every guest)")
    parser.add_argument("--from", dest="from_", metavar="T",
                        help="start: ISO 8601 (UTC if no zone), Unix seconds, or +90m/+1h30m from the session start")
    parser.add_argument("--to", metavar="T", help="end (same forms as --from)")
    parser.add_argument("--operator", metavar="NAME", help="who exports (audit; default: the OS user)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar on stderr (default: when stderr is a terminal)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_store_args(parser)


def run(args: argparse.Namespace) -> int:
    """Run one export."""
    from vigil.export.api import export_session
    from vigil.export.common import Progress, find_session, parse_time

    cfg, store = open_store(args)
    try:
        session = find_session(store, args.session)
        start = session.started_wall
        from_wall = parse_time(args.from_, start) if args.from_ else None
        to_wall = parse_time(args.to, start) if args.to else None
        show = sys.stderr.isatty() if args.progress is None else args.progress
        progress = Progress(enabled=show, label=f"export {args.format}")
        res = export_session(store, session.id, args.format, args.out, mat=args.guest, from_wall=from_wall,
                             to_wall=to_wall, operator=args.operator, thresholds=cfg.thresholds_for,
                             progress=progress)
    finally:
        store.close()
    if args.json:
        print(json.dumps(res.to_json(), indent=1))
    else:
        print(f"{res.path}: {len(res.files)} files, {res.bytes / 1e6:.2f} MB, {len(res.guests)} guest(s), "
              f"{res.seconds:.1f} s")
        for w in res.warnings:
            print(f"warning: {w}", file=sys.stderr)
    return 0
