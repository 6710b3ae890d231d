"""Drill 7, a slow consumer: one websocket through the lb that stops reading while messages keep
coming to its room. Its instance must cut it off (the bounded send backlog, app/upstream/
frame_writer.py, counts it in siokit_slow_consumer_closes), its memory must stay bounded, and the
other clients must get everything."""

from __future__ import annotations

import time

from siokit.drills import cluster
from siokit.drills.base import LB_URL, Context, Fault
from siokit.drills.clients import RoomSenders, SlowConsumer
from siokit.drills.load import Sampler

ROOM = "slow-consumer"
SENDERS = 3  # each sender is in the room too and receives the others: keep this machine's share small
SEND_EVERY = 0.125  # 8 messages/s per sender, under the per-socket event rate (10/s by default)
# 2,000 characters (the app's MAX_TEXT_LEN) that JSON escapes to 6 bytes each ("\u00e9"): ~12 KB a
# frame, so the backlog bound is reached in seconds without more events than the rate limit allows.
TEXT = "\u00e9" * 2000
CUT_WITHIN_S = 60
RSS = "process_resident_memory_bytes"
CLOSES = "siokit_slow_consumer_closes_total"
BACKLOG = "siokit_backlog_bytes"
MIB = 1 << 20


def metric(values: dict[str, float] | None, name: str) -> float | None:
    """One series of an instance's /metrics (the counter may be exported with or without _total)."""
    if values is None:
        return None
    for key in (name, name.removesuffix("_total")):
        if key in values:
            return values[key]
    return None


def slow_consumer(ctx: Context, sampler: Sampler) -> Fault:
    slow = SlowConsumer(LB_URL, ROOM).open()
    host, _, port_text = slow.instance.partition(":")
    port = int(port_text)
    senders = RoomSenders(LB_URL, ROOM, SENDERS, SEND_EVERY, TEXT)
    senders.add_receivers(2)
    senders.connect()

    def read() -> dict[str, float] | None:
        return cluster.instance_metrics(host, [port])[port]

    first = read()
    rss0, closes0 = metric(first, RSS), metric(first, CLOSES)
    if rss0 is None or closes0 is None:
        raise RuntimeError(f"{slow.instance} did not answer /metrics before the drill")
    start = time.time()
    senders.start()
    rss_peak, backlog_peak, cut = rss0, 0.0, None
    while time.time() - start < CUT_WITHIN_S:
        m = read()
        rss_peak = max(rss_peak, metric(m, RSS) or 0)
        backlog_peak = max(backlog_peak, metric(m, BACKLOG) or 0)
        closes = metric(m, CLOSES)
        if closes is not None and closes > closes0:
            cut = time.time()
            break
        time.sleep(1)
    time.sleep(5)  # the flood goes on after the cut: the other receivers must still get it all
    senders.stop()
    end = time.time()
    saw_close = slow.closed_by_server(30)
    slow.close()
    time.sleep(5)
    last = read()
    rss1 = metric(last, RSS)
    closes1 = metric(last, CLOSES)
    got = min(senders.received.values()) if senders.received else 0
    return Fault(
        start,
        end,
        time.time(),
        {
            "slow_instance": slow.instance,
            "cut_off_after_s": round(cut - start, 1) if cut else None,
            "slow_consumer_closes": int((closes1 or closes0) - closes0),
            "client_saw_close": saw_close,
            "rss_before_mib": round(rss0 / MIB, 1),
            "rss_peak_mib": round(rss_peak / MIB, 1),
            "rss_after_mib": round(rss1 / MIB, 1) if rss1 is not None else None,
            "rss_growth_mib": round((rss_peak - rss0) / MIB, 1),
            "backlog_peak_kib": round(backlog_peak / 1024, 1),
            "room_messages_sent": senders.sent,
            "other_receivers_ratio": round(got / senders.sent, 4) if senders.sent else None,
        },
    )
