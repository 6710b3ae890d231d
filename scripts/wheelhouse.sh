#!/usr/bin/env bash
# Build the wheelhouse the app and loadgen hosts install from (`make wheelhouse`), once, on the
# control node: every pinned dependency of the app, and uWSGI compiled WITH SSL (without it the
# websocket handshake fails and clients silently stay on long-polling, unbit/uwsgi #744).
#
#   scripts/wheelhouse.sh [OUTDIR]          default OUTDIR: <repo>/wheelhouse (gitignored)
#
# The wheels are built INSIDE a container of the hosts' own image (Debian 12: python3.11, libssl3),
# never with the control node's Python, which may be another build (pyenv) with another ABI.
# Then use it:  ansible-playbook ... -e kit_wheelhouse=$PWD/wheelhouse
#
# Environment:
#   SIOKIT_IMAGE     image to build in (default siokit/debian12-systemd:latest, scripts/build-image.sh)
#   DOCKER           docker client (default /usr/bin/docker, which speaks the 20.10 daemon's API)
#   PIP_INDEX_URL    passed into the container when set
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/wheelhouse}" && cd "${1:-$ROOT/wheelhouse}" && pwd)"
IMAGE="${SIOKIT_IMAGE:-siokit/debian12-systemd:latest}"
DOCKER="${DOCKER:-/usr/bin/docker}"
export DOCKER_API_VERSION="${DOCKER_API_VERSION:-1.41}"
log() { printf '[wheelhouse] %s\n' "$*" >&2; }

"$ROOT/scripts/docker-ensure.sh"
"$ROOT/scripts/build-image.sh"

# The package list is pyproject.toml's (one list for make venv, the kit role and this script),
# quoted for the shell inside the container ("python-engineio>=4.2.1").
PACKAGES="$(PYTHONPATH="$ROOT" python3 -m siokit.dependencies --extra uwsgi --shell)"
[ -n "$PACKAGES" ] || { log "no dependencies in pyproject.toml"; exit 1; }
CONSTRAINTS=""
if [ -f "$ROOT/constraints.txt" ]; then
    CONSTRAINTS="-c /src/constraints.txt"
else
    log "WARNING: no constraints.txt: the wheels are the newest versions, not pinned ones"
fi

env_args=(-e PIP_DISABLE_PIP_VERSION_CHECK=1 -e PIP_DEFAULT_TIMEOUT=180)
[ -n "${PIP_INDEX_URL:-}" ] && env_args+=(-e "PIP_INDEX_URL=$PIP_INDEX_URL")

log "building in $IMAGE: $PACKAGES"
t0=$SECONDS
# shellcheck disable=SC2086  # word splitting of CONSTRAINTS and PACKAGES is intended
"$DOCKER" run --rm --pull=never --network bridge "${env_args[@]}" \
    -v "$ROOT:/src:ro" -v "$OUT:/out" "$IMAGE" /bin/bash -euc "
        python3 -m venv /tmp/venv
        /tmp/venv/bin/pip install --quiet wheel
        /tmp/venv/bin/pip wheel --quiet --wheel-dir /out $CONSTRAINTS $PACKAGES
        # Prove it: install from the wheelhouse alone, then check uWSGI links OpenSSL.
        /tmp/venv/bin/pip install --quiet --no-index --find-links /out $CONSTRAINTS $PACKAGES
        /tmp/venv/bin/uwsgi --version >/dev/null
        if ! ldd /tmp/venv/bin/uwsgi | grep -q 'libssl'; then
            echo 'uWSGI was built without SSL (libssl-dev missing in the image?)' >&2; exit 1
        fi
        echo \"uWSGI \$(/tmp/venv/bin/uwsgi --version) with \$(ldd /tmp/venv/bin/uwsgi | grep -o 'libssl[^ ]*')\"
        chown -R $(id -u):$(id -g) /out
    "
log "$(find "$OUT" -name '*.whl' | wc -l) wheels in $OUT ($((SECONDS - t0)) s)"
