"""The one rule for the planned sysctls: set what the host can take, never lower a limit it has higher.

Used by the tuning role (filter `siokit_sysctl_actions`), by `siokit bench` on the loopback host and
by `siokit doctor`, so "is this host tuned as planned?" has one answer everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Sysctls that are limits: a host value above the plan is kept (lowering it could break the host).
RAISE_ONLY = frozenset(
    {
        "fs.file-max",
        "fs.nr_open",
        "net.core.somaxconn",
        "net.core.netdev_max_backlog",
        "net.ipv4.tcp_max_syn_backlog",
        "net.netfilter.nf_conntrack_max",
    }
)
PORT_RANGE = "net.ipv4.ip_local_port_range"
# Planned sysctls that belong to a network namespace, so a container gets them at creation
# (`docker run --sysctl`, molecule's platform `sysctls`); its /proc/sys is read-only afterwards.
# The rest (fs.*, net.core.netdev_max_backlog, net.ipv4.tcp_mem, nf_conntrack_max) are host-wide.
CONTAINER_SETTABLE = frozenset(
    {
        "net.core.somaxconn",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_tw_reuse",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_max_syn_backlog",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)


def norm(value: Any) -> str:
    return " ".join(str(value).split())


def satisfied(key: str, current: str, wanted: Any) -> bool:
    """Whether a live value meets the planned one under the rule."""
    cur, want = norm(current), norm(wanted)
    if cur == want:
        return True
    try:
        c, w = [int(x) for x in cur.split()], [int(x) for x in want.split()]
    except ValueError:
        return False
    if key == PORT_RANGE and len(c) == len(w) == 2:
        return c[0] <= w[0] and c[1] >= w[1]  # a wider range is fine
    return key in RAISE_ONLY and len(c) == len(w) == 1 and c[0] >= w[0]


def container_settable(planned: Mapping[str, Any]) -> dict[str, str]:
    """The planned sysctls a container can be created with (the Molecule scenarios' platforms)."""
    return {name: norm(value) for name, value in planned.items() if name in CONTAINER_SETTABLE}


def actions(wanted: Mapping[str, Any], seen: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """Split the planned sysctls into those to set and those skipped, with the reason.

    seen: name -> (state, current value) with state rw, ro (a container's /proc/sys) or missing
    (nf_conntrack without its module).
    """
    apply: dict[str, str] = {}
    skipped: list[dict[str, str]] = []
    for name, raw in wanted.items():
        value = norm(raw)
        state, current = seen.get(name, ("missing", ""))
        if state == "missing":
            skipped.append({"name": name, "value": value, "reason": "not present on this kernel"})
        elif satisfied(name, current, value) and (name in RAISE_ONLY or current != value):
            skipped.append({"name": name, "value": value, "reason": f"already {current} (never lowered)"})
        elif state != "rw":
            reason = "read-only here (container)" if current != value else "read-only here, already set"
            skipped.append({"name": name, "value": value, "reason": f"{reason}; current {current}"})
        else:
            apply[name] = value
    messages = [f"{s['name']} = {s['value']}: {s['reason']}" for s in skipped]
    return {"apply": apply, "skipped": skipped, "messages": messages}
