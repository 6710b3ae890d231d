"""Prometheus scrape jobs for a siokit deployment, from the inventory's groups and the capacity plan.

One definition of what the `monitor` hosts scrape, used by the monitoring role (through the filter
plugin `siokit_scrape_jobs`, rendered into templates/prometheus/prometheus.yml.j2) and by the infra
tests, which compare Prometheus' live targets with it. Job names are the ones the alert rules and
the dashboard query (templates/prometheus/siokit-alerts.yml, docs/grafana/siokit.json):

    siokit      every uWSGI instance of every `app` host (its /metrics)
    node        prometheus-node-exporter on every host
    nginx       prometheus-nginx-exporter on every `lb` host (it reads stub_status)
    redis       prometheus-redis-exporter on every `redis` host
    prometheus  Prometheus itself on every `monitor` host
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The groups of a deployment, in the order their hosts are listed in the node job.
HOST_GROUPS = ("lb", "app", "redis", "loadgen", "monitor")


class ScrapeError(ValueError):
    """A host lacks what its targets need (an address, instance ports); the message names it."""


@dataclass(frozen=True)
class ExporterPorts:
    node: int = 9100
    nginx: int = 9113
    redis: int = 9121
    prometheus: int = 9090


def instance_ports(base_port: int, instances_per_host: int) -> list[int]:
    """The ports of one app host's uWSGI instances: `instances_per_host` of them from `base_port`."""
    if instances_per_host < 1:
        raise ScrapeError(f"the plan has {instances_per_host} uWSGI instances per host")
    return list(range(base_port, base_port + instances_per_host))


def _target(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def scrape_jobs(
    addresses: Mapping[str, str],
    groups: Mapping[str, Sequence[str]],
    app_ports: Mapping[str, Sequence[int]],
    ports: ExporterPorts,
) -> list[dict[str, Any]]:
    """Prometheus `scrape_configs` entries (static_configs, a `host` label per inventory host).

    addresses: inventory name -> the address other hosts reach it on (its private address);
    groups: group -> inventory names; app_ports: app host -> its instances' ports.
    A group that is absent or empty contributes no job (a deployment without a monitor group is
    still described; the role only runs Prometheus where that group has hosts).
    """

    def address(host: str) -> str:
        found = addresses.get(host)
        if not found:
            raise ScrapeError(f"{host} has no private address (siokit_host_address): run the plan role first")
        return found

    def job(name: str, per_host: Mapping[str, list[str]]) -> dict[str, Any] | None:
        configs = [{"targets": targets, "labels": {"host": host}} for host, targets in per_host.items() if targets]
        return {"job_name": name, "static_configs": configs} if configs else None

    def members(group: str) -> list[str]:
        return list(groups.get(group) or [])

    every_host = list(dict.fromkeys(host for group in HOST_GROUPS for host in members(group)))
    siokit: dict[str, list[str]] = {}
    for host in members("app"):
        if host not in app_ports or not app_ports[host]:
            raise ScrapeError(f"{host} has no uWSGI instance ports")
        siokit[host] = [_target(address(host), port) for port in app_ports[host]]
    candidates = [
        job("siokit", siokit),
        job("node", {host: [_target(address(host), ports.node)] for host in every_host}),
        job("nginx", {host: [_target(address(host), ports.nginx)] for host in members("lb")}),
        job("redis", {host: [_target(address(host), ports.redis)] for host in members("redis")}),
        job("prometheus", {host: [_target(address(host), ports.prometheus)] for host in members("monitor")}),
    ]
    return [j for j in candidates if j is not None]


def targets_by_job(jobs: Sequence[Mapping[str, Any]]) -> dict[str, set[str]]:
    """job name -> every target address:port of it (what Prometheus' /api/v1/targets should list)."""
    out: dict[str, set[str]] = {}
    for j in jobs:
        for config in j["static_configs"]:
            out.setdefault(str(j["job_name"]), set()).update(config["targets"])
    return out
