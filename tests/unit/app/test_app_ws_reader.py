"""The kit's websocket reader: frames cut from any split of the byte stream, bounded, strict."""

from __future__ import annotations

import itertools
import os
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.upstream import ws_reader
from app.upstream.ws_reader import BINARY, CLOSE, PING, PONG, TEXT, ProtocolError


def client_frame(payload: bytes, opcode: int, fin: bool = True, mask: bytes | None = None) -> bytes:
    """A masked client frame (RFC 6455 5.2), built independently of the reader under test."""
    mask = os.urandom(4) if mask is None else mask
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


# A message: (opcode, payload, fragment sizes). Control frames may sit between fragments.
messages = st.lists(
    st.one_of(
        st.tuples(st.just(TEXT), st.text(max_size=300), st.lists(st.integers(1, 120), max_size=3)),
        st.tuples(st.just(BINARY), st.binary(max_size=300), st.lists(st.integers(1, 120), max_size=3)),
        st.tuples(st.sampled_from([PING, PONG]), st.binary(max_size=125), st.just([])),
    ),
    max_size=12,
)


def encode(msgs: list[tuple[int, Any, list[int]]]) -> tuple[bytes, list[tuple[int, Any]]]:
    stream = b""
    expected: list[tuple[int, Any]] = []
    for opcode, payload, cuts in msgs:
        raw = payload.encode() if opcode == TEXT else payload
        expected.append((opcode, payload))
        if opcode in (PING, PONG) or not cuts:
            stream += client_frame(raw, opcode)
            continue
        pieces, pos = [], 0
        for size in cuts:
            pieces.append(raw[pos : pos + size])
            pos += size
        pieces.append(raw[pos:])
        for i, piece in enumerate(pieces):
            stream += client_frame(piece, opcode if i == 0 else 0, fin=i == len(pieces) - 1)
            if i == 0:
                stream += client_frame(b"between", PING)  # allowed inside a fragmented message
                expected.insert(len(expected) - 1, (PING, b"between"))
    return stream, expected


@given(msgs=messages, splits=st.lists(st.integers(0, 4000), max_size=6))
@settings(max_examples=300, deadline=None)
def test_any_split_of_the_stream_yields_the_same_messages_and_leaves_no_state(
    msgs: list[tuple[int, Any, list[int]]], splits: list[int]
) -> None:
    stream, expected = encode(msgs)
    bounds = sorted({0, len(stream), *(s % (len(stream) + 1) for s in splits)})
    got: list[tuple[int, Any]] = []
    partial = None
    for a, b in itertools.pairwise(bounds):
        out, partial = ws_reader.parse(stream[a:b], partial, 1 << 20)
        got += out
    assert got == expected
    assert partial is None  # an idle socket keeps no parser


def test_whole_small_frames_take_the_fast_path_without_state() -> None:
    pong = client_frame(b"3", TEXT)
    assert ws_reader.parse(pong + client_frame(b"\x00\x01", BINARY), None, 100) == (
        [(TEXT, "3"), (BINARY, b"\x00\x01")],
        None,
    )


def test_a_message_over_the_bound_is_refused_once_its_length_is_known() -> None:
    frame = client_frame(b"x" * 5000, TEXT)
    with pytest.raises(ProtocolError) as e:
        ws_reader.parse(frame[:100], None, 1000)  # the header says 5,000 > 1,000: no need to wait
    assert e.value.code == 1009
    fragments = client_frame(b"y" * 600, TEXT, fin=False) + client_frame(b"y" * 600, 0)
    with pytest.raises(ProtocolError) as e:
        ws_reader.parse(fragments, None, 1000)
    assert e.value.code == 1009


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(b"\x81\x05hello", 1002, id="unmasked"),
        pytest.param(client_frame(b"\xff\xfe", TEXT), 1007, id="invalid-utf-8"),
        pytest.param(client_frame(b"x", 0x3), 1002, id="reserved-opcode"),
        pytest.param(client_frame(b"x", 0), 1002, id="continuation-first"),
        pytest.param(client_frame(b"x" * 126, PING), 1002, id="long-control-frame"),
        pytest.param(client_frame(b"x", PING, fin=False), 1002, id="fragmented-control-frame"),
        pytest.param(bytes([0xC1]) + client_frame(b"x", TEXT)[1:], 1002, id="rsv1-without-extension"),
    ],
)
def test_protocol_errors_name_the_close_code(data: bytes, code: int) -> None:
    with pytest.raises(ProtocolError) as e:
        ws_reader.parse(data, None, 1000)
    assert e.value.code == code


def test_close_gives_the_clients_code() -> None:
    assert ws_reader.parse(client_frame(struct.pack("!H", 1001), CLOSE), None, 100)[0] == [(CLOSE, 1001)]
    assert ws_reader.parse(client_frame(b"", CLOSE), None, 100)[0] == [(CLOSE, 1005)]


def test_server_control_frames() -> None:
    assert ws_reader.control_frame(PONG, b"hi") == b"\x8a\x02hi"
    assert ws_reader.close_frame(1009) == b"\x88\x02\x03\xf1"


def test_a_64_bit_length_message_read_in_pieces() -> None:
    payload = os.urandom(70_000)
    stream = client_frame(payload, BINARY)
    partial, got = None, []
    for pos in range(0, len(stream), 16384):  # the driver's read size
        out, partial = ws_reader.parse(stream[pos : pos + 16384], partial, 1 << 20)
        got += out
    assert got == [(BINARY, payload)] and partial is None
