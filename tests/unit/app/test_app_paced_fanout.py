"""Paced fan-out (app/upstream/paced_fanout.py) on real sockets and the gevent hub, without uWSGI.

Emits go through the kit's managers (room_index.py), the patched engineio Socket.send, the frame
cache and FrameWriter into socketpairs, as in test_app_fanout.py, whose harness this reuses.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_app_fanout import OPS, Cluster, FakeSioServer, _event_frame, parse_frames, run_ops

from app.config import Config, ConfigError
from app.factory import create_app
from app.upstream import eio_socket, paced_fanout
from app.upstream.room_index import IndexedManager


class PacedSioServer(FakeSioServer):
    """FakeSioServer plus what a paced fan-out needs from socketio.Server under gevent."""

    def start_background_task(self, target: Any, *args: Any) -> Any:
        return gevent.spawn(target, *args)


def _paced(n: int, rate: float | None) -> Cluster:
    c = Cluster(n, IndexedManager(), PacedSioServer)
    c.manager.pace(rate)
    return c


def _settle(c: Cluster, n: int) -> None:
    """Wait for every fan-out to end and every backlog to drain, reading all the while."""
    for _ in range(5000):
        for i in range(n):
            c.read(i)
        busy = paced_fanout.inflight() or any(s._siokit_ws.writer.pending for s in c.eio.sockets.values())
        if not busy:
            break
        gevent.sleep(0.001)
    for i in range(n):
        c.read(i)


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(paced_fanout, "SLICE", 2)  # 6 clients: every emit to more than 2 is sliced
    yield
    assert paced_fanout.inflight() == 0


# The unsliced test's operations, and closes: a fan-out may still owe a socket that closes.
ops = st.lists(st.one_of(*OPS, st.tuples(st.just("close"), st.integers(0, 5), st.just(0))), max_size=60)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(ops=ops)
def test_sliced_fanouts_keep_every_clients_order(small_slices: None, ops: list[tuple[str, int, int]]) -> None:
    """Fan-outs in flight (yielding between slices) interleaved with direct emits, room emits,
    pings, reads and closes: each client gets exactly what was emitted to it, in emit order."""
    n = 6
    c = _paced(n, rate=None)
    try:
        run_ops(c, n, ops)
        _settle(c, n)
        for i in range(n):
            frames, rest = parse_frames(c.received[i])
            assert rest == b""
            assert [payload for _, payload in frames] == c.expected[i], f"client {i}"
    finally:
        c.close()


def test_a_direct_emit_during_a_fanout_is_written_at_once_after_what_the_fanout_owes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 40
    monkeypatch.setattr(paced_fanout, "SLICE", 4)
    c = _paced(n, rate=100.0)  # 40 sockets at 100/s: ~0.4 s, 10 slices
    try:
        c.manager.emit("m", "everyone", "/")
        gevent.sleep(0.05)
        assert paced_fanout.inflight() == 1
        last = n - 1
        c.manager.emit("m", "just you", "/", room=c.sid(last))  # the echo's answer, say
        c.read(last)
        frames, _ = parse_frames(c.received[last])
        assert [p for _, p in frames] == [_event_frame("m", "everyone"), _event_frame("m", "just you")]
        assert paced_fanout.inflight() == 1  # answered while the fan-out is still under way
        _settle(c, n)
        for i in range(n):
            frames, _ = parse_frames(c.received[i])
            assert frames[0][1] == _event_frame("m", "everyone"), f"client {i}"
            assert len(frames) == (2 if i == last else 1)  # the fan-out did not send it twice
    finally:
        c.close()


def test_the_hub_serves_reads_between_slices() -> None:
    """While a long fan-out is under way, a socket read (an echo arriving) is served by the hub."""
    n = 300
    c = _paced(n, rate=None)  # no pacing: slices and yields only
    a, b = socket.socketpair()
    served: list[float] = []

    def reader() -> None:
        from gevent.socket import wait_read

        wait_read(a.fileno())
        served.append(paced_fanout.inflight())

    try:
        g = gevent.spawn(reader)
        gevent.sleep(0)  # the reader waits in the hub
        c.manager.emit("m", "x" * 100, "/")
        b.send(b"echo")  # readable from now on; the fan-out has 5 slices to go
        _settle(c, n)
        g.join(timeout=1)
        assert served == [1]  # the read was served before the fan-out ended
    finally:
        a.close()
        b.close()
        c.close()


def test_a_fanout_keeps_to_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mechanics only: 256 sockets at 1,000/s take about 0.25 s; without a rate, no sleeps."""
    n = 256
    monkeypatch.setattr(paced_fanout, "SLICE", 16)
    c = _paced(n, rate=1000.0)
    try:
        began = time.monotonic()
        c.manager.emit("m", "paced", "/")
        _settle(c, n)
        took = time.monotonic() - began
        assert took >= 0.2  # the last slice starts after 240 deliveries: 0.24 s at 1,000/s
        assert all(parse_frames(c.received[i])[0] for i in range(n))
    finally:
        c.close()


def test_a_socket_gone_during_the_fanout_is_skipped_without_a_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    n = 20
    monkeypatch.setattr(paced_fanout, "SLICE", 2)
    c = _paced(n, rate=200.0)
    try:
        c.manager.emit("m", "everyone", "/")
        gevent.sleep(0.02)
        gone = c.eio.sockets.pop(f"e{n - 1}")
        with caplog.at_level(logging.DEBUG):
            _settle(c, n)
        assert not [r for r in caplog.records if "Cannot send" in r.getMessage()]
        assert c.received[n - 1] == b""
        assert parse_frames(c.received[0])[0]
        gone._siokit_ws.close()
    finally:
        c.close()


def test_small_emits_and_unpaced_managers_deliver_before_emit_returns() -> None:
    c = _paced(3, rate=10.0)  # 3 recipients <= SLICE: sent in the caller, no greenlet
    try:
        c.manager.emit("m", "now", "/")
        assert paced_fanout.inflight() == 0
        for i in range(3):
            c.read(i)
            assert parse_frames(c.received[i])[0] == [(0x81, _event_frame("m", "now"))]
    finally:
        c.close()


def test_config_pace_is_the_plans_sockets_over_its_fanout_time() -> None:
    cfg = Config.from_env({"SIOKIT_PLANNED_SOCKETS": "16000", "SIOKIT_BROADCAST_FANOUT_S": "4.94"})
    assert cfg.fanout_pacing is True
    assert cfg.fanout_pace == pytest.approx(16000 / 4.94)
    assert Config.from_env({}).fanout_pace is None  # no plan: slices, no rate
    assert Config.from_env({"SIOKIT_FANOUT_PACING": "off"}).fanout_pacing is False
    assert cfg.fanout_core_wait_ms == 2.0
    assert Config.from_env({"SIOKIT_FANOUT_CORE_WAIT_MS": "0"}).fanout_core_wait_ms == 0.0
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(ConfigError, match=r"SIOKIT_FANOUT_CORE_WAIT_MS must be a number >= 0"):
            Config.from_env({"SIOKIT_FANOUT_CORE_WAIT_MS": bad})


def test_pacing_is_on_only_where_the_kits_send_keeps_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from engineio import socket as eio_sock

    cfg = Config(planned_sockets=1000, broadcast_fanout_s=2.0)
    plain = create_app(cfg, async_mode="gevent", upstream_patches=True)
    assert plain.extensions["socketio"].server.manager._paced is False  # stock Socket.send
    monkeypatch.setattr(eio_sock.Socket, "send", eio_socket.send)
    paced = create_app(cfg, async_mode="gevent", upstream_patches=True)
    manager = paced.extensions["socketio"].server.manager
    assert manager._paced is True and manager._pace is not None and manager._pace.ceiling == 500.0
    assert manager._pace.core_wait_s == 0.002
    fixed = create_app(Config(planned_sockets=1000, broadcast_fanout_s=2.0, fanout_core_wait_ms=0), async_mode="gevent")
    assert fixed.extensions["socketio"].server.manager._pace.adaptive is False
    registry = paced.extensions["siokit"].metrics.registry
    assert registry.get_sample_value("siokit_fanout_pace") == 500.0  # read from the pace at each scrape
    manager._pace.rate = 125.0
    assert registry.get_sample_value("siokit_fanout_pace") == 125.0
    threads = create_app(cfg, async_mode="threading", upstream_patches=True)
    assert threads.extensions["socketio"].server.manager._paced is False  # slices yield to gevent's hub
    stock = create_app(cfg, async_mode="gevent", upstream_patches=False)
    assert not getattr(stock.extensions["socketio"].server.manager, "_paced", False)  # the guard's fallback
    off = create_app(Config(planned_sockets=1000, broadcast_fanout_s=2.0, fanout_pacing=False), async_mode="gevent")
    assert off.extensions["socketio"].server.manager._paced is False
