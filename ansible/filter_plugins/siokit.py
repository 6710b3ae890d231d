"""Ansible filters over siokit's capacity planner (siokit/planner.py): one planner for the CLI,
the renderer, the tests and the playbooks.

    siokit_plan             spec mapping -> plan dict (planner.plan_from_mapping); an impossible
                            target fails the task with the planner's arithmetic
    siokit_host_facts       list of hostvars -> the planner's facts of the weakest of those hosts
    siokit_sysctl_actions   (planned sysctls, probe output) -> what to apply, what to skip and why
    siokit_upstreams        (hostvars, app hosts, plan) -> host:port of every uWSGI instance
    siokit_scrape_jobs      (hostvars, groups, plan, exporter ports) -> Prometheus scrape_configs
    siokit_python_dependencies  path of pyproject.toml -> its dependencies (+ extras), for pip
    siokit_htpasswd_ssha    (password, salt) -> nginx's {SSHA} password hash (siokit/htpasswd.py)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# The kit's Python package lives at the repository root, two levels above this file.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from ansible.errors import AnsibleFilterError  # noqa: E402

from siokit import dependencies, facts, htpasswd, planner, scrape, sysctls  # noqa: E402


def siokit_plan(spec: dict[str, Any]) -> dict[str, Any]:
    """The capacity plan for spec (see planner.plan_from_mapping)."""
    try:
        return planner.plan_from_mapping(dict(spec))
    except planner.PlanInputError as exc:
        raise AnsibleFilterError(f"siokit_plan: bad plan input: {exc}") from exc
    except planner.PlanError as exc:
        raise AnsibleFilterError(f"siokit_plan: impossible target: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"siokit_plan: bad plan input {exc!r} in {dict(spec)!r}") from exc


def siokit_host_facts(hosts: list[dict[str, Any]]) -> dict[str, Any]:
    """Planner facts of the weakest host: fewest cores, least memory, lowest limits.

    Each item is a host's hostvars with gathered facts and the fact `siokit_nofile_hard`
    (the highest open-file limit a service on that host can really get).
    """
    try:
        return facts.weakest(facts.from_hostvars(hv) for hv in hosts).to_dict()
    except facts.FactsError as exc:
        raise AnsibleFilterError(f"siokit_host_facts: {exc}") from exc


def _parse_probe(probe: str) -> dict[str, tuple[str, str]]:
    """Lines 'name<TAB>state<TAB>value' with state rw, ro or missing."""
    out = {}
    for line in probe.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0]:
            continue
        out[parts[0]] = (parts[1], " ".join(" ".join(parts[2:]).split()))
    return out


def siokit_sysctl_actions(wanted: dict[str, Any], probe: str) -> dict[str, Any]:
    """Split the planned sysctls into those to set and those skipped, with the reason (siokit/sysctls.py).

    probe: one line per sysctl, 'name<TAB>rw|ro|missing<TAB>current value'.
    """
    return sysctls.actions(wanted, _parse_probe(probe))


def _app_ports(hostvars: Any, host: str, plan: dict[str, Any]) -> list[int]:
    """A host's uWSGI instance ports: from its `app_base_port` (default: the plan's), the plan's count."""
    base = int(hostvars[host].get("app_base_port", plan["uwsgi"]["base_port"]))
    return scrape.instance_ports(base, int(plan["uwsgi"]["instances_per_host"]))


def siokit_upstreams(hostvars: Any, hosts: list[str], plan: dict[str, Any]) -> list[str]:
    """'address:port' of every uWSGI instance of every host, in inventory order.

    A host's address is its `siokit_host_address` (set by the plan role); its ports start at its `app_base_port`
    (default: the plan's) and there are the plan's uwsgi.instances_per_host of them.
    """
    servers = []
    for host in hosts:
        hv = hostvars[host]
        address = hv.get("siokit_host_address")
        if not address:
            raise AnsibleFilterError(f"siokit_upstreams: {host} has no siokit_host_address (run the plan role first)")
        servers += [f"{address}:{port}" for port in _app_ports(hostvars, host, plan)]
    return servers


def siokit_scrape_jobs(
    hostvars: Any, groups: dict[str, list[str]], plan: dict[str, Any], ports: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """Prometheus scrape_configs for the inventory (siokit/scrape.py): every uWSGI instance of every app
    host, node-exporter on every host, nginx- and redis-exporter on lb and redis, Prometheus itself."""
    try:
        names = {h for g in scrape.HOST_GROUPS for h in groups.get(g) or []}
        addresses = {h: str(hostvars[h].get("siokit_host_address") or "") for h in names}
        app_ports = {h: _app_ports(hostvars, h, plan) for h in groups.get("app") or []}
        exporter_ports = scrape.ExporterPorts(**{k: int(v) for k, v in (ports or {}).items()})
        return scrape.scrape_jobs(addresses, groups, app_ports, exporter_ports)
    except (scrape.ScrapeError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"siokit_scrape_jobs: {exc}") from exc


def siokit_python_dependencies(pyproject: str, extras: list[str] | None = None) -> list[str]:
    """pyproject.toml's dependencies and those of `extras` (siokit/dependencies.py): pip's one list."""
    try:
        return dependencies.python_dependencies(Path(pyproject), extras or [])
    except (OSError, KeyError, ValueError) as exc:
        raise AnsibleFilterError(f"siokit_python_dependencies: {exc}") from exc


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "siokit_plan": siokit_plan,
            "siokit_host_facts": siokit_host_facts,
            "siokit_sysctl_actions": siokit_sysctl_actions,
            "siokit_upstreams": siokit_upstreams,
            "siokit_scrape_jobs": siokit_scrape_jobs,
            "siokit_python_dependencies": siokit_python_dependencies,
            # Also registered by siokit/render.py: templates/nginx/admin-ui.htpasswd.j2 uses it.
            "siokit_htpasswd_ssha": htpasswd.ssha,
        }
