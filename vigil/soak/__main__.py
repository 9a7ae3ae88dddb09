"""`python -m vigil.soak` (`make soak`): run a simulated night with injected faults and print the report."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vigil.soak.faults import FAULT_RATES


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the night, print the report; exit 1 when a check failed."""
    from vigil.soak.report import format_report
    from vigil.soak.runner import SoakOptions, run_soak

    ap = argparse.ArgumentParser(prog="python -m vigil.soak", description=__doc__)
    ap.add_argument("--hours", type=float, default=12.0, help="simulated hours (default 12)")
    ap.add_argument("--minutes", type=float, default=None, help="simulated minutes (overrides --hours)")
    ap.add_argument("--speed", type=float, default=10.0, help="replay speed, x real time (default 10)")
    ap.add_argument("--guests", type=int, default=20, help="guests, each on a replayed record (default 20)")
    ap.add_argument("--serial", type=int, default=2, help="guests that also wear an emulated serial oximeter")
    ap.add_argument("--ble", type=int, default=2,
                    help="guests that also wear a BLE pulse oximeter, reached by the daemon over HCI (default 2)")
    ap.add_argument("--kill-every", type=float, default=10.0, metavar="MIN",
                    help="simulated minutes between daemon SIGKILLs (mean, default 10)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faults", default=None,
                    help="comma-separated fault kinds (default all: daemon_kill," + ",".join(FAULT_RATES) + ")")
    ap.add_argument("--run-dir", type=Path, default=Path("run/soak"))
    ap.add_argument("--tmpfs-mb", type=int, default=0, help="size of the store's tmpfs (root; 0 = auto)")
    ap.add_argument("--keep", action="store_true", help="copy the store into the run folder")
    ap.add_argument("--drain-timeout", type=float, default=180.0, metavar="S",
                    help="how long sync may take to empty the outbox after the night (default 180)")
    ap.add_argument("--reanalyse", action="store_true",
                    help="recompute the report of the night in --run-dir (needs inputs.json and the store: --keep)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.reanalyse:
        from vigil.soak.report import reanalyse

        again = reanalyse(args.run_dir)
        print(format_report(again))
        return 0 if again.ok else 1
    hours = args.minutes / 60.0 if args.minutes is not None else args.hours
    kinds = frozenset(k.strip() for k in args.faults.split(",")) if args.faults else None
    opt = SoakOptions(hours=hours, speed=args.speed, guests=args.guests, serial=args.serial, ble=args.ble, seed=args.seed,
                      kill_every_min=args.kill_every, run_dir=args.run_dir, tmpfs_mb=args.tmpfs_mb, kinds=kinds,
                      keep=args.keep, drain_timeout_s=args.drain_timeout)
    report = run_soak(opt)
    print(format_report(report))
    print(f"\n(run folder: {opt.run_dir}; report.json and per-process logs there)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
