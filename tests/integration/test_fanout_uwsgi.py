"""The websocket fan-out path under a REAL uWSGI: order per socket, backlog, slow consumers.

Run: .venv/bin/python -m pytest tests/integration/test_fanout_uwsgi.py
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import socketio
import websocket

from siokit.lab.servers import Proc, get_json, run_uwsgi

pytestmark = pytest.mark.integration

SMALL_RCVBUF = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
TEXT = "z" * 1900  # near the chat limit (app/events/chat.py MAX_TEXT_LEN)
# ~5.7 MB per recipient: past what loopback's kernel buffers absorb (tcp_wmem max 4 MB here), so
# the server's backlog must take the rest.
# One sender emits thousands of events here on purpose: lift the per-socket rate limit (app/ratelimit.py).
UNLIMITED_EVENTS = {"SIOKIT_EVENT_RATE": "100000", "SIOKIT_EVENT_BURST": "100000"}
N_ORDER = 3000


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def metric(proc: Proc, name: str) -> float:
    with urllib.request.urlopen(proc.url + "/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def worker_rss_kb(proc: Proc) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == proc.popen.pid:
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
    raise AssertionError("no uWSGI worker")


def raw_client(proc: Proc, timeout: float = 10) -> websocket.WebSocket:
    """Engine.IO open + Socket.IO connect to "/" on a socket with a tiny receive buffer."""
    url = f"ws://127.0.0.1:{proc.port}/socket.io/?EIO=4&transport=websocket"
    ws = websocket.create_connection(url, timeout=timeout, sockopt=SMALL_RCVBUF)
    assert ws.recv().startswith("0{")
    ws.send("40")
    assert ws.recv().startswith("40")
    return ws


def sender(proc: Proc) -> socketio.Client:
    client = socketio.Client(reconnection=False)
    client.connect(proc.url, transports=["websocket"], wait_timeout=5)
    return client


def test_order_per_socket_with_a_backlog_and_pings(tmp_path: Path) -> None:
    env = {
        "SIOKIT_PING_INTERVAL": "1",
        "SIOKIT_PING_TIMEOUT": "90",  # the receiver answers no ping while it reads nothing
        "SIOKIT_MAX_BACKLOG_BYTES": str(64 << 20),
        **UNLIMITED_EVENTS,
    }
    with run_uwsgi(tmp_path, env=env) as proc:
        rx = raw_client(proc)
        rx.send('42["join",{"room":"r"}]')
        s = sender(proc)
        try:
            assert s.call("join", {"room": "r"}, timeout=5)["ok"]
            time.sleep(0.2)
            backlogged = 0.0
            # The receiver reads nothing meanwhile: the kernel buffers fill, then the backlog.
            for seq in range(N_ORDER):
                event = "room_message" if seq % 3 else "chat"
                data: dict[str, Any] = {"text": f"{seq}:{TEXT}"}
                if event == "room_message":
                    data["room"] = "r"
                assert s.call(event, data, timeout=10)["ok"], seq
                if seq % 250 == 249:
                    backlogged = max(backlogged, metric(proc, "siokit_backlogged_sockets"))
            assert backlogged >= 1, "the test never exercised the backlog"
            seqs: list[int] = []
            pings = 0
            rx.settimeout(10)
            while len(seqs) < N_ORDER:
                frame = rx.recv()
                if frame == "2":
                    pings += 1
                    rx.send("3")
                    continue
                if not frame.startswith("42["):
                    continue  # the join ack
                name, payload = json.loads(frame[2:])
                assert name in ("chat", "room_message")
                seqs.append(int(payload["text"].split(":", 1)[0]))
            assert seqs == list(range(N_ORDER))
            assert pings >= 1  # pings queued behind the messages, in order with them
            assert metric(proc, "siokit_slow_consumer_closes_total") == 0
            assert metric(proc, "siokit_backlog_bytes") == 0
        finally:
            s.disconnect()
            rx.close()


def test_slow_consumer_is_closed_and_the_others_keep_receiving(tmp_path: Path) -> None:
    bound = 65536
    env = {"SIOKIT_MAX_BACKLOG_BYTES": str(bound), **UNLIMITED_EVENTS}
    with run_uwsgi(tmp_path, env=env) as proc:
        heard: list[Any] = []
        healthy = socketio.Client(reconnection=False)
        healthy.on("chat", heard.append)
        healthy.connect(proc.url, transports=["websocket"], wait_timeout=5)
        s = sender(proc)
        slow = raw_client(proc)  # completes the handshake, then never reads again
        try:
            assert wait_until(lambda: get_json(proc.url + "/healthz")["connected"] == 3)
            rss_before = worker_rss_kb(proc)
            n = N_ORDER
            for seq in range(n):
                assert s.call("chat", {"text": f"{seq}:{TEXT}"}, timeout=10)["ok"], seq
            assert wait_until(lambda: metric(proc, "siokit_slow_consumer_closes_total") == 1)
            assert wait_until(lambda: get_json(proc.url + "/healthz")["connected"] == 2)
            assert wait_until(lambda: len(heard) == n)
            assert [int(m["text"].split(":", 1)[0]) for m in heard] == list(range(n))
            assert metric(proc, "siokit_backlogged_sockets") == 0
            assert metric(proc, "siokit_backlog_bytes") == 0
            growth_kb = worker_rss_kb(proc) - rss_before
            # The dropped backlog held at most `bound` bytes; allow for allocator slack.
            assert growth_kb < 8 * 1024, growth_kb
            assert s.call("echo", "after", timeout=5)["data"] == "after"
        finally:
            slow.close()
            s.disconnect()
            healthy.disconnect()
        assert "slow consumer" in proc.log() or wait_until(lambda: "slow consumer" in proc.log(), 15)
