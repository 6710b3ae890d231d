"""Engine.IO server pings from a libev timer instead of a sleeping greenlet per socket.

Why: python-engineio (checked against 4.15.1) ``Socket.schedule_ping()`` spawns a greenlet per
socket that sleeps ``ping_interval`` and then queues a PING. At any moment every idle socket owns
one such greenlet (its object, its saved C stack, a timer), and every ping cycle pays a spawn and
two switches. At 160k sockets that is 160k parked greenlets for a job a timer does alone.

``_fire`` does what ``Socket._send_ping`` does after its sleep. It runs in the gevent hub, so it
must never block or switch: it sets ``last_ping`` to now and then calls ``send()``, whose ping-timeout
check cannot fire with that fresh ``last_ping`` (it would close the socket and run app handlers),
so all ``send()`` does is write the PING frame to the websocket (app/upstream/eio_socket.py, never
blocks) or put the packet on a polling socket's unbounded queue, which never blocks either.
"""

from __future__ import annotations

import time
from typing import Any

_TIMER_ATTR = "_siokit_ping_timer"


_PING: list[Any] = []  # one shared PING packet: its websocket frame is built once (ws_frame.py)


def _ping_packet() -> Any:
    if not _PING:
        from engineio import packet

        _PING.append(packet.Packet(packet.PING))
    return _PING[0]


def _fire(sock: Any) -> None:
    timer = getattr(sock, _TIMER_ATTR, None)
    if timer is not None:
        timer.close()
        setattr(sock, _TIMER_ATTR, None)
    if not sock.closing and not sock.closed:
        sock.last_ping = time.time()
        sock.send(_ping_packet())


def schedule_ping(sock: Any) -> None:
    """Drop-in for engineio.socket.Socket.schedule_ping under gevent."""
    from gevent import get_hub

    # Only schedule a new ping if the previous ping wait cycle completed (as upstream).
    if sock.last_ping:
        sock.last_ping = None
        timer = get_hub().loop.timer(sock.server.ping_interval)
        setattr(sock, _TIMER_ATTR, timer)
        timer.start(_fire, sock)


def install() -> None:
    """Patch engineio's synchronous Socket (used by the gevent and gevent_uwsgi modes)."""
    from engineio import socket

    socket.Socket.schedule_ping = schedule_ping  # type: ignore[method-assign]
