#!/usr/bin/env bash
# Install Vigil as an appliance (Raspberry Pi OS / Debian): `sudo make install`.
#
#   users/groups  vigil (daemon + sync; groups dialout bluetooth audio), vigil-tui (dashboards)
#   code + venv   $PREFIX (default /opt/vigil): source copy, $PREFIX/.venv with `pip install -e`
#   config        /etc/vigil/config.toml (kept if present; example next to it)
#   secrets       /etc/vigil/credentials/ (0700 root): store key, broker passwords, operator
#                 secrets; handed to the services with LoadCredential= only
#   state         /var/lib/vigil (0700 vigil)
#   broker        /etc/mosquitto/conf.d/vigil.conf, /etc/mosquitto/vigil.acl, /etc/mosquitto/vigil.passwd
#   units         /etc/systemd/system/vigil.service, vigil-sync.service, vigil-tui@.service (enabled)
#
# Options (or environment): --destdir DIR (DESTDIR) stages everything under DIR and only *prints*
# the system-changing commands (useradd, chown, systemctl) to DIR/install-plan.txt instead of
# running them; --prefix DIR (PREFIX); --no-venv (VIGIL_NO_VENV=1) skips creating the venv.
# Re-running is safe: existing config and secrets are never overwritten.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/vigil}
NO_VENV=${VIGIL_NO_VENV:-0}
PY=${PY:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) DESTDIR=$2; shift 2 ;;
    --prefix) PREFIX=$2; shift 2 ;;
    --no-venv) NO_VENV=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

ETC=$DESTDIR/etc/vigil
CRED=$ETC/credentials
STATE=$DESTDIR/var/lib/vigil
MOSQ=$DESTDIR/etc/mosquitto
UNITS=$DESTDIR/etc/systemd/system
APP=$DESTDIR$PREFIX
PLAN=${DESTDIR:+$DESTDIR/install-plan.txt}

if [ -z "$DESTDIR" ] && [ "$(id -u)" != "0" ]; then
  echo "install.sh: run as root (sudo make install), or stage with --destdir DIR" >&2
  exit 1
fi
if [ -n "$PLAN" ]; then mkdir -p "$DESTDIR"; : > "$PLAN"; fi

# A system-changing command: run it, or (staged install) write it to the plan.
sys() {
  if [ -n "$DESTDIR" ]; then printf '%s\n' "$*" >> "$PLAN"; else "$@"; fi
}
say() { echo "install: $*" >&2; }

# ------------------------------------------------------------------ packages, users, groups
if [ -z "$DESTDIR" ]; then
  "$SRC/scripts/ensure-system-packages.sh" python
  "$SRC/scripts/ensure-system-packages.sh"
fi
for g in dialout bluetooth audio; do
  getent group "$g" >/dev/null 2>&1 || sys groupadd --system "$g"
done
id vigil >/dev/null 2>&1 || sys useradd --system --home-dir /var/lib/vigil --no-create-home \
  --shell /usr/sbin/nologin --user-group vigil
sys usermod -a -G dialout,bluetooth,audio vigil
id vigil-tui >/dev/null 2>&1 || sys useradd --system --no-create-home --shell /usr/sbin/nologin \
  --user-group vigil-tui

# ------------------------------------------------------------------ code and venv
say "code -> $APP"
mkdir -p "$APP"
tar -C "$SRC" --exclude=.venv --exclude=.git --exclude='*.egg-info' --exclude=__pycache__ \
  --exclude=.pytest_cache --exclude=.mypy_cache --exclude=.ruff_cache \
  -cf - vigil firmware-profiles pyproject.toml README.md config.toml systemd scripts | tar -C "$APP" -xf -
if [ "$NO_VENV" != "1" ]; then
  say "venv -> $APP/.venv"
  [ -x "$APP/.venv/bin/python" ] || "$PY" -m venv "$APP/.venv"
  "$APP/.venv/bin/pip" install -q --disable-pip-version-check -e "$APP"
fi

# ------------------------------------------------------------------ config, secrets, state
install -d -m 0755 "$ETC"
install -m 0644 "$SRC/config.toml" "$ETC/config.toml.example"
if [ ! -e "$ETC/config.toml" ]; then
  # the example with the store in the state directory; edit guests/devices before starting
  sed -e 's#^path = ".*vigil.db"#path = "/var/lib/vigil/vigil.db"#' "$SRC/config.toml" > "$ETC/config.toml"
  chmod 0640 "$ETC/config.toml"
  say "wrote $ETC/config.toml from the example: edit it, then run: vigil doctor"
fi
sys chown root:vigil /etc/vigil/config.toml
install -d -m 0700 "$CRED"
install -d -m 0700 "$STATE"
sys chown vigil:vigil /var/lib/vigil

newsecret() {  # newsecret FILE NBYTES: random hex, mode 600, never overwritten
  [ -e "$1" ] && return 0
  (umask 077; od -An -tx1 -N"$2" /dev/urandom | tr -d ' \n' > "$1")
}
newsecret "$CRED/store.key" 32
for f in booking.secret fhir.client-secret sendgrid.key twilio.token; do
  [ -e "$CRED/$f" ] || (umask 077; : > "$CRED/$f")   # placeholders: paste the provider's secret
done

# broker users: the daemon, sync, and one per operator named in the config (user = operator name)
operators=$("$PY" - "$ETC/config.toml" <<'EOF'
import sys, tomllib
try:
    cfg = tomllib.load(open(sys.argv[1], "rb"))
except (OSError, tomllib.TOMLDecodeError):
    cfg = {}
print(" ".join(o["name"] for o in cfg.get("operators", []) if "name" in o))
EOF
)
newsecret "$CRED/mqtt-daemon.password" 24
newsecret "$CRED/mqtt-sync.password" 24
first=""
for op in $operators; do
  newsecret "$CRED/mqtt-$op.password" 24
  newsecret "$CRED/operator-$op.secret" 32
  first=${first:-$op}
done

# ------------------------------------------------------------------ broker
install -d -m 0755 "$MOSQ/conf.d"
install -m 0644 "$SRC/systemd/mosquitto-vigil.conf" "$MOSQ/conf.d/vigil.conf"
install -m 0644 "$SRC/systemd/mosquitto-vigil.acl" "$MOSQ/vigil.acl"
passwd="$MOSQ/vigil.passwd"
(umask 077; : > "$passwd")
addpw() { mosquitto_passwd -b "$passwd" "$1" "$(cat "$2")"; }
addpw vigil-daemon "$CRED/mqtt-daemon.password"
addpw vigil-sync "$CRED/mqtt-sync.password"
for op in $operators; do addpw "$op" "$CRED/mqtt-$op.password"; done
chmod 0640 "$passwd"
sys chown root:mosquitto /etc/mosquitto/vigil.passwd

# ------------------------------------------------------------------ units
install -d -m 0755 "$UNITS"
for unit in vigil.service vigil-sync.service vigil-tui@.service; do
  sed -e "s#/opt/vigil/#$PREFIX/#g" "$SRC/systemd/$unit" > "$UNITS/$unit"
  chmod 0644 "$UNITS/$unit"
done
# the daemon verifies every operator's signed commands: hand it each operator secret
install -d -m 0755 "$UNITS/vigil.service.d"
{
  echo "# written by install.sh from the [[operators]] in /etc/vigil/config.toml"
  echo "[Service]"
  for op in $operators; do
    echo "LoadCredential=operator-$op.secret:/etc/vigil/credentials/operator-$op.secret"
  done
} > "$UNITS/vigil.service.d/operators.conf"
chmod 0644 "$UNITS/vigil.service.d/operators.conf"
# the tty dashboard (vigil-tui@.service) signs in as the first operator (OPERATOR=name to choose)
tui_op=${OPERATOR:-$first}
if [ -n "$tui_op" ]; then
  install -d -m 0755 "$UNITS/vigil-tui@.service.d"
  cat > "$UNITS/vigil-tui@.service.d/operator.conf" <<EOF
# written by install.sh: the dashboard's operator and that operator's credentials
[Service]
Environment=VIGIL_OPERATOR=$tui_op
LoadCredential=operator-$tui_op.secret:/etc/vigil/credentials/operator-$tui_op.secret
LoadCredential=mqtt-$tui_op.password:/etc/vigil/credentials/mqtt-$tui_op.password
EOF
  chmod 0644 "$UNITS/vigil-tui@.service.d/operator.conf"
fi
sys systemctl daemon-reload
sys systemctl enable mosquitto.service vigil.service vigil-sync.service
sys systemctl restart mosquitto.service
say "installed. Check with: $PREFIX/.venv/bin/vigil doctor --config /etc/vigil/config.toml"
say "then: systemctl start vigil vigil-sync; a dashboard on tty1: systemctl enable --now vigil-tui@tty1"
