"""Server-to-client websocket frames, built once per Engine.IO packet and shared by every recipient.

Why our own: uWSGI builds its frame inside ``websocket_send()`` (core/websockets.c,
``uwsgi_websocket_message``, 2.0.31) once per call and per recipient, and only from the request's
own greenlet. A server frame (RFC 6455 5.2) is unmasked: one byte FIN+opcode, a 7-, 16- or 64-bit
length, the payload. That is all that is needed to write the same bytes to many sockets.
"""

from __future__ import annotations

import struct
from typing import Any

TEXT = 0x81  # FIN + text
BINARY = 0x82  # FIN + binary
_FRAME_ATTR = "_siokit_frame"


def server_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", opcode, n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", opcode, 126, n)
    else:
        header = struct.pack("!BBQ", opcode, 127, n)
    return header + payload


def frame_for(pkt: Any) -> bytes:
    """The websocket frame of an engineio Packet, cached on the packet.

    python-socketio's Manager.emit (5.18.1) builds one engineio Packet per emit and hands it to
    every recipient, and engineio's Packet.encode() caches its own encoding (``encode_cache``), so
    caching the frame beside it makes the Socket.IO, Engine.IO and websocket encodings once per emit.
    """
    frame: bytes | None = pkt.__dict__.get(_FRAME_ATTR)
    if frame is None:
        encoded = pkt.encode()
        if isinstance(encoded, str):
            frame = server_frame(encoded.encode("utf-8"), TEXT)
        else:
            frame = server_frame(bytes(encoded), BINARY)
        setattr(pkt, _FRAME_ATTR, frame)
    return frame
