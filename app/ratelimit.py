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
        if now - b.window_start >= self.window:
            b.window_start, b.drops = now, 0
        b.drops += 1
        return Verdict.DISCONNECT if b.drops > self.drop_limit else Verdict.DROP

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)
