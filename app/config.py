"""Service configuration, read from SIOKIT_* environment variables.

Stdlib only: app.wsgi reads it before gevent's monkey-patching has finished importing the world.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

ASYNC_MODES = ("threading", "eventlet", "gevent", "gevent_uwsgi")
WEBSOCKET_DRIVERS = ("event", "stock")
MESSAGE_QUEUE_SCHEMES = ("redis", "rediss", "unix")
PATCH_MISMATCH_POLICIES = ("refuse", "fallback")
SWITCH_VALUES = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}
# Per-socket backlog bound of the websocket fan-out path (bytes). 1 MiB holds ~4,000 frames of a
# 256-byte broadcast behind a client that stopped reading; at 160k sockets only slow consumers ever
# fill it. The planner may size it from the host's memory; the floor keeps one large frame possible.
DEFAULT_MAX_BACKLOG_BYTES = 1 << 20
MIN_MAX_BACKLOG_BYTES = 4096


class ConfigError(ValueError):
    """A SIOKIT_* variable holds a value the service cannot use; the message names the variable."""


@dataclass(frozen=True)
class Config:
    message_queue: str | None = None
    # None = same origin only (python-engineio's default); "*" = any; else an explicit list.
    cors_origins: str | list[str] | None = None
    ping_interval: int = 25
    ping_timeout: int = 20
    admin_secret: str | None = field(default=None, repr=False)
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    max_message_bytes: int = 100_000
    async_mode: str | None = None
    # "stock" keeps python-engineio's polling uWSGI driver, for A/B measurements only.
    websocket_driver: str = "event"
    # Client events per socket (app/ratelimit.py): a steady rate, a burst, and the drops within
    # 10 s after which the socket is cut off. A person chats far below 10/s; the load generator's
    # echoes are spread over all its clients.
    event_rate: float = 10.0
    event_burst: int = 20
    event_drop_limit: int = 100
    # Events that fan out to every socket (`chat`), per instance (app/ratelimit.py FanoutLimiter):
    # the plan's time for one emit to everyone on the deployment's cores, the planned instances of
    # the deployment, and the share of the cores they may take. No plan (0): no such limit.
    broadcast_fanout_s: float = 0.0
    planned_instances: int = 0
    fanout_cpu_share: float = 0.085  # the app role's default (roles/app/defaults/main.yml says why)
    fanout_burst: int = 3
    # Emits to many sockets go out in slices at the plan's rate (app/upstream/paced_fanout.py).
    fanout_pacing: bool = True
    # Waits for a core (ms) above which that rate falls (app/fanout_pace.py); 0: the plan's, fixed.
    fanout_core_wait_ms: float = 2.0
    max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES
    # The planner's sockets per instance, exported for the alert rules; 0 = no plan known.
    planned_sockets: int = 0
    # What a python-engineio/-socketio/uWSGI version the patches were not tested with does.
    patch_mismatch: str = "refuse"
    # The Socket.IO Admin UI (python-socketio's instrument(), production mode): off unless asked for,
    # and never without a password (app/admin_ui.py).
    admin_ui: bool = False
    admin_ui_user: str = "admin"
    admin_ui_password: str | None = field(default=None, repr=False)
    # The operator's name for what is deployed (app_release); /healthz reports it, so a rolling
    # upgrade can be followed instance by instance. Empty: none given.
    release: str = ""

    @property
    def fanout_rate(self) -> float | None:
        """Fan-out events per second this instance may relay; None: not limited (no plan)."""
        if self.broadcast_fanout_s <= 0 or self.planned_instances <= 0:
            return None
        return self.fanout_cpu_share / self.broadcast_fanout_s / self.planned_instances

    @property
    def fanout_pace(self) -> float | None:
        """Deliveries per second one instance's fan-out keeps to: its planned sockets in the plan's
        fan-out time. None: no plan known (slices, no pacing)."""
        if self.broadcast_fanout_s <= 0 or self.planned_sockets <= 0:
            return None
        return self.planned_sockets / self.broadcast_fanout_s

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build a Config from `env` (default: os.environ); raise ConfigError on the first bad value."""
        env = os.environ if env is None else env
        kwargs: dict[str, object] = {}
        if (mq := _get(env, "SIOKIT_MESSAGE_QUEUE")) is not None:
            kwargs["message_queue"] = _message_queue(mq)
        if (cors := _get(env, "SIOKIT_CORS_ORIGINS")) is not None:
            kwargs["cors_origins"] = _cors(cors)
        if (v := _get(env, "SIOKIT_PING_INTERVAL")) is not None:
            kwargs["ping_interval"] = _positive_int("SIOKIT_PING_INTERVAL", v)
        if (v := _get(env, "SIOKIT_PING_TIMEOUT")) is not None:
            kwargs["ping_timeout"] = _positive_int("SIOKIT_PING_TIMEOUT", v)
        if (v := _get(env, "SIOKIT_PLANNED_SOCKETS")) is not None:
            kwargs["planned_sockets"] = _positive_int("SIOKIT_PLANNED_SOCKETS", v)
        if (v := _get(env, "SIOKIT_ADMIN_SECRET")) is not None:
            kwargs["admin_secret"] = v
        if (v := _get(env, "SIOKIT_INSTANCE_ID")) is not None:
            kwargs["instance_id"] = v
        if (v := _get(env, "SIOKIT_MAX_MESSAGE_BYTES")) is not None:
            kwargs["max_message_bytes"] = _positive_int("SIOKIT_MAX_MESSAGE_BYTES", v)
        if (v := _get(env, "SIOKIT_ASYNC_MODE")) is not None:
            kwargs["async_mode"] = _choice("SIOKIT_ASYNC_MODE", v, ASYNC_MODES)
        if (v := _get(env, "SIOKIT_WEBSOCKET_DRIVER")) is not None:
            kwargs["websocket_driver"] = _choice("SIOKIT_WEBSOCKET_DRIVER", v, WEBSOCKET_DRIVERS)
        if (v := _get(env, "SIOKIT_EVENT_RATE")) is not None:
            kwargs["event_rate"] = _positive_float("SIOKIT_EVENT_RATE", v)
        if (v := _get(env, "SIOKIT_EVENT_BURST")) is not None:
            kwargs["event_burst"] = _positive_int("SIOKIT_EVENT_BURST", v)
        if (v := _get(env, "SIOKIT_EVENT_DROP_LIMIT")) is not None:
            kwargs["event_drop_limit"] = _positive_int("SIOKIT_EVENT_DROP_LIMIT", v)
        if (v := _get(env, "SIOKIT_BROADCAST_FANOUT_S")) is not None:
            # 0 is a plan too small to matter (the planner rounds to 0.01 s).
            kwargs["broadcast_fanout_s"] = 0.0 if v in ("0", "0.0") else _positive_float("SIOKIT_BROADCAST_FANOUT_S", v)
        per_host = _get(env, "SIOKIT_PLANNED_INSTANCES_PER_HOST")
        hosts = _get(env, "SIOKIT_PLANNED_APP_HOSTS")
        if per_host is not None and hosts is not None:
            # The plan's instances in the whole deployment: every one of them fans out every chat.
            kwargs["planned_instances"] = _positive_int("SIOKIT_PLANNED_INSTANCES_PER_HOST", per_host) * _positive_int(
                "SIOKIT_PLANNED_APP_HOSTS", hosts
            )
        if (v := _get(env, "SIOKIT_FANOUT_CPU_SHARE")) is not None:
            share = _positive_float("SIOKIT_FANOUT_CPU_SHARE", v)
            if share > 1:
                raise ConfigError(f"SIOKIT_FANOUT_CPU_SHARE is a share of the cores, at most 1, got {v!r}")
            kwargs["fanout_cpu_share"] = share
        if (v := _get(env, "SIOKIT_FANOUT_BURST")) is not None:
            kwargs["fanout_burst"] = _positive_int("SIOKIT_FANOUT_BURST", v)
        if (v := _get(env, "SIOKIT_FANOUT_PACING")) is not None:
            kwargs["fanout_pacing"] = _switch("SIOKIT_FANOUT_PACING", v)
        if (v := _get(env, "SIOKIT_FANOUT_CORE_WAIT_MS")) is not None:
            kwargs["fanout_core_wait_ms"] = _non_negative_float("SIOKIT_FANOUT_CORE_WAIT_MS", v)
        if (v := _get(env, "SIOKIT_MAX_BACKLOG_BYTES")) is not None:
            value = _positive_int("SIOKIT_MAX_BACKLOG_BYTES", v)
            if value < MIN_MAX_BACKLOG_BYTES:
                raise ConfigError(f"SIOKIT_MAX_BACKLOG_BYTES must be at least {MIN_MAX_BACKLOG_BYTES}, got {v!r}")
            kwargs["max_backlog_bytes"] = value
        if (v := _get(env, "SIOKIT_PATCH_MISMATCH")) is not None:
            kwargs["patch_mismatch"] = _choice("SIOKIT_PATCH_MISMATCH", v, PATCH_MISMATCH_POLICIES)
        if (v := _get(env, "SIOKIT_ADMIN_UI")) is not None:
            kwargs["admin_ui"] = _switch("SIOKIT_ADMIN_UI", v)
        if (v := _get(env, "SIOKIT_ADMIN_UI_USER")) is not None:
            kwargs["admin_ui_user"] = v
        if (v := _get(env, "SIOKIT_ADMIN_UI_PASSWORD")) is not None:
            kwargs["admin_ui_password"] = v
        if kwargs.get("admin_ui") and not kwargs.get("admin_ui_password"):
            raise ConfigError("SIOKIT_ADMIN_UI is on but SIOKIT_ADMIN_UI_PASSWORD is empty: the UI needs a password")
        if (v := _get(env, "SIOKIT_RELEASE")) is not None:
            kwargs["release"] = v
        return cls(**kwargs)  # type: ignore[arg-type]


def _get(env: Mapping[str, str], name: str) -> str | None:
    # An empty variable counts as unset: systemd EnvironmentFile= and templates often write NAME=.
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _positive_float(name: str, raw: str) -> float:
    return _finite_float(name, raw, zero=False)


def _non_negative_float(name: str, raw: str) -> float:
    return _finite_float(name, raw, zero=True)


def _finite_float(name: str, raw: str, *, zero: bool) -> float:
    what = "a number >= 0" if zero else "a positive number"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{name} must be {what}, got {raw!r}")
    return value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}")
    return value


def _switch(name: str, raw: str) -> bool:
    value = SWITCH_VALUES.get(raw.lower())
    if value is None:
        raise ConfigError(f"{name} must be on or off, got {raw!r}")
    return value


def _choice(name: str, raw: str, allowed: tuple[str, ...]) -> str:
    if raw not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


def _message_queue(raw: str) -> str:
    scheme = urlsplit(raw).scheme
    if scheme not in MESSAGE_QUEUE_SCHEMES:
        raise ConfigError(f"SIOKIT_MESSAGE_QUEUE must be a redis URL (redis://, rediss:// or unix://), got {raw!r}")
    return raw


def _cors(raw: str) -> str | list[str]:
    if raw == "*":
        return "*"
    origins = [o.strip() for o in raw.split(",") if o.strip()]
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(
                "SIOKIT_CORS_ORIGINS must be '*' or a comma-separated list of origins like "
                f"https://chat.example.com, got {origin!r}"
            )
    return [o.rstrip("/") for o in origins]
