"""VirtualClient against a scripted in-memory transport (no network)."""

from __future__ import annotations

import asyncio
import errno
import time
from collections import deque

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from siokit.load import client as client_mod
from siokit.load.client import ClientConfig, VirtualClient, classify
from siokit.load.protocol import ProtocolError
from siokit.load.stats import WorkerStats
from siokit.load.transport import ConnClosed, HTTPStatusError, engineio_url

OPEN = '0{"sid":"s1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'


class FakeConn:
    def __init__(self, script: list[str]) -> None:
        self.incoming: deque[str] = deque(script)
        self.sent: list[str] = []
        self.closed = False

    def send_nowait(self, text: str) -> None:
        self.sent.append(text)

    async def send(self, text: str) -> None:
        self.sent.append(text)
        if text.startswith("42") and "echo" in text:  # server acks echo immediately
            ack_id = text[2 : text.index("[")]
            self.incoming.append(f'43{ack_id}[{{"ok":true}}]')

    async def recv(self) -> str:
        await asyncio.sleep(0)
        if not self.incoming:
            raise ConnClosed("script over")
        return self.incoming.popleft()

    async def close(self) -> None:
        self.closed = True


def run_client(monkeypatch: pytest.MonkeyPatch, script: list[str], **cfg: object) -> tuple[FakeConn, WorkerStats]:
    conn = FakeConn(script)

    async def fake_open(cls: object, url: str, source_ip: str | None, timeout: float) -> FakeConn:
        return conn

    monkeypatch.setattr(client_mod.WebSocketConn, "open", classmethod(fake_open))
    stats = WorkerStats()
    c = VirtualClient(ClientConfig(url="http://127.0.0.1:1", reconnect=False, **cfg), stats)  # type: ignore[arg-type]

    async def main() -> None:
        first: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(c.run(first))
        if await first:
            await c.send_echo({"x": 1})
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    return conn, stats


def test_connects_explicitly_answers_pings_and_measures(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    conn, st = run_client(
        monkeypatch,
        [OPEN, "2", '40{"sid":"n1"}', "2", f'42["broadcast",{{"seq":1,"text":"t","sent_at":{now}}}]', "2", "6"],
    )
    assert conn.sent[0] == "40"  # explicit connect to "/" on the one connection
    assert conn.sent.count("3") == 3  # every ping answered, also during the handshake
    assert st.connect.count == 1 and st.established == 1
    assert st.broadcast_received == {1: 1}
    assert st.fanout_by_seq[1].count == 1 and st.fanout_by_seq[1].max < 5
    assert st.echo.count == 1 and st.echo_sent == 1
    assert st.drops == 1 and st.connected == 0  # the script ended: a drop, not a failure
    assert st.failures == {}


def test_namespace_and_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    conn, st = run_client(monkeypatch, [OPEN, '40/admin,{"sid":"a"}'], namespace="/admin", auth={"token": "t"})
    assert conn.sent[0] == '40/admin,{"token":"t"}'
    assert st.established == 1


def test_connect_error_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    conn, st = run_client(monkeypatch, [OPEN, '44{"message":"unauthorized"}'])
    assert st.failures == {"connect_error": 1}
    assert st.connected == 0 and st.established == 0
    assert conn.closed


@pytest.mark.parametrize(
    ("script", "reason"),
    [(["x"], "protocol"), (['42["a"]'], "protocol"), ([OPEN, "1"], "closed"), ([], "closed")],
)
def test_bad_handshakes(monkeypatch: pytest.MonkeyPatch, script: list[str], reason: str) -> None:
    _, st = run_client(monkeypatch, script)
    assert st.failures == {reason: 1}


def test_classify() -> None:
    assert classify(ConnectionRefusedError()) == "refused"
    assert classify(TimeoutError()) == "timeout"
    assert classify(TimeoutError()) == "timeout"
    assert classify(ProtocolError("x")) == "protocol"
    assert classify(HTTPStatusError(503)) == "http_503"
    assert classify(InvalidStatus(Response(502, "Bad Gateway", Headers()))) == "http_502"
    assert classify(OSError(errno.EADDRNOTAVAIL, "x")) == "addr_unavailable"
    assert classify(OSError(errno.EMFILE, "x")) == "too_many_open_files"
    assert classify(ConnClosed("x")) == "closed"


def test_engineio_url() -> None:
    assert engineio_url("http://h:1", "websocket") == "ws://h:1/socket.io/?EIO=4&transport=websocket"
    assert engineio_url("https://h", "websocket") == "wss://h/socket.io/?EIO=4&transport=websocket"
    assert engineio_url("ws://h:2/", "polling") == "http://h:2/socket.io/?EIO=4&transport=polling"
    with pytest.raises(ValueError):
        engineio_url("ftp://h", "polling")
