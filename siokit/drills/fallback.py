"""Drill 10, websockets blocked on the way: a second listener on the lb, rendered only for the drill
and removed after it, proxies /socket.io with the Upgrade header stripped (a proxy that does not
pass websockets). Clients with the default transports must fall back to long-polling and keep
working through the sticky upstream (rooms, acks, broadcasts). The same echo load is then run over
polling and over websocket to compare the server's CPU per message."""

from __future__ import annotations

import time
from typing import Any

from siokit.drills import cluster
from siokit.drills.base import BROADCAST_EVERY, Context, Fault
from siokit.drills.clients import FallbackGroup
from siokit.drills.load import LoadRun, Sampler
from siokit.lab.deployment import layout

PORT = 8090
SITE = layout().nginx_site
BACKUP = "/tmp/siokit.conf.drill-fallback"
# Only for the drill: the sticky upstream the kit renders (siokit_app), with Upgrade stripped.
SERVER = f"""
# siokit drill 10: websockets blocked on the way (removed after the drill)
server {{
    listen {PORT};
    location /socket.io {{
        proxy_pass http://siokit_app;
        proxy_http_version 1.1;
        proxy_set_header Upgrade "";
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_buffering off;
        proxy_read_timeout 120s;
    }}
}}
"""
GROUP_S = 25.0
CPU = "process_cpu_seconds_total"
ECHO_CLIENTS = 100
ECHO_RATE = 50.0  # echoes per second from all of them
ECHO_HOLD_S = 30.0


def cluster_cpu(ports: dict[str, list[int]]) -> float:
    """CPU seconds of every instance together; an instance that does not answer is an error."""
    total = 0.0
    for host, host_ports in ports.items():
        for port, values in cluster.instance_metrics(host, host_ports).items():
            if values is None or CPU not in values:
                raise RuntimeError(f"{host}:{port} did not answer /metrics")
            total += values[CPU]
    return total


def cpu_per_message_us(cpu_s: float, background_per_s: float, seconds: float, messages: int) -> float | None:
    """Server CPU per message, the background (the drill's held sockets) taken out."""
    if messages <= 0:
        return None
    return round(max(0.0, cpu_s - background_per_s * seconds) / messages * 1e6, 1)


def _echo_run(ctx: Context, name: str, url: str, transport: str) -> tuple[float, float, dict[str, Any]]:
    """(server CPU s, wall s, load report) of one echo load of ECHO_CLIENTS clients."""
    run = LoadRun(
        name,
        ECHO_CLIENTS,
        ECHO_HOLD_S,
        None,
        ctx.token,
        ["--url", url, "--transport", transport, "--echo-rate", str(ECHO_RATE), "--no-reconnect"],
    )
    cpu0, t0 = cluster_cpu(ctx.ports), time.time()
    run.start(ctx.out / f"{name}.log")
    report = run.wait(ECHO_HOLD_S + 180)
    return cluster_cpu(ctx.ports) - cpu0, time.time() - t0, report


def websocket_blocked(ctx: Context, sampler: Sampler) -> Fault:
    lb_ip = cluster.container_ip("lb")
    cluster.run("lb", f"cp -p {SITE} {BACKUP}")
    start = time.time()
    try:
        cluster.run("lb", f"cat >> {SITE} <<'EOF'\n{SERVER}EOF\nnginx -t -q && systemctl reload nginx")
        time.sleep(2)
        group = FallbackGroup(f"http://{lb_ip}:{PORT}").start()
        time.sleep(GROUP_S)
        counts = group.stop()
        group_end = time.time()
        # Background: the drill's held sockets alone, over as long as one echo run takes.
        cpu0, t0 = cluster_cpu(ctx.ports), time.time()
        time.sleep(20)
        background = (cluster_cpu(ctx.ports) - cpu0) / (time.time() - t0)
        poll_cpu, poll_s, poll = _echo_run(ctx, "fallback-polling", f"http://lb:{PORT}", "polling")
        ws_cpu, ws_s, ws = _echo_run(ctx, "fallback-websocket", "http://lb:80", "websocket")
    finally:
        cluster.run("lb", f"cp -p {BACKUP} {SITE} && nginx -t -q && systemctl reload nginx")
    restored = cluster.run("lb", f"grep -c 'siokit drill 10' {SITE} || true").strip() == "0"
    poll_n, ws_n = int(poll["echo"]["answered"]), int(ws["echo"]["answered"])
    return Fault(
        start,
        group_end,
        time.time(),
        {
            "transports": counts.transports,
            "clients_on_polling": counts.transports.count("polling"),
            "fallback_clients": len(counts.transports),
            "acks": counts.acks,
            "acks_failed": counts.acks_failed,
            "fallback_room_sent": counts.room_sent,
            "fallback_room_ratio": round(counts.room_received / (counts.room_sent * group.receivers), 4)
            if counts.room_sent
            else None,
            "fallback_broadcasts_received": counts.broadcasts_received,
            # every client sees at least the broadcasts wholly inside its window (one may be at an edge)
            "fallback_broadcasts_expected": len(counts.transports) * (int(GROUP_S // BROADCAST_EVERY) - 1),
            "background_cpu_per_s": round(background, 3),
            "polling_echoes": poll_n,
            "polling_echo_timeouts": int(poll["echo"]["timeouts"]),
            "polling_transports": poll["connections"]["transports"],
            "polling_cpu_s": round(poll_cpu, 2),
            "polling_us_per_message": cpu_per_message_us(poll_cpu, background, poll_s, poll_n),
            "websocket_echoes": ws_n,
            "websocket_cpu_s": round(ws_cpu, 2),
            "websocket_us_per_message": cpu_per_message_us(ws_cpu, background, ws_s, ws_n),
            "lb_config_restored": restored,
        },
    )
