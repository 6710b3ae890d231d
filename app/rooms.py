"""Who may join which room, and the payload checks shared by the namespaces.

Rule: a client may join any room whose name is 1-64 printable characters, except
- names that start with a server-reserved prefix (``private:``, ``admin:``, ``server:``), and
- names shaped like a Socket.IO sid (20 characters of ``[A-Za-z0-9_-]``), since every client has a
  personal room named by its sid: joining it would let a client read another client's messages.
  The check is by shape, not by "is that sid connected here", because with a message queue the
  victim may be connected to another instance that this one knows nothing about.
Closing rooms is reserved to /admin.
"""

from __future__ import annotations

import re
from typing import Any

RESERVED_PREFIXES = ("private:", "admin:", "server:")
MAX_ROOM_LEN = 64
MAX_NICKNAME_LEN = 32
_SID_SHAPE = re.compile(r"[A-Za-z0-9_-]{20}")


class PayloadError(ValueError):
    """The client sent a payload the event cannot use; the message goes back in the error ack."""


def error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def require_dict(data: Any, event: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise PayloadError(f"{event} expects an object payload, got {type(data).__name__}")
    return data


def require_text(data: dict[str, Any], key: str, max_len: int) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise PayloadError(f"'{key}' must be a string")
    if not value.strip():
        raise PayloadError(f"'{key}' must not be empty")
    if len(value) > max_len:
        raise PayloadError(f"'{key}' is longer than {max_len} characters")
    return value


def check_room_name(room: Any) -> str:
    """Return `room` if a client may join it, else raise PayloadError saying why."""
    if not isinstance(room, str):
        raise PayloadError("'room' must be a string")
    if not room or len(room) > MAX_ROOM_LEN or not room.isprintable() or room != room.strip():
        raise PayloadError(f"'room' must be 1-{MAX_ROOM_LEN} printable characters without edge spaces")
    if room.startswith(RESERVED_PREFIXES):
        raise PayloadError(f"room {room!r} is reserved for the server")
    if _SID_SHAPE.fullmatch(room):
        raise PayloadError("room names shaped like a client sid are reserved (personal rooms)")
    return room


def check_nickname(auth: Any) -> str | None:
    """The nickname from connect auth, or None when none was given."""
    if auth is None:
        return None
    if not isinstance(auth, dict):
        raise PayloadError("auth must be an object")
    nickname = auth.get("nickname")
    if nickname is None:
        return None
    if not isinstance(nickname, str) or not nickname.strip() or len(nickname) > MAX_NICKNAME_LEN:
        raise PayloadError(f"nickname must be a non-empty string of at most {MAX_NICKNAME_LEN} characters")
    if not nickname.isprintable():
        raise PayloadError("nickname must be printable")
    return nickname.strip()
