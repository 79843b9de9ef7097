// The trigger of bench/realtime/run.sh: M requests at a fixed rate, each of which makes the
// server broadcast one `case:updated` to the case's followers.
//
//   node fire.mjs MODE=lexiflow URL=http://127.0.0.1:3991 TOKEN=... CASE_ID=... M=1000 RATE=50
//   node fire.mjs MODE=node     URL=http://127.0.0.1:3992 CASE_ID=... M=1000 RATE=50
//
// Every KEY=VALUE argument may also be given in the environment (arguments win):
//   MODE      lexiflow: PATCH URL/api/v1/cases/CASE_ID {"title":"Bench <i>"} with the bearer TOKEN
//             node:     POST URL/emit?caseId=CASE_ID {"title":"Bench <i>"}
//   M         requests (1000);  RATE  per second (50)
//   INFLIGHT  requests in flight at most (4); a send due while they are all busy waits for one
//             and goes late ("late" counts sends more than 5 ms behind
//             their time, "maxLagMs" is the worst)
//   COMMITS   a file to write, when done, with when each change committed: a JSON array whose
//             element i is request i's commit on the wall clock in epoch ms (null when its answer
//             had no `Server-Timing: commit;dur=…`), estimated as the moment the request was
//             sent plus the server's `commit;dur` (time from the request's arrival to its
//             commit). The estimate is early by the request's way to the server, so latencies
//             measured from it are, if anything, too long. Written whole, then renamed.
//
// Request i is due at start + i / RATE seconds, computed from the start, so the rate does not
// drift. Prints {"sent":M,"failed":k,"seconds":..,"rate":..,"late":..,"maxLagMs":..} on stdout;
// a failed request (non-2xx or a network error) is also described on stderr (the first few).
import { renameSync, writeFileSync } from "node:fs";
import http from "node:http";
import { performance } from "node:perf_hooks";

const args = { ...process.env };
for (const a of process.argv.slice(2)) {
  const i = a.indexOf("=");
  if (i > 0) args[a.slice(0, i)] = a.slice(i + 1);
}
const MODE = args.MODE ?? "lexiflow";
const URL_BASE = (args.URL ?? "").replace(/\/+$/, "");
const TOKEN = args.TOKEN ?? "";
const CASE_ID = args.CASE_ID ?? "";
const M = Number(args.M ?? 1000);
const RATE = Number(args.RATE ?? 50);
const INFLIGHT = Math.max(1, Number(args.INFLIGHT ?? 4));
const COMMITS = args.COMMITS ?? "";
if (!URL_BASE || !CASE_ID || !(RATE > 0) || (MODE !== "lexiflow" && MODE !== "node") || (MODE === "lexiflow" && !TOKEN)) {
  process.stderr.write("fire.mjs: needs MODE=lexiflow|node URL=... CASE_ID=... (TOKEN=... for lexiflow), RATE > 0\n");
  process.exit(2);
}

const target =
  MODE === "lexiflow"
    ? { method: "PATCH", url: `${URL_BASE}/api/v1/cases/${encodeURIComponent(CASE_ID)}` }
    : { method: "POST", url: `${URL_BASE}/emit?caseId=${encodeURIComponent(CASE_ID)}` };
const headers = { "content-type": "application/json" };
if (MODE === "lexiflow") headers.authorization = `Bearer ${TOKEN}`;

// node:http with keep-alive rather than fetch: a third of the CPU per request (this process
// shares the machine with the server and the clients).
const agent = new http.Agent({ keepAlive: true, maxSockets: INFLIGHT });

function request(body) {
  return new Promise((resolve, reject) => {
    const req = http.request(target.url, { method: target.method, headers, agent }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString("utf8"), timing: res.headers["server-timing"] }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

let failed = 0;
let reported = 0;
let inflight = 0;
let late = 0;
let maxLag = 0;
const times = [];
const committedAt = new Array(M).fill(null);
const wallNow = () => performance.timeOrigin + performance.now();
const waiters = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function send(i) {
  const t0 = performance.now();
  const sentAt = wallNow();
  try {
    const res = await request(JSON.stringify({ title: `Bench ${i}` }));
    times.push(performance.now() - t0);
    const dur = /(?:^|,)\s*commit;dur=([0-9.]+)/.exec(res.timing ?? "");
    if (dur) committedAt[i] = sentAt + Number(dur[1]);
    if (res.status < 200 || res.status > 299) {
      failed += 1;
      if (reported++ < 5) process.stderr.write(`fire: request ${i}: ${res.status} ${res.text.slice(0, 300)}\n`);
    }
  } catch (e) {
    failed += 1;
    if (reported++ < 5) process.stderr.write(`fire: request ${i}: ${e?.cause?.message ?? e?.message ?? e}\n`);
  } finally {
    inflight -= 1;
    waiters.shift()?.();
  }
}

const start = performance.now();
const pending = [];
for (let i = 0; i < M; i++) {
  const due = start + (i * 1000) / RATE;
  const wait = due - performance.now();
  if (wait > 0) await sleep(wait);
  while (inflight >= INFLIGHT) await new Promise((r) => waiters.push(r));
  const lag = performance.now() - due;
  // setTimeout fires a little after its time: a send counts as late only past 5 ms.
  if (lag > 5) late += 1;
  if (lag > maxLag) maxLag = lag;
  inflight += 1;
  pending.push(send(i));
}
await Promise.all(pending);
agent.destroy();
if (COMMITS) {
  writeFileSync(`${COMMITS}.tmp`, JSON.stringify(committedAt));
  renameSync(`${COMMITS}.tmp`, COMMITS);
}
const seconds = (performance.now() - start) / 1000;
// How long each change took to answer: for LexiFlow the write and its commit, which the
// clients' latency (from occurredAt, stamped inside the transaction) also contains.
times.sort((a, b) => a - b);
const pct = (q) => (times.length ? Math.round(times[Math.min(times.length - 1, Math.floor(q * times.length))] * 10) / 10 : null);
process.stdout.write(
  JSON.stringify({
    sent: M,
    failed,
    seconds: Math.round(seconds * 100) / 100,
    rate: Math.round((M / seconds) * 10) / 10,
    late,
    maxLagMs: Math.round(maxLag * 10) / 10,
    requestP50Ms: pct(0.5),
    requestP99Ms: pct(0.99),
  }) + "\n",
);
