"""Per-socket event rate limit (app/ratelimit.py), its configuration, metrics and log throttling."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from app import create_app
from app.config import Config, ConfigError
from app.logthrottle import ThrottledLog
from app.ratelimit import EventRateLimiter, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    lim = EventRateLimiter(rate=8, burst=5, drop_limit=100, clock=clock)
    assert [lim.check("a") for _ in range(5)] == [Verdict.ALLOW] * 5
    assert lim.check("a") is Verdict.DROP
    clock.now += 0.125  # one token back at 8/s
    assert lim.check("a") is Verdict.ALLOW
    assert lim.check("a") is Verdict.DROP
    assert lim.check("b") is Verdict.ALLOW  # per key


def test_far_over_the_limit_disconnects_and_the_window_resets() -> None:
    clock = Clock()
    lim = EventRateLimiter(rate=1, burst=1, drop_limit=3, window=10, clock=clock)
    verdicts = [lim.check("a") for _ in range(6)]
    # once: the events still queued from a cut-off socket are dropped, not cut off again
    assert verdicts == [Verdict.ALLOW, Verdict.DROP, Verdict.DROP, Verdict.DROP, Verdict.DISCONNECT, Verdict.DROP]
    lim.forget("a")  # its disconnect: frames it sent before are still dropped for one window
    assert lim.check("a") is Verdict.DROP
    clock.now += 10.5
    lim.forget("b")  # the next disconnect purges it
    assert len(lim) == 0
    assert lim.check("c") is Verdict.ALLOW
    for _ in range(3):
        assert lim.check("c") is Verdict.DROP
    clock.now += 10.5  # a new window (and 10 tokens, capped at the burst of 1)
    assert lim.check("c") is Verdict.ALLOW
    assert lim.check("c") is Verdict.DROP


@pytest.mark.parametrize("kwargs", [{"rate": 0}, {"burst": 0}, {"drop_limit": 0}, {"window": 0}])
def test_limiter_refuses_non_positive_settings(kwargs: dict[str, Any]) -> None:
    args = {"rate": 1.0, "burst": 1, "drop_limit": 1, "window": 1.0, **kwargs}
    with pytest.raises(ValueError):
        EventRateLimiter(**args)


def test_config_reads_and_validates_the_limits() -> None:
    cfg = Config.from_env({"SIOKIT_EVENT_RATE": "2.5", "SIOKIT_EVENT_BURST": "4", "SIOKIT_EVENT_DROP_LIMIT": "9"})
    assert (cfg.event_rate, cfg.event_burst, cfg.event_drop_limit) == (2.5, 4, 9)
    for name, value in [
        ("SIOKIT_EVENT_RATE", "0"),
        ("SIOKIT_EVENT_RATE", "nan"),
        ("SIOKIT_EVENT_RATE", "fast"),
        ("SIOKIT_EVENT_BURST", "1.5"),
        ("SIOKIT_EVENT_DROP_LIMIT", "-1"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Config.from_env({name: value})


def test_throttled_log_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    tl = ThrottledLog(logging.getLogger("t"), interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t"):
        assert tl.warning("bad-json", "from %s", "x")
        assert not any(tl.warning("bad-json", "from %s", "x") for _ in range(999))
        assert tl.warning("other", "y")
        clock.now += 10
        assert tl.warning("bad-json", "from %s", "x")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad-json: from x", "other: y", "bad-json: from x (999 more of this kind in the last 10 s)"]


def test_a_flooding_socket_is_limited_and_cut_off_others_unaffected(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(
        Config(instance_id="unit:1", event_rate=1, event_burst=5, event_drop_limit=20), async_mode="threading"
    )
    sio = app.extensions["socketio"]
    flooder, other = sio.test_client(app), sio.test_client(app)
    with caplog.at_level(logging.WARNING, logger="app.events.base"):
        acks = [flooder.emit("chat", {"text": f"spam {i}"}, callback=True) for i in range(26)]
    assert [a["ok"] for a in acks[:5]] == [True] * 5
    assert all(a == {"ok": False, "error": "rate limited: too many events"} for a in acks[5:25])
    # the 21st drop within 10 s cut the socket off
    assert not flooder.is_connected()
    assert other.is_connected()
    echo = other.emit("echo", {"n": 1}, callback=True)
    assert echo["ok"] is True
    # five chats went out to the other client; none of the dropped ones
    chats = [m for m in other.get_received() if m["name"] == "chat"]
    assert len(chats) == 5
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'siokit_events_rate_limited_total{namespace="/"} 21.0' in metrics
    assert 'siokit_rate_limit_disconnects_total{namespace="/"} 1.0' in metrics
    # one line per kind, not one per dropped event
    kinds = [r.getMessage().split(":")[0] for r in caplog.records]
    assert kinds.count("rate-limited") == 1 and kinds.count("rate-limit-disconnect") == 1
    other.disconnect()
