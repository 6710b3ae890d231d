#!/usr/bin/env bash
# The local cluster (six systemd containers: lb, app1, app2, redis, loadgen, monitor) driven by Molecule.
#
#   scripts/cluster.sh up       docker daemon + base image + `molecule create` + `molecule converge`
#                               (ansible/site.yml), then the URL for a browser and a health line
#   scripts/cluster.sh verify   the testinfra suite (tests/infra) against the running cluster
#   scripts/cluster.sh down     `molecule destroy`, then check that no container, network or NAT rule
#                               of the cluster is left behind (exit 1 if one is)
#   scripts/cluster.sh test     the full Molecule sequence: destroy, syntax, create, converge,
#                               idempotence, verify, destroy
#   scripts/cluster.sh status   containers, systemd state and lb health
#   scripts/cluster.sh converge re-run ansible/site.yml on the running cluster
#   scripts/cluster.sh require WHAT   exit 2 with one line naming `make up` unless all six run
#   scripts/cluster.sh reconcile      short of six running containers: remove what is left and
#                               Molecule's state for this checkout (`up` does this first)
#
# Environment: SIOKIT_IMAGE (bring your own base image), SIOKIT_LB_HTTP_PORT (default 8080, bound to
# 127.0.0.1 only), SIOKIT_PROMETHEUS_PORT (default 9090, monitor's Prometheus, 127.0.0.1 only), MOLECULE (default .venv/bin/molecule), SIOKIT_STATE_DIR (default .siokit).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SCENARIO=cluster
HOSTS=(lb app1 app2 redis loadgen monitor)
NETWORK=siokit-cluster
SUBNET=10.210.0.0/16   # molecule/cluster/molecule.yml docker_networks
export SIOKIT_LB_HTTP_PORT="${SIOKIT_LB_HTTP_PORT:-8080}"
export SIOKIT_PROMETHEUS_PORT="${SIOKIT_PROMETHEUS_PORT:-9090}"
export SIOKIT_STATE_DIR="${SIOKIT_STATE_DIR:-$ROOT/.siokit}"
DOCKER="${DOCKER:-/usr/bin/docker}"
export DOCKER_API_VERSION="${DOCKER_API_VERSION:-1.41}"
# The venv first (molecule runs `pytest` and `ansible-playbook` from PATH), then Debian's docker
# client before any newer one in /usr/local/bin (the connection plugin and testinfra call `docker`).
export PATH="$ROOT/.venv/bin:/usr/bin:/usr/sbin:$PATH"
MOLECULE="${MOLECULE:-$ROOT/.venv/bin/molecule}"
# Molecule's state (created/converged, generated inventory) in this checkout's state dir, where
# `reconcile` can find it, instead of a checksum-named directory under ~/.cache.
export MOLECULE_EPHEMERAL_DIRECTORY="${MOLECULE_EPHEMERAL_DIRECTORY:-$SIOKIT_STATE_DIR/molecule/$SCENARIO}"
# The cluster's generated secrets (admin, Redis) live beside that state, not in whichever checkout
# runs the playbook: a converge from another worktree with SIOKIT_STATE_DIR set would otherwise
# generate new ones in its own .siokit and rotate them under the checkout that deployed the cluster.
CREDENTIALS_VARS=(-e "plan_credentials_dir=$SIOKIT_STATE_DIR/credentials")
LB_URL="http://127.0.0.1:${SIOKIT_LB_HTTP_PORT}"
PROMETHEUS_URL="http://127.0.0.1:${SIOKIT_PROMETHEUS_PORT}"
TIMINGS="$SIOKIT_STATE_DIR/cluster-timings.log"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ -x "$MOLECULE" ] || die "$MOLECULE not found: create the venv first (make venv)"
mkdir -p "$SIOKIT_STATE_DIR"

# The containers' network-namespace sysctls are the planner's, for the cluster's target (the kit's
# defaults, every group on this machine's cores): molecule.yml reads them from here, since a
# container gets them only at creation.
SIOKIT_CONTAINER_SYSCTLS="$("$ROOT/.venv/bin/python" -m siokit.cli plan --kit-defaults --colocated --container-sysctls)" \
    || die "siokit plan refused the cluster's target (see above)"
export SIOKIT_CONTAINER_SYSCTLS

# step NAME CMD...: run and record the wall time (seconds) in .siokit/cluster-timings.log
step() {
    local name="$1"; shift
    local t0=$SECONDS rc=0
    log "$name ..."
    "$@" || rc=$?
    printf '%s %-16s %4ss rc=%s\n' "$(date -u +%FT%TZ)" "$name" "$((SECONDS - t0))" "$rc" >>"$TIMINGS"
    log "$name: $((SECONDS - t0)) s (rc=$rc)"
    return $rc
}

prerequisites() {
    step docker-ensure "$ROOT/scripts/docker-ensure.sh"
    step build-image "$ROOT/scripts/build-image.sh"
}

health() {
    local body
    if body="$(curl -fsS -m 5 "$LB_URL/healthz" 2>&1)"; then
        log "health: lb $LB_URL/healthz -> $body"
    else
        log "health: lb $LB_URL/healthz FAILED: $body"
        return 1
    fi
    if body="$(curl -fsS -m 5 "$PROMETHEUS_URL/-/ready" 2>&1)"; then
        log "health: Prometheus $PROMETHEUS_URL/-/ready -> $body"
    else
        log "health: Prometheus $PROMETHEUS_URL/-/ready FAILED: $body"
        return 1
    fi
}

leftovers() {
    # Anything of the cluster still present? (containers, network, NAT rules of its subnet)
    local found=0 c subnet="${1:-}"
    for c in "${HOSTS[@]}"; do
        if "$DOCKER" container inspect "$c" >/dev/null 2>&1; then
            log "left behind: container $c"; found=1
        fi
    done
    if "$DOCKER" network inspect "$NETWORK" >/dev/null 2>&1; then
        log "left behind: network $NETWORK"; found=1
    fi
    if [ -n "$subnet" ] && command -v iptables >/dev/null \
        && iptables-save 2>/dev/null | grep -F -- "$subnet" >/dev/null; then
        log "left behind: iptables rules for $subnet:"
        iptables-save | grep -F -- "$subnet" >&2
        found=1
    fi
    return $found
}

# not_running: the cluster's containers that are not running (all of them when no daemon answers).
not_running() {
    local c names
    names="$("$DOCKER" ps --format '{{.Names}}' 2>/dev/null)" || { echo "${HOSTS[*]}"; return; }
    for c in "${HOSTS[@]}"; do
        grep -qx -- "$c" <<<"$names" || printf '%s ' "$c"
    done
}

# require_running WHAT: one line naming `make up` when the cluster is not there, never a traceback.
require_running() {
    local missing
    if ! "$DOCKER" info >/dev/null 2>&1; then
        printf '%s: no Docker daemon answers, so no local cluster: run `make up` first\n' "$1" >&2; exit 2
    fi
    missing="$(not_running)"
    if [ -n "$missing" ]; then
        printf '%s: the local cluster is not running (%s missing): run `make up` first\n' "$1" "${missing% }" >&2
        exit 2
    fi
}

# Molecule keeps its state per checkout (MOLECULE_EPHEMERAL_DIRECTORY), the containers are shared
# by name: a cluster replaced from another checkout, removed by hand, or stopped by a daemon
# restart leaves a state that says "created" over containers that are gone or stopped, and converge
# then fails with "No such container". Anything short of six running containers is rebuilt.
reconcile() {
    local missing present=() c
    missing="$(not_running)"
    [ -z "$missing" ] && return 0
    for c in "${HOSTS[@]}"; do
        "$DOCKER" container inspect "$c" >/dev/null 2>&1 && present+=("$c")
    done
    log "stale cluster: not running: ${missing% }; removing ${present[*]:-nothing} and Molecule's state"
    if [ ${#present[@]} -gt 0 ]; then
        "$DOCKER" rm -f "${present[@]}" >/dev/null
    fi
    "$DOCKER" network rm "$NETWORK" >/dev/null 2>&1 || true
    rm -rf "$MOLECULE_EPHEMERAL_DIRECTORY"
}

cmd="${1:-}"
shift || true
case "$cmd" in
    up)
        prerequisites
        reconcile
        step create "$MOLECULE" create -s "$SCENARIO"
        step converge "$MOLECULE" converge -s "$SCENARIO" -- "${CREDENTIALS_VARS[@]}" "$@"
        log "cluster is up: open $LB_URL/ in a browser on this host (lb:80 published on 127.0.0.1 only)"
        log "Prometheus: $PROMETHEUS_URL/ (monitor:9090 published on 127.0.0.1 only; targets: $PROMETHEUS_URL/targets)"
        health
        ;;
    converge)
        require_running "scripts/cluster.sh converge"
        step converge "$MOLECULE" converge -s "$SCENARIO" -- "${CREDENTIALS_VARS[@]}" "$@"
        health
        ;;
    verify)
        require_running "make verify"
        step verify "$MOLECULE" verify -s "$SCENARIO"
        ;;
    down)
        subnet="$("$DOCKER" network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$NETWORK" 2>/dev/null || true)"
        subnet="${subnet:-$SUBNET}"
        if "$DOCKER" info >/dev/null 2>&1; then
            step destroy "$MOLECULE" destroy -s "$SCENARIO"
        else
            log "docker daemon not answering: nothing to destroy"
        fi
        if leftovers "$subnet"; then
            log "down: no container, network or NAT rule of the cluster left${subnet:+ (subnet was $subnet)}"
        else
            die "down: the cluster left things behind (see above)"
        fi
        ;;
    test)
        prerequisites
        subnet="$SUBNET"
        rc=0
        step test "$MOLECULE" test -s "$SCENARIO" "$@" || rc=$?
        leftovers "$subnet" || die "test: the cluster left things behind"
        exit $rc
        ;;
    status)
        "$DOCKER" ps -a --filter label=owner=molecule --format '{{.Names}}\t{{.Status}}\t{{.Ports}}'
        for c in "${HOSTS[@]}"; do
            if "$DOCKER" container inspect "$c" >/dev/null 2>&1; then
                printf '%-8s systemd: %s\n' "$c" "$("$DOCKER" exec "$c" systemctl is-system-running 2>/dev/null || true)"
            fi
        done
        health || true
        ;;
    require)
        require_running "${1:-the local cluster}"
        ;;
    reconcile)
        reconcile
        ;;
    *)
        sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
        [ -z "$cmd" ] || [ "$cmd" = "-h" ] || [ "$cmd" = "--help" ] || exit 2
        ;;
esac
