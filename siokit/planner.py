"""Capacity planner: target sockets + host facts -> instances, cores, rlimits, ports, sysctls.

One module used by the CLI (`siokit plan`), by Ansible (filter plugin `siokit_plan`), by the renderer
and by the tests. It refuses a target it cannot meet and says why, with the arithmetic.

Every per-socket figure below is a named constant with the measurement it comes from
(shared design notes, "Figures measured here": one host, 2 cores, loopback, idle websocket clients).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

KB = 1024
MIB = 1024 * KB
GIB = 1024 * MIB

# PSS per idle websocket of Flask-SocketIO under uWSGI, gevent_uwsgi mode with the kit's driver
# (read watcher, timer pings, room index): 56.4 KB per socket each app host held in two 160k cluster
# runs, 61.9 KB at 5k on loopback (BENCHMARKS.md; 78 KB with the select greenlet and ping greenlets).
UWSGI_BYTES_PER_SOCKET = 57 * KB
# uWSGI preallocates its async cores: ~100 MB at start for --gevent 19000 (~5.3 KB per core).
UWSGI_BYTES_PER_ASYNC_CORE = 100 * MIB // 19000
# Fixed RSS of one uWSGI instance with the app loaded, before any socket (master + worker).
UWSGI_BASE_BYTES = 60 * MIB
# nginx 1.22 PSS per proxied websocket client (both connections, proxy_buffer_size 4k): 21.75 KB at
# 20k and 60k (BENCHMARKS.md; the design notes' 18 KB was RSS with 2 workers at 8k).
NGINX_BYTES_PER_CLIENT = 22 * KB
# `siokit load` (asyncio on `websockets`) PSS per client: 16.6-16.8 KB at 160k, 16.1 KB at 60k, 17.1 KB
# at 20k (BENCHMARKS.md).
LOADGEN_BYTES_PER_CLIENT = 17 * KB
# Kernel memory per idle TCP socket (tcp_sock, inode, file, epoll item, buffers): slab + TCP memory
# grew 20.3-20.5 KB per client of four sockets at 20k and 60k (BENCHMARKS.md): ~5.1 KB per socket.
KERNEL_BYTES_PER_TCP_SOCKET = 5200
# Every proxied client is four kernel sockets when all hops share one kernel:
# client, nginx downstream, nginx upstream, uWSGI.
TCP_SOCKETS_PER_CLIENT = 4
# uWSGI CPU per Engine.IO ping/pong round, measured in the 60k probe (~0.3 ms).
PING_CPU_SECONDS = 0.0003
# Share of the app hosts' cores that idle pings may take, leaving the rest for real traffic.
PING_CPU_BUDGET = 0.5
# Linux >= 4.2 gives connect() the even half of ip_local_port_range per destination (the odd half
# is kept for bind()); the 60k probe hit EADDRNOTAVAIL at ~11k sockets per upstream with the default
# range 32768-60999 (28k ports -> 14k usable, less what other flows held).
CONNECT_PORT_FRACTION = 0.5
# A client bound to an explicit source IP gets its port from bind(), over the whole range; keep a
# margin for ports in TIME_WAIT and other flows (~55k per source IP with 1024-65535).
BIND_PORT_FRACTION = 0.85
# Uneven spread of clients over upstreams (hash/least_conn) and over nginx workers (reuseport).
SPREAD_HEADROOM = 1.25
# File descriptors a process needs beyond its sockets (logs, libraries, Redis, stats socket, epoll).
FD_RESERVE = 512
# Memory the kit may plan to use: leave the rest to the OS, page cache and bursts.
MEMORY_BUDGET = 0.9
# Engine.IO default ping interval; the planner raises it when pings would eat the CPU budget.
DEFAULT_PING_INTERVAL = 25
DEFAULT_PORT_RANGE = (1024, 65535)
# Sysctls that are limits: the tuning role never lowers one the host already has higher (a VM's
# fs.file-max is often far above the plan's), and tests/infra accept a higher value for them.
RAISE_ONLY_SYSCTLS = frozenset(
    {
        "fs.file-max",
        "fs.nr_open",
        "net.core.somaxconn",
        "net.core.netdev_max_backlog",
        "net.ipv4.tcp_max_syn_backlog",
        "net.netfilter.nf_conntrack_max",
    }
)
DEFAULT_LISTEN_BACKLOG = 4096


class PlanError(ValueError):
    """A target the hosts cannot meet; the message carries the arithmetic."""


@dataclass(frozen=True)
class HostFacts:
    cores: int
    memory_gib: float
    nofile_hard: int
    somaxconn: int = 65535

    def check(self, role: str) -> None:
        if self.cores < 1:
            raise PlanError(f"{role}: cores must be >= 1, got {self.cores}")
        if self.memory_gib <= 0:
            raise PlanError(f"{role}: memory_gib must be > 0, got {self.memory_gib}")
        if self.nofile_hard < 2 * FD_RESERVE:
            raise PlanError(
                f"{role}: nofile_hard {self.nofile_hard} < {2 * FD_RESERVE} (twice the fd reserve of "
                f"{FD_RESERVE}); no process could hold any sockets"
            )


@dataclass(frozen=True)
class Target:
    sockets: int
    app_hosts: int = 1
    source_ips: int = 1
    lb_source_ips: int | None = None
    ping_interval: int | None = None
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    colocated: bool = False
    uwsgi_instances_per_host: int | None = None


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


@dataclass(frozen=True)
class LoadgenPlan:
    source_ips: int
    usable_ports_per_source_ip: int
    workers: int
    clients_per_worker: int
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
    uwsgi: UwsgiPlan
    nginx: NginxPlan
    loadgen: LoadgenPlan
    memory: MemoryPlan
    sysctls: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    budget = PING_CPU_BUDGET * app.cores * hosts
    needed = math.ceil(target.sockets * PING_CPU_SECONDS / budget)
    if target.ping_interval is None:
        interval = max(DEFAULT_PING_INTERVAL, needed)
    else:
        interval = target.ping_interval
        if interval < 1:
            raise PlanError(f"ping_interval must be >= 1 s, got {interval}")
        if interval < needed:
            raise PlanError(
                f"ping_interval {interval} s is too short for {target.sockets} sockets: "
                f"{target.sockets} / {interval} s x {PING_CPU_SECONDS * 1000:g} ms per ping = "
                f"{target.sockets / interval * PING_CPU_SECONDS:.2f} cores, over the budget of "
                f"{PING_CPU_BUDGET:g} x {app.cores} cores x {hosts} app host(s) = {budget:g}; "
                f"use >= {needed} s or more app cores"
            )
    return interval, target.sockets / interval * PING_CPU_SECONDS


def _plan_uwsgi(target: Target, app: HostFacts, per_host: int) -> UwsgiPlan:
    cap = app.nofile_hard - FD_RESERVE
    needed = max(app.cores, _ceil_div(per_host, cap))
    instances = target.uwsgi_instances_per_host or needed
    if instances < _ceil_div(per_host, cap):
        raise PlanError(
            f"uwsgi_instances_per_host {instances} cannot hold {per_host} sockets per app host: "
            f"each instance holds at most nofile_hard {app.nofile_hard} - reserve {FD_RESERVE} = {cap}, "
            f"so at least ceil({per_host} / {cap}) = {_ceil_div(per_host, cap)} instances are needed"
        )
    per_instance = _ceil_div(per_host, instances)
    # Each websocket holds an async core for its whole life; the margin serves polling and HTTP.
    async_cores = min(cap, per_instance + max(64, per_instance // 10))
    return UwsgiPlan(
        instances_per_host=instances,
        sockets_per_instance=per_instance,
        async_cores=async_cores,
        limit_nofile=min(app.nofile_hard, async_cores + FD_RESERVE),
        listen=min(DEFAULT_LISTEN_BACKLOG, app.somaxconn),
    )


def _plan_nginx(target: Target, lb: HostFacts, uwsgi: UwsgiPlan, range_size: int) -> NginxPlan:
    cap = lb.nofile_hard - FD_RESERVE
    fds = math.ceil(2 * target.sockets * SPREAD_HEADROOM)  # downstream + upstream per client
    workers = max(lb.cores, _ceil_div(fds, cap))
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
    return NginxPlan(
        worker_processes=workers,
        worker_connections=worker_connections,
        worker_rlimit_nofile=rlimit,
        limit_nofile=min(lb.nofile_hard, rlimit + FD_RESERVE),
        upstream_endpoints=endpoints,
        sockets_per_upstream=per_upstream,
        usable_ports_per_upstream_and_source=usable,
        source_ips=source_ips,
    )


def source_ips_needed(sockets: int, port_range: tuple[int, int] = DEFAULT_PORT_RANGE) -> int:
    """Fewest client source IPs that give `sockets` ephemeral ports toward one lb address."""
    return max(1, _ceil_div(sockets, int(_port_range_size(port_range) * BIND_PORT_FRACTION)))


def _plan_loadgen(target: Target, gen: HostFacts, range_size: int) -> LoadgenPlan:
    usable = int(range_size * BIND_PORT_FRACTION)
    needed = _ceil_div(target.sockets, usable)
    if target.source_ips < needed:
        raise PlanError(
            f"source_ips {target.source_ips} is too few for {target.sockets} sockets: each source IP "
            f"gives {range_size} ports x {BIND_PORT_FRACTION:g} = {usable}, and "
            f"{target.source_ips} x {usable} = {target.source_ips * usable} < {target.sockets}; "
            f"need >= {needed} source IPs"
        )
    per_worker_cap = gen.nofile_hard - FD_RESERVE
    workers = max(gen.cores, _ceil_div(target.sockets, per_worker_cap))
    per_worker = _ceil_div(target.sockets, workers)
    return LoadgenPlan(
        source_ips=target.source_ips,
        usable_ports_per_source_ip=usable,
        workers=workers,
        clients_per_worker=per_worker,
        limit_nofile=min(gen.nofile_hard, per_worker + FD_RESERVE),
    )


def _plan_memory(
    target: Target, app: HostFacts, lb: HostFacts, gen: HostFacts, uwsgi: UwsgiPlan, per_host: int
) -> MemoryPlan:
    s = target.sockets
    uwsgi_host = (
        per_host * UWSGI_BYTES_PER_SOCKET
        + uwsgi.instances_per_host * (UWSGI_BASE_BYTES + uwsgi.async_cores * UWSGI_BYTES_PER_ASYNC_CORE)
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
                f"{s} sockets do not fit in memory on {where}: needs {need / GIB:.1f} GiB "
                f"(uWSGI {UWSGI_BYTES_PER_SOCKET // KB} KB, nginx {NGINX_BYTES_PER_CLIENT // KB} KB, "
                f"load generator {LOADGEN_BYTES_PER_CLIENT // KB} KB per socket, kernel "
                f"{KERNEL_BYTES_PER_TCP_SOCKET} B per TCP socket) but {facts.memory_gib:g} GiB x "
                f"{MEMORY_BUDGET:g} = {avail / GIB:.1f} GiB is the budget"
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
        facts.check(role)
    range_size = _port_range_size(target.port_range)
    interval, ping_cores = _ping_interval(target, app)
    per_host = _ceil_div(target.sockets, target.app_hosts)
    uwsgi = _plan_uwsgi(target, app, per_host)
    nginx = _plan_nginx(target, lb, uwsgi, range_size)
    gen = _plan_loadgen(target, loadgen, range_size)
    memory = _plan_memory(target, app, lb, loadgen, uwsgi, per_host)
    warnings = []
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
        uwsgi=uwsgi,
        nginx=nginx,
        loadgen=gen,
        memory=memory,
        sysctls=_sysctls(target, max(app.memory_gib, lb.memory_gib), max(uwsgi.limit_nofile, 1_048_576)),
        warnings=warnings,
    )


def _facts(m: Mapping[str, Any]) -> HostFacts:
    return HostFacts(
        cores=int(m["cores"]),
        memory_gib=float(m["memory_gib"]),
        nofile_hard=int(m["nofile_hard"]),
        somaxconn=int(m.get("somaxconn", 65535)),
    )


def plan_from_mapping(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Plain-data entry point for Ansible and the renderer.

    spec: {"sockets", "app_hosts", "source_ips", "lb_source_ips", "ping_interval", "port_range",
           "colocated", "uwsgi_instances_per_host", "app": facts, "lb": facts, "loadgen": facts}
    where facts = {"cores", "memory_gib", "nofile_hard", "somaxconn"}.
    """
    port_range = spec.get("port_range") or DEFAULT_PORT_RANGE
    if isinstance(port_range, str):
        port_range = tuple(int(p) for p in port_range.split())
    target = Target(
        sockets=int(spec["sockets"]),
        app_hosts=int(spec.get("app_hosts", 1)),
        source_ips=int(spec.get("source_ips", 1)),
        lb_source_ips=int(spec["lb_source_ips"]) if spec.get("lb_source_ips") else None,
        ping_interval=int(spec["ping_interval"]) if spec.get("ping_interval") else None,
        port_range=(int(port_range[0]), int(port_range[1])),
        colocated=bool(spec.get("colocated", False)),
        uwsgi_instances_per_host=(
            int(spec["uwsgi_instances_per_host"]) if spec.get("uwsgi_instances_per_host") else None
        ),
    )
    app = _facts(spec["app"])
    lb = _facts(spec["lb"]) if spec.get("lb") else None
    gen = _facts(spec["loadgen"]) if spec.get("loadgen") else None
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
        f"LimitNOFILE={p.nginx.limit_nofile}",
        f"         {p.nginx.upstream_endpoints} upstreams x {p.nginx.sockets_per_upstream} sockets; "
        f"{p.nginx.usable_ports_per_upstream_and_source} connect() ports per (lb source IP, upstream) "
        f"-> {p.nginx.source_ips} lb source IP(s)",
        f"loadgen: {p.loadgen.source_ips} source IPs x {p.loadgen.usable_ports_per_source_ip} ports, "
        f"{p.loadgen.workers} worker processes x {p.loadgen.clients_per_worker} clients, "
        f"LimitNOFILE={p.loadgen.limit_nofile}",
        f"Engine.IO ping interval {p.ping_interval} s -> {p.ping_cpu_cores:g} cores of idle pings",
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
