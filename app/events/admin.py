"""The "/admin" namespace: token-protected operations on namespace "/"."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from flask_socketio import ConnectionRefusedError

from app.events.base import SiokitNamespace
from app.events.chat import MAX_TEXT_LEN
from app.rooms import PayloadError, require_dict

log = logging.getLogger(__name__)


class AdminNamespace(SiokitNamespace):
    def on_connect(self, auth: Any = None) -> None:
        secret = self.state.config.admin_secret
        token = auth.get("token") if isinstance(auth, dict) else None
        # No secret configured means no admin at all, not "any token goes".
        if (
            not secret
            or not isinstance(token, str)
            or not hmac.compare_digest(token.encode("utf-8"), secret.encode("utf-8"))
        ):
            self.state.metrics.refused.labels(namespace=self.namespace).inc()
            log.warning("refused /admin connection from %s", self.sid)
            raise ConnectionRefusedError("unauthorized")
        self.remember("admin")

    def on_disconnect(self, reason: Any = None) -> None:
        self.forget(reason)

    def on_broadcast(self, data: Any = None) -> dict[str, Any]:
        payload = require_dict({} if data is None else data, "broadcast")
        text = payload.get("text", "")
        if not isinstance(text, str) or len(text) > MAX_TEXT_LEN:
            raise PayloadError(f"'text' must be a string of at most {MAX_TEXT_LEN} characters")
        seq = payload.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int | float | str)):
            raise PayloadError("'seq' must be a number or a string")
        # Stamped right before the emit: the load generator measures fan-out latency from it.
        message = {"seq": seq, "text": text, "sent_at": time.time()}
        # socketio.emit without `to` reaches every client of "/", on every instance when a
        # message queue is configured (the pub/sub manager relays it).
        self.state.socketio.emit("broadcast", message, namespace="/")
        return {"ok": True, "sent_at": message["sent_at"]}

    def on_close_room(self, data: Any = None) -> dict[str, Any]:
        room = require_dict(data, "close_room").get("room")
        if not isinstance(room, str) or not room:
            raise PayloadError("'room' must be a non-empty string")
        self.state.socketio.close_room(room, namespace="/")
        return {"ok": True, "room": room}

    def on_counts(self, data: Any = None) -> dict[str, Any]:
        return {"ok": True, **instance_counts(self.state)}


def instance_counts(state: Any) -> dict[str, Any]:
    """Live sockets per namespace and user rooms (personal sid rooms excluded) of this instance."""
    manager = state.socketio.server.manager
    room_counts: dict[str, dict[str, int]] = {}
    for namespace, ns_rooms in manager.rooms.items():
        connected = ns_rooms.get(None, {})
        room_counts[namespace] = {
            str(name): len(members) for name, members in ns_rooms.items() if name is not None and name not in connected
        }
    return {
        "instance": state.config.instance_id,
        "sockets": state.metrics.sockets(),
        "rooms": room_counts,
    }
