"""Plain-words diagnoses of a load run's failures, for the report and the terminal.

A client that cannot get a local port fails with EADDRNOTAVAIL ("Cannot assign requested
address"), which the report counts as ``addr_unavailable``. Alone, that count does not say what
ran out or what to do: the ephemeral ports of one source IP towards one destination (a few tens of
thousands, from ``ip_local_port_range``), fixed by spreading clients over more source IPs (issue #10,
drill 9).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .worker import WorkerPlan

ADDR_UNAVAILABLE = "addr_unavailable"


def ports_exhausted(
    plans: Sequence[WorkerPlan], finals: Mapping[int, Mapping[str, Any]], port_range: tuple[int, int]
) -> list[str]:
    """One line per source IP whose connects failed with EADDRNOTAVAIL."""
    by_source: Counter[str] = Counter()
    for p in plans:
        n = int(finals.get(p.worker_id, {}).get("failures", {}).get(ADDR_UNAVAILABLE, 0))
        if n:
            by_source[p.source_ip or "(kernel default)"] += n
    low, high = port_range
    return [
        f"ephemeral ports exhausted on source IP {ip}: {n} connect(s) failed with EADDRNOTAVAIL (Cannot assign "
        f"requested address); ip_local_port_range {low}-{high} gives at most {high - low + 1} ports per "
        f"destination, fewer while other sockets hold some. Spread the clients over more source IPs (--bind; "
        f"the plan's loadgen.source_ips). The same error comes when {ip} is not an address of this host"
        for ip, n in sorted(by_source.items())
    ]
