"""Per-app state shared by the namespaces: config, metrics and the per-socket nicknames."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.logthrottle import ThrottledLog

if TYPE_CHECKING:
    from flask_socketio import SocketIO

    from app.config import Config
    from app.metrics import Metrics
    from app.ratelimit import EventRateLimiter, FanoutLimiter


@dataclass
class AppState:
    config: Config
    metrics: Metrics
    socketio: SocketIO
    # Per-socket client event limit; None: unlimited (tests that build a bare state).
    limiter: EventRateLimiter | None = None
    # Events to every socket, for the whole instance; None: unlimited (no plan known).
    fanout: FanoutLimiter | None = None
    # Warnings a client can provoke at will: one line per kind per interval (app/logthrottle.py).
    throttled_log: ThrottledLog = field(default_factory=lambda: ThrottledLog(logging.getLogger("app.events.base")))
    # (namespace, sid) -> nickname; local to this instance, dropped on disconnect.
    nicknames: dict[tuple[str, str], str] = field(default_factory=dict)
