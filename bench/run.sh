#!/usr/bin/env bash
# LexiFlow's benchmark command. For each backend (PostgreSQL, SQLite) it starts the release
# build of LexiFlow on a fresh database, seeds it through the API, starts the bare reference
# (bench/bare.rs: the same rows through the same ORM and pool, no middleware at all) on the
# same database, and loads both with wrk, interleaved, in the same run:
#
#   get   GET /api/v1/cases/{random seeded id}   (bare: GET /cases/{id})
#   list  GET /api/v1/cases?limit=20             (bare: GET /cases, newest 20)
#   post  POST /api/v1/cases, a unique case number per request (full vs noaudit only)
#   zip   GET /api/v1/cases?limit=100 on the full stack, without and with
#         Accept-Encoding: gzip (stacks "plain" and "gzip"), plus the bytes of each answer
#
# Three stacks per backend, on the same database:
#   bare    bench/bare.rs — the floor
#   full    LexiFlow as deployed: security layer on (headers, rate limits raised so that they
#           never refuse, request deadline), JSON logs
#   nosec   LexiFlow with SECURITY_LAYER=off (no security headers, no rate limiting, no deadline)
#   noaudit LexiFlow with AUDIT_TRAIL=off (writes not audited), for the post endpoint
# It prints req/s, p50, p99, non-2xx and peak RSS per run, then medians per stack and the
# ratios full/bare (targets: get and list >= 0.70), full/nosec (the security layer's cost;
# target >= 0.90) and, for post, full/noaudit (auditing's cost; target >= 0.80).
#
#   bench/run.sh                                 # both backends, 3 rounds x 15 s (~20 min)
#   DUR=5s ROUNDS=1 bench/run.sh                 # a quick look; do not quote these figures
#   BACKENDS=sqlite bench/run.sh
#
# Env: DUR (15s), WARMUP (3s, not recorded), ROUNDS (3), CONNS (64), THREADS (2),
#      SEED (2000 cases), BACKENDS ("postgres sqlite"), ENDPOINTS ("get list"),
#      PG_URL (postgres://postgres@127.0.0.1:5432; database lexiflow_bench is re-created),
#      CARGO_TARGET_DIR ($HOME/.cache/lexiflow-target); LEXIFLOW_BIN and BARE_BIN (both:
#      run these binaries instead of building, e.g. to compare two builds).
# Needs: wrk, curl, python3, psql (Debian: apt-get install wrk curl python3 postgresql-client).
# Output is also kept in bench/.state/run-<time>.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/bench/.state"
mkdir -p "$STATE"

DUR=${DUR:-15s}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
SEED=${SEED:-2000}
BACKENDS=${BACKENDS:-"postgres sqlite"}
ENDPOINTS=${ENDPOINTS:-"get list post zip"}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT_FULL=${PORT_FULL:-3300}
PORT_BARE=${PORT_BARE:-3301}
PORT_NOSEC=${PORT_NOSEC:-3302}
PORT_NOAUDIT=${PORT_NOAUDIT:-3303}
STACKS=${STACKS:-"bare full nosec noaudit"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lexiflow-target}
. "$ROOT/bench/lib.sh"

for c in wrk curl python3 psql cargo; do
  command -v "$c" >/dev/null || { echo "error: $c not found (Debian: apt-get install wrk curl python3 postgresql-client)" >&2; exit 1; }
done

OUT="$STATE/run-$(date -u +%Y%m%dT%H%M%SZ).txt"
RESULTS="$STATE/results.tsv"
: >"$RESULTS"
: >"$STATE/zip-bytes.tsv"
exec > >(tee "$OUT") 2>&1

echo "== LexiFlow benchmark $(date -u +%FT%TZ) on $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== DUR=$DUR ROUNDS=$ROUNDS CONNS=$CONNS THREADS=$THREADS SEED=$SEED BACKENDS=\"$BACKENDS\""
if [ -n "${LEXIFLOW_BIN:-}" ] && [ -n "${BARE_BIN:-}" ]; then
  # Binaries built earlier (e.g. copied aside to compare two builds): no build here.
  BIN=$LEXIFLOW_BIN
  BARE=$BARE_BIN
  echo "== binaries: $BIN, $BARE"
else
  echo "== building (release)"
  cargo build --release --locked --quiet --manifest-path "$ROOT/Cargo.toml" --bin lexiflow --example bench-bare
  BIN="$CARGO_TARGET_DIR/release/lexiflow"
  BARE="$CARGO_TARGET_DIR/release/examples/bench-bare"
fi

PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  # Only the processes started here: a bare `wait` also waits for the `tee` behind stdout,
  # which waits for this script's own stdout to close, and the script never exits.
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT


# run_wrk BACKEND ENDPOINT STACK ROUND PID URL SCRIPT [record]
run_wrk() {
  local backend=$1 ep=$2 stack=$3 round=$4 pid=$5 url=$6 script=$7 record=${8:-1}
  local dur=$DUR raw peak=0 sampler
  [ "$record" = 1 ] || dur=$WARMUP
  ( while kill -0 "$pid" 2>/dev/null; do awk '/^VmRSS:/{print $2}' "/proc/$pid/status"; sleep 0.2; done ) >"$STATE/rss.$$" 2>/dev/null &
  sampler=$!
  raw=$(wrk -t"$THREADS" -c"$CONNS" -d"$dur" --latency --timeout 5s -s "$script" "$url" 2>&1) || true
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  [ "$record" = 1 ] || return 0
  peak=$(sort -n "$STATE/rss.$$" | tail -1)
  echo "$raw" >>"$STATE/wrk-raw.log"
  local rps p50 p99 non2xx
  rps=$(echo "$raw" | awk '/^Requests\/sec:/{printf "%.0f", $2}')
  p50=$(to_ms "$(echo "$raw" | awk '$1=="50%"{print $2}')")
  p99=$(to_ms "$(echo "$raw" | awk '$1=="99%"{print $2}')")
  non2xx=$(echo "$raw" | awk '/Non-2xx/{print $NF}')
  non2xx=${non2xx:-0}
  printf "%-8s %-5s %-6s round %s  rps %8s  p50 %8s ms  p99 %8s ms  non2xx %6s  peak_rss %6.1f MB\n" \
    "$backend" "$ep" "$stack" "$round" "$rps" "$p50" "$p99" "$non2xx" "$(awk -v k="${peak:-0}" 'BEGIN{print k/1024}')"
  printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$backend" "$ep" "$stack" "$round" "$rps" "$p50" "$p99" "$non2xx" "${peak:-0}" >>"$RESULTS"
}

for backend in $BACKENDS; do
  echo "== $backend: fresh database"
  data="$STATE/data-$backend"
  db_url=$(fresh_database "$backend" "$data" lexiflow_bench)
  full_env "$db_url" "$data"
  env "${FULL_ENV[@]}" PORT=$PORT_FULL "$BIN" serve >"$STATE/lexiflow-$backend.log" 2>&1 &
  full_pid=$!
  PIDS+=("$full_pid")
  wait_http "http://127.0.0.1:$PORT_FULL/health/liveness" "$full_pid" || { tail -20 "$STATE/lexiflow-$backend.log"; exit 1; }
  env "${FULL_ENV[@]}" PORT=$PORT_NOSEC SECURITY_LAYER=off "$BIN" serve >"$STATE/lexiflow-nosec-$backend.log" 2>&1 &
  nosec_pid=$!
  PIDS+=("$nosec_pid")
  wait_http "http://127.0.0.1:$PORT_NOSEC/health/liveness" "$nosec_pid" || { tail -20 "$STATE/lexiflow-nosec-$backend.log"; exit 1; }
  env "${FULL_ENV[@]}" PORT=$PORT_NOAUDIT AUDIT_TRAIL=off "$BIN" serve >"$STATE/lexiflow-noaudit-$backend.log" 2>&1 &
  noaudit_pid=$!
  PIDS+=("$noaudit_pid")
  wait_http "http://127.0.0.1:$PORT_NOAUDIT/health/liveness" "$noaudit_pid" || { tail -20 "$STATE/lexiflow-noaudit-$backend.log"; exit 1; }
  python3 "$ROOT/bench/seed.py" "http://127.0.0.1:$PORT_FULL" "$STATE" "$SEED"
  token=$(cat "$STATE/token")

  DATABASE_URL=$db_url LEXIFLOW_DATA_DIR=$data PORT=$PORT_BARE BARE_FIRM_ID=$(cat "$STATE/firm") "$BARE" >"$STATE/bare-$backend.log" 2>&1 &
  bare_pid=$!
  PIDS+=("$bare_pid")
  wait_http "http://127.0.0.1:$PORT_BARE/health" "$bare_pid" || { tail -20 "$STATE/bare-$backend.log"; exit 1; }

  for round in $(seq 1 "$ROUNDS"); do
    for ep in $ENDPOINTS; do
      stacks=$STACKS
      [ "$ep" = zip ] && stacks="plain gzip"
      for stack in $stacks; do
        # Reads compare against the floor and the no-security stack; the write against no-audit.
        if [ "$ep" = zip ]; then
          :
        elif [ "$ep" = post ]; then
          case $stack in full | noaudit) ;; *) continue ;; esac
        elif [ "$stack" = noaudit ]; then
          continue
        fi
        case $stack in
          bare) pid=$bare_pid; base="http://127.0.0.1:$PORT_BARE"; prefix=/cases/; tok= ;;
          full) pid=$full_pid; base="http://127.0.0.1:$PORT_FULL"; prefix=/api/v1/cases/; tok=$token ;;
          nosec) pid=$nosec_pid; base="http://127.0.0.1:$PORT_NOSEC"; prefix=/api/v1/cases/; tok=$token ;;
          noaudit) pid=$noaudit_pid; base="http://127.0.0.1:$PORT_NOAUDIT"; prefix=/api/v1/cases/; tok=$token ;;
          plain | gzip) pid=$full_pid; base="http://127.0.0.1:$PORT_FULL"; prefix=/api/v1/cases/; tok=$token ;;
        esac
        enc=
        [ "$stack" = gzip ] && enc="gzip"
        if [ "$ep" = zip ]; then url="$base/api/v1/cases?limit=100"; script="$ROOT/bench/wrk/token.lua"
        elif [ "$ep" = post ]; then url="$base/api/v1/cases"; script="$ROOT/bench/wrk/post.lua"
        elif [ "$ep" = get ]; then url="$base/"; script="$ROOT/bench/wrk/get.lua"
        elif [ "$stack" = bare ]; then url="$base/cases"; script="$ROOT/bench/wrk/token.lua"
        else url="$base/api/v1/cases?limit=20"; script="$ROOT/bench/wrk/token.lua"; fi
        export TOKEN=$tok GET_PREFIX=$prefix IDS_FILE="$STATE/ids" ACCEPT_ENCODING=$enc
        if [ "$ep" = zip ] && [ "$round" = 1 ]; then
          bytes=$(curl -fsS -o /dev/null -w '%{size_download}' -H "Authorization: Bearer $tok" ${enc:+-H "Accept-Encoding: $enc"} "$url")
          printf "%-8s zip   %-6s bytes of one answer: %s\n" "$backend" "$stack" "$bytes"
          printf "%s\t%s\n" "$backend-$stack" "$bytes" >>"$STATE/zip-bytes.tsv"
        fi
        [ "$round" = 1 ] && [ "$WARMUP" != 0 ] && run_wrk "$backend" "$ep" "$stack" 0 "$pid" "$url" "$script" 0
        run_wrk "$backend" "$ep" "$stack" "$round" "$pid" "$url" "$script"
        sleep 1
      done
    done
  done
  kill "$full_pid" "$nosec_pid" "$noaudit_pid" "$bare_pid" 2>/dev/null || true
  wait "$full_pid" "$nosec_pid" "$noaudit_pid" "$bare_pid" 2>/dev/null || true
done

python3 - "$RESULTS" "$STATE/zip-bytes.tsv" <<'PY'
import sys, statistics, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
g = collections.defaultdict(list)
for b, ep, st, rnd, rps, p50, p99, non2xx, rss in rows:
    g[(b, ep, st)].append((float(rps or 0), float(p50 or 0), float(p99 or 0), int(non2xx or 0), int(rss or 0)))
print("\n== summary: median over rounds; errors and peak RSS over all rounds")
print(f"{'backend':8} {'endpoint':8} {'stack':6} {'req/s':>8} {'p50_ms':>8} {'p99_ms':>8} {'errors':>7} {'peak_rss_MB':>11}")
for (b, ep, st), v in g.items():
    print(f"{b:8} {ep:8} {st:6} {statistics.median(x[0] for x in v):8.0f} {statistics.median(x[1] for x in v):8.2f} "
          f"{statistics.median(x[2] for x in v):8.2f} {sum(x[3] for x in v):7d} {max(x[4] for x in v)/1024:11.1f}")
def med(key):
    return statistics.median(x[0] for x in g[key]) if key in g else None

print("\n== ratios (req/s): full/bare >= 0.70; full/nosec (security cost) >= 0.90; full/noaudit (audit cost) >= 0.80")
for (b, ep, st) in list(g):
    if st == "gzip":
        plain, gz = med((b, ep, "plain")), med((b, ep, "gzip"))
        if plain:
            print(f"{b:8} {ep:8} gzip/plain = {gz / plain:5.2f}  (req/s with compression against without)")
    if st != "full":
        continue
    full = med((b, ep, "full"))
    for other, target in (("bare", 0.70), ("nosec", 0.90), ("noaudit", 0.80)):
        base = med((b, ep, other))
        if base:
            r = full / base
            print(f"{b:8} {ep:8} full/{other:5} = {r:5.2f}  {'ok' if r >= target else 'BELOW TARGET'}")
sizes = dict(l.rstrip("\n").split("\t") for l in open(sys.argv[2]) if l.strip())
for b in sorted({k.rsplit("-", 1)[0] for k in sizes}):
    p, z = sizes.get(b + "-plain"), sizes.get(b + "-gzip")
    if p and z:
        print(f"{b:8} zip      bytes of GET /cases?limit=100: {p} plain, {z} gzip ({int(z) / int(p):.2f})")
PY
