"""/livez: 204 from the outermost WSGI layer, before Flask builds a request.

nginx sends one before each new websocket, through the websocket upstream (templates/nginx/
siokit.conf.j2, nginx_upstream_check): a short request that clears its failure mark of an instance
that came back. It runs once per handshake, so it must cost next to nothing: through Flask,
/healthz added ~0.5 ms of uWSGI CPU to a ~2 ms handshake on this machine (RELIABILITY.md).
It says only that the process answers HTTP; /healthz says more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
PATH = "/livez"


class Livez:
    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PATH:
            start_response("204 No Content", [("Cache-Control", "no-store")])
            return []
        return self.app(environ, start_response)
