"""The "/anonymous" namespace: chat messages are relayed under the nickname "Anonymous"."""

from __future__ import annotations

from typing import Any

from app.events.base import SiokitNamespace
from app.events.chat import MAX_TEXT_LEN
from app.rooms import require_dict, require_text

ANONYMOUS = "Anonymous"


class AnonymousNamespace(SiokitNamespace):
    def on_connect(self, auth: Any = None) -> None:
        # Any nickname the client offers is ignored on purpose.
        self.remember(None)

    def on_disconnect(self, reason: Any = None) -> None:
        self.forget(reason)

    def on_chat(self, data: Any = None) -> dict[str, Any]:
        text = require_text(require_dict(data, "chat"), "text", MAX_TEXT_LEN)
        if (refused := self.fanout_refused()) is not None:
            return refused
        message = {"nickname": ANONYMOUS, "text": text, **self.stamp()}
        self.state.socketio.emit("chat", message, skip_sid=self.sid, namespace=self.namespace)
        return {"ok": True, "nickname": ANONYMOUS, "sent_at": message["server_time"]}
