"""/healthz, /metrics and the demo page."""

from __future__ import annotations

import re
from typing import Any


def test_healthz(app: Any, connect: Any) -> None:
    connect()
    connect("/anonymous")
    body = app.test_client().get("/healthz").json
    assert body["status"] == "ok"
    assert body["instance"] == "unit:1"
    assert body["release"] == ""  # none given
    assert body["connected"] == 2
    assert body["sockets"] == {"/": 1, "/anonymous": 1}
    assert body["async_mode"] == "threading"
    assert body["websocket_driver"] is None  # not under uWSGI
    assert body["message_queue"] is False


def test_metrics_content(app: Any, connect: Any) -> None:
    client = connect()
    client.emit("echo", 1, callback=True)
    client.emit("echo", 2, callback=True)
    client.emit("bogus", callback=True)
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain")
    text = resp.text
    assert 'siokit_connected_sockets{namespace="/"} 1.0' in text
    assert 'siokit_events_handled_total{event="echo",namespace="/"} 2.0' in text
    assert 'siokit_events_handled_total{event="_unknown",namespace="/"} 1.0' in text
    assert 'siokit_instance_info{async_mode="threading",instance_id="unit:1",websocket_driver="n/a"} 1.0' in text


def test_two_apps_have_private_registries(app: Any, connect: Any) -> None:
    from app import create_app
    from app.config import Config

    other = create_app(Config(instance_id="other"), async_mode="threading")
    connect()
    assert 'siokit_connected_sockets{namespace="/"}' not in other.test_client().get("/metrics").text


def test_index_page_uses_self_hosted_client(app: Any) -> None:
    html = app.test_client().get("/").text
    assert "/static/vendor/socket.io.min.js" in html
    assert all(src.startswith("/static/") for src in re.findall(r'<script src="([^"]+)"', html))
    for element_id in ("nickname", "room", "text", "transport", "instance", "state", "log"):
        assert f'id="{element_id}"' in html
    assert "unit:1" in html


def test_oversized_polling_post_is_refused_before_engineio(app: Any, connect: Any) -> None:
    http = app.test_client()
    resp = http.post("/socket.io/?EIO=4&transport=polling&sid=x", data=b"4" + b"x" * 10_001)
    assert resp.status_code == 413
    resp = http.post("/socket.io/?EIO=4&transport=polling&sid=x", data=b"4hello")
    assert resp.status_code == 400  # within the limit: Engine.IO's own answer (unknown sid)
    assert http.get("/healthz").status_code == 200


def test_livez_answers_before_flask(app: Any) -> None:
    resp = app.test_client().get("/livez")
    assert resp.status_code == 204
    assert resp.data == b""
    # Not a Flask route: the before_request hooks and the handshake counter never see it.
    assert all(rule.rule != "/livez" for rule in app.url_map.iter_rules())
    assert app.test_client().get("/livez/x").status_code == 404


def test_every_wsgi_layer_holds_the_next_as_a_bound_method(app: Any) -> None:
    import types

    from flask_socketio import _SocketIOMiddleware

    from app.environ_strings import ShareEnvironStrings
    from app.handshakes import HandshakeFailures
    from app.livez import Livez
    from app.upstream.guard import OversizePostGuard

    # An instance would be called through a fresh C eval loop that each parked websocket keeps
    # (app/wsgi_layers.py); a bound method is called inline.
    layer = app.wsgi_app
    seen = []
    while isinstance(layer, types.MethodType) and layer.__name__ == "__call__":
        seen.append(type(layer.__self__))
        layer = getattr(layer.__self__, "app", None)
    assert seen == [Livez, ShareEnvironStrings, HandshakeFailures, OversizePostGuard, _SocketIOMiddleware]


def test_direct_unwraps_only_python_instances() -> None:
    import functools
    import types

    from app.livez import Livez
    from app.wsgi_layers import direct

    def fn(environ: Any, start_response: Any) -> list[bytes]:
        return []

    layer = Livez(fn)
    assert isinstance(direct(layer), types.MethodType) and direct(layer).__self__ is layer
    assert direct(fn) is fn
    assert direct(direct(layer)) == direct(layer)  # a bound method stays as it is
    partial = functools.partial(fn)
    assert direct(partial) is partial  # a C callable: nothing to gain


def test_metrics_by_name_reads_what_bench_parses_without_the_process_collector(
    app: Any, connect: Any, monkeypatch: Any
) -> None:
    from app import process_metrics
    from siokit.lab import bench

    listed: list[str] = []

    def counting_open_fds(fd_dir: str = "/proc/self/fd") -> int:
        listed.append(fd_dir)
        return 0

    monkeypatch.setattr(process_metrics, "open_fds", counting_open_fds)
    connect().disconnect()
    connect()
    text = app.test_client().get(f"/metrics?{bench._DISCONNECT_SERIES}").text
    assert listed == []  # the restricted scrape never asked for the fd count
    assert "process_" not in text and "siokit_connected_sockets" not in text
    from app.upstream.frame_writer import STATS  # process-wide: other tests' closes count too

    assert bench.parse_disconnects(text) == {
        "client disconnect": 1,
        bench.SLOW_CONSUMER: STATS.slow_consumer_closes,
    }
    # an unrestricted scrape still has everything
    full = app.test_client().get("/metrics").text
    assert listed and "process_open_fds" in full and 'siokit_connected_sockets{namespace="/"} 1.0' in full
