#!/usr/bin/env bash
# The cluster as libvirt VMs (Vagrantfile), for the make targets vagrant-up/-verify/-test/-down.
#
#   scripts/vagrant.sh up        libvirt + box (scripts/vagrant-setup.sh, scripts/vagrant-box.sh),
#                                boot every VM, then ansible/site.yml once for all of them
#   scripts/vagrant.sh verify    tests/infra against the VMs; fails on any skip in the limits and
#                                sysctl tests (VMs get every sysctl and LimitNOFILE)
#   scripts/vagrant.sh load      `siokit load` on the loadgen VM through the lb, from two source
#                                addresses (LOAD_CLIENTS, LOAD_HOLD, LOAD_CONCURRENCY); fails on any
#                                failed client
#   scripts/vagrant.sh idempotence  site.yml again: every host must report changed=0
#   scripts/vagrant.sh reboot    `vagrant reload --no-provision` of every VM at once (a real reboot),
#                                then the reboot checks and the testinfra suite again, with no
#                                provisioning run
#   scripts/vagrant.sh test      up, verify, load, idempotence, reboot, down (down also on failure,
#                                unless SIOKIT_VAGRANT_KEEP=1)
#   scripts/vagrant.sh down      destroy every VM and check that libvirt has none of them left
#
# Step timings go to stderr and to .siokit/vagrant/timings.log. Environment: the Vagrantfile's
# (SIOKIT_APP_HOSTS, SIOKIT_VAGRANT_BOX...); the make targets set the box to the local one.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STATE="$ROOT/.siokit/vagrant"
mkdir -p "$STATE"
TIMINGS="$STATE/timings.log"
export PATH="$ROOT/.venv/bin:$PATH"       # ansible-playbook and pytest of the kit's venv
export VAGRANT_DEFAULT_PROVIDER="${VAGRANT_DEFAULT_PROVIDER:-libvirt}"
export LIBVIRT_DEFAULT_URI="${LIBVIRT_DEFAULT_URI:-qemu:///system}"
export SIOKIT_VAGRANT_BOX="${SIOKIT_VAGRANT_BOX:-siokit/debian12}"
export ANSIBLE_FORCE_COLOR=0
INVENTORY="$ROOT/.vagrant/provisioners/ansible/inventory/vagrant_ansible_inventory"
LOAD_CLIENTS="${LOAD_CLIENTS:-400}"
LOAD_HOLD="${LOAD_HOLD:-60}"
# Handshakes in flight. siokit load's default, 200, is for real hosts: under TCG the VMs completed
# 10.5 handshakes/s, so 200 in flight queued ~19 s each (200 / 10.5) and the tail passed the 20 s
# connect timeout (15 of 400 timed out, p99 19.6 s). The timeout is right, the queue was not: 20 in
# flight wait ~2 s at that rate and the ramp takes as long (the VMs' rate bounds it either way).
LOAD_CONCURRENCY="${LOAD_CONCURRENCY:-20}"
for v in LOAD_CLIENTS LOAD_HOLD LOAD_CONCURRENCY; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "[vagrant] $v must be a positive whole number, got '${!v}'" >&2; exit 2; }
done

log() { printf '[vagrant] %s\n' "$*" >&2; }
step() {  # step NAME COMMAND...: run it, log its wall time
    local name="$1" t0=$SECONDS rc=0
    shift
    log "== $name"
    "$@" || rc=$?
    printf '%s %-22s %5d s rc=%d\n' "$(date -u +%FT%TZ)" "$name" $((SECONDS - t0)) "$rc" | tee -a "$TIMINGS" >&2
    return "$rc"
}

# Vagrant's view of the machines, from the Vagrantfile (same variables).
machines() { vagrant status --machine-readable | awk -F, '$3 == "state" {print $2}'; }
provisioner_vm() { machines | tail -1; }   # the Vagrantfile provisions from the last VM

# Without systemd, libvirt puts every VM into one cgroup "machine" with the default cpu.shares of
# 1024: all VMs together weigh as much as ONE process. On a busy machine (load 27 here) four TCG
# VMs then got ~6 % of a core each and took 20 min to boot; one process' share per VM is fair.
# Booting gets one process' weight per VM (vagrant-libvirt gives up on an address after ~10 min);
# once up, half of that, so that the VMs' provisioning and tests leave room for the other users of
# the machine. libvirt creates the cgroup at the first VM's start and uses it when it exists: make
# it here, or the first `vagrant up` boots at 1024 (seen). SIOKIT_VM_CPU_SHARES fixes one weight.
cpu_weight() {  # cpu_weight boot|run
    local dir=/sys/fs/cgroup/cpu/machine count per=512
    [ -d /sys/fs/cgroup/cpu ] || return 0    # cgroup v2 or none: libvirt's defaults
    count="$(machines | wc -l)"
    [ "$1" = boot ] && per=1024
    mkdir -p "$dir" 2>/dev/null || true
    if [ -w "$dir/cpu.shares" ]; then
        echo "${SIOKIT_VM_CPU_SHARES:-$((per * count))}" >"$dir/cpu.shares"
        log "VMs' CPU weight ($1): $(cat "$dir/cpu.shares") (the docker cgroup: $(cat /sys/fs/cgroup/cpu/docker/cpu.shares 2>/dev/null || echo none))"
    fi
}

# `|| return` on every step: under `test`, these functions run in an && list, where set -e does not
# apply (a failed step would go on to the next one).
up() {
    step setup bash scripts/vagrant-setup.sh || return
    step box bash scripts/vagrant-box.sh || return
    step kvm-probe bash scripts/vagrant-setup.sh --probe || return
    # Boot all VMs first: the provisioner must see every host up when site.yml runs once.
    cpu_weight boot
    step boot vagrant up --no-provision || return
    cpu_weight run
    step provision vagrant provision "$(provisioner_vm)"
}

verify() {
    [ -f "$INVENTORY" ] || { log "no provisioner inventory ($INVENTORY): run 'make vagrant-up' first"; return 1; }
    local report="$STATE/verify-${1:-0}.xml" cfg="$STATE/ssh-config"
    # testinfra over plain ssh with a shared connection per VM: its ansible backend starts
    # ansible once per command, which under emulation is many times slower.
    vagrant ssh-config >"$cfg"
    printf 'Host *\n  ControlMaster auto\n  ControlPath %s/cm-%%h\n  ControlPersist 600\n' "$STATE" >>"$cfg"
    local hosts="" group names name
    for group in lb app redis loadgen; do
        names="$(ansible-inventory -i "$INVENTORY" --list | python3 -c "import json,sys; print(' '.join(json.load(sys.stdin)['$group']['hosts']))")"
        hosts+="$group="
        for name in $names; do
            hosts+="ssh://$name,"
            export "SIOKIT_INFRA_ADDRESS_${name^^}=$(inventory_var "$name" siokit_private_address)"
        done
        hosts="${hosts%,};"
    done
    # `|| rc`: verify runs under `step`'s `||`, where set -e does not apply (a failed suite passed).
    # doctor.yml and `siokit doctor --inventory` (test_95_doctor) reach the hosts through an Ansible
    # inventory: Vagrant's (user `vagrant`) plus what its provisioner passes on the command line:
    # become (doctor reads root's files: `nginx -T`, the app's env file) and no host key check (each
    # VM makes its keys at first boot; Vagrant skips the check too).
    local doctor_inv="$STATE/doctor-inventory"
    { cat "$INVENTORY"; printf '\n[all:vars]\nansible_become=true\n%s\n' \
        "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'"; } >"$doctor_inv"
    local rc=0
    SIOKIT_INFRA_INVENTORY="$doctor_inv" SIOKIT_INFRA_HOSTS="${hosts%;}" pytest -q -p no:cacheprovider -rs --junitxml="$report" --ssh-config="$cfg" --sudo \
        tests/infra || rc=$?
    # Belt and braces for the point of the VMs: no skipped limit or sysctl test.
    python3 - "$report" <<'EOF'
import sys
import xml.etree.ElementTree as ET

skipped = [
    f"{case.get('classname')}::{case.get('name')}: {case.find('skipped').get('message', '')}"
    for case in ET.parse(sys.argv[1]).iter("testcase")
    if case.find("skipped") is not None
    and any(m in case.get("classname", "") for m in ("test_30_limits", "test_40_sysctl"))
]
if skipped:
    sys.exit("skipped on VMs (must not be):\n" + "\n".join(skipped))
print("no skips in test_30_limits / test_40_sysctl")
EOF
    [ $? -eq 0 ] || rc=1   # no set -e here (see above): a skip fails the step by hand
    [ "$rc" -eq 0 ] || { log "tests/infra failed (pytest rc $rc)"; return "$rc"; }
}

# The loadgen's address plan from the provisioner's inventory: the lb's private address and the
# loadgen's extra source addresses (the tuning role added them).
inventory_var() {  # inventory_var HOST VAR
    ansible-inventory -i "$INVENTORY" --host "$1" | python3 -c "import json,sys; v=json.load(sys.stdin)['$2']; print(','.join(a.split('/')[0] for a in v) if isinstance(v, list) else v)"
}

load() {
    local lb_addr sources pid rc=0
    lb_addr="$(inventory_var lb siokit_private_address)"
    sources="$(inventory_var loadgen tuning_loadgen_source_addresses)"
    log "siokit load: $LOAD_CLIENTS clients from $sources to http://$lb_addr, hold $LOAD_HOLD s"
    # Its summary (JSON) on stdout; exit 1 unless every client held to the end with no failure.
    vagrant ssh loadgen -c "sudo -u siokit-load /opt/siokit/venv/bin/siokit load --url http://$lb_addr \
        --bind $sources --connections $LOAD_CLIENTS --concurrency $LOAD_CONCURRENCY --hold $LOAD_HOLD \
        --ramp-timeout 300 --no-progress \
        --report /var/tmp/siokit-vagrant-load.json" >"$STATE/load.json" &
    pid=$!
    # During the hold: which source addresses the established connections to the lb come from.
    local waited=0 per_source=""
    while kill -0 "$pid" 2>/dev/null && [ $waited -lt 900 ]; do
        sleep 10; waited=$((waited + 10))
        per_source="$(vagrant ssh loadgen -c "ss -Htn state established dst $lb_addr" 2>/dev/null \
            | awk '{split($3, a, ":"); n[a[1]]++} END {for (s in n) printf "%s=%d ", s, n[s]}')"
        [ "$(wc -w <<<"$per_source")" -ge 2 ] && [ "$(tr ' =' '\n\n' <<<"$per_source" | awk 'NR % 2 == 0 {t += $1} END {print t}')" -ge "$LOAD_CLIENTS" ] && break
    done
    log "established per source address: ${per_source:-none seen}"
    wait "$pid" || rc=$?
    cat "$STATE/load.json" >&2
    [ "$rc" -eq 0 ] || { log "siokit load failed (rc $rc)"; return 1; }
    [ "$(wc -w <<<"$per_source")" -ge 2 ] || { log "fewer than two source addresses in use: $per_source"; return 1; }
}

idempotence() {
    local out="$STATE/idempotence.log"
    vagrant provision "$(provisioner_vm)" | tee "$out" >/dev/null
    # PLAY RECAP lines: "host : ok=N changed=N unreachable=N failed=N ..."
    python3 - "$out" <<'EOF'
import re
import sys

recap = re.findall(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", open(sys.argv[1]).read(), re.M)
if not recap:
    sys.exit("no PLAY RECAP in the second provisioning run")
bad = [f"{h}: changed={c} unreachable={u} failed={f}" for h, c, u, f in recap if (c, u, f) != ("0", "0", "0")]
for host, changed, _, _ in recap:
    print(f"{host}: changed={changed}")
if bad:
    sys.exit("second provisioning run is not idempotent: " + "; ".join(bad))
EOF
}

# `vagrant reload` takes the VMs one after the other: four emulated boots in a row (the first boot of
# all four at once took 652 s here). One `vagrant reload` per VM instead, at once (Vagrant locks
# per machine).
reload_all() {
    local m pids=() rc=0
    for m in $(machines); do
        vagrant reload --no-provision "$m" >"$STATE/reload-$m.log" 2>&1 &
        pids+=($!)
    done
    for m in "${pids[@]}"; do wait "$m" || rc=1; done
    [ "$rc" -eq 0 ] || { tail -n 5 "$STATE"/reload-*.log >&2; return 1; }
}

reboot() {
    cpu_weight boot
    step reload reload_all || return
    cpu_weight run
    # Without provisioning: the loadgen's source addresses are back on their interface, and the
    # sysctl file and modules-load.d applied at boot (the suite checks the sysctls and services).
    local sources iface
    sources="$(inventory_var loadgen tuning_loadgen_source_addresses)"
    iface="$(inventory_var loadgen tuning_source_ip_interface)"
    local have
    have="$(vagrant ssh loadgen -c "ip -o -4 address show dev $iface" 2>/dev/null)" || { log "after reboot: no answer from loadgen"; return 1; }
    for a in ${sources//,/ }; do
        grep -q " $a/" <<<"$have" || { log "after reboot: $a missing on $iface of loadgen: $have"; return 1; }
    done
    log "after reboot: source addresses $sources on $iface"
    step verify-after-reboot verify reboot
}

down() {
    vagrant destroy -f
    local left
    left="$(virsh list --all --name | grep -E "^$(basename "$ROOT")_" || true)"
    [ -z "$left" ] || { log "libvirt still has: $left"; return 1; }
    log "no VM of this Vagrantfile left in libvirt"
}

case "${1:-}" in
    up) up ;;
    verify) step verify verify ;;
    load) step load load ;;
    idempotence) step idempotence idempotence ;;
    reboot) reboot ;;
    down) step down down ;;
    test)
        rc=0
        # SIOKIT_VAGRANT_KEEP=1 keeps the VMs after a failed step, to look at them or to run the
        # remaining steps one by one (an emulated bring-up takes long to repeat); `make vagrant-down`.
        trap '[ "$rc" -ne 0 ] && [ "${SIOKIT_VAGRANT_KEEP:-0}" = 1 ] && log "kept the VMs (SIOKIT_VAGRANT_KEEP=1)" || step down down || true' EXIT
        up && step verify verify && step load load && step idempotence idempotence && reboot || rc=$?
        exit "$rc"
        ;;
    *) echo "usage: $0 up|verify|load|idempotence|reboot|test|down" >&2; exit 2 ;;
esac
