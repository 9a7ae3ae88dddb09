"""`vigil` command line: a thin dispatcher that imports only the chosen command's module.

Each command lives in ``vigil/commands/<module>.py`` and defines::

    HELP: str
    def configure(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...

Heavy libraries are imported inside ``run`` so that ``vigil --help`` and the daemon start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from vigil import __version__
from vigil.errors import VigilError

# command name -> (module under vigil.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the monitoring daemon (acquisition, analysis, alarms, store, bus)"),
    "demo": ("demo", "start a private broker, the daemon on replayed real ECG, and the dashboard"),
    "tui": ("tui", "open the facilitator dashboard"),
    "sync": ("sync", "drain the outbox to the cloud; `sync status` shows the queues"),
    "analyze": ("analyze", "run the streaming ECG analyser over a record and print JSON"),
    "replay": ("replay", "run a record or stored session through the live pipeline on a simulated clock"),
    "export": ("export", "export a stored session (wfdb, edf, pdf, fhir, csv)"),
    "sessions": ("sessions", "list stored sessions"),
    "devices": ("devices", "list profiles, scan BLE, watch a device, pair a device to a guest"),
    "doctor": ("doctor", "check the appliance and print a table of problems with fixes"),
    "check-config": ("check_config", "validate a config file; every error names its key and line"),
}


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * verbosity if verbosity else getattr(
        logging, os.environ.get("VIGIL_LOG_LEVEL", "INFO").upper(), logging.INFO)
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """Build the parser; only `command`'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(prog="vigil", description="Vigil ceremony-room monitoring appliance. "
                                     "A monitoring aid, not a certified medical device.")
    parser.add_argument("--version", action="version", version=f"vigil {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(f"vigil.commands.{module_name}")
            module.configure(sp)
            sp.set_defaults(_run=module.run)
    return parser


def _find_command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if arg in COMMANDS:
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vigil` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_find_command(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except VigilError as exc:
        print(f"vigil {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
