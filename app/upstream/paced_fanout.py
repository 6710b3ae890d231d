"""An emit to many sockets goes out in slices, at the plan's rate, so what arrives meanwhile is not
queued behind all of it.

Why: python-socketio 5.18.1's ``Manager.emit`` writes to every recipient in one loop that never
yields. At 160k on the local cluster each instance wrote its 16,000 frames as fast as the cores let
it; the frames then waited in nginx's and the load generator's socket queues, in front of anything
sent after them. An echo during a broadcast waited for the broadcast: echo p99 4.4 s against a
fan-out p99 of 6.5 s (run M, BENCHMARKS.md). Here an emit to more than ``SLICE`` sockets runs in a
greenlet of its own, yields to the hub after every slice (reads, pings and echoes get served), and
sleeps while it is ahead of its rate: the plan's (sockets per instance over the plan's fan-out time),
lowered while this host's cores are saturated (app/fanout_pace.py), so the queues downstream stay
short and the fan-out takes little longer than the cores it shares need anyway.

Order: a frame never overtakes one the server emitted before it. A fan-out in flight keeps the
sockets it has not reached; any other packet for one of them (a direct emit, a later fan-out, a
ping, a close) first sends what that fan-out owes the socket (``flush_before``, called by the kit's
``Socket.send`` in app/upstream/eio_socket.py). So pacing is only turned on where that send is
installed (``PacedManager.pace``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
import socketio
from engineio import packet as eio_packet
from gevent.hub import Waiter
from socketio import packet

from app.fanout_pace import TARGET_WAIT_S, AdaptivePace

log = logging.getLogger(__name__)

# Recipients per slice. A slice costs ~64 x 12 us of uWSGI time on this host (BENCHMARKS.md, run M:
# uWSGI's system time per delivery), so an echo waits at most ~1 ms of it; a yield costs a few us.
SLICE = 64
# The longest a slice waits for its turn while the hub has events to serve (_yield_to_io).
MAX_YIELD_S = 0.002


class _Fanout:
    """One emit to many sockets: its packets, and the sockets (engineio sids) still owed them."""

    __slots__ = ("order", "packets", "pending")

    def __init__(self, order: list[str], packets: list[Any]) -> None:
        self.order = order
        self.packets = packets
        self.pending = set(order)


# The fan-outs in flight in this process, oldest first, and the one whose loop is sending now.
_inflight: list[_Fanout] = []
_current: _Fanout | None = None


def inflight() -> int:
    return len(_inflight)


def _yield_to_io() -> None:
    """Let the hub poll for I/O and serve what is ready, then come back (after MAX_YIELD_S at most).

    Why not sleep(0): gevent's libev hub (corecext, 26.9) runs a sleep(0)'s switch as a callback
    before it polls again, so a loop of slices and sleep(0)s never let a read in (a 40 ms loop of
    them served a ready socket only at its end, this host). An idle watcher fires once no event is
    pending; the timer bounds the wait when events keep coming.
    """
    hub = gevent.get_hub()
    waiter: Waiter[Any] = Waiter(hub)
    idle = hub.loop.idle()
    timer = hub.loop.timer(MAX_YIELD_S)
    try:
        idle.start(waiter.switch, None)
        timer.start(waiter.switch, None)
        waiter.get()
    finally:
        idle.close()
        timer.close()


def flush_before(sock: Any, write: Callable[[Any, Any], None]) -> None:
    """Write to ``sock`` what the fan-outs started before the current send still owe it, oldest first."""
    sid = sock.sid
    for f in _inflight:
        if f is _current:
            return
        if sid in f.pending:
            f.pending.discard(sid)
            for p in f.packets:
                write(sock, p)


class PacedManager(socketio.Manager):
    """python-socketio's Manager whose local emits to many sockets are sliced and paced.

    Placed after PubSubManager in a Redis manager's MRO, it also delivers what the queue relays
    (``PubSubManager._handle_emit`` calls ``super().emit``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._paced = False
        self._pace: AdaptivePace | None = None

    def pace(self, rate: float | None, core_wait_s: float = TARGET_WAIT_S, pace: AdaptivePace | None = None) -> None:
        """Slice emits to many sockets; ``rate``: deliveries per second at most, lowered while this
        thread's waits for a core pass ``core_wait_s`` (app/fanout_pace.py; 0: never lowered);
        None: slices only."""
        self._paced = True
        self._pace = pace or (AdaptivePace(rate, core_wait_s) if rate and rate > 0 else None)

    def pace_rate(self) -> float:
        """Deliveries per second a fan-out keeps to now (siokit_fanout_pace); 0: none kept."""
        return self._pace.rate if self._pace is not None else 0.0

    def emit(
        self,
        event: Any,
        data: Any,
        namespace: Any,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        global _current
        room = to or room
        outer, _current = _current, None  # an emit from inside a fan-out's send is not that fan-out
        try:
            if not self._paced or callback or namespace not in self.rooms:
                super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs)
                return
            skips = skip_sid if isinstance(skip_sid, list) else [skip_sid]
            order = [eio_sid for sid, eio_sid in self.get_participants(namespace, room) if sid not in skips]
            if not order:
                return
            # Upstream's encoding (Manager.emit, 5.18.1): once per emit, shared by every recipient.
            if isinstance(data, tuple):
                args = list(data)
            elif data is not None:
                args = [data]
            else:
                args = []
            encoded = self.server.packet_class(packet.EVENT, namespace=namespace, data=[event, *args]).encode()
            encoded = encoded if isinstance(encoded, list) else [encoded]
            packets = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]
            f = _Fanout(order, packets)
            _inflight.append(f)
            if len(order) <= SLICE:
                try:
                    self._deliver(f, 0, len(order))
                finally:
                    _inflight.remove(f)
            else:
                self.server.start_background_task(self._run, f)
        finally:
            _current = outer

    def _deliver(self, f: _Fanout, start: int, end: int) -> int:
        """Send f's packets to f.order[start:end] that are still owed them; the count sent."""
        global _current
        sockets = self.server.eio.sockets
        send = self.server._send_eio_packet
        pending = f.pending
        sent = 0
        _current = f
        try:
            for eio_sid in f.order[start:end]:
                if eio_sid not in pending:
                    continue  # flushed by an earlier send to it
                pending.discard(eio_sid)
                sock = sockets.get(eio_sid)
                if sock is None or sock.closed or sock.closing:
                    continue  # gone while the fan-out yielded: no "Cannot send to sid" line each
                for p in f.packets:
                    send(eio_sid, p)
                sent += 1
        finally:
            _current = None
        return sent

    def _run(self, f: _Fanout) -> None:
        due = time.monotonic()
        sent = 0
        try:
            for start in range(0, len(f.order), SLICE):
                n = self._deliver(f, start, start + SLICE)
                sent += n
                if self._pace is not None:
                    rate = self._pace.observe()
                    # At most `rate`: time lost behind schedule is not made up in a burst.
                    now = time.monotonic()
                    due = max(due + n / rate, now)
                    if due > now:
                        gevent.sleep(due - now)
                        continue
                _yield_to_io()
        except Exception:
            log.exception("fan-out to %d sockets failed after %d", len(f.order), sent)
        finally:
            _inflight.remove(f)
