"""The two Engine.IO transports a virtual client can use, behind one small interface.

``WebSocketConn`` rides on the ``websockets`` library (asyncio). Measured at 5,000 idle connections
(docs/loadgen.md): websockets 11.4 KB of client RSS per connection (compression and library
keepalive off), aiohttp 11.3 KB but a 4x slower ramp (29.5 s vs 6.7 s for 5,000), picows 31.2 KB.
websockets is light enough and the best maintained, so the WebSocket layer is NOT hand-rolled;
the Engine.IO/Socket.IO framing on top is (protocol.py).

``PollingConn`` is Engine.IO HTTP long-polling over ONE keep-alive TCP connection per client,
written directly on asyncio streams (no extra dependency): requests are strictly sequential on that
connection, so anything the client sends waits until the pending GET returns (at the latest after
the server's ping interval). That keeps "one TCP connection per virtual client" true for polling
too, at the price of send latency; real browsers open a second connection for POSTs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Protocol
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .protocol import EIO_OPEN, ProtocolError, join_payload, parse_handshake, split_payload

ENGINEIO_PATH = "/socket.io/"


class ConnClosed(Exception):
    """The transport is gone (server close, reset, EOF)."""


class HTTPStatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class Conn(Protocol):
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


class WebSocketConn:
    __slots__ = ("ws",)

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, url: str, source_ip: str | None, timeout: float) -> WebSocketConn:
        ws = await connect(
            engineio_url(url, "websocket"),
            local_addr=(source_ip, 0) if source_ip else None,
            open_timeout=timeout,
            compression=None,  # permessage-deflate costs ~tens of KB per socket
            ping_interval=None,  # Engine.IO does its own ping/pong
            close_timeout=2,
            max_queue=4,
            proxy=None,  # never route loopback load through $http_proxy
            user_agent_header=None,
        )
        return cls(ws)

    async def send(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            raise ConnClosed(str(exc)) from None

    async def recv(self) -> str:
        try:
            msg = await self.ws.recv()
        except ConnectionClosed as exc:
            raise ConnClosed(str(exc)) from None
        if isinstance(msg, bytes):
            return msg.decode("utf-8", "replace")
        return msg

    async def close(self) -> None:
        await self.ws.close()


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
            reader, writer = await asyncio.open_connection(
                host, port, local_addr=(source_ip, 0) if source_ip else None, limit=2**20
            )
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
            raise ConnClosed(str(exc)) from None
        self._inbox.extend(split_payload(body))

    async def _flush(self) -> None:
        if not self._outbox:
            return
        packets, self._outbox = self._outbox, []
        try:
            await self._request("POST", join_payload(packets))
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise ConnClosed(str(exc)) from None

    async def send(self, text: str) -> None:
        if self._closed:
            raise ConnClosed("closed")
        self._outbox.append(text)

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
