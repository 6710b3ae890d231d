// Reference Socket.IO 4 server for siokit's load benchmark (the yardstick: memory per socket,
// connect rate). Same events as app/ and bench/py_server.py:
//   "/"      echo      -> ack {data, server_time}
//   "/admin" broadcast -> (auth {token}) emits "broadcast" {seq, text, sent_at} to every "/" client
// Usage: node server.js --port 18100 [--host 127.0.0.1] [--token T, default $SIOKIT_ADMIN_TOKEN] [--ping-interval 25]
// Prints "READY <port>" when listening; logs "RSS <bytes> SOCKETS <n>" on SIGUSR2.
// GET /healthz answers {"connected": n, "sockets": {"/": n, "/admin": m}} like the app's, so that
// siokit's benchmark reads the server's own socket count beside the load generator's.
"use strict";

const http = require("http");
const { Server } = require("socket.io");

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const host = arg("host", "127.0.0.1");
const port = parseInt(arg("port", "18100"), 10);
const token = arg("token", process.env.SIOKIT_ADMIN_TOKEN);
if (!token) {
  console.error("server.js: set SIOKIT_ADMIN_TOKEN (or --token) for the /admin namespace");
  process.exit(2);
}
const pingInterval = Math.round(parseFloat(arg("ping-interval", "25")) * 1000);
const pingTimeout = Math.round(parseFloat(arg("ping-timeout", "20")) * 1000);

const httpServer = http.createServer((req, res) => {
  if (req.url !== "/healthz") {
    res.writeHead(404);
    res.end();
    return;
  }
  const sockets = { "/": io.of("/").sockets.size, "/admin": io.of("/admin").sockets.size };
  res.writeHead(200, { "Content-Type": "application/json" });
  res.end(JSON.stringify({ status: "ok", connected: sockets["/"] + sockets["/admin"], sockets }));
});
const io = new Server(httpServer, {
  pingInterval,
  pingTimeout,
  perMessageDeflate: false,
  httpCompression: false,
  cors: { origin: "*" },
});

io.of("/").on("connection", (socket) => {
  socket.on("echo", (data, ack) => {
    if (typeof ack === "function") ack({ data, server_time: Date.now() / 1000 });
  });
});

const admin = io.of("/admin");
admin.use((socket, next) => {
  const auth = socket.handshake.auth || {};
  if (auth.token === token) return next();
  return next(new Error("unauthorized"));
});
admin.on("connection", (socket) => {
  socket.on("broadcast", (data, ack) => {
    const body = data && typeof data === "object" ? data : {};
    const msg = { seq: body.seq ?? null, text: body.text ?? "", sent_at: Date.now() / 1000 };
    io.of("/").emit("broadcast", msg);
    if (typeof ack === "function") ack({ seq: msg.seq });
  });
});

process.on("SIGUSR2", () => {
  console.log(`RSS ${process.memoryUsage().rss} SOCKETS ${io.of("/").sockets.size}`);
});
process.on("SIGTERM", () => process.exit(0));

httpServer.listen({ host, port, backlog: 4096 }, () => {
  console.log(`READY ${httpServer.address().port}`);
});
