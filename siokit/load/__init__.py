"""``siokit load``: a lean Socket.IO load generator (one TCP connection per virtual client)."""
