"""Imported into a uWSGI worker by ``measure_fanout.py --tracemalloc`` (``--import``): heap snapshots on request.

The worker runs with PYTHONTRACEMALLOC set. A file ``snap-<tag>`` in $SIOKIT_TRACEMALLOC_DIR asks
for a snapshot: tag ``base`` is kept; any other tag writes ``<tag>.json``, the allocation sites that
grew since ``base``, largest first (size, count, innermost frames first). Measurement only.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import gevent

_DIR = Path(os.environ["SIOKIT_TRACEMALLOC_DIR"])
_TOP = 25


def _sites(snap: tracemalloc.Snapshot, base: tracemalloc.Snapshot) -> list[dict[str, Any]]:
    out = []
    for stat in snap.compare_to(base, "traceback")[:_TOP]:
        frames = [f"{f.filename}:{f.lineno}" for f in reversed(stat.traceback)][:4]
        out.append({"bytes": stat.size_diff, "count": stat.count_diff, "frames": frames})
    return out


def _watch() -> None:
    base = None
    while True:
        gevent.sleep(0.2)
        for ask in sorted(_DIR.glob("snap-*")):
            tag = ask.name[len("snap-") :]
            ask.unlink()
            snap = tracemalloc.take_snapshot()
            if tag == "base":
                base = snap
            elif base is not None:
                total = sum(s.size_diff for s in snap.compare_to(base, "filename"))
                (_DIR / f"{tag}.json").write_text(json.dumps({"bytes": total, "sites": _sites(snap, base)}))
            (_DIR / f"done-{tag}").touch()


if tracemalloc.is_tracing():
    gevent.spawn(_watch)
