"""Engine.IO v4 / Socket.IO v5 text framing: encode and parse, nothing else.

Written directly instead of using python-socketio's client because the library client costs far
more memory per connection than the load generator can afford at 160k sockets. Measured at 5,000
idle websocket clients (docs/loadgen.md, bench/memprobes.sh): python-socketio ``AsyncClient``
32.0 KB/client, Locust ``SocketIOUser`` 42.0 KB/client, this framing on `websockets` 13.7 KB/client
(`websockets` alone 11.4 KB).
Only the text protocol is implemented: binary packets (types 5/6) are parsed as "unsupported"
and ignored by the client, which never sends binary.

Engine.IO packet: one type digit + payload. ``0`` open (JSON handshake), ``1`` close, ``2`` ping,
``3`` pong, ``4`` message, ``5`` upgrade, ``6`` noop. Polling payloads join packets with ``\\x1e``.

Socket.IO packet (inside an Engine.IO ``4``): type digit, optional ``/namespace,``, optional
ack id digits, optional JSON data. ``0`` connect, ``1`` disconnect, ``2`` event, ``3`` ack,
``4`` connect_error, ``5`` binary event, ``6`` binary ack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

EIO_OPEN = "0"
EIO_CLOSE = "1"
EIO_PING = "2"
EIO_PONG = "3"
EIO_MESSAGE = "4"
EIO_UPGRADE = "5"
EIO_NOOP = "6"
EIO_TYPES = frozenset("0123456")

SIO_CONNECT = 0
SIO_DISCONNECT = 1
SIO_EVENT = 2
SIO_ACK = 3
SIO_CONNECT_ERROR = 4
SIO_BINARY_EVENT = 5
SIO_BINARY_ACK = 6

RECORD_SEPARATOR = "\x1e"

_json_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_json_loads = json.loads


class ProtocolError(ValueError):
    """A packet that does not follow Engine.IO v4 / Socket.IO v5."""


@dataclass(frozen=True, slots=True)
class Handshake:
    sid: str
    ping_interval: float  # seconds
    ping_timeout: float  # seconds
    upgrades: tuple[str, ...]
    max_payload: int


@dataclass(frozen=True, slots=True)
class SioPacket:
    type: int
    namespace: str
    ack_id: int | None
    data: Any


def parse_eio(text: str) -> tuple[str, str]:
    """Split an Engine.IO text packet into (type, payload). Raises ProtocolError."""
    if not isinstance(text, str) or not text:
        raise ProtocolError("empty engine.io packet")
    kind = text[0]
    if kind not in EIO_TYPES:
        raise ProtocolError(f"unknown engine.io packet type {kind!r}")
    return kind, text[1:]


def parse_handshake(payload: str) -> Handshake:
    """Parse the JSON body of an Engine.IO ``0`` open packet."""
    try:
        obj = _json_loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"bad open packet: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("open packet is not a JSON object")
    sid = obj.get("sid")
    interval = obj.get("pingInterval", 25000)
    timeout = obj.get("pingTimeout", 20000)
    upgrades = obj.get("upgrades", [])
    max_payload = obj.get("maxPayload", 1_000_000)
    if not isinstance(sid, str) or not sid:
        raise ProtocolError("open packet has no sid")
    for name, value in (("pingInterval", interval), ("pingTimeout", timeout), ("maxPayload", max_payload)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ProtocolError(f"open packet has a bad {name}")
    if not isinstance(upgrades, list) or not all(isinstance(u, str) for u in upgrades):
        raise ProtocolError("open packet has bad upgrades")
    return Handshake(sid, interval / 1000.0, timeout / 1000.0, tuple(upgrades), int(max_payload))


def parse_sio(payload: str) -> SioPacket:
    """Parse a Socket.IO packet (the payload of an Engine.IO ``4`` message). Raises ProtocolError."""
    if not payload:
        raise ProtocolError("empty socket.io packet")
    kind = payload[0]
    if kind < "0" or kind > "6":
        raise ProtocolError(f"unknown socket.io packet type {kind!r}")
    ptype = ord(kind) - 48
    pos = 1
    n = len(payload)
    if ptype in (SIO_BINARY_EVENT, SIO_BINARY_ACK):
        dash = payload.find("-", pos)
        if dash < 0 or not payload[pos:dash].isdigit():
            raise ProtocolError("binary packet without attachment count")
        pos = dash + 1
    namespace = "/"
    if pos < n and payload[pos] == "/":
        comma = payload.find(",", pos)
        if comma < 0:
            namespace, pos = payload[pos:], n
        else:
            namespace, pos = payload[pos:comma], comma + 1
    ack_id: int | None = None
    start = pos
    while pos < n and "0" <= payload[pos] <= "9":
        pos += 1
    if pos > start:
        if pos - start > 18:
            raise ProtocolError("ack id too long")
        ack_id = int(payload[start:pos])
    data: Any = None
    if pos < n:
        try:
            data = _json_loads(payload[pos:])
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"bad socket.io JSON: {exc}") from None
    if ptype in (SIO_EVENT, SIO_BINARY_EVENT) and (
        not isinstance(data, list) or not data or not isinstance(data[0], str)
    ):
        raise ProtocolError("event without a name")
    if ptype in (SIO_ACK, SIO_BINARY_ACK) and (ack_id is None or not isinstance(data, list)):
        raise ProtocolError("ack without id or argument list")
    return SioPacket(ptype, namespace, ack_id, data)


def _ns_prefix(namespace: str) -> str:
    if not namespace or namespace == "/":
        return ""
    if not namespace.startswith("/"):
        namespace = "/" + namespace
    return namespace + ","


def encode_connect(namespace: str = "/", auth: Any = None) -> str:
    """Engine.IO message carrying a Socket.IO CONNECT: ``40``, ``40/ns,``, ``40{"token":..}``."""
    body = "" if auth is None else _json_dumps(auth)
    return "40" + _ns_prefix(namespace) + body


def encode_event(namespace: str, event: str, *args: Any, ack_id: int | None = None) -> str:
    """Engine.IO message carrying a Socket.IO EVENT: ``42/ns,<id>["event",...]``."""
    ident = "" if ack_id is None else str(ack_id)
    return "42" + _ns_prefix(namespace) + ident + _json_dumps([event, *args])


def encode_ack(namespace: str, ack_id: int, *args: Any) -> str:
    """Engine.IO message carrying a Socket.IO ACK: ``43/ns,<id>[...]``."""
    return "43" + _ns_prefix(namespace) + str(ack_id) + _json_dumps(list(args))


def encode_disconnect(namespace: str = "/") -> str:
    return "41" + _ns_prefix(namespace)


def split_payload(body: str) -> list[str]:
    """Split an Engine.IO v4 polling payload (packets joined by ``\\x1e``)."""
    return [p for p in body.split(RECORD_SEPARATOR) if p]


def join_payload(packets: list[str]) -> str:
    return RECORD_SEPARATOR.join(packets)


def namespace_matches(packet_ns: str, namespace: str) -> bool:
    want = namespace if namespace.startswith("/") else "/" + namespace
    return packet_ns == want
