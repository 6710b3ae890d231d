"""Render siokit's templates exactly as Ansible's `template` module does.

The templates in `templates/` are the single source of truth; the defaults are the Ansible roles'
`defaults/main.yml` and `ansible/group_vars/all/`. Variables are resolved lazily and natively, as
Ansible does: a default like "{{ siokit_plan.uwsgi.async_cores }}" is only evaluated when used,
and "{{ range(...) | list }}" yields a list, not its text.
"""

from __future__ import annotations

import ast
import json
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from jinja2.nativetypes import NativeEnvironment, native_concat

from siokit import htpasswd, planner
from siokit.facts import local_facts

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
ANSIBLE_DIR = ROOT / "ansible"
REFUSED_FILE = ANSIBLE_DIR / "roles" / "plan" / "vars" / "main.yml"
# Ansible's per-template override line: "#jinja2: trim_blocks: True, lstrip_blocks: True".
JINJA2_OVERRIDE = "#jinja2:"


@dataclass(frozen=True)
class TemplateSpec:
    source: str  # relative to templates/
    output: str  # relative to the render output directory


TEMPLATES: tuple[TemplateSpec, ...] = (
    TemplateSpec("nginx/nginx.conf.j2", "nginx/nginx.conf"),
    TemplateSpec("nginx/siokit.conf.j2", "nginx/siokit.conf"),
    TemplateSpec("nginx/admin-ui.htpasswd.j2", "nginx/siokit-admin-ui.htpasswd"),
    TemplateSpec("systemd/nginx-limits.conf.j2", "systemd/nginx.service.d/siokit-limits.conf"),
    TemplateSpec("systemd/nginx-hardening.conf.j2", "systemd/nginx.service.d/siokit-hardening.conf"),
    TemplateSpec("systemd/siokit-nginx-errors.service.j2", "systemd/siokit-nginx-errors.service"),
    TemplateSpec("systemd/siokit-uwsgi@.service.j2", "systemd/siokit-uwsgi@.service"),
    TemplateSpec("systemd/siokit.target.j2", "systemd/siokit.target"),
    TemplateSpec("systemd/siokit-load.service.j2", "systemd/siokit-load.service"),
    TemplateSpec("uwsgi/siokit.ini.j2", "uwsgi/siokit.ini"),
    TemplateSpec("uwsgi/siokit.env.j2", "uwsgi/siokit.env"),
    TemplateSpec("redis/redis.conf.j2", "redis/redis.conf"),
    TemplateSpec("systemd/redis-limits.conf.j2", "systemd/redis-server.service.d/siokit-limits.conf"),
    TemplateSpec("systemd/siokit-load.env.j2", "systemd/siokit-load.env"),
    TemplateSpec("systemd/siokit-source-ips.service.j2", "systemd/siokit-source-ips.service"),
    TemplateSpec("systemd/modules-load.conf.j2", "modules-load.d/siokit.conf"),
    TemplateSpec("nftables/siokit-notrack.nft.j2", "siokit/notrack.nft"),
    TemplateSpec("systemd/siokit-notrack.service.j2", "systemd/siokit-notrack.service"),
    TemplateSpec("kit/siokit-src.pth.j2", "kit/siokit-src.pth"),
    TemplateSpec("kit/siokit.j2", "kit/bin/siokit"),
    TemplateSpec("siokit/plan.json.j2", "siokit/plan.json"),
    TemplateSpec("prometheus/prometheus.yml.j2", "prometheus/prometheus.yml"),
    TemplateSpec("prometheus/prometheus.env.j2", "default/prometheus"),
    TemplateSpec("prometheus/node-exporter.env.j2", "default/prometheus-node-exporter"),
    TemplateSpec("prometheus/nginx-exporter.env.j2", "default/prometheus-nginx-exporter"),
    TemplateSpec("prometheus/redis-exporter.env.j2", "default/prometheus-redis-exporter"),
    TemplateSpec("systemd/prometheus-limits.conf.j2", "systemd/prometheus.service.d/siokit-limits.conf"),
)


# Files the roles install from templates/ as they are (ansible.builtin.copy): the alert rules carry
# Prometheus' own {{ $labels }} templating, which Jinja must not touch.
COPIED: tuple[TemplateSpec, ...] = (TemplateSpec("prometheus/siokit-alerts.yml", "prometheus/rules/siokit-alerts.yml"),)


class RenderError(ValueError):
    """A variable is missing or a template cannot be rendered; the message names it."""


def load_defaults() -> dict[str, Any]:
    """The kit-wide group_vars, then every role's defaults, as Ansible would see them."""
    merged: dict[str, Any] = {}
    files = sorted((ANSIBLE_DIR / "group_vars" / "all").glob("*.yml"))
    files += sorted(ANSIBLE_DIR.glob("roles/*/defaults/main.yml"))
    for path in files:
        data = yaml.safe_load(path.read_text()) or {}
        merged.update(data)
    return merged


def _split_override(text: str) -> tuple[dict[str, Any], str]:
    if not text.startswith(JINJA2_OVERRIDE):
        return {}, text
    line, _, rest = text.partition("\n")
    options: dict[str, Any] = {}
    for pair in line[len(JINJA2_OVERRIDE) :].split(","):
        key, _, value = pair.partition(":")
        options[key.strip()] = ast.literal_eval(value.strip())
    return options, rest


class LazyVars(Mapping[str, Any]):
    """Variables whose templated values are rendered (natively) on first use."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._raw = dict(raw)
        self._done: dict[str, Any] = {}
        self._busy: set[str] = set()
        self._env = NativeEnvironment(undefined=StrictUndefined)

    def __getitem__(self, key: str) -> Any:
        if key in self._done:
            return self._done[key]
        if key not in self._raw:
            if key in self._env.globals:
                return self._env.globals[key]
            raise KeyError(key)
        if key in self._busy:
            raise RenderError(f"variable {key!r} refers to itself")
        self._busy.add(key)
        try:
            value = self._resolve(self._raw[key], key)
        finally:
            self._busy.discard(key)
        self._done[key] = value
        return value

    def _resolve(self, value: Any, name: str) -> Any:
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            template = self._env.from_string(value)
            try:
                # shared=True hands this mapping to Jinja as the parent scope, so lookups stay lazy.
                ctx = template.new_context(self, shared=True)  # type: ignore[arg-type]
                return native_concat(template.root_render_func(ctx))
            except Exception as exc:  # jinja raises many types; name the variable
                raise RenderError(f"cannot resolve variable {name!r} ({value!r}): {exc}") from exc
        if isinstance(value, list):
            return [self._resolve(v, name) for v in value]
        if isinstance(value, dict):
            return {k: self._resolve(v, name) for k, v in value.items()}
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._raw or key in self._env.globals

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def refused_variables() -> dict[str, str]:
    """Variables that would change a planned value, and the planner input to pin instead.

    The plan role's list (ansible/roles/plan/vars/main.yml): one list for Ansible and the renderer.
    """
    data = yaml.safe_load(REFUSED_FILE.read_text())
    return dict(data["plan_refused_variables"])


def build_vars(user_vars: Mapping[str, Any]) -> LazyVars:
    """Defaults, overlaid with the user's variables, plus `siokit_plan`.

    `siokit_plan` is the plan document when given (checked: its schema version and shape), else
    planned once here from `siokit_plan_input`. A variable that would change a planned value behind
    the planner's back is refused, as the plan role refuses it in an inventory.
    The facts Ansible knows about the host being configured default to this machine's name and
    127.0.0.1 (so the uWSGI instances bind loopback, never every address, unless told otherwise).
    """
    refused = refused_variables()
    for name in user_vars:
        if name in refused:
            raise RenderError(
                f"{name} is no longer a setting: the capacity planner sizes it (siokit_plan), and the "
                f"templates read the plan. Pin planner input instead, where it is checked with the "
                f"arithmetic: siokit_plan_input: {refused[name]}"
            )
    merged = load_defaults()
    merged.setdefault("inventory_hostname", socket.gethostname())
    merged.setdefault("siokit_host_address", "127.0.0.1")
    # What the plan role measures on a host (set_fact), taken from this machine.
    merged.setdefault("siokit_nofile_hard", local_facts()["nofile_hard"])
    merged.setdefault("siokit_in_container", False)
    merged.update(user_vars)
    if "siokit_plan" in merged:
        document = merged["siokit_plan"]
        plan = document if isinstance(document, planner.Plan) else planner.Plan.from_dict(document)
    else:
        spec = dict(merged.get("siokit_plan_input") or {})
        spec.setdefault("sockets", merged["siokit_target_sockets"])
        spec.setdefault("source_ips", merged.get("siokit_loadgen_source_ips", 1))
        spec.setdefault("app", local_facts())
        plan = planner.Plan.from_dict(planner.plan_from_mapping(spec))
    merged["siokit_plan"] = plan.to_dict()
    return LazyVars(merged)


def to_nice_json(value: Any, indent: int = 4, sort_keys: bool = True) -> str:
    """Ansible's `to_nice_json` filter (ansible.plugins.filter.core): the same json.dumps arguments."""
    return json.dumps(value, indent=indent, sort_keys=sort_keys, separators=(",", ": "))


def render_template(source: str, variables: Mapping[str, Any]) -> str:
    text = (TEMPLATES_DIR / source).read_text()
    options, body = _split_override(text)
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=StrictUndefined,
        trim_blocks=options.get("trim_blocks", True),
        lstrip_blocks=options.get("lstrip_blocks", False),
        keep_trailing_newline=True,
    )
    env.filters["to_nice_json"] = to_nice_json
    # The kit's filter plugin filters that templates use (ansible/filter_plugins/siokit.py).
    env.filters["siokit_htpasswd_ssha"] = htpasswd.ssha
    template = env.from_string(body)
    try:
        ctx = template.new_context(variables, shared=True)  # type: ignore[arg-type]  # lazy parent scope
        return env.concat(template.root_render_func(ctx))  # type: ignore[attr-defined]
    except Exception as exc:
        raise RenderError(f"{source}: {exc}") from exc


def render_all(user_vars: Mapping[str, Any], outdir: Path) -> list[Path]:
    variables = build_vars(user_vars)
    written = []
    for spec in TEMPLATES:
        target = outdir / spec.output
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render_template(spec.source, variables))
        written.append(target)
    for spec in COPIED:
        target = outdir / spec.output
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((TEMPLATES_DIR / spec.source).read_bytes())
        written.append(target)
    return written
