"""Reference python-socketio server (no Flask) on gevent pywsgi + gevent-websocket.

Implements what ``siokit load`` drives, with the same names as the app:
  - default namespace ``/`` event ``echo``: ack returns {"data": payload, "server_time": time.time()}
  - namespace ``/admin`` (auth {"token": SECRET}) event ``broadcast`` {seq, text}: emits ``broadcast``
    {seq, text, sent_at: time.time()} to every client of ``/``; the ack returns {"seq": seq}.

Used by tests/integration/test_load_*.py and bench/compare.py:
    SIOKIT_ADMIN_TOKEN=... python bench/py_server.py --host 127.0.0.1 --port 18080 [--ping-interval 25]
Prints ``READY <port>`` on stdout when it listens. SIGTERM/SIGINT stop it.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import socketio  # noqa: E402
from gevent import pywsgi, socket  # noqa: E402
from geventwebsocket.handler import WebSocketHandler  # noqa: E402


def build(token: str, ping_interval: float, ping_timeout: float) -> socketio.WSGIApp:
    sio = socketio.Server(
        async_mode="gevent",
        cors_allowed_origins="*",
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
    )

    @sio.on("echo")
    def echo(sid: str, data: object = None) -> dict:
        return {"data": data, "server_time": time.time()}

    @sio.on("connect", namespace="/admin")
    def admin_connect(sid: str, environ: dict, auth: object = None) -> bool:
        return isinstance(auth, dict) and auth.get("token") == token

    @sio.on("broadcast", namespace="/admin")
    def broadcast(sid: str, data: object = None) -> dict:
        body = data if isinstance(data, dict) else {}
        msg = {"seq": body.get("seq"), "text": body.get("text", ""), "sent_at": time.time()}
        sio.emit("broadcast", msg, namespace="/")
        return {"seq": msg["seq"]}

    return socketio.WSGIApp(sio)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--token", default=os.environ.get("SIOKIT_ADMIN_TOKEN"), help="default: $SIOKIT_ADMIN_TOKEN")
    ap.add_argument("--ping-interval", type=float, default=25.0)
    ap.add_argument("--ping-timeout", type=float, default=20.0)
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(4096)
    server = pywsgi.WSGIServer(
        listener,
        build(args.token, args.ping_interval, args.ping_timeout),
        handler_class=WebSocketHandler,
        log=None,
    )
    print(f"READY {listener.getsockname()[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
