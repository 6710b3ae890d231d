"""create_app(): the Flask app and its Flask-SocketIO server, configured from a Config."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, request
from flask_socketio import SocketIO

from app import admin_ui
from app.badinput import BadInputLogger
from app.config import Config
from app.environ_strings import ShareEnvironStrings
from app.events.admin import AdminNamespace
from app.events.anonymous import AnonymousNamespace
from app.events.chat import ChatNamespace
from app.handshakes import HandshakeFailures
from app.http import register_routes
from app.livez import Livez
from app.logthrottle import ThrottledLog
from app.metrics import Metrics
from app.ratelimit import EventRateLimiter, FanoutLimiter
from app.rooms import PayloadError, error
from app.state import AppState
from app.upstream import eio_socket, versions
from app.upstream.guard import OversizePostGuard
from app.upstream.paced_fanout import PacedManager
from app.upstream.room_index import client_manager
from app.wsgi_layers import direct

log = logging.getLogger(__name__)


def create_app(
    config: Config | None = None, async_mode: str | None = None, upstream_patches: bool | None = None
) -> Flask:
    """Build the app. `async_mode` overrides config.async_mode (the uWSGI entry forces gevent_uwsgi).

    `upstream_patches`: use app/upstream's client manager; None = decide by the version guard.
    """
    config = Config.from_env() if config is None else config
    if upstream_patches is None:
        upstream_patches = versions.patches_allowed(config.patch_mismatch)
    mode = async_mode or config.async_mode
    app = Flask(__name__)
    metrics = Metrics(
        config.instance_id,
        mode or "auto",
        _driver_name(),
        upstream_patches=upstream_patches,
        planned_sockets=config.planned_sockets,
    )
    throttled = ThrottledLog(logging.getLogger("app.badinput"))
    socketio = SocketIO(
        app,
        async_mode=mode,
        # Flask-SocketIO's manager for this queue, with a sid -> rooms index (app/upstream/room_index.py).
        client_manager=client_manager(config.message_queue, indexed=upstream_patches),
        cors_allowed_origins=config.cors_origins,
        ping_interval=config.ping_interval,
        ping_timeout=config.ping_timeout,
        max_http_buffer_size=config.max_message_bytes,
        # The app keeps no state in the Flask session; skipping the per-socket copy saves memory.
        manage_session=False,
        # Bad input counted per kind and logged once per interval, not a traceback per packet.
        logger=BadInputLogger("socketio.server", metrics.bad_input, throttled),
        engineio_logger=BadInputLogger("engineio.server", metrics.bad_input, throttled),
    )
    # Counted by app/upstream/room_index.py's managers (the stock fallback manager counts nothing).
    socketio.server.manager.delivered = metrics.delivered
    # Only where the kit's Socket.send keeps a paced fan-out's order (app/upstream/paced_fanout.py).
    # Slices yield to gevent's hub.
    if (
        config.fanout_pacing
        and isinstance(socketio.server.manager, PacedManager)
        and eio_socket.installed()
        and socketio.server.eio.async_mode in ("gevent", "gevent_uwsgi")
    ):
        socketio.server.manager.pace(config.fanout_pace, config.fanout_core_wait_ms / 1000)
        metrics.fanout_pace.set_function(socketio.server.manager.pace_rate)
    metrics.info.info(
        {
            "instance_id": config.instance_id,
            "async_mode": socketio.server.eio.async_mode,
            "websocket_driver": _driver_name(),
        }
    )
    limiter = EventRateLimiter(config.event_rate, config.event_burst, config.event_drop_limit)
    rate = config.fanout_rate
    fanout = None
    if rate is not None:
        per_instance = config.planned_sockets

        def load() -> float:
            # This instance's share of its planned sockets; no plan known: as if at plan.
            return sum(metrics.sockets().values()) / per_instance if per_instance else 1.0

        fanout = FanoutLimiter(rate, config.fanout_burst, load)
    state = AppState(config=config, metrics=metrics, socketio=socketio, limiter=limiter, fanout=fanout)
    app.extensions["siokit"] = state

    socketio.on_namespace(ChatNamespace("/", state))
    socketio.on_namespace(AnonymousNamespace("/anonymous", state))
    socketio.on_namespace(AdminNamespace("/admin", state))
    if config.admin_ui and config.admin_ui_password:
        app.extensions["siokit_admin_ui"] = admin_ui.instrument(
            socketio.server, config.admin_ui_user, config.admin_ui_password, metrics.refused
        )

    @socketio.on_error_default
    def _on_error(exc: Exception) -> dict[str, Any]:
        # Returned value becomes the ack: a bad payload costs the client an error, never the server.
        if isinstance(exc, PayloadError):
            return error(str(exc))
        event = getattr(request, "event", {}).get("message")
        log.exception("handler for %r on %s failed", event, getattr(request, "namespace", "?"))
        return error("internal error")

    if "siokit_admin_ui" in app.extensions and upstream_patches:
        # Any plain HTTP request (a /healthz probe, a scrape) starts the UI's server stats too.
        app.before_request(lambda: start_admin_ui_stats(app))
    register_routes(app, state)
    # Only under gevent: the probe measures the hub, and a threading test app has none to block.
    if socketio.server.eio.async_mode.startswith("gevent"):
        app.before_request(lambda: start_hub_lag_probe(app))
    if config.message_queue is not None:
        metrics.watch_queue_listener(socketio.server.manager)
        # Any plain HTTP request (e.g. the first /healthz probe) starts the queue listener, so this
        # instance hears other instances' emits before its first Socket.IO client connects.
        app.before_request(lambda: start_message_queue(app))
    # Wraps Flask-SocketIO's Engine.IO middleware, so it sees /socket.io requests first.
    # Each layer is held as a bound method (app/wsgi_layers.py): a parked websocket keeps every
    # instance layer's C stack, ~780 bytes per socket each.
    app.wsgi_app = direct(OversizePostGuard(direct(app.wsgi_app), config.max_message_bytes))  # type: ignore[method-assign,assignment]
    # Outermost, so the guard's refusals count too.
    app.wsgi_app = direct(HandshakeFailures(app.wsgi_app, metrics.handshake_failures))  # type: ignore[method-assign,assignment]
    # A websocket keeps its environ for life: its strings are shared with other sockets' (outside
    # HandshakeFailures, so the environ Flask-SocketIO copies is the shared one).
    app.wsgi_app = direct(ShareEnvironStrings(app.wsgi_app))  # type: ignore[method-assign,assignment]
    # Outside even that: nginx's per-handshake upstream check must not pay for Flask.
    app.wsgi_app = direct(Livez(app.wsgi_app))  # type: ignore[method-assign,assignment]
    return app


def start_message_queue(app: Flask) -> None:
    """Subscribe to the message queue now instead of at the first Socket.IO connection.

    python-socketio starts the pub/sub listener lazily, on the first client connection: until then
    (and until its SUBSCRIBE completes) emits published by other instances are lost here. Must run in
    the worker process (after uWSGI's fork), never in the master. Idempotent.
    """
    server = app.extensions["socketio"].server
    if not server.manager_initialized:
        server.manager_initialized = True
        server.manager.initialize()


def start_admin_ui_stats(app: Flask) -> None:
    """Start the Admin UI's "server_stats" now instead of at this instance's first Engine.IO connect.

    python-socketio starts them in `_handle_eio_connect`: an instance (re)started with no client yet
    is missing from the UI's Servers page, though it serves. This sets the same two attributes that
    method sets (socketio/admin.py 5.18.1): only with the version guard's consent. Must run in the
    worker (after uWSGI's fork). Idempotent.
    """
    admin = app.extensions.get("siokit_admin_ui")
    if admin is None or admin.stats_task is not None:
        return
    if admin.stop_stats_event is None:
        admin.stop_stats_event = admin.sio.eio.create_event()
    admin.stats_task = admin.sio.start_background_task(admin._emit_server_stats)


def start_hub_lag_probe(app: Flask) -> None:
    """Start the hub-lag probe in the worker (after uWSGI's fork, like the queue). Idempotent."""
    state = app.extensions["siokit"]
    if not state.metrics.hub_lag.started:
        state.metrics.hub_lag.started = True
        socketio = app.extensions["socketio"]
        state.metrics.hub_lag.task = socketio.start_background_task(state.metrics.hub_lag.run, socketio.sleep)


def _driver_name() -> str:
    from app.upstream.uwsgi_websocket import active_driver_name

    return active_driver_name() or "n/a"
