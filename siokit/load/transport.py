"""The two Engine.IO transports a virtual client can use, behind one small interface.

``WebSocketConn`` is a small RFC 6455 client on an asyncio Protocol (``WSProtocol``): it replaced
the ``websockets`` library when the profile showed that library's per-message machinery to be most
of the load generator's CPU per received broadcast (see ``WSProtocol``). The memory comparison of
client libraries (websockets 11.4 KB per idle connection, aiohttp 11.3 KB, picows 31.2 KB) is in
docs/loadgen.md.

``PollingConn`` is Engine.IO HTTP long-polling over ONE keep-alive TCP connection per client,
written directly on asyncio streams (no extra dependency): requests are strictly sequential on that
connection, so anything the client sends waits until the pending GET returns (at the latest after
the server's ping interval). That keeps "one TCP connection per virtual client" true for polling
too, at the price of send latency; real browsers open a second connection for POSTs.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import random
import socket
import ssl
import time
from collections import deque
from typing import Any, Protocol
from urllib.parse import urlsplit

from .protocol import EIO_OPEN, ProtocolError, join_payload, parse_handshake, split_payload

ENGINEIO_PATH = "/socket.io/"


# Linux's IP_BIND_ADDRESS_NO_PORT (not in Python's socket module): bind() to a source address then
# leaves the port to connect(), which picks it per destination. Without it, bind((ip, 0)) must find a
# port free for ANY destination: during the 160k cluster ramp the load generator's workers sat in
# inet_csk_get_port (kernel stacks sampled from /proc/<pid>/stack), at ~80% system time, and the
# ramp crawled at ~115 connects/s (BENCHMARKS.md).
IP_BIND_ADDRESS_NO_PORT = 24
_resolved: dict[tuple[str, int], tuple[Any, ...]] = {}


async def open_tcp(host: str, port: int, source_ip: str | None) -> socket.socket:
    """A connected non-blocking TCP socket to host:port from source_ip (any address when None)."""
    loop = asyncio.get_running_loop()
    addr = _resolved.get((host, port))
    if addr is None:
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
        addr = _resolved[(host, port)] = infos[0][4]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source_ip:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source_ip, 0))
        await loop.sock_connect(sock, addr)
    except BaseException:
        sock.close()
        raise
    return sock


class ConnClosed(Exception):
    """The transport is gone (server close, reset, EOF)."""


# Why a connection ended, as the client observed it (siokit load's drop reasons; docs/loadgen.md).
# The first cause wins: a close frame, then the TCP close that follows it, count once as the frame.
EOF_NO_CLOSE = "eof_no_close_frame"  # TCP FIN without a websocket close frame before it
RESET = "tcp_reset"  # ECONNRESET: the peer (server, proxy or kernel) sent a RST
BAD_FRAME = "client_bad_frame"  # the client aborted: masked or oversized frame from the server
WRITE_FAILED = "client_write_failed"  # a write (pong, echo) found the transport gone


def lost_reason(exc: BaseException | None) -> str:
    """The reason for a connection lost with ``exc`` (None: orderly EOF) and no close frame seen."""
    if exc is None:
        return EOF_NO_CLOSE
    cause = exc.__cause__ if isinstance(exc, ConnClosed) and exc.__cause__ is not None else exc
    if isinstance(cause, ConnectionResetError):
        return RESET
    if isinstance(cause, BrokenPipeError):
        return "tcp_broken_pipe"
    if isinstance(cause, TimeoutError):
        return "tcp_timeout"  # ETIMEDOUT: retransmissions or keepalive gave up
    if isinstance(cause, asyncio.IncompleteReadError | ConnClosed):
        return EOF_NO_CLOSE
    if isinstance(cause, OSError) and cause.errno:
        return f"os_{errno.errorcode.get(cause.errno, cause.errno)}"
    return f"error_{type(cause).__name__}"


def close_reason(payload: bytes) -> str:
    """The reason for a websocket close frame from the server: its status code (RFC 6455 7.4)."""
    if len(payload) < 2:
        return "ws_close_no_code"
    return f"ws_close_{int.from_bytes(payload[:2], 'big')}"


class HTTPStatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class Conn(Protocol):
    def send_nowait(self, text: str) -> None: ...
    async def send(self, text: str) -> None: ...
    async def recv(self) -> str: ...
    async def close(self) -> None: ...


def engineio_url(url: str, transport: str, path: str = ENGINEIO_PATH) -> str:
    """http://h:p -> ws://h:p/socket.io/?EIO=4&transport=websocket (or the polling URL)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}")
    secure = parts.scheme in ("https", "wss")
    schemes = {"websocket": ("ws", "wss")}.get(transport, ("http", "https"))
    scheme = schemes[1] if secure else schemes[0]
    return f"{scheme}://{parts.netloc}{path}?EIO=4&transport={transport}"


# RFC 6455 constants: the GUID that proves the server read our key, and the opcodes a client sees.
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 1 << 20  # the Engine.IO maxPayload default; a larger message is a protocol error
HANDSHAKE_MAX = 16 * 1024


def _mask(payload: bytes) -> bytes:
    """A client frame's payload must be masked (RFC 6455 5.3). The key need not be secret here:
    a load generator against its own servers; getrandbits avoids a urandom syscall per frame."""
    key = random.getrandbits(32).to_bytes(4, "big")
    n = len(payload)
    if not n:
        return key
    keys = (key * (n // 4 + 1))[:n]
    return key + (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def encode_frame(payload: bytes, opcode: int = _OP_TEXT) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + _mask(payload)


class WSProtocol(asyncio.Protocol):
    """A WebSocket client (RFC 6455, no extensions) as one asyncio Protocol per connection.

    Why not the `websockets` library any more (it was the transport until the py-spy profile of
    issue #9): receiving a broadcast through it cost the worker ~140 us of CPU per message on this
    host (5,000 clients, a broadcast a second, Node server; bench/loadgen_cpu.py), and its frame
    parser (a generator per frame), assembler, queue, future and task wake-up per message were
    over half of the profile. Here a complete frame is decoded in ``data_received`` and handed to
    ``handler`` synchronously (no coroutine wakes per message); ``recv()`` stays for the handshake
    and for callers that do not set a handler. Figures before/after are in docs/loadgen.md.
    """

    __slots__ = (
        "_buf", "_closing", "_drain", "_frag", "_key", "_request", "_status", "_waiter", "handler",
        "inbox", "on_lost", "transport", "why",
    )  # fmt: skip

    def __init__(self, request: bytes, key: bytes) -> None:
        self._request = request
        self._key = key
        self._buf = b""
        self._frag: bytearray | None = None
        self._status: asyncio.Future[None] | None = None  # the opening handshake
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._closing = False
        self.transport: asyncio.Transport | None = None
        self.inbox: deque[str] = deque()
        self.handler: Any = None  # callable(text); set once the namespace is connected
        self.on_lost: Any = None  # callable(reason); the connection is gone
        self.why: str | None = None  # the first cause of the end this protocol saw (close frame, own abort)

    # ------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        self._status = asyncio.get_running_loop().create_future()
        transport.write(self._request)  # type: ignore[attr-defined]  # a write transport, as above

    def data_received(self, data: bytes) -> None:
        # Most reads are one whole small final text frame after the handshake: skip the general
        # parser (1.16 -> ~0.5 us per message, process CPU, this host).
        status = self._status
        if not self._buf and (status is None or status.done()):
            n = len(data)
            if n < 128 and n >= 2 and data[0] == 0x81 and data[1] == n - 2:
                self._deliver(data[2:])
                return
        buf = self._buf + data if self._buf else data
        if status is not None and not status.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > HANDSHAKE_MAX:
                    self._fail(status, ProtocolError("handshake response too long"))
                self._buf = buf
                return
            err = self._check_response(buf[:end])
            if err is not None:
                self._fail(status, err)
                return
            status.set_result(None)
            buf = buf[end + 4 :]
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if b1 & 0x80 or length > MAX_MESSAGE:  # servers never mask (RFC 6455 5.1)
                self._abort(BAD_FRAME)
                return
            end = pos + head + length
            if end > n:
                break
            payload = buf[pos + head : end]
            pos = end
            op = b0 & 0x0F
            if op in (_OP_TEXT, _OP_BINARY):
                if b0 & 0x80:
                    self._deliver(payload)
                else:
                    self._frag = bytearray(payload)
            elif op == _OP_CONT and self._frag is not None:
                self._frag += payload
                if len(self._frag) > MAX_MESSAGE:
                    self._abort(BAD_FRAME)
                    return
                if b0 & 0x80:
                    whole, self._frag = bytes(self._frag), None
                    self._deliver(whole)
            elif op == _OP_PING:
                self._write(encode_frame(payload, _OP_PONG))
            elif op == _OP_CLOSE:
                if self.why is None:
                    self.why = close_reason(payload)
                if not self._closing:
                    self._closing = True
                    self._write(encode_frame(payload[:2], _OP_CLOSE))
                if self.transport is not None:
                    self.transport.close()
                return
        self._buf = buf[pos:] if pos < n else b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.why is None:
            self.why = lost_reason(exc)
        status = self._status
        if status is not None and not status.done():
            status.set_exception(ConnClosed("closed during the websocket handshake"))
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self.on_lost is not None:
            cb, self.on_lost = self.on_lost, None
            cb(self.why)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # ------------------------------------------------------------ helpers
    def _check_response(self, head: bytes) -> Exception | None:
        lines = head.split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            return ProtocolError(f"bad HTTP status line {lines[0][:80]!r}")
        if status != 101:
            return HTTPStatusError(status)
        accept = base64.b64encode(hashlib.sha1(self._key + _WS_GUID).digest())
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-accept":
                return None if value.strip() == accept else ProtocolError("bad Sec-WebSocket-Accept")
        return ProtocolError("no Sec-WebSocket-Accept")

    def _fail(self, status: asyncio.Future[None], exc: Exception) -> None:
        status.set_exception(exc)
        self._abort()

    def _abort(self, why: str | None = None) -> None:
        if self.why is None and why is not None:
            self.why = why
        if self.transport is not None:
            self.transport.abort()

    def _deliver(self, payload: bytes) -> None:
        text = payload.decode("utf-8", "replace")
        if self.handler is not None:
            try:
                self.handler(text)
            except Exception as exc:
                # Left to the event loop, this would close the socket (a reset for the server, if
                # bytes were unread) with a log line per client and no reason counted.
                self._abort(f"client_error_{type(exc).__name__}")
            return
        self.inbox.append(text)
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)


class WebSocketConn:
    __slots__ = ("proto",)

    def __init__(self, proto: WSProtocol) -> None:
        self.proto = proto

    @classmethod
    async def open(cls, url: str, source_ip: str | None, timeout: float) -> WebSocketConn:
        full = urlsplit(engineio_url(url, "websocket"))
        secure = full.scheme == "wss"
        host = full.hostname or "127.0.0.1"
        port = full.port or (443 if secure else 80)
        key = base64.b64encode(random.getrandbits(128).to_bytes(16, "big"))
        request = (
            f"GET {full.path}?{full.query} HTTP/1.1\r\nHost: {full.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        loop = asyncio.get_running_loop()

        async def _open() -> WebSocketConn:
            transport, proto = await loop.create_connection(
                lambda: WSProtocol(request, key),
                sock=await open_tcp(host, port, source_ip),
                ssl=ssl.create_default_context() if secure else None,
                server_hostname=host if secure else None,
            )
            try:
                assert proto._status is not None
                await proto._status
            except BaseException:  # timed out or cancelled mid-handshake: leave no socket behind
                transport.abort()
                raise
            return cls(proto)

        return await asyncio.wait_for(_open(), timeout)

    def send_nowait(self, text: str) -> None:
        p = self.proto
        if p.transport is None or p._closing:
            raise ConnClosed("closed")
        p._write(encode_frame(text.encode()))

    def abort(self, why: str | None = None) -> None:
        self.proto._abort(why)

    async def send(self, text: str) -> None:
        self.send_nowait(text)
        drain = self.proto._drain
        if drain is not None and not drain.done():
            await drain

    async def recv(self) -> str:
        p = self.proto
        while not p.inbox:
            if p.transport is None:
                raise ConnClosed("closed")
            p._waiter = asyncio.get_running_loop().create_future()
            await p._waiter
        return p.inbox.popleft()

    async def close(self) -> None:
        """Close frame (1000), then drop TCP: the server need not answer for the load to end."""
        p = self.proto
        t = p.transport
        if t is None:
            return
        if not p._closing:
            p._closing = True
            p._write(encode_frame((1000).to_bytes(2, "big"), _OP_CLOSE))
        t.close()


async def _read_http_response(reader: asyncio.StreamReader) -> tuple[int, str]:
    line = await reader.readline()
    if not line:
        raise ConnClosed("EOF before HTTP status line")
    try:
        status = int(line.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise ProtocolError(f"bad HTTP status line {line[:80]!r}") from None
    length: int | None = None
    chunked = False
    close = False
    while True:
        h = await reader.readline()
        if not h:
            raise ConnClosed("EOF in HTTP headers")
        if h in (b"\r\n", b"\n"):
            break
        name, _, value = h.decode("latin-1").partition(":")
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.lower() == "close":
            close = True
    if chunked:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                break
            parts.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(parts)
    elif length is not None:
        body = await reader.readexactly(length)
    elif close:
        body = await reader.read()
    else:
        body = b""
    return status, body.decode("utf-8", "replace")


class PollingConn:
    """Engine.IO long-polling on one keep-alive connection; sends are flushed between polls."""

    __slots__ = ("_closed", "_host", "_inbox", "_outbox", "_path", "_reader", "_sid", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str):
        self._reader = reader
        self._writer = writer
        self._host = host
        self._path = path
        self._sid = ""
        self._inbox: deque[str] = deque()
        self._outbox: list[str] = []
        self._closed = False

    @classmethod
    async def open(cls, url: str, source_ip: str | None, timeout: float) -> PollingConn:
        full = urlsplit(engineio_url(url, "polling"))
        if full.scheme == "https":
            raise ValueError("polling over https is not supported by the load client")
        host = full.hostname or "127.0.0.1"
        port = full.port or 80

        async def _open() -> PollingConn:
            reader, writer = await asyncio.open_connection(sock=await open_tcp(host, port, source_ip), limit=2**20)
            conn = cls(reader, writer, full.netloc, f"{full.path}?{full.query}")
            await conn._poll()  # the handshake (open packet) arrives on the first GET
            if not conn._inbox or not conn._inbox[0].startswith(EIO_OPEN):
                raise ProtocolError("polling handshake did not start with an open packet")
            conn._sid = parse_handshake(conn._inbox[0][1:]).sid
            return conn

        return await asyncio.wait_for(_open(), timeout)

    def _target(self) -> str:
        sid = f"&sid={self._sid}" if self._sid else ""
        return f"{self._path}{sid}&t={time.monotonic_ns():x}"

    async def _request(self, method: str, body: str = "") -> str:
        data = body.encode()
        head = f"{method} {self._target()} HTTP/1.1\r\nHost: {self._host}\r\nConnection: keep-alive\r\nAccept: */*\r\n"
        if method == "POST":
            head += f"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {len(data)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + data)
        await self._writer.drain()
        status, text = await _read_http_response(self._reader)
        if status != 200:
            raise HTTPStatusError(status)
        return text

    async def _poll(self) -> None:
        try:
            body = await self._request("GET")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise ConnClosed(str(exc)) from exc  # the cause is the drop's reason (lost_reason)
        self._inbox.extend(split_payload(body))

    async def _flush(self) -> None:
        if not self._outbox:
            return
        packets, self._outbox = self._outbox, []
        try:
            await self._request("POST", join_payload(packets))
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise ConnClosed(str(exc)) from exc

    def send_nowait(self, text: str) -> None:
        if self._closed:
            raise ConnClosed("closed")
        self._outbox.append(text)

    async def send(self, text: str) -> None:
        self.send_nowait(text)

    async def recv(self) -> str:
        while not self._inbox:
            if self._closed:
                raise ConnClosed("closed")
            await self._flush()
            await self._poll()
        return self._inbox.popleft()

    async def close(self) -> None:
        # A GET may be in flight on the only connection, so no close packet is sent: dropping the
        # TCP connection is what the server sees (it then expires the session).
        self._closed = True
        self._writer.close()
