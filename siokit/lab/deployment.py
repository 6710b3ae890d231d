"""Where the roles put things on a host, read from the roles' defaults.

Lab code that drives a deployed cluster (siokit bench, the drills) takes these paths from here, so
it never keeps a copy that drifts when a role's default changes.
"""

from __future__ import annotations

from siokit.render import load_defaults


def role_path(name: str) -> str:
    """A role default that is a literal absolute path (e.g. loadgen_siokit_binary)."""
    value = load_defaults().get(name)
    if not isinstance(value, str) or not value.startswith("/") or "{{" in value:
        raise KeyError(f"{name} is not a literal absolute path in the roles' defaults: {value!r}")
    return value
