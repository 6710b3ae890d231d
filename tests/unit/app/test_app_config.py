from __future__ import annotations

import pytest

from app.config import Config, ConfigError


def test_defaults() -> None:
    cfg = Config.from_env({})
    assert cfg.message_queue is None
    assert cfg.cors_origins is None  # same origin only
    assert (cfg.ping_interval, cfg.ping_timeout) == (25, 20)
    assert cfg.admin_secret is None
    assert cfg.max_message_bytes == 100_000
    assert cfg.async_mode is None
    assert cfg.websocket_driver == "event"
    assert ":" in cfg.instance_id  # hostname:pid
    assert cfg.release == ""


def test_all_variables() -> None:
    cfg = Config.from_env(
        {
            "SIOKIT_MESSAGE_QUEUE": "redis://:pw@10.0.0.5:6379/0",
            "SIOKIT_CORS_ORIGINS": "https://a.example.com, http://b.example.com:8080/",
            "SIOKIT_PING_INTERVAL": "10",
            "SIOKIT_PING_TIMEOUT": "5",
            "SIOKIT_ADMIN_SECRET": "s3cret",
            "SIOKIT_INSTANCE_ID": "app1:5001",
            "SIOKIT_MAX_MESSAGE_BYTES": "2048",
            "SIOKIT_ASYNC_MODE": "gevent_uwsgi",
            "SIOKIT_WEBSOCKET_DRIVER": "stock",
            "SIOKIT_RELEASE": " 2.4.1-drill ",
        }
    )
    assert cfg.message_queue == "redis://:pw@10.0.0.5:6379/0"
    assert cfg.cors_origins == ["https://a.example.com", "http://b.example.com:8080"]
    assert (cfg.ping_interval, cfg.ping_timeout, cfg.max_message_bytes) == (10, 5, 2048)
    assert cfg.admin_secret == "s3cret"
    assert cfg.instance_id == "app1:5001"
    assert cfg.async_mode == "gevent_uwsgi"
    assert cfg.websocket_driver == "stock"
    assert cfg.release == "2.4.1-drill"
    assert "s3cret" not in repr(cfg)


def test_star_cors_and_empty_values_mean_unset() -> None:
    assert Config.from_env({"SIOKIT_CORS_ORIGINS": "*"}).cors_origins == "*"
    cfg = Config.from_env({"SIOKIT_ADMIN_SECRET": "", "SIOKIT_MESSAGE_QUEUE": "  "})
    assert cfg.admin_secret is None and cfg.message_queue is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SIOKIT_PING_INTERVAL", "abc", "SIOKIT_PING_INTERVAL must be a positive integer, got 'abc'"),
        ("SIOKIT_PING_INTERVAL", "0", "SIOKIT_PING_INTERVAL must be a positive integer, got '0'"),
        ("SIOKIT_PING_TIMEOUT", "-5", "SIOKIT_PING_TIMEOUT must be a positive integer, got '-5'"),
        ("SIOKIT_PING_TIMEOUT", "2.5", "SIOKIT_PING_TIMEOUT must be a positive integer, got '2.5'"),
        ("SIOKIT_MAX_MESSAGE_BYTES", "1e6", "SIOKIT_MAX_MESSAGE_BYTES must be a positive integer, got '1e6'"),
        ("SIOKIT_ASYNC_MODE", "asyncio", "SIOKIT_ASYNC_MODE must be one of"),
        ("SIOKIT_WEBSOCKET_DRIVER", "fast", "SIOKIT_WEBSOCKET_DRIVER must be one of"),
        ("SIOKIT_MESSAGE_QUEUE", "amqp://localhost", "SIOKIT_MESSAGE_QUEUE must be a redis URL"),
        ("SIOKIT_MESSAGE_QUEUE", "localhost:6379", "SIOKIT_MESSAGE_QUEUE must be a redis URL"),
        ("SIOKIT_CORS_ORIGINS", "example.com", "SIOKIT_CORS_ORIGINS must be '*' or"),
        ("SIOKIT_CORS_ORIGINS", "https://a.com/path", "SIOKIT_CORS_ORIGINS must be '*' or"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Config.from_env({name: value})
    assert str(excinfo.value).startswith(message)
    assert name in str(excinfo.value)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
