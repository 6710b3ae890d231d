"""The Socket.IO Admin UI namespace: opt-in, production mode, refused without the credentials."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.admin_ui import ADMIN_UI_NAMESPACE
from app.config import Config, ConfigError

PASSWORD = "admin-ui-unit-password"


@pytest.fixture
def ui_app() -> Iterator[Flask]:
    app = create_app(Config(instance_id="unit:ui", admin_ui=True, admin_ui_password=PASSWORD), async_mode="threading")
    yield app
    # instrument() patches engineio's Socket class for the whole process: undo it for later tests.
    app.extensions["siokit_admin_ui"].uninstrument()


def _wait_for(client: Any, name: str, timeout: float = 3.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [r["args"] for r in client.get_received(ADMIN_UI_NAMESPACE) if r["name"] == name]
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"no {name!r} event within {timeout}s")


def test_off_by_default() -> None:
    app = create_app(Config(instance_id="unit:off"), async_mode="threading")
    assert "siokit_admin_ui" not in app.extensions
    client = app.extensions["socketio"].test_client(
        app, namespace=ADMIN_UI_NAMESPACE, auth={"username": "admin", "password": "x"}
    )
    assert not client.is_connected(ADMIN_UI_NAMESPACE)


def test_login_gets_production_mode_read_only(ui_app: Flask) -> None:
    client = ui_app.extensions["socketio"].test_client(
        ui_app, namespace=ADMIN_UI_NAMESPACE, auth={"username": "admin", "password": PASSWORD}
    )
    assert client.is_connected(ADMIN_UI_NAMESPACE)
    [[config]] = _wait_for(client, "config")
    # Aggregates only: no ALL_EVENTS (development mode), no EMIT/JOIN/DISCONNECT (read-only).
    assert config == {"supportedFeatures": ["AGGREGATED_EVENTS"]}
    # Production mode never sends the per-socket list.
    assert not [r for r in client.get_received(ADMIN_UI_NAMESPACE) if r["name"] == "all_sockets"]
    client.disconnect(namespace=ADMIN_UI_NAMESPACE)


@pytest.mark.parametrize(
    "auth",
    [
        None,
        {},
        {"username": "admin"},
        {"username": "admin", "password": "wrong"},
        {"username": "root", "password": PASSWORD},
        {"username": "admin", "password": 123},
        PASSWORD,
    ],
)
def test_refused_without_the_credentials(ui_app: Flask, auth: Any) -> None:
    client = ui_app.extensions["socketio"].test_client(ui_app, namespace=ADMIN_UI_NAMESPACE, auth=auth)
    assert not client.is_connected(ADMIN_UI_NAMESPACE)
    metrics = ui_app.test_client().get("/metrics").text
    assert f'siokit_connections_refused_total{{namespace="{ADMIN_UI_NAMESPACE}"}} 1.0' in metrics


def test_the_app_admin_namespace_is_untouched(ui_app: Flask) -> None:
    # "/admin" stays the app's token namespace: the UI's credentials do not open it.
    client = ui_app.extensions["socketio"].test_client(
        ui_app, namespace="/admin", auth={"username": "admin", "password": PASSWORD}
    )
    assert not client.is_connected("/admin")


def test_config_from_env() -> None:
    cfg = Config.from_env({"SIOKIT_ADMIN_UI": "on", "SIOKIT_ADMIN_UI_PASSWORD": "pw", "SIOKIT_ADMIN_UI_USER": "ops"})
    assert (cfg.admin_ui, cfg.admin_ui_user, cfg.admin_ui_password) == (True, "ops", "pw")
    assert "pw" not in repr(cfg)
    assert Config.from_env({"SIOKIT_ADMIN_UI": "off"}).admin_ui is False
    assert Config.from_env({}).admin_ui is False


@pytest.mark.parametrize(
    "env",
    [
        {"SIOKIT_ADMIN_UI": "on"},
        {"SIOKIT_ADMIN_UI": "on", "SIOKIT_ADMIN_UI_PASSWORD": ""},
        {"SIOKIT_ADMIN_UI": "maybe"},
    ],
)
def test_config_refuses(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="SIOKIT_ADMIN_UI"):
        Config.from_env(env)


def test_every_namespace_is_listed_and_events_still_reach_the_classes(ui_app: Flask) -> None:
    server = ui_app.extensions["socketio"].server
    # server_stats lists sio.handlers' namespaces: the kit's class-based ones are there too.
    assert {"/", "/anonymous", "/admin", ADMIN_UI_NAMESPACE} <= set(server.handlers)
    client = ui_app.extensions["socketio"].test_client(ui_app, namespace="/", auth={"nickname": "ann"})
    ack = client.emit("join", {"room": "lobby"}, namespace="/", callback=True)
    assert ack["ok"] is True, ack


def test_server_stats_start_before_the_first_client(ui_app: Flask) -> None:
    """An instance with no client yet still reports itself to the UI (python-socketio waits for one)."""
    admin = ui_app.extensions["siokit_admin_ui"]
    assert admin.stats_task is None
    assert ui_app.test_client().get("/healthz").status_code == 200
    assert admin.stats_task is not None
    task = admin.stats_task
    ui_app.test_client().get("/healthz")
    assert admin.stats_task is task, "a second request started a second stats task"


def test_server_stats_wait_for_a_client_on_stock_code() -> None:
    """With the version guard's fallback the kit leaves admin.py's internals alone."""
    config = Config(instance_id="unit:ui-stock", admin_ui=True, admin_ui_password=PASSWORD)
    app = create_app(config, async_mode="threading", upstream_patches=False)
    try:
        app.test_client().get("/healthz")
        assert app.extensions["siokit_admin_ui"].stats_task is None
    finally:
        app.extensions["siokit_admin_ui"].uninstrument()


class _NoWalk:
    """An Engine.IO socket that fails the test if server_stats looks at it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"server_stats read socket.{name}: it walked the sockets")


class _OneRound:
    """stop_stats_event: lets the loop run once."""

    def __init__(self) -> None:
        self.checks = 0

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks > 1


def test_server_stats_count_polling_clients_without_a_walk(ui_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    from app import admin_ui
    from app.upstream import eio_socket

    admin = ui_app.extensions["siokit_admin_ui"]
    admin_ui.count_polling_by_upgrades(admin)
    sio = admin.sio
    emitted: list[tuple[str, Any]] = []
    monkeypatch.setattr(sio.eio, "sockets", {f"e{i}": _NoWalk() for i in range(5)})
    monkeypatch.setattr(eio_socket, "_websockets", 3)
    monkeypatch.setattr(sio, "sleep", lambda _s: None)
    monkeypatch.setattr(sio, "emit", lambda event, data, namespace: emitted.append((event, data)))
    admin.stop_stats_event = _OneRound()
    admin._emit_server_stats()
    [(event, stats)] = emitted
    assert event == "server_stats"
    assert (stats["clientsCount"], stats["pollingClientsCount"]) == (5, 2)
    assert stats["serverId"] == admin.server_id
    assert {"/", "/anonymous", "/admin", ADMIN_UI_NAMESPACE} <= {n["name"] for n in stats["namespaces"]}


class _FramesWS:
    """A frame-capable websocket whose client sends `incoming`, then closes."""

    supports_frames = True

    def __init__(self, incoming: list[str]) -> None:
        self.incoming = list(incoming)

    def wait(self) -> str | None:
        return self.incoming.pop(0) if self.incoming else None

    def send_frame(self, frame: bytes) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def kit_handler_ui_app() -> Iterator[Flask]:
    """The Admin UI instrumented over the kit's websocket handler, as app/wsgi.py does it."""
    from engineio import socket as eio_sock

    from app.upstream import eio_socket

    saved = {k: eio_sock.Socket.__dict__[k] for k in ("send", "close", "_websocket_handler", "_upgrade_websocket")}
    eio_socket.install()
    config = Config(instance_id="unit:ui-ws", admin_ui=True, admin_ui_password=PASSWORD)
    app = create_app(config, async_mode="threading")
    try:
        yield app
    finally:
        eio_socket.count_packets_in(None)
        app.extensions["siokit_admin_ui"].uninstrument()
        for k, v in saved.items():
            setattr(eio_sock.Socket, k, v)


def test_websocket_packets_in_are_counted_by_the_kit_handler(kit_handler_ui_app: Flask) -> None:
    from engineio.socket import Socket

    from app import admin_ui
    from app.upstream import eio_socket

    admin = kit_handler_ui_app.extensions["siokit_admin_ui"]
    assert Socket._websocket_handler is not eio_socket.websocket_handler  # instrument() wrapped it
    admin_ui.count_websocket_packets(admin)
    # The kit's handler is back, unwrapped: a parked websocket keeps no partialmethod frame.
    assert Socket._websocket_handler is eio_socket.websocket_handler
    admin.event_buffer.get_and_clear()
    sock = Socket(admin.sio.eio, "ui-ws1")
    ws = _FramesWS(["6", "6abc"])  # two NOOPs, then the client closes
    sock._websocket_handler(ws)
    counts: dict[str, int] = {}
    for event in admin.event_buffer.get_and_clear():
        counts[event["type"]] = counts.get(event["type"], 0) + event["count"]
    assert (counts.get("packetsIn"), counts.get("bytesIn")) == (2, len("6") + len("6abc"))
    assert counts.get("rawDisconnection") == 1  # instrument()'s Engine.IO disconnect handler still counts
    # instrument()'s per-socket wrapper never ran: the websocket keeps its own wait.
    assert not isinstance(ws.wait, functools.partial)
