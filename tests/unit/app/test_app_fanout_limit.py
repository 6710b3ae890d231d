"""The per-instance limit on events to every socket (app/ratelimit.py FanoutLimiter), from the plan."""

from __future__ import annotations

import logging

import pytest

from app import create_app
from app.config import Config, ConfigError
from app.ratelimit import FanoutLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_bucket_for_the_instance_burst_then_rate() -> None:
    clock = Clock()
    lim = FanoutLimiter(rate_at_plan=0.5, burst=2, clock=clock)
    assert [lim.allow() for _ in range(3)] == [True, True, False]
    assert lim.retry_after() == pytest.approx(2.0)
    clock.now += 1.0  # half a token at 0.5/s
    assert not lim.allow()
    clock.now += 1.0
    assert lim.allow() and not lim.allow()
    with pytest.raises(ValueError):
        FanoutLimiter(rate_at_plan=0, burst=1)
    with pytest.raises(ValueError):
        FanoutLimiter(rate_at_plan=1, burst=0)


def test_rate_is_the_cpu_share_over_the_plans_fanout_cost_per_instance() -> None:
    # 160k planned on 2 colocated cores: one chat to everyone ~4.94 s of the cores; 9 instances.
    cfg = Config.from_env(
        {
            "SIOKIT_BROADCAST_FANOUT_S": "4.94",
            "SIOKIT_PLANNED_INSTANCES_PER_HOST": "9",
            "SIOKIT_PLANNED_APP_HOSTS": "1",
            "SIOKIT_FANOUT_CPU_SHARE": "0.25",
            "SIOKIT_FANOUT_BURST": "2",
        }
    )
    assert cfg.fanout_rate == pytest.approx(0.25 / 4.94 / 9)
    assert cfg.fanout_burst == 2
    # no plan, or one too small for the planner's 0.01 s rounding: not limited
    assert Config().fanout_rate is None
    assert (
        Config.from_env(
            {
                "SIOKIT_BROADCAST_FANOUT_S": "0.0",
                "SIOKIT_PLANNED_INSTANCES_PER_HOST": "2",
                "SIOKIT_PLANNED_APP_HOSTS": "1",
            }
        ).fanout_rate
        is None
    )
    for name, value in [
        ("SIOKIT_BROADCAST_FANOUT_S", "-1"),
        ("SIOKIT_PLANNED_APP_HOSTS", "0"),
        ("SIOKIT_PLANNED_INSTANCES_PER_HOST", "x"),
        ("SIOKIT_FANOUT_CPU_SHARE", "1.5"),
        ("SIOKIT_FANOUT_CPU_SHARE", "0"),
        ("SIOKIT_FANOUT_BURST", "0"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Config.from_env({"SIOKIT_PLANNED_INSTANCES_PER_HOST": "2", "SIOKIT_PLANNED_APP_HOSTS": "1", name: value})


@pytest.mark.parametrize("namespace", ["/", "/anonymous"])
def test_chats_to_everyone_over_the_instance_limit_are_refused_other_events_are_not(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    # 1 s fan-out, 4 instances, 0.25 share: 1/16 per second per instance, 2 at once.
    cfg = Config(
        instance_id="unit:1", broadcast_fanout_s=1.0, planned_instances=4, fanout_cpu_share=0.25, fanout_burst=2
    )
    app = create_app(cfg, async_mode="threading")
    sio = app.extensions["socketio"]
    a, b, other = (sio.test_client(app, namespace=namespace) for _ in range(3))
    with caplog.at_level(logging.WARNING, logger="app.events.base"):
        acks = [a.emit("chat", {"text": f"a{i}"}, callback=True, namespace=namespace) for i in range(3)]
        # one bucket for the instance, not per socket: another socket finds it empty too
        acks.append(b.emit("chat", {"text": "b"}, callback=True, namespace=namespace))
    assert [ack["ok"] for ack in acks] == [True, True, False, False]
    assert acks[2]["error"].startswith("rate limited: messages to everyone are limited, retry in 1")
    chats = [m for m in other.get_received(namespace) if m["name"] == "chat"]
    assert [m["args"][0]["text"] for m in chats] == ["a0", "a1"]
    # the sockets stay connected, and their other events are not limited by it
    assert a.is_connected(namespace) and b.is_connected(namespace)
    if namespace == "/":
        assert a.emit("echo", {"n": 1}, callback=True)["ok"] is True
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert f'siokit_fanout_limited_total{{namespace="{namespace}"}} 2.0' in metrics
    assert [r.getMessage().split(":")[0] for r in caplog.records].count("fanout-limited") == 1


def test_without_a_plan_chats_are_limited_per_socket_only() -> None:
    app = create_app(Config(instance_id="unit:1"), async_mode="threading")
    sio = app.extensions["socketio"]
    a, other = sio.test_client(app), sio.test_client(app)
    acks = [a.emit("chat", {"text": f"a{i}"}, callback=True) for i in range(10)]
    assert all(ack["ok"] for ack in acks)
    assert len([m for m in other.get_received() if m["name"] == "chat"]) == 10


def test_the_rate_follows_the_share_of_the_planned_sockets_connected() -> None:
    now = [0.0]
    live = [1.0]
    limiter = FanoutLimiter(0.01, 1, load=lambda: live[0], clock=lambda: now[0])
    assert limiter.allow() and not limiter.allow()
    now[0] = 50.0  # at plan: one per 100 s
    assert not limiter.allow()
    live[0] = 0.1  # a tenth of the plan connected: each emit costs a tenth, ten times the rate
    now[0] = 60.0
    assert limiter.allow()
    assert limiter.retry_after() == pytest.approx(10.0)
    live[0] = 0.0  # nobody connected: bounded by the floor, not unlimited
    assert limiter.rate == pytest.approx(0.01 / FanoutLimiter.MIN_LOAD)


def test_a_demo_with_a_few_sockets_is_not_held_to_the_full_plans_rate() -> None:
    # The 160k plan's figures on 10 instances: one chat per ~580 s per instance at plan.
    cfg = Config(
        instance_id="unit:1",
        broadcast_fanout_s=14.5,
        planned_instances=10,
        planned_sockets=16_000,
        fanout_cpu_share=0.25,
        fanout_burst=1,
    )
    app = create_app(cfg, async_mode="threading")
    limiter = app.extensions["siokit"].fanout
    sio = app.extensions["socketio"]
    clients = [sio.test_client(app) for _ in range(16)]  # 0.1% of the plan
    assert all(c.is_connected() for c in clients)
    assert limiter.rate == pytest.approx(0.25 / 14.5 / 10 / 0.001)
