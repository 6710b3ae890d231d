"""python-engineio's Socket on the fan-out path: packets go straight to the websocket as frames.

Why: python-engineio 4.15.1 (``engineio/socket.py``) sends every packet of a websocket through
``Socket.queue`` to a writer greenlet per socket (``_websocket_handler``'s ``writer``), which encodes
it and calls ``ws.send()``. That costs a queue put, a greenlet wake-up and an encode per recipient,
and the parked writer greenlet ~6 KB per socket. When the websocket can take frames
(``ws.supports_frames``, app/upstream/uwsgi_websocket.py), this module's replacements:
- ``send()``: the same ping-timeout check, then what a paced fan-out still owes the socket
  (app/upstream/paced_fanout.py), then ``ws.send_frame(frame_for(pkt))`` (the frame is built once
  per packet, so once per emit for a broadcast);
- ``close()``: the same steps, without the queue (nothing reads it): ``ws.close()`` makes the request
  greenlet flush the frames (the CLOSE packet last) and end the request;
- ``_websocket_handler()``: upstream's, with the same upgrade probe, receive loop and closing, minus
  the writer greenlet. Packets queued before the upgrade completed go first, in order; the socket's
  queue is then replaced by a shared empty stand-in (``_Drained``).
Any other websocket (the stock driver, gevent-websocket, polling) keeps upstream's code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

# At module level: an import statement in websocket_handler cost 5% of a uWSGI worker's busy samples
# in the 160k ramp (py-spy, importlib's _handle_fromlist; gevent patches the import lock).
from engineio import exceptions, packet

from app.upstream import paced_fanout, ping_timer, uwsgi_websocket
from app.upstream.ws_frame import frame_for

_INFO = logging.INFO
_original: dict[str, Any] = {}
# Sockets this process's handler has upgraded and not yet closed: the Admin UI's polling count is
# the sockets minus these, instead of a walk of every socket (app/admin_ui.py).
_websockets = 0


# Called with every packet the kit's handler receives, or None: the Admin UI's counter (app/admin_ui.py).
_count_in: Callable[[Any], None] | None = None


def websockets() -> int:
    """Sockets on the kit's websocket handler in this process."""
    return _websockets


def count_packets_in(counter: Callable[[Any], None] | None) -> None:
    """Have the kit's websocket handler call `counter(data)` for each packet it receives (None: stop)."""
    global _count_in
    _count_in = counter


class _Drained:
    """What a socket's queue becomes once the kit's handler holds its websocket: empty for good.

    Why: nothing reads the queue after the upgrade (send() writes frames), yet engineio keeps a
    gevent queue per socket, 2.5 KB of the 2.9 KB an Engine.IO Socket costs (tracemalloc, 1,000
    sockets). One shared instance per server replaces it. A late long-polling GET gets "empty" at
    once instead of waiting out its timeout; anything put is dropped, as nothing would read it.
    """

    def __init__(self, empty: type[Exception]) -> None:
        self._empty = empty

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        raise self._empty()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        return None

    def task_done(self) -> None:
        return None

    def join(self, timeout: float | None = None) -> None:
        return None

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True


def _drained(server: Any) -> _Drained:
    queue = getattr(server, "_siokit_drained", None)
    if queue is None:
        queue = server._siokit_drained = _Drained(server.get_queue_empty_exception())
    return queue  # type: ignore[no-any-return]


def _write(sock: Any, pkt: Any) -> None:
    ws = sock._siokit_ws
    if ws is not None:
        ws.send_frame(frame_for(pkt))
    else:
        sock.queue.put(pkt)


def send(self: Any, pkt: Any) -> None:
    """Drop-in for engineio.socket.Socket.send."""
    if not self.check_ping_timeout():
        return
    if paced_fanout.inflight():
        paced_fanout.flush_before(self, _write)  # what a paced fan-out still owes this socket goes first
    _write(self, pkt)
    logger = self.server.logger
    if logger.isEnabledFor(_INFO):
        logger.info(
            "%s: Sending packet %s data %s",
            self.sid,
            packet.packet_names[pkt.packet_type],
            pkt.data if not isinstance(pkt.data, bytes) else "<binary>",
        )


def close(self: Any, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
    """Drop-in for engineio.socket.Socket.close."""
    ws = self._siokit_ws
    if ws is None:
        _original["close"](self, wait=wait, abort=abort, reason=reason)
        return
    if not self.closed and not self.closing:
        self.closing = True
        self.server._trigger_event(
            "disconnect", self.sid, reason or self.server.reason.SERVER_DISCONNECT, run_async=False
        )
        if not abort:
            self.send(packet.Packet(packet.CLOSE))
        self.closed = True
        ws.close()


def websocket_handler(self: Any, ws: Any) -> list[Any]:
    """Drop-in for engineio.socket.Socket._websocket_handler (4.15.1)."""
    if not getattr(ws, "supports_frames", False):
        return _original["_websocket_handler"](self, ws)  # type: ignore[no-any-return]
    global _websockets

    server = self.server

    def websocket_wait() -> Any:
        data = ws.wait()
        if data and len(data) > server.max_http_buffer_size:
            raise ValueError("packet is too large")
        if data is not None and _count_in is not None:
            _count_in(data)
        return data

    if self.connected:
        # the socket was already connected (long-polling), so this is an upgrade
        self.upgrading = True
        decoded = packet.Packet(encoded_packet=websocket_wait())
        if decoded.packet_type != packet.PING or decoded.data != "probe":
            server.logger.info("%s: Failed websocket upgrade, no PING packet", self.sid)
            self.upgrading = False
            return []
        ws.send_frame(frame_for(packet.Packet(packet.PONG, data="probe")))
        self.queue.put(packet.Packet(packet.NOOP))  # end poll
        pkt = websocket_wait()
        decoded = packet.Packet(encoded_packet=pkt)
        if decoded.packet_type != packet.UPGRADE:
            self.upgraded = False
            server.logger.info(
                "%s: Failed websocket upgrade, expected UPGRADE packet, received %s instead.", self.sid, pkt
            )
            self.upgrading = False
            return []
        self.upgraded = True
        self.upgrading = False
    else:
        self.connected = True
        self.upgraded = True

    # What upstream's writer greenlet would have taken from the queue first. The client pauses
    # polling before it sends UPGRADE, so no long-polling GET competes for these.
    queue_empty = server.get_queue_empty_exception()
    while True:
        try:
            pkt = self.queue.get(block=False)
        except queue_empty:
            break
        self.queue.task_done()
        if pkt is None:  # closed while upgrading
            ws.close()
            break
        ws.send_frame(frame_for(pkt))
    self.queue = _drained(server)
    self._siokit_ws = ws
    _websockets += 1
    server.logger.info("%s: Upgrade to websocket successful", self.sid)

    try:
        while True:
            try:
                p = websocket_wait()
            except Exception as e:
                if not self.closed:  # pragma: no cover
                    server.logger.info('%s: Unexpected error "%s", closing connection', self.sid, str(e))
                break
            if p is None:
                break  # closed by the client, the server, or as a slow consumer
            pkt = packet.Packet(encoded_packet=p)
            try:
                self.receive(pkt)
            except exceptions.UnknownPacketError:  # pragma: no cover
                pass
            except exceptions.SocketIsClosedError:  # pragma: no cover
                server.logger.info("Receive error -- socket is closed")
                break
            except Exception:  # pragma: no cover
                server.logger.exception("Unknown receive error")
                break
    finally:
        _websockets -= 1
        ws.close()
        self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)
        self._siokit_ws = None
    return []


def receive_in_hub(ws: Any, data: Any) -> bool:
    """Take an Engine.IO PONG in the hub, from the websocket's read watcher; False for anything else.

    Why: ``Socket.receive`` does nothing with a PONG but schedule the next ping, and the kit's
    ``schedule_ping`` (ping_timer.py) only starts a libev timer, which never blocks. Doing it here
    spares each ping round trip two greenlet switches and the request greenlet's pass through
    ``wait()``, ``Packet`` and ``receive()``. Only on the kit's handler, after the upgrade.
    """
    if data != "3":
        return False
    sock = getattr(ws.app, "__self__", None)  # the handler is the Socket's bound _websocket_handler
    if sock is None or sock._siokit_ws is not ws or type(sock).schedule_ping is not ping_timer.schedule_ping:
        return False
    if _count_in is not None:
        _count_in(data)
    logger = sock.server.logger
    if logger.isEnabledFor(_INFO):
        logger.info("%s: Received packet PONG data None", sock.sid)
    sock.schedule_ping()
    return True


def upgrade_websocket(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
    """Drop-in for engineio.socket.Socket._upgrade_websocket (4.15.1), calling the websocket's bound __call__.

    Why: upstream's ``ws(environ, start_response)`` calls an instance, a fresh C-level eval loop that
    the request greenlet keeps parked for the socket's life (app/wsgi_layers.py: ~780 bytes each).
    """
    if self.upgraded:
        raise OSError("Socket has been upgraded already")
    factory = self.server._async["websocket"]
    if factory is None:
        # the selected async mode does not support websocket
        return self.server._bad_request()
    ws = factory(self._websocket_handler, self.server)
    return ws.__call__(environ, start_response)


def installed() -> bool:
    """Whether engineio's Socket sends through this module (what a paced fan-out's order relies on)."""
    from engineio import socket

    return socket.Socket.send is send


def install() -> None:
    """Patch engineio's synchronous Socket (gevent and gevent_uwsgi modes). Idempotent."""
    from engineio import socket

    if not _original:
        _original["close"] = socket.Socket.close
        _original["_websocket_handler"] = socket.Socket._websocket_handler
        _original["_upgrade_websocket"] = socket.Socket._upgrade_websocket
    socket.Socket._siokit_ws = None  # type: ignore[attr-defined]
    socket.Socket.send = send  # type: ignore[method-assign]
    socket.Socket.close = close  # type: ignore[method-assign]
    socket.Socket._websocket_handler = websocket_handler  # type: ignore[method-assign]
    socket.Socket._upgrade_websocket = upgrade_websocket  # type: ignore[method-assign]
    uwsgi_websocket.receive_in_hub(receive_in_hub)
