// The clients of bench/realtime/run.sh: N real npm socket.io-client sockets (WebSocket only, no
// reconnection, one connection each), all following one case; measures how long each
// `case:updated` took to reach each of them.
//
//   node clients.mjs URL=http://127.0.0.1:3991 TOKEN=... CASE_ID=... N=1000 EXPECT=1000 TIMEOUT=120
//
// Every KEY=VALUE argument may also be given in the environment (arguments win):
//   URL       the server's base URL; clients connect to URL/events (required)
//   TOKEN     the handshake's auth.token (required)
//   CASE_ID   the case to subscribe to (required)
//   N         clients (1000)
//   EXPECT    case:updated events each client should receive and record (1000)
//   SKIP      events each client receives first and does not record, a warm-up (0)
//   TIMEOUT   seconds to wait for the events once every client is ready (120)
//   WORKERS   threads the clients are spread over (2): one thread receiving a broadcast to 1000
//             clients handles 1000 messages one after the other, so the last one's latency
//             includes the client's own work on the 999 before it
//   BATCH     clients opened at once, over all threads; the next batch starts when this one
//             is subscribed (50)
//   CONNECT_TIMEOUT  seconds a client may take to connect, get `connected` and its ack (20)
//   COMMITS   the file fire.mjs writes with when each change committed (its COMMITS): latency
//             is then also measured from the commit ("fromCommit"). Without it, "fromCommit"
//             is measured from occurredAt, which for the Node baseline is the moment it emits.
//             The change's number is read from the payload's data.title ("Bench <i>").
//
// Stdout, one JSON line each:
//   {"ready":<clients subscribed>,"failed":<clients that could not>,"seconds":<to open them>,...}
//   {"clients":N,"failed":k,"disconnected":d,"expected":N*EXPECT,"received":R,"extra":x,
//    "p50":..,"p90":..,"p99":..,"p999":..,"max":..,"mean":..,"seconds":..,"timedOut":bool,
//    "fromCommit":{"basis":"commit"|"occurredAt","matched":..,"p50":..,...,"mean":..}}
// Latencies in ms, one decimal: the client's wall clock at the event's arrival minus the
// payload's occurredAt (both servers run on this machine, so they share the clock). A client
// that fails to connect or subscribe is counted in "failed", one that drops later in
// "disconnected"; their missing events are missing from "received". The reasons are in
// "errors" ({message: count}). Progress goes to stderr. Exits 0 unless the arguments are bad.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { io } from "socket.io-client";

const now = () => performance.timeOrigin + performance.now(); // wall clock, sub-millisecond
const r1 = (x) => Math.round(x * 10) / 10;
const log = (s) => process.stderr.write(`clients: ${s}\n`);

if (isMainThread) await main();
else await worker(workerData);

async function main() {
  const args = { ...process.env };
  for (const a of process.argv.slice(2)) {
    const i = a.indexOf("=");
    if (i > 0) args[a.slice(0, i)] = a.slice(i + 1);
  }
  const need = (k) => {
    if (!args[k]) {
      process.stderr.write(`clients.mjs: ${k} is required\n`);
      process.exit(2);
    }
    return args[k];
  };
  const cfg = {
    url: need("URL").replace(/\/+$/, ""),
    token: need("TOKEN"),
    caseId: need("CASE_ID"),
    expect: Number(args.EXPECT ?? 1000),
    skip: Number(args.SKIP ?? 0),
    connectTimeout: Number(args.CONNECT_TIMEOUT ?? 20),
  };
  const commitsFile = args.COMMITS ?? "";
  const n = Number(args.N ?? 1000);
  const timeout = Number(args.TIMEOUT ?? 120);
  const workers = Math.max(1, Math.min(n, Number(args.WORKERS ?? 2)));
  const batch = Math.max(1, Number(args.BATCH ?? 50));
  const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

  const t0 = now();
  const threads = [];
  for (let w = 0; w < workers; w++) {
    // Client k goes to thread k % workers.
    const count = Math.floor(n / workers) + (w < n % workers ? 1 : 0);
    const batchHere = Math.max(1, Math.round(batch / workers));
    const t = new Worker(new URL(import.meta.url), { workerData: { ...cfg, id: w, n: count, batch: batchHere } });
    threads.push(
      new Promise((resolve, reject) => {
        const st = { t, ready: null, result: null, resolveResult: null };
        st.resultP = new Promise((r) => (st.resolveResult = r));
        t.on("message", (m) => {
          if (m.type === "ready") {
            st.ready = m;
            resolve(st);
          } else if (m.type === "result") st.resolveResult(m);
          else if (m.type === "log") log(`[${w}] ${m.text}`);
        });
        t.on("error", (e) => {
          log(`[${w}] thread failed: ${e?.stack ?? e}`);
          reject(e);
        });
        // A thread that ends without its result (it crashed) must not leave us waiting.
        t.on("exit", (code) =>
          st.resolveResult({
            lat: new Float64Array(0),
            recv: new Float64Array(0),
            idx: new Int32Array(0),
            extra: 0,
            unparsed: 0,
            disconnected: 0,
            timedOut: false,
            errors: { [`client thread ${w} exited (${code}) without its result`]: 1 },
          }),
        );
      }),
    );
  }
  const sts = await Promise.all(threads);
  const merge = (into, errs) => {
    for (const [k, v] of Object.entries(errs)) into[k] = (into[k] ?? 0) + v;
    return into;
  };
  const readyErrors = sts.reduce((e, s) => merge(e, s.ready.errors), {});
  const ready = sts.reduce((a, s) => a + s.ready.ready, 0);
  const failed = sts.reduce((a, s) => a + s.ready.failed, 0);
  if (failed) log(`failures: ${JSON.stringify(readyErrors)}`);
  const collectStart = now();
  for (const s of sts) s.t.postMessage({ type: "collect", timeout });
  out({ ready, failed, seconds: r1((collectStart - t0) / 1000), errors: readyErrors });

  const results = await Promise.all(sts.map((s) => s.resultP));
  const collectSeconds = r1((now() - collectStart) / 1000);
  let total = 0;
  for (const r of results) total += r.lat.length;
  const v = new Float64Array(total);
  let off = 0;
  for (const r of results) {
    v.set(r.lat, off);
    off += r.lat.length;
  }
  const stats = (v) => {
    v.sort();
    let sum = 0;
    for (let k = 0; k < v.length; k++) sum += v[k];
    const pct = (p) => (v.length ? r1(v[Math.min(v.length - 1, Math.max(0, Math.ceil(p * v.length) - 1))]) : null);
    return {
      p50: pct(0.5),
      p90: pct(0.9),
      p99: pct(0.99),
      p999: pct(0.999),
      max: v.length ? r1(v[v.length - 1]) : null,
      mean: v.length ? r1(sum / v.length) : null,
    };
  };
  // From the commit: each receipt minus its change's commit, as fire.mjs recorded it.
  let fromCommit;
  if (commitsFile) {
    let commits = null;
    for (let waited = 0; waited < 60000 && commits === null; waited += 100) {
      try {
        commits = JSON.parse(readFileSync(commitsFile, "utf8"));
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const c = [];
    for (const r of results)
      for (let k = 0; k < r.recv.length; k++) {
        const at = r.idx[k] >= 0 ? commits?.[r.idx[k]] : null;
        if (typeof at === "number") c.push(r.recv[k] - at);
      }
    fromCommit = { basis: "commit", matched: c.length, ...stats(Float64Array.from(c)) };
  } else {
    fromCommit = { basis: "occurredAt", matched: total, ...stats(Float64Array.from(v)) };
  }
  out({
    clients: n,
    failed,
    disconnected: results.reduce((a, r) => a + r.disconnected, 0),
    expected: n * cfg.expect,
    received: total,
    extra: results.reduce((a, r) => a + r.extra, 0),
    unparsed: results.reduce((a, r) => a + r.unparsed, 0),
    ...stats(v),
    seconds: collectSeconds,
    timedOut: results.some((r) => r.timedOut),
    workers,
    errors: results.reduce((e, r) => merge(e, r.errors), {}),
    fromCommit,
  });
  for (const s of sts) s.t.terminate();
  process.stdout.write("", () => process.exit(0));
}

// RFC 3339 to epoch ms, keeping sub-millisecond digits (Date.parse drops them, and it is only
// required to understand milliseconds). Falls back to Date.parse.
const RFC3339 = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)$/i;
function epochMs(s) {
  const m = typeof s === "string" ? RFC3339.exec(s) : null;
  if (!m) return Date.parse(s);
  const whole = Date.parse(m[1] + (m[3].toUpperCase() === "Z" ? "Z" : m[3]));
  return whole + (m[2] ? Number("0." + m[2]) * 1000 : 0);
}

// One thread's share of the clients.
async function worker({ url, token, caseId, expect, skip, connectTimeout, n, batch }) {
  const post = (m, transfer) => parentPort.postMessage(m, transfer);
  const lat = new Float64Array(n * expect);
  const recv = new Float64Array(n * expect); // wall clock at arrival
  const idx = new Int32Array(n * expect); // the change's number, from data.title; -1 if none
  let recorded = 0;
  let extra = 0;
  let unparsed = 0;
  const counts = new Int32Array(n); // case:updated events received, per client (warm-up included)
  const state = new Array(n).fill("new"); // new | ready | failed | gone
  const errors = {};
  const sockets = [];
  let readyCount = 0;
  let failedCount = 0;
  let disconnected = 0;
  let collecting = false;
  let finished = false;
  const err = (why) => (errors[why] = (errors[why] ?? 0) + 1);

  function onEvent(i, p) {
    const t = now();
    const c = ++counts[i];
    if (c <= skip) return;
    if (c > skip + expect) {
      extra += 1;
      return;
    }
    const at = epochMs(p?.occurredAt);
    if (Number.isNaN(at)) unparsed += 1;
    else {
      const m = /^Bench (\d+)$/.exec(p?.data?.title ?? "");
      recv[recorded] = t;
      idx[recorded] = m ? Number(m[1]) : -1;
      lat[recorded++] = t - at;
    }
    if (c === skip + expect) maybeDone();
  }

  function open(i) {
    return new Promise((resolve) => {
      const s = io(`${url}/events`, {
        auth: { token },
        transports: ["websocket"],
        reconnection: false,
        forceNew: true, // one WebSocket per client, not one shared by all
        timeout: connectTimeout * 1000,
      });
      sockets[i] = s;
      let settled = false;
      const settle = (ok, why) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (ok) {
          state[i] = "ready";
          readyCount += 1;
        } else {
          err(why);
          state[i] = "failed";
          failedCount += 1;
          s.close();
        }
        resolve();
      };
      const timer = setTimeout(() => settle(false, "timed out before the subscription was acknowledged"), connectTimeout * 1000);
      s.on("connect_error", (e) => settle(false, `connect_error: ${e?.message ?? e}`));
      s.on("connected", async () => {
        try {
          const ack = await s.timeout(connectTimeout * 1000).emitWithAck("subscribe:case", { caseId });
          if (ack?.status === "subscribed") settle(true);
          else settle(false, `subscribe ack: ${JSON.stringify(ack)}`.slice(0, 200));
        } catch (e) {
          settle(false, `subscribe: ${e?.message ?? e}`);
        }
      });
      s.on("case:updated", (p) => onEvent(i, p));
      s.on("disconnect", (reason) => {
        if (finished) return; // our own close at the end
        if (state[i] !== "ready") {
          settle(false, `disconnect before subscribing: ${reason}`);
          return;
        }
        state[i] = "gone";
        disconnected += 1;
        err(`disconnect: ${reason}`);
        maybeDone();
      });
    });
  }

  function maybeDone() {
    if (!collecting || finished) return;
    // Done when every client either has its events or can no longer get them.
    for (let i = 0; i < n; i++) if (state[i] === "ready" && counts[i] < skip + expect) return;
    finish(false);
  }

  function finish(timedOut) {
    if (finished) return;
    finished = true;
    for (const s of sockets) s?.close();
    const out = lat.slice(0, recorded);
    const outRecv = recv.slice(0, recorded);
    const outIdx = idx.slice(0, recorded);
    post({ type: "result", lat: out, recv: outRecv, idx: outIdx, extra, unparsed, disconnected, timedOut, errors }, [
      out.buffer,
      outRecv.buffer,
      outIdx.buffer,
    ]);
  }

  for (let start = 0; start < n; start += batch) {
    const group = [];
    for (let i = start; i < Math.min(n, start + batch); i++) group.push(open(i));
    await Promise.all(group);
    if ((start / batch) % 8 === 7 || start + batch >= n) {
      post({ type: "log", text: `${readyCount} subscribed, ${failedCount} failed of ${Math.min(n, start + batch)}` });
    }
  }
  parentPort.on("message", (m) => {
    if (m.type !== "collect") return;
    collecting = true;
    setTimeout(() => finish(true), m.timeout * 1000).unref();
    maybeDone();
  });
  post({ type: "ready", ready: readyCount, failed: failedCount, errors: { ...errors } });
}
