"""Engine.IO server pings from shared libev timers instead of a sleeping greenlet per socket.

Why: python-engineio (checked against 4.15.1) ``Socket.schedule_ping()`` spawns a greenlet per
socket that sleeps ``ping_interval`` and then queues a PING. At any moment every idle socket owns
one such greenlet (its object, its saved C stack, a timer), and every ping cycle pays a spawn and
two switches. At 160k sockets that is 160k parked greenlets for a job a timer does alone.

Why shared: with a timer per socket, pings leave one per wake-up, spread evenly over the interval,
and each one wakes the worker, nginx and the client's process on its own; so do the pongs. With
5,000 loopback clients pinged every 5 s, perf put up to ~20% of a worker's samples at the kernel's switch
back into it. Here a ping is due at the end of a tick of ``tick_for(interval)`` (1/20 of the
interval, at most 1 s), and all sockets due in one tick share one timer, so they are written in one
wake-up and their pongs come back together. A ping is never early on the loop's clock and at most a
tick late; the client allows ``ping_interval + ping_timeout`` before it gives up. Measured
(BENCHMARKS.md, "Engine.IO pings in shared ticks"): uWSGI CPU per ping round trip 68.7-70.7 ->
22.5-27.6 us on that loopback worker, 62.3-67.5 -> ~36 us on the local cluster.

``_fire`` does what ``Socket._send_ping`` does after its sleep. It runs in the gevent hub, so it
must never block or switch: it sets ``last_ping`` to now and then calls ``send()``, whose ping-timeout
check cannot fire with that fresh ``last_ping`` (it would close the socket and run app handlers),
so all ``send()`` does is write the PING frame to the websocket (app/upstream/eio_socket.py, never
blocks) or put the packet on a polling socket's unbounded queue, which never blocks either.
"""

from __future__ import annotations

import math
import random
import time
import weakref
from typing import Any

# The tick a socket's pending ping is due at, None when none is pending. A bucket fires a socket
# only if this still names it, so a ping sent early (tests) is not sent again by its bucket.
_DUE_ATTR = "_siokit_ping_due"
TICKS_PER_INTERVAL = 20  # a ping is at most 5% of its interval late
MAX_TICK_S = 1.0

_PING: list[Any] = []  # one shared PING packet: its websocket frame is built once (ws_frame.py)


def _ping_packet() -> Any:
    if not _PING:
        from engineio import packet

        _PING.append(packet.Packet(packet.PING))
    return _PING[0]


def tick_for(interval: float) -> float:
    return min(MAX_TICK_S, interval / TICKS_PER_INTERVAL)


def _fire(sock: Any) -> None:
    setattr(sock, _DUE_ATTR, None)
    if not sock.closing and not sock.closed:
        sock.last_ping = time.time()
        sock.send(_ping_packet())


class _Buckets:
    """The sockets due for a ping in each tick of one hub's loop, and one timer per non-empty tick."""

    def __init__(self, loop: Any, tick: float) -> None:
        self.loop = loop
        self.tick = tick
        # The loop's clock is the wall clock: without an offset of its own, every worker on a host
        # would ping at the same instants, and nginx and the clients would take them all at once.
        self.phase = random.uniform(0.0, tick)
        self.due: dict[int, list[Any]] = {}

    def add(self, sock: Any, delay: float) -> None:
        now = self.loop.now()
        k = math.ceil((now + delay - self.phase) / self.tick)
        setattr(sock, _DUE_ATTR, k)
        bucket = self.due.get(k)
        if bucket is None:
            bucket = self.due[k] = []
            timer = self.loop.timer(max(0.0, k * self.tick + self.phase - now))
            timer.start(self._fire, k, timer)
        bucket.append(sock)

    def _fire(self, k: int, timer: Any) -> None:
        timer.close()
        for sock in self.due.pop(k, ()):
            if getattr(sock, _DUE_ATTR, None) == k:
                _fire(sock)


# Per hub (one per thread) and tick, so servers with different intervals keep their own precision.
_buckets: weakref.WeakKeyDictionary[Any, dict[float, _Buckets]] = weakref.WeakKeyDictionary()


def _buckets_for(interval: float) -> _Buckets:
    from gevent import get_hub

    hub = get_hub()
    per_tick = _buckets.get(hub)
    if per_tick is None:
        per_tick = _buckets[hub] = {}
    tick = tick_for(interval)
    found = per_tick.get(tick)
    if found is None:
        found = per_tick[tick] = _Buckets(hub.loop, tick)
    return found


def schedule_ping(sock: Any) -> None:
    """Drop-in for engineio.socket.Socket.schedule_ping under gevent."""
    # Only schedule a new ping if the previous ping wait cycle completed (as upstream).
    if sock.last_ping:
        sock.last_ping = None
        interval = sock.server.ping_interval
        _buckets_for(interval).add(sock, interval)


def install() -> None:
    """Patch engineio's synchronous Socket (used by the gevent and gevent_uwsgi modes)."""
    from engineio import socket

    socket.Socket.schedule_ping = schedule_ping  # type: ignore[method-assign]
