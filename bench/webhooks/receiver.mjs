// The webhook receiver of bench/webhooks/run.sh: answers every delivery 200 at once and
// records when it arrived, the event's own time and its type. Node built-ins only.
//
//   node receiver.mjs [PORT=3995] [HOST=127.0.0.1]
//
// Routes:
//   POST /hook          a delivery (Standard Webhooks): 200, empty body. Recorded: the arrival
//                       time (wall clock with sub-millisecond precision: performance.timeOrigin
//                       + performance.now(), taken when the request's headers arrive), the
//                       JSON body's `timestamp` (RFC 3339 with microseconds: the change's
//                       occurredAt) and `type`. A `webhook-id` seen before (in any phase) is a
//                       duplicate: counted, not recorded again.
//   POST /phase?name=X  starts a new phase: what follows is counted apart (duplicates are still
//                       told apart across phases)
//   GET  /stats         {"phase","received","unique","duplicates","totalReceived","totalDuplicates"}
//   GET  /report        the phase's figures: counts, first and last arrival (epoch ms), latency
//                       (arrival - timestamp) p50/p90/p99/max/mean in ms, types, bodies that
//                       did not parse or had no timestamp, requests without a webhook-id
//   GET  /dump          the phase's deliveries, one JSON array [arrival, timestamp (both epoch
//                       ms), seq] per line, in order of arrival (to look closer at a run)
//   GET  /health        200
import http from "node:http";
import { performance } from "node:perf_hooks";

const args = { ...process.env };
for (const a of process.argv.slice(2)) {
  const i = a.indexOf("=");
  if (i > 0) args[a.slice(0, i)] = a.slice(i + 1);
  else if (/^\d+$/.test(a)) args.PORT = a;
}
const PORT = Number(args.PORT ?? 3995);
const HOST = args.HOST ?? "127.0.0.1";

const now = () => performance.timeOrigin + performance.now(); // wall clock, sub-millisecond

// RFC 3339 with any number of fractional digits; Date.parse alone keeps only milliseconds.
const RFC3339 = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/i;
function epochMs(s) {
  const m = typeof s === "string" ? RFC3339.exec(s) : null;
  if (!m) return NaN;
  const whole = Date.parse(m[1] + (m[3].toUpperCase() === "Z" ? "Z" : m[3]));
  return whole + (m[2] ? Number("0." + m[2]) * 1000 : 0);
}

const seen = new Set(); // webhook-ids, all phases
let totalReceived = 0;
let totalDuplicates = 0;
let phase;
function newPhase(name) {
  phase = {
    name,
    started: now(),
    received: 0,
    unique: 0,
    duplicates: 0,
    noId: 0,
    unparsed: 0,
    first: null,
    last: null,
    lat: [],
    rows: [],
    types: {},
  };
}
newPhase("initial");

function record(t, id, body) {
  totalReceived += 1;
  phase.received += 1;
  if (phase.first === null || t < phase.first) phase.first = t;
  if (phase.last === null || t > phase.last) phase.last = t;
  if (!id) phase.noId += 1;
  else if (seen.has(id)) {
    totalDuplicates += 1;
    phase.duplicates += 1;
    return;
  } else seen.add(id);
  phase.unique += 1;
  let p;
  try {
    p = JSON.parse(body);
  } catch {
    phase.unparsed += 1;
    return;
  }
  const type = typeof p?.type === "string" ? p.type : "?";
  phase.types[type] = (phase.types[type] ?? 0) + 1;
  const at = epochMs(p?.timestamp);
  if (Number.isNaN(at)) phase.unparsed += 1;
  else phase.lat.push(t - at);
  phase.rows.push([t, at, p?.seq ?? null]);
}

function report() {
  const lat = Float64Array.from(phase.lat).sort();
  const q = (x) => (lat.length ? lat[Math.min(lat.length - 1, Math.ceil(x * lat.length) - 1)] : null);
  const r1 = (x) => (x == null ? null : Math.round(x * 10) / 10);
  let sum = 0;
  for (const v of lat) sum += v;
  return {
    phase: phase.name,
    received: phase.received,
    unique: phase.unique,
    duplicates: phase.duplicates,
    totalDuplicates,
    noId: phase.noId,
    unparsed: phase.unparsed,
    firstArrival: phase.first,
    lastArrival: phase.last,
    latencies: lat.length,
    p50: r1(q(0.5)),
    p90: r1(q(0.9)),
    p99: r1(q(0.99)),
    max: r1(lat.length ? lat[lat.length - 1] : null),
    min: r1(lat.length ? lat[0] : null),
    mean: r1(lat.length ? sum / lat.length : null),
    types: phase.types,
  };
}

function json(res, code, v) {
  const b = JSON.stringify(v);
  res.writeHead(code, { "content-type": "application/json", "content-length": Buffer.byteLength(b) });
  res.end(b);
}

const server = http.createServer((req, res) => {
  const t = now();
  const url = new URL(req.url, "http://x");
  if (req.method === "POST" && url.pathname === "/hook") {
    const id = req.headers["webhook-id"];
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      res.writeHead(200, { "content-length": 0 });
      res.end();
      record(t, id, Buffer.concat(chunks).toString("utf8"));
    });
    return;
  }
  req.resume();
  if (req.method === "POST" && url.pathname === "/phase") {
    newPhase(url.searchParams.get("name") ?? "phase");
    return json(res, 200, { phase: phase.name });
  }
  if (url.pathname === "/stats") {
    return json(res, 200, {
      phase: phase.name,
      received: phase.received,
      unique: phase.unique,
      duplicates: phase.duplicates,
      totalReceived,
      totalDuplicates,
    });
  }
  if (url.pathname === "/report") return json(res, 200, report());
  if (url.pathname === "/dump") {
    res.writeHead(200, { "content-type": "application/x-ndjson" });
    return res.end(phase.rows.map((r) => JSON.stringify(r) + "\n").join(""));
  }
  if (url.pathname === "/health") return json(res, 200, { ok: true });
  json(res, 404, { error: "not found" });
});
// The sender keeps its connections open: keep them longer than its idle pool does.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;
server.listen(PORT, HOST, () => process.stderr.write(`receiver: listening on http://${HOST}:${PORT}\n`));
for (const s of ["SIGINT", "SIGTERM"]) process.on(s, () => process.exit(0));
