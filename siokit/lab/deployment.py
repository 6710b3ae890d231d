"""Where the roles put things on a host, read from the roles' defaults.

Lab code that drives a deployed cluster (siokit bench, the drills), `siokit doctor` and tests/infra
take these paths from here, so none keeps a copy that drifts when a role's default changes.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from siokit.render import LazyVars, load_defaults


def role_path(name: str) -> str:
    """A role default that is an absolute path, resolved as Ansible would (loadgen_siokit_binary is
    "{{ kit_virtualenv }}/bin/siokit")."""
    defaults = load_defaults()
    if name not in defaults:
        raise KeyError(f"{name} is not a default of any role")
    try:
        value = LazyVars(defaults)[name]
    except Exception as exc:  # a default that needs the plan or host facts is not a fixed path
        raise KeyError(f"{name} is not a fixed path in the roles' defaults: {exc}") from exc
    if not isinstance(value, str) or not value.startswith("/"):
        raise KeyError(f"{name} is not an absolute path in the roles' defaults: {value!r}")
    return value


def role_default(name: str) -> str:
    """A role default that is a plain name (a service, a unit), as Ansible would resolve it."""
    defaults = load_defaults()
    if name not in defaults:
        raise KeyError(f"{name} is not a default of any role")
    return str(LazyVars(defaults)[name])


# The units the app role installs, named by their templates (templates/systemd/siokit-uwsgi@.service.j2
# and siokit.target.j2); the role's tasks start them by these names.
UWSGI_UNIT = "siokit-uwsgi@{port}.service"
APP_TARGET = "siokit.target"


@dataclass(frozen=True)
class Layout:
    """Where the roles put what the lab, `siokit doctor` and tests/infra read on a deployed host."""

    plan_file: str
    app_env_file: str
    app_ini_file: str
    app_virtualenv: str
    load_env_file: str
    redis_conf: str
    redis_package: str
    redis_service: str
    nginx_site: str
    nginx_access_log: str
    conntrack_bypass_file: str
    conntrack_bypass_table: str
    conntrack_bypass_unit: str
    uwsgi_unit: str = UWSGI_UNIT
    app_target: str = APP_TARGET

    def uwsgi_ports(self, text: str) -> list[int]:
        """The instance ports named in `text` (e.g. the target's Wants=), sorted."""
        pattern = re.escape(self.uwsgi_unit).replace(re.escape("{port}"), r"(\d+)")
        return sorted(int(p) for p in re.findall(pattern, text))


@functools.cache
def layout() -> Layout:
    """The roles' defaults, read once."""
    return Layout(
        plan_file=role_path("siokit_plan_file"),
        app_env_file=role_path("app_env_file"),
        app_ini_file=role_path("app_ini_file"),
        app_virtualenv=role_path("kit_virtualenv"),
        load_env_file=role_path("loadgen_env_file"),
        redis_conf=role_path("redis_conf_path"),
        redis_package=role_default("redis_package"),
        redis_service=role_default("redis_service"),
        nginx_site=role_path("nginx_site_path"),
        nginx_access_log=role_path("nginx_access_log"),
        conntrack_bypass_file=role_path("tuning_conntrack_bypass_file"),
        conntrack_bypass_table=role_default("tuning_conntrack_bypass_table"),
        conntrack_bypass_unit=role_default("tuning_conntrack_bypass_unit"),
    )
