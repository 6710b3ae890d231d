"""Event-loop lag: how late a periodic greenlet wakes up.

A blocked gevent hub delays every greenlet, Engine.IO's ping timers included, so a lag of seconds is
what turns into a ping-timeout storm. The probe sleeps a fixed interval and records how much later
than asked it ran again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, Histogram

__all__ = ["HubLag"]

# Seconds; buckets from "fine" to "a ping timeout is near" (Engine.IO's default timeout is 20 s).
BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HubLag:
    """Measures its own scheduling delay every `interval` seconds."""

    def __init__(self, registry: CollectorRegistry, interval: float = 1.0) -> None:
        self.interval = interval
        self.started = False
        self.task: object = None  # the async mode's task object, once started
        self.last = Gauge("siokit_hub_lag_seconds", "How late the lag probe woke, last sample", registry=registry)
        self.histogram = Histogram(
            "siokit_hub_lag", "How late the lag probe woke, seconds", buckets=BUCKETS, registry=registry
        )

    def sample(self, sleep: Callable[[float], object], clock: Callable[[], float] = time.monotonic) -> float:
        """Sleep one interval and record the delay past it."""
        start = clock()
        sleep(self.interval)
        lag = max(0.0, clock() - start - self.interval)
        self.last.set(lag)
        self.histogram.observe(lag)
        return lag

    def run(self, sleep: Callable[[float], object]) -> None:
        """The probe's loop; spawn it as a background task of the server's async mode."""
        while True:
            self.sample(sleep)
