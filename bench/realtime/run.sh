#!/usr/bin/env bash
# The realtime benchmark: LexiFlow's Socket.IO gateway beside a plain Node socket.io 4.8 server
# (bench/realtime/node-server.mjs), in the same run, with the same real clients (npm
# socket.io-client 4.8.3, WebSocket only): N clients follow one case, then EVENTS changes are
# made at RATE per second and every client must receive every `case:updated`.
#
#   lexiflow  the release build on a fresh SQLite database, as deployed in the benchmarks
#             (bench/lib.sh's full_env), per-user realtime limits raised (one user's token
#             opens every socket); a change is PATCH /api/v1/cases/{id}
#   node      node-server.mjs; a change is POST /emit?caseId=..., which broadcasts at once
#
# Per stack it prints delivered/expected, latency p50/p99/max (client's clock at arrival minus
# the payload's occurredAt), latency from the commit (p50/p99: for LexiFlow from when the change
# committed, which fire.mjs learns from the answer's Server-Timing; for Node from occurredAt,
# the moment it emits), the server's CPU seconds while the events were sent (and while the
# clients connected), its peak RSS; then LexiFlow against Node with the targets: p99 from
# commit to receipt < 50 ms and no worse than Node's; peak RSS <= 1/3 of Node's. See
# bench/realtime/README.md.
#
#   bench/realtime/run.sh                        # both stacks, N=1000 EVENTS=1000 RATE=50
#   STACKS=node bench/realtime/run.sh            # only the baseline (no cargo)
#   N=200 EVENTS=200 bench/realtime/run.sh       # a quick look; do not quote these figures
#
# Env: N (1000 clients), EVENTS (1000), RATE (50 per second), WARMUP (0: events sent first and
#      not recorded), STACKS ("lexiflow node"), WORKERS (2 client threads), BATCH (50 clients
#      opened at once), INFLIGHT (4 requests at most), TIMEOUT (s to wait for the events once
#      the clients are ready; 3 x EVENTS/RATE + 60), PORT_LEXIFLOW (3991), PORT_NODE (3992),
#      CARGO_TARGET_DIR ($HOME/.cache/lexiflow-target).
# Needs: node + npm (installs bench/realtime's locked packages on first use), curl, cargo
# (unless LEXIFLOW_BIN names the binary to run).
# Output is also kept in bench/.state/realtime-<time>.txt.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STATE="$ROOT/bench/.state"
mkdir -p "$STATE"

N=${N:-1000}
EVENTS=${EVENTS:-1000}
RATE=${RATE:-50}
WARMUP=${WARMUP:-0}
STACKS=${STACKS:-"lexiflow node"}
WORKERS=${WORKERS:-2}
BATCH=${BATCH:-50}
INFLIGHT=${INFLIGHT:-4}
TIMEOUT=${TIMEOUT:-$(awk -v e="$((EVENTS + WARMUP))" -v r="$RATE" 'BEGIN{printf "%d", 3 * e / r + 60}')}
PORT_LEXIFLOW=${PORT_LEXIFLOW:-3991}
PORT_NODE=${PORT_NODE:-3992}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lexiflow-target}
. "$ROOT/bench/lib.sh"

need=(node npm curl)
[ -n "${LEXIFLOW_BIN:-}" ] || case " $STACKS " in *" lexiflow "*) need+=(cargo) ;; esac
for c in "${need[@]}"; do
  command -v "$c" >/dev/null || { echo "error: $c not found" >&2; exit 1; }
done
for s in $STACKS; do
  case $s in lexiflow | node) ;; *) echo "error: unknown stack '$s' (lexiflow, node)" >&2; exit 1 ;; esac
done

# One descriptor per socket in the server and in the clients' process, and some to spare.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((N + 512)) ]; then
  echo "error: open files limited to $(ulimit -n) (hard $(ulimit -Hn)); N=$N needs $((N + 512))" >&2
  exit 1
fi

OUT="$STATE/realtime-$(date -u +%Y%m%dT%H%M%SZ).txt"
RESULTS="$STATE/realtime-results.jsonl"
: >"$RESULTS"
exec > >(tee "$OUT") 2>&1

echo "== realtime benchmark $(date -u +%FT%TZ) on $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== N=$N EVENTS=$EVENTS RATE=$RATE/s WARMUP=$WARMUP WORKERS=$WORKERS STACKS=\"$STACKS\"; open files $(ulimit -n)"

if [ ! -d "$HERE/node_modules" ]; then
  echo "== npm ci (bench/realtime)"
  (cd "$HERE" && npm ci --silent --no-audit --no-fund)
fi
# LEXIFLOW_BIN: that binary, not built here (another commit's, or a quicker build's).
BIN=${LEXIFLOW_BIN:-$CARGO_TARGET_DIR/release/lexiflow}
case " $STACKS " in
  *" lexiflow "*)
    if [ -z "${LEXIFLOW_BIN:-}" ]; then
      echo "== building (release)"
      cargo build --release --locked --quiet --manifest-path "$ROOT/Cargo.toml" --bin lexiflow
    fi
    [ -x "$BIN" ] || { echo "error: no lexiflow binary at $BIN" >&2; exit 1; }
    echo "== binary $BIN ($(date -u -r "$BIN" +%FT%TZ))"
    ;;
esac
track_processes





# run_stack STACK: starts the stack's server, runs the clients and the changes, records.
run_stack() {
  local stack=$1 port base pid token case_id mode log
  case $stack in
    lexiflow)
      port=$PORT_LEXIFLOW
      base="http://127.0.0.1:$port"
      log="$STATE/realtime-lexiflow.log"
      local data="$STATE/data-realtime" db_url
      db_url=$(fresh_database sqlite "$data" lexiflow_realtime)
      full_env "$db_url" "$data"
      local max_conns=$((N + 16 > 5000 ? N + 16 : 5000))
      env "${FULL_ENV[@]}" PORT=$port REALTIME_MAX_CONNECTIONS_PER_USER=$max_conns \
        REALTIME_MESSAGES_PER_MINUTE=1000000 "$BIN" serve >"$log" 2>&1 &
      pid=$!
      PIDS+=("$pid")
      wait_http "$base/health/liveness" "$pid" || { echo "error: LexiFlow did not start"; tail -20 "$log"; exit 1; }
      local reg created
      reg=$(post "$base/api/v1/auth/register" \
        '{"firmName":"Bench","email":"bench@bench.test","password":"correct horse battery staple","firstName":"B","lastName":"Ench"}') ||
        { echo "error: registering the firm failed: $reg"; exit 1; }
      token=$(jget "$reg" data.accessToken)
      created=$(post "$base/api/v1/cases" '{"caseNumber":"B-1","title":"Bench","type":"civil"}' "$token") ||
        { echo "error: creating the case failed: $created"; exit 1; }
      case_id=$(jget "$created" data.id)
      # The Node baseline broadcasts the same case view (same payload size).
      printf '%s' "$created" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["data"]))' \
        >"$STATE/realtime-case-view.json"
      [ -n "$token" ] && [ -n "$case_id" ] || { echo "error: no token or case id: $reg $created"; exit 1; }
      mode=lexiflow
      ;;
    node)
      port=$PORT_NODE
      base="http://127.0.0.1:$port"
      log="$STATE/realtime-node.log"
      CASE_VIEW=$([ -s "$STATE/realtime-case-view.json" ] && echo "$STATE/realtime-case-view.json" || true) \
        node "$HERE/node-server.mjs" "$port" >"$log" 2>&1 &
      pid=$!
      PIDS+=("$pid")
      wait_http "$base/health" "$pid" || { echo "error: the Node server did not start"; tail -20 "$log"; exit 1; }
      token=bench
      case_id=$(cat /proc/sys/kernel/random/uuid)
      mode=node
      ;;
  esac

  echo "== $stack: $N clients on $base, case $case_id"
  local cout="$STATE/realtime-clients-$stack.out" cerr="$STATE/realtime-clients-$stack.err" cpid
  : >"$cout"
  # LexiFlow stamps occurredAt inside the writing transaction; when each change committed comes
  # from its answer (fire.mjs writes the file, the clients read it once they have every event).
  local commits=()
  if [ "$stack" = lexiflow ]; then
    rm -f "$STATE/realtime-commits.json"
    commits=(COMMITS="$STATE/realtime-commits.json")
  fi
  local cpu0 cpu1 cpu2 ready
  cpu0=$(cpu_seconds "$pid")
  local rss0 rss1
  rss0=$(rss_kb "$pid")
  echo "   resident before the clients: $(rss_parts "$pid")"
  node "$HERE/clients.mjs" URL="$base" TOKEN="$token" CASE_ID="$case_id" N="$N" EXPECT="$EVENTS" SKIP="$WARMUP" \
    TIMEOUT="$TIMEOUT" WORKERS="$WORKERS" BATCH="$BATCH" ${commits[@]+"${commits[@]}"} >"$cout" 2>"$cerr" &
  cpid=$!
  PIDS+=("$cpid")
  ready=
  while [ -z "$ready" ]; do
    ready=$(grep -m1 '"ready"' "$cout" || true)
    if [ -z "$ready" ]; then
      kill -0 "$cpid" 2>/dev/null || { echo "error: the clients stopped before they were ready"; cat "$cerr"; exit 1; }
      kill -0 "$pid" 2>/dev/null || { echo "error: the $stack server died"; tail -20 "$log"; exit 1; }
      sleep 0.2
    fi
  done
  echo "   clients ready: $ready"
  cpu1=$(cpu_seconds "$pid")
  rss1=$(rss_kb "$pid")
  echo "   resident: $((rss0 / 1024)) MB before the clients, $((rss1 / 1024)) MB with them connected"
  echo "   resident with the clients connected: $(rss_parts "$pid")"

  # In the background and waited for, so that an interrupt stops the run at once.
  local fout="$STATE/realtime-fire-$stack.out" fpid fire
  node "$HERE/fire.mjs" MODE="$mode" URL="$base" TOKEN="$token" CASE_ID="$case_id" M=$((EVENTS + WARMUP)) \
    RATE="$RATE" INFLIGHT="$INFLIGHT" ${commits[@]+"${commits[@]}"} >"$fout" &
  fpid=$!
  PIDS+=("$fpid")
  wait "$fpid" || { echo "error: sending the changes failed"; exit 1; }
  forget "$fpid"
  fire=$(tail -n1 "$fout")
  echo "   changes sent: $fire"
  wait "$cpid" || { echo "error: the clients failed"; cat "$cerr"; exit 1; }
  forget "$cpid"
  cpu2=$(cpu_seconds "$pid")
  local rss result
  rss=$(peak_rss_kb "$pid")
  result=$(tail -n1 "$cout")
  echo "   delivered: $result"
  if [ "$stack" = lexiflow ]; then
    # The server's part of the latency (occurredAt until its sockets hold the event), by bucket.
    curl -fsS --max-time 5 "$base/metrics" 2>/dev/null | awk '
      /^lexiflow_realtime_delivery_lag_seconds_bucket/ { match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); b[++n] = le; c[n] = $NF }
      /^lexiflow_realtime_delivery_lag_seconds_count/ { total = $NF }
      END { if (!total) { print "   server lag: no lexiflow_realtime_delivery_lag_seconds in /metrics"; exit }
        s = "   server lag (occurredAt until the sockets hold it), events within:";
        for (i = 1; i <= n; i++) if (b[i] != "+Inf" && b[i] + 0 <= 0.25) s = s sprintf(" %g ms %.1f%%,", b[i] * 1000, 100 * c[i] / total);
        print s " of " total }' || true
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget "$pid"

  node -e 'const [stack, ready, fire, result, c0, c1, c2, rss] = process.argv.slice(1);
    console.log(JSON.stringify({ stack, ready: JSON.parse(ready), fire: JSON.parse(fire), result: JSON.parse(result),
      cpuConnect: +(c1 - c0).toFixed(2), cpuEvents: +(c2 - c1).toFixed(2), rssKb: +rss }));' \
    "$stack" "$ready" "$fire" "$result" "$cpu0" "$cpu1" "$cpu2" "$rss" >>"$RESULTS"
}

first=1
for stack in $STACKS; do
  [ "$first" = 1 ] || sleep 2
  first=0
  run_stack "$stack"
done

node - "$RESULTS" <<'JS'
const fs = require("node:fs");
const rows = fs.readFileSync(process.argv[2], "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
const f = (x, d = 1) => (x == null ? "-" : Number(x).toFixed(d));
console.log("\n== results (latency in ms; server CPU in seconds while the events were sent, and while the clients connected)");
const heads = ["stack", "clients", "events", "received/expected", "p50", "p99", "max", "commit p50", "commit p99", "rate/s", "CPU s", "CPU conn s", "peak RSS MB"];
const width = heads.map((h) => Math.max(h.length, 8));
const line = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(width[0]) : String(c).padStart(width[i]))).join(" ");
console.log(line(heads));
const by = {};
for (const r of rows) {
  by[r.stack] = r;
  const x = r.result;
  console.log(
    line([
      r.stack,
      x.clients - x.failed,
      x.expected / x.clients,
      `${x.received}/${x.expected}`,
      f(x.p50),
      f(x.p99),
      f(x.max),
      f(x.fromCommit?.p50),
      f(x.fromCommit?.p99),
      f(r.fire.rate),
      f(r.cpuEvents, 2),
      f(r.cpuConnect, 2),
      f(r.rssKb / 1024),
    ]),
  );
  const notes = [];
  if (x.failed) notes.push(`${x.failed} clients failed to connect or subscribe`);
  if (x.disconnected) notes.push(`${x.disconnected} clients dropped`);
  if (x.timedOut) notes.push("timed out before every event arrived");
  if (x.extra) notes.push(`${x.extra} events more than expected`);
  if (r.fire.failed) notes.push(`${r.fire.failed} change requests failed`);
  if (r.fire.late) notes.push(`${r.fire.late} changes sent more than 5 ms late (worst ${f(r.fire.maxLagMs)} ms)`);
  if (Object.keys(x.errors ?? {}).length) notes.push(`errors: ${JSON.stringify(x.errors)}`);
  if (x.fromCommit && x.fromCommit.matched !== x.received)
    notes.push(`only ${x.fromCommit.matched} of ${x.received} receipts matched a commit time`);
  for (const n of notes) console.log(`  ${r.stack}: ${n}`);
}
const L = by.lexiflow;
const N = by.node;
if (L) {
  const complete = L.result.received === L.result.expected && !L.result.failed;
  console.log(`\nLexiFlow delivered every event to every client: ${complete ? "met" : "NOT met"}`);
  // The issue's measure is from commit to receipt; from occurredAt (inside LexiFlow's
  // transaction, so the write and its commit are in it) is shown too.
  const p99 = L.result.fromCommit?.p99;
  if (N) {
    const np99 = N.result.fromCommit?.p99;
    const r = p99 / np99;
    const met = p99 != null && p99 < 50 && p99 <= np99;
    console.log(`LexiFlow p99 / Node p99, from commit = ${f(p99)} / ${f(np99)} = ${f(r, 2)}   target p99 < 50 ms and <= Node's: ${met ? "met" : "NOT met"}`);
    console.log(`LexiFlow p99 / Node p99, from occurredAt = ${f(L.result.p99)} / ${f(N.result.p99)} = ${f(L.result.p99 / N.result.p99, 2)}`);
    const m = L.rssKb / N.rssKb;
    console.log(`LexiFlow RSS / Node RSS = ${f(L.rssKb / 1024)} / ${f(N.rssKb / 1024)} MB = ${f(m, 2)}   target <= 0.33 (1/3): ${m <= 1 / 3 ? "met" : "NOT met"}`);
  } else {
    console.log(`LexiFlow p99 from commit = ${f(p99)} ms   target p99 < 50 ms: ${p99 != null && p99 < 50 ? "met" : "NOT met"} (no Node run to compare with)`);
  }
}
JS
echo "== kept in $OUT"
