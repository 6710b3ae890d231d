"""siokit's Flask-SocketIO service.

`create_app` is resolved lazily (PEP 562) so that importing `app.wsgi` or running `python -m app`
imports nothing heavy before gevent's monkey-patching, which must come first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.factory import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from app.factory import create_app

        return create_app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
