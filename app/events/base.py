"""Common behaviour of the service's namespaces: metrics, spoof guard, nicknames."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import request
from flask_socketio import Namespace

from app.ratelimit import Verdict
from app.rooms import error
from app.state import AppState

log = logging.getLogger(__name__)


class SiokitNamespace(Namespace):
    """A Flask-SocketIO class-based namespace bound to one app's state."""

    def __init__(self, namespace: str, state: AppState) -> None:
        super().__init__(namespace)
        self.state = state

    def trigger_event(self, event: str, *args: Any) -> Any:
        # python-socketio dispatches a client-sent 42["connect"] / 42["disconnect"] to the same
        # handlers as the real lifecycle events; such spoofs would skew counts and nicknames.
        if event in ("connect", "disconnect") and self._is_spoofed(event, args):
            log.warning("ignored client-sent reserved event %r on %s", event, self.namespace)
            return error(f"'{event}' is a reserved event")
        if event not in ("connect", "disconnect") and args and isinstance(args[0], str):
            limited = self._rate_limited(args[0])
            if limited is not None:
                return limited
        known = hasattr(self, "on_" + (event or ""))
        self.state.metrics.events.labels(namespace=self.namespace, event=event if known else "_unknown").inc()
        if not known:
            return error(f"unknown event {str(event)[:64]!r}")
        return super().trigger_event(event, *args)

    def _rate_limited(self, sid: str) -> dict[str, Any] | None:
        """None when the event may run; else the error ack (and the socket may be cut off)."""
        limiter = self.state.limiter
        if limiter is None:
            return None
        verdict = limiter.check(f"{self.namespace} {sid}")
        if verdict is Verdict.ALLOW:
            return None
        self.state.metrics.rate_limited.labels(namespace=self.namespace).inc()
        if verdict is Verdict.DISCONNECT:
            self.state.metrics.rate_limit_disconnects.labels(namespace=self.namespace).inc()
            self.state.throttled_log.warning(
                "rate-limit-disconnect",
                "cut off socket %s on %s: over %d dropped events in 10 s",
                sid,
                self.namespace,
                limiter.drop_limit,
            )
            self._cut_off(sid)
        else:
            self.state.throttled_log.warning(
                "rate-limited",
                "dropped events over %g/s (burst %d) from socket %s on %s",
                limiter.rate,
                limiter.burst,
                sid,
                self.namespace,
            )
        return error("rate limited: too many events")

    def fanout_refused(self) -> dict[str, Any] | None:
        """None when an event to every socket may go out now; else the error ack."""
        fanout = self.state.fanout
        if fanout is None or fanout.allow():
            return None
        self.state.metrics.fanout_limited.labels(namespace=self.namespace).inc()
        self.state.throttled_log.warning(
            "fanout-limited",
            "refused events to every socket over %.3g/s (burst %d) on this instance, on %s",
            fanout.rate,
            fanout.burst,
            self.namespace,
        )
        return error(f"rate limited: messages to everyone are limited, retry in {fanout.retry_after():.0f} s")

    def _cut_off(self, sid: str) -> None:
        # The whole Engine.IO connection, not only the namespace: the client could rejoin it at once.
        server = self.state.socketio.server
        eio_sid = server.manager.eio_sid_from_sid(sid, self.namespace)
        if eio_sid is not None and eio_sid in server.eio.sockets:
            server.eio.disconnect(eio_sid)
        else:  # no Engine.IO socket (Flask-SocketIO's test client): the namespace alone
            server.disconnect(sid, namespace=self.namespace)

    def _is_spoofed(self, event: str, args: tuple[Any, ...]) -> bool:
        if not args or not isinstance(args[0], str):
            return True
        sid = args[0]
        server = self.state.socketio.server
        if event == "connect":
            # The real connect passes the very environ object the server stored for this client.
            return len(args) < 2 or args[1] is not server.get_environ(sid, namespace=self.namespace)
        # The real disconnect runs after pre_disconnect(), when the sid no longer counts as connected.
        return server.manager.is_connected(sid, self.namespace)

    # helpers for subclasses -------------------------------------------------------------------

    @property
    def sid(self) -> str:
        return request.sid  # type: ignore[attr-defined]

    def nickname(self) -> str:
        return self.state.nicknames.get((self.namespace, self.sid), "guest-" + self.sid[:6])

    def remember(self, nickname: str | None) -> None:
        if nickname is not None:
            self.state.nicknames[(self.namespace, self.sid)] = nickname
        self.state.metrics.socket_connected(self.namespace)

    def forget(self, reason: Any = None) -> None:
        self.state.nicknames.pop((self.namespace, self.sid), None)
        if self.state.limiter is not None:
            self.state.limiter.forget(f"{self.namespace} {self.sid}")
        self.state.metrics.socket_disconnected(self.namespace, reason)

    def stamp(self) -> dict[str, Any]:
        """Fields added to every server-originated message, for tracing across instances."""
        return {"instance": self.state.config.instance_id, "server_time": time.time()}
