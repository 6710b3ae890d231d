"""/anonymous and /admin."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app import create_app
from app.config import Config

ADMIN_SECRET = "unit-test-secret"  # same as conftest's config fixture


def test_anonymous_chat_goes_out_as_anonymous(connect: Any, received: Any) -> None:
    alice = connect("/anonymous", auth={"nickname": "alice"})
    bob = connect("/anonymous")
    on_root = connect("/")
    for c in (alice, bob):
        c.get_received("/anonymous")
    on_root.get_received()
    ack = alice.emit("chat", {"text": "who am I?"}, namespace="/anonymous", callback=True)
    assert ack["ok"] is True and ack["nickname"] == "Anonymous"
    [msg] = received(bob, "chat", "/anonymous")
    assert msg["nickname"] == "Anonymous" and msg["text"] == "who am I?"
    assert "alice" not in str(msg)
    assert received(alice, "chat", "/anonymous") == []
    assert received(on_root, "chat") == []  # namespaces are separate


def test_anonymous_rejects_bad_payload(connect: Any) -> None:
    ack = connect("/anonymous").emit("chat", 42, namespace="/anonymous", callback=True)
    assert ack["ok"] is False


@pytest.mark.parametrize("auth", [None, {}, {"token": "wrong"}, {"token": 123}, "unit-test-secret"])
def test_admin_refuses_without_valid_token(connect: Any, app: Any, auth: Any) -> None:
    admin = connect("/admin", auth=auth)
    assert not admin.is_connected("/admin")
    assert 'siokit_connections_refused_total{namespace="/admin"}' in app.test_client().get("/metrics").text


def test_admin_refuses_everyone_when_no_secret_configured() -> None:
    app = create_app(Config(admin_secret=None), async_mode="threading")
    socketio = app.extensions["socketio"]
    for auth in (None, {"token": ""}, {"token": "anything"}):
        assert not socketio.test_client(app, namespace="/admin", auth=auth).is_connected("/admin")


def test_admin_broadcast_reaches_all_root_clients(connect: Any, received: Any) -> None:
    a, b = connect(), connect()
    admin = connect("/admin", auth={"token": ADMIN_SECRET})
    assert admin.is_connected("/admin")
    a.get_received()
    b.get_received()
    before = time.time()
    ack = admin.emit("broadcast", {"seq": 7, "text": "maintenance"}, namespace="/admin", callback=True)
    assert ack["ok"] is True and before <= ack["sent_at"] <= time.time()
    for client in (a, b):
        [msg] = received(client, "broadcast")
        assert msg == {"seq": 7, "text": "maintenance", "sent_at": ack["sent_at"]}


def test_admin_broadcast_defaults_and_validation(connect: Any, received: Any) -> None:
    a = connect()
    admin = connect("/admin", auth={"token": ADMIN_SECRET})
    a.get_received()
    assert admin.emit("broadcast", namespace="/admin", callback=True)["ok"] is True
    [msg] = received(a, "broadcast")
    assert msg["seq"] is None and msg["text"] == ""
    for bad in ({"seq": [1]}, {"seq": True}, {"text": 5}, "text"):
        assert admin.emit("broadcast", bad, namespace="/admin", callback=True)["ok"] is False


def test_admin_close_room_and_counts(connect: Any) -> None:
    a, b = connect(), connect()
    admin = connect("/admin", auth={"token": ADMIN_SECRET})
    a.emit("join", {"room": "lobby"}, callback=True)
    b.emit("join", {"room": "lobby"}, callback=True)
    counts = admin.emit("counts", namespace="/admin", callback=True)
    assert counts["ok"] is True and counts["instance"] == "unit:1"
    assert counts["sockets"] == {"/": 2, "/admin": 1}
    assert counts["rooms"]["/"] == {"lobby": 2}
    assert admin.emit("close_room", {"room": "lobby"}, namespace="/admin", callback=True)["ok"] is True
    assert a.emit("rooms", callback=True)["rooms"] == []
    assert admin.emit("counts", namespace="/admin", callback=True)["rooms"]["/"] == {}
    assert admin.emit("close_room", {"room": 5}, namespace="/admin", callback=True)["ok"] is False
