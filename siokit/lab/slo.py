"""Capacity at a latency SLO (Hashrocket's websocket-shootout measure): the most clients a server
holds while the p95 broadcast fan-out stays under a limit.

Clients are added in steps (``step``, ``2 * step``, ... up to ``max_clients``); at each step a load
run holds them and sends several broadcasts. A step meets the SLO when every client was held, no
handshake failed, at least ``min_broadcasts`` broadcasts reached every client, and the pooled p95
fan-out of the step is within the limit. The search stops at the first step that misses it.

Each step is its own ``siokit load`` run (a fresh ramp): slower than adding clients to a live
run, but every step's figures come from one complete report that can be checked on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RunStep = Callable[[int], dict[str, Any]]  # clients -> the `siokit load` report of that step


@dataclass(frozen=True)
class SloSpec:
    p95_ms: float
    step: int
    max_clients: int
    min_broadcasts: int = 3

    def __post_init__(self) -> None:
        for name in ("p95_ms", "step", "max_clients", "min_broadcasts"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)!r}")
        if self.max_clients < self.step:
            raise ValueError(f"--max ({self.max_clients}) must be >= --step ({self.step})")

    def steps(self) -> list[int]:
        return list(range(self.step, self.max_clients + 1, self.step))


def judge(spec: SloSpec, clients: int, report: dict[str, Any]) -> dict[str, Any]:
    """One row of the step table from a load report."""
    fan = report["latency_ms"]["broadcast_fanout"]
    per_b = report["broadcast"]["per_broadcast"]
    complete = [b for b in per_b if b["clients"] == clients]
    held = report["connections"]["held_at_end"]
    failures = sum(report["failures"].values())
    why = []
    if held < clients:
        why.append(f"held {held}/{clients}")
    if failures:
        why.append(f"{failures} failed handshakes")
    if len(complete) < spec.min_broadcasts:
        why.append(f"{len(complete)}/{len(per_b)} broadcasts reached every client (need {spec.min_broadcasts})")
    if fan["p95"] is None or fan["p95"] > spec.p95_ms:
        why.append(f"fan-out p95 {fan['p95']} ms > {spec.p95_ms:g} ms")
    return {
        "clients": clients,
        "held": held,
        "broadcasts": len(per_b),
        "complete_broadcasts": len(complete),
        "fanout_p50_ms": fan["p50"],
        "fanout_p95_ms": fan["p95"],
        "fanout_p99_ms": fan["p99"],
        "fanout_max_ms": fan["max"],
        "failures": failures,
        "ok": not why,
        "why_not": "; ".join(why) or None,
    }


def search(spec: SloSpec, run_step: RunStep, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run the steps in order until one misses the SLO; the capacity is the last step that met it."""
    table: list[dict[str, Any]] = []
    capacity = 0
    for clients in spec.steps():
        row = judge(spec, clients, run_step(clients))
        table.append(row)
        log(f"slo: {clients} clients: p95 {row['fanout_p95_ms']} ms, " + ("ok" if row["ok"] else row["why_not"]))
        if not row["ok"]:
            break
        capacity = clients
    return {
        "slo_p95_ms": spec.p95_ms,
        "step": spec.step,
        "max": spec.max_clients,
        "capacity": capacity,
        "limited_by_max": bool(table) and table[-1]["ok"],  # every step met it: the limit is --max
        "steps": table,
    }


def format_table(result: dict[str, Any]) -> str:
    cols = ["clients", "held", "complete_broadcasts", "fanout_p50_ms", "fanout_p95_ms", "fanout_p99_ms", "ok"]
    lines = ["".join(c.rjust(20) for c in cols)]
    for row in result["steps"]:
        lines.append("".join(str(row[c]).rjust(20) for c in cols))
    more = " (every step met it: raise --max)" if result["limited_by_max"] else ""
    lines.append(f"capacity at p95 fan-out <= {result['slo_p95_ms']:g} ms: {result['capacity']} clients{more}")
    return "\n".join(lines)
