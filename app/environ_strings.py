"""A websocket's WSGI environ shares its keys and its common values with every other socket's.

Why: uWSGI decodes every environ key and value into a new str on each request
(`PyUnicode_DecodeLatin1` in plugins/python/wsgi_subhandler.c), and a websocket's request keeps its
environ for the socket's whole life (and Flask-SocketIO a shallow copy of it). N sockets held N
copies of "REQUEST_METHOD", "GET", "HTTP_SEC_WEBSOCKET_VERSION", "13", ... Sharing them cut uWSGI's
RSS per socket 39.5 -> 38.0 KB (5,000 sockets, one loopback worker, 3 runs each) for ~23 us of CPU
per websocket handshake (35 entries); BENCHMARKS.md, "uWSGI memory: the environ's strings".

Both pools are bounded, so a client's made-up headers cannot grow them: past the bound a string
stays the request's own, as before. Values are shared only for keys whose values come from a small
set by nature (the method, the protocol, the server's name and port, the upgrade headers, ...);
a value unique to one request (the websocket key, the query string, the client's port) never enters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

MAX_KEYS = 256
MAX_VALUES_PER_KEY = 16

# Keys whose values few requests differ in. Not REMOTE_ADDR or X-Forwarded-For: one per client.
SHARED_VALUE_KEYS = frozenset(
    {
        "REQUEST_METHOD", "SERVER_PROTOCOL", "REQUEST_SCHEME", "HTTPS", "SERVER_NAME", "SERVER_PORT",
        "SERVER_ADDR", "DOCUMENT_ROOT", "SCRIPT_NAME", "PATH_INFO", "CONTENT_TYPE", "CONTENT_LENGTH",
        "HTTP_HOST", "HTTP_UPGRADE", "HTTP_CONNECTION", "HTTP_SEC_WEBSOCKET_VERSION",
        "HTTP_SEC_WEBSOCKET_EXTENSIONS", "HTTP_USER_AGENT", "HTTP_ACCEPT", "HTTP_ACCEPT_ENCODING",
        "HTTP_ACCEPT_LANGUAGE", "HTTP_ORIGIN", "HTTP_CACHE_CONTROL", "HTTP_PRAGMA",
        "HTTP_X_FORWARDED_PROTO", "wsgi.url_scheme",
    }
)  # fmt: skip

_keys: dict[str, str] = {}
_values: dict[str, dict[str, str]] = {}


def _shared_key(key: str) -> str:
    got = _keys.get(key)
    if got is None:
        if len(_keys) >= MAX_KEYS:
            return key
        _keys[key] = got = key
    return got


def _shared_value(key: str, value: Any) -> Any:
    pool = _values.get(key)
    if pool is None:
        if key not in SHARED_VALUE_KEYS:
            return value
        pool = _values[key] = {}
    got = pool.get(value)
    if got is None:
        if len(pool) >= MAX_VALUES_PER_KEY or not isinstance(value, str):
            return value
        pool[value] = got = value
    return got


def share_strings(environ: dict[str, Any]) -> None:
    """Rebuild ``environ`` in place from shared keys and values (the same dict: uWSGI holds it)."""
    items = [(_shared_key(k), _shared_value(k, v)) for k, v in environ.items()]
    # A dict keeps its first key object on assignment, so the keys are only replaced by refilling.
    environ.clear()
    environ.update(items)


class ShareEnvironStrings:
    """The WSGI layer: websocket upgrades only, the requests that live as long as their socket."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            share_strings(environ)
        return self.app(environ, start_response)
