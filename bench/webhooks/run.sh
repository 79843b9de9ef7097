#!/usr/bin/env bash
# The webhooks benchmark (issue 16). For each backend (PostgreSQL, SQLite) it starts the release
# build of LexiFlow on a fresh database, as deployed in the benchmarks (bench/lib.sh's full_env)
# plus WEBHOOK_ALLOW_PRIVATE=true, since the receiver listens on loopback:
#
#   deliveries  a Node receiver (receiver.mjs: answers 200 at once, records each arrival) is
#               subscribed to case.created; then
#               1. saturation: N cases created as fast as possible, C requests in flight
#                  (load.mjs); waits until the receiver has N deliveries; deliveries/s =
#                  N / (last arrival - first POST sent)
#               2. below saturation: M cases at RATE per second (each due at start + i/RATE)
#               3. backlog: the webhooks queue paused, N cases created, the queue resumed;
#                  deliveries/s = N / (last arrival - resume): the pipeline without the
#                  requests competing for the cores
#               each with latency p50/p99/max = arrival - the event's `timestamp` (the change's
#               occurredAt, stamped inside the writing transaction), duplicates (by webhook-id)
#               and missing deliveries, and the server's own count of deliveries and jobs
#   apikey      GET /api/v1/cases/{id} under wrk, alternately with `Authorization: Bearer <JWT>`
#               and `X-API-Key: lf_...` (scope cases:read), ROUNDS interleaved rounds
#
# Then the targets, each met or NOT met: PostgreSQL saturation >= 1000 deliveries/s; p99 below
# saturation < 1000 ms on each backend; no duplicates, no missing deliveries; API key req/s >=
# 0.95 x JWT req/s (median of the rounds). See bench/webhooks/README.md.
#
#   bench/webhooks/run.sh                                       # both backends, both parts
#   BACKENDS=sqlite N=500 M=200 DUR=5s ROUNDS=1 bench/webhooks/run.sh   # a quick look
#   PARTS=apikey BACKENDS=postgres bench/webhooks/run.sh
#
# Env: BACKENDS ("postgres sqlite"), PARTS ("deliveries apikey"),
#      N (10000 cases, saturation and backlog), C (16 in flight), PHASES ("backlog": the third
#      phase, the delivery pipeline alone; "" to skip it), M (2000 cases, below saturation),
#      RATE (100 per second), INFLIGHT (64: most requests in flight at RATE),
#      TIMEOUT (s to wait for a phase's deliveries once its requests are answered; 300),
#      SETTLE (s waited after the last phase for late duplicates; 2),
#      DUR (15s), WARMUP (3s per credential, not recorded), ROUNDS (3), THREADS (2), CONNS (64),
#      PORT_LEXIFLOW (3994), PORT_RECEIVER (3995),
#      PG_URL (postgres://postgres@127.0.0.1:5432; database lexiflow_webhooks is re-created),
#      CARGO_TARGET_DIR ($HOME/.cache/lexiflow-target), LEXIFLOW_BIN (its release/lexiflow),
#      BUILD (0: use the existing release binary; 1: cargo build --release first).
# The server's webhook settings are left at their defaults (printed in the header).
# Needs: node, curl, python3, psql (PostgreSQL), wrk (apikey; Debian: apt-get install wrk).
# Output is also kept in bench/.state/webhooks-<time>.txt.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STATE="$ROOT/bench/.state"
mkdir -p "$STATE"

BACKENDS=${BACKENDS:-"postgres sqlite"}
PARTS=${PARTS:-"deliveries apikey"}
N=${N:-10000}
PHASES=${PHASES:-"backlog"}
C=${C:-16}
M=${M:-2000}
RATE=${RATE:-100}
INFLIGHT=${INFLIGHT:-64}
TIMEOUT=${TIMEOUT:-300}
SETTLE=${SETTLE:-2}
DUR=${DUR:-15s}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
PORT_LEXIFLOW=${PORT_LEXIFLOW:-3994}
PORT_RECEIVER=${PORT_RECEIVER:-3995}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
BUILD=${BUILD:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lexiflow-target}
BIN=${LEXIFLOW_BIN:-$CARGO_TARGET_DIR/release/lexiflow}
. "$ROOT/bench/lib.sh"

for b in $BACKENDS; do
  case $b in postgres | sqlite) ;; *) echo "error: unknown backend '$b' (postgres, sqlite)" >&2; exit 1 ;; esac
done
for p in $PARTS; do
  case $p in deliveries | apikey) ;; *) echo "error: unknown part '$p' (deliveries, apikey)" >&2; exit 1 ;; esac
done
need=(node curl python3)
case " $BACKENDS " in *" postgres "*) need+=(psql) ;; esac
case " $PARTS " in *" apikey "*) need+=(wrk) ;; esac
[ "$BUILD" = 1 ] && need+=(cargo)
for c in "${need[@]}"; do
  command -v "$c" >/dev/null || { echo "error: $c not found (Debian: apt-get install wrk curl python3 postgresql-client nodejs)" >&2; exit 1; }
done
if [ "$BUILD" = 1 ]; then
  echo "== building (release)"
  cargo build --release --locked --quiet --manifest-path "$ROOT/Cargo.toml" --bin lexiflow
fi
[ -x "$BIN" ] || {
  echo "error: no release binary at $BIN; build it (cargo build --release --bin lexiflow) or run with BUILD=1" >&2
  exit 1
}

OUT="$STATE/webhooks-$(date -u +%Y%m%dT%H%M%SZ).txt"
RESULTS="$STATE/webhooks-results.jsonl"
: >"$RESULTS"
exec > >(tee "$OUT") 2>&1

echo "== webhooks benchmark $(date -u +%FT%TZ) on $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== BACKENDS=\"$BACKENDS\" PARTS=\"$PARTS\" N=$N C=$C M=$M RATE=$RATE/s INFLIGHT=$INFLIGHT DUR=$DUR WARMUP=$WARMUP ROUNDS=$ROUNDS THREADS=$THREADS CONNS=$CONNS"
echo "== binary $BIN ($(date -u -r "$BIN" +%FT%TZ))"
echo "== server (defaults, not changed here): deliveries on the in-process job worker, queue webhooks, concurrency 8;" \
  "dispatcher polls every WEBHOOK_POLL_MS=${WEBHOOK_POLL_MS:-1000} ms, woken by commits; retry base WEBHOOK_RETRY_BASE_MS=${WEBHOOK_RETRY_BASE_MS:-30000} ms"
track_processes

# start_server BACKEND PART: a fresh database and LexiFlow on it; sets SERVER_PID, BASE, TOKEN, DB_URL,
# DATA and LOG.
start_server() {
  local backend=$1 part=$2 reg
  DATA="$STATE/data-webhooks-$backend"
  DB_URL=$(fresh_database "$backend" "$DATA" lexiflow_webhooks)
  full_env "$DB_URL" "$DATA"
  LOG="$STATE/webhooks-lexiflow-$backend-$part.log"
  BASE="http://127.0.0.1:$PORT_LEXIFLOW"
  env "${FULL_ENV[@]}" PORT=$PORT_LEXIFLOW WEBHOOK_ALLOW_PRIVATE=true "$BIN" serve >"$LOG" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_http "$BASE/health/liveness" "$SERVER_PID" || { echo "error: LexiFlow did not start"; tail -20 "$LOG"; exit 1; }
  reg=$(post "$BASE/api/v1/auth/register" \
    '{"firmName":"Bench","email":"bench@bench.test","password":"correct horse battery staple","firstName":"B","lastName":"Ench"}') ||
    { echo "error: registering the firm failed: $reg"; exit 1; }
  TOKEN=$(jget "$reg" data.accessToken)
  [ -n "$TOKEN" ] || { echo "error: no access token in: $reg"; exit 1; }
}

# log_summary: the server log's warnings and errors, counted, the first few messages shown.
log_summary() {
  local w e
  w=$(grep -c '"level":"WARN"' "$LOG" || true)
  e=$(grep -c '"level":"ERROR"' "$LOG" || true)
  echo "   server log: ${w:-0} warnings, ${e:-0} errors ($LOG)"
  grep -E '"level":"(WARN|ERROR)"' "$LOG" | node -e 'const seen = new Map();
    for (const l of require("node:fs").readFileSync(0, "utf8").split("\n").filter(Boolean)) {
      let m; try { const j = JSON.parse(l); m = `${j.level} ${j.message}${j.error ? ": " + j.error : ""}`; } catch { m = l; }
      seen.set(m, (seen.get(m) ?? 0) + 1);
    }
    for (const [m, n] of [...seen].slice(0, 5)) console.log(`     ${n} x ${m.slice(0, 200)}`);' || true
}

# route_missing BODY: whether an answer says the route does not exist (a binary from before
# webhooks and API keys).
route_missing() { case $1 in *'"RESOURCE_NOT_FOUND"'*'no route'*) return 0 ;; *) return 1 ;; esac; }

# server_counts BACKEND: the server's own view, read from its database: deliveries by status and
# webhook jobs by state, each with how many took more than one attempt.
server_counts() {
  local sql="SELECT 'deliveries ' || status, count(*), sum(CASE WHEN attempts > 1 THEN 1 ELSE 0 END)
      FROM webhook_deliveries GROUP BY status
    UNION ALL SELECT 'jobs ' || state, count(*), sum(CASE WHEN attempts > 1 THEN 1 ELSE 0 END)
      FROM queue_jobs WHERE queue = 'webhooks' GROUP BY state"
  if [ "$1" = postgres ]; then
    psql -X -q -A -t -F $'\t' "$DB_URL" -c "$sql" 2>&1 || true
  else
    python3 - "$DATA/lexiflow.db" "$sql" <<'PY' 2>&1 || true
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=10)
for row in db.execute(sys.argv[2]):
    print("\t".join(str(x) for x in row))
PY
  fi
}

# wait_deliveries EXPECTED: until the receiver's phase has EXPECTED distinct deliveries, or
# TIMEOUT seconds; prints the stats at the end.
wait_deliveries() {
  local want=$1 deadline=$((SECONDS + TIMEOUT)) stats unique=0
  while :; do
    stats=$(curl -fsS --max-time 5 "http://127.0.0.1:$PORT_RECEIVER/stats")
    unique=$(jget "$stats" unique)
    [ "$unique" -ge "$want" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "error: LexiFlow died"; tail -20 "$LOG"; exit 1; }
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "   timed out after ${TIMEOUT}s with $unique/$want deliveries"
      break
    fi
    sleep 0.2
  done
}

# phase NAME MODE COUNT: one phase of the deliveries part; appends its record to RESULTS.
phase() {
  local name=$1 mode=$2 count=$3 backend=$4 lout="$STATE/webhooks-load.out" load report cpu0 cpu1 lpid
  curl -fsS --max-time 5 -X POST "http://127.0.0.1:$PORT_RECEIVER/phase?name=$name" >/dev/null
  cpu0=$(cpu_seconds "$SERVER_PID")
  node "$HERE/load.mjs" URL="$BASE" TOKEN="$TOKEN" MODE="$mode" N="$count" C="$C" RATE="$RATE" INFLIGHT="$INFLIGHT" \
    TAG="$name" >"$lout" &
  lpid=$!
  PIDS+=("$lpid")
  wait "$lpid" || { echo "error: the load failed"; exit 1; }
  forget "$lpid"
  load=$(tail -n1 "$lout")
  wait_deliveries "$count"
  cpu1=$(cpu_seconds "$SERVER_PID")
  report=$(curl -fsS --max-time 10 "http://127.0.0.1:$PORT_RECEIVER/report")
  local dump="$STATE/webhooks-dump-$backend-$name.ndjson"
  curl -fsS --max-time 10 "http://127.0.0.1:$PORT_RECEIVER/dump" >"$dump" || : >"$dump"
  node -e 'const [backend, name, count, load, report, c0, c1, dump] = process.argv.slice(1);
    const l = JSON.parse(load), r = JSON.parse(report), f = (x, d = 1) => (x == null ? "-" : Number(x).toFixed(d));
    const span = r.lastArrival == null ? null : (r.lastArrival - l.firstSentAt) / 1000;
    // Deliveries per second while the requests ran, and after (the backlog drained alone).
    const at = require("node:fs").readFileSync(dump, "utf8").split("\n").filter(Boolean).map((x) => JSON.parse(x)[0]);
    const during = at.filter((t) => t <= l.lastAnsweredAt).length;
    const rateDuring = during / ((l.lastAnsweredAt - l.firstSentAt) / 1000);
    const rateAfter = r.lastArrival > l.lastAnsweredAt ? (at.length - during) / ((r.lastArrival - l.lastAnsweredAt) / 1000) : null;
    const rec = { part: "deliveries", backend, phase: name, expected: +count, load: l, receiver: r,
      seconds: span, deliveriesPerSec: span ? r.unique / span : null, missing: Math.max(0, count - r.unique),
      drainMs: r.lastArrival == null ? null : r.lastArrival - l.lastAnsweredAt, cpu: +(c1 - c0).toFixed(2),
      rateDuring, rateAfter };
    console.log(`   requests: ${l.ok}/${l.sent} ok in ${f(l.seconds, 2)} s = ${f(l.rate)}/s; non-2xx ${l.non2xx}, errors ${l.errors}` +
      `; answer p50 ${f(l.requestP50Ms)} ms p99 ${f(l.requestP99Ms)} ms` + (l.mode === "rate" ? `; late ${l.late} (worst ${f(l.maxLagMs)} ms)` : ""));
    console.log(`   deliveries: ${r.unique}/${count} in ${f(span, 2)} s from the first request = ${f(rec.deliveriesPerSec)}/s` +
      ` (last arrival ${f(rec.drainMs, 0)} ms after the last answer); duplicates ${r.duplicates}, missing ${rec.missing}`);
    if (l.mode === "saturate")
      console.log(`   deliveries/s while the requests ran ${f(rateDuring)}, after the last answer ${f(rateAfter)} (${at.length - during} left then)`);
    console.log(`   latency (arrival - timestamp): p50 ${f(r.p50)} ms  p90 ${f(r.p90)} ms  p99 ${f(r.p99)} ms  max ${f(r.max)} ms  min ${f(r.min)} ms` +
      `; server CPU ${rec.cpu} s` + (r.unparsed ? `; ${r.unparsed} bodies without a readable timestamp` : "") +
      (r.noId ? `; ${r.noId} without webhook-id` : ""));
    const other = Object.entries(r.types).filter(([t]) => t !== "case.created");
    if (other.length) console.log(`   other types: ${JSON.stringify(Object.fromEntries(other))}`);
    require("node:fs").appendFileSync(process.env.RESULTS, JSON.stringify(rec) + "\n");' \
    "$backend" "$name" "$count" "$load" "$report" "$cpu0" "$cpu1" "$dump"
}

# queue_waiting: the webhooks queue's waiting jobs, from the admin API.
queue_waiting() {
  curl -fsS --max-time 5 -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/admin/queues" |
    node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      const q = (JSON.parse(s).data || []).find((x) => x.queue === "webhooks");
      console.log(q ? q.counts.waiting : 0); });'
}

# backlog BACKEND: the delivery pipeline alone. The webhooks queue is paused, N cases are
# created (their deliveries wait as jobs), then the queue is resumed: deliveries/s =
# N / (last arrival - resume), with no request load competing for the cores.
backlog() {
  local backend=$1 lout="$STATE/webhooks-load.out" load deadline t0 report cpu0 cpu1 waiting=0
  curl -fsS --max-time 5 -X POST "http://127.0.0.1:$PORT_RECEIVER/phase?name=backlog" >/dev/null
  post "$BASE/api/v1/admin/queues/webhooks/pause" '{}' "$TOKEN" >/dev/null ||
    { echo "error: pausing the webhooks queue failed"; exit 1; }
  node "$HERE/load.mjs" URL="$BASE" TOKEN="$TOKEN" MODE=saturate N="$N" C="$C" RATE="$RATE" INFLIGHT="$INFLIGHT" \
    TAG=backlog >"$lout" || { echo "error: the load failed"; exit 1; }
  load=$(tail -n1 "$lout")
  deadline=$((SECONDS + TIMEOUT))
  while [ "$waiting" -lt "$N" ] && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.5
    waiting=$(queue_waiting)
  done
  echo "   $waiting delivery jobs waiting; resuming the queue"
  cpu0=$(cpu_seconds "$SERVER_PID")
  t0=$(date +%s%3N)
  post "$BASE/api/v1/admin/queues/webhooks/resume" '{}' "$TOKEN" >/dev/null ||
    { echo "error: resuming the webhooks queue failed"; exit 1; }
  wait_deliveries "$N"
  cpu1=$(cpu_seconds "$SERVER_PID")
  report=$(curl -fsS --max-time 10 "http://127.0.0.1:$PORT_RECEIVER/report")
  node -e 'const [backend, count, load, report, t0, c0, c1] = process.argv.slice(1);
    const l = JSON.parse(load), r = JSON.parse(report), f = (x, d = 1) => (x == null ? "-" : Number(x).toFixed(d));
    const span = r.lastArrival == null ? null : (r.lastArrival - +t0) / 1000;
    const rec = { part: "deliveries", backend, phase: "backlog", expected: +count, load: l, receiver: r, seconds: span,
      deliveriesPerSec: span ? r.unique / span : null, missing: Math.max(0, count - r.unique), cpu: +(c1 - c0).toFixed(2) };
    console.log(`   requests (queue paused): ${l.ok}/${l.sent} ok in ${f(l.seconds, 2)} s = ${f(l.rate)}/s`);
    console.log(`   deliveries: ${r.unique}/${count} in ${f(span, 2)} s from the resume = ${f(rec.deliveriesPerSec)}/s;` +
      ` duplicates ${r.duplicates}, missing ${rec.missing}; server CPU ${rec.cpu} s (${f(rec.cpu / span * 100, 0)} % of a core)`);
    require("node:fs").appendFileSync(process.env.RESULTS, JSON.stringify(rec) + "\n");' \
    "$backend" "$N" "$load" "$report" "$t0" "$cpu0" "$cpu1"
}

part_deliveries() {
  local backend=$1 rpid created sub_id stats counts
  echo "== $backend deliveries: fresh database, LexiFlow on :$PORT_LEXIFLOW, receiver on :$PORT_RECEIVER"
  start_server "$backend" deliveries
  node "$HERE/receiver.mjs" PORT="$PORT_RECEIVER" >"$STATE/webhooks-receiver-$backend.log" 2>&1 &
  rpid=$!
  PIDS+=("$rpid")
  wait_http "http://127.0.0.1:$PORT_RECEIVER/health" "$rpid" || { echo "error: the receiver did not start"; cat "$STATE/webhooks-receiver-$backend.log"; exit 1; }
  created=$(post "$BASE/api/v1/webhooks" "{\"url\":\"http://127.0.0.1:$PORT_RECEIVER/hook\",\"events\":[\"case.created\"]}" "$TOKEN") || {
    route_missing "$created" && echo "error: $BIN has no /api/v1/webhooks (built before webhooks?): rebuild it (BUILD=1)"
    echo "error: creating the subscription failed: $created"
    exit 1
  }
  sub_id=$(jget "$created" data.id)
  echo "   subscription $sub_id"

  echo "-- $backend saturation: N=$N cases, C=$C in flight"
  phase saturate saturate "$N" "$backend"
  echo "-- $backend below saturation: M=$M cases at $RATE/s"
  phase rate rate "$M" "$backend"
  if [[ " $PHASES " == *" backlog "* ]]; then
    echo "-- $backend backlog: N=$N cases with the webhooks queue paused, then resumed"
    backlog "$backend"
  fi
  sleep "$SETTLE"
  stats=$(curl -fsS --max-time 5 "http://127.0.0.1:$PORT_RECEIVER/stats")
  counts=$(server_counts "$backend")
  echo "   after ${SETTLE}s more: receiver total $(jget "$stats" totalReceived) received, $(jget "$stats" totalDuplicates) duplicates"
  echo "   server (status, count, with more than one attempt; the queue keeps the newest 10000 completed jobs):"
  printf '%s\n' "$counts" | sed 's/^/     /'
  node -e 'const [backend, stats, counts] = process.argv.slice(1);
    require("node:fs").appendFileSync(process.env.RESULTS, JSON.stringify({ part: "deliveries-end", backend,
      receiver: JSON.parse(stats), server: counts.split("\n").filter(Boolean).map((l) => l.split("\t")) }) + "\n");' \
    "$backend" "$stats" "$counts"
  stop "$rpid"
  stop "$SERVER_PID"
  log_summary
}

# run_wrk BACKEND AUTH ROUND HEADER [record]
run_wrk() {
  local backend=$1 auth=$2 round=$3 header=$4 record=${5:-1} dur=$DUR raw
  [ "$record" = 1 ] || dur=$WARMUP
  raw=$(wrk -t"$THREADS" -c"$CONNS" -d"$dur" --latency --timeout 5s -H "$header" "$WRK_URL" 2>&1) || true
  [ "$record" = 1 ] || return 0
  echo "$raw" >>"$STATE/webhooks-wrk-raw.log"
  local rps p50 p99 non2xx sockerr
  rps=$(echo "$raw" | awk '/^Requests\/sec:/{printf "%.0f", $2}')
  p50=$(to_ms "$(echo "$raw" | awk '$1=="50%"{print $2}')")
  p99=$(to_ms "$(echo "$raw" | awk '$1=="99%"{print $2}')")
  non2xx=$(echo "$raw" | awk '/Non-2xx/{print $NF}')
  non2xx=${non2xx:-0}
  sockerr=$(echo "$raw" | awk '/Socket errors/{print $0}' | sed 's/^ *//')
  printf "%-8s %-4s round %s  rps %8s  p50 %8s ms  p99 %8s ms  non2xx %6s%s\n" \
    "$backend" "$auth" "$round" "${rps:-0}" "$p50" "$p99" "$non2xx" "${sockerr:+  ($sockerr)}"
  printf '{"part":"apikey","backend":"%s","auth":"%s","round":%s,"rps":%s,"p50":%s,"p99":%s,"non2xx":%s}\n' \
    "$backend" "$auth" "$round" "${rps:-0}" "$p50" "$p99" "$non2xx" >>"$RESULTS"
}

part_apikey() {
  local backend=$1 made key case_id code round auth h
  echo "== $backend apikey: fresh database, LexiFlow on :$PORT_LEXIFLOW"
  start_server "$backend" apikey
  made=$(post "$BASE/api/v1/api-keys" '{"name":"bench","scopes":["cases:read"]}' "$TOKEN") || {
    route_missing "$made" && echo "error: $BIN has no /api/v1/api-keys (built before API keys?): rebuild it (BUILD=1)"
    echo "error: creating the API key failed: $made"
    exit 1
  }
  key=$(jget "$made" data.key)
  made=$(post "$BASE/api/v1/cases" '{"caseNumber":"B-1","title":"Bench","type":"civil"}' "$TOKEN") ||
    { echo "error: creating the case failed: $made"; exit 1; }
  case_id=$(jget "$made" data.id)
  [ -n "$key" ] && [ -n "$case_id" ] || { echo "error: no key or case id"; exit 1; }
  WRK_URL="$BASE/api/v1/cases/$case_id"
  for auth in jwt key; do
    if [ "$auth" = jwt ]; then h="Authorization: Bearer $TOKEN"; else h="X-API-Key: $key"; fi
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H "$h" "$WRK_URL")
    [ "$code" = 200 ] || { echo "error: GET $WRK_URL with the $auth answered $code"; exit 1; }
  done
  echo "   key ${key:0:16}..., case $case_id"
  for round in $(seq 1 "$ROUNDS"); do
    for auth in jwt key; do
      if [ "$auth" = jwt ]; then h="Authorization: Bearer $TOKEN"; else h="X-API-Key: $key"; fi
      [ "$round" = 1 ] && [ "$WARMUP" != 0 ] && run_wrk "$backend" "$auth" 0 "$h" 0
      run_wrk "$backend" "$auth" "$round" "$h"
      sleep 1
    done
  done
  stop "$SERVER_PID"
  log_summary
}

export RESULTS
for backend in $BACKENDS; do
  for part in $PARTS; do
    "part_$part" "$backend"
  done
done

node - "$RESULTS" <<'JS'
const fs = require("node:fs");
const rows = fs.readFileSync(process.argv[2], "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
const f = (x, d = 1) => (x == null || Number.isNaN(x) ? "-" : Number(x).toFixed(d));
const pad = (cells, w) => cells.map((c, i) => (i < 2 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join(" ");
const targets = [];
const mark = (ok) => (ok ? "met" : "NOT met");

const del = rows.filter((r) => r.part === "deliveries");
if (del.length) {
  console.log("\n== deliveries (latency = receiver's arrival - the event's timestamp, in ms)");
  const heads = ["backend", "phase", "cases", "req/s", "non2xx", "delivered", "deliv/s", "p50", "p99", "max", "dups", "missing"];
  const w = [8, 9, 6, 8, 6, 11, 8, 8, 8, 8, 5, 7];
  console.log(pad(heads, w));
  for (const r of del) {
    console.log(pad([r.backend, r.phase, r.expected, f(r.load.rate), r.load.non2xx + r.load.errors, `${r.receiver.unique}/${r.expected}`,
      f(r.deliveriesPerSec), f(r.receiver.p50), f(r.receiver.p99), f(r.receiver.max), r.receiver.duplicates, r.missing], w));
  }
  for (const b of [...new Set(del.map((r) => r.backend))]) {
    const sat = del.find((r) => r.backend === b && r.phase === "saturate");
    const rate = del.find((r) => r.backend === b && r.phase === "rate");
    const end = rows.find((r) => r.part === "deliveries-end" && r.backend === b);
    const backlog = del.find((r) => r.backend === b && r.phase === "backlog");
    if (b === "postgres" && sat)
      targets.push(`postgres saturation: ${f(sat.deliveriesPerSec)} deliveries/s   target >= 1000: ${mark(sat.deliveriesPerSec >= 1000)}`);
    if (b === "postgres" && backlog)
      targets.push(`postgres backlog (delivery pipeline alone): ${f(backlog.deliveriesPerSec)} deliveries/s   target >= 1000: ${mark(backlog.deliveriesPerSec >= 1000 && backlog.missing === 0)}`);
    if (rate)
      targets.push(`${b.padEnd(8)} p99 below saturation (${f(rate.load.rate)}/s): ${f(rate.receiver.p99)} ms   target < 1000 ms: ${mark(rate.receiver.p99 != null && rate.receiver.p99 < 1000 && rate.missing === 0)}`);
    const dups = end ? end.receiver.totalDuplicates : del.filter((r) => r.backend === b).reduce((s, r) => s + r.receiver.duplicates, 0);
    const missing = del.filter((r) => r.backend === b).reduce((s, r) => s + r.missing, 0);
    const failed = del.filter((r) => r.backend === b).reduce((s, r) => s + r.load.non2xx + r.load.errors, 0);
    targets.push(`${b.padEnd(8)} duplicates ${dups}, missing ${missing}, failed requests ${failed}   target 0, 0, 0: ${mark(!dups && !missing && !failed)}`);
  }
}

const keys = rows.filter((r) => r.part === "apikey");
if (keys.length) {
  const median = (v) => { const s = [...v].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
  console.log("\n== API key vs JWT, GET /api/v1/cases/{id}: median over rounds (non-2xx summed)");
  const w = [8, 5, 8, 8, 8, 7];
  console.log(pad(["backend", "auth", "req/s", "p50_ms", "p99_ms", "non2xx"], w));
  for (const b of [...new Set(keys.map((r) => r.backend))]) {
    const m = {};
    for (const a of ["jwt", "key"]) {
      const v = keys.filter((r) => r.backend === b && r.auth === a);
      if (!v.length) continue;
      m[a] = median(v.map((r) => r.rps));
      console.log(pad([b, a, f(m[a], 0), f(median(v.map((r) => r.p50)), 2), f(median(v.map((r) => r.p99)), 2), v.reduce((s, r) => s + r.non2xx, 0)], w));
    }
    // The ratio of the medians, and the median of the per-round ratios (the rounds are interleaved).
    const rounds = [...new Set(keys.filter((r) => r.backend === b).map((r) => r.round))];
    const per = rounds.map((n) => {
      const j = keys.find((r) => r.backend === b && r.round === n && r.auth === "jwt");
      const k = keys.find((r) => r.backend === b && r.round === n && r.auth === "key");
      return j && k && j.rps ? k.rps / j.rps : null;
    }).filter((x) => x != null);
    if (per.length) {
      const r = median(per);
      const non2xx = keys.filter((x) => x.backend === b).reduce((s, x) => s + x.non2xx, 0);
      targets.push(`${b.padEnd(8)} API key / JWT req/s = ${f(r, 3)} (median of ${per.length} rounds' ratios; ratio of medians ${f(m.key / m.jwt, 3)})   target >= 0.95: ${mark(r >= 0.95 && non2xx === 0)}`);
    }
  }
}
if (targets.length) {
  console.log("\n== targets");
  for (const t of targets) console.log(t);
}
JS
echo "== kept in $OUT"
