"""Infra tests shared by Molecule, Vagrant and production.

How the hosts are found (first that applies):

1. ``SIOKIT_INFRA_HOSTS="lb=docker://lb;app=docker://app1,docker://app2;redis=docker://redis;loadgen=docker://loadgen;monitor=docker://monitor"``
2. an Ansible inventory, as Molecule passes it:
   ``pytest --connection=ansible --ansible-inventory=INVENTORY tests/infra`` (add ``--sudo`` when the
   inventory does not become root: the tests read /proc/<pid>/limits and root-only files)
3. ``pytest --hosts=docker://lb,docker://app1,... tests/infra``: the group is the host name without
   its trailing digits (lb, app1 -> app, redis, loadgen, monitor).

Tests name the group they check with ``@pytest.mark.group("app")`` and take the ``node`` fixture:
one test per host of the group. A group without hosts is a failure, never a silent skip; checks the
environment cannot make (a sysctl that a container cannot set) are skipped with the reason.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import testinfra

from siokit.lab.deployment import layout

GROUPS = ("lb", "app", "redis", "loadgen", "monitor")
HERE = Path(__file__).resolve().parent

# Where the roles put things: their defaults, read once (siokit/lab/deployment.py). The plan file is
# overridable for other layouts.
LAYOUT = layout()
PATHS = {
    "plan": os.environ.get("SIOKIT_INFRA_PLAN_FILE", LAYOUT.plan_file),
    "app_env": LAYOUT.app_env_file,
    "app_ini": LAYOUT.app_ini_file,
    "app_venv": LAYOUT.app_virtualenv,
    "load_env": LAYOUT.load_env_file,
    "redis_conf": LAYOUT.redis_conf,
    "nginx_site": LAYOUT.nginx_site,
    "nginx_access_log": LAYOUT.nginx_access_log,
    # The monitoring role's (ansible/roles/monitoring/defaults/main.yml).
    "prometheus_env": "/etc/default/prometheus",
    "prometheus_rules": "/etc/prometheus/rules/siokit-alerts.yml",
}
UWSGI_UNIT = LAYOUT.uwsgi_unit
APP_TARGET = LAYOUT.app_target
REDIS_SERVICE = LAYOUT.redis_service
REDIS_PACKAGE = LAYOUT.redis_package


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "group(name, ...): run the test once per host of these groups")
    config.addinivalue_line("markers", "destructive: injects a fault into the cluster and restores it")


@dataclass
class Cluster:
    config: pytest.Config
    names: dict[str, list[str]] = field(default_factory=dict)
    specs: dict[str, str] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    _hosts: dict[str, Any] = field(default_factory=dict)
    _runner: Any = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Cluster:
        opt = config.option
        c = cls(config)
        c.kwargs = {
            k: v
            for k, v in {
                "connection": getattr(opt, "connection", None),
                "ansible_inventory": getattr(opt, "ansible_inventory", None),
                "ssh_config": getattr(opt, "ssh_config", None),
                "ssh_identity_file": getattr(opt, "ssh_identity_file", None),
                "sudo": getattr(opt, "sudo", False),
                "sudo_user": getattr(opt, "sudo_user", None),
                "force_ansible": getattr(opt, "force_ansible", False),
            }.items()
            if v
        }
        explicit = os.environ.get("SIOKIT_INFRA_HOSTS", "").strip()
        if explicit:
            for part in explicit.split(";"):
                group, _, specs = part.partition("=")
                for spec in filter(None, (s.strip() for s in specs.split(","))):
                    c._add(group.strip(), spec)
        elif c.kwargs.get("ansible_inventory") and not getattr(opt, "hosts", None):
            from testinfra.utils.ansible_runner import AnsibleRunner

            c._runner = AnsibleRunner(c.kwargs["ansible_inventory"])
            for group in GROUPS:
                try:
                    hosts = c._runner.get_hosts(group)
                except RuntimeError:
                    hosts = []
                for name in sorted(hosts):
                    c._add(group, f"ansible://{name}", name)
        elif getattr(opt, "hosts", None):
            for spec in opt.hosts.split(","):
                name = re.sub(r"^\w+://", "", spec.strip()).split("@")[-1].split("?")[0]
                group = re.sub(r"[-_]?\d+$", "", name)
                c._add(group, spec.strip(), name)
        return c

    def _add(self, group: str, spec: str, name: str | None = None) -> None:
        name = name or re.sub(r"^\w+://", "", spec).split("@")[-1].split("?")[0]
        self.names.setdefault(group, [])
        if name not in self.names[group]:
            self.names[group].append(name)
        self.specs[name] = spec

    def group(self, group: str) -> list[str]:
        return list(self.names.get(group, []))

    def host(self, name: str):
        if name not in self._hosts:
            kwargs = dict(self.kwargs)
            if self.specs[name].startswith("ansible://") or kwargs.get("connection") == "ansible":
                kwargs.pop("connection", None)
            else:
                kwargs.pop("ansible_inventory", None)
                kwargs.pop("connection", None)
            self._hosts[name] = testinfra.get_host(self.specs[name], **kwargs)
        return self._hosts[name]

    def hosts(self, group: str) -> list:
        names = self.group(group)
        if not names:
            pytest.fail(f"no host in group {group!r}: check the inventory / --hosts / SIOKIT_INFRA_HOSTS")
        return [self.host(n) for n in names]

    def address(self, name: str) -> str:
        """The address other hosts of the cluster use to reach `name`."""
        env = os.environ.get(f"SIOKIT_INFRA_ADDRESS_{name.upper().replace('-', '_')}")
        if env:
            return env
        if self._runner is not None:
            hv = self._runner.get_variables(name)
            for key in ("siokit_private_address", "ansible_host"):
                if hv.get(key):
                    return str(hv[key])
        return name


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return _cluster(request.config)


def _cluster(config: pytest.Config) -> Cluster:
    if not hasattr(config, "_siokit_cluster"):
        config._siokit_cluster = Cluster.from_config(config)
    return config._siokit_cluster


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "node" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("group")
    groups = marker.args if marker else GROUPS
    cl = _cluster(metafunc.config)
    params, ids = [], []
    for group in groups:
        names = cl.group(group)
        if not names:
            params.append((group, None))
            ids.append(f"{group}:<no host>")
        for name in names:
            params.append((group, name))
            ids.append(name)
    metafunc.parametrize("node", params, ids=ids, indirect=True, scope="module")


@pytest.fixture(scope="module")
def node(request: pytest.FixtureRequest, cluster: Cluster):
    group, name = request.param
    if name is None:
        pytest.fail(f"no host in group {group!r}: check the inventory / --hosts / SIOKIT_INFRA_HOSTS")
    h = cluster.host(name)
    h.siokit_name = name  # type: ignore[attr-defined]
    h.siokit_group = group  # type: ignore[attr-defined]
    return h


# ---------------------------------------------------------------- helpers shared by the test modules


def in_container(host) -> bool:
    r = host.run("systemd-detect-virt --container")
    return r.rc == 0 and r.stdout.strip() not in ("", "none")


def read_plan(host) -> dict | None:
    """The plan the roles configured this host with (/etc/siokit/plan.json), if they wrote one."""
    f = host.file(PATHS["plan"])
    if not f.exists:
        return None
    return json.loads(f.content_string)


def env_file(host, path: str) -> dict[str, str]:
    f = host.file(path)
    assert f.exists, f"{path} missing"
    out = {}
    for line in f.content_string.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip().strip('"').strip("'")
    return out


def unit_prop(host, unit: str, prop: str) -> str:
    return host.run(f"systemctl show -p {prop} --value {shlex.quote(unit)}").stdout.strip()


def planned_uwsgi_ports(host) -> list[int]:
    """Ports of every uWSGI instance this host should run: the Wants= of siokit.target."""
    wants = unit_prop(host, APP_TARGET, "Wants")
    ports = LAYOUT.uwsgi_ports(wants)
    plan = read_plan(host)
    if plan is not None:
        n = plan["uwsgi"]["instances_per_host"]
        base = plan["uwsgi"].get("base_port", 8001)
        assert ports == list(range(base, base + n)), f"siokit.target wants {ports}, the plan says {n} from {base}"
    return ports


def uwsgi_bind_address(host) -> str:
    """The address this host's instances listen on, as the roles configured it (app_bind_address in
    the uWSGI ini: `http-socket = ADDRESS:%(port)`). Production binds the private address."""
    ini = host.file(PATHS["app_ini"]).content_string
    m = re.search(r"^\s*http-socket\s*=\s*(\S*):%\(port\)", ini, re.M)
    assert m, f"no http-socket = ADDRESS:%(port) in {PATHS['app_ini']}"
    return m.group(1).strip("[]") or "0.0.0.0"


def uwsgi_client_address(host) -> str:
    """Where a client on the host itself reaches the instances."""
    bind = uwsgi_bind_address(host)
    return "127.0.0.1" if bind in ("0.0.0.0", "::", "*") else bind


def proc_nofile(host, pid: int | str) -> tuple[int, int]:
    """(soft, hard) open-file limits of a process, from /proc/<pid>/limits."""
    text = host.run(f"cat /proc/{pid}/limits").stdout
    m = re.search(r"^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)", text, re.M)
    assert m, f"no 'Max open files' in /proc/{pid}/limits: {text!r}"
    return int(m.group(1)), int(m.group(2))


def children(host, pid: int | str) -> list[int]:
    out = host.run(f"ps -o pid= --ppid {pid}").stdout.split()
    return [int(p) for p in out]


def wait_until(fn, timeout: float = 20.0, interval: float = 0.5):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            return fn()
        except AssertionError as exc:
            last = exc
            time.sleep(interval)
    raise last if last else AssertionError("timeout")


def run_probe(host, spec: dict) -> dict:
    """Run tests/infra/sio_probe.py on `host` with its own python3 and return its JSON report."""
    code = base64.b64encode((HERE / "sio_probe.py").read_bytes()).decode()
    arg = shlex.quote(json.dumps(spec))
    r = host.run(f"echo {code} | base64 -d > /tmp/siokit_sio_probe.py && python3 /tmp/siokit_sio_probe.py {arg}")
    assert r.rc == 0, f"probe did not run: rc={r.rc} {r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def nginx_dump(host) -> str:
    r = host.run("nginx -T 2>/dev/null")
    assert r.rc == 0, f"nginx -T failed: {r.stderr}"
    return r.stdout


def nginx_directive(conf: str, name: str) -> str | None:
    m = re.search(rf"^\s*{name}\s+([^;]+);", conf, re.M)
    return m.group(1).strip() if m else None


@pytest.fixture(scope="session")
def lb_url(cluster: Cluster) -> str:
    """Base URL of the load balancer as the client hosts see it."""
    if os.environ.get("SIOKIT_INFRA_LB_URL"):
        return os.environ["SIOKIT_INFRA_LB_URL"].rstrip("/")
    names = cluster.group("lb")
    if not names:
        pytest.fail("no host in group 'lb'")
    return f"http://{cluster.address(names[0])}:{os.environ.get('SIOKIT_INFRA_LB_PORT', '80')}"


@pytest.fixture(scope="session")
def app_endpoints(cluster: Cluster) -> list[str]:
    """http://address:port of every uWSGI instance of every app host."""
    out = []
    for name in cluster.group("app"):
        ports = planned_uwsgi_ports(cluster.host(name))
        assert ports, f"{name}: siokit.target wants no uWSGI instance"
        out += [f"http://{cluster.address(name)}:{p}" for p in ports]
    if not out:
        pytest.fail("no app instance found")
    return out


# ---------------------------------------------------------------- Prometheus on the monitor hosts


def require_monitor_group(cluster: Cluster) -> None:
    """The monitor group is optional in an inventory: without it site.yml runs no Prometheus and no
    exporter, and the monitoring tests are skipped with that reason. The local cluster has one, and
    its Molecule verifier sets SIOKIT_INFRA_REQUIRE_MONITOR=1: there a missing group fails."""
    if cluster.group("monitor"):
        return
    msg = "the inventory has no monitor group, so site.yml ran no Prometheus and no exporter"
    if os.environ.get("SIOKIT_INFRA_REQUIRE_MONITOR") == "1":
        pytest.fail(f"{msg} (SIOKIT_INFRA_REQUIRE_MONITOR=1)")
    pytest.skip(f"{msg}: monitoring is optional")


def listen_address(host, env_path: str, flag: str) -> str:
    """ADDRESS:PORT a Debian exporter or Prometheus was told to listen on (ARGS in /etc/default/...)."""
    args = env_file(host, env_path).get("ARGS", "")
    m = re.search(rf"(?:^|\s)-{{1,2}}{re.escape(flag)}=(\S+)", args)
    assert m, f"no {flag}= in ARGS of {env_path}: {args!r}"
    return m.group(1)


def prometheus_api(host, path: str, **params: str) -> Any:
    """GET Prometheus' HTTP API on the monitor host itself (it listens on the private address only);
    returns `data` of a successful answer."""
    address = listen_address(host, PATHS["prometheus_env"], "web.listen-address")
    args = " ".join(f"--data-urlencode {shlex.quote(f'{k}={v}')}" for k, v in params.items())
    r = host.run(f"curl -fsS -m 15 -G {args} {shlex.quote(f'http://{address}{path}')}")
    assert r.rc == 0, f"Prometheus API {path} {params}: rc={r.rc} {r.stderr}"
    doc = json.loads(r.stdout)
    assert doc.get("status") == "success", doc
    return doc["data"]


def duration_seconds(text: str) -> float:
    """A Prometheus duration (15s, 1m, 1m30s, 2h) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(int(n) * units[u] for n, u in parts)
