#!/usr/bin/env bash
# Everything `vagrant up --provider=libvirt` needs on this machine, idempotent:
#   - Debian packages: vagrant, vagrant-libvirt, libvirt, QEMU, mmdebstrap (box building);
#   - libvirtd and virtlogd running (there is no systemd as PID 1 on the project's machines, so
#     they are started here as daemons when they do not answer);
#   - /dev/kvm group kvm, mode 0660: without it every libvirt call waits ~48 s (testbeds.md);
#   - the libvirt storage pool "default" (vagrant-libvirt uploads boxes and disks into it).
#
#   scripts/vagrant-setup.sh            all of the above
#   scripts/vagrant-setup.sh --packages only the packages (`make check` needs vagrant for validate)
#   scripts/vagrant-setup.sh --probe    whether KVM really boots the box's kernel here: writes kvm
#                                       or qemu to .siokit/vagrant/accel, which the Vagrantfile's
#                                       SIOKIT_VM_DRIVER=auto reads (on the project's machines
#                                       /dev/kvm exists but guests hang: TCG it is)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SIOKIT_STATE_DIR:-$ROOT/.siokit}/vagrant"

log() { printf '[vagrant-setup] %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

packages=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
    qemu-system-x86 qemu-utils dnsmasq-base mmdebstrap e2fsprogs)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ "${1:-}" = "--packages" ] && exit 0

if [ "${1:-}" = "--probe" ]; then
    accel=qemu
    if [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ -s "$STATE/vmlinuz" ]; then
        # A working KVM prints the kernel banner at once; a broken one hangs in SeaBIOS (seen here).
        out="$(timeout 30 qemu-system-x86_64 -accel kvm -m 256 -nographic -no-reboot -nodefaults \
            -serial stdio -kernel "$STATE/vmlinuz" -initrd "$STATE/initrd.img" \
            -append "console=ttyS0 panic=-1 rdinit=/bin/false" 2>&1 || true)"
        grep -q "Linux version" <<<"$out" && accel=kvm
    fi
    echo "$accel" >"$STATE/accel"
    log "KVM probe: $accel ($STATE/accel)"
    exit 0
fi

if [ -e /dev/kvm ]; then
    $SUDO chgrp kvm /dev/kvm && $SUDO chmod 0660 /dev/kvm
fi

export LIBVIRT_DEFAULT_URI=qemu:///system
if ! timeout 20 virsh -q version >/dev/null 2>&1; then
    pgrep -x virtlogd >/dev/null || $SUDO virtlogd -d
    pgrep -x libvirtd >/dev/null || $SUDO libvirtd -d
    for _ in $(seq 1 30); do
        timeout 20 virsh -q version >/dev/null 2>&1 && break
        sleep 1
    done
    timeout 20 virsh -q version >/dev/null 2>&1 || { log "libvirtd does not answer on qemu:///system"; exit 1; }
    log "libvirtd started"
fi

if ! virsh -q pool-info default >/dev/null 2>&1; then
    log "defining the storage pool 'default' (/var/lib/libvirt/images)"
    $SUDO mkdir -p /var/lib/libvirt/images
    virsh -q pool-define-as default dir --target /var/lib/libvirt/images
    virsh -q pool-autostart default
fi
# Read it whole first: with pipefail, `grep -q` quitting early can fail virsh on SIGPIPE (seen here:
# pool-start then errs with "already active").
pool_info="$(virsh -q pool-info default)"
grep -q 'State: *running' <<<"$pool_info" || virsh -q pool-start default
log "libvirt ready: $(virsh -q version 2>/dev/null | awk '/Running hypervisor/ {print $3, $4}')"
