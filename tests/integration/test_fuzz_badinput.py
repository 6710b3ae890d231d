"""Fuzz one real uWSGI instance with malformed Engine.IO / Socket.IO input (issue #10, bad input).

hypothesis generates raw websocket sessions: bad packet types, truncated frames, oversized
payloads, invalid JSON, binary where text is expected, unknown namespaces; plus floods of
handshakes that never finish (polling sessions never used, HTTP requests never completed).
Afterwards the instance still serves a well-behaved client, its memory is back near the
baseline, every kind of bad input is counted in /metrics, and the log holds one line per kind
per interval, not a traceback per packet.

The corpus is kept in the repository: fuzz-corpus/seeds.json (replayed on every run) and
hypothesis' example database in fuzz-corpus/db (what hypothesis found interesting).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import socketio
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from siokit.lab.servers import Proc, run_uwsgi

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).parent / "fuzz-corpus"
MAX_MESSAGE_BYTES = 10_000
ENV = {
    "SIOKIT_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
    # abandoned sessions expire after interval + timeout: 4 s here
    "SIOKIT_PING_INTERVAL": "2",
    "SIOKIT_PING_TIMEOUT": "2",
    "SIOKIT_ADMIN_SECRET": "fuzz-secret-0123456789",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
namespaces = st.sampled_from(["", "/", "/nope,", "/admin,", "/anonymous,", "//,", "/" + "n" * 300 + ","])
events = st.sampled_from(["chat", "echo", "join", "room_message", "broadcast", "connect", "disconnect", "", "x" * 100])


@st.composite
def socketio_packet(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from("0123456789"))
    body = draw(st.one_of(json_values.map(json.dumps), st.builds(json.dumps, st.tuples(events, json_values))))
    text = "4" + kind + draw(namespaces) + draw(st.sampled_from(["", "12"])) + body
    cut = draw(st.integers(min_value=1, max_value=len(text)))
    return text[:cut] if draw(st.booleans()) else text  # truncated or whole


frames = st.one_of(
    socketio_packet(),
    st.builds(lambda t, s: t + s, st.sampled_from([*"0123456789", "", "x", "-1"]), st.text(max_size=80)),
    st.text(max_size=200),
    st.binary(max_size=200),  # binary where text is expected
    st.integers(min_value=MAX_MESSAGE_BYTES, max_value=3 * MAX_MESSAGE_BYTES).map(
        lambda n: '42["chat",{"text":"' + "x" * n + '"}]'  # oversized
    ),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with run_uwsgi(tmp_path_factory.mktemp("fuzz"), env=ENV) as proc:
        yield proc


def _ws_url(proc: Proc) -> str:
    return f"ws://127.0.0.1:{proc.port}/socket.io/?EIO=4&transport=websocket"


def _session(proc: Proc, frames: list[str | bytes]) -> None:
    """One raw websocket session: the handshake, a namespace connect, then the frames as sent."""
    try:
        ws = websocket.create_connection(_ws_url(proc), timeout=2)
    except (OSError, websocket.WebSocketException):
        return
    try:
        ws.recv()
        ws.send("40")
        for frame in frames:
            if isinstance(frame, bytes):
                ws.send_binary(frame)
            else:
                ws.send(frame)
        ws.settimeout(0.05)
        with contextlib.suppress(OSError, websocket.WebSocketException):
            while ws.recv():
                pass
    except (OSError, websocket.WebSocketException):
        pass  # the server closed it: a valid answer to garbage
    finally:
        ws.close()


def _worker_rss(proc: Proc) -> int:
    procs = [psutil.Process(proc.popen.pid), *psutil.Process(proc.popen.pid).children(recursive=True)]
    return sum(p.memory_info().rss for p in procs)


def _metrics(proc: Proc) -> dict[str, float]:
    with urllib.request.urlopen(proc.url + "/metrics", timeout=5) as resp:
        out = {}
        for line in resp.read().decode().splitlines():
            if line.startswith("siokit_bad_input_total{"):
                kind = line.split('kind="', 1)[1].split('"', 1)[0]
                out[kind] = float(line.split()[-1])
            elif line.startswith('siokit_connected_sockets{namespace="/"}'):
                out["_connected"] = float(line.split()[-1])
        return out


def _assert_serves(proc: Proc) -> None:
    assert proc.alive(), proc.log()
    client = socketio.Client(reconnection=False)
    client.connect(proc.url, transports=["websocket"], wait_timeout=5)
    try:
        assert client.call("echo", {"ok": 1}, timeout=5)["data"] == {"ok": 1}
    finally:
        client.disconnect()


def _seeds() -> list[list[str | bytes]]:
    data = json.loads((CORPUS / "seeds.json").read_text())
    return [[bytes.fromhex(f[4:]) if f.startswith("hex:") else f for f in case["frames"]] for case in data]


@pytest.mark.parametrize("frames", _seeds())
def test_seed_corpus(server: Proc, frames: list[str | bytes]) -> None:
    _session(server, frames)
    _assert_serves(server)


@settings(
    max_examples=100,
    deadline=None,
    database=DirectoryBasedExampleDatabase(str(CORPUS / "db")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(session=st.lists(frames, min_size=1, max_size=12))
def test_fuzzed_sessions_keep_the_instance_serving(server: Proc, session: list[str | bytes]) -> None:
    _session(server, session)
    assert server.alive(), server.log()


def _abandoned_handshakes(proc: Proc, polling: int, partial: int) -> list[socket.socket]:
    """Sessions opened and never used, and HTTP requests never finished."""
    for _ in range(polling):
        with urllib.request.urlopen(f"{proc.url}/socket.io/?EIO=4&transport=polling", timeout=5) as resp:
            assert resp.read().startswith(b"0{")
    held = []
    for _ in range(partial):
        s = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        s.sendall(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n")  # no blank line
        held.append(s)
    return held


def test_after_the_fuzz_memory_counts_and_logs(server: Proc) -> None:
    # Runs after the fuzzing above (same module-scoped instance): one more round, then the checks.
    _assert_serves(server)
    time.sleep(5)
    baseline = _worker_rss(server)
    t0 = time.monotonic()
    log_before = server.log_path.read_text(errors="replace")
    # A decode error ends the session, so each kind gets sessions of its own.
    for i in range(150):
        _session(server, ['42/nope,["chat",{}]', f'42/nope,["echo",{i}]'])
        _session(server, ['42["chat"', "4x"])
        _session(server, [b"\x00\xff" * i, "42" + "[" * 50])
    held = _abandoned_handshakes(server, polling=200, partial=50)
    _assert_serves(server)  # while 50 requests hang half-sent and 200 sessions sit unused
    for s in held:
        s.close()
    time.sleep(7)  # the abandoned sessions expire (ping interval + timeout = 4 s)
    _assert_serves(server)
    after = _worker_rss(server)
    counts = _metrics(server)
    log = server.log_path.read_text(errors="replace")[len(log_before) :]
    print(f"RSS {baseline / 2**20:.1f} MiB before, {after / 2**20:.1f} MiB after; bad input {counts}")
    assert after - baseline < 10 * 2**20, (baseline, after)
    assert counts.get("_connected", 0) == 0
    for kind in ("bad_packet", "unknown_namespace"):
        assert counts.get(kind, 0) >= 150, counts
    # hundreds of bad frames above: a few lines per kind, no traceback per packet
    assert log.count("Traceback") == 0, log[-3000:]
    intervals = int((time.monotonic() - t0) // 10) + 1  # app/logthrottle.py: one line per kind per 10 s
    for kind in ("bad_packet", "unknown_namespace"):
        assert 1 <= log.count(f"{kind}: ") <= intervals, (intervals, log[-3000:])
