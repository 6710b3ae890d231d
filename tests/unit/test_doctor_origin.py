"""siokit doctor's Origin header: what a browser sends, so python-engineio's same-origin check
(Origin == scheme://Host) passes for the deployment's own URL."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from siokit.doctor.client import Public


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://lb", "http://lb"),
        # The Vagrant VMs' lb URL: Origin "http://10.211.0.10:80" against Host "10.211.0.10" was refused.
        ("http://10.211.0.10:80", "http://10.211.0.10"),
        ("https://example.org:443/", "https://example.org"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://example.org:8443", "https://example.org:8443"),
        ("http://[::1]:80", "http://[::1]"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_origin_omits_the_default_port(url: str, origin: str) -> None:
    assert Public(url).origin == origin


def test_origin_matches_the_host_header_sent() -> None:
    seen: dict[str, str | None] = {}

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen["host"], seen["origin"] = self.headers["Host"], self.headers["Origin"]
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        pub = Public(f"http://127.0.0.1:{server.server_address[1]}")
        status, _ = pub.request("GET", "transport=polling", headers={"Origin": pub.origin})
    finally:
        server.server_close()
    assert status == 200
    assert seen["origin"] == f"http://{seen['host']}", seen
