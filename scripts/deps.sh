#!/usr/bin/env bash
# Debian packages the kit needs on the control machine (tests, loopback stack, uWSGI build).
# Idempotent: apt runs only when something is missing. sudo when not root.
set -euo pipefail
packages=(
  nginx redis-server            # the loopback stack and integration tests run the real servers
  build-essential python3-dev python3-venv libssl-dev   # uWSGI compiled with SSL (websocket handshake)
  systemd                       # systemd-analyze verify for the rendered units
  chromium chromium-driver      # the demo page tested in a real browser
  iproute2 procps curl ca-certificates git openssl
  prometheus                    # promtool: tests/unit/test_alert_rules.py checks and tests the alert rules
)
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)   # the official Socket.IO JS client
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d: never start the distribution's nginx/redis services on the control machine.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
