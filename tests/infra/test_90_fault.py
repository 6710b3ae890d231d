"""The suite catches a real fault: stop one uWSGI instance, watch the check fail, restore it.

Runs last (file order). The instance is restarted in a finally block, and the test ends only when
the same check passes again, so the cluster is left as it was found.
"""

from __future__ import annotations

import pytest
from conftest import PATHS, UWSGI_UNIT, planned_uwsgi_ports, wait_until
from test_20_services import check_instance


@pytest.mark.destructive
@pytest.mark.group("app")
def test_stopped_instance_is_caught(node):
    ports = planned_uwsgi_ports(node)
    port = ports[-1]
    unit = UWSGI_UNIT.format(port=port)
    check_instance(node, port)  # healthy before
    try:
        r = node.run(f"systemctl stop {unit}")
        assert r.rc == 0, r.stderr
        with pytest.raises(AssertionError) as caught:
            check_instance(node, port)
        assert unit in str(caught.value) or str(port) in str(caught.value)
    finally:
        node.run(f"systemctl start {unit}")
    wait_until(lambda: check_instance(node, port), timeout=30)


@pytest.mark.destructive
@pytest.mark.group("lb")
def test_broken_nginx_config_is_caught(node):
    """A syntax error in the site file makes `nginx -t` fail; the file is restored byte for byte."""
    site = PATHS["nginx_site"]
    assert node.file(site).exists, f"{site} missing"
    backup = "/root/siokit.conf.infra-test"
    assert node.run(f"cp -p {site} {backup}").rc == 0
    try:
        node.run(f"echo 'this is not nginx syntax' >> {site}")
        r = node.run("nginx -t")
        assert r.rc != 0, "nginx -t accepted a broken configuration"
    finally:
        node.run(f"cp -p {backup} {site} && rm -f {backup}")
    assert node.run("nginx -t").rc == 0
