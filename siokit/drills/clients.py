"""Clients the drills run from this machine beside the load: an echo-latency probe, a `chat` flooder,
a raw websocket that stops reading, and a group of clients that may fall back to long-polling.

The load generator (in the loadgen container) holds the sockets; these few clients measure what the
load generator does not: echo latency on a timeline, what one abusive socket gets through, and what
a socket that stops reading costs the server.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import socketio


@dataclass(frozen=True)
class Latency:
    count: int
    timeouts: int
    median_ms: float | None
    p95_ms: float | None


def latency_summary(samples: list[tuple[float, float | None]], start: float, end: float) -> Latency:
    """Echo round-trips sent in [start, end): (sent wall time, rtt in s or None for no answer)."""
    inside = [rtt for t, rtt in samples if start <= t < end]
    answered = sorted(r * 1000 for r in inside if r is not None)
    if not answered:
        return Latency(len(inside), len(inside), None, None)
    p95 = answered[min(len(answered) - 1, round(0.95 * (len(answered) - 1)))]
    return Latency(len(inside), len(inside) - len(answered), round(statistics.median(answered), 1), round(p95, 1))


class EchoProbe:
    """`clients` sockets, each calling `echo` every `every` s; every round-trip on the wall clock.
    It also counts the `chat` messages that reach it (what an abusive socket got through)."""

    def __init__(self, url: str, clients: int = 2, every: float = 0.25, timeout: float = 5.0) -> None:
        self.url, self.every, self.timeout = url, every, timeout
        self.samples: list[tuple[float, float | None]] = []
        self.chats_received = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.clients = clients
        self._clients = [socketio.Client(reconnection=True, reconnection_delay=0.5) for _ in range(clients)]
        self._threads = [threading.Thread(target=self._loop, args=(c,), daemon=True) for c in self._clients]
        for c in self._clients:
            c.on("chat", self._on_chat)

    def _on_chat(self, data: Any = None) -> None:
        with self._lock:
            self.chats_received += 1

    def _loop(self, sio: socketio.Client) -> None:
        while not self._stop.wait(self.every):
            t = time.time()
            try:
                sio.call("echo", {"t": t}, timeout=self.timeout)
                rtt: float | None = time.time() - t
            except Exception:  # a timeout or a disconnected socket: no answer
                rtt = None
            with self._lock:
                self.samples.append((t, rtt))

    def start(self) -> EchoProbe:
        for sio in self._clients:
            sio.connect(self.url, transports=["websocket"], wait_timeout=10)
        for th in self._threads:
            th.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=self.timeout + 1)
        for sio in self._clients:
            with contextlib.suppress(Exception):
                sio.disconnect()


@dataclass
class FloodCounts:
    sent: int = 0
    accepted: int = 0  # acked ok: the server relayed it to every socket
    limited: int = 0  # acked with an error (rate limited)
    sessions: int = 0  # connections the flooder opened
    cut_off: int = 0  # of them, closed by the server
    refused: int = 0  # reconnects refused (nginx's handshake limit answers 429)


class ChatFlood:
    """One client sending `chat` in a tight loop for `seconds`; cut off, it connects again after
    `reconnect_after` s and goes on."""

    def __init__(self, url: str, seconds: float, in_flight: int = 500, reconnect_after: float = 1.0) -> None:
        self.url, self.seconds, self.in_flight = url, seconds, in_flight
        self.reconnect_after = reconnect_after
        self.counts = FloodCounts()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ack(self, reply: Any = None) -> None:
        with self._lock:
            if isinstance(reply, dict) and reply.get("ok"):
                self.counts.accepted += 1
            else:
                self.counts.limited += 1

    def _run(self) -> None:
        deadline = time.time() + self.seconds
        while time.time() < deadline:
            sio = socketio.Client(reconnection=False)
            try:
                sio.connect(self.url, transports=["websocket"], wait_timeout=5)
            except Exception:
                self.counts.refused += 1
                time.sleep(self.reconnect_after)
                continue
            self.counts.sessions += 1
            while sio.connected and time.time() < deadline:
                # Tight, but not past the acks by more than `in_flight`: an unbounded local queue
                # would measure this process, not the server.
                if self.counts.sent - self.counts.accepted - self.counts.limited > self.in_flight:
                    time.sleep(0.001)
                    continue
                try:
                    sio.emit("chat", {"text": f"flood {self.counts.sent}"}, callback=self._ack)
                    self.counts.sent += 1
                except Exception:
                    break
            if time.time() < deadline:
                time.sleep(0.2)  # let the disconnect land
                if not sio.connected:
                    self.counts.cut_off += 1
            with contextlib.suppress(Exception):
                sio.disconnect()
            # Then back, as a default python-socketio client would (reconnection_delay 1 s).
            time.sleep(max(0.0, min(self.reconnect_after - 0.2, deadline - time.time())))

    def start(self) -> ChatFlood:
        self._thread.start()
        return self

    def wait(self) -> FloodCounts:
        self._thread.join(timeout=self.seconds + 30)
        return self.counts


def ws_frame(text: str) -> bytes:
    """A masked text frame (client to server, RFC 6455)."""
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frames(buf: bytes) -> tuple[list[str], bytes]:
    """Complete unmasked text frames (server to client) at the start of `buf`, and the rest."""
    out = []
    while len(buf) >= 2:
        n, i = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, i = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, i = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < i + n:
            break
        if buf[0] & 0x0F == 1:
            out.append(buf[i : i + n].decode())
        buf = buf[i + n :]
    return out, buf


@dataclass
class SlowConsumer:
    """A raw websocket through the lb that joins `room`, then stops reading with a tiny receive buffer."""

    url: str
    room: str
    instance: str = ""
    sock: socket.socket | None = None
    _buf: bytes = b""
    log: list[str] = field(default_factory=list)

    def _until(self, prefix: str, timeout: float = 10) -> str:
        assert self.sock is not None
        deadline = time.time() + timeout
        while time.time() < deadline:
            frames, self._buf = read_frames(self._buf)
            for f in frames:
                self.log.append(f[:200])
                if f == "2":  # an Engine.IO ping before we go quiet: answer it
                    self.sock.sendall(ws_frame("3"))
                if f.startswith(prefix):
                    return f
            self.sock.settimeout(max(0.1, deadline - time.time()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before {prefix!r}")
            self._buf += chunk
        raise TimeoutError(f"no {prefix!r} within {timeout} s")

    def open(self) -> SlowConsumer:
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Set before connect, so the window it advertises stays small: the server's bytes pile up
        # on its side, not in this machine's receive buffer.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            (
                f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.sock = s
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the websocket handshake")
            head += chunk
        status, _, rest = head.partition(b"\r\n\r\n")
        first = status.split(b"\r\n", 1)[0].decode()
        if " 101 " not in first:
            raise ConnectionError(f"no websocket upgrade: {first}")
        self._buf = rest
        self._until("0{")
        s.sendall(ws_frame("40"))
        self._until("40")
        s.sendall(ws_frame("420" + json.dumps(["join", {"room": self.room}])))
        self._until("430")
        s.sendall(ws_frame("421" + json.dumps(["whoami"])))
        who = json.loads(self._until("431")[3:])[0]
        self.instance = str(who.get("instance", ""))
        return self

    def closed_by_server(self, timeout: float = 60) -> bool:
        """Read what is queued for us until the server's close (EOF or reset), within `timeout`."""
        assert self.sock is not None
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                self.sock.settimeout(max(0.1, deadline - time.time()))
                if not self.sock.recv(1 << 20):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()


class RoomSenders:
    """`senders` clients in `room`, each sending `room_message` every `every` s with `text`."""

    def __init__(self, url: str, room: str, senders: int, every: float, text: str) -> None:
        self.url, self.room, self.every, self.text = url, room, every, text
        self.sent = 0
        self.received: dict[int, int] = {}  # receiver index -> messages that reached it
        self._stop = threading.Event()
        self._clients = [socketio.Client(reconnection=False) for _ in range(senders)]
        self._threads = [threading.Thread(target=self._loop, args=(c,), daemon=True) for c in self._clients]
        self._receivers: list[socketio.Client] = []
        self._lock = threading.Lock()

    def add_receivers(self, n: int) -> None:
        for i in range(n):
            sio = socketio.Client(reconnection=False)
            self.received[i] = 0
            sio.on("room_message", lambda data=None, i=i: self._on_message(i))
            self._receivers.append(sio)

    def _on_message(self, i: int) -> None:
        with self._lock:
            self.received[i] += 1

    def _loop(self, sio: socketio.Client) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(Exception):
                sio.emit("room_message", {"room": self.room, "text": self.text})
                with self._lock:
                    self.sent += 1

    def connect(self) -> None:
        for sio in self._clients + self._receivers:
            sio.connect(self.url, transports=["websocket"], wait_timeout=10)
            sio.call("join", {"room": self.room}, timeout=10)

    def start(self) -> None:
        for th in self._threads:
            th.start()

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=5)
        time.sleep(1.0)  # the last messages in flight
        for sio in self._clients + self._receivers:
            with contextlib.suppress(Exception):
                sio.disconnect()


@dataclass
class FallbackCounts:
    transports: list[str] = field(default_factory=list)  # each client's transport after the upgrade window
    acks: int = 0
    acks_failed: int = 0
    room_sent: int = 0
    room_received: int = 0  # summed over the receivers
    broadcasts_received: int = 0  # the load's admin broadcasts, summed over the clients


class FallbackGroup:
    """`n` clients that may use either transport (the default: polling first, then an upgrade try), in one
    room: one sends `room_message` every `every` s, every one calls `echo` with an ack as often."""

    def __init__(self, url: str, n: int = 4, every: float = 0.5, room: str = "fallback") -> None:
        self.url, self.every, self.room = url, every, room
        self.counts = FallbackCounts()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients = [socketio.Client(reconnection=False) for _ in range(n)]
        for sio in self._clients[1:]:
            sio.on("room_message", self._on_room)
        for sio in self._clients:
            sio.on("broadcast", self._on_broadcast)
        self._threads = [
            threading.Thread(target=self._loop, args=(i, c), daemon=True) for i, c in enumerate(self._clients)
        ]

    def _on_room(self, data: Any = None) -> None:
        with self._lock:
            self.counts.room_received += 1

    def _on_broadcast(self, data: Any = None) -> None:
        with self._lock:
            self.counts.broadcasts_received += 1

    def _loop(self, i: int, sio: socketio.Client) -> None:
        while not self._stop.wait(self.every):
            try:
                sio.call("echo", {"i": i}, timeout=10)
                ok = True
            except Exception:
                ok = False
            with self._lock:
                self.counts.acks += ok
                self.counts.acks_failed += not ok
            if i == 0:
                with contextlib.suppress(Exception):
                    sio.emit("room_message", {"room": self.room, "text": "fallback"})
                    with self._lock:
                        self.counts.room_sent += 1

    def start(self, upgrade_wait: float = 5.0) -> FallbackGroup:
        for sio in self._clients:
            sio.connect(self.url, wait_timeout=10)  # default transports: polling, then the upgrade
            sio.call("join", {"room": self.room}, timeout=10)
        time.sleep(upgrade_wait)  # the upgrade attempt succeeds or fails by then
        self.counts.transports = [str(sio.transport()) for sio in self._clients]
        for th in self._threads:
            th.start()
        return self

    @property
    def receivers(self) -> int:
        return len(self._clients) - 1

    def stop(self) -> FallbackCounts:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=12)
        time.sleep(1.0)
        for sio in self._clients:
            with contextlib.suppress(Exception):
                sio.disconnect()
        return self.counts
