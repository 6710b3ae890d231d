"""Development server: `python -m app --port 5000` (gevent, no uWSGI)."""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402

from app.config import Config  # noqa: E402
from app.factory import create_app  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO)
    app = create_app(Config.from_env(), async_mode="gevent")
    socketio = app.extensions["socketio"]
    # socketio.run(), not `flask run`: only it starts the gevent websocket server.
    socketio.run(app, host=args.host, port=args.port, debug=args.debug, use_reloader=False)


if __name__ == "__main__":
    main()
