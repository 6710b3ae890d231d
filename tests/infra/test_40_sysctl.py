"""Kernel settings applied where the host allows it.

Expected values: the plan the roles wrote (/etc/siokit/plan.json), else the tuning role's sysctl file,
else the planner's defaults. On a VM every key must hold (a limit the host already had higher counts:
the tuning role never lowers one) and nothing may be skipped. In a container /proc/sys is read-only:
only the network namespace's keys can be set (at creation: molecule/cluster/molecule.yml) and must
hold; the others are listed by a skip with the reason, never dropped silently.
"""

from __future__ import annotations

import pytest
from conftest import in_container, read_plan

from siokit.lab.deployment import role_path
from siokit.planner import Target, _sysctls
from siokit.sysctls import CONTAINER_SETTABLE, satisfied

SYSCTL_FILE = role_path("tuning_sysctl_file")


def expected_sysctls(host) -> tuple[dict[str, str], str]:
    plan = read_plan(host)
    if plan is not None and plan.get("sysctls"):
        return {k: str(v) for k, v in plan["sysctls"].items()}, "plan.json"
    f = host.file(SYSCTL_FILE)
    if f.exists:
        out = {}
        for line in f.content_string.splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, _, v = line.partition("=")
                out[k.strip()] = v.strip()
        return out, SYSCTL_FILE
    return _sysctls(Target(sockets=160_000), 24.0, 1_048_576), "planner defaults"


def norm(v: str) -> str:
    return " ".join(str(v).split())


def holds(key: str, got: str, want: str) -> bool:
    """The kit's one sysctl rule (siokit/sysctls.py): a higher limit, or a wider port range, holds."""
    return satisfied(key, got, want)


def classify(host):
    expected, source = expected_sysctls(host)
    container = in_container(host)
    applicable, not_here = {}, {}
    for key, want in expected.items():
        path = "/proc/sys/" + key.replace(".", "/")
        if not host.file(path).exists:
            not_here[key] = "not present in this kernel/namespace"
        elif container and key not in CONTAINER_SETTABLE:
            not_here[key] = "container: /proc/sys read-only and the key is not per network namespace"
        else:
            applicable[key] = want
    return applicable, not_here, source


@pytest.mark.group("lb", "app", "redis", "loadgen")
def test_sysctls_applied(node):
    applicable, _, source = classify(node)
    assert applicable, "no sysctl to check"
    wrong = {}
    for key, want in applicable.items():
        got = node.run(f"sysctl -n {key}").stdout
        if not holds(key, got, want):
            wrong[key] = f"{norm(got)!r} (want {norm(want)!r})"
    assert not wrong, f"sysctls differ from {source}: {wrong}"


def read_only_mount(host, path: str) -> bool:
    """Whether the mount holding `path` is read-only (as Docker mounts /proc/sys), whoever runs this."""
    opts = host.run("findmnt -n -o OPTIONS -T %s", path)
    assert opts.rc == 0, f"findmnt failed for {path}: {opts.stderr}"
    return "ro" in opts.stdout.strip().split(",")


@pytest.mark.group("lb", "app", "redis", "loadgen")
def test_sysctls_not_settable_here(node):
    """Every planned key is either checked by test_sysctls_applied or listed here with a reason that
    holds on this host; on a VM or a real host none may be listed."""
    expected, source = expected_sysctls(node)
    _, not_here, _ = classify(node)
    assert expected, f"no sysctl expected from {source} on {node.siokit_name}"
    listed = "; ".join(f"{k} ({why})" for k, why in sorted(not_here.items()))
    if not in_container(node):
        # A VM or a real host can take every planned key (nf_conntrack is loaded by the tuning role).
        assert not not_here, f"{len(not_here)} sysctl(s) from {source} missing on {node.siokit_name}: {listed}"
        return
    # The reason given must be true: a key left out as "read-only" sits on a read-only mount, else
    # the tuning role could have set it and siokit.sysctls.CONTAINER_SETTABLE hides a real miss.
    writable = [
        k
        for k, why in not_here.items()
        if why.startswith("container") and not read_only_mount(node, "/proc/sys/" + k.replace(".", "/"))
    ]
    assert not writable, f"listed as not settable but writable on {node.siokit_name}: {writable}"
    if not_here:
        pytest.skip(f"{len(not_here)} sysctl(s) from {source} cannot be set on {node.siokit_name}: {listed}")
