"""Server CPU per new websocket through the loopback stack, with or without nginx's upstream check
(RELIABILITY.md, "A restarted instance got no new clients"). Not a test: a measurement.

    .venv/bin/python -m tests.integration._upstream_check_cost check|nocheck [CONNECTS]

Each connect: the Engine.IO open packet, a Socket.IO connect to "/", close; one after the other.
Prints uWSGI and nginx CPU microseconds per connect (all their processes, from /proc) as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import websocket

from siokit.lab.local import LocalStack, down, up

from .conftest import free_base_port


def cpu_s(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def group(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def connect_once(url: str) -> None:
    ws = websocket.create_connection(url, timeout=5)
    ws.recv()
    ws.send("40")
    ws.recv()
    ws.close()


def main() -> None:
    check = sys.argv[1] == "check"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
    state = Path(tempfile.mkdtemp(prefix="siokit-check-cost-"))
    overrides = {"nginx_upstream_check": "/livez" if check else ""}
    stack = LocalStack(state_dir=state, port=free_base_port(), instances=2, sockets=2000, overrides=overrides)
    try:
        up(stack)
        uwsgi = [p for k, v in stack.pids.items() if k.startswith("uwsgi-") for p in group(v)]
        nginx = group(os.getpgid(stack.pids["nginx"]))
        url = f"ws://127.0.0.1:{stack.port}/socket.io/?EIO=4&transport=websocket"
        for _ in range(20):  # warm up
            connect_once(url)
        u0, n0, t0 = cpu_s(uwsgi), cpu_s(nginx), time.monotonic()
        for _ in range(n):
            connect_once(url)
        u1, n1, t1 = cpu_s(uwsgi), cpu_s(nginx), time.monotonic()
        print(
            json.dumps(
                {
                    "check": check,
                    "connects": n,
                    "uwsgi_us_per_connect": round((u1 - u0) / n * 1e6),
                    "nginx_us_per_connect": round((n1 - n0) / n * 1e6),
                    "wall_ms_per_connect": round((t1 - t0) / n * 1e3, 2),
                }
            )
        )
    finally:
        down(state)


if __name__ == "__main__":
    main()
