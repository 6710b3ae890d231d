"""Run inside a fresh network namespace (`unshare -n`): the loopback stack with a 100-port
ip_local_port_range, so nginx runs out of connect() ports toward each upstream at ~100 sockets.

Phases: the planned load (75 per upstream), then past the ports (115 per upstream), then back
under them; new handshakes are counted in each phase. Writes the counts as JSON to argv[1].

nginx_upstream_check is on (the default): each new websocket's check holds one more lb port toward
its upstream for planner.CHECK_PORT_HOLD_S (TIME_WAIT until tcp_tw_reuse frees it; loopback in a
fresh namespace has tcp_tw_reuse=2, which covers loopback). So the planned load is 150 sockets at a
rate the spare ports carry, planner.check_connects_per_second(); all 150 at once ran out of ports
(RELIABILITY.md, "The check and the lb's ports").
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websocket

from siokit import planner
from siokit.lab import local

PORTS = (40000, 40099)
SOURCES = [f"127.0.0.{i}" for i in range(2, 6)]
UPSTREAMS = 2
PLANNED = 150
# Ports per upstream: the whole range (measured: the shortage starts near 100 per upstream).
RANGE = PORTS[1] - PORTS[0] + 1
# The planned connect rate: 80% of what the spare ports carry with the check on.
PLANNED_RATE = 0.8 * planner.check_connects_per_second(RANGE, PLANNED // UPSTREAMS, UPSTREAMS)


def open_clients(port: int, n: int, start: int, rate: float = 0.0) -> tuple[list[websocket.WebSocket], int]:
    """Open n websockets, at most `rate` per second (0: as fast as they go)."""
    url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
    ok, failed = [], 0
    t0 = time.monotonic()
    for i in range(n):
        if rate > 0:
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        try:
            # An explicit source port below the range: a bind() port is never shared with connect(),
            # so clients bound inside the range would eat nginx's ports (the lb is alone in prod).
            k = start + i
            sock = socket.create_connection(
                ("127.0.0.1", port), timeout=5, source_address=(SOURCES[k % len(SOURCES)], 20000 + k)
            )
            ws = websocket.create_connection(url, timeout=5, socket=sock)
            ws.recv()  # the Engine.IO open packet: the upstream answered
            ok.append(ws)
        except (OSError, websocket.WebSocketException):
            failed += 1
    return ok, failed


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    Path("/proc/sys/net/ipv4/ip_local_port_range").write_text(f"{PORTS[0]} {PORTS[1]}")
    state = Path(tempfile.mkdtemp(prefix="siokit-ports-"))
    stack = local.LocalStack(state_dir=state, port=18080, instances=2, balance="least_conn", sockets=200)
    local.up(stack)
    site = (stack.rendered / "nginx" / "siokit.conf").read_text()
    result: dict[str, object] = {
        "port_range": PORTS,
        "planned_rate": round(PLANNED_RATE, 1),
        "upstream_check": "auth_request /siokit-upstream-check" in site,
    }
    try:
        held, failed = open_clients(stack.port, PLANNED, 0, PLANNED_RATE)
        result["planned_150"] = {"ok": len(held), "failed": failed}
        more, failed = open_clients(stack.port, 80, PLANNED)
        held += more
        result["past_the_ports_80_more"] = {"ok": len(more), "failed": failed}
        for ws in held[100:]:
            ws.close()
        held = held[:100]
        time.sleep(1)
        t_release = time.monotonic()
        recovered_after = None
        probes = []
        while time.monotonic() - t_release < 25:
            new, failed = open_clients(stack.port, 5, 1000 + 5 * len(probes))
            probes.append({"t": round(time.monotonic() - t_release, 1), "ok": len(new), "failed": failed})
            for ws in new:
                ws.close()
            if failed == 0 and recovered_after is None:
                recovered_after = round(time.monotonic() - t_release, 1)
            if recovered_after is not None and time.monotonic() - t_release > recovered_after + 3:
                break
            time.sleep(1)
        result["back_under_the_ports"] = {"recovered_after_s": recovered_after, "probes": probes}
        errors = (state / "nginx-error.log").read_text(errors="replace")
        result["nginx_errors"] = {
            "cannot_assign_address": errors.count("(99: Cannot assign requested address)"),
            "no_live_upstreams": errors.count("no live upstreams"),
        }
        for ws in held:
            ws.close()
    finally:
        local.down(state)
    Path(sys.argv[1]).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
