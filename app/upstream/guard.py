"""WSGI guard in front of Engine.IO: refuse oversized long-polling POSTs before python-engineio sees them.

Why: python-engineio (4.15.1) answers a POST longer than max_http_buffer_size by disconnecting the
session with ``socket.close(wait=True)``, which blocks on ``queue.join()`` until a long-polling GET
drains the queue. A client that never sends that GET (measured: > 60 s, with ping interval 2 s) pins
one uWSGI async core per request, forever. Refusing here costs nothing and never blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class OversizePostGuard:
    def __init__(self, app: WSGIApp, limit: int, path: str = "/socket.io") -> None:
        self.app = app
        self.limit = limit
        self.path = path.rstrip("/")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO", "").startswith(self.path):
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > self.limit:
                body = b"payload too large"
                start_response(
                    "413 Payload Too Large",
                    [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("Connection", "close")],
                )
                return [body]
        return self.app(environ, start_response)
