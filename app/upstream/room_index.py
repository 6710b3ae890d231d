"""python-socketio's client manager with a reverse index, so a disconnect costs O(its rooms).

Why: python-socketio (checked against 5.18.1) ``BaseManager.basic_disconnect()`` copies the whole
room table of the namespace and tests the leaving sid against every room, and ``get_rooms()`` scans
it too. Every client has a personal room, so each disconnect costs O(clients on the instance) and a
mass disconnect O(n^2). Measured on the local cluster after a 160k run: ~16k sockets per uWSGI
instance closed at ~13 per second per instance, both cores busy for minutes, pings unanswered and
more clients dropped. This keeps ``(namespace, sid) -> rooms`` beside upstream's table and leaves
every other behaviour (and the Redis pub/sub) to upstream.
"""

from __future__ import annotations

from typing import Any

import socketio

from app.upstream.paced_fanout import PacedManager

_Key = tuple[str, str]


class RoomIndexMixin:
    """Mix in before a python-socketio Manager; keeps ``_sid_rooms`` in step with ``rooms``."""

    rooms: dict[str, dict[Any, Any]]
    callbacks: dict[str, Any]
    pending_connect: dict[str, list[str]]
    pending_disconnect: dict[str, list[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # dict as an ordered set: rooms in the order the client entered them
        self._sid_rooms: dict[_Key, dict[Any, None]] = {}
        # A pre-bound prometheus Counter (or anything with inc(n)), set by the app; None = not counted.
        self.delivered: Any = None

    def _count_delivery(self, namespace: Any, room: Any, skip_sid: Any) -> None:
        """Count one local emit's recipients with one inc(), never a step per recipient.

        The room's size minus the skipped sids in it; for a list of rooms the sum of their sizes
        (an upper bound when a client is in several of them).
        """
        if self.delivered is None:
            return
        ns = self.rooms.get(namespace)
        if not ns:
            return
        rooms = room if isinstance(room, list | tuple) else [room]
        skips = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        count = 0
        for r in rooms:
            members = ns.get(r)
            if members:
                count += len(members) - sum(1 for s in skips if s is not None and s in members)
        if count > 0:
            self.delivered.inc(count)

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: str | None = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        self._sid_rooms.setdefault((namespace, sid), {})[room] = None

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        rooms = self._sid_rooms.get((namespace, sid))
        if rooms is not None:
            rooms.pop(room, None)
            if not rooms:
                del self._sid_rooms[(namespace, sid)]

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        return [room for room in self._sid_rooms.get((namespace, sid), ()) if room is not None]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        # Upstream's basic_disconnect, with the scan of every room replaced by the index.
        if namespace not in self.rooms:
            return
        for room in list(self._sid_rooms.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]


class IndexedManager(RoomIndexMixin, PacedManager):
    """A single instance, no message queue."""

    def emit(self, event: Any, data: Any, namespace: Any, *args: Any, **kwargs: Any) -> None:
        super().emit(event, data, namespace, *args, **kwargs)
        room = kwargs.get("to") or (args[0] if args else kwargs.get("room"))
        skip_sid = args[1] if len(args) > 1 else kwargs.get("skip_sid")
        self._count_delivery(namespace, room, skip_sid)


class IndexedRedisManager(RoomIndexMixin, socketio.RedisManager, PacedManager):
    """Instances joined through Redis pub/sub (what Flask-SocketIO builds for a redis:// queue).

    PacedManager comes after PubSubManager in the MRO, so what the queue relays is delivered by it.
    """

    def _handle_emit(self, message: dict[str, Any]) -> None:
        # Local delivery of an emit heard on the queue (emit() itself only publishes).
        super()._handle_emit(message)
        self._count_delivery(message.get("namespace"), message.get("room"), message.get("skip_sid"))


def client_manager(message_queue: str | None, indexed: bool = True) -> socketio.Manager:
    """The manager Flask-SocketIO would build for this queue URL, with the room index unless
    `indexed` is False (the version guard's fallback: upstream's own class)."""
    if message_queue is None:
        return IndexedManager() if indexed else socketio.Manager()
    # Flask-SocketIO's own defaults for an app-bound server: its channel name, not write-only.
    cls = IndexedRedisManager if indexed else socketio.RedisManager
    return cls(message_queue, channel="flask-socketio", write_only=False)
