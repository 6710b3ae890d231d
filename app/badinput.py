"""What python-engineio and python-socketio log about bad client input: counted per kind in
/metrics and logged once per kind per interval, instead of a traceback per packet.

A malformed Socket.IO packet raises inside python-engineio's message handler, which logs
`message handler error` with a full traceback for every such packet (python-engineio 4.x,
`Server._trigger_event`); invalid sessions and transports go through `_log_error_once` (ERROR
once, then INFO per occurrence). One bad client can therefore flood the logs, and nothing counts
what it sends. Both libraries accept any logger object (`logger=` / `engineio_logger=`, their
documented extension point): this one classifies the few messages that mean "bad input", counts
them, and drops everything else at INFO and below without building a log record (the per-packet
INFO calls then cost one dict lookup).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from prometheus_client import Counter

from app.logthrottle import ThrottledLog

# Message (format string, or the prefix of a pre-formatted one) -> kind.
KINDS: dict[str, str] = {
    "message handler error": "bad_packet",
    "post request handler error": "bad_post",
    "Unknown receive error": "receive_error",
    "Invalid transport": "bad_transport",
    "Invalid session": "bad_session",
    "Invalid websocket upgrade": "bad_upgrade",
    "The client is using an unsupported version": "bad_version",
    "Invalid JSONP index number": "bad_jsonp",
    "Method %s not supported": "bad_method",
    "%s is not connected to namespace %s": "unknown_namespace",
    "Application rejected connection": "rejected_connection",
    # The kit's websocket reader (app/upstream/uwsgi_websocket.py): RFC 6455 broken or over the size bound.
    "Websocket protocol error: %s (close code %d)": "bad_frame",
}


def classify(msg: object) -> str | None:
    text = str(msg)
    kind = KINDS.get(text)
    if kind is not None:
        return kind
    for prefix, k in KINDS.items():
        if "%" not in prefix and text.startswith(prefix):
            return k
    return None


class BadInputLogger:
    """Stands in for the libraries' logger (the methods they call)."""

    def __init__(self, name: str, counter: Counter, throttled: ThrottledLog) -> None:
        self.name, self.counter, self.throttled = name, counter, throttled
        self._fallback = logging.getLogger(name)
        self.level = logging.WARNING

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.WARNING

    def _bad(self, kind: str, msg: object, args: tuple[Any, ...], exc: BaseException | None) -> None:
        self.counter.labels(kind=kind).inc()
        text = str(msg) % args if args else str(msg)
        if exc is not None:
            text += f": {type(exc).__name__}: {str(exc)[:200]}"
        self.throttled.warning(kind, "%s", text[:400])

    def _log(self, level: int, msg: object, args: tuple[Any, ...], exc: BaseException | None = None) -> None:
        key = msg if isinstance(msg, str) else str(msg)
        kind = KINDS.get(key) if key in KINDS else (classify(key) if level >= logging.INFO else None)
        if kind is not None:
            self._bad(kind, msg, args, exc)
        elif level >= logging.WARNING:
            self._fallback.log(level, msg, *args, exc_info=exc)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        return None

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        # Only _log_error_once's repeats matter here; they pass a formatted string, no args.
        if not args:
            self._log(logging.INFO, msg, args)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._log(logging.WARNING, msg, args)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._log(logging.ERROR, msg, args, sys.exc_info()[1] if kwargs.get("exc_info") else None)

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._log(logging.ERROR, msg, args, sys.exc_info()[1])

    def critical(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._log(logging.CRITICAL, msg, args)
