"""The loopback stack with the real processes: nginx -> uWSGI x2 (gevent_uwsgi) -> Redis.

Every claim here is shown through the real nginx and real uWSGI rendered from the kit's templates.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import socketio
import websocket

from siokit.lab.local import LocalStack, down, up

from .conftest import start_stack

pytestmark = pytest.mark.integration
SOURCE_IPS = [f"127.0.0.{i}" for i in range(2, 10)]


def client(url: str, **kwargs: object) -> socketio.Client:
    c = socketio.Client(reconnection=False)
    c.connect(url, wait_timeout=10, **kwargs)  # type: ignore[arg-type]
    return c


def healthz_from(stack: LocalStack, source_ip: str) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=5, source_address=(source_ip, 0))
    conn.request("GET", "/healthz")
    body = conn.getresponse().read()
    conn.close()
    return json.loads(body)


def test_websocket_through_nginx(stack: LocalStack) -> None:
    c = client(stack.url, transports=["websocket"])
    try:
        assert c.transport() == "websocket"
        reply = c.call("echo", {"n": 1}, timeout=5)
        assert reply["ok"] is True
        assert reply["data"] == {"n": 1}
        assert str(reply["instance"]).startswith("local:")
    finally:
        c.disconnect()


def test_polling_first_then_upgrade_like_the_js_client(stack: LocalStack) -> None:
    """The official JS client starts with long-polling and upgrades; nginx must pass the upgrade."""
    c = client(stack.url, transports=["polling", "websocket"])
    try:
        deadline = time.monotonic() + 10
        while c.transport() != "websocket" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.transport() == "websocket"
        eio_sid = c.eio.sid  # the Engine.IO session id, which is what nginx logs in the URL
        assert eio_sid
        assert c.call("echo", "after-upgrade", timeout=5)["data"] == "after-upgrade"
    finally:
        c.disconnect()
    time.sleep(5.5)  # access_log flushes every 5 s
    log = (stack.state_dir / "nginx-access.log").read_text()
    upgrade_lines = [line for line in log.splitlines() if "transport=websocket" in line and f"sid={eio_sid}" in line]
    assert any('" 101 ' in line for line in upgrade_lines), log[-2000:]


def test_emit_on_one_instance_reaches_clients_of_the_other(stack: LocalStack) -> None:
    a_port, b_port = stack.app_ports
    on_b = client(f"http://127.0.0.1:{b_port}", transports=["websocket"])
    on_a = client(f"http://127.0.0.1:{a_port}", transports=["websocket"])
    admin = client(
        f"http://127.0.0.1:{a_port}",
        transports=["websocket"],
        namespaces=["/admin"],
        auth={"token": stack.admin_secret},
    )
    got: list[dict[str, object]] = []
    room_got_b: list[dict[str, object]] = []
    room_got_a: list[dict[str, object]] = []
    done = threading.Event()
    on_b.on("broadcast", lambda data: (got.append(data), done.set()))
    on_b.on("room_message", lambda data: room_got_b.append(data))
    on_a.on("room_message", lambda data: room_got_a.append(data))
    try:
        assert on_a.call("echo", 1)["instance"] != on_b.call("echo", 1)["instance"]
        ack = admin.call("broadcast", {"seq": 7, "text": "hello"}, namespace="/admin", timeout=5)
        assert ack["ok"] is True
        assert done.wait(5), "broadcast from instance A never reached the client on instance B"
        assert got[0]["seq"] == 7 and got[0]["text"] == "hello"
        assert isinstance(got[0]["sent_at"], float)
        # Rooms cross instances too, and the sender is skipped.
        assert on_a.call("join", {"room": "lobby"})["ok"] is True
        assert on_b.call("join", {"room": "lobby"})["ok"] is True
        assert on_a.call("room_message", {"room": "lobby", "text": "hi"})["ok"] is True
        deadline = time.monotonic() + 5
        while not room_got_b and time.monotonic() < deadline:
            time.sleep(0.05)
        assert room_got_b and room_got_b[0]["text"] == "hi"
        time.sleep(0.3)
        assert room_got_a == [], "skip_sid: the sender must not get its own room message"
    finally:
        for c in (on_a, on_b, admin):
            c.disconnect()


def test_admin_namespace_refuses_without_a_valid_token(stack: LocalStack) -> None:
    for auth in (None, {"token": "wrong"}):
        c = socketio.Client(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            c.connect(stack.url, namespaces=["/admin"], transports=["websocket"], auth=auth, wait_timeout=5)
        c.disconnect()


def test_anonymous_namespace_through_nginx(stack: LocalStack) -> None:
    sender = client(stack.url, transports=["websocket"], namespaces=["/anonymous"], auth={"nickname": "bob"})
    receiver = client(stack.url, transports=["websocket"], namespaces=["/anonymous"])
    got: list[dict[str, object]] = []
    receiver.on("chat", lambda data: got.append(data), namespace="/anonymous")
    try:
        assert sender.call("chat", {"text": "psst"}, namespace="/anonymous", timeout=5)["ok"] is True
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got and got[0]["nickname"] == "Anonymous" and got[0]["text"] == "psst"
    finally:
        sender.disconnect()
        receiver.disconnect()


def test_malformed_packets_leave_the_stack_serving(stack: LocalStack) -> None:
    ws_url = f"ws://127.0.0.1:{stack.port}/socket.io/?EIO=4&transport=websocket"
    junk = [
        "",
        "garbage",
        '42["x"',
        "4" * 10,
        "40/nonexistent,",
        "42" + "[" * 5000,
        "9",
        "43999[]",
        "42" + json.dumps(["echo", "x" * 500_000]),
    ]
    for payload in junk:
        try:
            ws = websocket.create_connection(ws_url, timeout=5)
            ws.recv()  # open packet
            ws.send("40")
            ws.send(payload)
            ws.send_binary(b"\xff\x00\x13")
            ws.close()
        except (OSError, websocket.WebSocketException):
            pass  # the server may drop a misbehaving client: that is fine
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=5)
    conn.request("POST", "/socket.io/?EIO=4&transport=polling&sid=nope", body=b"\x00\x01garbage")
    assert conn.getresponse().status in (400, 403, 404)
    conn.close()
    c = client(stack.url, transports=["websocket"])
    try:
        assert c.call("echo", "still here", timeout=5)["data"] == "still here"
    finally:
        c.disconnect()
    for port in stack.app_ports:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()


def test_ip_hash_pins_one_slash24_to_one_instance(stack: LocalStack) -> None:
    """The pitfall (Flask-SocketIO #468, #742, #643): ip_hash uses only the first three octets."""
    instances = {healthz_from(stack, ip)["instance"] for ip in SOURCE_IPS}
    assert len(instances) == 1, instances


def test_hash_remote_addr_spreads_one_slash24(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, "hash_remote_addr")
    try:
        seen = [healthz_from(stack, ip)["instance"] for ip in SOURCE_IPS]
        assert len(set(seen)) == 2, seen
        # ... and stays sticky per address, which long-polling needs.
        assert seen == [healthz_from(stack, ip)["instance"] for ip in SOURCE_IPS]
    finally:
        down(tmp_path)
    from siokit.lab.local import _alive

    assert not any(_alive(pid) for pid in stack.pids.values()), stack.pids


def test_direct_websocket_clients_spread_even_from_one_address(stack: LocalStack) -> None:
    """Direct websocket connects need no stickiness: least_conn spreads them despite ip_hash."""
    clients = [client(stack.url, transports=["websocket"]) for _ in range(6)]
    try:
        instances = {c.call("echo", 0, timeout=5)["instance"] for c in clients}
        assert len(instances) == 2, instances
    finally:
        for c in clients:
            c.disconnect()


def test_a_start_that_fails_says_why_and_down_stops_what_it_had_started(tmp_path: Path) -> None:
    """nginx's port taken after it was chosen: its own error, and nothing left running (bench/compare.py
    calls down() for a failed start too)."""
    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    taken.listen()
    try:
        stack = LocalStack(state_dir=tmp_path, port=taken.getsockname()[1], instances=2, sockets=2000)
        with pytest.raises(RuntimeError, match=r"nginx failed to start:[\s\S]*Address already in use"):
            up(stack)
        started = LocalStack.load(tmp_path).pids
        assert {"redis", "nginx"} & set(started) == {"redis"} and len(started) == 3  # redis + 2 uWSGI
        down(tmp_path)
        for pid in started.values():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            raise AssertionError(f"pid {pid} still running after down()")
    finally:
        taken.close()
