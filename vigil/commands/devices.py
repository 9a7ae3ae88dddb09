"""`vigil devices`: list firmware profiles, scan BLE, watch a device live, pair a device to a guest."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

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
    import asyncio

    from vigil.edge.transports.ble import scan

    try:
        found = asyncio.run(scan(args.timeout, battery=not args.no_battery))
    except Exception as exc:  # noqa: BLE001 - bleak raises many kinds when there is no adapter
        print(f"vigil devices scan: no usable Bluetooth adapter ({type(exc).__name__}: {exc}).\n"
              "Check: bluetoothd running, an adapter present (hciconfig / bluetoothctl list), kernel Bluetooth support.",
              file=sys.stderr)
        return 2
    print(f"{'ADDRESS':<19} {'RSSI':>5}  {'PROFILE':<26} {'BATTERY':>7}  NAME")
    for d in found:
        level = f"{d['battery']} %" if d.get("battery") is not None else "-"
        print(f"{d['address']:<19} {d['rssi']:>5}  {d['profile'] or '-':<26} {level:>7}  {d['name'] or ''}")
    return 0


def _watch(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from vigil.clock import SystemClock
    from vigil.edge.profiles import get_profile
    from vigil.edge.supervisor import DeviceSupervisor
    from vigil.edge.transports.base import Stamper
    from vigil.model import NumericReading, SampleBlock, TechnicalEvent

    profile = get_profile(args.profile)
    line: dict[str, object] = {}
    for item in args.line:
        key, _, value = item.partition("=")
        line[key] = int(value) if value.isdigit() else value
    if profile.transport == "serial":
        from vigil.edge.transports.serial import SerialTransport

        def factory(st: Stamper) -> SerialTransport:
            return SerialTransport("watch", profile, args.where, st, line=line)
    elif profile.transport == "ble":
        from vigil.edge.transports.ble import BleTransport

        def factory(st: Stamper) -> BleTransport:  # type: ignore[misc]
            return BleTransport("watch", profile, args.where, st)
    else:
        print(f"vigil devices watch: profile {profile.name} is a {profile.transport} source; use `vigil replay`",
              file=sys.stderr)
        return 2

    async def main() -> None:
        t0 = time.monotonic()
        async with DeviceSupervisor("watch", profile, factory, SystemClock()) as sup:
            async for out in sup:
                t = out.t_mono - t0
                if isinstance(out, NumericReading):
                    flags = f" [{','.join(out.flags)}]" if out.flags else ""
                    print(f"{t:8.2f}  {out.metric.value:<14} {out.value:8.1f} {out.metric.unit}{flags}", flush=True)
                elif isinstance(out, SampleBlock):
                    print(f"{t:8.2f}  {out.channel:<14} seq {out.seq:>8} +{len(out.samples):<4} "
                          f"min {int(out.samples.min())} max {int(out.samples.max())} {out.unit}", flush=True)
                elif isinstance(out, TechnicalEvent):
                    print(f"{t:8.2f}  {out.kind.value:<14} {'ON ' if out.active else 'off'} {out.detail}", flush=True)
                if args.seconds is not None and time.monotonic() - t0 >= args.seconds:
                    return

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def _pair(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vigil.config import parse_config
    from vigil.edge.profiles import get_profile

    get_profile(args.profile)  # must exist
    path = Path(args.config)
    text = path.read_text(encoding="utf-8")
    cfg = parse_config(text, path)
    if cfg.guest(args.guest) is None:
        print(f"vigil devices pair: no guest on mat {args.guest!r} in {path}", file=sys.stderr)
        return 2
    new = edit_pairing(text, args.guest, args.device_id, args.profile,
                       ("address", args.address) if args.address else ("port", args.port))
    parse_config(new, path)  # validate before writing
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)
    print(f"paired {args.device_id} ({args.profile}) to mat {args.guest} in {path}")
    return 0


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def edit_pairing(text: str, mat: str, device_id: str, profile: str, where: tuple[str, str]) -> str:
    """Minimal TOML edit: add or update the [[devices]] entry and add it to the guest's `devices` list."""
    import re
    import tomllib

    data = tomllib.loads(text)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    # drop the device from any other guest, then add it to this guest
    for g in data.get("guests", []):
        if g.get("mat") != mat and device_id in g.get("devices", []):
            raise ValueError(f"device {device_id!r} is already assigned to mat {g.get('mat')!r}; unpair it first")
    # 1) the [[devices]] table
    headers = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[\[?", ln)]
    dev_starts = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[\[devices\]\]", ln)]
    target = None
    for _k, start in enumerate(dev_starts):
        end = next((h for h in headers if h > start), len(lines))
        if any(re.match(rf"^\s*id\s*=\s*[\"']{re.escape(device_id)}[\"']", lines[j]) for j in range(start + 1, end)):
            target = (start, end)
            break
    key, value = where
    if target is None:
        block = ["\n", "[[devices]]\n", f"id = {_toml_str(device_id)}\n", f"profile = {_toml_str(profile)}\n",
                 f"{key} = {_toml_str(value)}\n"]
        insert_at = next((h for h in headers if h > dev_starts[-1]), len(lines)) if dev_starts else len(lines)
        lines[insert_at:insert_at] = block
    else:
        start, end = target
        for name, val in (("profile", profile), (key, value)):
            idx = next((j for j in range(start + 1, end) if re.match(rf"^\s*{name}\s*=", lines[j])), None)
            if idx is None:
                lines.insert(end, f"{name} = {_toml_str(val)}\n")
                end += 1
            else:
                lines[idx] = f"{name} = {_toml_str(val)}\n"
    # 2) the guest's devices list
    headers = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[\[?", ln)]
    for start in [i for i, ln in enumerate(lines) if re.match(r"^\s*\[\[guests\]\]", ln)]:
        end = next((h for h in headers if h > start), len(lines))
        if not any(re.match(rf"^\s*mat\s*=\s*[\"']{re.escape(mat)}[\"']", lines[j]) for j in range(start + 1, end)):
            continue
        idx = next((j for j in range(start + 1, end) if re.match(r"^\s*devices\s*=", lines[j])), None)
        guest = next(g for g in data["guests"] if g.get("mat") == mat)
        devices = list(guest.get("devices", []))
        if device_id not in devices:
            devices.append(device_id)
        rendered = "devices = [" + ", ".join(_toml_str(d) for d in devices) + "]\n"
        if idx is None:
            last = max(j for j in range(start, end) if lines[j].strip() and not lines[j].lstrip().startswith("#"))
            lines.insert(last + 1, rendered)
        elif lines[idx].count("[") == lines[idx].count("]"):
            comment = re.search(r"\]\s*(#.*)$", lines[idx])
            lines[idx] = rendered.rstrip("\n") + (f"  {comment.group(1)}" if comment else "") + "\n"
        else:
            raise ValueError("the guest's devices list spans several lines; edit it by hand")
        break
    return "".join(lines)
