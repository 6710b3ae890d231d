#!/usr/bin/env bash
# Build the local systemd base image for the Molecule/Docker cluster, from the Debian mirror alone
# (there is no container registry to pull from).
#
#   scripts/build-image.sh            build siokit/debian12-systemd:latest unless it exists and was
#                                     built from this same recipe (label siokit.recipe)
#   scripts/build-image.sh --force    rebuild anyway
#
# Environment:
#   SIOKIT_IMAGE           image to use. If set to something other than the default, this script only
#                          checks that it exists locally and never builds or replaces it (bring your own).
#   SIOKIT_DEBIAN_MIRROR   Debian mirror (default: the first .../debian URI in the host's apt sources,
#                          else http://deb.debian.org/debian)
#   SIOKIT_SECURITY_MIRROR Debian security mirror (default: from the host's apt sources, else none)
#   SIOKIT_SUITE           default bookworm
#   SIOKIT_EXTRA_CA_DIR    extra CA certificates (*.crt) to trust inside the image, e.g. an egress
#                          proxy's CA (default: /usr/local/share/ca-certificates, i.e. what the host
#                          trusts beyond the Debian bundle); set empty to skip
#   SIOKIT_STATE_DIR       scratch space (default <repo>/.siokit)
#
# What goes in (see the report in molecule/cluster/README.md for the measurements):
#   installed  - what Ansible needs to manage a host fast and what the roles need without services:
#                systemd systemd-sysv dbus python3 python3-apt sudo iproute2 procps ca-certificates
#                curl python3-packaging (ansible.builtin.pip needs it on the target) python3-venv
#                python3-dev gcc libc6-dev libssl-dev libpcre2-dev
#   apt cache  - packages that bring a service, so they are NOT installed (they would run on every host)
#                but their .debs sit in /var/cache/apt/archives and the package lists are kept:
#                `apt install nginx|nginx-light|redis-server` in a role then needs no download.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SIOKIT_STATE_DIR:-$ROOT/.siokit}"
DEFAULT_IMAGE="siokit/debian12-systemd:latest"
IMAGE="${SIOKIT_IMAGE:-$DEFAULT_IMAGE}"
SUITE="${SIOKIT_SUITE:-bookworm}"
DOCKER="${DOCKER:-/usr/bin/docker}"
export DOCKER_API_VERSION="${DOCKER_API_VERSION:-1.41}"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

log() { printf '[build-image] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

INSTALL_PKGS="systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,procps,ca-certificates,curl"
INSTALL_PKGS="$INSTALL_PKGS,python3-packaging,python3-venv,python3-dev,gcc,libc6-dev,libssl-dev,libpcre2-dev"
CACHE_PKGS="nginx nginx-light redis-server"
# Units that cannot work (or only make noise / take apt's lock) in a container
MASK_UNITS="getty@.service getty.target console-getty.service serial-getty@.service
systemd-remount-fs.service systemd-firstboot.service systemd-udevd.service
systemd-udev-trigger.service systemd-udev-settle.service
dev-hugepages.mount sys-fs-fuse-connections.mount sys-kernel-config.mount sys-kernel-debug.mount
sys-kernel-tracing.mount proc-sys-fs-binfmt_misc.automount systemd-binfmt.service
apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer
man-db.timer systemd-logind.service"

RECIPE="$(cat "$0" | sha256sum | cut -c1-16)"

if [ "$IMAGE" != "$DEFAULT_IMAGE" ]; then
    if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
        log "using your image $IMAGE (SIOKIT_IMAGE); not building"
        exit 0
    fi
    log "SIOKIT_IMAGE=$IMAGE does not exist locally (no registry to pull from); build or load it first"
    exit 1
fi

if [ $FORCE -eq 0 ] && "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
    have="$("$DOCKER" image inspect -f '{{ index .Config.Labels "siokit.recipe" }}' "$IMAGE" 2>/dev/null || true)"
    if [ "$have" = "$RECIPE" ]; then
        log "$IMAGE exists (recipe $RECIPE); skipping (--force to rebuild)"
        exit 0
    fi
    log "$IMAGE exists but from another recipe ($have != $RECIPE); rebuilding"
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
    log "installing mmdebstrap"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends mmdebstrap
fi

# Mirrors from the host's apt sources (one-line and deb822 formats)
host_uris() {
    {
        grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | sed -E 's/\[[^]]*\]//' | awk '{print $2}'
        grep -hiE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | sed -E 's/^[^:]*:[[:space:]]*//' | tr ' ' '\n'
    } | sed -E 's#/+$##' | awk 'NF' 
}
MIRROR="${SIOKIT_DEBIAN_MIRROR:-$(host_uris | grep -E '/debian$' | head -n1 || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY="${SIOKIT_SECURITY_MIRROR-$(host_uris | grep -E '/debian-security$' | head -n1 || true)}"
sources=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main")
[ -n "$SECURITY" ] && sources+=("deb $SECURITY $SUITE-security main")
log "mirror: $MIRROR${SECURITY:+, security: $SECURITY}"

mkdir -p "$STATE"
work="$(mktemp -d "$STATE/build-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT

CA_DIR="${SIOKIT_EXTRA_CA_DIR-/usr/local/share/ca-certificates}"
mkdir -p "$work/ca"
if [ -n "$CA_DIR" ] && ls "$CA_DIR"/*.crt >/dev/null 2>&1; then
    cp "$CA_DIR"/*.crt "$work/ca/"
    log "trusting extra CAs from $CA_DIR: $(cd "$work/ca" && ls | tr '\n' ' ')"
fi

printf '%s\n' $MASK_UNITS >"$work/mask-units"

t0=$SECONDS
# shellcheck disable=SC2016  # the hooks are run by mmdebstrap's shell, $1 is the rootfs there
$SUDO mmdebstrap --variant=minbase --mode=root --format=tar \
    --include="$INSTALL_PKGS" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --skip=cleanup/apt \
    --customize-hook='cp '"$work"'/ca/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true' \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
    --customize-hook='if ls "$1"/usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" >"$1/etc/pip.conf"; fi' \
    --customize-hook='for u in $(cat '"$work"'/mask-units); do ln -sf /dev/null "$1/etc/systemd/system/$u"; done' \
    --customize-hook='chroot "$1" apt-get install -y --download-only '"$CACHE_PKGS" \
    --customize-hook='rm -f "$1/etc/hostname"; : >"$1/etc/machine-id"; mkdir -p "$1/var/lib/dbus"; ln -sf /etc/machine-id "$1/var/lib/dbus/machine-id"' \
    --customize-hook='echo "Defaults !requiretty" >"$1/etc/sudoers.d/container"; chmod 0440 "$1/etc/sudoers.d/container"' \
    "$SUITE" "$work/rootfs.tar" "${sources[@]}" </dev/null
t1=$SECONDS
log "rootfs: $(du -h "$work/rootfs.tar" | cut -f1) in $((t1 - t0)) s"

"$DOCKER" import \
    -c 'CMD ["/sbin/init"]' \
    -c 'ENV container=docker' \
    -c "LABEL siokit.recipe=$RECIPE" \
    -c "LABEL siokit.suite=$SUITE" \
    "$work/rootfs.tar" "$IMAGE" >/dev/null
log "imported $IMAGE in $((SECONDS - t1)) s (total $((SECONDS - t0)) s)"
