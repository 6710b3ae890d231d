"""Capacity planner: properties over targets and host facts, and refusals with the arithmetic."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siokit import planner
from siokit.planner import FD_RESERVE, HostFacts, PlanError, Target, plan

THIS_HOST = HostFacts(cores=2, memory_gib=24, nofile_hard=20000, somaxconn=4096)

hosts = st.builds(
    HostFacts,
    cores=st.integers(1, 128),
    memory_gib=st.floats(0.5, 1024),
    nofile_hard=st.integers(2 * FD_RESERVE, 2_000_000),
    somaxconn=st.integers(128, 65535),
)
targets = st.builds(
    Target,
    sockets=st.integers(1, 2_000_000),
    app_hosts=st.integers(1, 16),
    source_ips=st.integers(1, 64),
    colocated=st.booleans(),
)


# "a x b = c", "a / b = c", "a - b = c", each operand optionally followed by its unit or name
# ("65535 ports x 0.85 = 55704", "ceil(80000 / 19488) = 5", "nofile_hard 20000 - reserve 512 = 19488").
_NUM = r"(\d+(?:\.\d+)?)"
_EQUATION = re.compile(rf"{_NUM}\s*(?:[A-Za-z_]+\s*)?(x|/|-)\s*(?:[A-Za-z_]+\s*)?{_NUM}\)?\s*=\s*{_NUM}")
_LESS_THAN = re.compile(rf"{_NUM}\s*<\s*{_NUM}")


def _numbers(msg: str) -> set[str]:
    return set(re.findall(r"\d+(?:\.\d+)?", msg))


def _decimals(token: str) -> int:
    return len(token.partition(".")[2])


def _equation_holds(a: str, op: str, b: str, c: str) -> bool:
    x, y, got = float(a), float(b), float(c)
    want = x * y if op == "x" else x / y if op == "/" else x - y
    # The message rounds (or floors, or ceils) to the digits it shows, and its operands are rounded too.
    slack = 10.0 ** -_decimals(c) + abs(want) * 1e-5
    return abs(want - got) < slack


def _assert_refusal_shows_its_numbers(msg: str, target: Target, host: HostFacts) -> None:
    """A refusal names the demand and the limit it hit, and its arithmetic is true."""
    equations = _EQUATION.findall(msg)
    assert equations, f"no arithmetic (a x b = c) in: {msg}"
    for a, op, b, c in equations:
        assert _equation_holds(a, op, b, c), f"false arithmetic {a} {op} {b} = {c} in: {msg}"
    for a, b in _LESS_THAN.findall(msg):
        assert float(a) < float(b), f"false comparison {a} < {b} in: {msg}"
    shown = _numbers(msg)
    assert str(target.sockets) in shown, f"the target's {target.sockets} sockets not in: {msg}"
    # Which limit was hit, worked out here from the planner's named constants, not from the message.
    low, high = planner.DEFAULT_PORT_RANGE
    usable = int((high - low + 1) * planner.BIND_PORT_FRACTION)
    if target.source_ips * usable < target.sockets:
        involved = {target.source_ips, usable, target.source_ips * usable, -(-target.sockets // usable)}
        missing = {str(n) for n in involved} - shown
        assert not missing, f"source-IP refusal without {sorted(missing)} in: {msg}"
        return
    # Otherwise only memory can refuse these targets: the host's memory, the budget share of it,
    # and a need above that budget.
    budget = host.memory_gib * planner.MEMORY_BUDGET
    involved_text = {f"{host.memory_gib:g}", f"{planner.MEMORY_BUDGET:g}", f"{budget:.2f}"}
    missing = involved_text - shown
    assert not missing, f"not a source-IP refusal, and no memory arithmetic {sorted(missing)} in: {msg}"
    # At the two decimals shown, a need just over the budget reads equal to it (0.4502 vs 0.45 GiB).
    need = re.search(rf"needs {_NUM} GiB", msg)
    assert need and float(need.group(1)) >= float(f"{budget:.2f}"), f"no need up to {budget:.2f} GiB in: {msg}"


@settings(max_examples=400, deadline=None)
@given(target=targets, host=hosts)
def test_plan_respects_limits_or_refuses(target: Target, host: HostFacts) -> None:
    try:
        p = plan(target, host)
    except PlanError as exc:
        _assert_refusal_shows_its_numbers(str(exc), target, host)
        return
    # Never ask for more than the host's hard limit.
    for limit in (p.uwsgi.limit_nofile, p.nginx.worker_rlimit_nofile, p.nginx.limit_nofile, p.loadgen.limit_nofile):
        assert limit <= host.nofile_hard
    # Every socket has a place: uWSGI instances, async cores, nginx connections, ports.
    assert p.uwsgi.instances_per_host * p.uwsgi.sockets_per_instance >= p.sockets_per_app_host
    assert p.uwsgi.sockets_per_instance <= host.nofile_hard - FD_RESERVE
    assert p.uwsgi.async_cores >= p.uwsgi.sockets_per_instance
    assert p.uwsgi.async_cores + FD_RESERVE <= host.nofile_hard
    assert p.uwsgi.listen <= host.somaxconn
    assert p.nginx.worker_processes * p.nginx.worker_connections >= 2 * target.sockets
    assert p.nginx.worker_connections <= p.nginx.worker_rlimit_nofile
    assert target.source_ips * p.loadgen.usable_ports_per_source_ip >= target.sockets
    assert p.nginx.source_ips * p.nginx.usable_ports_per_upstream_and_source >= p.nginx.sockets_per_upstream
    assert p.loadgen.workers * p.loadgen.clients_per_worker >= target.sockets
    assert p.loadgen.clients_per_worker <= host.nofile_hard - FD_RESERVE
    assert p.memory.total <= p.memory.budget or not target.colocated
    assert p.ping_interval >= planner.DEFAULT_PING_INTERVAL


def test_the_refusal_check_fails_on_wrong_or_missing_numbers() -> None:
    """The check above can fail: a real refusal passes it, and the same message with a wrong product,
    a false comparison or the demand left out does not."""
    target = Target(sockets=160_000, source_ips=2)
    with pytest.raises(PlanError) as refused:
        plan(target, THIS_HOST)
    msg = str(refused.value)
    _assert_refusal_shows_its_numbers(msg, target, THIS_HOST)
    for broken in (
        msg.replace("= 109670", "= 109671"),  # 2 x 54835 is not 109671
        msg.replace("< 160000", "< 100000"),  # 109670 is not below 100000
        msg.replace("160000", "some"),
        msg.replace("need >= 3", "need >= 4"),  # the right count of source IPs is 3
    ):
        assert broken != msg
        with pytest.raises(AssertionError):
            _assert_refusal_shows_its_numbers(broken, target, THIS_HOST)


@settings(max_examples=200, deadline=None)
@given(sockets=st.integers(1, 2_000_000), ips=st.integers(1, 64))
def test_source_ip_refusal_is_exactly_the_port_arithmetic(sockets: int, ips: int) -> None:
    big = HostFacts(cores=64, memory_gib=4096, nofile_hard=1_048_576)
    usable = int(64512 * planner.BIND_PORT_FRACTION)
    try:
        plan(Target(sockets=sockets, source_ips=ips, app_hosts=8), big)
    except PlanError as exc:
        assert "source_ips" in str(exc)
        assert ips * usable < sockets
    else:
        assert ips * usable >= sockets


def test_160k_colocated_fits_this_machine_and_217k_does_not_and_says_why() -> None:
    """Measured costs (BENCHMARKS.md): ~93 KB per client on one host, plus uWSGI's fixed part; 160k fit."""
    this_machine = HostFacts(cores=2, memory_gib=23.5, nofile_hard=20000, somaxconn=4096)
    p = plan(Target(sockets=160_000, app_hosts=2, source_ips=4, colocated=True), this_machine)
    assert p.memory.total <= p.memory.budget
    assert plan(Target(sockets=216_000, app_hosts=2, source_ips=4, colocated=True), this_machine)
    with pytest.raises(PlanError, match=r"217000 sockets do not fit in memory.*needs 21\.\d+ GiB.*uWSGI 35 KB"):
        plan(Target(sockets=217_000, app_hosts=2, source_ips=4, colocated=True), this_machine)


def test_160k_on_one_32_gib_host_needs_several_processes_and_source_ips() -> None:
    p = plan(
        Target(sockets=160_000, app_hosts=2, source_ips=4, colocated=True),
        HostFacts(cores=2, memory_gib=32, nofile_hard=20000, somaxconn=4096),
    )
    assert p.uwsgi.instances_per_host >= 5  # 80k per host at < 20k fds per instance
    assert p.nginx.worker_processes * (20000 - FD_RESERVE) >= 2 * 160_000
    assert p.loadgen.workers >= 9
    # 160k x the machine's CPU per ping / (0.2 x 2 shared cores): nginx and the load generator count too.
    needed = math.ceil(160_000 * planner.PING_MACHINE_CPU_SECONDS / (planner.PING_CPU_BUDGET_COLOCATED * 2))
    assert p.ping_interval == max(planner.DEFAULT_PING_INTERVAL, needed)
    two_hosts = HostFacts(cores=2, memory_gib=32, nofile_hard=20000)
    alone = plan(Target(sockets=160_000, app_hosts=2, source_ips=4), two_hosts)
    assert alone.ping_interval == planner.DEFAULT_PING_INTERVAL  # 80k x 67.5 us / 25 s = 0.22 of 2 cores


def test_refuses_too_few_source_ips_with_arithmetic() -> None:
    with pytest.raises(PlanError, match=r"2 x 54835 = 109670 < 160000; need >= 3 source IPs"):
        plan(Target(sockets=160_000, source_ips=2), THIS_HOST)


def test_refuses_ping_interval_that_saturates_the_cores() -> None:
    needed = math.ceil(160_000 * planner.PING_MACHINE_CPU_SECONDS / (planner.PING_CPU_BUDGET_COLOCATED * 2))
    us = f"{planner.PING_MACHINE_CPU_SECONDS * 1e6:g}"
    share = f"{planner.PING_CPU_BUDGET_COLOCATED:g}"
    refusal = rf"ping_interval 10 s is too short.*x {us} us per ping.*{share} x 2 cores.*use >= {needed} s"
    with pytest.raises(PlanError, match=refusal):
        plan(Target(sockets=160_000, source_ips=4, ping_interval=10, colocated=True), THIS_HOST)


def test_refuses_what_does_not_fit_in_memory() -> None:
    with pytest.raises(PlanError, match=r"do not fit in memory.*GiB is the budget"):
        plan(Target(sockets=400_000, source_ips=8, colocated=True), THIS_HOST)


def test_refuses_too_few_instances_for_the_fd_limit() -> None:
    with pytest.raises(PlanError, match=r"at least ceil\(80000 / 19488\) = 5 instances"):
        plan(Target(sockets=160_000, app_hosts=2, source_ips=4, uwsgi_instances_per_host=2), THIS_HOST)


def test_refuses_too_few_lb_source_ips() -> None:
    with pytest.raises(PlanError, match=r"lb_source_ips 1 is too few"):
        plan(
            Target(sockets=160_000, source_ips=4, uwsgi_instances_per_host=1, lb_source_ips=1),
            HostFacts(cores=1, memory_gib=256, nofile_hard=1_048_576),
        )


@pytest.mark.parametrize(
    "facts",
    [
        HostFacts(cores=0, memory_gib=8, nofile_hard=65536),
        HostFacts(cores=2, memory_gib=0, nofile_hard=65536),
        HostFacts(cores=2, memory_gib=8, nofile_hard=100),
    ],
)
def test_refuses_impossible_host_facts(facts: HostFacts) -> None:
    with pytest.raises(PlanError):
        plan(Target(sockets=1000), facts)


def test_plan_from_mapping_is_plain_data() -> None:
    result = planner.plan_from_mapping(
        {"sockets": 1000, "app": {"cores": 2, "memory_gib": 4, "nofile_hard": 20000}, "port_range": "1024 65535"}
    )
    assert result["uwsgi"]["instances_per_host"] == 2
    assert result["sysctls"]["net.ipv4.ip_local_port_range"] == "1024 65535"


@pytest.mark.parametrize(("sockets", "ips"), [(1, 1), (54_835, 1), (54_836, 2), (160_000, 3)])
def test_source_ips_needed_matches_the_refusal(sockets: int, ips: int) -> None:
    assert planner.source_ips_needed(sockets) == ips
    big = HostFacts(cores=64, memory_gib=4096, nofile_hard=1_048_576)
    plan(Target(sockets=sockets, source_ips=ips, app_hosts=8), big)  # enough: no PlanError


def test_ping_timeout_is_socketio_default_unless_a_broadcast_takes_longer() -> None:
    big = HostFacts(cores=16, memory_gib=64, nofile_hard=1_048_576)
    p = plan(Target(sockets=100_000, app_hosts=2, source_ips=4), big)
    assert p.ping_timeout == 20
    assert p.broadcast_fanout_s < 20 / planner.PING_TIMEOUT_MARGIN
    # One core for a million sockets: the fan-out alone outlasts 20 s, so the planner raises the
    # timeout and says why.
    slow = HostFacts(cores=1, memory_gib=512, nofile_hard=1_048_576)
    p = plan(Target(sockets=1_000_000, app_hosts=1, source_ips=20, lb_source_ips=8, uwsgi_instances_per_host=16), slow)
    assert p.ping_timeout > 20
    assert any("ping timeout raised from Socket.IO's 20 s" in w for w in p.warnings)


def test_a_pinned_ping_timeout_below_the_fanout_is_refused_with_the_arithmetic() -> None:
    slow = HostFacts(cores=1, memory_gib=512, nofile_hard=1_048_576)
    million = {"sockets": 1_000_000, "source_ips": 20, "lb_source_ips": 8, "uwsgi_instances_per_host": 16}
    margin = re.escape(f"x {planner.PING_TIMEOUT_MARGIN:g} margin")
    with pytest.raises(PlanError, match=rf"ping_timeout 20 s is shorter than a broadcast .* {margin} = \d+ s"):
        plan(Target(**million, ping_timeout=20), slow)  # type: ignore[arg-type]
    assert plan(Target(**million, ping_timeout=600), slow).ping_timeout == 600  # type: ignore[arg-type]


# Pinned values (siokit_plan_input) are planner input: accepted when they hold the target, refused
# with the arithmetic when they do not.
CLUSTER = Target(sockets=160_000, app_hosts=2, source_ips=4, colocated=True)


def test_refuses_too_few_async_cores_with_the_arithmetic() -> None:
    with pytest.raises(
        PlanError,
        match=r"async_cores 1000 is too few: .* 80000 sockets per app host / 5 instances "
        r"= 16000 per instance; need async_cores >= 16000",
    ):
        plan(replace(CLUSTER, async_cores=1000), THIS_HOST)


def test_refuses_more_async_cores_than_an_instance_can_hold_open() -> None:
    with pytest.raises(PlanError, match=r"nofile_hard 20000 - reserve 512 = 19488; use async_cores <= 19488"):
        plan(replace(CLUSTER, async_cores=30_000), THIS_HOST)


def test_refuses_too_few_nginx_workers_with_the_arithmetic() -> None:
    with pytest.raises(
        PlanError,
        match=r"nginx_workers 4 is too few: 160000 clients x 2 connections x 1.25 spread = "
        r"400000 connections.*need >= ceil\(400000 / 19488\) = 21 workers",
    ):
        plan(replace(CLUSTER, nginx_workers=4), THIS_HOST)


def test_refuses_too_few_load_workers_with_the_arithmetic() -> None:
    with pytest.raises(
        PlanError,
        match=r"160000 clients / 4 source IPs = 40000 per IP.*"
        r"need >= ceil\(40000 / 19488\) = 3 workers per source IP",
    ):
        plan(replace(CLUSTER, loadgen_workers_per_source_ip=1), THIS_HOST)


def test_pins_that_hold_the_target_are_what_the_plan_says() -> None:
    p = plan(
        replace(
            CLUSTER,
            async_cores=16_500,
            nginx_workers=24,
            loadgen_workers_per_source_ip=4,
            uwsgi_instances_per_host=6,
            ping_interval=150,
            ping_timeout=60,
        ),
        THIS_HOST,
    )
    assert (p.uwsgi.async_cores, p.nginx.worker_processes, p.loadgen.workers_per_source_ip) == (16_500, 24, 4)
    assert p.uwsgi.limit_nofile == 16_500 + FD_RESERVE
    assert p.loadgen.workers == 16 and p.loadgen.clients_per_worker == 10_000
    # nginx outwaits the pinned ping interval + timeout, from the plan, not from a role variable.
    assert p.nginx.proxy_read_timeout == 150 + 60 + planner.PROXY_READ_MARGIN_S


@pytest.mark.parametrize(
    "key",
    [
        "uwsgi_instances_per_host",
        "async_cores",
        "nginx_workers",
        "loadgen_workers_per_source_ip",
        "ping_interval",
        "ping_timeout",
    ],
)
def test_every_pin_goes_through_plan_from_mapping(key: str) -> None:
    """siokit_plan_input reaches the planner for every value an operator may pin."""
    spec = {"sockets": 160_000, "app_hosts": 2, "source_ips": 4, "colocated": True, "app": THIS_HOST.to_dict()}
    with pytest.raises(PlanError, match=rf"{key} 1 "):
        planner.plan_from_mapping({**spec, key: 1})


def test_plan_loadgen_is_what_plan_uses() -> None:
    p = plan(CLUSTER, THIS_HOST)
    assert planner.plan_loadgen(160_000, 4, THIS_HOST) == p.loadgen
    assert p.loadgen.workers == p.loadgen.workers_per_source_ip * p.loadgen.source_ips


def test_check_connects_per_second_is_spare_ports_over_the_time_wait_hold() -> None:
    # 100 ports per pair, 75 held, 2 pairs: 25 spare each, each check holds one for CHECK_PORT_HOLD_S.
    assert planner.check_connects_per_second(100, 75, 2) == 25 * 2 / planner.CHECK_PORT_HOLD_S
    assert planner.check_connects_per_second(100, 100, 2) == 0
    assert planner.check_connects_per_second(100, 120, 2) == 0  # no negative rates past the ports


def test_the_plan_states_the_new_websocket_rate_its_spare_ports_carry() -> None:
    this_machine = HostFacts(cores=2, memory_gib=23.5, nofile_hard=20000, somaxconn=4096)
    p = plan(Target(sockets=160_000, app_hosts=2, source_ips=4, colocated=True), this_machine)
    n = p.nginx
    held = -(-n.sockets_per_upstream // n.source_ips)
    spare = n.usable_ports_per_upstream_and_source - held
    rate = planner.nginx_check_connects_per_second(n)
    assert rate == spare * n.source_ips * n.upstream_endpoints / planner.CHECK_PORT_HOLD_S
    assert f"at most {rate:,.0f} new websockets/s" in planner.format_plan(p, this_machine)


def test_storm_ports_are_the_dropped_ones_plus_two_per_client_back_within_the_hold() -> None:
    hold = planner.CHECK_PORT_HOLD_S
    # Clients come back faster than the hold: all of them, a websocket and a check each (the loopback case).
    assert planner.storm_ports_needed(33, 1000.0) == 3 * 33
    # Slower: only those back within the hold add ports while the dropped ones are in TIME_WAIT.
    assert planner.storm_ports_needed(22_223, 370.0) == 22_223 + 2 * 370 * hold
    assert planner.storm_ports_needed(10, 0.0) == 10


def test_the_lb_starts_new_websockets_at_its_cores_over_nginx_cpu_per_connect() -> None:
    two = HostFacts(cores=2, memory_gib=23.5, nofile_hard=20000, somaxconn=4096)
    assert planner.lb_connects_per_second(two) == int(2 / planner.NGINX_CPU_S_PER_CONNECT)


def test_the_plan_states_the_storm_and_fits_it_in_the_ports() -> None:
    this_machine = HostFacts(cores=2, memory_gib=23.5, nofile_hard=20000, somaxconn=4096)
    p = plan(Target(sockets=160_000, source_ips=4, colocated=True), this_machine)
    n = p.nginx
    held = -(-n.sockets_per_upstream // n.source_ips)
    per_pair = n.storm_connects_per_second / (n.source_ips * n.upstream_endpoints)
    assert n.storm_ports_per_upstream_and_source == planner.storm_ports_needed(held, per_pair)
    assert n.storm_ports_per_upstream_and_source <= n.usable_ports_per_upstream_and_source
    assert f"needs {n.storm_ports_per_upstream_and_source} of the" in planner.format_plan(p, this_machine)


def test_a_storm_that_does_not_fit_raises_the_lb_source_ips_or_is_refused_when_pinned() -> None:
    # A 32-core lb starts 53,333 new websockets/s: with 1 lb source IP a storm at 160k needs
    # 22,223 + 2 x (53,333 / 9 upstreams x 2 s) = 45,927 ports per pair, over the 32,256 connect() gets.
    app = HostFacts(cores=2, memory_gib=23.5, nofile_hard=20000, somaxconn=4096)
    lb = HostFacts(cores=32, memory_gib=64, nofile_hard=1_048_576, somaxconn=4096)
    gen = HostFacts(cores=8, memory_gib=32, nofile_hard=1_048_576, somaxconn=4096)
    target = Target(sockets=160_000, source_ips=4, uwsgi_instances_per_host=9)
    p = plan(target, app, lb, gen)
    assert p.nginx.source_ips == 2  # 11,112 held + 2 x 5,926 back within 2 s = 22,964 <= 32,256
    assert p.nginx.storm_ports_per_upstream_and_source <= p.nginx.usable_ports_per_upstream_and_source
    with pytest.raises(PlanError, match=r"lb_source_ips 1 is too few for a reconnect storm.* = 45927 ports"):
        plan(replace(target, lb_source_ips=1), app, lb, gen)
