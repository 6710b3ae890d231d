"""The app under a REAL uWSGI (gevent, --http-websockets) on loopback, with real clients.

Run: .venv/bin/python -m pytest -m integration tests/integration/test_app_uwsgi.py
Idle-CPU A/B of the websocket driver (slow, prints figures, asserts nothing about timing):
     SIOKIT_MEASURE_IDLE_CPU=1 .venv/bin/python -m pytest -s -k idle_cpu tests/integration/test_app_uwsgi.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
import websocket  # websocket-client: raw frames, no Socket.IO logic in the way

from siokit.lab.servers import (
    Proc,
    get_json,
    process_tree_cpu_seconds,
    redis_numsub,
    run_redis,
    run_uwsgi,
)

pytestmark = pytest.mark.integration

ADMIN_SECRET = "integration-secret-0123456789"
MAX_MESSAGE_BYTES = 10_000
BASE_ENV = {
    "SIOKIT_ADMIN_SECRET": ADMIN_SECRET,
    "SIOKIT_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
}


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@contextlib.contextmanager
def sio_client(
    url: str, transports: list[str] | None = None, namespaces: list[str] | None = None, **kw: Any
) -> Iterator[socketio.Client]:
    client = socketio.Client(reconnection=False)
    client.connect(url, transports=transports, namespaces=namespaces, wait_timeout=5, **kw)
    try:
        yield client
    finally:
        client.disconnect()


def ws_url(proc: Proc) -> str:
    return f"ws://127.0.0.1:{proc.port}/socket.io/?EIO=4&transport=websocket"


def assert_fresh_client_works(proc: Proc) -> None:
    assert proc.alive(), proc.log()
    assert get_json(proc.url + "/healthz")["status"] == "ok"
    with sio_client(proc.url, transports=["websocket"]) as client:
        reply = client.call("echo", {"n": 1}, timeout=5)
        assert reply["ok"] is True
        assert reply["data"] == {"n": 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with run_uwsgi(tmp_path_factory.mktemp("uwsgi"), env=BASE_ENV) as proc:
        yield proc


# --- transport, adapter, round trips ---------------------------------------------------------------


def test_event_driven_adapter_is_active(server: Proc) -> None:
    health = get_json(server.url + "/healthz")
    assert health["async_mode"] == "gevent_uwsgi"
    assert health["websocket_driver"] == "EventDrivenUWSGIWebSocket"
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp:
        assert 'websocket_driver="EventDrivenUWSGIWebSocket"' in resp.read().decode()


def test_websocket_only_client_echo_round_trip(server: Proc) -> None:
    with sio_client(server.url, transports=["websocket"], auth={"nickname": "ws"}) as client:
        assert client.transport() == "websocket"
        sent = time.time()
        reply = client.call("echo", {"payload": "x" * 100}, timeout=5)
        assert reply["ok"] is True and reply["data"] == {"payload": "x" * 100}
        assert reply["server_time"] >= sent - 1
        assert client.call("ping", 42, timeout=5)["data"] == 42


def test_polling_client_upgrades_to_websocket(server: Proc) -> None:
    with sio_client(server.url) as client:  # default: long-polling first, then upgrade
        assert wait_until(lambda: client.transport() == "websocket", timeout=5), client.transport()
        assert client.call("echo", "after-upgrade", timeout=5)["data"] == "after-upgrade"


def test_chat_reaches_others_not_sender_and_rooms_work(server: Proc) -> None:
    got_a: list[Any] = []
    got_b: list[Any] = []
    with sio_client(server.url, transports=["websocket"]) as a, sio_client(server.url, transports=["websocket"]) as b:
        a.on("chat", got_a.append)
        b.on("chat", got_b.append)
        a.on("room_message", got_a.append)
        b.on("room_message", got_b.append)
        assert a.call("chat", {"text": "hello"}, timeout=5)["ok"] is True
        assert wait_until(lambda: len(got_b) == 1)
        assert got_b[0]["text"] == "hello"
        assert b.call("join", {"room": "lobby"}, timeout=5)["ok"] is True
        assert a.call("join", {"room": "lobby"}, timeout=5)["ok"] is True
        assert a.call("room_message", {"room": "lobby", "text": "in room"}, timeout=5)["ok"] is True
        assert wait_until(lambda: len(got_b) == 2)
        time.sleep(0.2)
        assert got_a == []  # skip_sid: the sender never hears itself


def test_engineio_pings_keep_idle_websocket_alive(tmp_path: Path) -> None:
    # With a 1 s ping interval the socket lives through several ping/pong rounds, each of which must
    # wake the event-driven wait() (the stock driver would also wake on its 3 s timer).
    env = {**BASE_ENV, "SIOKIT_PING_INTERVAL": "1", "SIOKIT_PING_TIMEOUT": "2"}
    with run_uwsgi(tmp_path, env=env) as proc, sio_client(proc.url, transports=["websocket"]) as client:
        time.sleep(4.5)
        assert client.connected
        assert client.call("echo", "still here", timeout=5)["data"] == "still here"
        assert get_json(proc.url + "/healthz")["connected"] == 1


def test_server_pings_on_schedule_from_the_timer(tmp_path: Path) -> None:
    # app/upstream/ping_timer.py: pings come from shared timers, one per interval (at most a tick late) after each pong.
    env = {**BASE_ENV, "SIOKIT_PING_INTERVAL": "1", "SIOKIT_PING_TIMEOUT": "2"}
    with run_uwsgi(tmp_path, env=env) as proc:
        ws = _raw_session(proc)
        try:
            start, pings = time.monotonic(), []
            while len(pings) < 3:  # a missing ping ends this in recv()'s 5 s timeout
                if ws.recv() == "2":
                    pings.append(time.monotonic() - start)
                    ws.send("3")
            gaps = [b - a for a, b in zip([0.0, *pings], pings, strict=False)]
            assert all(0.8 < g < 1.5 for g in gaps), gaps
        finally:
            ws.close()


def test_server_side_close_ends_the_websocket(tmp_path: Path) -> None:
    # A raw client that never answers Engine.IO pings: the server must close it by itself
    # (exercises close() -> wait() returns None with no timer to fall back on).
    env = {**BASE_ENV, "SIOKIT_PING_INTERVAL": "1", "SIOKIT_PING_TIMEOUT": "1"}
    with run_uwsgi(tmp_path, env=env) as proc:
        ws = _raw_session(proc, timeout=10)
        try:
            start = time.monotonic()
            closed = False
            while time.monotonic() - start < 8:
                try:
                    frame = ws.recv()
                except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
                    closed = True
                    break
                if frame == "" or frame is None:
                    closed = True
                    break
            assert closed, "server did not close a socket that ignored pings"
        finally:
            ws.close()
        assert wait_until(lambda: get_json(proc.url + "/healthz")["connected"] == 0, timeout=5)
        assert_fresh_client_works(proc)


def test_the_kits_reader_answers_pings_and_reassembles_what_tcp_splits(tmp_path: Path) -> None:
    # On plain TCP the kit reads websocket frames in the hub (app/upstream/ws_reader.py) instead of
    # uWSGI's websocket_recv_nb(). A client's PING gets its PONG, a fragmented message and a frame cut
    # across TCP writes arrive whole and in order. uWSGI's own ping (1 s here) ran only inside
    # websocket_recv_nb(), which this path never calls: no PING from uWSGI may arrive.
    extra = ["--websockets-ping-freq", "1", "--websockets-pong-tolerance", "30"]
    with run_uwsgi(tmp_path, env=BASE_ENV, extra=extra) as proc:
        ws = websocket.create_connection(ws_url(proc), timeout=5)
        seen: list[tuple[int, bytes]] = []

        def next_frame() -> tuple[int, bytes]:
            opcode, data = ws.recv_data(control_frame=True)
            seen.append((opcode, data))
            return opcode, data

        def assert_ack(frame: tuple[int, bytes], ack_id: int, data: str) -> None:
            opcode, payload = frame
            assert opcode == websocket.ABNF.OPCODE_TEXT and payload.startswith(f"43{ack_id}[".encode()), frame
            assert json.loads(payload[3:])[0]["data"] == json.loads(data), frame

        def masked(data: str | bytes, opcode: int, fin: int = 1) -> bytes:
            frame = websocket.ABNF.create_frame(data, opcode, fin)
            frame.get_mask_key = os.urandom
            return frame.format()

        try:
            assert next_frame()[1].startswith(b"0{")
            ws.send("40")
            assert next_frame()[1].startswith(b"40")
            ws.ping(b"hello")
            assert next_frame() == (websocket.ABNF.OPCODE_PONG, b"hello")
            # A text message in two fragments, a PING between them (RFC 6455 5.4 allows it).
            ws.sock.sendall(masked('421["echo",', websocket.ABNF.OPCODE_TEXT, fin=0))
            ws.ping(b"mid")
            ws.sock.sendall(masked('"x"]', websocket.ABNF.OPCODE_CONT))
            assert next_frame() == (websocket.ABNF.OPCODE_PONG, b"mid")
            assert_ack(next_frame(), 1, '"x"')
            # One frame in three TCP writes, then two whole frames in one write.
            whole = masked('422["echo","y"]', websocket.ABNF.OPCODE_TEXT)
            for piece in (whole[:1], whole[1:5], whole[5:]):
                ws.sock.sendall(piece)
                time.sleep(0.2)
            assert_ack(next_frame(), 2, '"y"')
            ws.sock.sendall(masked('423["echo",3]', 1) + masked('424["echo",4]', 1))
            assert_ack(next_frame(), 3, "3")
            assert_ack(next_frame(), 4, "4")
            time.sleep(2.5)  # uWSGI's ping would have come by now
            ws.send('425["echo",5]')
            assert_ack(next_frame(), 5, "5")
        finally:
            ws.close()
        assert all(op != websocket.ABNF.OPCODE_PING for op, _ in seen), seen
        assert_fresh_client_works(proc)


def test_a_websocket_protocol_error_closes_that_socket_and_is_counted(server: Proc) -> None:
    ws = _raw_session(server)
    try:
        ws.sock.sendall(b"\x81\x05hello")  # unmasked: RFC 6455 5.1 requires the client to mask
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert data[:2] == (1002).to_bytes(2, "big")
    finally:
        ws.close()
    metrics = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
    assert 'kind="bad_frame"' in metrics
    assert_fresh_client_works(server)


# --- malformed input never takes the server down ------------------------------------------------


def _raw_session(proc: Proc, timeout: float = 5) -> websocket.WebSocket:
    """A raw websocket that has completed the Engine.IO open and the Socket.IO connect to "/"."""
    ws = websocket.create_connection(ws_url(proc), timeout=timeout)
    assert ws.recv().startswith("0{")
    ws.send("40")
    assert ws.recv().startswith("40")
    return ws


def _drain(ws: websocket.WebSocket, seconds: float = 0.3) -> None:
    ws.settimeout(seconds)
    with contextlib.suppress(Exception):
        while True:
            ws.recv()


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(["garbage"], id="garbage-text"),
        pytest.param(['42["x"'], id="truncated-json"),
        pytest.param(["42{}", "42[]", "42[1,2]", "43", "4x", "9", ""], id="bad-packets"),
        pytest.param(['42/nonexistent,["echo",1]', "40/nonexistent,"], id="unknown-namespace"),
        pytest.param(['42["connect"]', '42["disconnect","x"]'], id="spoofed-reserved-events"),
        pytest.param(['42["echo",{"a":' + "[" * 5000 + "]" * 5000 + "}]"], id="deep-nesting"),
        pytest.param([b"\x00\xff\xfe garbage"], id="binary-garbage"),
    ],
)
def test_malformed_websocket_frames(server: Proc, frames: list[Any]) -> None:
    ws = _raw_session(server)
    try:
        for frame in frames:
            try:
                if isinstance(frame, bytes):
                    ws.send_binary(frame)
                else:
                    ws.send(frame)
            except (websocket.WebSocketException, OSError):
                break  # the server may drop us; that is fine
        _drain(ws)
    finally:
        ws.close()
    assert_fresh_client_works(server)


def test_failed_websocket_upgrade_without_probe(server: Proc) -> None:
    # python-engineio returns from the websocket handler without close() when the upgrade probe is
    # wrong: the adapter must still end the request and stop its read watcher.
    with urllib.request.urlopen(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=5) as resp:
        sid = json.loads(resp.read().decode()[1:])["sid"]
    for first in ("5", "garbage", "2notprobe"):
        ws = websocket.create_connection(f"{ws_url(server)}&sid={sid}", timeout=5)
        try:
            ws.send(first)
            _drain(ws, 0.5)
        finally:
            ws.close()
    assert_fresh_client_works(server)


def test_oversized_message_is_refused_without_harm(server: Proc) -> None:
    ws = _raw_session(server)
    try:
        # Over SIOKIT_MAX_MESSAGE_BYTES: python-engineio closes this socket.
        ws.send('42["echo","' + "x" * (MAX_MESSAGE_BYTES * 2) + '"]')
        _drain(ws, 1.0)
    finally:
        ws.close()
    ws = _raw_session(server)
    try:
        # Over 1 MB: the kit's reader refuses it (1009) from the frame's header, before buffering it.
        with contextlib.suppress(websocket.WebSocketException, OSError):
            ws.send('42["echo","' + "y" * (1100 * 1024) + '"]')
        _drain(ws, 1.0)
    finally:
        ws.close()
    assert_fresh_client_works(server)
    # And through a Socket.IO client, an oversized emit costs that client its connection only.
    with sio_client(server.url, transports=["websocket"]) as big, contextlib.suppress(Exception):
        big.call("echo", "z" * (MAX_MESSAGE_BYTES * 2), timeout=2)
    assert_fresh_client_works(server)


def test_garbage_polling_posts(server: Proc) -> None:
    def post(query: str, body: bytes) -> int:
        req = urllib.request.Request(
            f"{server.url}/socket.io/?EIO=4&transport=polling{query}", data=body, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post("", b"garbage") >= 400  # no sid
    assert post("&sid=doesnotexist", b"garbage") >= 400
    # A real polling session, then garbage and an oversized body on it.
    with urllib.request.urlopen(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=5) as resp:
        sid = json.loads(resp.read().decode()[1:])["sid"]
    post(f"&sid={sid}", b'\x00\x01garbage\x1e42["x"')
    # Oversized, with no long-polling GET outstanding: python-engineio alone would block this request
    # forever (see app/upstream/guard.py); the guard answers 413 at once.
    started = time.monotonic()
    assert post(f"&sid={sid}", b"4" + b"x" * (MAX_MESSAGE_BYTES * 2)) == 413
    assert time.monotonic() - started < 3
    assert_fresh_client_works(server)


def test_admin_refuses_bad_token_over_uwsgi(server: Proc) -> None:
    client = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(
            server.url,
            namespaces=["/admin"],
            transports=["websocket"],
            auth={"token": "nope"},
            wait_timeout=5,
        )
    client.disconnect()
    assert_fresh_client_works(server)


# --- two instances + Redis: cross-instance delivery -------------------------------------------------


def test_admin_broadcast_on_a_reaches_client_on_b(tmp_path: Path) -> None:
    with run_redis(tmp_path) as redis:
        env = {**BASE_ENV, "SIOKIT_MESSAGE_QUEUE": redis.url}
        with run_uwsgi(tmp_path, "a", env=env) as a, run_uwsgi(tmp_path, "b", env=env) as b:
            assert get_json(a.url + "/healthz")["message_queue"] is True
            # Both instances listen before any Socket.IO client connects (python-socketio alone
            # would subscribe only at the first connection; see app.factory.start_message_queue).
            assert wait_until(lambda: redis_numsub(redis.port, "flask-socketio") == 2, timeout=5)
            received: list[dict[str, Any]] = []
            chats: list[dict[str, Any]] = []
            with (
                sio_client(b.url, transports=["websocket"]) as on_b,
                sio_client(
                    a.url, namespaces=["/", "/admin"], transports=["websocket"], auth={"token": ADMIN_SECRET}
                ) as admin_on_a,
            ):
                on_b.on("broadcast", received.append)
                on_b.on("chat", chats.append)
                ack = admin_on_a.call("broadcast", {"seq": 0, "text": "to all"}, namespace="/admin", timeout=5)
                assert ack["ok"] is True
                assert wait_until(lambda: bool(received), timeout=5), "broadcast on A never reached B"
                [msg] = received
                assert msg == {"seq": 0, "text": "to all", "sent_at": ack["sent_at"]}
                assert msg["sent_at"] <= time.time() and time.time() - msg["sent_at"] < 5
                # A plain chat from a client of A reaches B too.
                assert admin_on_a.call("chat", {"text": "cross"}, timeout=5)["ok"] is True
                assert wait_until(lambda: any(c["text"] == "cross" for c in chats), timeout=5)
                # close_room from /admin on A empties the room on B as well.
                assert on_b.call("join", {"room": "lobby"}, timeout=5)["ok"] is True
                ack = admin_on_a.call("close_room", {"room": "lobby"}, namespace="/admin", timeout=5)
                assert ack["ok"] is True
                assert wait_until(lambda: on_b.call("rooms", timeout=5)["rooms"] == [], timeout=5)


# --- idle CPU: event-driven vs stock driver (opt-in, prints, asserts nothing about timing) --------


async def _idle_clients(url: str, count: int, ready: threading.Event, stop: threading.Event) -> int:
    """`count` raw Engine.IO/Socket.IO websocket clients that only answer pings (cheap: one asyncio loop)."""
    import websockets

    connected = failed = 0
    sem = asyncio.Semaphore(50)  # bounded connect concurrency, or handshakes fail (design.md)

    async def one() -> None:
        nonlocal connected, failed
        async with sem:
            try:
                ws = await websockets.connect(url, open_timeout=30, ping_interval=None, max_size=None)
                await ws.recv()  # Engine.IO open
                await ws.send("40")
                await ws.recv()  # Socket.IO connect ack
            except Exception:
                failed += 1
                raise
        connected += 1
        try:
            # Event-driven like the server under test: no client-side timers per socket.
            async for msg in ws:
                if msg == "2":
                    await ws.send("3")
        finally:
            await ws.close()

    tasks = [asyncio.ensure_future(one()) for _ in range(count)]
    while connected + failed < count:
        await asyncio.sleep(0.1)
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return connected


@pytest.mark.skipif(not os.environ.get("SIOKIT_MEASURE_IDLE_CPU"), reason="set SIOKIT_MEASURE_IDLE_CPU=1")
@pytest.mark.parametrize("driver", ["event", "stock"])
def test_idle_cpu(tmp_path: Path, driver: str) -> None:
    sockets = int(os.environ.get("SIOKIT_MEASURE_SOCKETS", "1000"))
    seconds = float(os.environ.get("SIOKIT_MEASURE_SECONDS", "30"))
    env = {**BASE_ENV, "SIOKIT_WEBSOCKET_DRIVER": driver}
    extra = ["--disable-logging", "--listen", "1024"]
    with run_uwsgi(tmp_path, driver, env=env, gevent_cores=sockets + 100, extra=extra) as proc:
        ready, stop = threading.Event(), threading.Event()
        result: list[int] = []
        runner = threading.Thread(
            target=lambda: result.append(asyncio.run(_idle_clients(ws_url(proc), sockets, ready, stop))),
            daemon=True,
        )
        runner.start()
        assert ready.wait(120), "clients did not connect"
        time.sleep(3)  # let the connect burst settle
        connected = get_json(proc.url + "/healthz")["connected"]
        cpu0, t0 = process_tree_cpu_seconds(proc.popen.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = process_tree_cpu_seconds(proc.popen.pid), time.monotonic()
        stop.set()
        runner.join(30)
        share = (cpu1 - cpu0) / (t1 - t0)
        print(
            f"\nIDLE-CPU driver={driver} sockets={connected} window={t1 - t0:.1f}s "
            f"uwsgi_cpu={cpu1 - cpu0:.2f}s = {100 * share:.1f}% of one core"
        )
        assert connected >= sockets * 0.95
