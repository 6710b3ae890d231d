"""The default namespace "/": a chat with rooms, plus echo/ping for latency measurement."""

from __future__ import annotations

import time
from typing import Any

from flask_socketio import ConnectionRefusedError, join_room, leave_room, rooms, send

from app.events.base import SiokitNamespace
from app.rooms import PayloadError, check_nickname, check_room_name, require_dict, require_text

MAX_TEXT_LEN = 2_000


class ChatNamespace(SiokitNamespace):
    """Events of "/". Every client event returns a dict, sent back as the ack."""

    def on_connect(self, auth: Any = None) -> None:
        try:
            nickname = check_nickname(auth)
        except PayloadError as exc:
            raise ConnectionRefusedError(str(exc)) from None
        self.remember(nickname)
        # No emit here: an event sent from the connect handler can reach the client before the
        # CONNECT ack, and some clients drop it. Clients ask with `whoami` instead.

    def on_whoami(self, data: Any = None) -> dict[str, Any]:
        return {"ok": True, "sid": self.sid, "nickname": self.nickname(), **self.stamp()}

    def on_disconnect(self, reason: Any = None) -> None:
        self.forget(reason)

    def on_join(self, data: Any = None) -> dict[str, Any]:
        room = check_room_name(require_dict(data, "join").get("room"))
        join_room(room)
        return {"ok": True, "room": room}

    def on_leave(self, data: Any = None) -> dict[str, Any]:
        room = check_room_name(require_dict(data, "leave").get("room"))
        leave_room(room)
        return {"ok": True, "room": room}

    def on_rooms(self, data: Any = None) -> dict[str, Any]:
        # The personal sid room is an implementation detail; list only rooms the client joined.
        return {"ok": True, "rooms": sorted(r for r in rooms() if r != self.sid)}

    def on_room_message(self, data: Any = None) -> dict[str, Any]:
        payload = require_dict(data, "room_message")
        room = check_room_name(payload.get("room"))
        text = require_text(payload, "text", MAX_TEXT_LEN)
        # Knowing a room's name is not enough to talk in it: the sender must have joined it.
        if room not in rooms():
            raise PayloadError(f"join room {room!r} before sending to it")
        message = {"room": room, "nickname": self.nickname(), "text": text, **self.stamp()}
        self.state.socketio.emit("room_message", message, to=room, skip_sid=self.sid, namespace="/")
        return {"ok": True, "sent_at": message["server_time"]}

    def on_chat(self, data: Any = None) -> dict[str, Any]:
        text = require_text(require_dict(data, "chat"), "text", MAX_TEXT_LEN)
        if (refused := self.fanout_refused()) is not None:
            return refused
        message = {"nickname": self.nickname(), "text": text, **self.stamp()}
        self.state.socketio.emit("chat", message, skip_sid=self.sid, namespace="/")
        return {"ok": True, "sent_at": message["server_time"]}

    def on_echo(self, data: Any = None) -> dict[str, Any]:
        return {
            "ok": True,
            "data": data,
            "server_time": time.time(),
            "instance": self.state.config.instance_id,
        }

    # One handler for both names: load generators use either.
    on_ping = on_echo

    def on_message(self, data: Any = None) -> dict[str, Any]:
        send(data)
        return {"ok": True}

    def on_json(self, data: Any = None) -> dict[str, Any]:
        send(data, json=True)
        return {"ok": True}
