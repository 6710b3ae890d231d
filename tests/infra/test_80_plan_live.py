"""The plan on every host is what runs: /etc/siokit/plan.json against the live uWSGI, nginx, app
and load generator settings (issue #12). Values are read from the running processes where they
carry them (the environment of each uWSGI master, nginx's worker count), else from the files the
running services were started with."""

from __future__ import annotations

import re

import pytest
from conftest import PATHS, UWSGI_UNIT, env_file, nginx_directive, nginx_dump, planned_uwsgi_ports, read_plan, unit_prop


def _plan(node) -> dict:
    plan = read_plan(node)
    assert plan is not None, f"{PATHS['plan']} missing on {node.siokit_name}"
    return plan


def _proc_env(node, pid: str) -> dict[str, str]:
    raw = node.run(f"cat /proc/{pid}/environ | tr '\\0' '\\n'").stdout
    return dict(line.split("=", 1) for line in raw.splitlines() if "=" in line)


@pytest.mark.group("app")
def test_app_runs_the_plan(node):
    plan = _plan(node)
    ini = node.file(PATHS["app_ini"]).content_string
    gevent = re.search(r"^\s*gevent\s*=\s*(\d+)", ini, re.M)
    listen = re.search(r"^\s*listen\s*=\s*(\d+)", ini, re.M)
    assert gevent and listen, f"no gevent / listen in {PATHS['app_ini']}"
    ports = planned_uwsgi_ports(node)
    live = {"async_cores": int(gevent.group(1)), "listen": int(listen.group(1)), "instances": len(ports)}
    want = {
        "async_cores": plan["uwsgi"]["async_cores"],
        "listen": plan["uwsgi"]["listen"],
        "instances": plan["uwsgi"]["instances_per_host"],
    }
    assert live == want, f"uWSGI runs {live}, the plan says {want}"
    mismatches = []
    for port in ports:
        pid = unit_prop(node, UWSGI_UNIT.format(port=port), "MainPID")
        assert pid not in ("", "0"), f"instance {port} is not running"
        env = _proc_env(node, pid)
        got = (env.get("SIOKIT_PING_INTERVAL"), env.get("SIOKIT_PING_TIMEOUT"))
        if got != (str(plan["ping_interval"]), str(plan["ping_timeout"])):
            mismatches.append(f"instance {port} runs with ping interval/timeout {got}")
    assert not mismatches, f"the plan says {plan['ping_interval']} / {plan['ping_timeout']} s: {mismatches}"


@pytest.mark.group("lb")
def test_nginx_runs_the_plan(node):
    plan = _plan(node)["nginx"]
    conf = nginx_dump(node)
    timeout = re.search(r"location\s+/socket\.io\s*\{.*?proxy_read_timeout\s+(\d+)s?;", conf, re.S)
    live = {
        "worker_processes": nginx_directive(conf, "worker_processes"),
        "worker_rlimit_nofile": nginx_directive(conf, "worker_rlimit_nofile"),
        "worker_connections": nginx_directive(conf, "worker_connections"),
        "proxy_read_timeout": timeout.group(1) if timeout else None,
    }
    want = {k: str(plan[k]) for k in live}
    assert live == want, f"nginx's configuration has {live}, the plan says {want}"
    master = unit_prop(node, "nginx.service", "MainPID")
    workers = node.run(f"ps -o pid= --ppid {master}").stdout.split()
    # the cache manager/loader are children too, when configured; count the workers by title
    titles = [node.run(f"cat /proc/{p}/cmdline").stdout for p in workers]
    running = sum(1 for t in titles if "worker process" in t)
    assert running == plan["worker_processes"], f"{running} nginx workers run, the plan says {plan['worker_processes']}"


@pytest.mark.group("loadgen")
def test_load_generator_is_sized_by_the_plan(node):
    _plan(node)
    env = env_file(node, PATHS["load_env"])
    args = env.get("SIOKIT_LOAD_ARGS", "")
    assert f"--plan {PATHS['plan']}" in args, f"siokit-load.service does not read the plan: {args!r}"
