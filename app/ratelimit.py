"""Per-socket rate limit of client events.

`chat` on "/" and "/anonymous" fans out to every socket of every instance: at 160k one emit keeps
the cores busy for tens of seconds (BENCHMARKS.md), so without a limit a handful of frames from
one anonymous socket degrades the whole deployment (issue #10). Each socket gets a token bucket
(`rate` events/s, `burst` at once); an event over it is dropped (the client gets an error ack);
a socket with more than `drop_limit` drops within one `window` is disconnected.

Written here rather than taken from flask-limiter & co.: those limit HTTP requests per key through
a storage backend; a Socket.IO event arrives inside one long-lived request and must cost a few
dict operations (an O(1) check per event, no I/O).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    ALLOW = "allow"
    DROP = "drop"
    DISCONNECT = "disconnect"


@dataclass
class _Bucket:
    tokens: float
    updated: float
    window_start: float
    drops: int = 0
    cut: bool = False  # disconnected: events still queued from it are dropped, not cut off again


class EventRateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        drop_limit: int,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or drop_limit < 1 or window <= 0:
            raise ValueError("rate, burst, drop_limit and window must be positive")
        self.rate, self.burst, self.drop_limit, self.window, self.clock = rate, burst, drop_limit, window, clock
        self._buckets: dict[str, _Bucket] = {}
        self._cut_until: dict[str, float] = {}  # cut-off sockets already gone: key -> purge time

    def check(self, key: str) -> Verdict:
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(float(self.burst), now, now)
        b.tokens = min(float(self.burst), b.tokens + (now - b.updated) * self.rate)
        b.updated = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return Verdict.ALLOW
        if b.cut:
            return Verdict.DROP
        if now - b.window_start >= self.window:
            b.window_start, b.drops = now, 0
        b.drops += 1
        if b.drops > self.drop_limit:
            b.cut = True
            return Verdict.DISCONNECT
        return Verdict.DROP

    def forget(self, key: str) -> None:
        """Drop a socket's bucket when it disconnects. A cut-off socket's bucket stays for one
        window more: frames it sent before the cut are still dispatched after its disconnect, and a
        fresh bucket would let them through (seen under uWSGI: a second cut of the same socket)."""
        now = self.clock()
        for k, until in list(self._cut_until.items()):
            if until <= now:
                del self._cut_until[k]
                self._buckets.pop(k, None)
        b = self._buckets.get(key)
        if b is None:
            return
        if b.cut:
            self._cut_until.setdefault(key, now + self.window)
        else:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class FanoutLimiter:
    """One token bucket per instance for events that fan out to every socket (`chat`).

    The per-socket limit cannot bound them: at 10 chats/s one socket asks every instance for 10
    sends to every socket per second, more than the cores do (RELIABILITY.md, drill 8). Their cost is
    the plan's: one emit to everyone keeps the deployment's cores busy for `broadcast_fanout_s`
    (planner) when the planned sockets are connected, and every instance's emits reach every socket.
    So with `cpu_share` of the cores for them, the whole deployment may relay cpu_share /
    broadcast_fanout_s of them per second at plan, each of `instances` instances a 1/instances part
    (Config.fanout_rate: `rate_at_plan`).

    An emit costs in proportion to the sockets it reaches, so the rate follows the live load:
    `load()` is the share of the planned sockets connected (this instance's, the balancer spreads
    them evenly), and the bucket refills at rate_at_plan / load. Sized for the full plan only, a
    demo with a few sockets got one chat per ~10 min per instance after its burst.
    """

    # Below 0.1% of the plan an emit's fixed costs (Redis publish, encode) dominate: no faster.
    MIN_LOAD = 0.001

    def __init__(
        self,
        rate_at_plan: float,
        burst: int,
        load: Callable[[], float] = lambda: 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_at_plan <= 0 or burst < 1:
            raise ValueError("rate and burst must be positive")
        self.rate_at_plan, self.burst, self.load, self.clock = rate_at_plan, burst, load, clock
        self._tokens = float(burst)
        self._updated = clock()

    @property
    def rate(self) -> float:
        """Events per second now, for the sockets connected now."""
        return self.rate_at_plan / max(self.load(), self.MIN_LOAD)

    def allow(self) -> bool:
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next token (0 when one is there)."""
        return max(0.0, (1.0 - self._tokens) / self.rate)
