"""An event-driven replacement for python-engineio's uWSGI websocket wrapper.

Why: python-engineio's ``src/engineio/async_drivers/gevent_uwsgi.py`` (checked against 4.15.1),
``uWSGIWebSocket.wait()``, does ``self._event.wait(timeout=3)`` "to let uWSGI do its ping/ponging",
because uWSGI 2.0 has no cross-greenlet request context (``uwsgi.request_context`` is 2.1+). Every
idle socket therefore wakes every 3 s; at ~40k sockets that alone saturated two cores in the project's
60k probe. Reported upstream as miguelgrinberg/python-engineio#230 ("gevent_uwsgi use more cpu":
raising that timeout brought gevent_uwsgi to gevent's CPU use); the 3 s timer is still in 4.15.1. The select()
stall near 1024 fds (python-socketio#708) is a different bug, fixed in python-engineio 4.2.1.

The wrapper has almost everything needed to sleep until there is work: upstream's per-socket select
greenlet sets ``_event`` when the fd is readable (here a libev read watcher on the fd does that, without
a greenlet per socket), and ``send()`` sets it when a message is queued. So ``wait()`` below blocks on
that event with no timeout, then does what the original does on wake-up: drain the send queue,
then (without the kit's reader, below) drain ``uwsgi.websocket_recv_nb()``.

What the timeout bought upstream, and who provides it now:
- Dead-peer detection: Engine.IO's own ping/pong (ping_interval + ping_timeout) closes the socket,
  whose writer then calls ``close()``, which sets the event.
- uWSGI's websocket ping: uWSGI 2.0.31 pings only from inside ``websocket_recv_nb()`` (core/websockets.c,
  ``uwsgi_websockets_check_pingpong``). On plain TCP the kit reads the socket itself (below) and never
  calls it, so uWSGI never pings there; Engine.IO pings anyway. With TLS in uWSGI it pings on wake-ups
  only: keep ``websockets-ping-freq`` at minutes (uWSGI's master branch compares last_ping - last_pong,
  which would drop a socket woken between a ping and its pong unless the tolerance exceeds the frequency).
- Server-side close: the original returned only after the client hung up (polled every 3 s, with the
  select greenlet already killed). Here ``close()`` marks the socket closed, and ``wait()`` flushes what
  the writer queued (the Engine.IO close packet) and returns None.

The fan-out path (issue #9): under uWSGI 2.0 every packet still had to reach the request greenlet
before ``uwsgi.websocket_send()`` could write it. Now, when the connection is plain TCP (uWSGI's
``http-socket``, as the kit deploys it), the socket gets a ``FrameWriter`` (frame_writer.py) on
``uwsgi.connection_fd()`` and ``send_frame()`` writes pre-built frames to it from any greenlet or the
hub. Checked against uWSGI 2.0.31 (core/websockets.c, plugins/gevent): the accepted fd is
non-blocking in gevent mode (``__call__`` makes sure), and uWSGI writes to it only in the handshake,
in ``websocket_send*()`` and inside ``websocket_recv_nb()`` (a pong to a client's ping, or its own
ping), none of which is called on this path after the handshake.

The read path on plain TCP: the read watcher's callback (``_on_readable``, in the hub) reads the fd
and cuts frames (ws_reader.py). An Engine.IO pong is handled there (eio_socket.receive_in_hub), so
an idle socket's request greenlet never wakes; a client's websocket PING gets its PONG through the
writer, in order with the other frames. Other messages go to ``received_messages`` and wake the
request greenlet, and reading stops until it has taken them (backpressure through TCP). RFC 6455
forbids a client to send frames before the handshake's response, so uWSGI has read none of them.
TLS terminated by uWSGI (``HTTPS`` in the environ) keeps the send queue and uWSGI's reader, since
raw reads and writes would bypass the TLS layer.

Only importable parts live at module level: ``engineio.async_drivers.gevent_uwsgi`` imports ``uwsgi``,
which exists only inside a uWSGI worker, so ``install()`` imports it lazily.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from app.upstream import ws_reader
from app.upstream.frame_writer import FrameWriter

log = logging.getLogger(__name__)

_DRIVER_MODULE = "engineio.async_drivers.gevent_uwsgi"
DEFAULT_MAX_BACKLOG_BYTES = 1 << 20
CLOSE_FLUSH_TIMEOUT = 5.0  # seconds a closing socket may take to drain its last frames
# One read() in the hub. A pong is 7 bytes; a longer message takes more reads (the watcher is level-triggered).
READ_BYTES = 16384
# uWSGI's websockets-max-size default (1024 KB), for a handler that is not engineio's Socket's.
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20


class EventDrivenWaitMixin:
    """wait()/close() without polling. Needs the attributes set by engineio's uWSGIWebSocket."""

    _event: Any
    # A deque, not engineio's gevent Queue: only this greenlet reads it and never blocks on it, and
    # a gevent Queue costs ~2.5 KB per socket (tracemalloc, 2,000 sockets). Made at the first send():
    # with a FrameWriter nothing is ever queued here, and an empty deque is ~740 bytes.
    _send_queue: deque[Any] | None = None
    received_messages: list[Any]
    _closed: bool = False
    # The fan-out path: None keeps the send queue and uWSGI's reader (TLS, or fakes without an fd).
    _writer: FrameWriter | None = None
    # The kit's reader (with a FrameWriter): set while messages wait for the request greenlet.
    _reading_paused: bool = False
    # The kit's reader: a frame split across reads (ws_reader.Partial), else None.
    _partial: ws_reader.Partial | None = None

    # Provided by the concrete class (engineio's uWSGIWebSocket, or a fake in unit tests). Declared
    # as attributes, not stub methods: the mixin comes first in the MRO and must not shadow them.
    _send: Callable[[Any], None]
    _decode_received: Callable[[Any], Any]
    _recv_nb: Callable[[], Any]
    _read: Callable[[], bytes]
    _max_message_bytes: Callable[[], int]
    _protocol_error: Callable[[ws_reader.ProtocolError], None]
    _stop_watcher: Callable[[], None]
    _start_watcher: Callable[[], None]
    _wait_writable: Callable[[int, float], bool]

    @property
    def supports_frames(self) -> bool:
        """True when send_frame() may be used (read by app/upstream/eio_socket.py)."""
        return self._writer is not None

    def send_frame(self, frame: bytes) -> None:
        """Write a pre-built websocket frame now, or queue it behind earlier ones. Never switches."""
        writer = self._writer
        if writer is not None:
            writer.write(frame)

    def send(self, msg: Any) -> None:
        """Queue a message; wait(), in the request greenlet, transmits it (uWSGI 2.0 needs that)."""
        if self._send_queue is None:
            self._send_queue = deque()
        self._send_queue.append(msg)
        self._event.set()

    def close(self) -> None:
        self._closed = True
        self._stop_watcher()
        self._event.set()

    def _attach_writer(self, fd: int, loop: Any, max_backlog: int) -> None:
        self._writer = FrameWriter(
            fd, loop, max_backlog, on_overflow=self.close, on_drained=_nothing, on_broken=self.close
        )

    def _on_readable(self) -> None:
        """The read watcher's callback with a FrameWriter. Runs in the hub: never blocks or switches."""
        writer = self._writer
        if writer is None or self._closed:
            return
        try:
            data = self._read()
        except BlockingIOError:
            return
        except OSError:  # reset by the peer
            self.close()
            return
        if not data:  # the peer hung up
            self.close()
            return
        try:
            messages, partial = ws_reader.parse(data, self._partial, self._max_message_bytes())
        except ws_reader.ProtocolError as e:
            self._protocol_error(e)
            writer.write(ws_reader.close_frame(e.code))
            self.close()
            return
        if partial is not self._partial:
            self._partial = partial
        queued = False
        hub = _receive_in_hub
        for opcode, payload in messages:
            if opcode <= ws_reader.BINARY:
                if hub is not None and hub(self, payload):
                    continue  # an Engine.IO pong: handled here, the request greenlet sleeps on
                self.received_messages.append(payload)
                queued = True
            elif opcode == ws_reader.PING:
                writer.write(ws_reader.control_frame(ws_reader.PONG, payload))
            elif opcode == ws_reader.CLOSE:
                # Echo the client's code (RFC 6455 5.5.1); 1005 means it sent none.
                reply = ws_reader.control_frame(ws_reader.CLOSE) if payload == 1005 else ws_reader.close_frame(payload)
                writer.write(reply)
                self.close()
                return
        if queued:
            # Backpressure: read on only once the request greenlet has taken these (wait()), so a
            # client that sends faster than its handlers run waits in TCP, not in this list.
            self._reading_paused = True
            self._stop_watcher()
            self._event.set()

    def _flush(self) -> bool:
        """Send everything queued; False if the connection broke."""
        queue = self._send_queue
        while queue:
            msg = queue.popleft()
            try:
                self._send(msg)
            except OSError:
                return False
        return True

    def _final_flush(self) -> None:
        self._flush()
        writer = self._writer
        if writer is None or writer.closed:
            return
        # The Engine.IO CLOSE packet and whatever preceded it, bounded in time.
        while not writer.drain() and not writer.closed:
            if not self._wait_writable(writer.fd, CLOSE_FLUSH_TIMEOUT):
                break
        writer.close()

    def wait(self) -> Any:
        """Next received message, or None once the connection is closed (either side)."""
        while True:
            if self.received_messages:
                return self.received_messages.pop(0)
            if self._closed:
                # Closed by the server (engineio), a slow consumer or a broken pipe: deliver what
                # can still be delivered, then stop.
                self._final_flush()
                return None
            if self._reading_paused:
                self._reading_paused = False
                self._start_watcher()
            # No timeout: the read watcher (readable fd), send(), close() and the writer all set it.
            self._event.wait()
            self._event.clear()
            if not self._flush():
                self.close()
                return None
            if self._closed or self._writer is not None:
                continue  # with a FrameWriter the hub reads (_on_readable)
            while True:
                try:
                    msg = self._recv_nb()
                except OSError:  # closed by the peer, a protocol error, or uWSGI's ping check
                    self.close()
                    return None
                if not msg:
                    break
                self.received_messages.append(self._decode_received(msg))


def _nothing() -> None:
    return None


# Set by app/upstream/eio_socket.py: handles a message in the hub and returns True (an Engine.IO
# pong), or returns False to leave it to the request greenlet.
_receive_in_hub: Callable[[Any, Any], bool] | None = None


def receive_in_hub(handler: Callable[[Any, Any], bool] | None) -> None:
    global _receive_in_hub
    _receive_in_hub = handler


def _build_class(max_backlog: int) -> type:
    import gevent
    import uwsgi  # only inside a uWSGI worker
    from engineio.async_drivers.gevent_uwsgi import uWSGIWebSocket
    from gevent.socket import wait_write

    from app.upstream.wakeup import Wakeup

    class EventDrivenUWSGIWebSocket(EventDrivenWaitMixin, uWSGIWebSocket):  # type: ignore[misc,valid-type]
        """python-engineio's uWSGIWebSocket with EventDrivenWaitMixin's wait() and fan-out writer."""

        def __init__(self, handler: Any, server: Any) -> None:
            super().__init__(handler, server)
            self._closed = False
            self._watcher: Any = None

        def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
            if hasattr(uwsgi, "request_context"):
                return super().__call__(environ, start_response)
            # engineio's __call__ (4.15.1) with one change: instead of a greenlet per socket blocked
            # in select() (a greenlet, its saved stack and a selector, for each of 160k idle
            # sockets), a libev read watcher on the fd sets the event from the hub.
            self._sock = uwsgi.connection_fd()
            self.environ = environ
            uwsgi.websocket_handshake()
            self._req_ctx = None
            self._event = Wakeup()  # app/upstream/wakeup.py: gevent's Event, with a shallower park
            self._send_queue = None
            loop = gevent.get_hub().loop
            self._watcher = loop.io(self._sock, 1)
            if environ.get("HTTPS") not in ("on", "1") and environ.get("wsgi.url_scheme") != "https":
                _ensure_nonblocking(self._sock)
                self._attach_writer(self._sock, loop, max_backlog)
            self._start_watcher()
            try:
                self.app(self)
            finally:
                # engineio returns without close() when a websocket upgrade fails its probe; the
                # watchers would then outlive the request and watch a recycled fd.
                if self._watcher is not None:
                    self._watcher.close()
                    self._watcher = None
                if self._writer is not None:
                    self._writer.close()
            uwsgi.disconnect()
            return ""

        def _recv_nb(self) -> Any:
            return uwsgi.websocket_recv_nb()

        def _read(self) -> bytes:
            return os.read(self._sock, READ_BYTES)

        def _max_message_bytes(self) -> int:
            sock = getattr(self.app, "__self__", None)  # engineio's Socket, whose handler this is
            limit = getattr(getattr(sock, "server", None), "max_http_buffer_size", None)
            return limit if isinstance(limit, int) else DEFAULT_MAX_MESSAGE_BYTES

        def _protocol_error(self, error: ws_reader.ProtocolError) -> None:
            # Through engineio's logger: app/badinput.py counts it (bad_frame) and throttles the log.
            sock = getattr(self.app, "__self__", None)
            logger = getattr(getattr(sock, "server", None), "logger", log)
            logger.warning("Websocket protocol error: %s (close code %d)", str(error)[:200], error.code)

        def _stop_watcher(self) -> None:
            if self._watcher is not None:
                self._watcher.stop()

        def _start_watcher(self) -> None:
            if self._watcher is not None:
                # With a FrameWriter the kit reads in the hub; else the request greenlet calls uWSGI.
                self._watcher.start(self._on_readable if self._writer is not None else self._event.set)

        def _wait_writable(self, fd: int, timeout: float) -> bool:
            try:
                wait_write(fd, timeout=timeout)
            except Exception:  # gevent's timeout, or the fd went away
                return False
            return True

        def wait(self) -> Any:
            if self._req_ctx is not None:
                # uWSGI >= 2.1 blocks in websocket_recv() with a request context: nothing to fix.
                return uWSGIWebSocket.wait(self)
            return EventDrivenWaitMixin.wait(self)

        def send(self, msg: Any) -> None:
            if self._req_ctx is not None:
                uWSGIWebSocket.send(self, msg)
                return
            EventDrivenWaitMixin.send(self, msg)

        def close(self) -> None:
            if self._req_ctx is not None:
                uWSGIWebSocket.close(self)
                return
            EventDrivenWaitMixin.close(self)

    return EventDrivenUWSGIWebSocket


def _ensure_nonblocking(fd: int) -> None:
    # uWSGI's async modes already accept non-blocking (its reads/writes wait on EAGAIN through the
    # gevent hooks); a blocking fd here would let a write from the hub stall the whole worker.
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not flags & os.O_NONBLOCK:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


def install(max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES) -> type:
    """Make python-engineio's gevent_uwsgi mode use the event-driven wrapper. Call before create_app()."""
    from engineio.async_drivers import gevent_uwsgi

    if gevent_uwsgi._async.get("websocket") is None:
        # Without SSL uWSGI has no websocket_handshake and clients silently stay on long-polling.
        raise RuntimeError("this uWSGI has no websocket support (build it with SSL); see unbit/uwsgi#744")
    cls = _build_class(max_backlog_bytes)
    gevent_uwsgi._async["websocket"] = cls
    log.info("engineio gevent_uwsgi websocket driver: %s", cls.__name__)
    return cls


def active_driver_name() -> str | None:
    """Name of the websocket class engineio's gevent_uwsgi mode uses, or None outside uWSGI."""
    module = sys.modules.get(_DRIVER_MODULE)
    if module is None:
        return None
    cls = module._async.get("websocket")
    return None if cls is None else cls.__name__
