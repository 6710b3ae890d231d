"""The fan-out path on real sockets (socketpairs) and the gevent hub, without uWSGI.

Frames go through python-socketio's real Manager.emit, the patched engineio Socket.send
(app/upstream/eio_socket.py), the frame cache (ws_frame.py) and FrameWriter, into small kernel
buffers so partial writes and backlogs happen; pings come from ping_timer._fire.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from collections.abc import Iterator
from typing import Any, ClassVar

import gevent
import pytest
import socketio
from engineio import packet as eio_packet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.upstream import eio_socket, ping_timer
from app.upstream.frame_writer import STATS, FrameWriter
from app.upstream.ws_frame import BINARY, TEXT, frame_for, server_frame

BUF = 4096  # small kernel buffers: the kernel takes little, the backlog does the rest


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """RFC 6455 server frames (unmasked) from a byte stream; returns (frames, unparsed rest)."""
    out = []
    i = 0
    while len(data) - i >= 2:
        op, n = data[i], data[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            if len(data) - j < 2:
                break
            (n,) = struct.unpack("!H", data[j : j + 2])
            j += 2
        elif n == 127:
            if len(data) - j < 8:
                break
            (n,) = struct.unpack("!Q", data[j : j + 8])
            j += 8
        if len(data) - j < n:
            break
        out.append((op, data[j : j + n]))
        i = j + n
    return out, data[i:]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_server_frame_lengths_round_trip(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frames, rest = parse_frames(server_frame(payload, BINARY))
    assert frames == [(BINARY, payload)] and rest == b""


def test_frame_is_built_once_per_packet() -> None:
    pkt = eio_packet.Packet(eio_packet.MESSAGE, data='2["chat",{"a":1}]')
    first = frame_for(pkt)
    assert frame_for(pkt) is first
    assert parse_frames(first)[0] == [(TEXT, b'42["chat",{"a":1}]')]


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUF)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUF)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class Calls:
    def __init__(self) -> None:
        self.overflow = 0
        self.drained = 0
        self.broken = 0


def _writer(fd: int, bound: int) -> tuple[FrameWriter, Calls]:
    calls = Calls()

    def overflow() -> None:
        calls.overflow += 1

    def drained() -> None:
        calls.drained += 1

    def broken() -> None:
        calls.broken += 1

    w = FrameWriter(fd, gevent.get_hub().loop, bound, overflow, drained, broken)
    return w, calls


def test_backlog_drains_in_order_from_the_hub() -> None:
    server, client = _pair()
    w, calls = _writer(server.fileno(), 10_000_000)
    frames = [server_frame(f"{i:06d}".encode() * 500) for i in range(50)]  # 3 KB each
    for f in frames:
        w.write(f)
    assert w.pending > 0  # the kernel took only part of it
    got = b""
    for _ in range(2000):
        got += _read_all(client)
        gevent.sleep(0.001)  # the write watcher runs in the hub
        if not w.pending and len(got) == sum(map(len, frames)):
            break
    got += _read_all(client)
    assert got == b"".join(frames)
    assert calls.drained >= 1 and calls.overflow == 0
    assert w._backlog is None  # released once drained: most sockets hold no deque (memory per socket)
    w.close()
    server.close()
    client.close()


def test_past_the_bound_the_socket_is_dropped_and_counted() -> None:
    server, client = _pair()
    w, calls = _writer(server.fileno(), 20_000)
    before = STATS.slow_consumer_closes
    backlogged = STATS.backlogged_sockets
    for _ in range(100):
        w.write(server_frame(b"x" * 1000))
    assert calls.overflow == 1
    assert w.closed and w.overflowed and w.pending == 0
    assert STATS.slow_consumer_closes == before + 1
    assert STATS.backlogged_sockets == backlogged  # its backlog no longer counts
    w.write(server_frame(b"late"))  # ignored, no second close
    assert calls.overflow == 1
    server.close()
    client.close()


def test_a_broken_peer_calls_on_broken() -> None:
    server, client = _pair()
    w, calls = _writer(server.fileno(), 1_000_000)
    client.close()
    w.write(server_frame(b"a"))
    assert calls.broken == 1 and w.closed and w.broken
    server.close()


# --- order per socket through Manager.emit, the patched Socket.send and the ping timer ---------


class FakeWS:
    """What EventDrivenUWSGIWebSocket exposes to eio_socket: send_frame() to a FrameWriter."""

    supports_frames = True

    def __init__(self, fd: int) -> None:
        self.writer, self.calls = _writer(fd, 50_000_000)

    def send_frame(self, frame: bytes) -> None:
        self.writer.write(frame)

    def close(self) -> None:
        self.writer.close()


class FakeEioSocket:
    """The parts of engineio.socket.Socket that the patched send() and the ping timer touch."""

    send = eio_socket.send
    schedule_ping = ping_timer.schedule_ping

    def __init__(self, sid: str, server: Any, ws: FakeWS) -> None:
        self.sid = sid
        self.server = server
        self._siokit_ws = ws
        self.closed = self.closing = False
        self.last_ping: float | None = None
        self.queue: list[Any] = []

    def check_ping_timeout(self) -> bool:
        return True


class FakeEioServer:
    ping_interval = 3600
    logger = logging.getLogger("fake-eio")

    def __init__(self) -> None:
        self.sockets: dict[str, FakeEioSocket] = {}
        self._ids = 0

    def generate_id(self) -> str:
        self._ids += 1
        return f"s{self._ids}"


class FakeSioServer:
    """What socketio.Manager needs from its server."""

    packet_class = socketio.packet.Packet

    def __init__(self, eio: FakeEioServer) -> None:
        self.eio = eio

    def _send_eio_packet(self, eio_sid: str, pkt: Any) -> None:
        self.eio.sockets[eio_sid].send(pkt)


class Cluster:
    def __init__(self, n: int, manager: Any = None, server_cls: type[FakeSioServer] = FakeSioServer) -> None:
        self.eio = FakeEioServer()
        self.manager = socketio.Manager() if manager is None else manager
        self.manager.set_server(server_cls(self.eio))
        self.manager.initialize()
        self.clients: list[socket.socket] = []
        self.servers: list[socket.socket] = []
        self.expected: list[list[bytes]] = []
        self.received: list[bytes] = []
        for i in range(n):
            srv, cli = _pair()
            self.servers.append(srv)
            self.clients.append(cli)
            eio_sid = f"e{i}"
            self.eio.sockets[eio_sid] = FakeEioSocket(eio_sid, self.eio, FakeWS(srv.fileno()))
            self.manager.connect(eio_sid, "/")
            self.expected.append([])
            self.received.append(b"")

    def sid(self, i: int) -> str:
        return self.manager.sid_from_eio_sid(f"e{i}", "/")

    def read(self, i: int) -> None:
        self.received[i] += _read_all(self.clients[i])

    def close(self) -> None:
        for sock in self.eio.sockets.values():
            sock._siokit_ws.close()
        for s in self.servers + self.clients:
            s.close()


def _event_frame(event: str, data: Any) -> bytes:
    return ("42" + json.dumps([event, data], separators=(",", ":"))).encode()


OPS = (
    st.tuples(st.just("room"), st.integers(0, 2), st.integers(0, 3000)),
    st.tuples(st.just("all"), st.integers(0, 5), st.integers(0, 3000)),
    st.tuples(st.just("direct"), st.integers(0, 5), st.integers(0, 3000)),
    st.tuples(st.just("ping"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("read"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("hub"), st.just(0), st.just(0)),
)
ops = st.lists(st.one_of(*OPS), max_size=60)


def run_ops(c: Cluster, n: int, ops: list[tuple[str, int, int]]) -> None:
    """Apply ops to the cluster's n clients (in rooms by i % 3), noting what each must receive, in order."""
    rooms = {r: [i for i in range(n) if i % 3 == r] for r in range(3)}
    closed: set[int] = set()
    for i in range(n):
        c.manager.enter_room(c.sid(i), "/", f"room{i % 3}")
    for seq, (kind, arg, size) in enumerate(ops):
        text = f"{seq}:" + "y" * size
        if kind == "room":
            c.manager.emit("m", text, "/", room=f"room{arg}")
            for i in rooms[arg]:
                if i not in closed:
                    c.expected[i].append(_event_frame("m", text))
        elif kind == "all":
            c.manager.emit("m", text, "/", skip_sid=c.sid(arg) if arg not in closed else None)
            for i in range(n):
                if i != arg and i not in closed:
                    c.expected[i].append(_event_frame("m", text))
        elif kind == "direct" and arg not in closed:
            c.manager.emit("m", text, "/", room=c.sid(arg))
            c.expected[arg].append(_event_frame("m", text))
        elif kind == "ping" and arg not in closed:
            sock = c.eio.sockets[f"e{arg}"]
            sock.last_ping = 1.0
            sock.schedule_ping()  # puts it in a tick's bucket...
            ping_timer._fire(sock)  # ...whose timer fires it now, as the hub would
            c.expected[arg].append(b"2")
        elif kind == "close" and arg not in closed:
            # The kit's Socket.close(): closing, the disconnect (it leaves its rooms), the CLOSE
            # packet, closed.
            closed.add(arg)
            sock = c.eio.sockets[f"e{arg}"]
            sock.closing = True
            c.manager.disconnect(c.sid(arg), "/")
            sock.send(eio_packet.Packet(eio_packet.CLOSE))
            sock.closed = True
            c.expected[arg].append(b"1")
        elif kind == "read":
            c.read(arg)
        elif kind == "hub":
            gevent.sleep(0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops)
def test_every_client_sees_its_frames_in_the_order_sent(ops: list[tuple[str, int, int]]) -> None:
    n = 6
    c = Cluster(n)
    try:
        run_ops(c, n, ops)
        for _ in range(5000):
            for i in range(n):
                c.read(i)
            if not any(s._siokit_ws.writer.pending for s in c.eio.sockets.values()):
                break
            gevent.sleep(0.001)
        for i in range(n):
            c.read(i)
            frames, rest = parse_frames(c.received[i])
            assert rest == b""
            assert [payload for _, payload in frames] == c.expected[i], f"client {i}"
            assert not c.eio.sockets[f"e{i}"]._siokit_ws.calls.overflow
    finally:
        c.close()


@pytest.fixture
def patched_socket() -> Iterator[None]:
    from engineio import socket as eio_sock

    saved = {k: eio_sock.Socket.__dict__[k] for k in ("send", "close", "_websocket_handler", "_upgrade_websocket")}
    eio_socket.install()
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(eio_sock.Socket, k, v)


def test_install_keeps_upstream_for_polling_sockets(patched_socket: None) -> None:
    import engineio

    eio = engineio.Server(async_mode="threading")
    sock = engineio.socket.Socket(eio, "sid1")
    sock.send(eio_packet.Packet(eio_packet.MESSAGE, data="hi"))
    assert sock.queue.qsize() == 1  # no websocket attached: upstream's queue
    sock.close(wait=False)
    assert sock.closed


class _Sock:
    def __init__(self, sid: str, closed: bool = False, closing: bool = False) -> None:
        self.sid, self.closed, self.closing, self.checked = sid, closed, closing, 0

    def check_ping_timeout(self) -> bool:
        self.checked += 1
        return True


class _Event:
    def __init__(self, stop_after: int | None = None) -> None:
        self.waits: list[float] = []
        self.stop_after = stop_after

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return self.stop_after is not None and len(self.waits) >= self.stop_after


class _Server:
    ping_timeout = 4

    def __init__(self, socks: list[_Sock], event: _Event) -> None:
        self.sockets = {s.sid: s for s in socks}
        self.service_task_event = event


def test_service_task_checks_every_socket_in_one_wait_per_second() -> None:
    from app.upstream import service_task

    socks = [_Sock(f"s{i}") for i in range(10)] + [_Sock("gone", closed=True), _Sock("bye", closing=True)]
    server = _Server(socks, _Event())
    assert service_task._one_cycle(server) is True
    assert server.service_task_event.waits == [1.0, 1.0, 1.0, 1.0]  # ping_timeout batches, not 12 waits
    assert all(s.checked == 1 for s in socks[:10])
    assert "gone" not in server.sockets and socks[11].checked == 0


def test_service_task_stops_when_canceled() -> None:
    from app.upstream import service_task

    server = _Server([_Sock(f"s{i}") for i in range(10)], _Event(stop_after=1))
    assert service_task._one_cycle(server) is False


class _CountingWS:
    """A frame-capable websocket whose client sends `incoming`, then closes; records the handler's count."""

    supports_frames = True

    def __init__(self, incoming: list[str]) -> None:
        self.incoming = list(incoming)
        self.seen: list[int] = []
        self.frames: list[bytes] = []

    def wait(self) -> str | None:
        self.seen.append(eio_socket.websockets())
        return self.incoming.pop(0) if self.incoming else None

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        pass


def test_the_handler_counts_the_websockets_it_holds(patched_socket: None) -> None:
    import engineio

    eio = engineio.Server(async_mode="threading")
    before = eio_socket.websockets()
    ws = _CountingWS(["6"])  # a NOOP, then the client closes
    sock = engineio.socket.Socket(eio, "sid1")
    sock._websocket_handler(ws)
    assert ws.seen == [before + 1, before + 1]  # held while it reads
    assert eio_socket.websockets() == before  # and released when it ends
    assert sock.closed

    # a failed upgrade from polling is never counted
    polling = engineio.socket.Socket(eio, "sid2")
    polling.connected = True
    failed = _CountingWS(["5"])  # UPGRADE where the PING probe belongs
    polling._websocket_handler(failed)
    assert eio_socket.websockets() == before and failed.seen == [before]


def test_after_the_upgrade_the_socket_drops_its_queue(patched_socket: None) -> None:
    import engineio
    from engineio import exceptions

    eio = engineio.Server(async_mode="threading")
    socks = [engineio.socket.Socket(eio, f"q{i}") for i in range(2)]
    for sock in socks:
        before = sock.queue
        sock.queue.put(eio_packet.Packet(eio_packet.MESSAGE, data="queued before the upgrade"))
        ws = _CountingWS([])
        sock._websocket_handler(ws)
        assert ws.frames == [b"\x81\x1a4queued before the upgrade"]  # sent first, in order
        assert sock.queue is not before
    assert socks[0].queue is socks[1].queue  # one shared, empty stand-in per server
    socks[0].queue.put("dropped")
    with pytest.raises(exceptions.QueueEmpty):
        socks[0].poll()  # a late long-polling GET: empty at once
    socks[0].queue.join()


class _Upgradable:
    """A websocket class as engineio's async drivers provide one."""

    made: ClassVar[list[_Upgradable]] = []

    def __init__(self, handler: Any, server: Any) -> None:
        self.handler = handler
        self.calls: list[tuple[Any, Any]] = []
        _Upgradable.made.append(self)

    def __call__(self, environ: Any, start_response: Any) -> str:
        self.calls.append((environ, start_response))
        return "served"


def test_upgrade_calls_the_websocket_as_upstream_does(patched_socket: None) -> None:
    import engineio

    eio = engineio.Server(async_mode="threading")
    eio._async = {**eio._async, "websocket": _Upgradable}
    sock = engineio.socket.Socket(eio, "sid1")
    environ = {"PATH_INFO": "/engine.io/"}
    assert sock._upgrade_websocket(environ, "sr") == "served"
    ws = _Upgradable.made[-1]
    assert ws.calls == [(environ, "sr")]
    assert ws.handler == sock._websocket_handler
    sock.upgraded = True
    with pytest.raises(OSError, match="upgraded already"):
        sock._upgrade_websocket(environ, "sr")
    sock.upgraded = False
    eio._async = {**eio._async, "websocket": None}
    assert sock._upgrade_websocket(environ, "sr")["status"].startswith("400")


class _HubWS:
    """What the read watcher passes to eio_socket.receive_in_hub: the websocket, whose app is the handler."""

    def __init__(self, handler: Any) -> None:
        self.app = handler


def test_a_pong_in_the_hub_schedules_the_next_ping_only_on_the_kits_upgraded_socket(
    patched_socket: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engineio
    from engineio import socket as eio_sock

    from app.upstream import ping_timer

    eio = engineio.Server(async_mode="threading")
    sock = engineio.socket.Socket(eio, "sid1")
    ws = _HubWS(sock._websocket_handler)
    assert not eio_socket.receive_in_hub(ws, "3")  # not upgraded by the kit's handler yet
    sock._siokit_ws = ws
    monkeypatch.setattr(eio_sock.Socket, "schedule_ping", ping_timer.schedule_ping)
    counted: list[Any] = []
    eio_socket.count_packets_in(counted.append)
    try:
        assert not eio_socket.receive_in_hub(ws, '42["chat"]')  # only pongs stay in the hub
        sock.last_ping = 1.0  # the ping this pong answers
        assert eio_socket.receive_in_hub(ws, "3")
        assert counted == ["3"]
        assert sock.last_ping is None and getattr(sock, "_siokit_ping_due", None) is not None
        sock._siokit_ping_due = None  # its bucket will pass it over
        # Upstream's schedule_ping spawns a greenlet that sleeps: never from the hub.
        monkeypatch.setattr(eio_sock.Socket, "schedule_ping", lambda self: None)
        assert not eio_socket.receive_in_hub(ws, "3")
    finally:
        eio_socket.count_packets_in(None)
