"""`vigil run --config FILE`: the monitoring daemon (acquisition, analysis, alarms, store, bus)."""

from __future__ import annotations

import argparse

HELP = "run the monitoring daemon (acquisition, analysis, alarms, store, bus)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the daemon's options."""
    parser.add_argument("--config", "-c", required=True, metavar="FILE", help="config.toml to run")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop after S seconds (default: run until SIGTERM/SIGINT)")
    parser.add_argument("--speed", type=float, default=None, metavar="X",
                        help="override the speed of every replayed device (× real time)")


def run(args: argparse.Namespace) -> int:
    """Load the config and run the daemon until SIGTERM/SIGINT."""
    from vigil.config import load_config
    from vigil.edge.daemon import run_daemon

    cfg = load_config(args.config)
    return run_daemon(cfg, duration_s=args.duration, speed=args.speed)
