"""python-engineio's service task, checking sockets in batches once a second instead of one per wake-up.

Why: python-engineio 4.15.1 ``Server._service_task`` walks every socket once per ``ping_timeout``
and sleeps ``ping_timeout / len(sockets)`` after EACH one: a gevent Timeout, an event wait and two
greenlet switches per socket per cycle (250 wake-ups/s at 5,000 sockets, 8,000/s at 160k). Measured
with scripts/measure_fanout.py, 5,000 idle loopback clients and pings every 600 s (so nothing else
runs): the worker spent 0.055-0.062 CPU-s/s on it, as much as the Engine.IO pings themselves at
the default 25 s interval. This walks the same list in the same ``ping_timeout``, but in
``ping_timeout`` batches one second apart. What it does to each socket is upstream's: drop closed
ones from ``server.sockets``, ``check_ping_timeout()`` the others.
"""

from __future__ import annotations

from typing import Any


def service_task(self: Any) -> None:  # pragma: no cover (loops forever; tests drive _one_cycle)
    """Drop-in for engineio.server.Server._service_task."""
    self.service_task_event = self.create_event()
    while not self.service_task_event.is_set():
        if len(self.sockets) == 0:
            if self.service_task_event.wait(timeout=self.ping_timeout):
                break
            continue
        try:
            if not _one_cycle(self):
                break
        except (SystemExit, KeyboardInterrupt):
            self.logger.info("service task canceled")
            break
        except Exception:
            self.logger.exception("service task exception")


def _one_cycle(self: Any) -> bool:
    """One pass over every socket, spread over ping_timeout seconds; False once canceled."""
    sockets = list(self.sockets.values())
    steps = max(1, int(self.ping_timeout))
    batch = -(-len(sockets) // steps)
    for start in range(0, len(sockets), batch):
        for s in sockets[start : start + batch]:
            if s.closed:
                # it could also have been removed by _get_socket() meanwhile
                self.sockets.pop(s.sid, None)
            elif not s.closing:
                s.check_ping_timeout()
        if self.service_task_event.wait(timeout=self.ping_timeout / steps):
            return False
    return True


def install() -> None:
    from engineio import server

    server.Server._service_task = service_task  # type: ignore[method-assign]
