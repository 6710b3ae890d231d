"""How one WSGI layer holds the next: as a bound method, never as an instance with ``__call__``.

Why: CPython 3.11 runs a call to a Python function or bound method inside the caller's C frame, but
calls an instance through ``slot_tp_call``, a fresh C-level eval loop. A websocket's request greenlet
stays parked inside every layer for the socket's whole life, and greenlet saves its C stack to the
heap: each instance layer cost ~780 bytes per socket (tracemalloc over 2,000 parked gevent greenlets
behind 0-8 layers; BENCHMARKS.md, "uWSGI memory: the request greenlet's stack").
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def direct(app: WSGIApp) -> WSGIApp:
    """``app`` itself if it is a function or method, else its bound ``__call__`` when that is Python code."""
    if isinstance(app, (types.FunctionType, types.MethodType)):
        return app
    call = getattr(app, "__call__", None)  # noqa: B004 - the bound method itself is wanted
    return call if isinstance(call, types.MethodType) else app
