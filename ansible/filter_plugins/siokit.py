"""Ansible filters over siokit's capacity planner (siokit/planner.py): one planner for the CLI,
the renderer, the tests and the playbooks.

    siokit_plan             spec mapping -> plan dict (planner.plan_from_mapping); an impossible
                            target fails the task with the planner's arithmetic
    siokit_host_facts       list of hostvars -> the planner's facts of the weakest of those hosts
    siokit_sysctl_actions   (planned sysctls, probe output) -> what to apply, what to skip and why
    siokit_upstreams        (hostvars, app hosts, plan) -> host:port of every uWSGI instance
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

from siokit import planner  # noqa: E402

# Sysctls that are limits: never lower one the host already has higher.
_RAISE_ONLY = planner.RAISE_ONLY_SYSCTLS
MAX_NOFILE = 1_048_576


def siokit_plan(spec: dict[str, Any]) -> dict[str, Any]:
    """The capacity plan for spec (see planner.plan_from_mapping)."""
    try:
        return planner.plan_from_mapping(dict(spec))
    except planner.PlanError as exc:
        raise AnsibleFilterError(f"siokit_plan: impossible target: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"siokit_plan: bad plan input {exc!r} in {dict(spec)!r}") from exc


def _int(value: Any, name: str, host: str) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"siokit_host_facts: {host}: {name} is not a number: {value!r}") from exc


def siokit_host_facts(hosts: list[dict[str, Any]]) -> dict[str, Any]:
    """Planner facts of the weakest host: fewest cores, least memory, lowest limits.

    Each item is a host's hostvars with gathered facts and the fact `siokit_nofile_hard`
    (the highest open-file limit a service on that host can really get).
    """
    hosts = list(hosts)
    if not hosts:
        raise AnsibleFilterError("siokit_host_facts: no hosts given (is the inventory group empty?)")
    facts = []
    for hv in hosts:
        name = hv.get("inventory_hostname", "?")
        cores = hv.get("ansible_processor_vcpus") or hv.get("ansible_processor_cores") or 1
        mem_mb = hv.get("ansible_memtotal_mb")
        if mem_mb is None:
            raise AnsibleFilterError(f"siokit_host_facts: {name}: no ansible_memtotal_mb (gather facts first)")
        if "siokit_nofile_hard" not in hv:
            raise AnsibleFilterError(f"siokit_host_facts: {name}: no siokit_nofile_hard (run the plan role first)")
        facts.append(
            {
                "cores": _int(cores, "cores", name),
                "memory_gib": round(_int(mem_mb, "ansible_memtotal_mb", name) / 1024, 1),
                "nofile_hard": min(_int(hv["siokit_nofile_hard"], "siokit_nofile_hard", name), MAX_NOFILE),
                "somaxconn": _int(hv.get("siokit_somaxconn", 4096), "siokit_somaxconn", name),
            }
        )
    return {key: min(f[key] for f in facts) for key in ("cores", "memory_gib", "nofile_hard", "somaxconn")}


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
    """Split the planned sysctls into those to set and those skipped, with the reason.

    probe: one line per sysctl, 'name<TAB>rw|ro|missing<TAB>current value'. A read-only one
    (a container's /proc/sys) or a missing one (nf_conntrack without its module) is skipped; a
    limit the host already has higher is kept as it is, never lowered.
    """
    seen = _parse_probe(probe)
    apply: dict[str, str] = {}
    skipped: list[dict[str, str]] = []
    for name, value in wanted.items():
        value = " ".join(str(value).split())
        state, current = seen.get(name, ("missing", ""))
        if state == "missing":
            skipped.append({"name": name, "value": value, "reason": "not present on this kernel"})
        elif name in _RAISE_ONLY and current.isdigit() and value.isdigit() and int(current) >= int(value):
            skipped.append({"name": name, "value": value, "reason": f"already {current} (never lowered)"})
        elif state != "rw":
            reason = "read-only here (container)" if current != value else "read-only here, already set"
            skipped.append({"name": name, "value": value, "reason": f"{reason}; current {current}"})
        else:
            apply[name] = value
    messages = [f"{s['name']} = {s['value']}: {s['reason']}" for s in skipped]
    return {"apply": apply, "skipped": skipped, "messages": messages}


def siokit_upstreams(hostvars: Any, hosts: list[str], plan: dict[str, Any]) -> list[str]:
    """'address:port' of every uWSGI instance of every host, in inventory order.

    A host's address is its `siokit_host_address` (set by the plan role); its ports start at its `app_base_port`
    (default: the plan's) and there are `app_instances` of them (default: the plan's).
    """
    servers = []
    for host in hosts:
        hv = hostvars[host]
        address = hv.get("siokit_host_address")
        if not address:
            raise AnsibleFilterError(f"siokit_upstreams: {host} has no siokit_host_address (run the plan role first)")
        base = int(hv.get("app_base_port", plan["uwsgi"]["base_port"]))
        count = int(hv.get("app_instances", plan["uwsgi"]["instances_per_host"]))
        servers += [f"{address}:{port}" for port in range(base, base + count)]
    return servers


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "siokit_plan": siokit_plan,
            "siokit_host_facts": siokit_host_facts,
            "siokit_sysctl_actions": siokit_sysctl_actions,
            "siokit_upstreams": siokit_upstreams,
        }
