"""Host facts in the planner's terms: the one definition, read from this machine or from Ansible's facts.

The planner, `siokit plan`, the renderer, the loopback stack, `siokit bench` and Ansible's filter plugin
all build facts here, so a default (say somaxconn when a host's is unknown) exists once.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# The kernel's default net.core.somaxconn since Linux 5.4: assumed when a host's value is unknown.
DEFAULT_SOMAXCONN = 4096
# fs.nr_open's default: no process gets more open files, whatever a hard limit claims (or "unlimited").
MAX_NOFILE = 1_048_576
FIELDS = ("cores", "memory_gib", "nofile_hard", "somaxconn")


class FactsError(ValueError):
    """A host's facts are missing or not numbers; the message names the host and the fact."""


@dataclass(frozen=True)
class HostFacts:
    cores: int
    memory_gib: float
    nofile_hard: int
    somaxconn: int = DEFAULT_SOMAXCONN

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> HostFacts:
        return cls(
            cores=int(m["cores"]),
            memory_gib=float(m["memory_gib"]),
            nofile_hard=min(int(m["nofile_hard"]), MAX_NOFILE),
            somaxconn=int(m.get("somaxconn") or DEFAULT_SOMAXCONN),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _somaxconn() -> int:
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return DEFAULT_SOMAXCONN


# The kernel's default ip_local_port_range, assumed when this host's cannot be read.
DEFAULT_LOCAL_PORT_RANGE = (32768, 60999)


PORT_RANGE_PATH = "/proc/sys/net/ipv4/ip_local_port_range"


def parse_port_range(text: str) -> tuple[int, int]:
    """ip_local_port_range as read from /proc ("32768\t60999"), on this host or another one."""
    low, high = (int(x) for x in text.split())
    return low, high


def local_port_range() -> tuple[int, int]:
    """This machine's net.ipv4.ip_local_port_range (the ports a bound client socket can get)."""
    try:
        return parse_port_range(Path(PORT_RANGE_PATH).read_text())
    except (OSError, ValueError):
        return DEFAULT_LOCAL_PORT_RANGE


def local_host_facts() -> HostFacts:
    """This machine's cores, memory, hard open-file limit and somaxconn."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return HostFacts(
        cores=os.cpu_count() or 1,
        memory_gib=round(memory / 1024**3, 1),
        nofile_hard=MAX_NOFILE if hard == resource.RLIM_INFINITY else min(hard, MAX_NOFILE),
        somaxconn=_somaxconn(),
    )


def local_facts() -> dict[str, Any]:
    """local_host_facts() as plain planner input."""
    return local_host_facts().to_dict()


def _int(value: Any, name: str, host: str) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise FactsError(f"{host}: {name} is not a number: {value!r}") from None


def from_hostvars(hv: Mapping[str, Any]) -> HostFacts:
    """A host's facts from its Ansible hostvars (gathered facts + the plan role's probe)."""
    name = str(hv.get("inventory_hostname", "?"))
    if hv.get("ansible_memtotal_mb") is None:
        raise FactsError(f"{name}: no ansible_memtotal_mb (gather facts first)")
    if "siokit_nofile_hard" not in hv:
        raise FactsError(f"{name}: no siokit_nofile_hard (run the plan role first)")
    cores = hv.get("ansible_processor_vcpus") or hv.get("ansible_processor_cores") or 1
    return HostFacts(
        cores=_int(cores, "cores", name),
        memory_gib=round(_int(hv["ansible_memtotal_mb"], "ansible_memtotal_mb", name) / 1024, 1),
        nofile_hard=min(_int(hv["siokit_nofile_hard"], "siokit_nofile_hard", name), MAX_NOFILE),
        somaxconn=_int(hv.get("siokit_somaxconn", DEFAULT_SOMAXCONN), "siokit_somaxconn", name),
    )


def weakest(facts: Iterable[HostFacts]) -> HostFacts:
    """The facts of the weakest host: fewest cores, least memory, lowest limits (plan for the worst)."""
    items = list(facts)
    if not items:
        raise FactsError("no hosts given (is the inventory group empty?)")
    return HostFacts(**{k: min(getattr(f, k) for f in items) for k in FIELDS})
