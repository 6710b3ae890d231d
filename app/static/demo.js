/* Demo client for the siokit chat: shows the transport really in use and the serving instance. */
(function () {
  "use strict";
  let socket = null;
  const $ = (id) => document.getElementById(id);

  function log(text, cls) {
    const li = document.createElement("li");
    li.textContent = new Date().toLocaleTimeString() + "  " + text;
    if (cls) li.className = cls;
    $("log").prepend(li);
  }

  function showTransport() {
    // The transport can change after connect (polling -> websocket upgrade).
    $("transport").textContent = socket && socket.io.engine ? socket.io.engine.transport.name : "-";
  }

  function ack(what) {
    return (res) => { if (!res || !res.ok) log(what + " failed: " + (res && res.error), "error"); };
  }

  $("connect-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (socket) socket.disconnect();
    const nickname = $("nickname").value.trim();
    socket = io("/", { auth: nickname ? { nickname } : {} });
    socket.on("connect", () => {
      $("state").textContent = "connected";
      showTransport();
      socket.io.engine.on("upgrade", showTransport);
      socket.emit("whoami", (m) => {
        $("instance").textContent = m.instance;
        log("connected as " + m.nickname + " (sid " + m.sid + ")");
      });
    });
    socket.on("disconnect", (reason) => { $("state").textContent = "disconnected (" + reason + ")"; });
    socket.on("connect_error", (err) => log("connect error: " + err.message, "error"));
    socket.on("chat", (m) => log(m.nickname + ": " + m.text));
    socket.on("room_message", (m) => log("[" + m.room + "] " + m.nickname + ": " + m.text));
    socket.on("broadcast", (m) => log("[admin] " + m.text));
  });

  $("room-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!socket) return log("connect first", "error");
    const room = $("room").value.trim();
    socket.emit("join", { room }, (res) => {
      if (!res.ok) return log("join failed: " + res.error, "error");
      const opt = document.createElement("option");
      opt.value = opt.textContent = room;
      $("target").appendChild(opt);
      log("joined " + room);
    });
  });

  $("chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!socket) return log("connect first", "error");
    const text = $("text").value;
    const room = $("target").value;
    if (room) socket.emit("room_message", { room, text }, ack("room message"));
    else socket.emit("chat", { text }, ack("chat"));
    log("me" + (room ? " [" + room + "]" : "") + ": " + text, "me");
    $("text").value = "";
  });
})();
