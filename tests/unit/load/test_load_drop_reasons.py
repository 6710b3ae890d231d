"""Every drop is counted with the reason the client observed (issue #9, run C's 680 unexplained drops).

A scripted Engine.IO server on loopback ends each connection one way (a websocket close frame with
or without a code, a TCP FIN with no close frame, a TCP RST, an Engine.IO close packet, a
Socket.IO disconnect, a masked frame, silence) and the real client (VirtualClient over WSProtocol)
must count that drop under the matching reason, on asyncio's loop and on uvloop (the workers' loop).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from siokit.load import transport
from siokit.load.client import (
    DEAD_PEER,
    EIO_CLOSE_PACKET,
    SIO_DISCONNECT_PACKET,
    UNKNOWN,
    ClientConfig,
    VirtualClient,
)
from siokit.load.stats import WorkerStats, merge_all
from siokit.load.transport import ConnClosed, close_reason, lost_reason

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OPEN = '0{"sid":"s1","upgrades":[],"pingInterval":%d,"pingTimeout":%d,"maxPayload":1000000}'

try:
    import uvloop

    LOOPS: list[Any] = [None, uvloop.new_event_loop]
except ImportError:  # pragma: no cover - uvloop is pinned
    LOOPS = [None]


def frame(data: bytes, opcode: int = 0x1, masked: bool = False) -> bytes:
    assert len(data) < 126
    if masked:
        return bytes((0x80 | opcode, 0x80 | len(data))) + b"\0\0\0\0" + data
    return bytes((0x80 | opcode, len(data))) + data


Ending = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def _close_frame(writer: asyncio.StreamWriter, code: int | None) -> None:
    writer.write(frame(b"" if code is None else struct.pack("!H", code) + b"bye", 0x8))
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()


async def _fin(writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends RST
    writer.transport.abort()


def _send(text: str, then_close: bool = True) -> Ending:
    async def end(writer: asyncio.StreamWriter) -> None:
        writer.write(frame(text.encode()))
        await writer.drain()
        await asyncio.sleep(0.3)  # the client reacts to the packet first; FIN afterwards
        if then_close:
            writer.close()

    return end


async def _masked(writer: asyncio.StreamWriter) -> None:
    writer.write(frame(b"2", masked=True))  # servers never mask: the client must abort
    await writer.drain()
    await asyncio.sleep(0.3)


async def _silence(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(1.5)  # no ping: the client's own ping timeout (0.2 + 0.2 s) fires first


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, end: Ending) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    key = next(
        ln.split(b":", 1)[1].strip() for ln in head.split(b"\r\n") if ln.lower().startswith(b"sec-websocket-key")
    )
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + frame((OPEN % (200, 200)).encode()))  # fmt: skip
    await reader.readexactly(2 + 4 + 2)  # the client's masked "40"
    writer.write(frame(b'40{"sid":"n1"}'))
    await writer.drain()
    await asyncio.sleep(0.1)
    with contextlib.suppress(ConnectionError, OSError):
        await end(writer)


async def one_drop(end: Ending, before: Callable[[WorkerStats], None] | None = None) -> WorkerStats:
    srv = await asyncio.start_server(lambda r, w: serve(r, w, end), "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    stats = WorkerStats()
    if before is not None:
        before(stats)
    c = VirtualClient(ClientConfig(url=f"http://127.0.0.1:{port}", reconnect=False), stats)
    first: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(c.run(first))
    assert await first
    deadline = time.monotonic() + 3
    while not task.done() and time.monotonic() < deadline:  # the worker's sweeper, faster
        await asyncio.sleep(0.05)
        c.check_alive(time.monotonic())
    await asyncio.wait_for(task, 5)
    srv.close()
    return stats


def run(loop_factory: Any, coro: Awaitable[WorkerStats]) -> WorkerStats:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


def _broken_stats(stats: WorkerStats) -> None:
    def boom(seq: int | None, latency: float) -> None:
        raise RuntimeError("a bug while handling a broadcast")

    stats.on_broadcast = boom  # type: ignore[method-assign]


CASES: list[tuple[str, Ending, str, Any]] = [
    ("close frame 1001", lambda w: _close_frame(w, 1001), "ws_close_1001", None),
    ("close frame, no code", lambda w: _close_frame(w, None), "ws_close_no_code", None),
    ("FIN without close frame", _fin, transport.EOF_NO_CLOSE, None),
    ("RST", _rst, transport.RESET, None),
    ("Engine.IO close packet", _send("1"), EIO_CLOSE_PACKET, None),
    ("Socket.IO disconnect", _send("41"), SIO_DISCONNECT_PACKET, None),
    ("masked frame", _masked, transport.BAD_FRAME, None),
    ("no ping", _silence, DEAD_PEER, None),
    ("client bug", _send('42["broadcast",{"seq":1,"sent_at":1.0}]', then_close=False),
     "client_error_RuntimeError", _broken_stats),
]  # fmt: skip


@pytest.mark.parametrize("loop_factory", LOOPS, ids=lambda f: "uvloop" if f else "asyncio")
@pytest.mark.parametrize(("name", "end", "reason", "before"), CASES, ids=[c[0] for c in CASES])
def test_each_way_a_server_ends_is_counted_with_its_reason(
    loop_factory: Any, name: str, end: Ending, reason: str, before: Any
) -> None:
    st = run(loop_factory, one_drop(end, before))
    assert st.drops == 1, name
    assert dict(st.drop_reasons) == {reason: 1}, name
    assert st.connected == 0
    assert (st.dead_peers == 1) == (reason == DEAD_PEER)


def test_lost_reason_maps_what_the_socket_reported() -> None:
    assert lost_reason(None) == transport.EOF_NO_CLOSE
    assert lost_reason(ConnectionResetError(errno.ECONNRESET, "reset")) == transport.RESET
    assert lost_reason(BrokenPipeError(errno.EPIPE, "pipe")) == "tcp_broken_pipe"
    assert lost_reason(TimeoutError(errno.ETIMEDOUT, "timed out")) == "tcp_timeout"
    assert lost_reason(OSError(errno.EHOSTUNREACH, "unreachable")) == "os_EHOSTUNREACH"
    assert lost_reason(asyncio.IncompleteReadError(b"", 10)) == transport.EOF_NO_CLOSE
    # polling wraps the socket's error: the cause is the reason
    try:
        try:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        except ConnectionResetError as exc:
            raise ConnClosed("reset") from exc
    except ConnClosed as wrapped:
        assert lost_reason(wrapped) == transport.RESET
    assert lost_reason(ConnClosed("closed")) == transport.EOF_NO_CLOSE
    assert lost_reason(ValueError("x")) == "error_ValueError"


def test_close_reason_reads_the_status_code() -> None:
    assert close_reason(struct.pack("!H", 1000)) == "ws_close_1000"
    assert close_reason(struct.pack("!H", 1011) + b"internal error") == "ws_close_1011"
    assert close_reason(b"") == "ws_close_no_code"


def test_drop_reasons_and_loop_lag_survive_the_pipe_and_merge() -> None:
    a, b = WorkerStats(), WorkerStats()
    a.on_drop(transport.RESET)
    a.on_drop(EIO_CLOSE_PACKET)
    b.on_drop(transport.RESET)
    b.reconnect_failures["refused"] += 2
    a.on_loop_lag(0.002, 1000.5)
    a.on_loop_lag(0.4, 1001.2)
    b.on_loop_lag(1.5, 1002.0)
    total = merge_all([a.to_dict(), b.to_dict()])
    assert total.drops == 3
    assert total.drop_reasons == {transport.RESET: 2, EIO_CLOSE_PACKET: 1}
    assert total.reconnect_failures == {"refused": 2}
    assert total.loop_lag_max_s == 1.5 and total.loop_lag.count == 3
    # 2 ms is no stall; of the two that began in second 1000, the longer is kept, with its start
    assert total.loop_stalls == {1000: (1.5, 1000.5)}
    assert UNKNOWN not in total.drop_reasons


def test_the_report_puts_reasons_beside_drops_and_each_broadcasts_stalls_and_drops() -> None:
    from siokit.load.options import build_parser, make_plan
    from siokit.load.runner import build_report

    plan = make_plan(
        build_parser().parse_args(["--url", "http://127.0.0.1:1", "--connections", "4"]), nofile=(1024, 20000)
    )
    w0, w1 = WorkerStats(), WorkerStats()
    w0.broadcast_sent_at = {1: 1010.0, 2: 1020.0}
    w0.on_loop_lag(0.3, 1012.4)  # broadcast 1's window: [1010, 1020)
    w1.on_loop_lag(2.5, 1023.0)  # broadcast 2's window: [1020, end)
    w1.on_loop_lag(0.05, 1011.0)  # under the stall threshold: not a stall
    w1.on_loop_lag(1.0, 1020.5)  # began at 1019.5, in broadcast 1's window, ended in 2's
    w1.on_drop(transport.RESET)
    w1.on_drop(transport.EOF_NO_CLOSE)
    total = merge_all([w0.to_dict(), w1.to_dict()])
    # wall start 1000: broadcast 2 was sent at t=20; the two drops came at t=24
    timeline = [{"t": float(t), "drops": 0 if t < 24 else 2, "phase": "hold"} for t in range(1, 30)]
    r = build_report(plan, total, timeline, {}, False, 1000.0, 1.0, 28.0, 4, 0, None, {0: w0, 1: w1})
    assert r["connections"]["drops"] == 2
    assert r["connections"]["drop_reasons"] == {transport.RESET: 1, transport.EOF_NO_CLOSE: 1}
    lag = r["loop_lag"]
    assert lag["max_ms"] == 2500.0 and lag["per_worker_max_ms"] == {"0": 300.0, "1": 2500.0}
    b1, b2 = lag["per_broadcast"]
    assert (b1["seq"], b1["max_stall_ms"], b1["worker"], b1["drops"]) == (1, 1000.0, 1, 0)
    assert b1["stall_ms_by_worker"] == {"0": 300.0, "1": 1000.0}
    assert (b2["seq"], b2["max_stall_ms"], b2["worker"], b2["drops"]) == (2, 2500.0, 1, 2)
    assert b2["stall_ms_by_worker"] == {"1": 2500.0}
