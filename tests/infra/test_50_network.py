"""Source IPs on the load generators; Redis private and password-protected."""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import PATHS, env_file, read_plan


def planned_source_ips(host, cluster) -> int:
    """The planned number of source IPs: plan.json, else the inventory, else the kit's defaults."""
    plan = read_plan(host)
    if plan is not None:
        return int(plan["loadgen"]["source_ips"])
    if os.environ.get("SIOKIT_INFRA_SOURCE_IPS"):
        return int(os.environ["SIOKIT_INFRA_SOURCE_IPS"])
    if cluster._runner is not None:
        hv = cluster._runner.get_variables(host.siokit_name)
        if "siokit_loadgen_source_ips" in hv:
            return int(hv["siokit_loadgen_source_ips"])
    # the kit's own value: playbook group_vars override role defaults
    ansible_dir = Path(__file__).resolve().parents[2] / "ansible"
    candidates = [
        *sorted(ansible_dir.glob("group_vars/all*/**/*.yml")),
        *sorted(ansible_dir.glob("group_vars/all*.yml")),
    ]
    candidates += sorted(ansible_dir.glob("roles/*/defaults/main.yml"))
    for f in candidates:
        m = re.search(r"^siokit_loadgen_source_ips:\s*(\d+)", f.read_text(), re.M)
        if m:
            return int(m.group(1))
    pytest.fail("planned number of source IPs unknown: no plan.json, no siokit_loadgen_source_ips found")


def local_addresses(host) -> set[str]:
    out = host.run("ip -4 -o addr show").stdout
    return set(re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out))


def bind_addresses(host) -> list[str]:
    args = env_file(host, PATHS["load_env"]).get("SIOKIT_LOAD_ARGS", "")
    m = re.search(r"--bind[ =](\S+)", args)
    assert m, f"no --bind in SIOKIT_LOAD_ARGS of {PATHS['load_env']}: {args!r}"
    return [a for a in m.group(1).split(",") if a]


@pytest.mark.group("loadgen")
def test_source_ips_present(node, cluster):
    want = planned_source_ips(node, cluster)
    binds = bind_addresses(node)
    present = local_addresses(node)
    missing = [a for a in binds if a not in present]
    assert not missing, f"load generator binds to addresses the host does not have: {missing} (has {present})"
    assert len(set(binds)) >= want, f"{len(set(binds))} source address(es) {binds}, the plan wants {want}"
    # nginx's ip_hash keys on the first three octets: sources in distinct /24s spread over instances
    nets = {str(ipaddress.ip_network(f"{a}/24", strict=False)) for a in binds}
    assert len(nets) == len(set(binds)) or len(binds) == 1, f"source addresses share a /24: {binds}"


@pytest.mark.group("loadgen")
def test_source_ips_can_connect(node, lb_url):
    """Each source address really carries traffic to the lb (bind + connect + HTTP answer)."""
    u = urlsplit(lb_url)
    for addr in bind_addresses(node):
        code = (
            "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), 5, (sys.argv[3], 0)); "
            "s.sendall(b'GET /healthz HTTP/1.0\\r\\nHost: '+sys.argv[4].encode()+b'\\r\\n\\r\\n'); "
            "print(s.recv(64).decode().split()[1])"
        )
        # nginx answers only the names it serves (any other Host is closed): send the lb URL's.
        r = node.run(f"python3 -c {shlex.quote(code)} {u.hostname} {u.port or 80} {addr} {shlex.quote(u.netloc)}")
        assert r.rc == 0 and r.stdout.strip() == "200", f"from {addr}: rc={r.rc} {r.stdout} {r.stderr}"


def redis_target(cluster) -> tuple[str, int, str, str]:
    """host, port, user, password of the message queue, as the app hosts are configured (siokit.env)."""
    app = cluster.hosts("app")[0]
    url = env_file(app, PATHS["app_env"]).get("SIOKIT_MESSAGE_QUEUE", "")
    assert url.startswith("redis://"), f"SIOKIT_MESSAGE_QUEUE is not a redis URL: {url!r}"
    u = urlsplit(url)
    assert u.password, "the message queue URL carries no password"
    return u.hostname, u.port or 6379, unquote(u.username or ""), unquote(u.password)


REDIS_CMD = (
    "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), 5); "
    "s.sendall(sys.argv[3].encode().decode('unicode_escape').encode()); "
    "import time; time.sleep(0.3); print(s.recv(4096).decode().replace('\\r\\n', '|'))"
)


def redis_say(host, addr: str, port: int, payload: str) -> str:
    r = host.run(f"python3 -c {shlex.quote(REDIS_CMD)} {addr} {port} {shlex.quote(payload)}")
    assert r.rc == 0, f"cannot reach Redis at {addr}:{port} from {host.siokit_name}: {r.stderr}"
    return r.stdout.strip()


@pytest.mark.group("app")
def test_redis_refuses_unauthenticated(node, cluster):
    addr, port, user, password = redis_target(cluster)
    reply = redis_say(node, addr, port, "PING\\r\\n")
    assert reply.startswith("-NOAUTH"), f"Redis answered an unauthenticated PING with {reply!r}"
    reply = redis_say(node, addr, port, "AUTH not-the-password\\r\\n")
    assert reply.startswith("-"), f"Redis accepted a wrong password: {reply!r}"
    auth = resp_command("AUTH", *([user] if user else []), password)
    reply = redis_say(node, addr, port, auth + resp_command("PING"))
    assert reply.startswith("+OK|+PONG"), f"Redis refused the app's own credentials: {reply!r}"
    # the app's user may publish on the Socket.IO channel and nothing else
    if user:
        reply = redis_say(node, addr, port, auth + resp_command("CONFIG", "GET", "maxclients"))
        assert "-NOPERM" in reply, f"the app's Redis user may run CONFIG: {reply!r}"


def resp_command(*args: str) -> str:
    """A RESP array, escaped for redis_say (any byte of a password survives)."""
    out = f"*{len(args)}\\r\\n"
    for a in args:
        data = a.encode()
        out += f"${len(data)}\\r\\n" + "".join(f"\\x{b:02x}" for b in data) + "\\r\\n"
    return out


@pytest.mark.group("redis")
def test_redis_not_on_a_public_address(node):
    conf = node.file(PATHS["redis_conf"]).content_string
    m = re.search(r"^\s*port\s+(\d+)", conf, re.M)
    port = m.group(1) if m else "6379"
    out = node.run(f"ss -Hltn 'sport = :{port}'").stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, f"nothing listens on Redis' port {port}"
    bad = []
    for line in lines:
        local = line.split()[3]
        addr = local.rsplit(":", 1)[0].strip("[]")
        if addr in ("*", "0.0.0.0", "::"):
            bad.append(f"{local} (every address)")
            continue
        ip = ipaddress.ip_address(addr.split("%")[0])
        if not (ip.is_private or ip.is_loopback):
            bad.append(f"{local} (public)")
    assert not bad, f"Redis listens on non-private addresses: {bad}"
    anonymous = re.search(r"^\s*user\s+default\s+off\b", conf, re.M) or re.search(r"^\s*requirepass\s+\S+", conf, re.M)
    assert anonymous, "redis.conf neither turns the default user off nor sets requirepass"
    assert re.search(r"^\s*protected-mode\s+yes", conf, re.M), "protected-mode not on"
