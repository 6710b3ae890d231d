"""Operator metrics (app/metrics.py, app/hublag.py): disconnect reasons, process fds/RSS, hub lag."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from app.hublag import HubLag


def _metrics(app: Any) -> str:
    return str(app.test_client().get("/metrics").get_data(as_text=True))


def test_client_disconnect_counted_by_reason(app: Any, connect: Any) -> None:
    client = connect("/")
    assert 'siokit_disconnects_total{namespace="/",reason="client disconnect"}' not in _metrics(app)
    client.disconnect()
    assert 'siokit_disconnects_total{namespace="/",reason="client disconnect"} 1.0' in _metrics(app)


def test_unknown_reason_counted_as_other(app: Any) -> None:
    app.extensions["siokit"].metrics.socket_disconnected("/", "a reason from a later engineio")
    app.extensions["siokit"].metrics.socket_disconnected("/", None)
    assert 'siokit_disconnects_total{namespace="/",reason="other"} 2.0' in _metrics(app)


def test_process_fds_and_rss_exported(app: Any) -> None:
    text = _metrics(app)
    for name in ("process_open_fds ", "process_max_fds ", "process_resident_memory_bytes ", "python_info{"):
        assert name in text, name


def test_hub_lag_records_delay_past_interval() -> None:
    registry = CollectorRegistry()
    probe = HubLag(registry, interval=1.0)
    now = [100.0]

    def late_sleep(seconds: float) -> None:
        now[0] += seconds + 0.75  # the hub was blocked for 0.75 s

    assert probe.sample(late_sleep, clock=lambda: now[0]) == 0.75
    assert registry.get_sample_value("siokit_hub_lag_seconds") == 0.75
    assert registry.get_sample_value("siokit_hub_lag_bucket", {"le": "0.5"}) == 0.0
    assert registry.get_sample_value("siokit_hub_lag_bucket", {"le": "1.0"}) == 1.0


def test_hub_lag_never_negative() -> None:
    registry = CollectorRegistry()
    probe = HubLag(registry, interval=1.0)
    now = [5.0]

    def early_sleep(seconds: float) -> None:
        now[0] += seconds - 0.01

    assert probe.sample(early_sleep, clock=lambda: now[0]) == 0.0


def test_hub_lag_probe_starts_once_under_gevent(config: Any) -> None:
    import gevent

    from app import create_app

    gevent_app = create_app(config, async_mode="gevent")
    client = gevent_app.test_client()
    client.get("/healthz")
    client.get("/healthz")
    probe = gevent_app.extensions["siokit"].metrics.hub_lag
    assert probe.started
    try:
        gevent.sleep(probe.interval + 0.2)  # the probe ran one sample on the hub
        registry = gevent_app.extensions["siokit"].metrics.registry
        assert registry.get_sample_value("siokit_hub_lag_count") == 1.0  # one task, not two
    finally:
        # An endless greenlet left behind would shift other tests' gevent timings.
        assert isinstance(probe.task, gevent.Greenlet)
        probe.task.kill()


def test_messages_delivered_counts_recipients(app: Any, connect: Any) -> None:
    alice, bob, carol = connect(auth={"nickname": "alice"}), connect(), connect()
    registry = app.extensions["siokit"].metrics.registry
    before = registry.get_sample_value("siokit_messages_delivered_total") or 0.0
    assert alice.emit("chat", {"text": "hi"}, callback=True)["ok"]  # to bob and carol, not alice
    assert registry.get_sample_value("siokit_messages_delivered_total") == before + 2
    for client in (alice, bob):
        assert client.emit("join", {"room": "lobby"}, callback=True)["ok"]
    assert alice.emit("room_message", {"room": "lobby", "text": "hi"}, callback=True)["ok"]  # bob only
    assert registry.get_sample_value("siokit_messages_delivered_total") == before + 3
    assert carol.is_connected()


def test_planned_sockets_from_env(config: Any) -> None:
    from app import create_app
    from app.config import Config

    assert Config.from_env({"SIOKIT_PLANNED_SOCKETS": "13000"}).planned_sockets == 13000
    planned = create_app(Config(**{**config.__dict__, "planned_sockets": 13000}), async_mode="threading")
    assert "siokit_planned_sockets 13000.0" in _metrics(planned)


def test_failed_handshakes_counted_by_status(app: Any) -> None:
    client = app.test_client()
    registry = app.extensions["siokit"].metrics.registry
    ok = client.get("/socket.io/?EIO=4&transport=polling")
    assert ok.status_code == 200
    bad = client.get("/socket.io/?EIO=4&transport=carrier-pigeon")
    assert bad.status_code == 400
    old = client.get("/socket.io/?EIO=2&transport=polling")
    assert old.status_code == 400
    client.get("/socket.io/?EIO=4&transport=polling&sid=nosuchsid")  # not a handshake: not counted
    assert registry.get_sample_value("siokit_handshake_failures_total", {"status": "400"}) == 2.0


def test_queue_listener_running() -> None:
    import threading
    from types import SimpleNamespace

    import gevent

    from app.metrics import listener_running

    assert listener_running(SimpleNamespace()) == 0.0  # never initialized
    greenlet = gevent.spawn(gevent.sleep, 10)
    assert listener_running(SimpleNamespace(thread=greenlet)) == 1.0
    greenlet.kill()
    assert listener_running(SimpleNamespace(thread=greenlet)) == 0.0
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    assert listener_running(SimpleNamespace(thread=thread)) == 1.0
    stop.set()
    thread.join()
    assert listener_running(SimpleNamespace(thread=thread)) == 0.0


def test_queue_listener_gauge_only_with_a_queue(config: Any) -> None:
    from app import create_app
    from app.config import Config

    queued = create_app(Config(**{**config.__dict__, "message_queue": "redis://127.0.0.1:1/0"}), async_mode="threading")
    # No request yet, so start_message_queue has not run: not listening.
    assert "siokit_queue_listener_running 0.0" in queued.extensions["siokit"].metrics.render().decode()
    single = create_app(config, async_mode="threading")
    assert "siokit_queue_listener_running" not in single.extensions["siokit"].metrics.render().decode()
