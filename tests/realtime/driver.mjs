// A line-driven Socket.IO client for LexiFlow's realtime tests: the Rust test writes one JSON
// command per line on stdin and reads one JSON report per line on stdout. Every client is the
// real npm `socket.io-client`, as a browser or a Node integration would use it.
//
// Commands:
//   {"op":"connect","id":"a","url":"http://127.0.0.1:PORT/events","auth":{...},
//    "headers":{...},"transports":["websocket"]}
//     -> {"id":"a","event":"connect"} or {"id":"a","event":"connect_error","message":"..."}
//   {"op":"emit","id":"a","event":"subscribe:case","data":{...},"ack":7}
//     -> {"id":"a","ack":7,"reply":{...}}   (or "error":"timeout" after 5 s)
//   {"op":"close","id":"a"} -> {"id":"a","event":"closed"}
// Every event a client receives is reported as {"id":"a","event":NAME,"args":[...]};
// a disconnect as {"id":"a","event":"disconnect","reason":"..."}.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const sockets = new Map();
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

function connect(c) {
  const opts = {
    auth: c.auth ?? {},
    transports: c.transports ?? ["websocket"],
    reconnection: false,
    forceNew: true,
    timeout: 5000,
  };
  if (c.headers) opts.extraHeaders = c.headers;
  const s = io(c.url, opts);
  sockets.set(c.id, s);
  s.on("connect", () => out({ id: c.id, event: "connect", transport: s.io.engine.transport.name }));
  s.on("connect_error", (err) => out({ id: c.id, event: "connect_error", message: err.message }));
  s.on("disconnect", (reason) => out({ id: c.id, event: "disconnect", reason }));
  s.onAny((event, ...args) => out({ id: c.id, event, args }));
}

async function emit(c) {
  const s = sockets.get(c.id);
  if (!s) return out({ id: c.id, ack: c.ack, error: "no such client" });
  if (c.ack === undefined) return s.emit(c.event, c.data);
  try {
    const reply = await s.timeout(5000).emitWithAck(c.event, c.data);
    out({ id: c.id, ack: c.ack, reply });
  } catch (e) {
    out({ id: c.id, ack: c.ack, error: String(e.message ?? e) });
  }
}

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const c = JSON.parse(line);
  if (c.op === "connect") connect(c);
  else if (c.op === "emit") emit(c);
  else if (c.op === "close") {
    sockets.get(c.id)?.close();
    sockets.delete(c.id);
    out({ id: c.id, event: "closed" });
  }
});
rl.on("close", () => {
  for (const s of sockets.values()) s.close();
  process.exit(0);
});
out({ event: "ready" });
