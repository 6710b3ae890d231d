"""Engine.IO pings from a libev timer: same schedule and packets as engineio's greenlet, none parked."""

from __future__ import annotations

import types

import gevent
import gevent.queue
from engineio import packet

from app.upstream import ping_timer


class FakeSocket:
    def __init__(self, interval: float) -> None:
        self.server = types.SimpleNamespace(ping_interval=interval, ping_timeout=5)
        self.last_ping: float | None = 1.0  # engineio sets it at connect, so the first ping is scheduled
        self.closing = False
        self.closed = False
        self.queue: gevent.queue.Queue[packet.Packet] = gevent.queue.Queue()

    def send(self, pkt: packet.Packet) -> None:
        self.queue.put(pkt)


def queued(sock: FakeSocket) -> list[int]:
    out = []
    while not sock.queue.empty():
        out.append(sock.queue.get().packet_type)
    return out


def test_ping_is_queued_after_the_interval_and_not_before() -> None:
    sock = FakeSocket(0.2)
    ping_timer.schedule_ping(sock)
    gevent.sleep(0.05)
    assert queued(sock) == []
    assert sock.last_ping is None
    gevent.sleep(0.3)
    assert queued(sock) == [packet.PING]
    assert sock.last_ping is not None


def test_no_second_timer_until_the_pong_completes_the_cycle() -> None:
    sock = FakeSocket(0.05)
    ping_timer.schedule_ping(sock)
    ping_timer.schedule_ping(sock)  # last_ping is None: a cycle is already pending
    gevent.sleep(0.2)
    assert queued(sock) == [packet.PING]
    ping_timer.schedule_ping(sock)  # the pong came: next cycle
    gevent.sleep(0.2)
    assert queued(sock) == [packet.PING]


def test_closed_socket_gets_no_ping_and_keeps_no_timer() -> None:
    sock = FakeSocket(0.05)
    ping_timer.schedule_ping(sock)
    sock.closed = True
    gevent.sleep(0.2)
    assert queued(sock) == []
    assert getattr(sock, ping_timer._TIMER_ATTR) is None


def test_install_patches_engineio_socket() -> None:
    from engineio import socket

    original = socket.Socket.schedule_ping
    try:
        ping_timer.install()
        assert socket.Socket.schedule_ping is ping_timer.schedule_ping
    finally:
        socket.Socket.schedule_ping = original  # type: ignore[method-assign]
