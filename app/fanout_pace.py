"""The rate a paced fan-out keeps to: the plan's, lowered while this host's cores are saturated.

Why: below the machine's capacity a paced fan-out takes echoes out of the broadcast's queue (30,000
on the local cluster: echo p99 0.87-1.17 s -> 44 ms at a 2.5 s pace); at or above it, pacing changes
nothing, and the plan's rate was above this host's capacity on every cluster run of 2026-12-06
(BENCHMARKS.md, "Paced fan-out"). A host's capacity drifts between runs, so a fixed rate cannot sit
just below it.

The signal is how long this thread waits for a core each time it becomes runnable: the kernel's
run delay over its switch-ins (/proc/thread-self/schedstat). On the cluster, sampled every 0.1 s
over all uWSGI workers (30,000 clients, 2026-12-06): 0.02-0.5 ms in the quiet hold, 1.2-19 ms within
0.1 s of a broadcast's start, while both cores were busy. Above the operator's threshold
(app_fanout_core_wait_ms, TARGET_WAIT_S by default) the rate falls by DECREASE; at or below it, it
climbs back by INCREASE, never past the plan's rate nor below FLOOR of it. Like TCP's congestion
window, it follows a signal that rises before the queues get long, and it carries over from one
fan-out to the next: a host's capacity changes more slowly than broadcasts come.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["AdaptivePace", "read_schedstat"]

SCHEDSTAT = "/proc/thread-self/schedstat"
WINDOW_S = 0.1  # the run delay is averaged over this much of a fan-out
# Above the quiet hold's 0.5 ms. At 30,000 on the cluster (2026-12-06, one run each) 1 ms gave echo
# p99 135 ms and fan-out p99 2.76 s, 2 ms gave 203 ms and 2.19 s, the plan's fixed rate 887 ms and
# 1.87 s: 2 ms keeps most of the echo gain for a third of the fan-out cost.
TARGET_WAIT_S = 0.002
DECREASE = 0.7
INCREASE = 0.05  # of the plan's rate per window: from the floor back to the plan's in 1.5 s
FLOOR = 0.25  # of the plan's rate: a fan-out takes at most 4x the plan's time


def read_schedstat(path: str = SCHEDSTAT) -> tuple[int, int] | None:
    """This thread's (run delay in ns, switch-ins) so far; None where the kernel does not say."""
    try:
        with open(path) as f:
            fields = f.read().split()
        return int(fields[1]), int(fields[2])
    except (OSError, ValueError, IndexError):
        return None


class AdaptivePace:
    """Deliveries per second, at most ``ceiling`` (the plan's), lowered while waits for a core are long."""

    def __init__(
        self,
        ceiling: float,
        core_wait_s: float = TARGET_WAIT_S,
        read: Callable[[], tuple[int, int] | None] = read_schedstat,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ceiling = ceiling
        self.rate = ceiling
        self.core_wait_s = core_wait_s
        self._read = read
        self._clock = clock
        self._last: tuple[float, int, int] | None = None
        # 0: the operator's choice of the plan's rate, fixed (app_fanout_core_wait_ms).
        self.adaptive = core_wait_s > 0 and read() is not None

    def observe(self) -> float:
        """Called as a fan-out goes; adjusts the rate once per window. Returns the rate to keep to."""
        if not self.adaptive:
            return self.rate
        now = self._clock()
        if self._last is not None and now - self._last[0] < WINDOW_S:
            return self.rate
        sample = self._read()
        if sample is None:
            return self.rate
        delay, switches = sample
        if self._last is not None and now - self._last[0] < 2 * WINDOW_S and switches > self._last[2]:
            wait = (delay - self._last[1]) / 1e9 / (switches - self._last[2])
            if wait > self.core_wait_s:
                self.rate = max(self.ceiling * FLOOR, self.rate * DECREASE)
            else:
                self.rate = min(self.ceiling, self.rate + self.ceiling * INCREASE)
        # A window that spans a pause between fan-outs says nothing about this one: start afresh.
        self._last = (now, delay, switches)
        return self.rate
