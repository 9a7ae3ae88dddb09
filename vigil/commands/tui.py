"""`vigil tui`: the facilitator dashboard (Textual) on the room's broker; any number may run at once."""

from __future__ import annotations

import argparse
import logging

HELP = "open the facilitator dashboard"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the dashboard's options."""
    parser.add_argument("--config", "-c", required=True, metavar="FILE",
                        help="config.toml of the room (broker, guests, thresholds, operators)")
    parser.add_argument("--operator", metavar="NAME", default=None,
                        help="operator name for commands (one of [[operators]]; default: the only one configured)")
    parser.add_argument("--host", default=None, help="broker host (default: mqtt.host of the config)")
    parser.add_argument("--port", type=int, default=None, help="broker port (default: mqtt.port of the config)")
    parser.add_argument("--username", default=None,
                        help="broker user of this operator (default: the operator's name when it has mqtt_password_file, else mqtt.username); the broker's ACL "
                             "should let it write only vigil/<room>/cmd/<operator>")
    parser.add_argument("--password-file", default=None, metavar="FILE",
                        help="that user's broker password (a secret file: mode 600, next to the config or in "
                             "$CREDENTIALS_DIRECTORY; default: the operator's mqtt_password_file, else mqtt.password_file)")
    parser.add_argument("--night", action="store_true", help="start in night mode (dim red/amber)")
    parser.add_argument("--large", action="store_true", help="start with large digits")
    parser.add_argument("--log", metavar="FILE", default=None,
                        help="write log messages to FILE (the terminal belongs to the dashboard)")


def connection(cfg: object, operator: str | None, host: str | None = None, port: int | None = None, *,
               username: str | None = None, password_file: str | None = None) -> object:
    """Resolve the broker address and login, the operator and their secrets from the config (ConfigError if unknown)."""
    from vigil.config import VigilConfig, read_secret
    from vigil.errors import ConfigError
    from vigil.tui.app import Connection

    assert isinstance(cfg, VigilConfig)
    ops = {o.name: o for o in cfg.operators}
    if operator is None:
        if len(ops) != 1:
            raise ConfigError("choose an operator with --operator NAME (configured: "
                              f"{', '.join(sorted(ops)) or 'none'})", [("operators", None, "ambiguous operator")])
        operator = next(iter(ops))
    op = ops.get(operator)
    if op is None:
        raise ConfigError(f"operator {operator!r} is not in [[operators]] of the config "
                          f"(configured: {', '.join(sorted(ops)) or 'none'})", [("operators", None, "unknown operator")])
    secret = read_secret(cfg, op.secret_file, what=f"operator {op.name} secret_file") if op.secret_file else None
    m = cfg.mqtt
    role_user, role_pw_file = cfg.mqtt_credentials("dashboard", op.name)
    role_what = (f"operator {op.name} mqtt_password_file" if op.mqtt_password_file else "mqtt.password_file")
    pw_file, pw_what = (password_file, "--password-file") if password_file else (role_pw_file, role_what)
    password = read_secret(cfg, pw_file, what=pw_what).decode().strip() if pw_file else None
    return Connection(room=cfg.site.room, host=host or m.host, port=port or m.port, operator=op.name, secret=secret,
                      username=username or role_user, password=password)


def run(args: argparse.Namespace) -> int:
    """Load the config and run the dashboard until `q`."""
    from vigil.config import load_config
    from vigil.tui.app import DashboardApp
    from vigil.tui.model import RoomView

    cfg = load_config(args.config)
    conn = connection(cfg, args.operator, args.host, args.port, username=args.username,
                      password_file=args.password_file)
    root = logging.getLogger()
    for h in list(root.handlers):  # stderr log lines would scribble over the dashboard
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            root.removeHandler(h)
    if args.log:
        fh = logging.FileHandler(args.log)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
    app = DashboardApp(conn, RoomView.from_config(cfg), night=args.night, large=args.large)  # type: ignore[arg-type]
    app.run()
    return int(app.return_code or 0)
