"""Dead-peer detection and ping counting over the real WebSocket transport (WSProtocol), against a
scripted Engine.IO server on loopback that pings, or stops pinging, as told."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siokit.load.client import ClientConfig, VirtualClient, broadcast_fields
from siokit.load.stats import WorkerStats
from siokit.load.transport import WSProtocol, encode_frame

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def server_frame(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 126
    return bytes((0x81, len(data))) + data


class ScriptedServer:
    """Engine.IO over WebSocket: open packet, namespace connect, then ``pings`` pings every
    ``every`` s, then silence (the connection stays open: only the client can notice)."""

    def __init__(self, interval_ms: int, timeout_ms: int, pings: int, every: float) -> None:
        self.open = (
            f'0{{"sid":"s1","upgrades":[],"pingInterval":{interval_ms},"pingTimeout":{timeout_ms},'
            '"maxPayload":1000000}'
        )
        self.pings, self.every = pings, every
        self.pongs = 0
        self.eof = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        key = next(ln.split(b":", 1)[1].strip() for ln in lines if ln.lower().startswith(b"sec-websocket-key"))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + server_frame(self.open))  # fmt: skip
        await reader.readexactly(2 + 4 + 2)  # the client's masked "40"
        writer.write(server_frame('40{"sid":"n1"}'))
        reading = asyncio.ensure_future(self._count_pongs(reader))
        for _ in range(self.pings):
            await asyncio.sleep(self.every)
            writer.write(server_frame("2"))
        await reading
        self.eof.set()
        writer.close()

    async def _count_pongs(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                head = await reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return
            n = head[1] & 0x7F
            body = await reader.readexactly(4 + n)
            payload = bytes(b ^ body[i % 4] for i, b in enumerate(body[4:]))
            if head[0] & 0x0F == 0x1 and payload == b"3":
                self.pongs += 1


async def run_client(server: ScriptedServer, watch: float) -> tuple[VirtualClient, WorkerStats]:
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    stats = WorkerStats()
    c = VirtualClient(ClientConfig(url=f"http://127.0.0.1:{port}", reconnect=False), stats)
    first: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(c.run(first))
    assert await first
    deadline = time.monotonic() + watch
    while time.monotonic() < deadline:  # what the worker's sweeper does, faster
        await asyncio.sleep(0.05)
        c.check_alive(time.monotonic())
    await c.close()
    await asyncio.wait_for(task, 5)
    srv.close()
    return c, stats


def test_a_server_that_stops_pinging_is_dropped_after_interval_plus_timeout() -> None:
    server = ScriptedServer(interval_ms=200, timeout_ms=200, pings=2, every=0.2)

    async def main() -> tuple[VirtualClient, WorkerStats]:
        out = await run_client(server, watch=1.5)
        await asyncio.wait_for(server.eof.wait(), 5)  # the client closed its side
        return out

    c, st = asyncio.run(main())
    assert c.pings == 2 and server.pongs == 2  # both pings heard and answered
    assert st.dead_peers == 1  # silence for more than 0.4 s after the last ping
    assert st.drops == 1 and st.connected == 0
    assert st.ping_interval_s == 0.2 and st.ping_timeout_s == 0.2


def test_a_server_that_keeps_pinging_is_held_and_its_pings_counted() -> None:
    server = ScriptedServer(interval_ms=200, timeout_ms=200, pings=100, every=0.1)
    c, st = asyncio.run(run_client(server, watch=1.0))
    assert st.dead_peers == 0 and st.drops == 0
    assert c.pings >= 5 and server.pongs >= 5


def test_frames_split_anywhere_are_reassembled() -> None:
    got: list[str] = []
    p = WSProtocol(b"", b"")
    p.handler = got.append
    long_text = "4" + "x" * 300  # a 16-bit length
    stream = server_frame("2") + bytes((0x81, 126)) + len(long_text).to_bytes(2, "big") + long_text.encode()
    stream += bytes((0x01, 2)) + b"42" + bytes((0x80, 3)) + b"[1]"  # a fragmented message
    for i in range(len(stream)):  # one byte at a time
        p.data_received(stream[i : i + 1])
    assert got == ["2", long_text, "42[1]"]


_TEXTS = st.text(alphabet="42[]x\u00e9", max_size=200)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(_TEXTS, min_size=1, max_size=8), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_reads_cut_anywhere_deliver_what_one_byte_at_a_time_does(texts: list[str], cuts: list[int]) -> None:
    # The one-whole-frame fast path must agree with the general parser for any split of the stream.
    stream = b""
    for t in texts:
        data = t.encode()
        head = bytes((0x81, len(data))) if len(data) < 126 else bytes((0x81, 126)) + len(data).to_bytes(2, "big")
        stream += head + data
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    got: list[str] = []
    p = WSProtocol(b"", b"")
    p.handler = got.append
    for a, b in itertools.pairwise(bounds):
        p.data_received(stream[a:b])
    assert got == texts


def test_a_broadcast_is_parsed_once_per_text_not_per_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from siokit.load import client

    calls: list[str] = []
    real = client.broadcast_fields
    monkeypatch.setattr(client, "broadcast_fields", lambda t: calls.append(t) or real(t))
    st_ = WorkerStats()
    clients = [VirtualClient(ClientConfig(url="http://x"), st_) for _ in range(3)]
    for seq in (1, 2):
        text = f'42["broadcast",{{"seq":{seq},"sent_at":{time.time() - 0.5}}}]'
        for c in clients:
            assert c.on_text(text)
    assert len(calls) == 2
    assert st_.broadcast_received == {1: 3, 2: 3}
    assert st_.fanout_by_seq[2].count == 3 and 0.4 < st_.fanout_by_seq[2].min < 5


def test_client_frames_are_masked() -> None:
    frame = encode_frame(b"hello")
    assert frame[0] == 0x81 and frame[1] == 0x80 | 5
    key, body = frame[2:6], frame[6:]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(body)) == b"hello"


def test_broadcast_fields_without_decoding() -> None:
    assert broadcast_fields('42["broadcast",{"seq":7,"text":"a, b","sent_at":1700000000.25}]') == (7, 1700000000.25)
    assert broadcast_fields('42/n,["broadcast",{"sent_at":12.5}]') == (None, 12.5)
    assert broadcast_fields('42["broadcast",{"seq":1,"sent_at":"soon"}]') is None
    assert broadcast_fields('42["broadcast",{"seq":1,"sent_at":NaN}]') is None
    assert broadcast_fields('42["broadcast",{"seq":1}]') is None
