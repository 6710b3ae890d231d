#!/usr/bin/env python3
"""A Socket.IO (Engine.IO 4) round trip with the standard library only.

Shipped to a client host by tests/infra/test_socketio.py (base64 through the shell, run with the
host's own python3), so the hosts need no client library. Speaks just enough of the protocol:

1. through the load balancer, the way a browser does: long-polling handshake, namespace connect,
   then the upgrade to websocket (HTTP 101, "2probe"/"3probe", "5"), then an `echo` with an ack;
2. one websocket-only client directly on every uWSGI instance given;
3. a `chat` from the lb client must reach every direct client: Flask-SocketIO relays it through the
   Redis message queue, so clients on other instances (and other hosts) only get it if the queue works.

Prints one JSON object: what happened at each step. Exits 0 even on failure (the test asserts).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import sys
import time
import urllib.parse

RS = "\x1e"  # Engine.IO 4 record separator between packets of one polling payload


class ProbeError(Exception):
    pass


def _connect(host: str, port: int, timeout: float, source: str | None) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0) if source else None)
    sock.settimeout(timeout)
    return sock


def _read_http_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ProbeError(f"connection closed during HTTP head: {buf[:200]!r}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def http(
    url: str, method: str = "GET", body: bytes = b"", timeout: float = 10, source: str | None = None
) -> tuple[int, str]:
    """One HTTP/1.1 request on a fresh connection (Connection: close)."""
    u = urllib.parse.urlsplit(url)
    sock = _connect(u.hostname, u.port or 80, timeout, source)
    try:
        path = u.path + ("?" + u.query if u.query else "")
        req = (
            f"{method} {path} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n"
            f"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(req.encode() + body)
        status, headers, rest = _read_http_head(sock)
        data = rest
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        if headers.get("transfer-encoding", "").lower() == "chunked":
            out, d = b"", data
            while d:
                size_s, _, d = d.partition(b"\r\n")
                size = int(size_s.split(b";")[0], 16)
                if size == 0:
                    break
                out, d = out + d[:size], d[size + 2 :]
            data = out
        return status, data.decode("utf-8", "replace")
    finally:
        sock.close()


class WebSocket:
    """A minimal RFC 6455 client: text frames, masking, ping/close handling."""

    def __init__(self, url: str, timeout: float = 10, source: str | None = None) -> None:
        u = urllib.parse.urlsplit(url)
        self.sock = _connect(u.hostname, u.port or 80, timeout, source)
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + ("?" + u.query if u.query else "")
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(req.encode())
        self.status, self.headers, self.buf = _read_http_head(self.sock)
        if self.status != 101:
            raise ProbeError(f"websocket upgrade refused: HTTP {self.status} {self.headers}")

    def send(self, text: str) -> None:
        payload = text.encode()
        head = bytes([0x81])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ProbeError("websocket closed by peer")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> str:
        while True:
            b1, b2 = self._need(2)
            opcode, n = b1 & 0x0F, b2 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._need(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._need(8))[0]
            payload = self._need(n)
            if opcode == 0x1:
                return payload.decode()
            if opcode == 0x8:
                raise ProbeError("websocket close frame received")
            # ping (0x9) and pong (0xA) frames from uWSGI: answer pings, ignore the rest
            if opcode == 0x9:
                mask = os.urandom(4)
                self.sock.sendall(
                    bytes([0x8A, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Client:
    """An Engine.IO/Socket.IO client on the default namespace."""

    def __init__(self, base: str, timeout: float, source: str | None, nickname: str) -> None:
        self.base, self.timeout, self.source, self.nickname = base.rstrip("/"), timeout, source, nickname
        self.events: list = []
        self.ws: WebSocket | None = None
        self.sid = self.eio_sid = None
        self.upgraded_via = None

    def _url(self, transport: str, sid: str | None = None) -> str:
        q = {"EIO": "4", "transport": transport, "t": str(time.time())}
        if sid:
            q["sid"] = sid
        return f"{self.base}/socket.io/?{urllib.parse.urlencode(q)}"

    def _ws_url(self, sid: str | None = None) -> str:
        return self._url("websocket", sid)

    def connect_polling_then_upgrade(self) -> None:
        status, body = http(self._url("polling"), timeout=self.timeout, source=self.source)
        if status != 200 or not body.startswith("0"):
            raise ProbeError(f"polling handshake failed: HTTP {status} {body[:200]!r}")
        open_pkt = json.loads(body[1:].split(RS)[0])
        self.eio_sid = open_pkt["sid"]
        if "websocket" not in open_pkt.get("upgrades", []):
            raise ProbeError(f"server offers no websocket upgrade: {open_pkt}")
        auth = json.dumps({"nickname": self.nickname})
        status, body = http(
            self._url("polling", self.eio_sid), "POST", ("40" + auth).encode(), timeout=self.timeout, source=self.source
        )
        if status != 200:
            raise ProbeError(f"namespace connect POST failed: HTTP {status} {body[:200]!r}")
        # the CONNECT reply (and the welcome event) arrive on the next poll
        deadline = time.time() + self.timeout
        while self.sid is None and time.time() < deadline:
            status, body = http(self._url("polling", self.eio_sid), timeout=self.timeout, source=self.source)
            if status != 200:
                raise ProbeError(f"poll failed: HTTP {status} {body[:200]!r}")
            for pkt in body.split(RS):
                self._handle(pkt)
        if self.sid is None:
            raise ProbeError("no namespace CONNECT reply over polling")
        ws = WebSocket(self._ws_url(self.eio_sid), self.timeout, self.source)
        ws.send("2probe")
        reply = ws.recv()
        while reply != "3probe":
            self._handle(reply)
            reply = ws.recv()
        ws.send("5")
        self.ws = ws
        self.upgraded_via = "polling->websocket"

    def connect_websocket(self) -> None:
        ws = WebSocket(self._ws_url(), self.timeout, self.source)
        self.ws = ws
        first = ws.recv()
        if not first.startswith("0"):
            raise ProbeError(f"no Engine.IO OPEN on websocket: {first[:200]!r}")
        self.eio_sid = json.loads(first[1:])["sid"]
        ws.send("40" + json.dumps({"nickname": self.nickname}))
        deadline = time.time() + self.timeout
        while self.sid is None and time.time() < deadline:
            self._handle(ws.recv())
        self.upgraded_via = "websocket"

    def _handle(self, pkt: str):
        """Handle one Engine.IO packet; returns a Socket.IO ack (id, args) if it is one."""
        if not pkt:
            return None
        if pkt == "2":  # Engine.IO ping from the server
            if self.ws:
                self.ws.send("3")
            return None
        if pkt[0] != "4":
            return None
        sio = pkt[1:]
        if sio.startswith("0"):
            self.sid = json.loads(sio[1:] or "{}").get("sid", "?")
        elif sio.startswith("4"):
            raise ProbeError(f"namespace connect refused: {sio[1:]}")
        elif sio.startswith("2"):
            self.events.append(json.loads(sio[1:]))
        elif sio.startswith("3"):
            i = 1
            while sio[i].isdigit():
                i += 1
            return int(sio[1:i]), json.loads(sio[i:])
        return None

    def call(self, ack_id: int, event: str, data) -> list:
        self.ws.send(f"42{ack_id}" + json.dumps([event, data]))
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            ack = self._handle(self.ws.recv())
            if ack and ack[0] == ack_id:
                return ack[1]
        raise ProbeError(f"no ack for {event}")

    def wait_event(self, name: str, predicate, timeout: float):
        deadline = time.time() + timeout
        while True:
            for ev in self.events:
                if ev and ev[0] == name and predicate(ev[1] if len(ev) > 1 else None):
                    return ev[1]
            if time.time() >= deadline:
                return None
            self.ws.sock.settimeout(max(0.1, deadline - time.time()))
            try:
                self._handle(self.ws.recv())
            except TimeoutError:
                return None

    def close(self) -> None:
        if self.ws:
            with contextlib.suppress(OSError):
                self.ws.send("41")
            self.ws.close()


def main() -> int:
    spec = json.loads(sys.argv[1])
    timeout = float(spec.get("timeout", 10))
    token = spec.get("token") or base64.b16encode(os.urandom(6)).decode()
    source = spec.get("source")
    out: dict = {"ok": False, "token": token, "lb": spec["lb"], "direct": {}, "steps": []}
    clients: list[Client] = []
    try:
        a = Client(spec["lb"], timeout, source, "infra-lb")
        clients.append(a)
        a.connect_polling_then_upgrade()
        out["steps"].append("lb: polling handshake, namespace connect, upgraded to websocket")
        out["lb_transport"] = a.upgraded_via
        out["lb_eio_sid"] = a.eio_sid
        echo = a.call(1, "echo", {"token": token})
        out["lb_echo"] = echo
        out["lb_instance"] = echo[0].get("instance") if echo and isinstance(echo[0], dict) else None
        out["steps"].append("lb: echo acked over websocket")
        direct: list[tuple[str, Client]] = []
        for url in spec.get("direct", []):
            c = Client(url, timeout, source, "infra-direct")
            clients.append(c)
            c.connect_websocket()
            e = c.call(1, "echo", {"token": token})
            out["direct"][url] = {"instance": e[0].get("instance") if e else None, "received": False}
            direct.append((url, c))
        out["steps"].append(f"direct: {len(direct)} websocket clients connected")
        ack = a.call(2, "chat", {"text": token})
        out["chat_ack"] = ack
        for url, c in direct:
            msg = c.wait_event("chat", lambda d: isinstance(d, dict) and d.get("text") == token, timeout)
            out["direct"][url]["received"] = msg is not None
            out["direct"][url]["from_instance"] = msg.get("instance") if msg else None
        out["ok"] = all(d["received"] for d in out["direct"].values())
        out["steps"].append("chat from the lb client relayed to every direct client")
    except (ProbeError, OSError, ValueError, KeyError, IndexError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for c in clients:
            c.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
