"""Namespace "/": every event, its ack, rights refusals and skip_sid."""

from __future__ import annotations

import time
from typing import Any

import pytest


def test_connect_with_nickname_and_whoami(connect: Any) -> None:
    client = connect(auth={"nickname": "alice"})
    assert client.is_connected()
    me = client.emit("whoami", callback=True)
    assert me["ok"] is True and me["nickname"] == "alice" and me["instance"] == "unit:1"
    assert len(me["sid"]) == 20


def test_connect_without_auth_gets_guest_nickname(connect: Any) -> None:
    me = connect().emit("whoami", callback=True)
    assert me["nickname"].startswith("guest-")


@pytest.mark.parametrize("auth", [{"nickname": ""}, {"nickname": 5}, {"nickname": "x" * 33}, "alice"])
def test_connect_refused_on_bad_nickname(connect: Any, auth: Any) -> None:
    assert not connect(auth=auth).is_connected()


@pytest.mark.parametrize("event", ["echo", "ping"])
def test_echo_and_ping_return_payload_and_server_time(connect: Any, event: str) -> None:
    before = time.time()
    ack = connect().emit(event, {"t": 1.5, "n": [1, 2]}, callback=True)
    assert ack["ok"] is True
    assert ack["data"] == {"t": 1.5, "n": [1, 2]}
    assert before <= ack["server_time"] <= time.time()
    assert ack["instance"] == "unit:1"


def test_join_leave_rooms(connect: Any) -> None:
    client = connect()
    assert client.emit("join", {"room": "lobby"}, callback=True) == {"ok": True, "room": "lobby"}
    assert client.emit("join", {"room": "games"}, callback=True)["ok"] is True
    assert client.emit("rooms", callback=True) == {"ok": True, "rooms": ["games", "lobby"]}
    assert client.emit("leave", {"room": "games"}, callback=True)["ok"] is True
    assert client.emit("rooms", callback=True)["rooms"] == ["lobby"]


def test_room_message_goes_to_room_members_but_not_sender(connect: Any, received: Any) -> None:
    alice, bob, carol = connect(auth={"nickname": "alice"}), connect(), connect()
    for c in (alice, bob):
        assert c.emit("join", {"room": "lobby"}, callback=True)["ok"] is True
    for c in (alice, bob, carol):
        c.get_received()
    ack = alice.emit("room_message", {"room": "lobby", "text": "hi room"}, callback=True)
    assert ack["ok"] is True
    [msg] = received(bob, "room_message")
    assert msg["room"] == "lobby" and msg["text"] == "hi room" and msg["nickname"] == "alice"
    assert received(alice, "room_message") == []  # skip_sid
    assert received(carol, "room_message") == []  # not in the room


def test_room_message_requires_membership(connect: Any) -> None:
    ack = connect().emit("room_message", {"room": "lobby", "text": "sneaky"}, callback=True)
    assert ack["ok"] is False and "join room" in ack["error"]


def test_chat_broadcasts_to_everyone_but_sender(connect: Any, received: Any) -> None:
    alice, bob = connect(auth={"nickname": "alice"}), connect()
    alice.get_received()
    bob.get_received()
    assert alice.emit("chat", {"text": "hello all"}, callback=True)["ok"] is True
    [msg] = received(bob, "chat")
    assert msg["text"] == "hello all" and msg["nickname"] == "alice" and msg["instance"] == "unit:1"
    assert received(alice, "chat") == []


def test_reserved_message_and_json_are_echoed_to_sender(connect: Any) -> None:
    client = connect()
    client.get_received()
    client.send("plain text")
    client.send({"k": "v"}, json=True)
    got = client.get_received()
    # The test client files JSON messages under "json"; on the wire both are Socket.IO "message".
    assert [(r["name"], r["args"]) for r in got] == [("message", "plain text"), ("json", {"k": "v"})]


@pytest.mark.parametrize(
    "room",
    ["private:x", "admin:ops", "server:stats", "AAAAAAAAAAAAAAAAAAAB", "", " padded", "x" * 65, 7, None],
)
def test_join_refuses_reserved_or_invalid_rooms(connect: Any, room: Any) -> None:
    ack = connect().emit("join", {"room": room}, callback=True)
    assert ack["ok"] is False and ack["error"]


def test_cannot_join_another_clients_personal_room(connect: Any) -> None:
    victim, attacker = connect(), connect()
    victim_sid = victim.emit("whoami", callback=True)["sid"]
    ack = attacker.emit("join", {"room": victim_sid}, callback=True)
    assert ack == {"ok": False, "error": "room names shaped like a client sid are reserved (personal rooms)"}


def test_clients_cannot_close_rooms(connect: Any) -> None:
    ack = connect().emit("close_room", {"room": "lobby"}, callback=True)
    assert ack["ok"] is False and "unknown event" in ack["error"]


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("join", None),
        ("join", "lobby"),
        ("join", ["lobby"]),
        ("leave", 3),
        ("chat", {"text": 5}),
        ("chat", {"text": ""}),
        ("chat", {"text": "x" * 2001}),
        ("chat", "just a string"),
        ("room_message", {"room": "lobby"}),
        ("room_message", {"text": "no room"}),
    ],
)
def test_wrong_payload_types_get_error_ack(connect: Any, event: str, payload: Any) -> None:
    client = connect()
    ack = client.emit(event, payload, callback=True)
    assert ack["ok"] is False and isinstance(ack["error"], str)
    assert client.emit("echo", "alive", callback=True)["data"] == "alive"


def test_extra_arguments_do_not_kill_anything(connect: Any) -> None:
    client = connect()
    ack = client.emit("join", {"room": "a"}, "extra", "args", callback=True)
    assert ack == {"ok": False, "error": "internal error"}
    assert client.emit("echo", 1, callback=True)["ok"] is True


def test_unknown_event_gets_error_ack(connect: Any) -> None:
    ack = connect().emit("no_such_event", {}, callback=True)
    assert ack["ok"] is False and "unknown event" in ack["error"]


def test_client_sent_connect_and_disconnect_are_ignored(app: Any, connect: Any) -> None:
    client = connect()
    assert client.emit("connect", {"nickname": "spoof"}, callback=True)["ok"] is False
    assert client.emit("disconnect", "x", callback=True)["ok"] is False
    assert app.test_client().get("/healthz").json["sockets"] == {"/": 1}
    assert client.is_connected()


def test_disconnect_updates_counts(app: Any, connect: Any) -> None:
    a, _b = connect(), connect()
    assert app.test_client().get("/healthz").json["connected"] == 2
    a.disconnect()
    assert app.test_client().get("/healthz").json["connected"] == 1
