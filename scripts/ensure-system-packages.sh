#!/usr/bin/env bash
# Make sure the Debian packages Vigil needs are present: install them with apt-get when run as
# root, otherwise stop and print the exact command to run.
set -euo pipefail
want=()
if [ "${1:-}" = "python" ]; then
  python3 -c 'import venv, ensurepip' 2>/dev/null || want+=(python3-venv)
else
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || want+=(mosquitto)
  command -v mosquitto_pub >/dev/null 2>&1 || want+=(mosquitto-clients)
  command -v pdftoppm >/dev/null 2>&1 || want+=(poppler-utils)
  command -v tmux >/dev/null 2>&1 || want+=(tmux)
  command -v socat >/dev/null 2>&1 || want+=(socat)
fi
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ]; then
  echo "Installing system packages: ${want[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  # Debian starts mosquitto's own service on port 1883; Vigil runs private brokers and does not need it.
else
  echo "Vigil needs these system packages: ${want[*]}" >&2
  echo "Run:  sudo apt-get update && sudo apt-get install -y ${want[*]}" >&2
  exit 1
fi
