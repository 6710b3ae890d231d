"""Drill 8, abuse on the cluster: one client sends `chat` (which every socket receives) in a tight
loop. The per-socket rate limit (app/ratelimit.py) must hold it to its rate and burst and cut it
off, and the other clients' echo latency must stay in its normal range (measured before/during)."""

from __future__ import annotations

import time

from siokit.drills import cluster
from siokit.drills.base import LB_URL, Context, Fault
from siokit.drills.clients import ChatFlood, EchoProbe, latency_summary
from siokit.drills.load import Sampler

FLOOD_S = 20.0
BEFORE_S = 15.0
SETTINGS = ("SIOKIT_EVENT_RATE", "SIOKIT_EVENT_BURST", "SIOKIT_EVENT_DROP_LIMIT")


def allowed_chats(rate: float, burst: int, sessions: int, seconds: float) -> int:
    """The most `chat` events the limiter may accept: a full bucket per session plus the refill."""
    return int(burst * max(1, sessions) + rate * seconds)


def latency_bound(p95_before_ms: float | None) -> float | None:
    """ "Its normal range": at most twice the p95 before, with 50 ms of slack for a busy machine."""
    return None if p95_before_ms is None else round(2 * p95_before_ms + 50, 1)


def abuse(ctx: Context, sampler: Sampler) -> Fault:
    env = cluster.app_settings(SETTINGS)
    rate, burst = float(env["SIOKIT_EVENT_RATE"]), int(env["SIOKIT_EVENT_BURST"])
    probe = EchoProbe(LB_URL).start()
    time.sleep(BEFORE_S)
    start = time.time()
    flood = ChatFlood(LB_URL, FLOOD_S).start()
    counts = flood.wait()
    end = time.time()
    time.sleep(5)
    probe.stop()
    before = latency_summary(probe.samples, start - BEFORE_S, start)
    during = latency_summary(probe.samples, start, end)
    return Fault(
        start,
        end,
        time.time(),
        {
            "event_rate": rate,
            "event_burst": burst,
            "chats_sent": counts.sent,
            "chats_acked_ok": counts.accepted,
            "chats_rate_limited": counts.limited,
            "chats_allowed": allowed_chats(rate, burst, counts.sessions, end - start),
            "flood_sessions": counts.sessions,
            "flood_cut_off": counts.cut_off,
            "flood_reconnects_refused": counts.refused,
            # What the server relayed, as one other socket saw it (acks are lost when it is cut off).
            "chats_relayed": probe.chats_received // probe.clients,
            "echo_before": before.__dict__,
            "echo_during": during.__dict__,
            "echo_p95_before_ms": before.p95_ms,
            "echo_p95_during_ms": during.p95_ms,
            "echo_p95_bound_ms": latency_bound(before.p95_ms),
            "echo_timeouts_during": during.timeouts,
        },
    )
