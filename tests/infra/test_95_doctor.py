"""siokit doctor on the live cluster: every check passes, then each thing it checks is broken in turn.

Runs after the fault tests (file order). Each test breaks one thing the way it breaks in the field,
asserts that doctor's check for it fails with what it measured and its fix, restores it in a
`finally`, and ends only when the same check passes again, so the cluster is left as it was found.

Doctor runs where an operator runs it, on the control machine: the public URL is
SIOKIT_INFRA_PUBLIC_URL (molecule/cluster/molecule.yml sets the lb's published port), else lb_url.
Systemd changes go to runtime drop-ins under /run/systemd/system, which a reboot also removes.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import APP_TARGET, PATHS, REDIS_SERVICE, UWSGI_UNIT, planned_uwsgi_ports, read_plan, wait_until

from siokit.doctor import FAIL, Check
from siokit.doctor import checks as dc
from siokit.doctor import client as cl
from siokit.doctor.client import Public
from siokit.doctor.hosts import Fleet, instance_health

RUNTIME_UNITS = "/run/systemd/system"
DROPIN = "zz-siokit-doctor-test.conf"  # last in name order: it overrides the kit's own drop-ins
NGINX_SITE = PATHS["nginx_site"]
NGINX_BACKUP = "/root/siokit.conf.doctor-test"
METADATA_BACKUP = "/root/engineio-METADATA.doctor-test"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def public(lb_url: str) -> Public:
    return Public(os.environ.get("SIOKIT_INFRA_PUBLIC_URL", lb_url))


@pytest.fixture(scope="module")
def fleet(cluster) -> Fleet:
    return Fleet({g: [(n, cluster.host(n)) for n in cluster.group(g)] for g in ("lb", "app", "redis", "loadgen")})


def passes(probe: Callable[[], Check | list[Check]]) -> None:
    """Raise AssertionError while the check fails or cannot run yet (for wait_until)."""
    try:
        got = probe()
    except Exception as exc:  # e.g. an instance still starting
        raise AssertionError(f"{type(exc).__name__}: {exc}") from exc
    failed = [c for c in (got if isinstance(got, list) else [got]) if c.status == FAIL]
    assert not failed, "; ".join(f"{c.name}: {c.measured}" for c in failed)


def caught(check: Check, measured: str, fix: str) -> None:
    """The check failed, saying what it measured and how to fix it."""
    print(f"caught: {check}")  # shown with -rP: what doctor said
    assert check.status == FAIL, f"doctor did not catch it: {check}"
    assert measured in check.measured, f"{measured!r} not in {check.measured!r}"
    assert fix in check.fix, f"{fix!r} not in the fix {check.fix!r}"


def sh(host, cmd: str) -> str:
    r = host.run(cmd)
    assert r.rc == 0, f"{cmd!r} on {host.siokit_name if hasattr(host, 'siokit_name') else host}: {r.stderr}"
    return str(r.stdout)


def all_instances_up(fleet: Fleet) -> None:
    down = [f"{n}:{p}" for n, h in fleet.hosts("app") for p, health in instance_health(h).items() if health is None]
    assert not down, f"not answering /healthz: {down}"


def on_each(hosts: list, cmd: str) -> None:
    """`cmd` on every host at once: instances of several hosts restart in parallel, not in turn."""
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        list(pool.map(lambda h: sh(h, cmd), hosts))


@contextmanager
def dropin(
    hosts: list, unit: str, restart: list[str], env: dict[str, str] | None = None, **service: str
) -> Iterator[None]:
    """A runtime drop-in on `unit` (one instance, or the template siokit-uwsgi@.service for all of
    them) with `service` settings and `env` over the environment file (a later EnvironmentFile=
    wins); `restart` restarted after adding it and again after removing it."""
    dropins = f"{RUNTIME_UNITS}/{unit}.d"
    env_file = f"/run/siokit-doctor-test-{unit.replace('@', '-')}.env"
    if env:
        service["EnvironmentFile"] = env_file
    body = "\n".join(["[Service]", *(f"{k}={v}" for k, v in service.items())])
    env_lines = "\n".join(f"{k}={v}" for k, v in (env or {}).items())
    units = " ".join(shlex.quote(u) for u in restart)
    try:
        on_each(
            hosts,
            f"umask 077 && printf '%s\\n' {shlex.quote(env_lines)} > {env_file} && mkdir -p {dropins} && "
            f"printf '%s\\n' {shlex.quote(body)} > {dropins}/{DROPIN} && "
            f"systemctl daemon-reload && systemctl restart {units}",
        )
        yield
    finally:
        on_each(
            hosts,
            f"rm -f {dropins}/{DROPIN} {env_file}; rmdir {dropins} 2>/dev/null; "
            f"systemctl daemon-reload && systemctl restart {units}",
        )


def nginx_workers(lb) -> set[str]:
    """PIDs of the nginx workers that take new connections (not those shutting down)."""
    return set(lb.run("pgrep -f '^nginx: worker process$'").stdout.split())


def reload_nginx(lb) -> None:
    """Validate and reload, then wait for the new generation of workers: until the old ones stop
    accepting, a new request may still meet the old configuration."""
    old = nginx_workers(lb)
    sh(lb, "nginx -t -q && systemctl reload nginx")

    def new_generation() -> None:
        now = nginx_workers(lb)
        assert now and not now & old, f"nginx workers before the reload {sorted(old)}, now {sorted(now)}"

    wait_until(new_generation, timeout=20, interval=0.2)


@contextmanager
def nginx_site_edited(lb, sed: str) -> Iterator[None]:
    """The lb's site file edited with `sed -E`, validated and reloaded; restored byte for byte."""
    sh(lb, f"cp -p {NGINX_SITE} {NGINX_BACKUP}")
    try:
        before = sh(lb, f"cat {NGINX_SITE}")
        sh(lb, f"sed -i -E {shlex.quote(sed)} {NGINX_SITE}")
        assert sh(lb, f"cat {NGINX_SITE}") != before, f"sed {sed!r} changed nothing in {NGINX_SITE}"
        reload_nginx(lb)
        yield
    finally:
        sh(lb, f"cp -p {NGINX_BACKUP} {NGINX_SITE} && rm -f {NGINX_BACKUP}")
        reload_nginx(lb)


def test_doctor_passes_on_the_healthy_cluster(public, fleet) -> None:
    failed = {c.name: c.measured for c in dc.run(public.url, fleet) if c.status == FAIL}
    assert failed == {}


def test_doctor_playbook_reports_what_the_command_reports(public, cluster) -> None:
    """`ansible-playbook doctor.yml` on the healthy cluster: it passes, and its report has the same
    checks as `siokit doctor --url URL --inventory INV`, none failed (the measurements may move between
    the two runs, and with them a pass into an info, e.g. the spread of a handful of sockets)."""
    inventory = os.environ.get("SIOKIT_INFRA_INVENTORY") or cluster.kwargs.get("ansible_inventory")
    if not inventory:
        pytest.fail("doctor.yml needs the cluster's Ansible inventory: --ansible-inventory or SIOKIT_INFRA_INVENTORY")
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    args = ["--url", public.url, "--inventory", str(inventory)]
    command = subprocess.run(
        [sys.executable, "-m", "siokit.cli", "doctor", *args], capture_output=True, text=True, cwd=ROOT, env=env
    )
    playbook = subprocess.run(
        [os.path.join(bindir, "ansible-playbook"), "-i", str(inventory), str(ROOT / "ansible" / "doctor.yml"),
         "-e", f"siokit_doctor_url={public.url}"],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    assert command.returncode == 0, command.stdout + command.stderr
    assert playbook.returncode == 0, playbook.stdout[-4000:] + playbook.stderr[-2000:]
    checks = [name for _, name in verdicts(command.stdout)]
    assert "upstream spread" in checks and "allowed origins" in checks, command.stdout
    assert [name for _, name in verdicts(playbook.stdout)] == checks, playbook.stdout[-4000:]
    assert "FAIL" not in {v for v, _ in verdicts(playbook.stdout)}, playbook.stdout[-4000:]


def verdicts(report: str) -> list[tuple[str, str]]:
    """(verdict, check) of each line of doctor's text report, also inside the playbook's debug output."""
    return re.findall(r"(PASS|FAIL|INFO)  (\S(?:\S| (?! ))*)  ", report)


@pytest.mark.destructive
def test_stopped_instance_is_caught(fleet) -> None:
    name, host = fleet.hosts("app")[0]
    port = planned_uwsgi_ports(host)[-1]
    unit = UWSGI_UNIT.format(port=port)
    passes(lambda: dc.check_spread(fleet))
    try:
        sh(host, f"systemctl stop {unit}")
        caught(dc.check_spread(fleet), f"{name}:{port}", f"systemctl status {UWSGI_UNIT.split('@')[0]}@")
    finally:
        host.run(f"systemctl start {unit}")
    wait_until(lambda: passes(lambda: dc.check_spread(fleet)), timeout=60)


@pytest.mark.destructive
def test_unsubscribed_instance_is_caught(fleet) -> None:
    """An instance that runs and answers /healthz but never reached the queue (a wrong
    SIOKIT_MESSAGE_QUEUE): it never hears the other instances' emits."""
    _, host = fleet.hosts("app")[0]
    unit = UWSGI_UNIT.format(port=planned_uwsgi_ports(host)[-1])
    passes(lambda: dc.check_subscribers(fleet))
    # Port 9 (discard): nothing listens, so the listener keeps retrying; no secret in the URL.
    with dropin([host], unit, [unit], env={"SIOKIT_MESSAGE_QUEUE": "redis://127.0.0.1:9/0"}):
        wait_until(lambda: all_instances_up(fleet), timeout=60)
        check = dc.check_subscribers(fleet)
        running = sum(len(instance_health(h)) for _, h in fleet.hosts("app"))
        caught(check, f"= {running - 1}, running instances = {running}", "SIOKIT_MESSAGE_QUEUE")
    wait_until(lambda: all_instances_up(fleet), timeout=60)
    wait_until(lambda: passes(lambda: dc.check_subscribers(fleet)), timeout=60)


@pytest.mark.destructive
def test_redis_down_is_caught(public, fleet) -> None:
    _, redis = fleet.hosts("redis")[0]
    passes(lambda: dc.check_subscribers(fleet))
    try:
        sh(redis, f"systemctl stop {REDIS_SERVICE}")
        caught(dc.check_subscribers(fleet), "failed: ", "start Redis")
        caught(dc.check_external_emit(public, fleet), "the client got None", "subscribe to the queue")
    finally:
        redis.run(f"systemctl start {REDIS_SERVICE}")
    # The instances' listeners retry with a doubling pause (python-socketio's RedisManager), so a
    # short outage is also a short recovery.
    wait_until(lambda: passes(lambda: dc.check_subscribers(fleet)), timeout=90, interval=2)
    wait_until(lambda: passes(lambda: dc.check_external_emit(public, fleet)), timeout=30)


@pytest.mark.destructive
def test_short_proxy_read_timeout_is_caught(public, fleet) -> None:
    _, lb = fleet.hosts("lb")[0]
    passes(lambda: dc.check_nginx(public, fleet))
    with nginx_site_edited(lb, r"s/proxy_read_timeout [0-9]+s;/proxy_read_timeout 20s;/"):
        caught(dc.check_nginx(public, fleet), "proxy_read_timeout 20 s vs", "re-run site.yml")
    wait_until(lambda: passes(lambda: dc.check_nginx(public, fleet)), timeout=30)


@pytest.mark.destructive
def test_stripped_websocket_upgrade_is_caught(public, fleet) -> None:
    _, lb = fleet.hosts("lb")[0]
    passes(lambda: cl.check_upgrade(public))
    with nginx_site_edited(lb, r"/proxy_set_header (Upgrade|Connection) /d"):
        caught(cl.check_upgrade(public), "the upgrade request got", "Upgrade/Connection headers")
    wait_until(lambda: passes(lambda: cl.check_upgrade(public)), timeout=30)


@pytest.mark.destructive
def test_changed_cors_origin_is_caught(public, fleet) -> None:
    """Every instance allows another origin than the public URL: the browser's own requests fail."""
    passes(lambda: cl.check_origins(public))
    hosts = [h for _, h in fleet.hosts("app")]
    template = UWSGI_UNIT.replace("{port}", "")
    # A runtime drop-in on the template unit: all instances of every app host at once.
    with dropin(hosts, template, [APP_TARGET], env={"SIOKIT_CORS_ORIGINS": "https://elsewhere.invalid"}):
        wait_until(lambda: all_instances_up(fleet), timeout=90, interval=1)
        caught(cl.check_origins(public), f"Origin {public.origin}: HTTP 400", "app_cors_origins")
    wait_until(lambda: all_instances_up(fleet), timeout=90, interval=1)
    wait_until(lambda: passes(lambda: cl.check_origins(public)), timeout=30)


@pytest.mark.destructive
def test_wildcard_cors_origin_is_caught(public, fleet) -> None:
    """Every instance allows any origin ('*'): a foreign page's requests are answered too."""
    passes(lambda: cl.check_origins(public))
    hosts = [h for _, h in fleet.hosts("app")]
    template = UWSGI_UNIT.replace("{port}", "")
    with dropin(hosts, template, [APP_TARGET], env={"SIOKIT_CORS_ORIGINS": "*"}):
        wait_until(lambda: all_instances_up(fleet), timeout=90, interval=1)
        caught(cl.check_origins(public), f"Origin {cl.FOREIGN_ORIGIN}: HTTP 200", "not '*'")
    wait_until(lambda: all_instances_up(fleet), timeout=90, interval=1)
    wait_until(lambda: passes(lambda: cl.check_origins(public)), timeout=30)


@pytest.mark.destructive
def test_non_sticky_upstream_is_caught(public, fleet) -> None:
    """The upstream's hash removed: nginx round-robins, so a session's polls reach other instances."""
    instances = sum(len(planned_uwsgi_ports(h)) for _, h in fleet.hosts("app"))
    if instances < 2:
        # Round robin over one server sends every poll to it: nothing is broken, nothing to catch.
        pytest.skip(
            f"the deployment runs {instances} uWSGI instance: without a hash every poll still reaches it; "
            "two app hosts or two instances per host are needed (Vagrant: VAGRANT_APP_HOSTS=2)"
        )
    _, lb = fleet.hosts("lb")[0]
    passes(lambda: cl.check_sticky_polling(public))
    with nginx_site_edited(lb, r"/^\s*(ip_hash|hash \$remote_addr consistent);$/d"):
        caught(cl.check_sticky_polling(public), "requests on one session failed", "sticky upstream")
    wait_until(lambda: passes(lambda: cl.check_sticky_polling(public)), timeout=30)


@pytest.mark.destructive
def test_small_client_max_body_size_is_caught(public, fleet) -> None:
    """client_max_body_size below the app's largest message: such a polling POST gets 413."""
    _, lb = fleet.hosts("lb")[0]
    passes(lambda: dc.check_nginx(public, fleet))
    with nginx_site_edited(lb, r"s/^(\s*location \/socket\.io \{)$/\1\n        client_max_body_size 1k;/"):
        caught(dc.check_nginx(public, fleet), "client_max_body_size 1024 B vs max message", "re-run site.yml")
    wait_until(lambda: passes(lambda: dc.check_nginx(public, fleet)), timeout=30)


@pytest.mark.destructive
def test_unpinned_engineio_is_caught(fleet) -> None:
    """The app host's venv records python-engineio 4.2.0: below 4.2.1 and not the pinned version.

    Doctor reads the versions a host has installed from the venv's package metadata, so the test
    rewrites that record (a real downgrade would need the package index on the host); the running
    instances are not touched, and the record is restored byte for byte."""
    _, app = fleet.hosts("app")[0]
    passes(lambda: dc.check_versions(fleet))
    code = "import importlib.metadata as m; print(m.distribution('python-engineio')._path)"
    dist = sh(app, f"{PATHS['app_venv']}/bin/python -c {shlex.quote(code)}").strip()
    metadata = f"{dist}/METADATA"
    sh(app, f"cp -p {metadata} {METADATA_BACKUP}")
    try:
        sh(app, f"sed -i -E 's/^Version: .*/Version: 4.2.0/' {metadata}")
        caught(dc.check_versions(fleet), "python-engineio 4.2.0 < 4.2.1", "constraints.txt")
    finally:
        sh(app, f"cp -p {METADATA_BACKUP} {metadata} && rm -f {METADATA_BACKUP}")
    passes(lambda: dc.check_versions(fleet))


def container_pid(name: str) -> str | None:
    """The PID of the local Docker container `name` (None: not one), for entering its namespaces."""
    docker = os.environ.get("DOCKER") or shutil.which("docker")
    if docker is None:
        return None
    r = subprocess.run([docker, "inspect", "-f", "{{.State.Pid}}", name], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() not in ("", "0") else None


def write_sysctl(host, name: str, key: str, value: str) -> bool:
    """Set a live sysctl of `host`; True when it had to be set from outside (a container)."""
    path = "/proc/sys/" + key.replace(".", "/")
    if host.run(f"test -w {path} && ! grep -qs ' /proc/sys .*\\bro\\b' /proc/mounts").rc == 0:
        sh(host, f"sysctl -q -w {key}={shlex.quote(value)}")
        return False
    # A container's /proc/sys is read-only inside; its network namespace is writable from the Docker
    # host (this machine runs the local cluster).
    pid = container_pid(name)
    if pid is None:
        pytest.fail(f"{key} is read-only on {name} and {name} is no local Docker container to enter")
    subprocess.run(["nsenter", "-t", pid, "-n", "sysctl", "-q", "-w", f"{key}={value}"], check=True)
    return True


@pytest.mark.destructive
def test_lowered_sysctl_is_caught(fleet) -> None:
    name, host = fleet.hosts("loadgen")[0]
    key = "net.core.somaxconn"
    plan = read_plan(host)
    assert plan is not None and key in plan["sysctls"], f"{PATHS['plan']} on {name} plans no {key}"
    original = sh(host, f"cat /proc/sys/{key.replace('.', '/')}").strip()
    low = str(int(plan["sysctls"][key]) // 2)

    def on_host() -> list[Check]:
        return [c for c in dc.check_sysctls_on(name, host) if c.name == f"sysctls on {name}"]

    passes(on_host)
    try:
        container = write_sysctl(host, name, key, low)
        (check,) = on_host()
        caught(check, f"{key} {low} (plan {plan['sysctls'][key]})", "--container-sysctls" if container else "site.yml")
    finally:
        write_sysctl(host, name, key, original)
    passes(on_host)


@pytest.mark.destructive
def test_lowered_nofile_is_caught(fleet) -> None:
    """LimitNOFILE below the plan on one instance (a drop-in, as an operator's override would be)."""
    name, host = fleet.hosts("app")[0]
    unit = UWSGI_UNIT.format(port=planned_uwsgi_ports(host)[-1])
    planned = int(read_plan(host)["uwsgi"]["limit_nofile"])  # type: ignore[index]
    low = planned - 1000  # enough for the instance to start and serve
    passes(lambda: dc.check_limits(fleet))
    with dropin([host], unit, [unit], LimitNOFILE=str(low)):
        wait_until(lambda: all_instances_up(fleet), timeout=60)
        caught(dc.check_limits(fleet), f"{name}: uwsgi runs with nofile {low} < planned {planned}", "LimitNOFILE=")
    wait_until(lambda: all_instances_up(fleet), timeout=60)
    wait_until(lambda: passes(lambda: dc.check_limits(fleet)), timeout=30)


def test_no_test_leftovers(fleet) -> None:
    """Nothing of the break tests is left on any host."""
    for group in ("lb", "app", "redis", "loadgen"):
        for name, host in fleet.groups.get(group, []):
            ours = f"{RUNTIME_UNITS}/*.d/{DROPIN} /run/siokit-doctor-test-* {NGINX_BACKUP} {METADATA_BACKUP}"
            left = host.run(f"ls -d {ours} 2>/dev/null").stdout.strip()
            assert not left, f"{name}: {left}"
