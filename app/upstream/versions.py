"""Start-up guard: the upstream versions this package's patches were written and tested against.

Why: every module in app/upstream/ replaces or copies internals (engineio's Socket and uWSGI
driver, socketio's Manager, uWSGI 2.0's websocket behaviour, wsproto's parser state), not public
APIs. A new upstream release can change them silently. SIOKIT_PATCH_MISMATCH chooses what a mismatch does: ``refuse``
(default) stops the service with the versions named; ``fallback`` runs the stock upstream code
(slower, more memory per socket) and logs a warning.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from importlib import metadata

log = logging.getLogger(__name__)

# distribution -> versions the patches were tested with (constraints.txt pins the first).
TESTED: Mapping[str, tuple[str, ...]] = {
    "python-engineio": ("4.15.1",),
    "python-socketio": ("5.18.1",),
    "Flask-SocketIO": ("5.7.0",),
    "uWSGI": ("2.0.31",),
    # app/upstream/ws_reader.py reads FrameProtocol's state to drop it once idle.
    "wsproto": ("1.3.2",),
}
POLICIES = ("refuse", "fallback")


class PatchMismatchError(RuntimeError):
    """An installed upstream version is not one the patches were tested with."""


def installed_version(dist: str) -> str | None:
    if dist == "uWSGI":
        module = sys.modules.get("uwsgi")
        if module is None:
            return None  # not under uWSGI: its patch is not used
        version = getattr(module, "version", None)
        if version is not None:
            return version.decode() if isinstance(version, bytes) else str(version)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def mismatches(version_of: Callable[[str], str | None] | None = None) -> list[str]:
    """One line per upstream package whose installed version the patches were not tested with."""
    version_of = version_of or installed_version
    out = []
    for dist, tested in TESTED.items():
        found = version_of(dist)
        if found is None and dist == "uWSGI":
            continue
        if found not in tested:
            out.append(f"{dist} {found or 'not installed'} (tested: {', '.join(tested)})")
    return out


def patches_allowed(policy: str, version_of: Callable[[str], str | None] | None = None) -> bool:
    """True if app/upstream's patches may be installed; False to run stock upstream code.

    Raises PatchMismatchError under ``refuse`` when a version differs.
    """
    if policy not in POLICIES:
        raise ValueError(f"SIOKIT_PATCH_MISMATCH must be one of {', '.join(POLICIES)}, got {policy!r}")
    found = mismatches(version_of)
    if not found:
        return True
    detail = "; ".join(found)
    if policy == "refuse":
        raise PatchMismatchError(
            f"app/upstream patches were not tested with: {detail}. Pin the tested versions "
            "(constraints.txt), or set SIOKIT_PATCH_MISMATCH=fallback to run the stock upstream code."
        )
    log.warning(
        "!!! app/upstream patches DISABLED (SIOKIT_PATCH_MISMATCH=fallback): not tested with %s. "
        "Running stock python-engineio/python-socketio code: more CPU per message and memory per socket.",
        detail,
    )
    return False
