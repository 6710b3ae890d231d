"""A room-message probe beside the load: a few Socket.IO clients in one room, one of them sending
`room_message` at a steady rate, every receiver recording what reached it.

The load generator counts broadcasts but joins no rooms; rooms are the other delivery path that
crosses instances through Redis, so a drill counts both.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import socketio


@dataclass
class ProbeLog:
    sent: dict[int, float] = field(default_factory=dict)  # seq -> wall time of the emit
    received: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # seq -> receivers
    receivers: int = 0
    connects: int = 0  # of all probe clients, first connects included
    join_failures: int = 0

    def first_full_after(self, t: float) -> float | None:
        """Send time of the first message sent at or after `t` that reached every receiver."""
        full = [ts for s, ts in self.sent.items() if ts >= t and self.received.get(s, 0) >= self.receivers]
        return min(full) if full else None

    def in_window(self, start: float, end: float) -> tuple[int, int, int]:
        """(sent, expected deliveries, deliveries) of the messages sent in [start, end]."""
        seqs = [s for s, t in self.sent.items() if start <= t <= end]
        return len(seqs), len(seqs) * self.receivers, sum(self.received.get(s, 0) for s in seqs)


class RoomProbe:
    """`receivers` clients join `room`; one more sends every `every` s until stop()."""

    def __init__(self, url: str, receivers: int = 6, every: float = 0.5, room: str = "drill") -> None:
        self.url, self.room, self.every = url, room, every
        self.log = ProbeLog(receivers=receivers)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients = [self._client(i) for i in range(receivers + 1)]
        self._thread = threading.Thread(target=self._send_loop, daemon=True)

    def _client(self, index: int) -> socketio.Client:
        sio = socketio.Client(reconnection=True, reconnection_delay=0.5, reconnection_delay_max=5)
        # A reconnected client is a new session with no rooms: join again on every connect.
        sio.on("connect", lambda: sio.start_background_task(self._join, sio))
        if index > 0:
            sio.on("room_message", self._on_message)
        return sio

    def _join(self, sio: socketio.Client) -> None:
        with self._lock:
            self.log.connects += 1
        try:
            sio.call("join", {"room": self.room}, timeout=10)
        except Exception:
            with self._lock:
                self.log.join_failures += 1

    def _on_message(self, data: Any) -> None:
        try:
            seq = int(str(data.get("text", "")).split("#", 1)[1])
        except (AttributeError, IndexError, ValueError):
            return
        with self._lock:
            self.log.received[seq] += 1

    def _send_loop(self) -> None:
        sender, seq = self._clients[0], 0
        while not self._stop.wait(self.every):
            seq += 1
            self.log.sent[seq] = time.time()
            with contextlib.suppress(Exception):
                sender.emit("room_message", {"room": self.room, "text": f"drill #{seq}"})

    def start(self) -> None:
        try:
            for sio in self._clients:
                sio.connect(self.url, transports=["websocket"], wait_timeout=10)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"the room probe could not connect to {self.url}: {exc!r}") from exc
        time.sleep(1.0)  # the joins
        self._thread.start()

    def stop(self) -> ProbeLog:
        self._stop.set()
        if self._thread.ident is not None:  # not started when a connect failed
            self._thread.join(timeout=5)
        time.sleep(1.0)  # the last messages in flight
        for sio in self._clients:
            with contextlib.suppress(Exception):
                sio.disconnect()
        return self.log
