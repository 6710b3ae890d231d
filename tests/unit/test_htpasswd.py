"""The Admin UI's nginx password file: {SSHA} hashes nginx can check, rendered only when the UI is on."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from siokit.htpasswd import ssha
from siokit.render import render_all

SECRETS = {"siokit_redis_password": "pw", "siokit_admin_secret": "adm", "siokit_redis_host": "10.0.0.5"}


def _check(line: str, password: str) -> bool:
    """nginx's own check (ngx_crypt_ssha): sha1(password + salt) == the first 20 decoded bytes."""
    raw = base64.b64decode(line.removeprefix("{SSHA}"))
    return hashlib.sha1(password.encode() + raw[20:]).digest() == raw[:20]


def test_ssha_verifies_and_rejects() -> None:
    hashed = ssha("s3cret pw", "NaCl1234")
    assert hashed.startswith("{SSHA}")
    assert _check(hashed, "s3cret pw")
    assert not _check(hashed, "s3cret pX")
    # Stable for one salt (idempotent deploys), different across salts.
    assert hashed == ssha("s3cret pw", "NaCl1234") != ssha("s3cret pw", "NaCl1235")


@pytest.mark.parametrize("password,salt", [("", "salt"), ("pw", "")])
def test_ssha_refuses_empty(password: str, salt: str) -> None:
    with pytest.raises(ValueError):
        ssha(password, salt)


def test_rendered_only_when_on(tmp_path: Path) -> None:
    render_all(SECRETS, tmp_path / "off")
    off = (tmp_path / "off" / "nginx" / "siokit-admin-ui.htpasswd").read_text()
    assert [line for line in off.splitlines() if not line.startswith("#")] == []
    assert "/admin-ui/" not in (tmp_path / "off" / "nginx" / "siokit.conf").read_text()
    assert "SIOKIT_ADMIN_UI=off" in (tmp_path / "off" / "uwsgi" / "siokit.env").read_text()

    on_vars = {
        **SECRETS,
        "siokit_admin_ui_enabled": True,
        "siokit_admin_ui_user": "ops",
        "siokit_admin_ui_password": "ui-pw",
        "siokit_admin_ui_salt": "ui-salt",
    }
    render_all(on_vars, tmp_path / "on")
    [line] = [
        x for x in (tmp_path / "on" / "nginx" / "siokit-admin-ui.htpasswd").read_text().splitlines() if x[:1] != "#"
    ]
    user, _, hashed = line.partition(":")
    assert user == "ops" and _check(hashed, "ui-pw")
    site = (tmp_path / "on" / "nginx" / "siokit.conf").read_text()
    assert "auth_basic_user_file /etc/nginx/siokit-admin-ui.htpasswd;" in site
    env = (tmp_path / "on" / "uwsgi" / "siokit.env").read_text()
    assert "SIOKIT_ADMIN_UI=on\nSIOKIT_ADMIN_UI_USER=ops\nSIOKIT_ADMIN_UI_PASSWORD=ui-pw\n" in env
