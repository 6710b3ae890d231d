"""Grep-level: every sizing constant and derivation lives in the planner (siokit/planner.py).

A copy drifts: whoever fixes one does not know the others exist (issue #12, "Seams to close" in the
style notes). Each check names the offending file and line. Facts about a host (siokit/facts.py) are
inputs to the planner, not sizing, and may live there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from siokit.facts import HostFacts
from siokit.planner import Target, plan

ROOT = Path(__file__).resolve().parents[2]
PLANNER = ROOT / "siokit" / "planner.py"
FACTS = ROOT / "siokit" / "facts.py"
# What ships or deploys, and the lab code around it; tests and docs may quote figures.
SCANNED_DIRS = ("ansible", "molecule", "scripts", "siokit", "app", "bench", "templates")
SCANNED_FILES = ("Vagrantfile", "Makefile")
SUFFIXES = {".py", ".yml", ".yaml", ".j2", ".sh", ".cfg", ".ini", ""}
SKIP_PARTS = {".venv", "node_modules", "__pycache__", ".cache", "vendor", "results"}


def scanned_files() -> Iterator[Path]:
    for name in SCANNED_FILES:
        yield ROOT / name
    for top in SCANNED_DIRS:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and not SKIP_PARTS & set(path.parts):
                yield path


def offending_lines(patterns: list[re.Pattern[str]], allowed: set[Path], suffixes: set[str] = SUFFIXES) -> list[str]:
    found = []
    for path in scanned_files():
        if path in allowed or path.suffix not in suffixes:
            continue
        for no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if any(p.search(line) for p in patterns):
                found.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    return found


def planned_sysctl_keys() -> list[str]:
    p = plan(Target(sockets=160_000, source_ips=4), HostFacts(cores=2, memory_gib=24, nofile_hard=1_048_576))
    return sorted(p.sysctls)


def test_the_scan_sees_the_planner_and_its_sysctls() -> None:
    """The checks below would pass vacuously if the scan found nothing: it must see the planner's own
    values (the one allowed copy)."""
    keys = planned_sysctl_keys()
    assert "net.core.somaxconn" in keys and "net.ipv4.ip_local_port_range" in keys
    assert PLANNER in set(scanned_files())
    hits = offending_lines([sysctl_value_pattern(keys)], allowed=set())
    assert any(h.startswith("siokit/planner.py:") for h in hits), hits


def sysctl_value_pattern(keys: list[str]) -> re.Pattern[str]:
    names = "|".join(re.escape(k) for k in keys)
    # `key: value` (YAML), `"key": value` (Python), `key = value` (sysctl.conf), `sysctl -w key=value`.
    return re.compile(rf"""(^\s*-?\s*["']?({names})["']?\s*[:=]\s*\S)|(sysctl\s+(-\w+\s+)*({names})=)""")


def test_no_planned_sysctl_value_outside_the_planner() -> None:
    found = offending_lines([sysctl_value_pattern(planned_sysctl_keys())], allowed={PLANNER})
    assert not found, "planned sysctl values copied outside siokit/planner.py:\n" + "\n".join(found)


# A module-level sizing constant: a reserve of file descriptors, a share of the port range, a
# headroom factor, a per-socket cost. Its one home is the planner. Kernel option numbers
# (IP_BIND_ADDRESS_NO_PORT = 24, SO_..., TCP_...) are names of the kernel's, not sizing.
SIZING_CONSTANT = re.compile(
    r"^(?!(IP|IPV6|SO|TCP)_)[A-Z][A-Z0-9_]*(FD|NOFILE|PORTS?|RESERVE|OVERHEAD|FRACTION|HEADROOM|BYTES_PER_(SOCKET|CLIENT))"
    r"[A-Z0-9_]*\s*(:\s*[\w\[\], ]+)?=\s*[-+(\d]"
)


def test_no_sizing_constant_outside_the_planner() -> None:
    found = offending_lines([SIZING_CONSTANT], allowed={PLANNER, FACTS})
    assert not found, "sizing constants outside siokit/planner.py:\n" + "\n".join(found)


def test_the_sizing_pattern_finds_the_planners_constants() -> None:
    """Guard against a pattern that matches nothing: the planner's own constants match it."""
    hits = offending_lines([SIZING_CONSTANT], allowed=set())
    planner_hits = [h for h in hits if h.startswith("siokit/planner.py:")]
    assert any("FD_RESERVE" in h for h in planner_hits), planner_hits
    assert any("BIND_PORT_FRACTION" in h for h in planner_hits), planner_hits


def test_one_shape_of_host_facts() -> None:
    """Host facts are defined once (siokit/facts.py): no second class, no second somaxconn default."""
    patterns = [
        re.compile(r"^\s*class\s+\w*(HostFacts|Facts)\b"),
        re.compile(r"somaxconn\W[^#\n]*\b(4096|65535|1024|128)\b"),
    ]
    # Python only: the planner's sysctl values copied into YAML are the test above's business.
    found = offending_lines(patterns, allowed={PLANNER, FACTS}, suffixes={".py"})
    assert not found, "host facts defined outside siokit/facts.py:\n" + "\n".join(found)
