"""Security properties of the rendered deployment, shown with the real processes on loopback.

- Host: nginx closes requests for a host name it does not serve (what a DNS-rebinding page sends),
  answers 421 to a port that is not public, and forwards the Host it validated ($host, lowercased,
  and the public port), which the app's same-origin check compares with Origin.
- /metrics: monitoring networks only (nginx_monitoring_cidrs, default 127.0.0.1).
- Origin: a foreign Origin is refused through nginx, a configured one is accepted.
- TLS with a certificate and key supplied as files (generated here, as an operator would supply
  them): `openssl s_client` is refused TLS 1.0, 1.1 and a weak TLS 1.2 cipher, while the same
  commands succeed against an nginx configured to allow them (so the check can fail); plain HTTP
  is redirected, HSTS is sent over HTTPS only.
- Redis: a password with '@', ':', '/', '"', '\\' and a space carries messages between instances;
  the app's ACL user may publish and subscribe on the Socket.IO channel and do nothing else.
- systemd-analyze security: every unit the kit runs is rated OK (<= 4.9); Debian's bare
  nginx.service is not.
"""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import socketio

from siokit.lab import local
from siokit.lab.local import LocalStack
from siokit.render import render_all

from .test_rendered_configs import deployment_vars

pytestmark = pytest.mark.integration

# Every character that breaks a URL's userinfo or a redis.conf line when not encoded or quoted.
REDIS_PASSWORD = 'p@ss:w/rd "q\\x'
ALLOWED_ORIGIN = "https://chat.example.test"
HANDSHAKE = "/socket.io/?EIO=4&transport=polling"
OPENSSL = shutil.which("openssl") or "openssl"
ANALYZE = shutil.which("systemd-analyze", path="/usr/bin:/bin")
DEBIAN_UNITS = Path("/lib/systemd/system")


def request(
    port: int, path: str, host: str, *, origin: str | None = None, source: str = "127.0.0.1", tls: bool = False
) -> tuple[int | None, dict[str, str], bytes]:
    """GET with an explicit Host (and Origin); status None when nginx closed without an answer."""
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=5, source_address=(source, 0), context=ctx
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    headers = {"Host": host, **({"Origin": origin} if origin else {})}
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    except (http.client.RemoteDisconnected, ConnectionError):
        return None, {}, b""
    finally:
        conn.close()


# ------------------------------------------------------------------ the default stack (plain HTTP)


def test_a_host_nginx_does_not_serve_is_closed_unanswered(stack: LocalStack) -> None:
    # A DNS-rebinding page: its own name in Host and in Origin, which a raw-Host same-origin check passes.
    status, _, _ = request(stack.port, HANDSHAKE, "evil.example", origin="http://evil.example")
    assert status is None, "nginx answered a request for a host it does not serve"
    status, _, _ = request(stack.port, "/healthz", f"evil.example:{stack.port}")
    assert status is None
    status, _, body = request(stack.port, "/healthz", f"127.0.0.1:{stack.port}")
    assert status == 200 and b'"status":"ok"' in body.replace(b" ", b"")


def test_a_port_that_is_not_public_is_refused(stack: LocalStack) -> None:
    status, _, _ = request(stack.port, "/healthz", "127.0.0.1:1")
    assert status == 421


def test_the_app_gets_the_host_nginx_validated(stack: LocalStack) -> None:
    """Same-origin compares Origin with scheme://Host: the Host must be nginx's, not the client's."""
    for host in (f"127.0.0.1:{stack.port}", f"localhost:{stack.port}"):
        status, _, body = request(stack.port, HANDSHAKE, host, origin=f"http://{host}")
        assert status == 200 and body.startswith(b"0{"), (host, status, body)
    # nginx lowercases the name ($host): the raw header would not match the browser's Origin.
    status, _, body = request(stack.port, HANDSHAKE, f"LocalHost:{stack.port}", origin=f"http://localhost:{stack.port}")
    assert status == 200 and body.startswith(b"0{"), (status, body)


def test_a_foreign_origin_is_refused_through_nginx(stack: LocalStack) -> None:
    status, _, body = request(stack.port, HANDSHAKE, f"127.0.0.1:{stack.port}", origin="http://evil.example")
    assert status == 400, (status, body)


def test_metrics_from_loopback_only_by_default(stack: LocalStack) -> None:
    host = f"127.0.0.1:{stack.port}"
    status, _, body = request(stack.port, "/metrics", host, source="127.0.0.1")
    assert status == 200 and b"siokit_" in body
    status, _, _ = request(stack.port, "/metrics", host, source="127.0.0.2")
    assert status == 403, "/metrics answered an address outside the monitoring networks"


# ------------------------------------------------------------------ TLS, HSTS, Origin list, Redis password


def make_certificate(tmp: Path) -> tuple[Path, Path]:
    """An ECDSA certificate and key as an operator would supply them (files, not generated by the kit)."""
    crt, key = tmp / "operator.crt", tmp / "operator.key"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return crt, key


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ports_with_tls() -> tuple[int, int]:
    """A base port for a loopback stack (conftest's rule) whose TLS port, base + 5, is free too."""
    for base in range(18080, 19000, 40):
        if _free(base) and _free(base + 5):
            return base, base + 5
    raise RuntimeError("no free ports for a TLS loopback stack")


def tls_vars(crt: Path, key: Path, tls_port: int) -> dict[str, object]:
    return {
        "nginx_tls_enabled": True,
        "nginx_tls_listen": f"127.0.0.1:{tls_port}",
        "nginx_tls_certificate": str(crt),
        "nginx_tls_certificate_key": str(key),
    }


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, int, Path]]:
    tmp = tmp_path_factory.mktemp("stack-secure")
    crt, key = make_certificate(tmp)
    port, tls_port = ports_with_tls()
    extra = {
        **tls_vars(crt, key, tls_port),
        "nginx_tls_redirect_http": True,
        "nginx_hsts_max_age": 600,
        "app_cors_origins": ALLOWED_ORIGIN,
        "nginx_monitoring_cidrs": ["127.0.0.2/32"],
    }
    stack = LocalStack(
        state_dir=tmp,
        port=port,
        instances=2,
        balance="ip_hash",
        sockets=2000,
        redis_password=REDIS_PASSWORD,
        overrides=extra,
    )
    try:
        local.up(stack)
    except Exception:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(tmp.rglob("*.log")))
        local.down(tmp)
        raise RuntimeError(f"secure loopback stack failed to start\n{logs}") from None
    yield stack, tls_port, crt
    local.down(tmp)


def test_plain_http_is_redirected_to_https(secure: tuple[LocalStack, int, Path]) -> None:
    stack, tls_port, _ = secure
    status, headers, _ = request(stack.port, "/healthz?probe=1", f"localhost:{stack.port}")
    assert status == 301
    assert headers["location"] == f"https://localhost:{tls_port}/healthz?probe=1"
    assert "strict-transport-security" not in headers, "HSTS sent over plain HTTP"


def test_https_serves_the_supplied_certificate_with_hsts(secure: tuple[LocalStack, int, Path]) -> None:
    _, tls_port, crt = secure
    status, headers, body = request(tls_port, "/healthz", f"localhost:{tls_port}", tls=True)
    assert status == 200 and b'"status":"ok"' in body.replace(b" ", b"")
    assert headers.get("strict-transport-security") == "max-age=600"
    served = ssl.get_server_certificate(("127.0.0.1", tls_port))
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(crt.read_text())


def test_configured_origin_accepted_foreign_refused(secure: tuple[LocalStack, int, Path]) -> None:
    _, tls_port, _ = secure
    host = f"localhost:{tls_port}"
    status, _, body = request(tls_port, HANDSHAKE, host, origin=ALLOWED_ORIGIN, tls=True)
    assert status == 200 and body.startswith(b"0{"), (status, body)
    status, _, body = request(tls_port, HANDSHAKE, host, origin="https://evil.example", tls=True)
    assert status == 400, (status, body)


def test_configured_monitoring_network(secure: tuple[LocalStack, int, Path]) -> None:
    _, tls_port, _ = secure
    host = f"localhost:{tls_port}"
    assert request(tls_port, "/metrics", host, source="127.0.0.2", tls=True)[0] == 200
    assert request(tls_port, "/metrics", host, source="127.0.0.1", tls=True)[0] == 403


def s_client(port: int, *args: str) -> bool:
    """True when a TLS handshake with these client options succeeds."""
    r = subprocess.run(
        [OPENSSL, "s_client", "-brief", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *args],
        input="", capture_output=True, text=True, timeout=15,
    )  # fmt: skip
    return r.returncode == 0 and "CONNECTION ESTABLISHED" in r.stderr


# The client is told to offer old protocols and ciphers (@SECLEVEL=0): only the server can refuse them.
OLD = {
    "TLS 1.0": ("-tls1", "-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"),
    "TLS 1.1": ("-tls1_1", "-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"),
    "TLS 1.2 with CBC-SHA1": ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"),
}
MODERN = {
    "TLS 1.2 ECDHE-ECDSA-AES128-GCM-SHA256": ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    "TLS 1.3": ("-tls1_3",),
}


def test_tls_refuses_old_protocols_and_weak_ciphers(secure: tuple[LocalStack, int, Path]) -> None:
    _, tls_port, _ = secure
    accepted = [name for name, args in OLD.items() if s_client(tls_port, *args)]
    assert not accepted, f"nginx accepted {accepted}"
    refused = [name for name, args in MODERN.items() if not s_client(tls_port, *args)]
    assert not refused, f"nginx refused {refused}"


def test_the_tls_check_sees_a_weak_configuration(tmp_path: Path) -> None:
    """The same s_client commands succeed against an nginx told to allow them: the check can fail."""
    crt, key = make_certificate(tmp_path)
    port, tls_port = ports_with_tls()
    weak = {
        **tls_vars(crt, key, tls_port),
        "nginx_tls_protocols": "TLSv1 TLSv1.1 TLSv1.2",
        "nginx_tls_ciphers": "ALL:@SECLEVEL=0",
    }
    stack = LocalStack(state_dir=tmp_path, port=port, app_ports=[port + 2], overrides=weak)
    (tmp_path / "nginx-tmp").mkdir()
    render_all(stack.variables(), stack.rendered)
    subprocess.run(local._nginx_cmd(stack), check=True, capture_output=True)
    pid = int((tmp_path / "nginx.pid").read_text())
    try:
        refused = [name for name, args in OLD.items() if not s_client(tls_port, *args)]
        assert not refused, f"a weak nginx still refused {refused}: the check cannot tell"
    finally:
        local._stop(pid, group=False)


def test_redis_password_with_url_characters_carries_messages(secure: tuple[LocalStack, int, Path]) -> None:
    stack, _, _ = secure
    a_port, b_port = stack.app_ports
    on_b = socketio.Client(reconnection=False)
    admin = socketio.Client(reconnection=False)
    got: list[dict[str, object]] = []
    done = threading.Event()
    on_b.on("broadcast", lambda data: (got.append(data), done.set()))
    # Long-polling straight to each instance: websocket-client would add an Origin this stack's
    # app_cors_origins refuses.
    try:
        on_b.connect(f"http://127.0.0.1:{b_port}", transports=["polling"], wait_timeout=10)
        admin.connect(
            f"http://127.0.0.1:{a_port}",
            transports=["polling"],
            namespaces=["/admin"],
            auth={"token": stack.admin_secret},
            wait_timeout=10,
        )
        ack = admin.call("broadcast", {"seq": 1, "text": "through redis"}, namespace="/admin", timeout=5)
        assert ack["ok"] is True
        assert done.wait(5), "a broadcast from instance A never reached instance B through Redis"
        assert got[0]["text"] == "through redis"
    finally:
        on_b.disconnect()
        admin.disconnect()


def _message_queue_url(stack: LocalStack) -> str:
    env = local._read_env_file(stack.rendered / "uwsgi" / "siokit.env")
    return env["SIOKIT_MESSAGE_QUEUE"]


def test_the_app_redis_user_may_only_use_its_channel(secure: tuple[LocalStack, int, Path]) -> None:
    stack, _, _ = secure
    url = _message_queue_url(stack)
    assert REDIS_PASSWORD not in url, "the password went into the URL unencoded"
    assert urlsplit(url).username == "siokit"
    app_user = redis.Redis.from_url(url)
    assert app_user.ping() is True
    app_user.publish("flask-socketio", "{}")
    for forbidden in (
        lambda: app_user.keys("*"),
        lambda: app_user.config_get("maxclients"),
        lambda: app_user.flushall(),
        lambda: app_user.publish("another-channel", "x"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            forbidden()
    anonymous = redis.Redis(host="127.0.0.1", port=stack.redis_port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()


# ------------------------------------------------------------------ systemd-analyze security


def exposure(root: Path, unit: str) -> float:
    r = subprocess.run(
        [str(ANALYZE), "security", "--offline=true", f"--root={root}", "--no-pager", unit],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout[-2000:] + r.stderr[-2000:]
    return float(m.group(1))


def test_every_unit_is_rated_ok_by_systemd_analyze_security(tmp_path: Path) -> None:
    assert ANALYZE, "systemd-analyze missing: make deps installs systemd"  # a failure, never a skip
    rendered = tmp_path / "rendered"
    render_all(deployment_vars(rendered), rendered)
    root = tmp_path / "root"
    units = root / "etc" / "systemd" / "system"
    (units / "nginx.service.d").mkdir(parents=True)
    for debian in ("nginx.service", "redis-server.service"):
        assert (DEBIAN_UNITS / debian).is_file(), f"{debian} missing: make deps installs nginx and redis-server"
        shutil.copy(DEBIAN_UNITS / debian, units / debian)
    bare_nginx = exposure(root, "nginx.service")
    for dropin in (rendered / "systemd" / "nginx.service.d").iterdir():
        shutil.copy(dropin, units / "nginx.service.d" / dropin.name)
    for unit in ("siokit-uwsgi@.service", "siokit-load.service", "siokit-nginx-errors.service"):
        shutil.copy(rendered / "systemd" / unit, units / unit)
    scores = {
        unit: exposure(root, unit)
        for unit in (
            "nginx.service",
            "siokit-uwsgi@8001.service",
            "siokit-load.service",
            "redis-server.service",
            "siokit-nginx-errors.service",
        )
    }
    print(f"systemd-analyze security: Debian's nginx.service {bare_nginx}, with the kit's drop-ins {scores}")
    assert bare_nginx > 4.9, "Debian's bare nginx.service is rated OK: the control no longer shows anything"
    assert all(score <= 4.9 for score in scores.values()), scores
