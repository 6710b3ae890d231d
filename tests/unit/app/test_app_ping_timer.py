"""Engine.IO pings from shared libev timers: same schedule and packets as engineio's greenlet, none parked."""

from __future__ import annotations

import time
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
    assert getattr(sock, ping_timer._DUE_ATTR) is None


def test_install_patches_engineio_socket() -> None:
    from engineio import socket

    original = socket.Socket.schedule_ping
    try:
        ping_timer.install()
        assert socket.Socket.schedule_ping is ping_timer.schedule_ping
    finally:
        socket.Socket.schedule_ping = original  # type: ignore[method-assign]


def test_sockets_due_in_one_tick_share_a_timer_and_each_waits_its_interval() -> None:
    interval = 0.4
    tick = ping_timer.tick_for(interval)  # 20 ms
    socks = [FakeSocket(interval) for _ in range(50)]
    scheduled, pinged = {}, {}
    for s in socks:
        s.send = lambda pkt, s=s: pinged.setdefault(id(s), time.monotonic())  # type: ignore[method-assign]
        scheduled[id(s)] = time.monotonic()
        ping_timer.schedule_ping(s)
        gevent.sleep(0.001)  # spread over ~50 ms, as pongs arrive
    buckets = ping_timer._buckets_for(interval)
    assert 1 <= len(buckets.due) <= 6  # ~50 ms of schedules in 20 ms ticks: a few timers, not 50
    gevent.sleep(interval + 0.1)
    assert buckets.due == {}  # every tick's timer fired and went
    waits = [pinged[id(s)] - scheduled[id(s)] for s in socks]
    # never before the interval (less the loop clock's staleness), at most a tick after it
    assert all(interval - 0.02 <= w <= interval + tick + 0.1 for w in waits), waits
    assert len({round(pinged[id(s)], 3) for s in socks}) < len(socks)  # several left together


def test_a_ping_sent_before_its_tick_is_not_sent_again_by_it() -> None:
    sock = FakeSocket(0.1)
    ping_timer.schedule_ping(sock)
    ping_timer._fire(sock)  # early, as the fan-out tests do
    assert queued(sock) == [packet.PING]
    gevent.sleep(0.25)
    assert queued(sock) == []


def test_tick_is_a_twentieth_of_the_interval_up_to_a_second() -> None:
    assert ping_timer.tick_for(1) == 0.05
    assert ping_timer.tick_for(25) == 1.0
    assert ping_timer.tick_for(122) == 1.0
