#!/usr/bin/env bash
# Build a libvirt Vagrant box of Debian 12 from the Debian mirror alone (no box can be downloaded on
# the project's machines), add it to Vagrant, and build the wheelhouse the VMs install from inside
# the same rootfs (Debian 12's python3 and libssl3: the hosts' own ABI, no Docker needed).
#
#   scripts/vagrant-box.sh            build and add the box unless it exists from this same recipe
#   scripts/vagrant-box.sh --force    rebuild anyway
#   scripts/vagrant-box.sh --check    only check the script's inputs (used by `make check`)
#
# Output in $SIOKIT_STATE_DIR/vagrant (default <repo>/.siokit/vagrant):
#   siokit-debian12.box   the box (qcow2 root filesystem, no partition table, no bootloader)
#   vmlinuz, initrd.img   its kernel and initramfs, booted directly by libvirt (the Vagrantfile
#                         reads them from here; this is the recipe that boots under TCG, testbeds.md)
#   wheelhouse/           every pinned dependency, uWSGI compiled with SSL
#   recipe                hash of this script; a box from another recipe is rebuilt
#
# Environment:
#   SIOKIT_VAGRANT_BOX     box name (default siokit/debian12)
#   SIOKIT_DEBIAN_MIRROR   Debian mirror (default: the first .../debian URI of the host's apt sources)
#   SIOKIT_SECURITY_MIRROR security mirror (default: from the host's apt sources, else none)
#   SIOKIT_EXTRA_CA_DIR    extra CA certificates (*.crt) the VMs trust, e.g. an egress proxy's
#                          (default /usr/local/share/ca-certificates; empty: none)
#   SIOKIT_BOX_DISK_GB     virtual disk size (default 6)
#   SIOKIT_STATE_DIR       scratch space (default <repo>/.siokit)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SIOKIT_STATE_DIR:-$ROOT/.siokit}"
OUT="$STATE/vagrant"
BOX_NAME="${SIOKIT_VAGRANT_BOX:-siokit/debian12}"
DISK_GB="${SIOKIT_BOX_DISK_GB:-6}"
EXTRA_CA_DIR="${SIOKIT_EXTRA_CA_DIR-/usr/local/share/ca-certificates}"
SUITE=bookworm
log() { printf '[vagrant-box] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

MODE=build
case "${1:-}" in
    --force) MODE=force ;;
    --check) MODE=check ;;
    "") ;;
    *) die "unknown argument '$1' (expected --force or --check)" ;;
esac

[[ "$DISK_GB" =~ ^[0-9]+$ ]] && [ "$DISK_GB" -ge 3 ] \
    || die "SIOKIT_BOX_DISK_GB must be a whole number of GiB >= 3, got '$DISK_GB'"
[[ "$BOX_NAME" =~ ^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$ ]] \
    || die "SIOKIT_VAGRANT_BOX must look like owner/name, got '$BOX_NAME'"
if [ -n "$EXTRA_CA_DIR" ] && [ ! -d "$EXTRA_CA_DIR" ]; then
    die "SIOKIT_EXTRA_CA_DIR=$EXTRA_CA_DIR is not a directory (set it empty for none)"
fi

# Mirrors: the host's apt sources (one-line or deb822), else the public defaults.
sources_uris() {
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }'
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '$1 == "URIs:" { print $2 }'
}
MIRROR="${SIOKIT_DEBIAN_MIRROR:-$(sources_uris | grep -E '/debian/?$' | head -1 || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY="${SIOKIT_SECURITY_MIRROR-$(sources_uris | grep -E '/debian-security/?$' | head -1 || true)}"
[[ "$MIRROR" =~ ^https?:// ]] || die "SIOKIT_DEBIAN_MIRROR must be an http(s) URL, got '$MIRROR'"

PACKAGES="systemd,systemd-sysv,dbus,linux-image-amd64,initramfs-tools,openssh-server,sudo,ifupdown"
PACKAGES="$PACKAGES,isc-dhcp-client,iproute2,procps,ca-certificates,curl,python3,python3-apt"
PACKAGES="$PACKAGES,python3-packaging,python3-venv,libpcre2-8-0,libssl3,less,iputils-ping"
# Only for the wheelhouse build in the rootfs; removed from the box afterwards.
BUILD_PACKAGES="gcc libc6-dev python3-dev libssl-dev libpcre2-dev"
# Services the roles install: their .debs wait in the apt cache, so the VMs need no download.
CACHE_PKGS="nginx nginx-light redis-server"
# Bump RECIPE_VERSION when the box's contents change in a way the package lists do not show.
RECIPE_VERSION=1
RECIPE="$(printf '%s\n' "$RECIPE_VERSION" "$SUITE" "$PACKAGES" "$BUILD_PACKAGES" "$CACHE_PKGS" "$DISK_GB" \
    "$(sha256sum "$ROOT/constraints.txt" | cut -c1-16)" | sha256sum | cut -c1-16)"

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found (scripts/vagrant-setup.sh installs it)"; }
for tool in mmdebstrap mkfs.ext4 qemu-img vagrant; do need "$tool"; done
INSECURE_KEY="$(find /usr/share/rubygems-integration /usr/lib/ruby /opt/vagrant -path '*vagrant*/keys/vagrant.pub' \
    2>/dev/null | head -1 || true)"
[ -n "$INSECURE_KEY" ] || die "Vagrant's insecure public key (keys/vagrant.pub) not found"

if [ "$MODE" = check ]; then
    log "ok: mirror $MIRROR, security ${SECURITY:-none}, box $BOX_NAME, disk ${DISK_GB} GiB, key $INSECURE_KEY"
    exit 0
fi

have_box() {  # the list read whole: with pipefail, grep -q quitting early may fail the writer on SIGPIPE
    local boxes
    boxes="$(vagrant box list 2>/dev/null | awk '{print $1, $2}')"
    grep -qx "$BOX_NAME (libvirt," <<<"$boxes"
}
if [ "$MODE" = build ] && have_box && [ "$(cat "$OUT/recipe" 2>/dev/null)" = "$RECIPE" ] \
    && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] && [ -d "$OUT/wheelhouse" ]; then
    log "box $BOX_NAME exists (recipe $RECIPE); skipping (--force to rebuild)"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap --mode=root, chroot, loop-free mkfs.ext4 -d)"
mkdir -p "$OUT"
WORK="$(mktemp -d "$STATE/vagrant-box.XXXXXX")"
ROOTFS="$WORK/rootfs"
cleanup() {
    for m in proc dev/pts dev sys; do umount "$ROOTFS/$m" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
t0=$SECONDS

mirrors=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main")
[ -n "$SECURITY" ] && mirrors+=("deb $SECURITY $SUITE-security main")
mkdir -p "$WORK/ca"
if [ -n "$EXTRA_CA_DIR" ]; then cp "$EXTRA_CA_DIR"/*.crt "$WORK/ca/" 2>/dev/null || true; fi

log "rootfs from $MIRROR"
mmdebstrap --variant=minbase --mode=root --format=directory --include="$PACKAGES" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --skip=cleanup/apt \
    --customize-hook="cp $WORK/ca/*.crt \"\$1/usr/local/share/ca-certificates/\" 2>/dev/null || true" \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
    --customize-hook="chroot \"\$1\" apt-get install -y --download-only $CACHE_PKGS" \
    "$SUITE" "$ROOTFS" "${mirrors[@]}"
log "rootfs done ($((SECONDS - t0)) s)"

# The wheelhouse, built in this rootfs (the VMs' own Python and OpenSSL).
# pyproject.toml's list (one list for make venv, the kit role and this script), quoted for the
# shell in the chroot ("python-engineio>=4.2.1").
PACKAGES_PY="$(PYTHONPATH="$ROOT" python3 -m siokit.dependencies --extra uwsgi --shell)"
[ -n "$PACKAGES_PY" ] || die "no dependencies in pyproject.toml"
mount --bind /proc "$ROOTFS/proc"; mount --bind /dev "$ROOTFS/dev"; mount --bind /dev/pts "$ROOTFS/dev/pts"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mkdir -p "$ROOTFS/tmp/src" "$ROOTFS/tmp/wheels"
cp "$ROOT/constraints.txt" "$ROOTFS/tmp/src/constraints.txt"
log "wheelhouse: $PACKAGES_PY"
# shellcheck disable=SC2086  # word splitting of the package lists is intended
chroot "$ROOTFS" /bin/bash -euc "
    export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
    unset PIP_FIND_LINKS PIP_CERT PIP_CONFIG_FILE   # the host's pip settings mean nothing in here
    apt-get install -y -qq $BUILD_PACKAGES >/dev/null
    cert=/etc/ssl/certs/ca-certificates.crt
    python3 -m venv /tmp/venv
    /tmp/venv/bin/pip install --quiet --cert \$cert wheel
    /tmp/venv/bin/pip wheel --quiet --cert \$cert --wheel-dir /tmp/wheels -c /tmp/src/constraints.txt $PACKAGES_PY
    # Without SSL the websocket handshake fails (unbit/uwsgi #744): refuse a wheel built without it.
    /tmp/venv/bin/python - <<'EOF'
import glob, sys, zipfile
wheels = glob.glob('/tmp/wheels/[uU][wW][sS][gG][iI]-*.whl')
if not wheels:
    sys.exit('no uWSGI wheel built')
with zipfile.ZipFile(wheels[0]) as whl:
    binary = [n for n in whl.namelist() if n.endswith('/uwsgi')]
    if not binary or b'SSL_CTX_new' not in whl.read(binary[0]):
        sys.exit(wheels[0] + ': uwsgi built without SSL')
print(wheels[0], 'has SSL')
EOF
    apt-get purge -y -qq --autoremove $BUILD_PACKAGES >/dev/null
    rm -rf /tmp/venv /root/.cache
"
rm -rf "$OUT/wheelhouse.new"; mv "$ROOTFS/tmp/wheels" "$OUT/wheelhouse.new"
rm -rf "$ROOTFS/tmp/src"
for m in dev/pts dev proc; do umount "$ROOTFS/$m"; done
log "wheelhouse done: $(ls "$OUT/wheelhouse.new" | wc -l) wheels ($((SECONDS - t0)) s)"

# What Vagrant expects of a box: user vagrant with its insecure key and sudo without a password.
chroot "$ROOTFS" useradd -m -s /bin/bash -G sudo vagrant
install -d -m 0700 -o 1000 -g 1000 "$ROOTFS/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$INSECURE_KEY" "$ROOTFS/home/vagrant/.ssh/authorized_keys"
[ "$(stat -c %u "$ROOTFS/home/vagrant")" = 1000 ] || die "user vagrant did not get uid 1000"
printf 'vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n' >"$ROOTFS/etc/sudoers.d/vagrant"
chmod 0440 "$ROOTFS/etc/sudoers.d/vagrant"
echo 'root:vagrant' | chroot "$ROOTFS" chpasswd   # console login only (sshd refuses root passwords)
echo 'UseDNS no' >"$ROOTFS/etc/ssh/sshd_config.d/vagrant.conf"
printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' >"$ROOTFS/etc/fstab"
printf 'auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n' \
    >"$ROOTFS/etc/network/interfaces"
echo "debian12" >"$ROOTFS/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 debian12\n' >"$ROOTFS/etc/hosts"
rm -f "$ROOTFS/etc/resolv.conf"
# Every VM its own machine-id and ssh host keys (first boot), not the ones baked in here.
: >"$ROOTFS/etc/machine-id"
rm -f "$ROOTFS"/etc/ssh/ssh_host_*
cat >"$ROOTFS/etc/systemd/system/ssh-host-keys.service" <<'EOF'
[Unit]
Description=Generate this VM's ssh host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/ssh-host-keys.service "$ROOTFS/etc/systemd/system/multi-user.target.wants/"
# Timers that would take apt's lock in the middle of a provisioning run.
for u in apt-daily.timer apt-daily-upgrade.timer; do ln -sf /dev/null "$ROOTFS/etc/systemd/system/$u"; done

cp -L "$ROOTFS/vmlinuz" "$WORK/vmlinuz"; cp -L "$ROOTFS/initrd.img" "$WORK/initrd.img"
log "root filesystem image (${DISK_GB} GiB virtual)"
truncate -s "${DISK_GB}G" "$WORK/root.raw"
mkfs.ext4 -q -L root -d "$ROOTFS" "$WORK/root.raw"
qemu-img convert -O qcow2 "$WORK/root.raw" "$WORK/box.img"
rm -f "$WORK/root.raw"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "$DISK_GB" >"$WORK/metadata.json"
cat >"$WORK/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.driver = "qemu"
  end
end
EOF
# Not compressed: the qcow2 image is already compact, and gzip takes minutes on a loaded machine.
tar -C "$WORK" -cf "$WORK/siokit-debian12.box" metadata.json Vagrantfile box.img
mv "$WORK/siokit-debian12.box" "$OUT/siokit-debian12.box"
mv "$WORK/vmlinuz" "$OUT/vmlinuz"; mv "$WORK/initrd.img" "$OUT/initrd.img"
rm -rf "$OUT/wheelhouse"; mv "$OUT/wheelhouse.new" "$OUT/wheelhouse"
# vagrant-libvirt copies a box into the storage pool once and reuses that copy: drop an old one.
old_volume="${BOX_NAME//\//-VAGRANTSLASH-}_vagrant_box_image_"
for vol in $(virsh -c qemu:///system vol-list default 2>/dev/null | awk -v p="$old_volume" 'index($1, p) == 1 {print $1}'); do
    virsh -c qemu:///system vol-delete --pool default "$vol" >/dev/null && log "removed the old pool copy $vol"
done
vagrant box add --force --name "$BOX_NAME" --provider libvirt "$OUT/siokit-debian12.box"
echo "$RECIPE" >"$OUT/recipe"
log "box $BOX_NAME added ($(du -h "$OUT/siokit-debian12.box" | cut -f1), $((SECONDS - t0)) s)"
