"""The conntrack bypass of the kit's ports (tuning_conntrack_bypass; the local cluster turns it on).

Where the inventory turns it on, the nft table is loaded by its unit on lb, app and loadgen hosts, holds
the ports the hosts really serve, and connections on them leave no conntrack entry: the test holds
plain TCP connections open on the real path (loadgen -> lb's port, lb -> each app host's first uWSGI
port) and reads the kernel's own count on both ends.
"""

from __future__ import annotations

import re
import shlex
import time
from urllib.parse import urlsplit

import pytest
from conftest import LAYOUT, nginx_dump, planned_uwsgi_ports

TABLE = LAYOUT.conntrack_bypass_table
UNIT = LAYOUT.conntrack_bypass_unit
COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"
HELD = 200


def _bypass_expected(cluster, host, name: str) -> bool:
    """The inventory's tuning_conntrack_bypass when the suite runs from one, else what was deployed."""
    if cluster._runner is not None:
        return bool(cluster._runner.get_variables(name).get("tuning_conntrack_bypass", False))
    return host.file(LAYOUT.conntrack_bypass_file).exists


def _count(host) -> int:
    r = host.run(f"cat {COUNT}")
    if r.rc != 0:
        pytest.skip(f"{COUNT} is absent: nothing tracks connections on this kernel, so nothing to bypass")
    return int(r.stdout.strip())


def _table_ports(host) -> set[int]:
    r = host.run(f"nft list set inet {TABLE} ports")
    assert r.rc == 0, f"nft table inet {TABLE} not loaded: {r.stderr.strip()}"
    m = re.search(r"elements\s*=\s*\{([^}]*)\}", r.stdout)
    assert m, f"no elements in the set: {r.stdout}"
    return {int(p) for p in re.findall(r"\d+", m.group(1))}


@pytest.mark.group("lb", "app", "loadgen")
def test_the_bypass_table_is_loaded_with_the_kits_ports(node, cluster) -> None:
    if not _bypass_expected(cluster, node, node.siokit_name):
        pytest.skip("the conntrack bypass is off in this deployment (tuning_conntrack_bypass)")
    svc = node.service(UNIT)
    assert svc.is_enabled and svc.is_running, f"{UNIT} is not enabled and active"
    ports = _table_ports(node)
    for app in cluster.hosts("app"):
        missing = set(planned_uwsgi_ports(app)) - ports
        assert not missing, f"uWSGI ports {sorted(missing)} are not in the bypass set {sorted(ports)}"
    for lb in cluster.hosts("lb"):
        listen = {
            int(p) for p in re.findall(r"^\s*listen\s+(?:\S+:)?(\d+)\b[^;]*\bdefault_server", nginx_dump(lb), re.M)
        }
        assert listen, "no `listen ... default_server` in nginx's configuration"
        missing = listen - ports
        assert not missing, f"nginx listen ports {sorted(missing)} are not in the bypass set {sorted(ports)}"


def _hold(client, address: str, port: int, seconds: int) -> None:
    """Open HELD TCP connections from `client` to address:port and keep them `seconds` (background)."""
    code = (
        "import socket,time\n"
        # Resolved once: each lookup through Docker's DNS is a tracked UDP flow of its own.
        f"a=socket.gethostbyname({address!r})\n"
        f"s=[socket.create_connection((a,{port}),timeout=5) for _ in range({HELD})]\n"
        f"time.sleep({seconds})\n"
    )
    r = client.run(f"nohup python3 -c {shlex.quote(code)} >/dev/null 2>&1 &")
    assert r.rc == 0, r.stderr


def _tracked_while_held(client, server, address: str, port: int) -> tuple[int, int]:
    """How many more entries client's and server's conntrack count while HELD connections are open."""
    before = _count(client), _count(server)
    _hold(client, address, port, seconds=6)
    time.sleep(3)
    after = _count(client), _count(server)
    return after[0] - before[0], after[1] - before[1]


def test_connections_on_the_kits_ports_are_not_tracked(cluster, lb_url: str) -> None:
    lb, loadgen = cluster.hosts("lb")[0], cluster.hosts("loadgen")[0]
    if not _bypass_expected(cluster, lb, cluster.group("lb")[0]):
        pytest.skip("the conntrack bypass is off in this deployment (tuning_conntrack_bypass)")
    url = urlsplit(lb_url)
    hops = [(loadgen, lb, url.hostname, url.port or 80, "loadgen -> lb")]
    for name, app in zip(cluster.group("app"), cluster.hosts("app"), strict=True):
        hops.append((lb, app, cluster.address(name), planned_uwsgi_ports(app)[0], f"lb -> {name}"))
    for client, server, address, port, what in hops:
        client_delta, server_delta = _tracked_while_held(client, server, address, port)
        # A few entries come and go on their own (DNS, Prometheus' scrapes): far fewer than HELD.
        assert client_delta < HELD // 4 and server_delta < HELD // 4, (
            f"{what} ({address}:{port}): {HELD} connections held, conntrack grew by {client_delta} on the "
            f"client and {server_delta} on the server: the bypass does not cover this port"
        )
