"""set()/wait()/clear() for the one greenlet that serves a websocket: gevent's Event, with a shallower park.

Why: a websocket's request greenlet spends its life parked in ``wait()``, and greenlet keeps the C
stack below that point on the heap. ``gevent.event.Event.wait()`` parks through four compiled calls
(``wait``, ``_wait``, ``_wait_core``, ``switch_out``); ``gevent.hub.Waiter.get()`` through one:
2,256 against 3,072 bytes of saved stack per parked greenlet (tracemalloc, 2,000 greenlets, gevent
26.9.0), ~0.8 KB per socket. Waiter keeps what makes a bare switch unsafe: a wake-up that arrives
when the greenlet is no longer parked is stored, never switched into it elsewhere.

Unlike Event, only one greenlet may wait at a time; set() may be called from any greenlet or the hub,
and always wakes the waiter from a hub callback, as Event does.
"""

from __future__ import annotations

from gevent.hub import Waiter, get_hub


class Wakeup:
    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: Waiter | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            get_hub().loop.run_callback(waiter.switch, None)

    def clear(self) -> None:
        self._flag = False

    def wait(self) -> bool:
        """Return once set (at once if already set). Never times out."""
        while not self._flag:
            if self._waiter is not None:
                raise RuntimeError("Wakeup has a waiter already")
            waiter = self._waiter = Waiter()
            try:
                waiter.get()
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return True
