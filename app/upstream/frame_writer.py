"""Per-socket writer of pre-built websocket frames: a non-blocking write, then a bounded backlog.

Why: python-engineio's websocket path (4.15.1, ``Socket._websocket_handler``) queues every packet
for a writer greenlet per socket, which (under uWSGI 2.0, no cross-greenlet request context) handed
it on to the request greenlet: two greenlet wake-ups and an encode per recipient. Here the caller
(an emitting greenlet, or the hub for timer pings) writes the frame straight to the socket's fd.
Whatever the kernel does not take at once goes to a backlog that a libev write watcher drains from
the hub, so a frame never overtakes one queued before it. Nothing here blocks or switches greenlets.

Backpressure: the backlog is bounded in bytes. Past the bound the writer drops it and calls
``on_overflow`` (the socket is closed as a slow consumer); ``STATS`` counts that for /metrics.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_IOV_MAX = 64  # frames per writev(); the kernel's IOV_MAX is 1024
SUMMARY_INTERVAL = 10.0  # seconds between slow-consumer log summaries


@dataclass
class WriterStats:
    """Process-wide counters for /metrics (one uWSGI worker = one process)."""

    slow_consumer_closes: int = 0
    backlogged_sockets: int = 0
    backlog_bytes: int = 0
    _unlogged: int = 0
    _log_timer: Any = None

    def slow_consumer(self, loop: Any, bound: int) -> None:
        self.slow_consumer_closes += 1
        self._unlogged += 1
        if self._log_timer is None and loop is not None:
            # One summary per interval, not a line per socket: a burst may close thousands.
            self._log_timer = loop.timer(SUMMARY_INTERVAL)
            self._log_timer.start(self._summary, bound)

    def _summary(self, bound: int) -> None:
        if self._log_timer is not None:
            self._log_timer.close()
            self._log_timer = None
        if self._unlogged:
            log.warning(
                "closed %d slow consumer socket(s) in the last %.0f s: backlog past %d bytes "
                "(SIOKIT_MAX_BACKLOG_BYTES); %d since start",
                self._unlogged,
                SUMMARY_INTERVAL,
                bound,
                self.slow_consumer_closes,
            )
            self._unlogged = 0


STATS = WriterStats()


class FrameWriter:
    """Writes frames to a non-blocking fd in order; one per websocket."""

    __slots__ = (
        "_backlog",
        "_pending",
        "_watcher",
        "broken",
        "closed",
        "fd",
        "loop",
        "max_backlog",
        "on_broken",
        "on_drained",
        "on_overflow",
        "overflowed",
    )

    def __init__(
        self,
        fd: int,
        loop: Any,
        max_backlog: int,
        on_overflow: Callable[[], None],
        on_drained: Callable[[], None],
        on_broken: Callable[[], None],
    ) -> None:
        self.fd = fd
        self.loop = loop
        self.max_backlog = max_backlog
        self.on_overflow = on_overflow
        self.on_drained = on_drained
        self.on_broken = on_broken
        # Made at the first partial write and dropped once drained: an empty deque is ~740 bytes
        # (tracemalloc, 2,000 sockets), and most sockets never have a backlog, or have one briefly.
        self._backlog: deque[bytes | memoryview] | None = None
        self._pending = 0  # bytes in the backlog
        self._watcher: Any = None
        self.closed = False
        self.broken = False
        self.overflowed = False

    @property
    def pending(self) -> int:
        return self._pending

    def write(self, frame: bytes) -> None:
        if self.closed:
            return
        if self._pending:
            self._enqueue(frame)
            return
        try:
            n = os.write(self.fd, frame)
        except BlockingIOError:
            n = 0
        except OSError:
            self._break()
            return
        if n < len(frame):
            self._enqueue(memoryview(frame)[n:])

    def _enqueue(self, chunk: bytes | memoryview) -> None:
        size = len(chunk)
        if self._pending + size > self.max_backlog:
            self.overflowed = True
            STATS.slow_consumer(self.loop, self.max_backlog)
            self.close()
            self.on_overflow()
            return
        if not self._pending:
            STATS.backlogged_sockets += 1
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append(chunk)
        self._pending += size
        STATS.backlog_bytes += size
        self._start_watcher()

    def _start_watcher(self) -> None:
        if self._watcher is None:
            self._watcher = self.loop.io(self.fd, 2)  # 2 = libev EV_WRITE
            self._watcher.start(self.drain)

    def _stop_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def drain(self) -> bool:
        """Write as much of the backlog as the kernel takes; True once it is empty. Runs in the hub."""
        backlog = self._backlog
        if not backlog:
            self._stop_watcher()
            return True
        while backlog:
            chunks = list(backlog) if len(backlog) <= _IOV_MAX else [backlog[i] for i in range(_IOV_MAX)]
            try:
                n = os.writev(self.fd, chunks)
            except BlockingIOError:
                return False
            except OSError:
                self._break()
                return False
            self._pending -= n
            STATS.backlog_bytes -= n
            while n:
                head = backlog[0]
                if len(head) <= n:
                    n -= len(head)
                    backlog.popleft()
                else:
                    backlog[0] = memoryview(head)[n:]
                    n = 0
        self._backlog = None
        self._stop_watcher()
        STATS.backlogged_sockets -= 1
        self.on_drained()
        return True

    def _break(self) -> None:
        self.broken = True
        self.close()
        self.on_broken()

    def close(self) -> None:
        """Drop the backlog and stop writing (the fd is about to be closed or reused)."""
        self.closed = True
        self._stop_watcher()
        if self._pending:
            STATS.backlogged_sockets -= 1
            STATS.backlog_bytes -= self._pending
            self._pending = 0
            self._backlog = None
