"""Facts about the machine we run on, in the planner's terms."""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any


def _somaxconn() -> int:
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return 4096


def local_facts() -> dict[str, Any]:
    """cores, memory_gib, nofile_hard and somaxconn of this machine."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1_048_576
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cores": os.cpu_count() or 1,
        "memory_gib": round(memory / 1024**3, 1),
        "nofile_hard": hard,
        "somaxconn": _somaxconn(),
    }
