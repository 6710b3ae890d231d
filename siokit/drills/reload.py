"""Drill 3, nginx reloaded with a changed config under load: the old workers keep their websockets
(no drop at the reload), new connects go to the new workers, and the old workers close what they
still hold when nginx's worker_shutdown_timeout runs out, so they exit within that bound; their
clients then come back on the new workers."""

from __future__ import annotations

import re
import time

from siokit.drills import cluster
from siokit.drills.base import Context, Fault, wait_until
from siokit.drills.load import LoadRun, Sampler

NGINX_CONF = "/etc/nginx/nginx.conf"
SITE_CONF = "/etc/nginx/siokit.conf"
DRAIN_MARGIN_S = 15  # an old worker closes its connections at the timeout, then exits


def workers() -> set[str]:
    return set(cluster.run("lb", "pgrep -f 'nginx: worker process' || true").split())


def shutdown_timeout_s() -> int | None:
    """worker_shutdown_timeout of the lb's nginx.conf, in seconds; None: not set (no bound)."""
    m = re.search(r"^\s*worker_shutdown_timeout\s+(\d+)s?;", cluster.run("lb", f"cat {NGINX_CONF}"), re.M)
    return int(m.group(1)) if m else None


def nginx_reload(ctx: Context, sampler: Sampler) -> Fault:
    timeout = shutdown_timeout_s()
    old = workers()
    cluster.run("lb", f"cp -p {SITE_CONF} /tmp/siokit.conf.drill")
    start = time.time()
    # A changed config: a comment with the time, so the file differs from the running one.
    cluster.run("lb", f"echo '# drill reload {int(start)}' >> {SITE_CONF} && nginx -t -q && systemctl reload nginx")
    # New connects while the old workers still hold their websockets: a second, small load.
    probe = LoadRun("reload-new", 200, 5, None, ctx.token)
    probe.start(ctx.out / "reload-new.log")
    new_report = probe.wait(120)
    time.sleep(5)
    end = time.time()  # "no drop at the reload" is judged up to here, before the old workers' bound
    now = workers()
    # Put the deployed file back (the infra tests compare it with the rendered one). The workers
    # this drill started become old in turn and drain at the same bound.
    middle = now - old
    cluster.run("lb", f"cp -p /tmp/siokit.conf.drill {SITE_CONF} && systemctl reload nginx")
    restored = time.time()
    extra: dict[str, object] = {
        "new_connects_failed": sum(new_report.get("failures", {}).values()),
        "new_connects_held": new_report["connections"]["peak_held"],
        "worker_shutdown_timeout_s": timeout,
        "old_workers_at_judging": len(old & now),
    }
    if timeout is None:
        extra["old_workers_left"] = len(old & workers())
        return Fault(start, start, end, extra)
    drain_bound = timeout + DRAIN_MARGIN_S
    extra["drain_bound_s"] = drain_bound
    # False: the no-drop window above overlapped the drain, so it was judged on the wrong span.
    extra["judged_before_drain"] = end - start < timeout
    extra["old_workers_drained_after_s"] = gone_after(old, start, drain_bound)
    extra["old_workers_left"] = len(old & workers())
    extra["drill_workers_drained_after_restore_s"] = gone_after(middle, restored, drain_bound)
    return Fault(start, start, end, extra, drain_at=start + timeout)


def gone_after(pids: set[str], since: float, bound: float) -> float | None:
    """Seconds from `since` until none of these workers runs, waiting up to `since + bound`; None: still there."""
    gone = wait_until(lambda: not (pids & workers()), max(0.0, since + bound - time.time()), 1)
    return round(gone - since, 1) if gone else None
