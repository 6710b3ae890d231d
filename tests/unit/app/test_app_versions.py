"""The start-up guard on patched upstream internals (app/upstream/versions.py), with faked versions."""

from __future__ import annotations

import logging

import pytest
import socketio

from app import create_app
from app.config import Config, ConfigError
from app.upstream import versions
from app.upstream.room_index import IndexedManager


def _tested(dist: str) -> str | None:
    return versions.TESTED[dist][0]


def engineio_too_new(dist: str) -> str | None:
    return "4.99.0" if dist == "python-engineio" else _tested(dist)


def test_the_pinned_versions_are_the_tested_ones() -> None:
    # constraints.txt and the table move together: a bump without a re-test fails here first.
    assert versions.mismatches() == []


def test_matching_versions_allow_the_patches() -> None:
    assert versions.patches_allowed("refuse", _tested) is True
    assert versions.patches_allowed("fallback", _tested) is True


def test_refuse_names_the_package_and_both_versions() -> None:
    with pytest.raises(versions.PatchMismatchError) as exc:
        versions.patches_allowed("refuse", engineio_too_new)
    msg = str(exc.value)
    assert "python-engineio 4.99.0" in msg and "4.15.1" in msg
    assert "SIOKIT_PATCH_MISMATCH=fallback" in msg


def test_fallback_disables_the_patches_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.upstream.versions"):
        assert versions.patches_allowed("fallback", engineio_too_new) is False
    assert "DISABLED" in caplog.text and "python-engineio 4.99.0" in caplog.text


def test_a_missing_package_is_a_mismatch() -> None:
    def no_socketio(dist: str) -> str | None:
        return None if dist == "python-socketio" else _tested(dist)

    assert versions.mismatches(no_socketio) == ["python-socketio not installed (tested: 5.18.1)"]


def test_uwsgi_is_checked_only_under_uwsgi() -> None:
    def outside_uwsgi(dist: str) -> str | None:
        return None if dist == "uWSGI" else _tested(dist)

    def other_uwsgi(dist: str) -> str | None:
        return "2.1.0" if dist == "uWSGI" else _tested(dist)

    assert versions.mismatches(outside_uwsgi) == []
    assert versions.mismatches(other_uwsgi) == ["uWSGI 2.1.0 (tested: 2.0.31)"]


def test_create_app_falls_back_to_the_stock_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions, "installed_version", engineio_too_new)
    app = create_app(Config(patch_mismatch="fallback", instance_id="u:1"), async_mode="threading")
    manager = app.extensions["socketio"].server.manager
    assert type(manager) is socketio.Manager
    assert b"siokit_upstream_patches 0.0" in app.test_client().get("/metrics").data


def test_create_app_refuses_on_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions, "installed_version", engineio_too_new)
    with pytest.raises(versions.PatchMismatchError):
        create_app(Config(instance_id="u:1"), async_mode="threading")


def test_create_app_with__testeds_uses_the_room_index() -> None:
    app = create_app(Config(instance_id="u:1"), async_mode="threading")
    assert isinstance(app.extensions["socketio"].server.manager, IndexedManager)
    assert b"siokit_upstream_patches 1.0" in app.test_client().get("/metrics").data


def test_policy_and_backlog_settings_are_validated() -> None:
    cfg = Config.from_env({"SIOKIT_PATCH_MISMATCH": "fallback", "SIOKIT_MAX_BACKLOG_BYTES": "65536"})
    assert (cfg.patch_mismatch, cfg.max_backlog_bytes) == ("fallback", 65536)
    assert Config.from_env({}).patch_mismatch == "refuse"
    with pytest.raises(ConfigError, match="SIOKIT_PATCH_MISMATCH"):
        Config.from_env({"SIOKIT_PATCH_MISMATCH": "ignore"})
    with pytest.raises(ConfigError, match="SIOKIT_MAX_BACKLOG_BYTES"):
        Config.from_env({"SIOKIT_MAX_BACKLOG_BYTES": "100"})
    with pytest.raises(ConfigError, match="SIOKIT_MAX_BACKLOG_BYTES"):
        Config.from_env({"SIOKIT_MAX_BACKLOG_BYTES": "lots"})
