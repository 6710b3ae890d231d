"""app/upstream/wakeup.py: Event's set/wait/clear for the one greenlet serving a websocket."""

from __future__ import annotations

import contextlib

import gevent
import pytest

from app.upstream.wakeup import Wakeup


def test_wait_returns_at_once_when_already_set() -> None:
    w = Wakeup()
    w.set()
    assert w.is_set()
    assert gevent.spawn(w.wait).get(timeout=1) is True
    w.clear()
    assert not w.is_set()


def test_set_from_another_greenlet_wakes_the_waiter_once() -> None:
    w = Wakeup()
    woken: list[int] = []

    def serve() -> None:
        for i in range(3):
            w.wait()
            w.clear()
            woken.append(i)

    g = gevent.spawn(serve)
    gevent.sleep(0)
    assert woken == []
    w.set()
    w.set()  # a second set before the waiter ran: still one wake-up
    gevent.sleep(0.01)
    assert woken == [0]
    gevent.spawn(w.set).join()
    gevent.sleep(0.01)
    assert woken == [0, 1]
    g.kill()


def test_set_from_a_hub_callback_wakes_the_waiter() -> None:
    w = Wakeup()
    g = gevent.spawn(w.wait)
    gevent.sleep(0)
    gevent.get_hub().loop.run_callback(w.set)  # as the libev read watcher calls it
    assert g.get(timeout=1) is True


class Boom(Exception):
    pass


def test_a_late_wake_up_never_lands_in_a_later_wait_elsewhere() -> None:
    w = Wakeup()
    slept: list[float] = []

    def serve() -> None:
        with contextlib.suppress(Boom):
            w.wait()
        t0 = gevent.get_hub().loop.now()
        gevent.sleep(0.05)  # parked elsewhere (as in the writer's final flush)
        gevent.get_hub().loop.update_now()
        slept.append(gevent.get_hub().loop.now() - t0)

    g = gevent.spawn(serve)
    gevent.sleep(0)
    g.kill(Boom, block=False)  # runs first: the greenlet leaves wait()...
    w.set()  # ...before this wake-up, scheduled while it still waited, is delivered
    g.join(timeout=1)
    assert slept and slept[0] >= 0.045  # the wake-up did not cut the sleep short


def test_only_one_waiter() -> None:
    w = Wakeup()
    first = gevent.spawn(w.wait)
    gevent.sleep(0)
    second = gevent.spawn(w.wait)
    with pytest.raises(RuntimeError, match="waiter already"):
        second.get(timeout=1)
    w.set()
    assert first.get(timeout=1) is True
