"""Run inside a fresh network namespace (`unshare -n`): a reconnect storm on the loopback stack with a
100-port ip_local_port_range (the lb's connect() ports toward each upstream).

Two runs: the most clients the planner's storm arithmetic fits in the ports
(planner.storm_ports_needed at the rate this lb starts new websockets, per upstream with the
planner's SPREAD_HEADROOM), then clients past them (135% of the ports at an even spread). In each,
`siokit load` opens the clients over 2 instances (least_conn) at a pace the spare ports carry, then
nginx is restarted (TERM to the master, as the workers' end under `systemctl restart nginx`, and
started again at once): every client drops, and comes back with the load generator's jittered
exponential backoff (0.5 s doubling, x0.5-1). nginx closes the old lb -> instance connections first,
so their ports go to TIME_WAIT on the lb just as the clients need new ports plus one upstream-check
port each (planner.CHECK_PORT_HOLD_S, planner.storm_ports_needed).

Measured per run: the lb's ports toward each upstream every 50 ms (ESTABLISHED, TIME-WAIT, other
states; TIME_WAIT entries stay listed after tcp_tw_reuse has made them reusable, ~1 s on), errno 99,
"no live upstreams" and failed checks in nginx's error log, when every client was back, and the load
generator's counts. Writes the results as JSON to argv[1].
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from siokit import planner
from siokit.facts import local_host_facts
from siokit.lab import local

PORTS = (40000, 40099)
SOURCES = [f"127.0.0.{i}" for i in range(2, 6)]
INSTANCES = 2
RANGE = PORTS[1] - PORTS[0] + 1  # connect() ports toward each upstream (as in _port_pressure.py)
HOLD_BEFORE_S = 1.5  # after the ramp, before the restart
WATCH_S = 4.0  # how long the storm is watched after the restart
# The rate this lb starts new websockets, over the upstreams: the storm's pace in the arithmetic.
PER_PAIR_RATE = planner.lb_connects_per_second(local_host_facts()) / INSTANCES


def storm_ports(clients: int, spread: float = planner.SPREAD_HEADROOM) -> int:
    """The planner's storm ports per upstream for `clients`, with its headroom for an uneven spread."""
    return planner.storm_ports_needed(math.ceil(clients / INSTANCES * spread), PER_PAIR_RATE)


# The most clients the arithmetic fits in the ports; and a storm past them (135%, even at an even spread).
PLANNED = max(c for c in range(1, 2 * RANGE) if storm_ports(c) <= RANGE)
PAST = min(c for c in range(1, 2 * RANGE) if storm_ports(c, 1.0) >= 1.35 * RANGE)


def lb_ports(upstreams: list[int]) -> dict[int, Counter[str]]:
    """States of the lb's sockets toward each upstream (local side in the ephemeral range)."""
    out = subprocess.run(["ss", "-Htan"], capture_output=True, text=True, check=True).stdout
    counts: dict[int, Counter[str]] = {p: Counter() for p in upstreams}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 5:
            continue
        state, local_addr, peer = cols[0], cols[3], cols[4]
        if peer.endswith(":*"):
            continue
        lport = int(local_addr.rpartition(":")[2])
        pport = int(peer.rpartition(":")[2])
        if pport in counts and PORTS[0] <= lport <= PORTS[1]:
            counts[pport][state] += 1
    return counts


def restart_nginx(stack: local.LocalStack) -> tuple[float, float]:
    """TERM the master (its workers close every connection at once), start nginx again.

    Seconds until the old master was gone, and until the new one was started."""
    t0 = time.monotonic()
    pid = stack.pids["nginx"]
    os.kill(pid, signal.SIGTERM)
    while local._alive(pid):  # a zombie until PID 1 reaps it: gone for clients
        time.sleep(0.005)
    stopped = time.monotonic() - t0
    subprocess.run(local._nginx_cmd(stack), check=True, capture_output=True)
    stack.pids["nginx"] = int((stack.state_dir / "nginx.pid").read_text())
    stack.save()
    return stopped, time.monotonic() - t0


def storm(clients: int) -> dict[str, object]:
    state = Path(tempfile.mkdtemp(prefix="siokit-storm-"))
    stack = local.LocalStack(state_dir=state, port=18080, instances=INSTANCES, balance="least_conn", sockets=200)
    local.up(stack)
    report = state / "load.json"
    ramp_s = clients / 24  # 3 clients per 0.5 s per source IP: ~6/s per upstream, well under the spare ports
    hold = ramp_s + HOLD_BEFORE_S + WATCH_S + 1.5
    load = subprocess.Popen(
        [
            *(sys.executable, "-m", "siokit.cli", "load", "--url", stack.url, "--bind", ",".join(SOURCES)),
            *("--connections", str(clients), "--batch-size", "3", "--batch-pause", "0.5"),
            *("--hold", f"{hold:.1f}", "--reconnect-min", "0.5", "--reconnect-max", "30"),
            *("--connect-timeout", "5", "--no-progress", "--report", str(report), "--html", str(state / "l.html")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(state / "load.err").open("w"),
    )
    result: dict[str, object] = {"clients": clients, "storm_ports_planned": storm_ports(clients)}
    try:
        ups = stack.app_ports
        deadline = time.monotonic() + ramp_s + 15
        while time.monotonic() < deadline:
            est = sum(c["ESTAB"] for c in lb_ports(ups).values())
            if est >= clients:
                break
            time.sleep(0.2)
        time.sleep(HOLD_BEFORE_S)
        before = lb_ports(ups)
        result["before"] = {str(p): dict(c) for p, c in before.items()}
        log = state / "nginx-error.log"
        log_offset = log.stat().st_size
        t_restart = time.monotonic()
        stopped, started = restart_nginx(stack)
        result["nginx_stopped_s"], result["nginx_started_s"] = round(stopped, 3), round(started, 3)
        peak_tw = dict.fromkeys(ups, 0)
        peak_used = dict.fromkeys(ups, 0)
        back_after = None
        timeline = []
        while time.monotonic() - t_restart < WATCH_S:
            counts = lb_ports(ups)
            t = round(time.monotonic() - t_restart, 2)
            if t <= 2.0:  # the dropped ones' TIME_WAIT, not yet reusable: [ESTABLISHED, TIME-WAIT] per upstream
                timeline.append([t, [[counts[p]["ESTAB"], counts[p]["TIME-WAIT"]] for p in ups]])
            for p, c in counts.items():
                peak_tw[p] = max(peak_tw[p], c["TIME-WAIT"])
                peak_used[p] = max(peak_used[p], sum(c.values()))
            if back_after is None and sum(c["ESTAB"] for c in counts.values()) >= clients:
                back_after = t
            time.sleep(0.05)
        errors = log.read_bytes()[log_offset:].decode(errors="replace")
        result.update(
            {
                "peak_time_wait": [peak_tw[p] for p in ups],
                "peak_ports_used": [peak_used[p] for p in ups],
                "all_back_after_s": back_after,
                "timeline": timeline,
                "cannot_assign_address": errors.count("(99: Cannot assign requested address)"),
                "no_live_upstreams": errors.count("no live upstreams"),
                "auth_502": errors.count("auth request unexpected status: 502"),
            }
        )
    except BaseException:
        load.terminate()
        raise
    finally:
        load.wait(timeout=hold + 60)
        local.down(state)
    con = json.loads(report.read_text())["connections"]
    result["load"] = {
        k: con.get(k)
        for k in ("established", "reconnects", "reconnect_attempts", "failures", "reconnect_failures", "drops")
    }
    return result


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    Path("/proc/sys/net/ipv4/ip_local_port_range").write_text(f"{PORTS[0]} {PORTS[1]}")
    counts = [int(n) for n in sys.argv[2:]] or [PLANNED, PAST]
    result = {"port_range": PORTS, "planned": PLANNED, "past": PAST, "per_pair_rate": PER_PAIR_RATE}
    result["runs"] = [storm(n) for n in counts]
    Path(sys.argv[1]).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
