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


# --- the kit's reader: with a FrameWriter, the hub reads and cuts frames (ws_reader.py) ---------


class FakeWriter:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed = False
        self.fd = -1

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def drain(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class ReaderSocket(EventDrivenWaitMixin):
    """The read watcher's side: readable() runs _on_readable() as the hub would."""

    def __init__(self) -> None:
        self._event = gevent.event.Event()
        self.received_messages = []
        self._writer = FakeWriter()  # type: ignore[assignment]
        self.reads: list[bytes | Exception] = []
        self.watching = True
        self.errors: list[Any] = []

    def _read(self) -> bytes:
        item = self.reads.pop(0) if self.reads else BlockingIOError()
        if isinstance(item, Exception):
            raise item
        return item

    def _max_message_bytes(self) -> int:
        return 1000

    def _protocol_error(self, error: Any) -> None:
        self.errors.append(error)

    def _stop_watcher(self) -> None:
        self.watching = False

    def _start_watcher(self) -> None:
        self.watching = True

    def _recv_nb(self) -> Any:
        raise AssertionError("uWSGI's reader is not used with a FrameWriter")

    def readable(self, data: bytes | Exception) -> None:
        self.reads.append(data)
        assert self.watching, "the hub read while reading was paused"
        self._on_readable()


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.fixture
def hub_pongs() -> Iterator[list[Any]]:
    import app.upstream.uwsgi_websocket as driver

    taken: list[Any] = []

    def receive(ws: Any, data: Any) -> bool:
        if data == "3":
            taken.append(data)
            return True
        return False

    driver.receive_in_hub(receive)
    yield taken
    driver.receive_in_hub(None)


def test_a_pong_is_taken_in_the_hub_and_the_request_greenlet_sleeps_on(hub_pongs: list[Any]) -> None:
    ws = ReaderSocket()
    waiter = gevent.spawn(ws.wait)
    gevent.sleep(0)
    ws.readable(frame(b"3"))
    gevent.sleep(0.05)
    assert hub_pongs == ["3"] and not waiter.ready() and ws.watching
    ws.readable(frame(b'42["chat","hi"]') + frame(b"3"))
    assert waiter.get(timeout=1) == '42["chat","hi"]'
    assert hub_pongs == ["3", "3"]


def test_reading_pauses_until_the_request_greenlet_takes_the_messages(hub_pongs: list[Any]) -> None:
    ws = ReaderSocket()
    ws.readable(frame(b"4one") + frame(b"4two"))
    assert not ws.watching  # a client sending faster than its handlers waits in TCP
    assert ws.wait() == "4one" and not ws.watching
    assert ws.wait() == "4two"
    waiter = gevent.spawn(ws.wait)
    gevent.sleep(0.01)
    assert ws.watching  # taken: reading again
    ws.readable(frame(b"4three"))
    assert waiter.get(timeout=1) == "4three"


def test_a_client_ping_gets_its_pong_through_the_writer(hub_pongs: list[Any]) -> None:
    ws = ReaderSocket()
    ws.readable(frame(b"are you there", 0x9))
    assert ws._writer.frames == [b"\x8a\x0dare you there"]  # type: ignore[union-attr]
    assert not ws.received_messages


def test_hang_up_reset_close_and_bad_frames_end_wait(hub_pongs: list[Any]) -> None:
    for data, written in [
        (b"", []),
        (ConnectionResetError(), []),
        (frame(b"\x03\xe9", 0x8), [b"\x88\x02\x03\xe9"]),  # the client's close code is echoed
        (b"\x81\x01x", [b"\x88\x02\x03\xea"]),  # unmasked: 1002
    ]:
        ws = ReaderSocket()
        ws.readable(data)
        assert ws.wait() is None and ws._closed
        assert ws._writer.frames == written  # type: ignore[union-attr]
        assert len(ws.errors) == (1 if written == [b"\x88\x02\x03\xea"] else 0)
