"""Per-app state shared by the namespaces: config, metrics and the per-socket nicknames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask_socketio import SocketIO

    from app.config import Config
    from app.metrics import Metrics


@dataclass
class AppState:
    config: Config
    metrics: Metrics
    socketio: SocketIO
    # (namespace, sid) -> nickname; local to this instance, dropped on disconnect.
    nicknames: dict[tuple[str, str], str] = field(default_factory=dict)
