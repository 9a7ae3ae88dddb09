"""`vigil devices`: list firmware profiles, scan BLE, watch a device live, pair a device to a guest."""

from __future__ import annotations

import argparse
import os

HELP = "list profiles, scan BLE, watch a device, pair a device to a guest"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the `devices` sub-commands."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("profiles", help="list firmware profiles")
    sc = sub.add_parser("scan", help="scan for BLE devices and match them to profiles")
    sc.add_argument("--timeout", type=float, default=8.0, help="seconds to scan")
    sc.add_argument("--no-battery", action="store_true", help="do not connect to read battery levels")
    w = sub.add_parser("watch", help="print decoded readings of one device live")
    w.add_argument("profile")
    w.add_argument("where", metavar="ADDRESS|PORT", help="BLE address, serial port, pyserial URL or usb:VID:PID")
    w.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    w.add_argument("--line", action="append", default=[], metavar="KEY=VALUE",
                   help="serial line setting override, e.g. --line parity=N")
    p = sub.add_parser("pair", help="assign a device to a guest in config.toml")
    p.add_argument("guest", metavar="GUEST", help="the guest's mat id")
    p.add_argument("device_id", metavar="DEVICE_ID")
    p.add_argument("--profile", required=True)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--address")
    where.add_argument("--port")
    p.add_argument("--config", default=os.environ.get("VIGIL_CONFIG", "/etc/vigil/config.toml"))


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action."""
    action = {"profiles": _profiles, "scan": _scan, "watch": _watch, "pair": _pair}[args.action]
    return action(args)


def _profiles(args: argparse.Namespace) -> int:
    from vigil.edge.profiles import load_profiles, profiles_dir

    profiles = load_profiles()
    print(f"{len(profiles)} profiles in {profiles_dir()}")
    print(f"{'NAME':<24} {'TRANSPORT':<10} {'PARSERS':<34} DESCRIPTION")
    for name, p in profiles.items():
        parsers = ",".join(dict.fromkeys(s.parser for s in p.streams))
        print(f"{name:<24} {p.transport:<10} {parsers:<34} {p.description}")
    return 0


def _scan(args: argparse.Namespace) -> int:
    from vigil.commands.devices_impl import scan

    return scan(args)


def _watch(args: argparse.Namespace) -> int:
    from vigil.commands.devices_impl import watch

    return watch(args)


def _pair(args: argparse.Namespace) -> int:
    from vigil.commands.devices_impl import pair

    return pair(args)
