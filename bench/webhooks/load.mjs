// The load of bench/webhooks/run.sh: creates cases, each of which makes one `case.created`
// webhook delivery. Node built-ins only.
//
//   node load.mjs URL=http://127.0.0.1:3994 TOKEN=... MODE=saturate N=10000 C=16 TAG=s
//   node load.mjs URL=http://127.0.0.1:3994 TOKEN=... MODE=rate N=2000 RATE=100 TAG=r
//
// Every KEY=VALUE argument may also be given in the environment (arguments win):
//   MODE      saturate: N requests as fast as possible, C in flight (16)
//             rate:     N requests, request i due at start + i / RATE s (computed from the
//                       start, so the rate does not drift); at most INFLIGHT (64) in flight, a
//                       send due while they are all busy waits and goes late ("late" counts
//                       sends more than 5 ms behind their time, "maxLagMs" is the worst)
//   N         requests;  TAG  part of the case numbers (B-<TAG>-<pid>-<i>, unique per run)
// Each request is POST URL/api/v1/cases {"caseNumber":"B-...","title":"Bench","type":"civil"}
// with the bearer TOKEN, over keep-alive connections (node:http Agent).
//
// Prints one JSON line on stdout: {"mode","sent","ok","non2xx","errors","statuses",
// "firstSentAt" (epoch ms, when the first request was sent), "lastAnsweredAt", "seconds",
// "rate" (saturate: requests answered per second; rate: requests sent per second), "late",
// "maxLagMs", "requestP50Ms", "requestP99Ms"}. The first few failures (non-2xx or network
// errors) are described on stderr.
import http from "node:http";
import { performance } from "node:perf_hooks";

const args = { ...process.env };
for (const a of process.argv.slice(2)) {
  const i = a.indexOf("=");
  if (i > 0) args[a.slice(0, i)] = a.slice(i + 1);
}
const URL_BASE = (args.URL ?? "").replace(/\/+$/, "");
const TOKEN = args.TOKEN ?? "";
const MODE = args.MODE ?? "saturate";
const N = Number(args.N ?? 1000);
const C = Math.max(1, Number(args.C ?? 16));
const RATE = Number(args.RATE ?? 100);
const INFLIGHT = Math.max(1, Number(args.INFLIGHT ?? 64));
const TAG = args.TAG ?? MODE[0];
if (!URL_BASE || !TOKEN || !(N > 0) || (MODE !== "saturate" && MODE !== "rate") || (MODE === "rate" && !(RATE > 0))) {
  process.stderr.write("load.mjs: needs URL=... TOKEN=... N>0 MODE=saturate|rate (RATE>0 for rate)\n");
  process.exit(2);
}

const now = () => performance.timeOrigin + performance.now(); // wall clock, sub-millisecond
const target = new URL(`${URL_BASE}/api/v1/cases`);
const agent = new http.Agent({ keepAlive: true, maxSockets: MODE === "saturate" ? C : INFLIGHT });
const headers = { "content-type": "application/json", authorization: `Bearer ${TOKEN}` };

function request(body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      target,
      { method: "POST", headers: { ...headers, "content-length": Buffer.byteLength(body) }, agent },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      },
    );
    req.setTimeout(60_000, () => req.destroy(new Error("no answer in 60 s")));
    req.on("error", reject);
    req.end(body);
  });
}

let ok = 0;
let non2xx = 0;
let errors = 0;
let reported = 0;
const statuses = {};
const times = [];
let firstSentAt = null;
let lastAnsweredAt = null;

async function send(i) {
  const t0 = performance.now();
  if (firstSentAt === null) firstSentAt = now();
  const body = JSON.stringify({ caseNumber: `B-${TAG}-${process.pid}-${i}`, title: "Bench", type: "civil" });
  try {
    const res = await request(body);
    times.push(performance.now() - t0);
    statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    if (res.status >= 200 && res.status <= 299) ok += 1;
    else {
      non2xx += 1;
      if (reported++ < 5) process.stderr.write(`load: request ${i}: ${res.status} ${res.text.slice(0, 300)}\n`);
    }
  } catch (e) {
    errors += 1;
    if (reported++ < 5) process.stderr.write(`load: request ${i}: ${e?.cause?.message ?? e?.message ?? e}\n`);
  } finally {
    lastAnsweredAt = now();
  }
}

const start = performance.now();
let late = 0;
let maxLag = 0;
let lastSend = start;
if (MODE === "saturate") {
  let next = 0;
  const worker = async () => {
    while (next < N) await send(next++);
  };
  await Promise.all(Array.from({ length: Math.min(C, N) }, worker));
} else {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const waiters = [];
  let inflight = 0;
  const pending = [];
  for (let i = 0; i < N; i++) {
    const due = start + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    while (inflight >= INFLIGHT) await new Promise((r) => waiters.push(r));
    const lag = performance.now() - due;
    // setTimeout fires a little after its time: a send counts as late only past 5 ms.
    if (lag > 5) late += 1;
    if (lag > maxLag) maxLag = lag;
    inflight += 1;
    lastSend = performance.now();
    pending.push(
      send(i).finally(() => {
        inflight -= 1;
        waiters.shift()?.();
      }),
    );
  }
  await Promise.all(pending);
}
agent.destroy();
const seconds = (performance.now() - start) / 1000;
times.sort((a, b) => a - b);
const pct = (q) => (times.length ? Math.round(times[Math.min(times.length - 1, Math.ceil(q * times.length) - 1)] * 10) / 10 : null);
process.stdout.write(
  JSON.stringify({
    mode: MODE,
    sent: N,
    ok,
    non2xx,
    errors,
    statuses,
    firstSentAt,
    lastAnsweredAt,
    seconds: Math.round(seconds * 1000) / 1000,
    // Saturation: requests answered per second. At a fixed rate: requests sent per second
    // (N / (last send - start + 1 / RATE)), which is RATE unless the sends fell behind.
    rate: Math.round((MODE === "saturate" ? N / seconds : N / ((lastSend - start) / 1000 + 1 / RATE)) * 10) / 10,
    late,
    maxLagMs: Math.round(maxLag * 10) / 10,
    requestP50Ms: pct(0.5),
    requestP99Ms: pct(0.99),
  }) + "\n",
);
