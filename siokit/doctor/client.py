"""Client-side probes through the public URL: what a browser would meet.

Raw Engine.IO v4 over http.client and the `websockets` library (both already the kit's runtime), so
the probe sees status codes and transports exactly, with no client library hiding a fallback to
long-polling.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from siokit.doctor import FAIL, PASS, Check

PATH = "/socket.io/"
TIMEOUT = 10.0
FOREIGN_ORIGIN = "https://doctor-foreign-origin.invalid"


@dataclass(frozen=True)
class Handshake:
    sid: str
    ping_interval_s: float
    ping_timeout_s: float
    max_payload: int


class Public:
    """The deployment's public URL, and the raw requests the probes make through it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url must be http(s)://host[:port], got {url!r}")
        self.url = url.rstrip("/")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        # What a browser sends (RFC 6454): no default port, and the same host:port that http.client
        # and websockets put in Host. python-engineio compares Origin with scheme://Host, so
        # "http://lb:80" against Host "lb" was refused (seen on the Vagrant VMs, --url http://lb:80).
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.netloc = host if self.port == (443 if self.tls else 80) else f"{host}:{self.port}"
        self.origin = f"{parts.scheme}://{self.netloc}"

    def request(
        self, method: str, query: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        cls = http.client.HTTPSConnection if self.tls else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=TIMEOUT)
        try:
            conn.request(
                method,
                f"{PATH}?EIO=4&{query}",
                body=body,
                headers={"Content-Type": "text/plain;charset=UTF-8", **(headers or {})},
            )
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def handshake(self, headers: dict[str, str] | None = None) -> Handshake:
        status, body = self.request("GET", "transport=polling", headers=headers)
        if status != 200 or not body.startswith("0"):
            raise RuntimeError(f"polling handshake answered {status}: {body[:200]!r}")
        data = json.loads(body[1:])
        return Handshake(
            data["sid"], data["pingInterval"] / 1000, data["pingTimeout"] / 1000, int(data.get("maxPayload", 0))
        )

    def websocket(self, query: str) -> ClientConnection:
        scheme = "wss" if self.tls else "ws"
        return connect(
            f"{scheme}://{self.netloc}{PATH}?EIO=4&{query}",
            open_timeout=TIMEOUT,
            origin=Origin(self.origin),
            compression=None,
        )


def _recv_until(ws: ClientConnection, want: str, deadline: float) -> str:
    """Next text frame starting with `want`, answering the server's pings meanwhile."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {want!r} frame within {TIMEOUT:g} s")
        msg = ws.recv(timeout=left)
        if isinstance(msg, bytes):
            continue
        if msg == "2":
            ws.send("3")
            continue
        if msg.startswith(want):
            return msg


def check_upgrade(pub: Public) -> Check:
    """Polling handshake, then the websocket upgrade as the JS client does it (probe, then upgrade)."""
    name = "websocket upgrade"
    fix = (
        "proxy /socket.io with proxy_http_version 1.1 and the Upgrade/Connection headers; "
        "build uWSGI with SSL (unbit/uwsgi#744)"
    )
    hs = pub.handshake(headers={"Origin": pub.origin})
    try:
        ws = pub.websocket(f"transport=websocket&sid={hs.sid}")
    except InvalidStatus as exc:
        return Check(name, FAIL, f"the upgrade request got HTTP {exc.response.status_code}, not 101", fix)
    except (InvalidHandshake, TimeoutError) as exc:  # e.g. an answer that is no handshake at all
        return Check(name, FAIL, f"the upgrade request got no 101: {type(exc).__name__}: {exc}", fix)
    with ws:
        deadline = time.monotonic() + TIMEOUT
        try:
            ws.send("2probe")
            _recv_until(ws, "3probe", deadline)
            ws.send("5")
            ws.send("40")
            _recv_until(ws, "40", deadline)
        except (TimeoutError, ConnectionClosed) as exc:
            return Check(name, FAIL, f"101, but the upgrade did not complete: {type(exc).__name__}: {exc}", fix)
    return Check(name, PASS, "101 Switching Protocols; probe answered; upgraded from polling to websocket")


def check_sticky_polling(pub: Public, rounds: int = 10) -> Check:
    """One long-polling session: every request must reach the instance that owns the session."""
    name = "sticky polling"
    hs = pub.handshake(headers={"Origin": pub.origin})
    q = f"transport=polling&sid={hs.sid}"

    def call(method: str, body: str | None = None) -> tuple[int, str]:
        # A GET that reaches the owner while the event it waits for went elsewhere is a long poll
        # with nothing to answer: it hangs until the ping interval, and is a finding, not a crash.
        try:
            return pub.request(method, q, body, {"Origin": pub.origin})
        except (TimeoutError, OSError) as exc:
            return 0, f"no answer within {TIMEOUT:g} s ({type(exc).__name__})"

    statuses: list[tuple[int, str]] = [call("POST", "40"), call("GET")]
    for i in range(rounds):
        statuses += [call("POST", f'42{i}["whoami"]'), call("GET")]
        if statuses[-1][0] == 0:
            break  # each further hang costs another TIMEOUT
    bad = [(s, b[:60]) for s, b in statuses if s != 200]
    if bad:
        return Check(
            name,
            FAIL,
            f"{len(bad)} of {len(statuses)} requests on one session failed: {bad[:3]}",
            "long-polling needs a sticky upstream: nginx_balance ip_hash or hash_remote_addr "
            "(Flask-SocketIO #671, #439)",
        )
    return Check(name, PASS, f"{len(statuses)} requests on one session id, none refused")


def check_origins(pub: Public) -> Check:
    name = "allowed origins"
    own, _ = pub.request("GET", "transport=polling", headers={"Origin": pub.origin})
    foreign, _ = pub.request("GET", "transport=polling", headers={"Origin": FOREIGN_ORIGIN})
    measured = f"Origin {pub.origin}: HTTP {own}; Origin {FOREIGN_ORIGIN}: HTTP {foreign}"
    if own != 200:
        return Check(
            name,
            FAIL,
            measured,
            "add the public URL to app_cors_origins, and pass nginx's Host "
            "and X-Forwarded-Proto upstream (Flask-SocketIO #1319, #1406)",
        )
    if foreign == 200:
        return Check(name, FAIL, measured, "app_cors_origins must list your public origins, not '*'")
    return Check(name, PASS, measured)


def open_listener(pub: Public) -> tuple[ClientConnection, str]:
    """A websocket client connected to "/", and its Socket.IO sid (its personal room)."""
    ws = pub.websocket("transport=websocket")
    deadline = time.monotonic() + TIMEOUT
    _recv_until(ws, "0", deadline)
    ws.send("40")
    connected = _recv_until(ws, "40", deadline)
    return ws, json.loads(connected[2:])["sid"]


def wait_event(ws: ClientConnection, event: str, timeout: float = TIMEOUT) -> list[object] | None:
    deadline = time.monotonic() + timeout
    try:
        while True:
            frame = _recv_until(ws, "42", deadline)
            data = json.loads(frame[2:])
            if data and data[0] == event:
                return list(data[1:])
    except TimeoutError:
        return None
