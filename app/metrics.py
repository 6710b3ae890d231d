"""Prometheus metrics of one app instance, in a private registry (one per create_app())."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    PlatformCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from app.hublag import HubLag
from app.process_metrics import ProcessMetrics
from app.upstream.frame_writer import STATS

__all__ = ["CONTENT_TYPE_LATEST", "DISCONNECT_REASONS", "Metrics"]

# python-engineio's Server.reason values (4.11+), plus "other" for anything a later version adds.
# A slow-consumer close reaches the handler as a transport close; siokit_slow_consumer_closes counts it apart.
DISCONNECT_REASONS = (
    "ping timeout",
    "transport close",
    "transport error",
    "client disconnect",
    "server disconnect",
    "other",
)


class Metrics:
    """The instance's counters; also the source of the live per-namespace socket counts."""

    def __init__(
        self,
        instance_id: str,
        async_mode: str,
        websocket_driver: str,
        upstream_patches: bool = True,
        planned_sockets: int = 0,
    ) -> None:
        # A private registry, so several apps in one process (tests) never collide on names.
        self.registry = CollectorRegistry(auto_describe=True)
        self.connected = Gauge(
            "siokit_connected_sockets",
            "Socket.IO clients connected to this instance, per namespace",
            ["namespace"],
            registry=self.registry,
        )
        self.events = Counter(
            "siokit_events_handled",
            "Socket.IO client events handled by this instance",
            ["namespace", "event"],
            registry=self.registry,
        )
        self.refused = Counter(
            "siokit_connections_refused",
            "Connections refused (e.g. /admin without a valid token)",
            ["namespace"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "siokit_events_rate_limited",
            "Client events dropped by the per-socket rate limit",
            ["namespace"],
            registry=self.registry,
        )
        self.fanout_limited = Counter(
            "siokit_fanout_limited",
            "Events to every socket (chat) refused by the instance's fan-out limit",
            ["namespace"],
            registry=self.registry,
        )
        self.rate_limit_disconnects = Counter(
            "siokit_rate_limit_disconnects",
            "Sockets cut off for staying far over the per-socket event rate",
            ["namespace"],
            registry=self.registry,
        )
        self.bad_input = Counter(
            "siokit_bad_input",
            "Bad client input seen by python-engineio/socketio, per kind (app/badinput.py)",
            ["kind"],
            registry=self.registry,
        )
        self.disconnects = Counter(
            "siokit_disconnects",
            "Socket.IO disconnects, by namespace and python-engineio's reason",
            ["namespace", "reason"],
            registry=self.registry,
        )
        self.handshake_failures = Counter(
            "siokit_handshake_failures",
            "Engine.IO handshakes (requests without a sid) answered with an HTTP error, by status",
            ["status"],
            registry=self.registry,
        )
        self.delivered = Counter(
            "siokit_messages_delivered",
            "Socket.IO event packets this instance handed to its own sockets (one inc per emit)",
            registry=self.registry,
        )
        # Process RSS, open fds and their limit (process_open_fds / process_max_fds), Python version.
        ProcessMetrics(self.registry)
        PlatformCollector(registry=self.registry)
        self.info = Info("siokit_instance", "Identity of this app instance", registry=self.registry)
        self.info.info({"instance_id": instance_id, "async_mode": async_mode, "websocket_driver": websocket_driver})
        self.patched = Gauge(
            "siokit_upstream_patches",
            "1 if app/upstream's patches are installed, 0 if the version guard fell back to stock code",
            registry=self.registry,
        )
        self.patched.set(1 if upstream_patches else 0)
        self.planned = Gauge(
            "siokit_planned_sockets",
            "Sockets the capacity planner sized this instance for (0 = not known)",
            registry=self.registry,
        )
        self.planned.set(planned_sockets)
        self.fanout_pace = Gauge(
            "siokit_fanout_pace",
            "Deliveries per second this instance's paced fan-outs keep to: the plan's rate, lower"
            " while the host's cores are saturated (0 = not paced)",
            registry=self.registry,
        )
        self.hub_lag = HubLag(self.registry)
        self.registry.register(_FanoutCollector())
        self._counts: dict[str, int] = {}

    def socket_connected(self, namespace: str) -> None:
        self._counts[namespace] = self._counts.get(namespace, 0) + 1
        self.connected.labels(namespace=namespace).set(self._counts[namespace])

    def socket_disconnected(self, namespace: str, reason: object = None) -> None:
        label = reason if isinstance(reason, str) and reason in DISCONNECT_REASONS else "other"
        self.disconnects.labels(namespace=namespace, reason=label).inc()
        # Clamped: a disconnect never drives the gauge negative, whatever the event order.
        self._counts[namespace] = max(0, self._counts.get(namespace, 0) - 1)
        self.connected.labels(namespace=namespace).set(self._counts[namespace])

    def watch_queue_listener(self, manager: object) -> None:
        """Export siokit_queue_listener_running for a message-queue manager (not for a single instance)."""
        gauge = Gauge(
            "siokit_queue_listener_running",
            "1 if this instance's message-queue listener runs (it hears other instances' emits)",
            registry=self.registry,
        )
        gauge.set_function(lambda: listener_running(manager))

    def sockets(self) -> dict[str, int]:
        """Live sockets per namespace on this instance."""
        return dict(self._counts)

    def render(self, names: Sequence[str] = ()) -> bytes:
        """The exposition text; with ``names``, only those series (prometheus_client's ``name[]``).

        A restricted render calls only the collectors that own a named series, so a caller that
        reads a few counters often (siokit bench, once a second) does not pay for the process
        collector, which lists /proc/self/fd on kernels before 6.2 (app/process_metrics.py)."""
        if not names:
            return generate_latest(self.registry)
        # RestrictedRegistry has collect() but is not a Collector subclass
        return generate_latest(cast(Collector, self.registry.restricted_registry(names)))


def listener_running(manager: object) -> float:
    """1 if the message-queue manager's listener task runs (a gevent Greenlet or a thread), else 0.

    0 means this instance hears no other instance's emits: never started (start_message_queue
    not yet run) or died. A listener retrying a lost Redis still reads 1; redis_up covers that.
    """
    task = getattr(manager, "thread", None)
    if task is None:
        return 0.0
    if hasattr(task, "dead"):
        return 0.0 if task.dead else 1.0
    is_alive = getattr(task, "is_alive", None)
    return 1.0 if is_alive is not None and is_alive() else 0.0


class _FanoutCollector(Collector):
    """The websocket fan-out writers' process-wide counters (app/upstream/frame_writer.py)."""

    def collect(self) -> Iterator[Metric]:
        closes = CounterMetricFamily(
            "siokit_slow_consumer_closes",
            "Websockets closed because their backlog passed SIOKIT_MAX_BACKLOG_BYTES",
        )
        closes.add_metric([], STATS.slow_consumer_closes)
        yield closes
        backlogged = GaugeMetricFamily(
            "siokit_backlogged_sockets", "Websockets with frames the kernel has not taken yet"
        )
        backlogged.add_metric([], STATS.backlogged_sockets)
        yield backlogged
        size = GaugeMetricFamily("siokit_backlog_bytes", "Bytes waiting in all websockets' backlogs")
        size.add_metric([], STATS.backlog_bytes)
        yield size
