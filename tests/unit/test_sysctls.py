"""The one sysctl rule: set what the host can take, never lower a limit it has higher."""

from __future__ import annotations

from siokit.sysctls import actions, satisfied


def test_satisfied() -> None:
    assert satisfied("net.core.somaxconn", "131072", "65535")  # a higher limit is kept
    assert not satisfied("net.core.somaxconn", "4096", "65535")
    assert satisfied("net.ipv4.ip_local_port_range", "1024\t65535", "1024 65535")
    assert satisfied("net.ipv4.ip_local_port_range", "1000 65535", "1024 65535")  # wider
    assert not satisfied("net.ipv4.ip_local_port_range", "32768 60999", "1024 65535")
    assert not satisfied("net.ipv4.tcp_fin_timeout", "60", "15")  # not a limit: exact
    assert not satisfied("net.ipv4.tcp_fin_timeout", "10", "15")


def test_actions_apply_skip_and_never_lower() -> None:
    seen = {
        "net.core.somaxconn": ("rw", "131072"),
        "net.ipv4.tcp_fin_timeout": ("rw", "60"),
        "net.ipv4.tcp_tw_reuse": ("ro", "2"),
    }
    out = actions(
        {
            "net.core.somaxconn": 65535,
            "net.ipv4.tcp_fin_timeout": 15,
            "net.ipv4.tcp_tw_reuse": 1,
            "net.netfilter.nf_conntrack_max": 262144,
        },
        seen,
    )
    assert out["apply"] == {"net.ipv4.tcp_fin_timeout": "15"}
    reasons = {s["name"]: s["reason"] for s in out["skipped"]}
    assert reasons["net.core.somaxconn"] == "already 131072 (never lowered)"
    assert reasons["net.ipv4.tcp_tw_reuse"].startswith("read-only here (container)")
    assert reasons["net.netfilter.nf_conntrack_max"] == "not present on this kernel"


def test_tune_host_follows_the_same_rule(tmp_path) -> None:
    """siokit bench's tune_host: sysctls.actions() decides, so a higher host limit is never lowered."""
    from siokit.lab.bench import tune_host

    def put(name: str, value: str) -> None:
        path = tmp_path / name.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")

    put("net.core.somaxconn", "4096")
    put("fs.file-max", "9223372036854775807")
    put("net.ipv4.ip_local_port_range", "32768\t60999")
    wanted = {
        "net.core.somaxconn": "65535",
        "fs.file-max": "2097152",
        "net.ipv4.ip_local_port_range": "1024 65535",
        "net.netfilter.nf_conntrack_max": "800000",
    }
    skipped = tune_host(wanted, proc_sys=tmp_path)
    assert (tmp_path / "net/core/somaxconn").read_text() == "65535"
    assert (tmp_path / "net/ipv4/ip_local_port_range").read_text() == "1024 65535"
    assert (tmp_path / "fs/file-max").read_text().strip() == "9223372036854775807"  # never lowered
    assert skipped == {
        "fs.file-max": "already 9223372036854775807 (never lowered)",
        "net.netfilter.nf_conntrack_max": "not present on this kernel",
    }
