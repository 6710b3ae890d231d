"""ansible/filter_plugins/siokit.py: the planner as Ansible filters."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from siokit import planner

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("siokit_filter_plugin", ROOT / "ansible/filter_plugins/siokit.py")
assert _spec and _spec.loader
plugin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plugin)

FACTS = {"cores": 2, "memory_gib": 23.4, "nofile_hard": 20000, "somaxconn": 4096}


def hostvars(name: str, **extra: object) -> dict:
    base = {
        "inventory_hostname": name,
        "ansible_processor_vcpus": 2,
        "ansible_memtotal_mb": 24000,
        "siokit_nofile_hard": 20000,
        "siokit_somaxconn": 4096,
        "siokit_host_address": f"10.0.0.{len(name)}",
    }
    base.update(extra)
    return base


def test_filters_are_registered() -> None:
    assert set(plugin.FilterModule().filters()) == {
        "siokit_plan",
        "siokit_host_facts",
        "siokit_sysctl_actions",
        "siokit_upstreams",
        "siokit_scrape_jobs",
        "siokit_python_dependencies",
        "siokit_htpasswd_ssha",
    }


def test_plan_is_the_planners() -> None:
    spec = {"sockets": 160000, "app_hosts": 2, "source_ips": 4, "app": FACTS}
    assert plugin.siokit_plan(spec) == planner.plan_from_mapping(spec)


def test_plan_never_asks_more_than_the_hard_limit() -> None:
    p = plugin.siokit_plan({"sockets": 160000, "app_hosts": 1, "source_ips": 4, "app": FACTS})
    assert p["uwsgi"]["limit_nofile"] <= 20000
    assert p["nginx"]["limit_nofile"] <= 20000
    assert p["loadgen"]["limit_nofile"] <= 20000
    assert p["uwsgi"]["instances_per_host"] * (20000 - planner.FD_RESERVE) >= 160000


def test_impossible_target_fails_with_the_arithmetic() -> None:
    with pytest.raises(AnsibleFilterError, match=r"impossible target: .*source_ips 1 is too few"):
        plugin.siokit_plan({"sockets": 160000, "source_ips": 1, "app": FACTS})


def test_bad_input_names_it() -> None:
    with pytest.raises(AnsibleFilterError, match="bad plan input"):
        plugin.siokit_plan({"sockets": "lots", "app": FACTS})


def test_host_facts_takes_the_weakest_host() -> None:
    facts = plugin.siokit_host_facts(
        [
            hostvars("a", ansible_processor_vcpus=8, siokit_nofile_hard=1048576),
            hostvars("bb", ansible_memtotal_mb=8192, siokit_somaxconn=65535),
        ]
    )
    assert facts == {"cores": 2, "memory_gib": 8.0, "nofile_hard": 20000, "somaxconn": 4096}


def test_host_facts_caps_and_complains() -> None:
    assert plugin.siokit_host_facts([hostvars("a", siokit_nofile_hard=1 << 30)])["nofile_hard"] == 1048576
    with pytest.raises(AnsibleFilterError, match="empty"):
        plugin.siokit_host_facts([])
    with pytest.raises(AnsibleFilterError, match="siokit_nofile_hard"):
        plugin.siokit_host_facts([{"inventory_hostname": "x", "ansible_memtotal_mb": 1}])


def test_sysctl_actions_in_a_container() -> None:
    wanted = {
        "net.core.somaxconn": "65535",
        "fs.nr_open": "1048576",
        "net.ipv4.tcp_rmem": "4096 16384 6291456",
        "net.netfilter.nf_conntrack_max": "262144",
    }
    probe = "net.core.somaxconn\tro\t4096\nfs.nr_open\tro\t1048576\nnet.ipv4.tcp_rmem\tro\t4096  131072 6291456\n"
    out = plugin.siokit_sysctl_actions(wanted, probe)
    assert out["apply"] == {}
    reasons = {s["name"]: s["reason"] for s in out["skipped"]}
    assert reasons["net.core.somaxconn"].startswith("read-only")
    assert reasons["fs.nr_open"].startswith("already 1048576")
    assert reasons["net.netfilter.nf_conntrack_max"] == "not present on this kernel"
    assert len(out["messages"]) == 4


def test_sysctl_actions_on_a_vm_never_lower_a_limit() -> None:
    wanted = {"fs.file-max": "2097152", "net.core.somaxconn": "65535", "net.ipv4.ip_local_port_range": "1024 65535"}
    probe = (
        "fs.file-max\trw\t9223372036854775807\n"
        "net.core.somaxconn\trw\t4096\n"
        "net.ipv4.ip_local_port_range\trw\t32768\t60999\n"
    )
    out = plugin.siokit_sysctl_actions(wanted, probe)
    assert out["apply"] == {"net.core.somaxconn": "65535", "net.ipv4.ip_local_port_range": "1024 65535"}
    assert [s["name"] for s in out["skipped"]] == ["fs.file-max"]


def test_upstreams_cover_every_instance_of_every_host() -> None:
    plan = plugin.siokit_plan({"sockets": 40000, "app_hosts": 2, "source_ips": 1, "app": FACTS})
    n = plan["uwsgi"]["instances_per_host"]
    # A host may move its base port; the number of instances is the plan's, whatever hostvars say.
    hv = {"a": hostvars("a"), "bb": hostvars("bb", app_base_port=9000, app_instances=1)}
    servers = plugin.siokit_upstreams(hv, ["a", "bb"], plan)
    assert servers == [f"10.0.0.1:{8001 + i}" for i in range(n)] + [f"10.0.0.2:{9000 + i}" for i in range(n)]
    with pytest.raises(AnsibleFilterError, match="siokit_host_address"):
        plugin.siokit_upstreams({"c": {}}, ["c"], plan)


def test_scrape_jobs_cover_the_inventory_and_the_plan() -> None:
    """Prometheus scrapes the same instances nginx proxies to, and every exporter of every group."""
    plan = plugin.siokit_plan({"sockets": 40000, "app_hosts": 2, "source_ips": 1, "app": FACTS})
    hv = {name: hostvars(name) for name in ("a", "bb", "ccc", "dddd", "eeeee")}
    hv["bb"]["app_base_port"] = 9000
    groups = {"lb": ["ccc"], "app": ["a", "bb"], "redis": ["dddd"], "loadgen": ["eeeee"], "monitor": ["ccc"]}
    jobs = plugin.siokit_scrape_jobs(hv, groups, plan, {"node": 9101})
    by_job = {j["job_name"]: j for j in jobs}
    assert list(by_job) == ["siokit", "node", "nginx", "redis", "prometheus"]
    siokit = [t for c in by_job["siokit"]["static_configs"] for t in c["targets"]]
    assert siokit == plugin.siokit_upstreams(hv, ["a", "bb"], plan)
    assert [c["labels"]["host"] for c in by_job["siokit"]["static_configs"]] == ["a", "bb"]
    # every host once (the lb is also the monitor here), at the port given
    node = [t for c in by_job["node"]["static_configs"] for t in c["targets"]]
    assert node == ["10.0.0.3:9101", "10.0.0.1:9101", "10.0.0.2:9101", "10.0.0.4:9101", "10.0.0.5:9101"]
    assert by_job["nginx"]["static_configs"] == [{"targets": ["10.0.0.3:9113"], "labels": {"host": "ccc"}}]
    assert by_job["redis"]["static_configs"][0]["targets"] == ["10.0.0.4:9121"]
    assert by_job["prometheus"]["static_configs"][0]["targets"] == ["10.0.0.3:9090"]
    # no monitor group: no prometheus job; a host without an address is named
    assert "prometheus" not in {j["job_name"] for j in plugin.siokit_scrape_jobs(hv, {**groups, "monitor": []}, plan)}
    with pytest.raises(AnsibleFilterError, match="eeeee has no private address"):
        plugin.siokit_scrape_jobs({**hv, "eeeee": {}}, groups, plan)


def test_python_dependencies_are_pyprojects_list() -> None:
    """The kit role installs pyproject.toml's dependencies and its uwsgi extra: one list."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = plugin.siokit_python_dependencies(str(ROOT / "pyproject.toml"), ["uwsgi"])
    assert deps == project["dependencies"] + project["optional-dependencies"]["uwsgi"]
    assert "python-engineio>=4.2.1" in deps and deps[-1] == "uwsgi"
    with pytest.raises(AnsibleFilterError, match="no optional dependencies"):
        plugin.siokit_python_dependencies(str(ROOT / "pyproject.toml"), ["nope"])


def test_htpasswd_filter_is_the_renderers() -> None:
    # Ansible's template module and siokit render hash the Admin UI's password with one function.
    from siokit import htpasswd

    assert plugin.FilterModule().filters()["siokit_htpasswd_ssha"] is htpasswd.ssha
