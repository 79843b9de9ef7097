// The baseline of bench/realtime/run.sh: a plain socket.io 4.8 server doing what LexiFlow's
// gateway does for the benchmark, and nothing more — namespace /events, `connected` on connect,
// `subscribe:case {caseId}` joins the room `case:<caseId>` and acks {status:"subscribed", caseId},
// and `POST /emit?caseId=X` (body {"title": ...}) broadcasts `case:updated` to that room with
// LexiFlow's payload shape. Any auth.token is accepted: this is the baseline, not a security test.
//
//   node node-server.mjs [PORT]        (or PORT=3992 node node-server.mjs; default 3992)
//
// GET /health answers 200 (for run.sh's wait_http).
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { performance } from "node:perf_hooks";
import { readFileSync } from "node:fs";
import { Server } from "socket.io";

// The same payload as LexiFlow's: the case's public view as LexiFlow returned it (run.sh saves
// it to the file named by CASE_VIEW), with the new title; {title} alone when there is none.
let caseView = {};
if (process.env.CASE_VIEW) {
  try {
    caseView = JSON.parse(readFileSync(process.env.CASE_VIEW, "utf8"));
  } catch {
    caseView = {};
  }
}

const port = Number(process.argv[2] ?? process.env.PORT ?? 3992);
const firmId = randomUUID();
let seq = 0;

// The wall clock to the microsecond, as RFC 3339 (LexiFlow's occurredAt has microseconds;
// `new Date().toISOString()` would truncate to the millisecond, making every latency measured
// against it up to 1 ms longer than it was).
function nowMicros() {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  const ms = Math.floor(us / 1000);
  return new Date(ms).toISOString().slice(0, 23) + String(us % 1000).padStart(3, "0") + "Z";
}

const http = createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (req.method === "GET" && url.pathname === "/health") {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok");
    return;
  }
  if (req.method !== "POST" || url.pathname !== "/emit") {
    // /socket.io/ requests never get here: engine.io answers them first.
    res.writeHead(404).end();
    return;
  }
  const caseId = url.searchParams.get("caseId");
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let body = {};
    try {
      if (chunks.length) body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (!caseId) {
      res.writeHead(400).end();
      return;
    }
    seq += 1;
    const correlationId = req.headers["x-request-id"] ?? randomUUID();
    ns.to("case:" + caseId).emit("case:updated", {
      type: "case:updated",
      seq,
      firmId,
      caseId,
      data: { ...caseView, title: body.title ?? null },
      occurredAt: nowMicros(),
      correlationId,
    });
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ seq }));
  });
});

// LexiFlow's settings where they matter: ping 25 s / 20 s, no per-message deflate (socket.io's
// default too), 64 KiB messages at most; both transports, as LexiFlow serves both.
const io = new Server(http, {
  pingInterval: 25000,
  pingTimeout: 20000,
  perMessageDeflate: false,
  maxHttpBufferSize: 65536,
  serveClient: false,
});
const ns = io.of("/events");

ns.on("connection", (socket) => {
  socket.emit("connected", {
    message: "connected to the socket.io baseline",
    userId: String(socket.handshake.auth?.token ?? "anonymous").slice(0, 16),
    timestamp: new Date().toISOString(),
  });
  socket.on("subscribe:case", (msg, ack) => {
    const caseId = msg?.caseId;
    if (typeof caseId !== "string" || !caseId) {
      if (typeof ack === "function") ack({ status: "error", error: { code: "VALIDATION_FAILED" } });
      return;
    }
    socket.join("case:" + caseId);
    if (typeof ack === "function") ack({ status: "subscribed", caseId });
  });
});

http.listen(port, "127.0.0.1", () => {
  process.stderr.write(`node socket.io baseline listening on 127.0.0.1:${port}\n`);
});

const stop = () => {
  io.close();
  http.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
