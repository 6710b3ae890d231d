"""WSGI wrapper counting failed Engine.IO handshakes (a request without ``sid=`` answered 4xx/5xx).

Why: a refused or broken handshake never reaches a connect handler, so no namespace counter sees
it; under load these are the first sign of trouble (the design notes' "handshakes fail"). One
string test per /socket.io request, nothing per message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from app.upstream.guard import WSGIApp


class HandshakeFailures:
    def __init__(self, app: WSGIApp, counter: Any, path: str = "/socket.io") -> None:
        self.app = app
        self.counter = counter  # a prometheus Counter with a "status" label
        self.path = path.rstrip("/")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith(self.path) or "sid=" in environ.get("QUERY_STRING", ""):
            return self.app(environ, start_response)

        def _start_response(status: str, headers: Any, *args: Any) -> Any:
            if status[:1] in ("4", "5"):
                self.counter.labels(status=status[:3]).inc()
            return start_response(status, headers, *args)

        return self.app(environ, _start_response)
