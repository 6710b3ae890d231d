"""The event-driven uWSGI websocket wrapper, driven by fakes (no uWSGI needed)."""

from __future__ import annotations

import sys
import types
from collections import deque
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.event
import gevent.queue
import pytest

from app.upstream.uwsgi_websocket import EventDrivenWaitMixin, active_driver_name, install

DRIVER = "engineio.async_drivers.gevent_uwsgi"


class SpyEvent(gevent.event.Event):
    """Records the timeout of every wait(): the stock driver passes 3, ours must pass none."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[Any] = []

    def wait(self, timeout: Any = None) -> Any:
        self.timeouts.append(timeout)
        return super().wait(timeout)


class FakeSocket(EventDrivenWaitMixin):
    def __init__(self) -> None:
        self._event = SpyEvent()
        self._send_queue = deque()
        self.received_messages = []
        self.incoming: list[Any] = []  # what websocket_recv_nb() returns, in order
        self.sent: list[Any] = []
        self.recv_calls = 0
        self.watcher_stopped = False
        self.send_error: Exception | None = None

    def _recv_nb(self) -> Any:
        self.recv_calls += 1
        if not self.incoming:
            return b""
        item = self.incoming.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def _send(self, msg: Any) -> None:
        if self.send_error:
            raise self.send_error
        self.sent.append(msg)

    def _decode_received(self, msg: Any) -> Any:
        return msg.decode() if isinstance(msg, bytes) else msg

    def _stop_watcher(self) -> None:
        self.watcher_stopped = True

    # what the read watcher does
    def readable(self, *frames: Any) -> None:
        self.incoming.extend(frames)
        self._event.set()


def test_idle_wait_sleeps_without_timeout_or_polling() -> None:
    ws = FakeSocket()
    waiter = gevent.spawn(ws.wait)
    gevent.sleep(0.2)
    assert not waiter.ready()
    assert ws._event.timeouts == [None]
    assert ws.recv_calls == 0  # nothing polled uWSGI while idle
    ws.readable(b"4hello")
    assert waiter.get(timeout=1) == "4hello"


def test_all_buffered_frames_are_drained_on_one_wakeup() -> None:
    ws = FakeSocket()
    ws.readable(b"4one", b"4two", b"4three")
    assert [ws.wait(), ws.wait(), ws.wait()] == ["4one", "4two", "4three"]
    assert len(ws._event.timeouts) == 1


def test_queued_sends_are_flushed_when_woken() -> None:
    ws = FakeSocket()
    waiter = gevent.spawn(ws.wait)
    gevent.sleep(0)
    ws.send("2")  # e.g. an Engine.IO ping from the server
    ws.send('42["chat"]')
    gevent.sleep(0.05)
    assert ws.sent == ["2", '42["chat"]']
    assert not waiter.ready()  # a send alone does not end wait()
    ws.readable(b"3")
    assert waiter.get(timeout=1) == "3"


def test_server_side_close_flushes_and_returns_none() -> None:
    ws = FakeSocket()
    waiter = gevent.spawn(ws.wait)
    gevent.sleep(0)
    ws.send("1")  # Engine.IO close packet queued by the writer...
    ws.close()  # ...which then closes the socket
    assert waiter.get(timeout=1) is None
    assert ws.sent == ["1"]
    assert ws.watcher_stopped
    assert ws.wait() is None  # stays closed


def test_peer_close_returns_none() -> None:
    ws = FakeSocket()
    ws.readable(OSError("unable to receive websocket message"))
    assert ws.wait() is None
    assert ws.watcher_stopped


def test_send_failure_returns_none() -> None:
    ws = FakeSocket()
    ws.send_error = OSError("broken pipe")
    ws.send("2")
    assert ws.wait() is None
    assert ws.watcher_stopped


# --- install(): patching python-engineio's gevent_uwsgi driver with a fake `uwsgi` module -------


@pytest.fixture
def fake_uwsgi(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    fake = types.ModuleType("uwsgi")
    fake.websocket_handshake = lambda *a: None  # type: ignore[attr-defined]
    fake.websocket_recv_nb = lambda: b""  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uwsgi", fake)
    sys.modules.pop(DRIVER, None)
    yield fake
    # Forget the driver imported against the fake, so nothing else sees it.
    sys.modules.pop(DRIVER, None)
    import engineio.async_drivers as drivers

    if hasattr(drivers, "gevent_uwsgi"):
        delattr(drivers, "gevent_uwsgi")


def test_install_replaces_the_driver(fake_uwsgi: types.ModuleType) -> None:
    from engineio.async_drivers import gevent_uwsgi

    assert gevent_uwsgi._async["websocket"] is gevent_uwsgi.uWSGIWebSocket
    cls = install()
    assert gevent_uwsgi._async["websocket"] is cls
    assert active_driver_name() == "EventDrivenUWSGIWebSocket"
    assert issubclass(cls, gevent_uwsgi.uWSGIWebSocket)
    # The mixin must not shadow the driver's real I/O methods.
    assert cls._send is gevent_uwsgi.uWSGIWebSocket._send
    assert cls._decode_received is gevent_uwsgi.uWSGIWebSocket._decode_received


def test_install_refuses_uwsgi_without_websockets(
    fake_uwsgi: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(fake_uwsgi, "websocket_handshake")
    with pytest.raises(RuntimeError, match="SSL"):
        install()


def test_no_driver_outside_uwsgi() -> None:
    assert DRIVER not in sys.modules
    assert active_driver_name() is None
