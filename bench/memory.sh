#!/usr/bin/env bash
# A memory growth probe: one LexiFlow release build on a fresh SQLite database, seeded through
# the API, then CYCLES (4) cycles of 10 s audited POST /cases, 10 s GET /cases/{id} and 10 s
# GET /cases?limit=100 (wrk, 2 threads, 64 connections), and the process's memory read after
# every phase: VmRSS and VmHWM (/proc/PID/status), anonymous and file-backed resident memory
# (/proc/PID/smaps_rollup), the cache's entries (/metrics) and the database file's size (KiB).
# Memory that climbs cycle after cycle while the load stays the same is what it is for.
#
#   bench/memory.sh
#   DB_SQLITE_CACHE_MIB=4 CYCLES=6 bench/memory.sh      # any server setting passes through
#   LEXIFLOW_BIN=/tmp/lexiflow-old bench/memory.sh       # a binary built earlier
#
# Needs wrk, curl, python3. Builds the release binary unless LEXIFLOW_BIN is set.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/bench/.state/memory"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lexiflow-target}
. "$ROOT/bench/lib.sh"
PORT=${PORT:-3390}
rm -rf "$STATE" && mkdir -p "$STATE"
if [ -z "${LEXIFLOW_BIN:-}" ]; then
  cargo build --release --locked --quiet --manifest-path "$ROOT/Cargo.toml" --bin lexiflow || exit 1
fi
BIN=${LEXIFLOW_BIN:-$CARGO_TARGET_DIR/release/lexiflow}
full_env "sqlite://$STATE/data/lexiflow.db?mode=rwc" "$STATE/data"
track_processes
env "${FULL_ENV[@]}" PORT=$PORT "$BIN" serve >"$STATE/server.log" 2>&1 &
pid=$!
PIDS+=("$pid")
wait_http "http://127.0.0.1:$PORT/health/liveness" $pid || { tail "$STATE/server.log"; exit 1; }
python3 "$ROOT/bench/seed.py" "http://127.0.0.1:$PORT" "$STATE" "${SEED:-2000}" >/dev/null
export TOKEN=$(cat "$STATE/token") GET_PREFIX=/api/v1/cases/ IDS_FILE="$STATE/ids" ACCEPT_ENCODING=
snap() {
  local anon file entries db
  anon=$(awk '/^Anonymous:/{print $2}' /proc/$pid/smaps_rollup)
  file=$(awk '/^Rss:/{r=$2} /^Anonymous:/{a=$2} END{print r-a}' /proc/$pid/smaps_rollup)
  entries=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^lexiflow_cache_entries/{s+=$2} END{print s+0}')
  db=$(du -k "$STATE/data/lexiflow.db" | cut -f1)
  printf "%-14s rss %7s  hwm %7s  anon %7s  file-backed %7s KiB  cache entries %6s  db %8s KiB\n" \
    "$1" "$(rss_kb $pid)" "$(peak_rss_kb $pid)" "$anon" "$file" "$entries" "$db"
}
snap seeded
for c in $(seq 1 "${CYCLES:-4}"); do
  wrk -t2 -c64 -d10s -s "$ROOT/bench/wrk/post.lua" "http://127.0.0.1:$PORT/api/v1/cases" >/dev/null; snap "c$c post"
  wrk -t2 -c64 -d10s -s "$ROOT/bench/wrk/get.lua" "http://127.0.0.1:$PORT/" >/dev/null; snap "c$c get"
  wrk -t2 -c64 -d10s -s "$ROOT/bench/wrk/token.lua" "http://127.0.0.1:$PORT/api/v1/cases?limit=100" >/dev/null; snap "c$c list100"
done
sleep 5
snap "idle 5 s"
