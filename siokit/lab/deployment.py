"""Where the roles put things on a host, read from the roles' defaults.

Lab code that drives a deployed cluster (siokit bench, the drills) takes these paths from here, so
it never keeps a copy that drifts when a role's default changes.
"""

from __future__ import annotations

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
