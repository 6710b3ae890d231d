"""Capacity planner: target sockets + host facts -> instances, cores, rlimits, ports, sysctls.

One module used by the CLI (`siokit plan`), by Ansible (filter plugin `siokit_plan`), by the renderer
and by the tests. It refuses a target it cannot meet and says why, with the arithmetic.

Every per-socket figure below is a named constant with the measurement it comes from
(shared design notes, "Figures measured here": one host, 2 cores, loopback, idle websocket clients).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from siokit.facts import HostFacts

__all__ = [
    "SCHEMA_VERSION", "HostFacts", "LoadgenPlan", "Plan", "PlanError", "PlanInputError", "Target", "format_plan",
    "plan", "plan_from_mapping", "plan_loadgen",
]  # fmt: skip

# Version of the plan document (`siokit plan --json`, /etc/siokit/plan.json, the renderer's siokit_plan).
# Raise it when a field is renamed, removed or changes meaning; siokit/plan.schema.json follows.
SCHEMA_VERSION = 2  # 2: nginx.storm_connects_per_second, nginx.storm_ports_per_upstream_and_source

KB = 1024
MIB = 1024 * KB
GIB = 1024 * MIB

# PSS per idle websocket of Flask-SocketIO under uWSGI, gevent_uwsgi mode with the kit's driver
# (read watcher, the kit's websocket reader, timer pings, room index), Admin UI and Redis on: 34.8 KB
# per socket in the 160k cluster run K (bench/results/cluster-160k-k-2026-12-05.json); 39.5 and
# 39.4 KB in runs I and J, before the kit read websockets itself (uWSGI's reader keeps a 4 KB buffer
# per socket); 56.4 KB before the 2026-12-04/05 memory changes (BENCHMARKS.md).
UWSGI_BYTES_PER_SOCKET = 35 * KB
# uWSGI preallocates its async cores: ~100 MB at start for --gevent 19000 (~5.3 KB per core).
UWSGI_BYTES_PER_ASYNC_CORE = 100 * MIB // 19000
# Fixed RSS of one uWSGI instance with the app loaded, before any socket (master + worker).
UWSGI_BASE_BYTES = 60 * MIB
# nginx 1.22 PSS per proxied websocket client (both connections, proxy_buffer_size 4k): 29.8 KB in
# every 160k cluster run (F to J, bench/results/); 21.75 KB at 20k and 60k on loopback (BENCHMARKS.md).
# Why the cluster's is higher is not measured; the planner takes the larger.
NGINX_BYTES_PER_CLIENT = 30 * KB
# `siokit load` (uvloop, its own RFC 6455 client) PSS per client: 7.4-7.5 KB in the 160k cluster runs
# F to J; 10.4 KB at 5k (docs/loadgen.md: a worker's fixed part weighs more there).
LOADGEN_BYTES_PER_CLIENT = 8 * KB
# Kernel memory per idle TCP socket (tcp_sock, inode, file, epoll item, buffers): slab + TCP memory
# grew 20.3-20.5 KB per client of four sockets at 20k and 60k (BENCHMARKS.md): ~5.1 KB per socket;
# slab alone 18.4-22.9 KB per client in the 160k cluster runs F to J.
KERNEL_BYTES_PER_TCP_SOCKET = 5200
# Every proxied client is four kernel sockets when all hops share one kernel:
# client, nginx downstream, nginx upstream, uWSGI.
TCP_SOCKETS_PER_CLIENT = 4
# CPU per Engine.IO ping round trip (the ping's frame out, the pong read back), two figures, from the
# local cluster's quiet hold at 30,000 sockets with a 5 s ping interval against 120 s (A-B-A, one run
# each, bench/results/cluster-30k-ping-{120s,5s,120s-b}-2026-12-06.json): the extra CPU over the extra
# pings per second (6,000 - 250). That machine was 1.3-1.5x slower than on 2026-12-05 (the load
# generator's user time per connect, 676 and 757 us against 517 us at 30,000 the day before), so
# both figures are on the high side, which for a CPU budget is the safe side.
# uWSGI's own, what an app host of its own spends: 62.2 and 67.5 us (user + system); the higher. One
# loopback worker measured 45.0-47.5 us on 2026-12-05, on a faster machine. (0.3 ms until 2026-12-06:
# the 60k probe's figure, from before the kit's driver and websocket reader.)
PING_CPU_SECONDS = 67.5e-6
# The whole machine's, when every component shares its cores (colocated): the ping and its pong cross
# nginx, both TCP hops and the load generator too. Machine busy time: 144.2 and 159.7 us; the mean.
PING_MACHINE_CPU_SECONDS = 152e-6
# Share of the app hosts' cores that idle pings may take, leaving the rest for real traffic.
PING_CPU_BUDGET = 0.5
# When every component shares the same cores (the local cluster), broadcasts need what the pings
# leave, and a broadcast to everyone is the goal these cores do not meet yet (BENCHMARKS.md, issue #9:
# 5 s needs 38 us of machine time per delivery, 55.6 is measured). So pings get a tenth: 122 s at 160k
# on 2 cores (160,000 x 152 us / 0.2 core), the ~120 s every 160k cluster run since 2026-12-02 held
# (runs C to L). 0.2 would give 61 s and another 0.2 core of pings, which would stretch run L's
# fan-out by (2 - 0.78) / (2 - 0.98) = 1.2x. (0.2 at the old 0.3 ms figure also gave 120 s; with the
# driver of that time, 48 s collapsed the ramp at 144,746 sockets, bench/results/cluster-160k-2026-12-02.json.)
PING_CPU_BUDGET_COLOCATED = 0.1
# Linux >= 4.2 gives connect() the even half of ip_local_port_range per destination (the odd half
# is kept for bind()); the 60k probe hit EADDRNOTAVAIL at ~11k sockets per upstream with the default
# range 32768-60999 (28k ports -> 14k usable, less what other flows held).
CONNECT_PORT_FRACTION = 0.5
# A load client bound to an explicit source IP (with IP_BIND_ADDRESS_NO_PORT, siokit/load/transport.py)
# gets its port at connect(), per destination, rather than from bind() for any destination; keep a
# margin for ports in TIME_WAIT and other flows (~55k per source IP with 1024-65535).
BIND_PORT_FRACTION = 0.85
# Uneven spread of clients over upstreams (hash/least_conn) and over nginx workers (reuseport).
SPREAD_HEADROOM = 1.25
# nginx_upstream_check: each new websocket first costs one short lb -> instance connection, which
# nginx closes first, so its port stays in TIME_WAIT on the lb. With net.ipv4.tcp_tw_reuse=1 (the
# kit's sysctl) connect() takes such a port again once the seconds clock has passed the last
# timestamp it saw (<= 1 s; 1 s with tcp_tw_reuse_delay on >= 6.13); one more second of margin.
# Measured on loopback, 100 ports per upstream, 75 websockets held per upstream (RELIABILITY.md):
# at 9 new websockets/s per upstream at most 20 check ports were in TIME_WAIT toward it.
CHECK_PORT_HOLD_S = 2
# A reconnect storm (drill 6, nginx restarted: every client drops at once): nginx closes the old
# lb -> instance connections first, so their ports sit in TIME_WAIT for CHECK_PORT_HOLD_S just as the
# clients come back, each needing a port for its websocket and one for its check (storm_ports_needed).
# How fast they come back is bounded by the lb: nginx CPU per new websocket with the check, 607-693 us
# (RELIABILITY.md; the lowest, so the rate is not underestimated). Measured on loopback, 100 ports per
# upstream, nginx restarted in ~30 ms, clients on the load generator's backoff (tests/integration/
# test_reconnect_storm.py, RELIABILITY.md): at 26 per upstream (33 with SPREAD_HEADROOM, what the
# arithmetic allows: 3 x 33 <= 100) all were back within 0.6 s, 4 runs of 4, at most 85 ports in use;
# at 33 per upstream one run of 7 ran short for a moment (3 x errno 99, every client back); at 40-45
# connect() ran out in 9 runs of 9 (errno 99), and in 8 nginx marked the upstreams down ("no live
# upstreams") and clients were refused until fail_timeout.
NGINX_CPU_S_PER_CONNECT = 600e-6
# File descriptors a process needs beyond its sockets (logs, libraries, Redis, stats socket, epoll).
FD_RESERVE = 512
# Memory the kit may plan to use: leave the rest to the OS, page cache and bursts.
MEMORY_BUDGET = 0.9
# Engine.IO default ping interval; the planner raises it when pings would eat the CPU budget.
DEFAULT_PING_INTERVAL = 25
# Socket.IO's default ping timeout; the planner raises it only when a broadcast to everyone could
# take longer to fan out, because a pong (and the ping it answers) waits behind that broadcast.
DEFAULT_PING_TIMEOUT = 20
# CPU per delivered message of a broadcast to everyone, user + system time above the hold's quiet
# rate (siokit/lab/broadcast_cpu.py). Run L: 160,000 on the local cluster with the conntrack bypass,
# 5 broadcasts (bench/results/cluster-160k-l-2026-12-06.json, BENCHMARKS.md). Until 2026-12-06 these
# were the 30,000 run of 2026-12-02 (39 + 45 + 48 + 49 us), from before the kit's driver and reader.
# Hosts of their own: uWSGI's on an app host, 11.6-12.0 us per delivered message on one loopback
# worker (bench/results/fanout-5k-reader-ab-2026-12-05.json; run L: 11.2 system, user below the
# noise); nginx's (22.2 us) and the softirq time (23.3 us, the packets of both hops) on the lb.
# Tick-based accounting charges a softirq to the process it interrupts as well, so nginx + softirq
# overstates the lb's share: on the safe side for the ping timeout.
UWSGI_CPU_S_PER_DELIVERY = 12e-6
NGINX_CPU_S_PER_DELIVERY = 22.2e-6
SOFTIRQ_CPU_S_PER_DELIVERY = 23.3e-6
# Colocated, the machine's busy time per delivery, every component and the kernel counted once (the
# per-component figures overlap, and the load generator shares the cores too): 53.9-58.4 us, mean 55.6.
# The estimate is the cores' time with the pings' share taken off, nothing else running: 160,000 x
# 55.6 us / (2 - 0.2) = 4.9 s. Run L's pooled p50 was 4.2 s and its p99 7.0 s: its quiet hold took
# 0.78 core, ~0.2 of it pings, the rest other work (echoes, the Admin UI's stats, scrapes; in the quiet
# hold of 2026-12-03 this sandbox's own init took 0.44 core).
MACHINE_CPU_S_PER_DELIVERY = 55.6e-6
# The timeout must exceed the estimated fan-out by this factor. 1.0, not more: a ping waits only behind
# the frames already queued on its own socket, and the server allows ping interval + timeout for the
# pong. Run B of the 160k benchmark (bench/results/cluster-160k-2026-12-02-b.json) held every client
# with a 20 s timeout while its fan-out p99 was 21.4 s and its max 24.1 s: 0 dead-peer drops.
PING_TIMEOUT_MARGIN = 1.0
# nginx's proxy_read_timeout outwaits a client's ping interval + ping timeout by this much, or it would
# close an idle websocket before Engine.IO gives up on it (nginx's own default is 60 s).
PROXY_READ_MARGIN_S = 30
DEFAULT_PORT_RANGE = (1024, 65535)
DEFAULT_LISTEN_BACKLOG = 4096


class PlanError(ValueError):
    """A target the hosts cannot meet; the message carries the arithmetic."""


class PlanInputError(PlanError):
    """Planner input that is not planner input (an unknown key): nothing was planned."""


def _check_facts(role: str, facts: HostFacts) -> None:
    if facts.cores < 1:
        raise PlanError(f"{role}: cores must be >= 1, got {facts.cores}")
    if facts.memory_gib <= 0:
        raise PlanError(f"{role}: memory_gib must be > 0, got {facts.memory_gib}")
    if facts.nofile_hard < 2 * FD_RESERVE:
        raise PlanError(
            f"{role}: nofile_hard {facts.nofile_hard} < {2 * FD_RESERVE} (twice the fd reserve of "
            f"{FD_RESERVE}); no process could hold any sockets"
        )


@dataclass(frozen=True)
class Target:
    sockets: int
    app_hosts: int = 1
    source_ips: int = 1
    lb_source_ips: int | None = None
    ping_interval: int | None = None
    ping_timeout: int | None = None
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    colocated: bool = False
    # Values an operator may pin (siokit_plan_input); the planner checks each one and refuses it
    # with the arithmetic when it cannot hold the target.
    uwsgi_instances_per_host: int | None = None
    async_cores: int | None = None
    nginx_workers: int | None = None
    loadgen_workers_per_source_ip: int | None = None


@dataclass(frozen=True)
class UwsgiPlan:
    instances_per_host: int
    sockets_per_instance: int
    async_cores: int
    limit_nofile: int
    listen: int
    base_port: int = 8001


@dataclass(frozen=True)
class NginxPlan:
    worker_processes: int
    worker_connections: int
    worker_rlimit_nofile: int
    limit_nofile: int
    upstream_endpoints: int
    sockets_per_upstream: int
    usable_ports_per_upstream_and_source: int
    source_ips: int
    # A reconnect storm: the new websockets per second the lb can start (cores / NGINX_CPU_S_PER_CONNECT),
    # and the ports per (lb source IP, upstream) they need in its first CHECK_PORT_HOLD_S.
    storm_connects_per_second: int
    storm_ports_per_upstream_and_source: int
    # Seconds: ping interval + ping timeout + PROXY_READ_MARGIN_S.
    proxy_read_timeout: int


@dataclass(frozen=True)
class LoadgenPlan:
    source_ips: int
    usable_ports_per_source_ip: int
    clients: int
    clients_per_source_ip: int
    # Processes per source IP, each bound to that address; workers = workers_per_source_ip x source_ips.
    workers_per_source_ip: int
    workers: int
    clients_per_worker: int
    # Per worker process: its clients plus FD_RESERVE, never above the host's hard limit.
    limit_nofile: int


@dataclass(frozen=True)
class MemoryPlan:
    uwsgi_per_app_host: int
    nginx_on_lb: int
    loadgen: int
    kernel_total: int
    total: int
    budget: int
    per_socket: int


@dataclass(frozen=True)
class Plan:
    sockets: int
    app_hosts: int
    sockets_per_app_host: int
    ping_interval: int
    ping_cpu_cores: float
    ping_timeout: int
    # Seconds one broadcast to every socket takes to leave the servers (CPU per delivery / cores).
    broadcast_fanout_s: float
    uwsgi: UwsgiPlan
    nginx: NginxPlan
    loadgen: LoadgenPlan
    memory: MemoryPlan
    sysctls: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # What was asked (target and pinned values): the document says what it was computed from.
    target: Target = field(default_factory=lambda: Target(sockets=1))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The plan document, plain JSON data (tuples become lists)."""
        data = asdict(self)
        data["target"]["port_range"] = list(self.target.port_range)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """A plan document read back (plan.json, a renderer's siokit_plan); refuses another version."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise PlanError(
                f"plan document schema_version {version!r}, this siokit reads {SCHEMA_VERSION}: re-plan with "
                f"this siokit (siokit plan --json, or the plan role)"
            )
        try:
            return _build(cls, data)
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"not a plan document: {exc!r}") from None


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    """A (nested) frozen dataclass from its asdict() form, every field required but defaulted ones."""
    nested = {
        "uwsgi": UwsgiPlan, "nginx": NginxPlan, "loadgen": LoadgenPlan, "memory": MemoryPlan, "target": Target,
    }  # fmt: skip
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in nested and isinstance(value, Mapping):
            value = _build(nested[name], value)
        elif name == "port_range":
            value = (int(value[0]), int(value[1]))
        elif name in ("sysctls", "warnings"):
            value = type(value)(value)
        kwargs[name] = value
    return cls(**kwargs)


def _ceil_div(a: int | float, b: int | float) -> int:
    return math.ceil(a / b)


def _port_range_size(port_range: tuple[int, int]) -> int:
    low, high = port_range
    if not 1 <= low < high <= 65535:
        raise PlanError(f"port_range must be 1 <= low < high <= 65535, got {low}-{high}")
    return high - low + 1


def _ping_interval(target: Target, app: HostFacts) -> tuple[int, float]:
    """Pick (or check) the Engine.IO ping interval so idle pings fit the CPU budget."""
    # Colocated app "hosts" share one machine's cores.
    hosts = 1 if target.colocated else target.app_hosts
    share = PING_CPU_BUDGET_COLOCATED if target.colocated else PING_CPU_BUDGET
    budget = share * app.cores * hosts
    cost = PING_MACHINE_CPU_SECONDS if target.colocated else PING_CPU_SECONDS
    needed = math.ceil(target.sockets * cost / budget)
    if target.ping_interval is None:
        interval = max(DEFAULT_PING_INTERVAL, needed)
    else:
        interval = target.ping_interval
        if interval < 1:
            raise PlanError(f"ping_interval must be >= 1 s, got {interval}")
        if interval < needed:
            raise PlanError(
                f"ping_interval {interval} s is too short for {target.sockets} sockets: "
                f"{target.sockets} / {interval} s x {cost * 1e6:g} us per ping = "
                f"{target.sockets / interval * cost:.2f} cores, over the budget of "
                f"{share:g} x {app.cores} cores x {hosts} app host(s) = {budget:g}; "
                f"use >= {needed} s or more app cores"
            )
    return interval, target.sockets / interval * cost


def _fanout_seconds(
    target: Target, app: HostFacts, lb: HostFacts, per_host: int, ping_cores: float
) -> tuple[float, str]:
    """Time for one broadcast to everyone to leave the servers, and the arithmetic behind it."""
    if target.colocated:
        # The pings' share of the cores is busy whether or not a broadcast is in flight.
        free = app.cores - ping_cores
        secs = target.sockets * MACHINE_CPU_S_PER_DELIVERY / free
        return secs, (
            f"{target.sockets} deliveries x {MACHINE_CPU_S_PER_DELIVERY * 1e6:g} us of machine time / "
            f"({app.cores} shared cores - {ping_cores:.2f} for pings) = {secs:.1f} s"
        )
    lb_per = NGINX_CPU_S_PER_DELIVERY + SOFTIRQ_CPU_S_PER_DELIVERY
    app_s = per_host * UWSGI_CPU_S_PER_DELIVERY / app.cores
    lb_s = target.sockets * lb_per / lb.cores
    return max(app_s, lb_s), (
        f"max({per_host} deliveries per app host x {UWSGI_CPU_S_PER_DELIVERY * 1e6:g} us / {app.cores} cores "
        f"= {app_s:.1f} s, {target.sockets} x {lb_per * 1e6:g} us (nginx + softirq) / {lb.cores} lb cores "
        f"= {lb_s:.1f} s)"
    )


def _ping_timeout(target: Target, fanout_s: float, why: str) -> tuple[int, list[str]]:
    """Socket.IO's 20 s unless a broadcast's fan-out needs more; a pinned timeout below it is refused."""
    needed = math.ceil(fanout_s * PING_TIMEOUT_MARGIN)
    if target.ping_timeout is not None:
        if target.ping_timeout < 1:
            raise PlanError(f"ping_timeout must be >= 1 s, got {target.ping_timeout}")
        if target.ping_timeout < needed:
            raise PlanError(
                f"ping_timeout {target.ping_timeout} s is shorter than a broadcast to everyone takes to fan "
                f"out: {why}, x {PING_TIMEOUT_MARGIN:g} margin = {needed} s; pongs wait behind it, so "
                f"clients would be dropped. Use ping_timeout >= {needed} s, or more cores"
            )
        return target.ping_timeout, []
    if needed <= DEFAULT_PING_TIMEOUT:
        return DEFAULT_PING_TIMEOUT, []
    return needed, [
        f"ping timeout raised from Socket.IO's {DEFAULT_PING_TIMEOUT} s to {needed} s: a broadcast to "
        f"everyone takes {why} to fan out, x {PING_TIMEOUT_MARGIN:g} margin"
    ]


def _plan_uwsgi(target: Target, app: HostFacts, per_host: int) -> UwsgiPlan:
    cap = app.nofile_hard - FD_RESERVE
    needed = max(app.cores, _ceil_div(per_host, cap))
    instances = target.uwsgi_instances_per_host or needed
    if instances < 1:
        raise PlanError(f"uwsgi_instances_per_host must be >= 1, got {instances}")
    if instances < _ceil_div(per_host, cap):
        raise PlanError(
            f"uwsgi_instances_per_host {instances} cannot hold {per_host} sockets per app host: "
            f"each instance holds at most nofile_hard {app.nofile_hard} - reserve {FD_RESERVE} = {cap}, "
            f"so at least ceil({per_host} / {cap}) = {_ceil_div(per_host, cap)} instances are needed"
        )
    per_instance = _ceil_div(per_host, instances)
    # Each websocket holds an async core for its whole life; the margin serves polling and HTTP.
    async_cores = min(cap, per_instance + max(64, per_instance // 10))
    if target.async_cores is not None:
        async_cores = target.async_cores
        if async_cores < per_instance:
            raise PlanError(
                f"async_cores {async_cores} is too few: every websocket holds an async core for its whole "
                f"life, and {per_host} sockets per app host / {instances} instances = {per_instance} per "
                f"instance; need async_cores >= {per_instance} (or more instances)"
            )
        if async_cores > cap:
            raise PlanError(
                f"async_cores {async_cores} is over what one instance can hold open: nofile_hard "
                f"{app.nofile_hard} - reserve {FD_RESERVE} = {cap}; use async_cores <= {cap}"
            )
    return UwsgiPlan(
        instances_per_host=instances,
        sockets_per_instance=per_instance,
        async_cores=async_cores,
        limit_nofile=min(app.nofile_hard, async_cores + FD_RESERVE),
        listen=min(DEFAULT_LISTEN_BACKLOG, app.somaxconn),
    )


def _plan_nginx(target: Target, lb: HostFacts, uwsgi: UwsgiPlan, range_size: int, read_timeout: int) -> NginxPlan:
    cap = lb.nofile_hard - FD_RESERVE
    fds = math.ceil(2 * target.sockets * SPREAD_HEADROOM)  # downstream + upstream per client
    workers = max(lb.cores, _ceil_div(fds, cap))
    if target.nginx_workers is not None:
        workers = target.nginx_workers
        if workers < _ceil_div(fds, cap):
            raise PlanError(
                f"nginx_workers {workers} is too few: {target.sockets} clients x 2 connections x "
                f"{SPREAD_HEADROOM:g} spread = {fds} connections, but each worker holds at most nofile_hard "
                f"{lb.nofile_hard} - reserve {FD_RESERVE} = {cap}; need >= ceil({fds} / {cap}) = "
                f"{_ceil_div(fds, cap)} workers"
            )
    worker_connections = _ceil_div(fds, workers)
    rlimit = min(lb.nofile_hard, worker_connections + FD_RESERVE)
    endpoints = uwsgi.instances_per_host * target.app_hosts
    per_upstream = math.ceil(target.sockets / endpoints * SPREAD_HEADROOM)
    usable = int(range_size * CONNECT_PORT_FRACTION)
    needed_ips = _ceil_div(per_upstream, usable)
    source_ips = target.lb_source_ips or needed_ips
    if source_ips < needed_ips:
        raise PlanError(
            f"lb_source_ips {source_ips} is too few: {target.sockets} sockets over {endpoints} upstreams "
            f"x {SPREAD_HEADROOM:g} spread = {per_upstream} per upstream, but connect() gets only "
            f"{range_size} ports x {CONNECT_PORT_FRACTION:g} = {usable} per (source IP, upstream); "
            f"need >= {needed_ips} lb source IPs or more upstream instances"
        )
    storm_rate = lb_connects_per_second(lb)

    def storm_ports(ips: int) -> tuple[int, str]:
        held = _ceil_div(per_upstream, ips)
        per_pair = storm_rate / (ips * endpoints)
        return storm_ports_needed(held, per_pair), (
            f"{held} websockets' ports in TIME_WAIT + 2 x min({held}, {storm_rate} new websockets/s / "
            f"({ips} lb source IPs x {endpoints} upstreams) x {CHECK_PORT_HOLD_S} s) for the clients back "
            f"within that time (a websocket and a check each)"
        )

    if target.lb_source_ips is None:
        while storm_ports(source_ips)[0] > usable:
            source_ips += 1
    ports, why = storm_ports(source_ips)
    if ports > usable:
        raise PlanError(
            f"lb_source_ips {source_ips} is too few for a reconnect storm (every client dropped at once, "
            f"nginx_upstream_check on): per (lb source IP, upstream) {why} = {ports} ports in the first "
            f"{CHECK_PORT_HOLD_S} s, but connect() gets {usable}; need more lb source IPs"
        )
    return NginxPlan(
        worker_processes=workers,
        worker_connections=worker_connections,
        worker_rlimit_nofile=rlimit,
        limit_nofile=min(lb.nofile_hard, rlimit + FD_RESERVE),
        upstream_endpoints=endpoints,
        sockets_per_upstream=per_upstream,
        usable_ports_per_upstream_and_source=usable,
        source_ips=source_ips,
        storm_connects_per_second=storm_rate,
        storm_ports_per_upstream_and_source=ports,
        proxy_read_timeout=read_timeout,
    )


def check_connects_per_second(ports_per_pair: int, held_per_pair: int, pairs: int) -> float:
    """New websockets per second the lb's spare ports carry with nginx_upstream_check on.

    Each (lb source IP, upstream) pair has `ports_per_pair` connect() ports, `held_per_pair` of them
    held by websockets; every new websocket's check holds one more for CHECK_PORT_HOLD_S. Faster than
    this, connect() fails with EADDRNOTAVAIL and nginx marks the upstream down for fail_timeout.
    """
    return max(0, ports_per_pair - held_per_pair) * pairs / CHECK_PORT_HOLD_S


def nginx_check_connects_per_second(n: NginxPlan) -> float:
    """check_connects_per_second() of a plan: its spare ports over every (source IP, upstream) pair."""
    held = _ceil_div(n.sockets_per_upstream, n.source_ips)
    return check_connects_per_second(n.usable_ports_per_upstream_and_source, held, n.source_ips * n.upstream_endpoints)


def lb_connects_per_second(lb: HostFacts) -> int:
    """New websockets per second nginx can start on the lb (with the check): how fast a storm comes back."""
    return math.floor(lb.cores / NGINX_CPU_S_PER_CONNECT)


def storm_ports_needed(held_per_pair: int, connects_per_second_per_pair: float) -> int:
    """Ports one (lb source IP, upstream) pair needs in a reconnect storm's first CHECK_PORT_HOLD_S.

    The dropped websockets' ports are all in TIME_WAIT (nginx closed them); every client back within
    that time holds a port for its websocket and one for its check, which nginx closes first.
    """
    back = min(held_per_pair, math.ceil(connects_per_second_per_pair * CHECK_PORT_HOLD_S))
    return held_per_pair + 2 * back


def source_ips_needed(sockets: int, port_range: tuple[int, int] = DEFAULT_PORT_RANGE) -> int:
    """Fewest client source IPs that give `sockets` ephemeral ports toward one lb address."""
    return max(1, _ceil_div(sockets, int(_port_range_size(port_range) * BIND_PORT_FRACTION)))


def plan_loadgen(
    sockets: int,
    source_ips: int,
    gen: HostFacts,
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
    workers_per_source_ip: int | None = None,
) -> LoadgenPlan:
    """Size the load generator: clients per source IP, processes per source IP, open files per process.

    plan() uses it for the loadgen group; `siokit load` without a plan document calls it for its own host.
    """
    if sockets < 1:
        raise PlanError(f"sockets must be >= 1, got {sockets}")
    if source_ips < 1:
        raise PlanError(f"source_ips must be >= 1, got {source_ips}")
    range_size = _port_range_size(port_range)
    usable = int(range_size * BIND_PORT_FRACTION)
    needed = _ceil_div(sockets, usable)
    if source_ips < needed:
        raise PlanError(
            f"source_ips {source_ips} is too few for {sockets} sockets: each source IP "
            f"gives {range_size} ports x {BIND_PORT_FRACTION:g} = {usable}, and "
            f"{source_ips} x {usable} = {source_ips * usable} < {sockets}; "
            f"need >= {needed} source IPs"
        )
    per_ip = _ceil_div(sockets, source_ips)
    cap = gen.nofile_hard - FD_RESERVE
    fewest = _ceil_div(per_ip, cap)
    if workers_per_source_ip is None:
        # One asyncio process per core at least: a client costs CPU, not only a file descriptor.
        per_ip_workers = max(_ceil_div(gen.cores, source_ips), fewest)
    else:
        per_ip_workers = workers_per_source_ip
        if per_ip_workers < fewest:
            raise PlanError(
                f"loadgen_workers_per_source_ip {per_ip_workers} is too few: {sockets} clients / {source_ips} "
                f"source IPs = {per_ip} per IP, but one process holds at most nofile_hard {gen.nofile_hard} - "
                f"reserve {FD_RESERVE} = {cap}; need >= ceil({per_ip} / {cap}) = {fewest} workers per source IP"
            )
    per_worker = _ceil_div(per_ip, per_ip_workers)
    return LoadgenPlan(
        source_ips=source_ips,
        usable_ports_per_source_ip=usable,
        clients=sockets,
        clients_per_source_ip=per_ip,
        workers_per_source_ip=per_ip_workers,
        workers=per_ip_workers * source_ips,
        clients_per_worker=per_worker,
        limit_nofile=min(gen.nofile_hard, per_worker + FD_RESERVE),
    )


def _plan_memory(
    target: Target, app: HostFacts, lb: HostFacts, gen: HostFacts, uwsgi: UwsgiPlan, per_host: int
) -> MemoryPlan:
    s = target.sockets
    uwsgi_host = per_host * UWSGI_BYTES_PER_SOCKET + uwsgi.instances_per_host * (
        UWSGI_BASE_BYTES + uwsgi.async_cores * UWSGI_BYTES_PER_ASYNC_CORE
    )
    nginx = s * NGINX_BYTES_PER_CLIENT
    loadgen = s * LOADGEN_BYTES_PER_CLIENT
    kernel = s * TCP_SOCKETS_PER_CLIENT * KERNEL_BYTES_PER_TCP_SOCKET
    total = uwsgi_host * target.app_hosts + nginx + loadgen + kernel
    checks: list[tuple[str, int, HostFacts]]
    if target.colocated:
        budget = int(app.memory_gib * GIB * MEMORY_BUDGET)
        checks = [("the one colocated host (all groups)", total, app)]
    else:
        budget = int(min(app.memory_gib, lb.memory_gib, gen.memory_gib) * GIB * MEMORY_BUDGET)
        k_app = per_host * 2 * KERNEL_BYTES_PER_TCP_SOCKET
        k_lb = s * 2 * KERNEL_BYTES_PER_TCP_SOCKET
        k_gen = s * KERNEL_BYTES_PER_TCP_SOCKET
        checks = [
            ("each app host", uwsgi_host + k_app, app),
            ("the lb host", nginx + k_lb, lb),
            ("the loadgen host", loadgen + k_gen, gen),
        ]
    for where, need, facts in checks:
        avail = facts.memory_gib * GIB * MEMORY_BUDGET
        if need > avail:
            raise PlanError(
                f"{s} sockets do not fit in memory on {where}: needs {need / GIB:.2f} GiB "
                f"(uWSGI {UWSGI_BYTES_PER_SOCKET // KB} KB, nginx {NGINX_BYTES_PER_CLIENT // KB} KB, "
                f"load generator {LOADGEN_BYTES_PER_CLIENT // KB} KB per socket, kernel "
                f"{KERNEL_BYTES_PER_TCP_SOCKET} B per TCP socket) but {facts.memory_gib:g} GiB x "
                f"{MEMORY_BUDGET:g} = {avail / GIB:.2f} GiB is the budget"
            )
    return MemoryPlan(
        uwsgi_per_app_host=uwsgi_host,
        nginx_on_lb=nginx,
        loadgen=loadgen,
        kernel_total=kernel,
        total=total,
        budget=budget,
        per_socket=total // s,
    )


def _sysctls(target: Target, memory_gib: float, nofile: int) -> dict[str, str]:
    pages = int(memory_gib * GIB / 4096)
    low, high = target.port_range
    fds = target.sockets * TCP_SOCKETS_PER_CLIENT
    return {
        "fs.file-max": str(max(2 * fds, 2_097_152)),
        "fs.nr_open": str(max(nofile, 1_048_576)),
        "net.core.somaxconn": "65535",
        "net.core.netdev_max_backlog": "65536",
        "net.ipv4.tcp_max_syn_backlog": "65535",
        "net.ipv4.ip_local_port_range": f"{low} {high}",
        "net.ipv4.tcp_tw_reuse": "1",
        "net.ipv4.tcp_fin_timeout": "15",
        # Idle sockets keep small buffers; the ceiling lets busy ones grow.
        "net.ipv4.tcp_rmem": "4096 16384 6291456",
        "net.ipv4.tcp_wmem": "4096 16384 4194304",
        "net.ipv4.tcp_mem": f"{pages // 5} {pages * 3 // 10} {pages * 2 // 5}",
        "net.netfilter.nf_conntrack_max": str(max(262_144, math.ceil(fds * SPREAD_HEADROOM))),
    }


def plan(
    target: Target,
    app: HostFacts,
    lb: HostFacts | None = None,
    loadgen: HostFacts | None = None,
) -> Plan:
    """Plan a deployment; raise PlanError with the arithmetic when the target cannot be met."""
    lb = lb or app
    loadgen = loadgen or app
    if target.sockets < 1:
        raise PlanError(f"sockets must be >= 1, got {target.sockets}")
    if target.app_hosts < 1:
        raise PlanError(f"app_hosts must be >= 1, got {target.app_hosts}")
    if target.source_ips < 1:
        raise PlanError(f"source_ips must be >= 1, got {target.source_ips}")
    for role, facts in (("app", app), ("lb", lb), ("loadgen", loadgen)):
        _check_facts(role, facts)
    range_size = _port_range_size(target.port_range)
    interval, ping_cores = _ping_interval(target, app)
    per_host = _ceil_div(target.sockets, target.app_hosts)
    fanout_s, fanout_why = _fanout_seconds(target, app, lb, per_host, ping_cores)
    ping_timeout, warnings = _ping_timeout(target, fanout_s, fanout_why)
    uwsgi = _plan_uwsgi(target, app, per_host)
    nginx = _plan_nginx(target, lb, uwsgi, range_size, interval + ping_timeout + PROXY_READ_MARGIN_S)
    gen = plan_loadgen(
        target.sockets, target.source_ips, loadgen, target.port_range, target.loadgen_workers_per_source_ip
    )
    memory = _plan_memory(target, app, lb, loadgen, uwsgi, per_host)
    if target.colocated and app.nofile_hard < 65536:
        warnings.append(
            f"nofile hard limit is {app.nofile_hard}: {uwsgi.instances_per_host} uWSGI instances per "
            f"app host, {nginx.worker_processes} nginx workers and {gen.workers} load workers make up for it"
        )
    return Plan(
        sockets=target.sockets,
        app_hosts=target.app_hosts,
        sockets_per_app_host=per_host,
        ping_interval=interval,
        ping_cpu_cores=round(ping_cores, 3),
        ping_timeout=ping_timeout,
        broadcast_fanout_s=round(fanout_s, 2),
        uwsgi=uwsgi,
        nginx=nginx,
        loadgen=gen,
        memory=memory,
        sysctls=_sysctls(target, max(app.memory_gib, lb.memory_gib), max(uwsgi.limit_nofile, 1_048_576)),
        warnings=warnings,
        target=target,
    )


# Keys of a plan input mapping (siokit_plan_input, the filter's spec) besides the three hosts' facts.
_INT_INPUTS = (
    "app_hosts", "source_ips", "lb_source_ips", "ping_interval", "ping_timeout", "uwsgi_instances_per_host",
    "async_cores", "nginx_workers", "loadgen_workers_per_source_ip",
)  # fmt: skip
INPUT_KEYS = frozenset({"sockets", "port_range", "colocated", "app", "lb", "loadgen", *_INT_INPUTS})


def target_from_mapping(spec: Mapping[str, Any]) -> Target:
    """Planner input as plain data -> Target; an unknown key is refused (a typo would pin nothing)."""
    unknown = set(spec) - INPUT_KEYS
    if unknown:
        raise PlanInputError(f"unknown planner input {sorted(unknown)}; known: {sorted(INPUT_KEYS)}")
    port_range = spec.get("port_range") or DEFAULT_PORT_RANGE
    if isinstance(port_range, str):
        port_range = tuple(int(p) for p in port_range.split())
    pinned = {k: int(spec[k]) for k in _INT_INPUTS if spec.get(k) is not None and spec.get(k) != ""}
    return Target(
        sockets=int(spec["sockets"]),
        port_range=(int(port_range[0]), int(port_range[1])),
        colocated=bool(spec.get("colocated", False)),
        **pinned,
    )


def plan_from_mapping(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Plain-data entry point for Ansible and the renderer: the plan document.

    spec: {"sockets", "port_range", "colocated", any of _INT_INPUTS, "app": facts, "lb": facts,
           "loadgen": facts} where facts = {"cores", "memory_gib", "nofile_hard", "somaxconn"}.
    """
    target = target_from_mapping(spec)
    app = HostFacts.from_mapping(spec["app"])
    lb = HostFacts.from_mapping(spec["lb"]) if spec.get("lb") else None
    gen = HostFacts.from_mapping(spec["loadgen"]) if spec.get("loadgen") else None
    return plan(target, app, lb, gen).to_dict()


def format_plan(p: Plan, host: HostFacts) -> str:
    """The plan as an operator reads it: what to run, and the figures behind it."""
    m = p.memory
    lines = [
        f"target: {p.sockets} sockets over {p.app_hosts} app host(s) ({p.sockets_per_app_host} each)",
        f"host facts: {host.cores} cores, {host.memory_gib:g} GiB, nofile hard {host.nofile_hard}",
        "",
        f"uWSGI:   {p.uwsgi.instances_per_host} instances per app host (one gevent worker each, ports "
        f"{p.uwsgi.base_port}-{p.uwsgi.base_port + p.uwsgi.instances_per_host - 1}), "
        f"{p.uwsgi.sockets_per_instance} sockets and {p.uwsgi.async_cores} async cores each, "
        f"LimitNOFILE={p.uwsgi.limit_nofile}, listen {p.uwsgi.listen}",
        f"nginx:   worker_processes {p.nginx.worker_processes}, worker_connections "
        f"{p.nginx.worker_connections}, worker_rlimit_nofile {p.nginx.worker_rlimit_nofile}, "
        f"LimitNOFILE={p.nginx.limit_nofile}, proxy_read_timeout {p.nginx.proxy_read_timeout} s",
        f"         {p.nginx.upstream_endpoints} upstreams x {p.nginx.sockets_per_upstream} sockets; "
        f"{p.nginx.usable_ports_per_upstream_and_source} connect() ports per (lb source IP, upstream) "
        f"-> {p.nginx.source_ips} lb source IP(s)",
        f"         nginx_upstream_check: each new websocket holds one more port for {CHECK_PORT_HOLD_S} s "
        f"(TIME_WAIT, tcp_tw_reuse) -> at most {nginx_check_connects_per_second(p.nginx):,.0f} new "
        "websockets/s over the spare ports",
        f"         reconnect storm: the lb starts at most {p.nginx.storm_connects_per_second:,} new websockets/s "
        f"({NGINX_CPU_S_PER_CONNECT * 1e6:g} us of nginx CPU each); with the dropped ones' ports in TIME_WAIT "
        f"for {CHECK_PORT_HOLD_S} s it needs {p.nginx.storm_ports_per_upstream_and_source} of the "
        f"{p.nginx.usable_ports_per_upstream_and_source} ports per (lb source IP, upstream)",
        f"loadgen: {p.loadgen.source_ips} source IPs x {p.loadgen.usable_ports_per_source_ip} ports, "
        f"{p.loadgen.workers_per_source_ip} worker processes per source IP x {p.loadgen.clients_per_worker} "
        f"clients, LimitNOFILE={p.loadgen.limit_nofile} each",
        f"Engine.IO ping interval {p.ping_interval} s -> {p.ping_cpu_cores:g} cores of idle pings; "
        f"ping timeout {p.ping_timeout} s (a broadcast to everyone takes ~{p.broadcast_fanout_s:g} s of the cores)",
        "",
        f"memory:  uWSGI {m.uwsgi_per_app_host / GIB:.2f} GiB per app host, nginx {m.nginx_on_lb / GIB:.2f} "
        f"GiB, load generator {m.loadgen / GIB:.2f} GiB, kernel {m.kernel_total / GIB:.2f} GiB",
        f"         total {m.total / GIB:.2f} GiB ({m.per_socket / KB:.0f} KB per socket), "
        f"budget {m.budget / GIB:.2f} GiB",
        "",
        "sysctls:",
        *(f"  {k} = {v}" for k, v in p.sysctls.items()),
    ]
    lines += [f"warning: {w}" for w in p.warnings]
    return "\n".join(lines)
