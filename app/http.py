"""Plain HTTP routes: the demo page, /healthz and /metrics."""

from __future__ import annotations

from flask import Flask, Response, jsonify, render_template, request

from app.metrics import CONTENT_TYPE_LATEST
from app.state import AppState
from app.upstream.uwsgi_websocket import active_driver_name


def register_routes(app: Flask, state: AppState) -> None:
    @app.get("/")
    def index() -> str:
        return render_template("index.html", instance_id=state.config.instance_id)

    @app.get("/healthz")
    def healthz() -> Response:
        sockets = state.metrics.sockets()
        return jsonify(
            status="ok",
            instance=state.config.instance_id,
            release=state.config.release,
            connected=sum(sockets.values()),
            sockets=sockets,
            async_mode=state.socketio.server.eio.async_mode,
            # Which websocket class python-engineio will use under uWSGI: proves the adapter is on.
            websocket_driver=active_driver_name(),
            message_queue=state.config.message_queue is not None,
            # Without it the message queue's socket blocks the hub (Flask-SocketIO #531).
            monkey_patched=_monkey_patched(),
        )

    @app.get("/metrics")
    def metrics() -> Response:
        # name[]=... selects series, as prometheus_client's own exporter does
        names = request.args.getlist("name[]")
        return Response(state.metrics.render(names), content_type=CONTENT_TYPE_LATEST)


def _monkey_patched() -> bool | None:
    """Whether gevent patched the socket module; None when gevent is not in use."""
    import sys

    monkey = sys.modules.get("gevent.monkey")
    return None if monkey is None else bool(monkey.is_module_patched("socket"))
