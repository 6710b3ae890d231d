"""Client memory per idle connection: RSS delta / N, one client library per fresh process.

    .venv/bin/python bench/memprobe.py --mode MODE --url http://127.0.0.1:18080 -n 5000 [--bind 127.0.0.2]

MODE:
  websockets        websockets.asyncio.client.connect(compression=None, ping_interval=None), raw WS
  websockets-deflate  the same with the library defaults (permessage-deflate, keepalive pings)
  picows            picows.ws_connect, raw WS
  aiohttp           aiohttp ClientSession.ws_connect (one shared session), raw WS
  siokit            siokit.load.client.VirtualClient (Engine.IO/Socket.IO over websockets)
  sio-async         python-socketio AsyncClient (websocket transport), connected to "/"
  locust            locust.contrib.socketio.SocketIOUser (python-socketio sync Client under gevent)

The server is any Engine.IO v4 endpoint on loopback (bench/py_server.py or bench/node-server).
Raw-WS modes open /socket.io/?EIO=4&transport=websocket and just hold the socket (the probe ends
well before the server's ping timeout). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def ws_url(url: str) -> str:
    base = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://")
    return base + "/socket.io/?EIO=4&transport=websocket"


def settle() -> int:
    gc.collect()
    time.sleep(0.5)
    return rss_kb()


async def _asyncio_probe(args: argparse.Namespace) -> dict:
    import asyncio

    sem = asyncio.Semaphore(args.concurrency)
    keep: list = []
    local = (args.bind, 0) if args.bind else None
    mode = args.mode
    session = None
    if mode == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, local_addr=local) if local else aiohttp.TCPConnector(limit=0)
        session = aiohttp.ClientSession(connector=connector)

    async def one() -> None:
        async with sem:
            if mode in ("websockets", "websockets-deflate"):
                from websockets.asyncio.client import connect

                kw: dict = {} if mode == "websockets-deflate" else {"compression": None, "ping_interval": None}
                ws = await connect(ws_url(args.url), local_addr=local, open_timeout=30, **kw)
                await ws.recv()
                keep.append(ws)
            elif mode == "picows":
                from picows import WSListener, WSMsgType, ws_connect

                class L(WSListener):
                    def on_ws_frame(self, transport, frame) -> None:  # type: ignore[no-untyped-def]
                        if frame.msg_type == WSMsgType.CLOSE:
                            transport.disconnect()

                kw = {"local_addr": local} if local else {}
                transport, listener = await ws_connect(L, ws_url(args.url), **kw)
                keep.append((transport, listener))
            elif mode == "aiohttp":
                assert session is not None
                aws = await session.ws_connect(ws_url(args.url), autoping=False, heartbeat=None)
                await aws.receive()
                keep.append(aws)
            elif mode == "sio-async":
                import socketio  # type: ignore[import-untyped]

                c = socketio.AsyncClient(reconnection=False)
                await c.connect(args.url, transports=["websocket"], wait_timeout=30)
                keep.append(c)
            elif mode == "siokit":
                from siokit.load.client import ClientConfig, VirtualClient
                from siokit.load.stats import WorkerStats

                if not keep:
                    keep.append(WorkerStats())
                cfg = ClientConfig(url=args.url, source_ip=args.bind)
                c = VirtualClient(cfg, keep[0])
                first: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                task = asyncio.get_running_loop().create_task(c.run(first))
                if not await first:
                    raise RuntimeError("siokit connect failed")
                keep.append((c, task))

    # one warm-up connection so that lazily imported modules and first-use caches are in the baseline
    await one()
    base = settle()
    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(args.n - 1)))
    ramp = time.monotonic() - t0
    await asyncio.sleep(args.idle)
    after = settle()
    finish({"base_kb": base, "after_kb": after, "ramp_s": round(ramp, 2)}, args)
    return {}


def _locust_probe(args: argparse.Namespace) -> None:
    from gevent import monkey  # type: ignore[import-untyped]

    monkey.patch_all()
    import gevent  # type: ignore[import-untyped]
    from gevent.pool import Pool  # type: ignore[import-untyped]
    from locust.contrib.socketio import SocketIOUser
    from locust.env import Environment

    class U(SocketIOUser):
        host = args.url
        options = {"reconnection": False}  # noqa: RUF012

    env = Environment(user_classes=[U])
    users: list = []

    def one() -> None:
        u = U(env)
        u.sio.connect(args.url, transports=["websocket"], wait_timeout=30)
        users.append(u)

    one()
    base = settle()
    t0 = time.monotonic()
    pool = Pool(args.concurrency)
    for _ in range(args.n - 1):
        pool.spawn(one)
    pool.join()
    ramp = time.monotonic() - t0
    gevent.sleep(args.idle)
    after = settle()
    finish({"base_kb": base, "after_kb": after, "ramp_s": round(ramp, 2), "held": len(users)}, args)


def finish(res: dict, args: argparse.Namespace) -> None:
    delta = res["after_kb"] - res["base_kb"]
    res.update(mode=args.mode, n=args.n, kb_per_conn=round(delta / (args.n - 1), 2))
    print(json.dumps(res), flush=True)
    os._exit(0)  # skip the orderly teardown of thousands of sockets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", required=True)
    ap.add_argument("--url", default="http://127.0.0.1:18080")
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--idle", type=float, default=3.0)
    ap.add_argument("--bind", default=None)
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.mode == "locust":
        _locust_probe(args)
    else:
        import asyncio

        asyncio.run(_asyncio_probe(args))
    return 1


if __name__ == "__main__":
    sys.exit(main())
