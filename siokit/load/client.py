"""One virtual Socket.IO client: exactly one TCP connection, explicit namespace connect, pongs,
echo round-trips, broadcast fan-out latency, reconnection with backoff.

Per-client cost is kept small on purpose (``__slots__``, one coroutine per client, no per-client
timers: echoes are scheduled by the worker). Measured at 5,000 idle clients (docs/loadgen.md):
13.7 KB of client RSS per client here vs 32.0 KB for python-socketio's AsyncClient and 42.0 KB for
Locust's SocketIOUser (raw `websockets` alone: 11.4 KB). That is why the Engine.IO/Socket.IO layer
is our own (protocol.py) while the WebSocket layer stays the `websockets` library (transport.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import random
import time
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from .protocol import (
    EIO_CLOSE,
    EIO_MESSAGE,
    EIO_OPEN,
    EIO_PING,
    EIO_PONG,
    SIO_ACK,
    SIO_CONNECT,
    SIO_CONNECT_ERROR,
    SIO_DISCONNECT,
    SIO_EVENT,
    ProtocolError,
    encode_connect,
    encode_event,
    namespace_matches,
    parse_eio,
    parse_handshake,
    parse_sio,
)
from .stats import WorkerStats
from .transport import WRITE_FAILED, Conn, ConnClosed, HTTPStatusError, PollingConn, WebSocketConn, lost_reason

ECHO_TIMEOUT = 30.0

# Drop reasons the client itself decides (transport.py has the ones the socket tells).
EIO_CLOSE_PACKET = "eio_close_packet"  # Engine.IO "1": the server closed the session
SIO_DISCONNECT_PACKET = "sio_disconnect_packet"  # Socket.IO "1" on our namespace: the server disconnected us
DEAD_PEER = "client_ping_timeout"  # no Engine.IO ping within interval + timeout (the JS client's rule)
UNKNOWN = "unknown"  # a path that did not say why: a test asserts it stays 0


@dataclass(frozen=True)
class ClientConfig:
    url: str
    namespace: str = "/"
    transport: str = "websocket"  # or "polling"
    source_ip: str | None = None
    auth: Any = None
    connect_timeout: float = 20.0
    reconnect: bool = True
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    broadcast_event: str = "broadcast"
    echo_event: str = "echo"
    counted: bool = True  # False for the admin client: it does not touch the stats gauges
    bcast_prefix: str = ""  # derived: the text a broadcast event packet starts with

    def __post_init__(self) -> None:
        ns = "" if self.namespace in ("", "/") else self.namespace.rstrip(",") + ","
        object.__setattr__(self, "bcast_prefix", f'42{ns}["{self.broadcast_event}",')


def broadcast_fields(text: str) -> tuple[int | None, float] | None:
    """(seq, sent_at) from a broadcast packet ``...{"seq":n,"text":..,"sent_at":t}]`` without
    decoding it: two str.find calls cost ~1 us where json.loads of the packet or two regex
    searches cost 3-4 us (process CPU, this host). None when there is no usable sent_at."""
    i = text.rfind('"sent_at":')
    if i < 0:
        return None
    i += 10
    j = text.find("}", i)
    c = text.find(",", i)
    if j < 0 or 0 <= c < j:
        j = c
    try:
        sent_at = float(text[i:j] if j >= 0 else text[i:])
    except ValueError:
        return None
    if sent_at != sent_at or sent_at in (math.inf, -math.inf):
        return None
    seq = None
    k = text.find('"seq":')
    if k >= 0:
        k += 6
        m = text.find(",", k)
        try:
            seq = int(text[k:m] if m > 0 else text[k:])
        except ValueError:
            seq = None
    return seq, sent_at


# The last broadcast parsed in this process: every client of a worker receives the same text, so
# its fields are read once per broadcast, not once per client (a string compare is ~0.05 us,
# broadcast_fields ~2.5 us; process CPU, this host, tests/unit/load).
_last_text = ""
_last_fields: tuple[int | None, float] | None = None


def _last_broadcast_fields(text: str) -> tuple[int | None, float] | None:
    global _last_text, _last_fields
    if text != _last_text:
        _last_text, _last_fields = text, broadcast_fields(text)
    return _last_fields


def classify(exc: BaseException) -> str:
    """Map a connect failure to a short reason for the report."""
    if isinstance(exc, InvalidStatus):
        return f"http_{exc.response.status_code}"
    if isinstance(exc, HTTPStatusError):
        return f"http_{exc.status}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ProtocolError | InvalidHandshake | InvalidURI):
        return "protocol"
    if isinstance(exc, ConnClosed | EOFError):
        return "closed"
    if isinstance(exc, OSError):
        if exc.errno == errno.EADDRNOTAVAIL:
            return "addr_unavailable"
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            return "too_many_open_files"
        return f"os_{errno.errorcode.get(exc.errno or 0, exc.errno)}"
    return type(exc).__name__


class ConnectError(Exception):
    """The server refused the namespace (Socket.IO ``44`` connect_error)."""


class VirtualClient:
    __slots__ = (
        "_ack_seq", "_done", "_pending", "cfg", "conn", "dead_after", "gate", "last_ping", "ns_ok",
        "pings", "stats", "stopping",
    )  # fmt: skip

    def __init__(self, cfg: ClientConfig, stats: WorkerStats, gate: asyncio.Semaphore | None = None) -> None:
        self.cfg = cfg
        self.stats = stats
        self.gate = gate  # shared bound on handshakes in flight
        self.conn: Conn | None = None
        self.ns_ok = False
        self.stopping = False
        self._ack_seq = 0
        self._pending: dict[int, float] | None = None
        self._done: asyncio.Future[str] | None = None  # set, with the reason, when the conn ends
        self.pings = 0  # Engine.IO pings heard (the worker resets it when the hold starts)
        self.last_ping = 0.0  # monotonic time of the last ping (or of the open packet)
        self.dead_after = 0.0  # ping interval + ping timeout from the handshake, seconds

    # ---------------------------------------------------------------- connect
    async def _handshake(self) -> Conn:
        cfg = self.cfg
        conn: Conn
        if cfg.transport == "polling":
            conn = await PollingConn.open(cfg.url, cfg.source_ip, cfg.connect_timeout)
        else:
            conn = await WebSocketConn.open(cfg.url, cfg.source_ip, cfg.connect_timeout)
        try:
            kind, payload = parse_eio(await conn.recv())
            if kind != EIO_OPEN:
                raise ProtocolError(f"expected open packet, got {kind!r}")
            hs = parse_handshake(payload)
            self.dead_after = hs.ping_interval + hs.ping_timeout
            if cfg.counted:
                self.stats.ping_interval_s = hs.ping_interval
                self.stats.ping_timeout_s = hs.ping_timeout
            self.last_ping = time.monotonic()
            # explicit namespace connect: the old client bug opened a 2nd connection without it
            await conn.send(encode_connect(cfg.namespace, cfg.auth))
            while True:
                kind, payload = parse_eio(await conn.recv())
                if kind == EIO_PING:
                    self.pings += 1
                    self.last_ping = time.monotonic()
                    await conn.send(EIO_PONG)
                    continue
                if kind == EIO_CLOSE:
                    raise ConnClosed("server closed during connect")
                if kind != EIO_MESSAGE:
                    continue
                pkt = parse_sio(payload)
                if not namespace_matches(pkt.namespace, cfg.namespace):
                    continue
                if pkt.type == SIO_CONNECT:
                    return conn
                if pkt.type == SIO_CONNECT_ERROR:
                    raise ConnectError(str(pkt.data))
        except BaseException:
            await _quiet_close(conn)
            raise

    async def connect_once(self, retry: bool = False) -> bool:
        """Open the transport and the namespace, recording latency or the failure reason (also in
        ``reconnect_failures`` when ``retry``: a drop's sequel, e.g. refused by a dead instance)."""
        st = self.stats
        st.attempts += 1
        t0 = time.monotonic()
        try:
            conn = await asyncio.wait_for(self._handshake(), self.cfg.connect_timeout)
        except asyncio.CancelledError:
            raise
        except ConnectError:
            st.fail("connect_error")
            if retry:
                st.reconnect_failures["connect_error"] += 1
            return False
        except Exception as exc:
            reason = classify(exc)
            st.fail(reason)
            if retry:
                st.reconnect_failures[reason] += 1
            return False
        if self.stopping:  # closed while the handshake was in flight
            await _quiet_close(conn)
            return False
        if self.cfg.counted:
            st.connect.add(time.monotonic() - t0)
            st.established += 1
            st.connected += 1
            st.transports[self.cfg.transport] += 1
        self.conn = conn
        self.ns_ok = True
        return True

    # ---------------------------------------------------------------- run
    async def read_loop(self) -> None:
        """Serve the connection until it closes; answers pings, records echo/broadcast latency.

        On the websocket transport every message is handled inside the protocol's
        ``data_received`` (``on_text``), with no coroutine woken per message: that wake-up was a
        large share of the worker's CPU per received broadcast (WSProtocol's docstring).
        Every way out yields the reason of the end, counted per drop (``drop_reasons``)."""
        conn = self.conn
        assert conn is not None
        done = self._done = asyncio.get_running_loop().create_future()
        reason = UNKNOWN
        try:
            if isinstance(conn, WebSocketConn):
                proto = conn.proto
                proto.on_lost = self._conn_lost
                proto.handler = self.on_text
                while proto.inbox and not done.done():
                    self.on_text(proto.inbox.popleft())
                if proto.transport is None:
                    self._conn_lost(proto.why or UNKNOWN)
                reason = await done
            else:
                while self.on_text(await conn.recv()):
                    pass
                reason = done.result() if done.done() else UNKNOWN
        except asyncio.CancelledError:
            reason = "cancelled"  # teardown: stopping is set, not a drop
            raise
        except HTTPStatusError as exc:  # polling: the server forgot the session (400) or failed
            reason = f"http_{exc.status}"
        except (ConnClosed, ConnectionError, OSError) as exc:
            reason = lost_reason(exc)
        except Exception as exc:  # a bug in handling a packet: counted, not silent
            reason = f"client_error_{type(exc).__name__}"
        finally:
            if done.done() and reason != "cancelled":  # the first cause (e.g. a dead peer) wins
                reason = done.result()
            self._done = None
            self._lost(reason)

    def _conn_lost(self, reason: str | None = None) -> None:
        done = self._done
        if done is not None and not done.done():
            done.set_result(reason or UNKNOWN)

    def on_text(self, text: str) -> bool:
        """Handle one Engine.IO packet; False when the session is over."""
        kind = text[:1]
        if kind == EIO_MESSAGE:
            cfg = self.cfg
            if text.startswith(cfg.bcast_prefix):
                if cfg.counted:
                    got = _last_broadcast_fields(text)
                    if got is not None:
                        self.stats.on_broadcast(got[0], time.time() - got[1])
                        return True
                    self._on_packet(text)
                return True
            return self._on_packet(text)
        if kind == EIO_PING:
            self.pings += 1
            self.last_ping = time.monotonic()
            conn = self.conn
            if conn is not None:
                try:
                    conn.send_nowait(EIO_PONG)
                except ConnClosed:
                    return self._end(WRITE_FAILED)
            return True
        if kind == EIO_CLOSE:
            return self._end(EIO_CLOSE_PACKET)
        return True

    def _end(self, reason: str) -> bool:
        self._conn_lost(reason)
        return False

    def _on_packet(self, text: str) -> bool:
        st = self.stats
        try:
            pkt = parse_sio(text[1:])
        except ProtocolError:
            st.fail("protocol_after_connect")
            return True
        if not namespace_matches(pkt.namespace, self.cfg.namespace):
            return True
        if pkt.type == SIO_EVENT:
            if pkt.data[0] == self.cfg.broadcast_event and self.cfg.counted:
                self._on_broadcast(pkt.data[1] if len(pkt.data) > 1 else None)
        elif pkt.type == SIO_ACK and pkt.ack_id is not None:
            sent = self._pending.pop(pkt.ack_id, None) if self._pending else None
            if sent is not None:
                st.echo.add(time.monotonic() - sent)
        elif pkt.type == SIO_DISCONNECT:
            return self._end(SIO_DISCONNECT_PACKET)
        return True

    def check_alive(self, now: float) -> bool:
        """Dead-peer detection as the official JS client does it: no ping within ping interval +
        ping timeout (from the handshake) means the server is gone; the connection is dropped (and
        reconnected per the reconnect setting). False when this client was just declared dead."""
        if not self.ns_ok or self.dead_after <= 0 or now - self.last_ping <= self.dead_after:
            return True
        if self.cfg.counted:
            self.stats.dead_peers += 1
        self._conn_lost(DEAD_PEER)  # before the abort: its connection_lost must not claim the drop
        conn = self.conn
        if isinstance(conn, WebSocketConn):
            conn.abort(DEAD_PEER)
        if not isinstance(conn, WebSocketConn) and conn is not None:
            asyncio.get_running_loop().create_task(_quiet_close(conn))
        return False

    def _on_broadcast(self, body: Any) -> None:
        if not isinstance(body, dict):
            return
        sent_at = body.get("sent_at")
        seq = body.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            seq = None
        if isinstance(sent_at, int | float) and not isinstance(sent_at, bool):
            self.stats.on_broadcast(seq, time.time() - float(sent_at))
        elif seq is not None:
            self.stats.broadcast_received[seq] += 1

    def _lost(self, reason: str) -> None:
        if self.ns_ok:
            self.ns_ok = False
            if self.cfg.counted:
                self.stats.connected -= 1
                if not self.stopping:
                    self.stats.on_drop(reason)
        conn, self.conn = self.conn, None
        if conn is not None:
            asyncio.get_running_loop().create_task(_quiet_close(conn))

    async def run(self, first: asyncio.Future[bool] | None = None) -> None:
        """Connect (reporting the first outcome through ``first``), serve, reconnect with backoff.

        Every attempt after the first counts in ``reconnect_attempts``; every success after the
        first in ``reconnects``.
        """
        try:
            attempt = 0
            retry = False
            counted = self.cfg.counted
            while not self.stopping:
                if retry and counted:
                    self.stats.reconnect_attempts += 1
                if self.gate is None:
                    ok = await self.connect_once(retry)
                else:
                    async with self.gate:
                        if self.stopping:
                            break
                        ok = await self.connect_once(retry)
                if first is not None and not first.done():
                    first.set_result(ok)
                if ok:
                    if retry and counted:
                        self.stats.reconnects += 1
                    attempt = 0
                    await self.read_loop()
                retry = True
                if self.stopping or not self.cfg.reconnect:
                    return
                delay = min(self.cfg.backoff_max, self.cfg.backoff_min * 2**attempt)
                attempt = min(attempt + 1, 16)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        finally:
            if first is not None and not first.done():
                first.set_result(False)

    # ---------------------------------------------------------------- actions
    async def emit(self, event: str, data: Any, ack: bool = False) -> int | None:
        conn = self.conn
        if conn is None or not self.ns_ok:
            return None
        ack_id = None
        if ack:
            self._ack_seq += 1
            ack_id = self._ack_seq
        await conn.send(encode_event(self.cfg.namespace, event, data, ack_id=ack_id))
        return ack_id

    async def send_echo(self, payload: Any) -> None:
        if self.conn is None or not self.ns_ok:
            return
        now = time.monotonic()
        pending = self._pending
        if pending is None:
            pending = self._pending = {}
        elif pending:
            stale = [k for k, t in pending.items() if now - t > ECHO_TIMEOUT]
            for k in stale:
                del pending[k]
            self.stats.echo_timeouts += len(stale)
        self._ack_seq += 1
        pending[self._ack_seq] = now
        self.stats.echo_sent += 1
        try:
            await self.conn.send(encode_event(self.cfg.namespace, self.cfg.echo_event, payload, ack_id=self._ack_seq))
        except (ConnClosed, ConnectionError, OSError):
            pending.pop(self._ack_seq, None)

    async def close(self) -> None:
        self.stopping = True
        conn = self.conn
        if conn is not None:
            await _quiet_close(conn)


async def _quiet_close(conn: Conn) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(conn.close(), 3)
