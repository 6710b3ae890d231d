"""Engine.IO v4 / Socket.IO v5 framing of the load client."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siokit.load.protocol import (
    SIO_ACK,
    SIO_BINARY_EVENT,
    SIO_CONNECT,
    SIO_CONNECT_ERROR,
    SIO_EVENT,
    ProtocolError,
    encode_ack,
    encode_connect,
    encode_disconnect,
    encode_event,
    join_payload,
    namespace_matches,
    parse_eio,
    parse_handshake,
    parse_sio,
    split_payload,
)


def test_encode_connect_default_and_namespaced() -> None:
    assert encode_connect() == "40"
    assert encode_connect("/") == "40"
    assert encode_connect("/admin") == "40/admin,"
    assert encode_connect("/admin", {"token": "s3cret"}) == '40/admin,{"token":"s3cret"}'
    assert encode_connect("/", {"a": 1}) == '40{"a":1}'


def test_encode_event_and_ack() -> None:
    assert encode_event("/", "echo", {"x": 1}) == '42["echo",{"x":1}]'
    assert encode_event("/", "echo", {"x": 1}, ack_id=7) == '427["echo",{"x":1}]'
    assert encode_event("/admin", "broadcast", {"seq": 1}, ack_id=3) == '42/admin,3["broadcast",{"seq":1}]'
    assert encode_ack("/", 5, "ok") == '435["ok"]'
    assert encode_ack("/admin", 5) == "43/admin,5[]"
    assert encode_disconnect("/admin") == "41/admin,"


def test_parse_eio() -> None:
    assert parse_eio("2") == ("2", "")
    assert parse_eio('0{"sid":"x"}') == ("0", '{"sid":"x"}')
    for bad in ("", "9", "x2"):
        with pytest.raises(ProtocolError):
            parse_eio(bad)


def test_parse_handshake() -> None:
    hs = parse_handshake('{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}')
    assert hs.sid == "abc"
    assert hs.ping_interval == 25.0
    assert hs.ping_timeout == 20.0
    for bad in (
        "[]",
        "{}",
        '{"sid":""}',
        '{"sid":"a","pingInterval":-1}',
        '{"sid":"a","pingInterval":true}',
        "not json",
        '{"sid":"a","upgrades":"websocket"}',
    ):
        with pytest.raises(ProtocolError):
            parse_handshake(bad)


def test_parse_sio_examples() -> None:
    p = parse_sio('0{"sid":"xyz"}')
    assert (p.type, p.namespace, p.ack_id, p.data) == (SIO_CONNECT, "/", None, {"sid": "xyz"})
    p = parse_sio('0/admin,{"sid":"xyz"}')
    assert (p.type, p.namespace) == (SIO_CONNECT, "/admin")
    p = parse_sio('2["broadcast",{"seq":1,"sent_at":1.5}]')
    assert p.type == SIO_EVENT and p.data[0] == "broadcast" and p.data[1]["seq"] == 1
    p = parse_sio('312[{"data":1}]')
    assert (p.type, p.ack_id, p.data) == (SIO_ACK, 12, [{"data": 1}])
    p = parse_sio('3/admin,7[{"seq":1}]')
    assert (p.type, p.namespace, p.ack_id) == (SIO_ACK, "/admin", 7)
    p = parse_sio('4/admin,{"message":"Connection rejected by server"}')
    assert p.type == SIO_CONNECT_ERROR and p.namespace == "/admin"
    p = parse_sio("1/admin,")
    assert p.namespace == "/admin" and p.data is None
    p = parse_sio('51-["up",{"_placeholder":true,"num":0}]')
    assert p.type == SIO_BINARY_EVENT


@pytest.mark.parametrize(
    "bad", ["", "9", "2", "2{}", "2[1]", "3[1]", '31{"a":1}', "2[", '5["x"]', "3" + "9" * 30 + "[]"]
)
def test_parse_sio_rejects(bad: str) -> None:
    with pytest.raises(ProtocolError):
        parse_sio(bad)


def test_polling_payload_roundtrip() -> None:
    packets = ['0{"sid":"a"}', "2", '42["x",1]']
    assert split_payload(join_payload(packets)) == packets
    assert split_payload("") == []


def test_namespace_matches() -> None:
    assert namespace_matches("/", "/")
    assert namespace_matches("/admin", "admin")
    assert not namespace_matches("/admin", "/")


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_parsers_never_crash_on_garbage(text: str) -> None:
    for fn in (parse_eio, parse_sio, parse_handshake):
        with contextlib.suppress(ProtocolError):
            fn(text)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from("0123456"), st.text(alphabet='/admin,0123456789[]{}"', max_size=40))
def test_parser_structured_garbage(kind: str, rest: str) -> None:
    with contextlib.suppress(ProtocolError):
        parse_sio(kind + rest)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["/", "/admin", "/chat-room"]),
    st.text(min_size=1, max_size=20),
    json_values,
    st.none() | st.integers(0, 10**9),
)
def test_event_roundtrip(ns: str, event: str, data: object, ack_id: int | None) -> None:
    text = encode_event(ns, event, data, ack_id=ack_id)
    kind, payload = parse_eio(text)
    assert kind == "4"
    pkt = parse_sio(payload)
    assert pkt.type == SIO_EVENT
    assert pkt.namespace == ns
    assert pkt.ack_id == ack_id
    assert pkt.data == json.loads(json.dumps([event, data]))
