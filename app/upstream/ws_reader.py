"""Client-to-server websocket frames (RFC 6455) into messages, for reading in the gevent hub.

Why the kit reads: uWSGI 2.0's ``websocket_recv_nb()`` needs the request's own greenlet (no
cross-greenlet request context before 2.1), so every Engine.IO pong woke a socket's request greenlet
only to be read, parsed and dropped: ~40% of a worker's busy samples in a py-spy of idle pings
(BENCHMARKS.md, fanout-5k-pings-pyspy-2026-12-05). Read here, a pong never leaves the hub.

Two paths, one result:
- a read of whole small frames (masked, FIN, text or binary, payload < 126 bytes) is cut and
  unmasked here, without per-socket state: a pong, a chat line, an ack;
- anything else (fragments, long lengths, control frames, a frame split across reads, bad input)
  goes to wsproto's ``FrameProtocol`` (pinned; the library built for this), which keeps its state
  until it is idle again and is then dropped, so an idle socket carries none.
Measured on a pong frame (2026-12-05, timeit, 20,000 calls): 1.7 us through ``parse()`` here,
15.2 us through a ``FrameProtocol`` kept for the socket, 19.5 us with a new one.

Bounded: a message (all its fragments) longer than ``max_size`` bytes raises ``ProtocolError``
(close code 1009) as soon as its length is known, before it is buffered.
"""

from __future__ import annotations

import struct
from typing import Any

from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA
_SMALL = 126  # payloads below this have a 7-bit length: the fast path's frames


class ProtocolError(Exception):
    """The client broke RFC 6455 or the size bound; close the connection with `code`."""

    def __init__(self, message: str, code: int = 1002) -> None:
        super().__init__(message)
        self.code = code


class Partial:
    """A socket's reading state between reads: wsproto's parser and the message so far."""

    __slots__ = ("opcode", "parts", "proto", "size")

    def __init__(self) -> None:
        self.proto = FrameProtocol(client=False, extensions=[])
        self.parts: list[Any] = []
        self.size = 0
        self.opcode = 0

    def idle(self) -> bool:
        # wsproto 1.3.2 internals (constraints.txt pins it; versions.py checks it): no header
        # half-read, no bytes buffered, no fragmented message open.
        decoder = self.proto._frame_decoder
        return (
            decoder.header is None
            and not len(decoder.buffer)
            and self.proto._message_decoder.opcode is None
            and not self.parts
        )


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


def _fast(data: bytes, out: list[tuple[int, Any]]) -> int:
    """Append the whole small data frames at the start of `data`; return the bytes they took."""
    pos = 0
    end = len(data)
    while end - pos >= 6:
        b0 = data[pos]
        b1 = data[pos + 1]
        n = b1 & 0x7F
        if b0 not in (0x81, 0x82) or not b1 & 0x80 or n >= _SMALL or pos + 6 + n > end:
            break
        payload = _unmask(data[pos + 6 : pos + 6 + n], data[pos + 2 : pos + 6])
        if b0 == 0x81:
            try:
                out.append((TEXT, payload.decode("utf-8")))
            except UnicodeDecodeError:
                break  # wsproto raises the proper error (1007)
        else:
            out.append((BINARY, payload))
        pos += 6 + n
    return pos


def _general(data: bytes, partial: Partial, max_size: int, out: list[tuple[int, Any]]) -> None:
    partial.proto.receive_bytes(data)
    try:
        for frame in partial.proto.received_frames():
            opcode = frame.opcode
            payload: Any = frame.payload  # (code, reason) for CLOSE, str for TEXT, else bytes
            if opcode is Opcode.CLOSE:
                out.append((CLOSE, int(payload[0])))
                return
            if opcode.iscontrol():
                out.append((int(opcode), bytes(payload)))
                continue
            # wsproto's MessageDecoder gives every fragment its message's opcode (TEXT or BINARY).
            partial.opcode = int(opcode)
            partial.size += len(frame.payload)
            if partial.size > max_size:
                raise ProtocolError(f"message over {max_size} bytes", CloseReason.MESSAGE_TOO_BIG)
            partial.parts.append(frame.payload)
            if frame.message_finished:
                parts = partial.parts
                joined: Any = "".join(parts) if partial.opcode == TEXT else b"".join(parts)
                out.append((partial.opcode, joined))
                partial.parts = []
                partial.size = 0
            elif not frame.frame_finished:
                # A frame whose length is known and whose payload is still arriving: refuse it now,
                # not after max_size bytes of it have been buffered.
                decoder = partial.proto._frame_decoder
                header = decoder.header
                if header is not None and partial.size - decoder.payload_consumed + header.payload_len > max_size:
                    raise ProtocolError(f"message over {max_size} bytes", CloseReason.MESSAGE_TOO_BIG)
    except ParseFailed as e:
        raise ProtocolError(str(e), int(e.code)) from None


def parse(data: bytes, partial: Partial | None, max_size: int) -> tuple[list[tuple[int, Any]], Partial | None]:
    """Messages in `data` after what `partial` holds: ([(opcode, payload)], the state to keep).

    TEXT payloads are str, BINARY/PING/PONG bytes, CLOSE the close code. Raises ProtocolError.
    """
    out: list[tuple[int, Any]] = []
    if partial is None:
        used = _fast(data, out)
        if used == len(data):
            return out, None
        data = data[used:]
        partial = Partial()
    _general(data, partial, max_size, out)
    return out, (None if partial.idle() else partial)


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A server's (unmasked) control frame: a PONG echoing a PING, or a CLOSE."""
    return struct.pack("!BB", 0x80 | opcode, len(payload)) + payload[:125]


def close_frame(code: int) -> bytes:
    return control_frame(CLOSE, struct.pack("!H", code))
