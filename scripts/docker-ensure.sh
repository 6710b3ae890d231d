#!/usr/bin/env bash
# Make sure a Docker daemon answers, on machines where PID 1 is not systemd.
#
#   scripts/docker-ensure.sh            install docker.io if needed, start dockerd if `docker info`
#                                       does not answer, wait (bounded) until it does. Idempotent.
#   scripts/docker-ensure.sh --stop     stop the dockerd this script started (pid file), nothing else.
#
# Environment:
#   SIOKIT_STATE_DIR     where dockerd.log / dockerd.pid go (default: <repo>/.siokit)
#   DOCKER               docker client to use (default: /usr/bin/docker, Debian's client, which speaks
#                        the 20.10 daemon's API; /usr/local/bin/docker may be newer than the daemon)
#   DOCKERD_WAIT         seconds to wait for the daemon to answer (default 60)
#   DOCKERD_MTU          MTU for the docker bridge (default: the MTU of the default-route interface)
#
# Containers reach the package mirrors through NAT: dockerd writes its own MASQUERADE rule for the
# bridge subnet (iptables=true, the default) and needs net.ipv4.ip_forward=1, which this script sets.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SIOKIT_STATE_DIR:-$ROOT/.siokit}"
DOCKER="${DOCKER:-/usr/bin/docker}"
WAIT="${DOCKERD_WAIT:-60}"
export DOCKER_API_VERSION="${DOCKER_API_VERSION:-1.41}"

export PATH="$PATH:/usr/sbin:/sbin"   # dockerd, iptables, sysctl live there
log() { printf '[docker-ensure] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ "${1:-}" = "--stop" ]; then
    if [ -f "$STATE/dockerd.pid" ]; then
        pid="$(cat "$STATE/dockerd.pid")"
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping dockerd pid $pid"
            $SUDO kill "$pid"
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$STATE/dockerd.pid"
    else
        log "no dockerd started by this script ($STATE/dockerd.pid absent)"
    fi
    exit 0
fi

# A user outside the docker group reaches the root-owned socket through sudo.
answers() {
    if [ -n "$SUDO" ] && [ -S /var/run/docker.sock ] && [ ! -w /var/run/docker.sock ]; then
        timeout 10 $SUDO "$DOCKER" info >/dev/null 2>&1
    else
        timeout 10 "$DOCKER" info >/dev/null 2>&1
    fi
}

# 1. packages: docker.io (client + daemon), iptables for its NAT rules
if ! { [ -x /usr/sbin/dockerd ] || [ -x /usr/bin/dockerd ]; } || [ ! -x "$DOCKER" ] || ! command -v iptables >/dev/null; then
    log "installing docker.io"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends docker.io iptables
fi

# 2. forwarding, so the bridge's MASQUERADE rule can carry containers to the mirrors
if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != "1" ]; then
    log "enabling net.ipv4.ip_forward"
    $SUDO sysctl -q -w net.ipv4.ip_forward=1
fi

# 3. daemon
start_dockerd() {
    mtu="${DOCKERD_MTU:-}"
    if [ -z "$mtu" ]; then
        dev="$(ip -4 route show default 2>/dev/null | awk '{for(i=1;i<NF;i++) if($i=="dev"){print $(i+1); exit}}')"
        [ -n "$dev" ] && mtu="$(cat "/sys/class/net/$dev/mtu" 2>/dev/null || true)"
    fi
    args=(--iptables=true --ip-masq=true)
    [ -n "$mtu" ] && args+=(--mtu "$mtu")
    # a stale pid file from a crashed daemon blocks the start
    [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null \
        && $SUDO rm -f /var/run/docker.pid
    log "starting dockerd ${args[*]} (log: $STATE/dockerd.log)"
    # setsid: own session, survives this shell; stdin closed so nothing waits on it
    dockerd_bin="$(command -v dockerd || echo /usr/sbin/dockerd)"
    $SUDO setsid "$dockerd_bin" "${args[@]}" >>"$STATE/dockerd.log" 2>&1 </dev/null &
    echo $! >"$STATE/dockerd.pid"
    started_here=1
}

if answers; then
    log "docker daemon answers already"
else
    mkdir -p "$STATE"
    started_here=0
    if [ -f "$STATE/dockerd.pid" ] && kill -0 "$(cat "$STATE/dockerd.pid")" 2>/dev/null; then
        log "dockerd (pid $(cat "$STATE/dockerd.pid")) runs but does not answer (starting, or shutting down); waiting"
    elif pgrep -x dockerd >/dev/null 2>&1; then
        log "a dockerd not started by us runs but does not answer; waiting for it"
    else
        start_dockerd
    fi
    deadline=$((SECONDS + WAIT))
    until answers; do
        if [ -f "$STATE/dockerd.pid" ]; then
            kill -0 "$(cat "$STATE/dockerd.pid")" 2>/dev/null && alive=1 || alive=0
        else
            pgrep -x dockerd >/dev/null 2>&1 && alive=1 || alive=0
        fi
        if [ "$alive" = 0 ]; then
            rm -f "$STATE/dockerd.pid"
            # The one waited for was on its way out (a daemon being stopped looks the same as one
            # starting, seen 2026-12-03): start a new one, once.
            if [ "$started_here" = 0 ]; then
                log "that dockerd exited without answering"
                start_dockerd
                deadline=$((SECONDS + WAIT))
                continue
            fi
            log "dockerd exited; last log lines:"
            tail -n 20 "$STATE/dockerd.log" >&2 || true
            exit 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            log "dockerd did not answer within ${WAIT}s; last log lines:"
            tail -n 20 "$STATE/dockerd.log" >&2 || true
            exit 1
        fi
        sleep 0.3
    done
    log "docker daemon answers"
fi

# 4. NAT check: dockerd must have written a MASQUERADE rule for its bridge
if command -v iptables >/dev/null && ! $SUDO iptables -t nat -S POSTROUTING 2>/dev/null | grep -q MASQUERADE; then
    log "WARNING: no MASQUERADE rule in nat/POSTROUTING; containers may not reach the mirrors"
fi
exit 0
