"""A websocket's environ shares its keys and common values with other sockets', within bounds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app import environ_strings
from app.environ_strings import MAX_KEYS, MAX_VALUES_PER_KEY, ShareEnvironStrings, share_strings


@pytest.fixture(autouse=True)
def fresh_pools(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(environ_strings, "_keys", {})
    monkeypatch.setattr(environ_strings, "_values", {})
    yield


def fresh(s: str) -> str:
    """An equal string that is a new object, as uWSGI's PyUnicode_DecodeLatin1 makes."""
    return s.encode().decode("latin-1") if len(s) > 1 else s


def uwsgi_environ(port: int, key: str) -> dict[str, Any]:
    pairs = {
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/socket.io/",
        "QUERY_STRING": f"EIO=4&transport=websocket&t={port}",
        "REMOTE_PORT": str(port),
        "HTTP_UPGRADE": "websocket",
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "HTTP_SEC_WEBSOCKET_KEY": key,
    }
    environ: dict[str, Any] = {fresh(k): fresh(v) for k, v in pairs.items()}
    environ["wsgi.input"] = object()
    return environ


def test_keys_and_common_values_are_shared_unique_values_are_not() -> None:
    a, b = uwsgi_environ(40001, "a2V5LWE="), uwsgi_environ(40002, "a2V5LWI=")
    before_a, before_b = dict(a), dict(b)
    assert all(ka is not kb for ka, kb in zip(a, b, strict=True) if ka != "wsgi.input")  # the test's premise
    same_dict = id(a)
    share_strings(a)
    share_strings(b)
    assert id(a) == same_dict  # refilled in place: uWSGI holds this dict
    assert a == before_a and b == before_b  # nothing changed but identity
    assert all(ka is kb for ka, kb in zip(a, b, strict=True))
    for key in ("REQUEST_METHOD", "SERVER_PROTOCOL", "PATH_INFO", "HTTP_UPGRADE", "HTTP_SEC_WEBSOCKET_VERSION"):
        assert a[key] is b[key], key
    for key in ("QUERY_STRING", "REMOTE_PORT", "HTTP_SEC_WEBSOCKET_KEY"):
        assert a[key] is before_a[key], key  # a request's own value never enters a pool
    assert "HTTP_SEC_WEBSOCKET_KEY" not in environ_strings._values
    assert a["wsgi.input"] is before_a["wsgi.input"]


def test_pools_are_bounded_against_made_up_headers_and_values() -> None:
    for i in range(MAX_KEYS + 50):
        share_strings({fresh(f"HTTP_X_JUNK_{i}"): "1"})
    assert len(environ_strings._keys) == MAX_KEYS
    late = fresh(f"HTTP_X_JUNK_{MAX_KEYS + 1}")
    env = {late: "1"}
    share_strings(env)
    assert next(iter(env)) is late  # past the bound a key stays the request's own

    for i in range(MAX_VALUES_PER_KEY + 10):
        share_strings({"HTTP_USER_AGENT": fresh(f"agent/{i}")})
    assert len(environ_strings._values["HTTP_USER_AGENT"]) == MAX_VALUES_PER_KEY


def test_only_websocket_upgrades_are_rewritten() -> None:
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ)
        return []

    layer = ShareEnvironStrings(app)
    polling = {fresh("REQUEST_METHOD"): fresh("GET"), fresh("PATH_INFO"): fresh("/socket.io/")}
    keys = list(polling)
    layer(polling, None)
    assert list(seen[0]) == keys and all(k is o for k, o in zip(seen[0], keys, strict=True))
    assert not environ_strings._keys  # a polling request never fills the pools

    ws = uwsgi_environ(40003, "a2V5LWM=")
    ws["HTTP_UPGRADE"] = fresh("WebSocket")  # the header is case-insensitive
    layer(ws, None)
    assert seen[1] is ws and "REQUEST_METHOD" in environ_strings._keys
