"""`siokit doctor`: a live deployment checked against its plan and the field's known pitfalls.

Each check answers one problem Flask-SocketIO operators keep hitting (its fix names the upstream
issue), measures it on the running deployment, and says how to fix it. Client-side checks need only
the public URL (client.py); host-side checks read the hosts of an inventory (hosts.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

PASS, FAIL, INFO = "pass", "fail", "info"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS, FAIL, or INFO (measured, but nothing to judge, e.g. a sysctl a container cannot set)
    measured: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL


def format_text(results: list[Check]) -> str:
    width = max((len(r.name) for r in results), default=0)
    lines = []
    for r in results:
        lines.append(f"{r.status.upper():<4}  {r.name:<{width}}  {r.measured}")
        if r.failed and r.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {r.fix}")
    failed = sum(r.failed for r in results)
    lines.append(f"doctor: {len(results) - failed} of {len(results)} checks passed, {failed} failed")
    return "\n".join(lines)


def format_json(results: list[Check]) -> str:
    return json.dumps({"ok": not any(r.failed for r in results), "checks": [asdict(r) for r in results]}, indent=2)
