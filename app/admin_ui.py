"""The Socket.IO Admin UI (https://socket.io/docs/v4/admin-ui/) through python-socketio's instrument().

Opt-in (SIOKIT_ADMIN_UI=on) and in production mode only: the UI then gets aggregates (every 2 s per
instance: clients, polling clients, sockets per namespace, packets and bytes). Development mode
sends the UI every socket, room join and event, and wraps the manager's emit with a loop over every
recipient: unusable at 10k+ sockets.

What instrument() does here (python-socketio 5.18.1, socketio/admin.py):
- a connect handler on ADMIN_UI_NAMESPACE ("/admin" is the app's own token namespace), checked by
  `_Credentials`; read-only, because production mode registers none of the UI's write handlers;
- wraps Engine.IO's connect/disconnect handlers and, class-wide, `Socket.handle_post_request` and
  `Socket._websocket_handler` to count packets and bytes. It must run after
  app/upstream/eio_socket.install() (app/wsgi.py does), so that it wraps the kit's handler. On the
  kit's event driver, `count_websocket_packets` then puts the kit's handler back and has it count the
  packets in itself (below). That handler writes frames with `ws.send_frame`, which no wrapper sees:
  websocket packets *out* are not counted in the UI's charts (polling ones and everything *in* are);
- each instance emits "server_stats" to the admin namespace through the client manager: with the
  Redis manager, a UI connected to any instance sees every instance (serverId = manager.host_id);
- server_stats takes len(eio.sockets) and scans them for polling clients every 2 s, O(sockets of
  the instance), from the first Engine.IO connect on. On the kit's websocket handler,
  `count_polling_by_upgrades` replaces that scan with a count (below);
- server_stats lists the namespaces of `sio.handlers` only, where Flask-SocketIO's class-based
  namespaces (the kit's "/", "/anonymous", "/admin") are not: each gets a no-op handler of an event no
  client sends (LISTING_EVENT), which lists it with its socket count.
"""

from __future__ import annotations

import functools
import hmac
import logging
import time
from typing import Any

from app.upstream import eio_socket

log = logging.getLogger(__name__)

ADMIN_UI_NAMESPACE = "/admin-ui"
# Registered in sio.handlers for each class-based namespace, so that server_stats lists it. Event
# lookup tries sio.handlers[namespace][event] first, then the namespace class: nothing else changes.
LISTING_EVENT = "siokit-admin-ui-listing"


class _Credentials:
    """instrument()'s `auth` callable: the UI's login form sends {"username": ..., "password": ...}.

    A callable, not instrument()'s dict equality, so a client that adds keys is judged on these two
    alone and the comparison takes constant time.
    """

    def __init__(self, user: str, password: str, refused: Any) -> None:
        self._user = user.encode("utf-8")
        self._password = password.encode("utf-8")
        self._refused = refused

    def __call__(self, auth: Any) -> bool:
        user = auth.get("username") if isinstance(auth, dict) else None
        password = auth.get("password") if isinstance(auth, dict) else None
        if isinstance(user, str) and isinstance(password, str):
            # Both compared, always: no early exit tells which one was wrong.
            user_ok = hmac.compare_digest(user.encode("utf-8"), self._user)
            password_ok = hmac.compare_digest(password.encode("utf-8"), self._password)
            if user_ok and password_ok:
                return True
        self._refused.labels(namespace=ADMIN_UI_NAMESPACE).inc()
        log.warning("refused %s connection: bad credentials", ADMIN_UI_NAMESPACE)
        return False


def instrument(server: Any, user: str, password: str, refused: Any) -> Any:
    """Instrument a python-socketio Server for the Admin UI; returns the InstrumentedServer."""
    if not password:
        raise ValueError("the Admin UI needs a password")
    for namespace in list(server.namespace_handlers):
        server.on(LISTING_EVENT, _ignore, namespace=namespace)
    return server.instrument(
        auth=_Credentials(user, password, refused),
        mode="production",
        read_only=True,
        namespace=ADMIN_UI_NAMESPACE,
    )


def _ignore(*_: Any) -> None:
    return None


def count_polling_by_upgrades(admin: Any) -> None:
    """Make `admin`'s server_stats count polling clients without walking every socket.

    Why: python-socketio's `_emit_server_stats` (socketio/admin.py 5.18.1) builds a list of every
    socket not yet upgraded, every 2 s, whether or not a UI is connected. In the 160,000-socket hold
    (BENCHMARKS.md, "The quiet hold at 160,000") that walk was 20% of a uWSGI worker's non-idle
    py-spy samples. The kit's handler counts the websockets it holds (app/upstream/eio_socket.py), so
    polling clients = sockets - websockets. A copy of the library's loop with that one change: only
    with the version guard's consent, and only where every websocket runs on the kit's handler (the
    uWSGI event driver). Must run before the stats task starts.
    """
    admin._emit_server_stats = functools.partial(_emit_server_stats, admin)


def count_websocket_packets(admin: Any) -> None:
    """Count websocket packets in the kit's handler instead of through instrument()'s wrappers.

    Why: instrument() (python-socketio 5.18.1) makes `Socket._websocket_handler` a
    functools.partialmethod and each socket's `ws.wait` and `ws.send` functools.partials. A parked
    websocket then keeps two more C-level calls on its saved stack (1.2 KB, tracemalloc), and its ws
    four more attributes: with the UI on, uWSGI's RSS per socket was 42.1 KB against 39.6 KB with it
    off (5,000 sockets, one loopback worker). The kit's handler pushes the same "packetsIn" and
    "bytesIn" for every packet it reads. Same conditions as count_polling_by_upgrades; a websocket
    the kit's handler hands to upstream's (one without frames) is then not counted.
    """
    from engineio.socket import Socket

    push = admin.event_buffer.push

    def count(data: Any) -> None:
        push("packetsIn")
        push("bytesIn", len(data))

    Socket._websocket_handler = eio_socket.websocket_handler
    eio_socket.count_packets_in(count)


def _emit_server_stats(admin: Any) -> None:
    sio = admin.sio
    start_time = time.time()
    namespaces = sorted(sio.handlers.keys())
    from socketio import admin as upstream

    while not admin.stop_stats_event.is_set():
        sio.sleep(admin.server_stats_interval)
        clients = len(sio.eio.sockets)
        sio.emit(
            "server_stats",
            {
                "serverId": admin.server_id,
                "hostname": upstream.HOSTNAME,
                "pid": upstream.PID,
                "uptime": time.time() - start_time,
                "clientsCount": clients,
                # Closing websockets leave the count a moment before their socket leaves eio.sockets.
                "pollingClientsCount": max(0, clients - eio_socket.websockets()),
                "aggregatedEvents": admin.event_buffer.get_and_clear(),
                "namespaces": [
                    {"name": nsp, "socketsCount": len(sio.manager.rooms.get(nsp, {None: []}).get(None, []))}
                    for nsp in namespaces
                ],
            },
            namespace=admin.admin_namespace,
        )
