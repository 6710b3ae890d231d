"""A log line per kind of problem per interval, not one per packet.

One bad client can send thousands of bad packets a second; a warning (or a traceback) for each
would fill the disk and bury every other line. The first occurrence of a kind is logged at once;
later ones within `interval` seconds are counted and reported with the next line of that kind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ThrottledLog:
    def __init__(
        self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger, self.interval, self.clock = logger, interval, clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, msg: str, *args: object) -> bool:
        """Log `msg` under `kind` unless one was logged less than `interval` s ago; True if logged."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        more = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        suffix = f" ({more} more of this kind in the last {now - last:.0f} s)" if more and last is not None else ""
        self.logger.warning("%s: " + msg + "%s", kind, *args, suffix)
        return True
