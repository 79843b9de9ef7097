#!/usr/bin/env bash
# Profiles the full LexiFlow stack (release build, JSON logs, security layer on, as bench/run.sh's
# "full") under wrk load with perf, and writes for each backend and endpoint:
#
#   bench/.state/profile/<backend>-<endpoint>.folded   collapsed stacks (inferno-collapse-perf)
#   bench/.state/profile/<backend>-<endpoint>.svg      a flamegraph (inferno-flamegraph)
#   bench/.state/profile/<backend>-<endpoint>.top      top frames, and each part's share (bench/profile_top.py)
#
#   bench/profile.sh                          # postgres and sqlite, get and post, 10 s each
#   BACKENDS=postgres ENDPOINTS=get bench/profile.sh
#
# Env: DUR (10s), CONNS (64), THREADS (1: leaves a core to the server), FREQ (499 Hz),
#      SEED (2000), BACKENDS, ENDPOINTS ("get post"), PG_URL, CARGO_TARGET_DIR, NO_BUILD=1 (profile
#      the release binary as it is).
# Needs: perf (Debian: linux-perf), wrk, python3, psql, inferno (cargo install inferno).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/bench/.state"
OUTDIR="$STATE/profile"
mkdir -p "$OUTDIR"
DUR=${DUR:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
FREQ=${FREQ:-499}
SEED=${SEED:-2000}
BACKENDS=${BACKENDS:-"postgres sqlite"}
ENDPOINTS=${ENDPOINTS:-"get post"}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-3310}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lexiflow-target}
. "$ROOT/bench/lib.sh"
for c in perf wrk python3 psql cargo inferno-collapse-perf inferno-flamegraph; do
  command -v "$c" >/dev/null || { echo "error: $c not found" >&2; exit 1; }
done
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release --locked --quiet --manifest-path "$ROOT/Cargo.toml" --bin lexiflow
BIN="$CARGO_TARGET_DIR/release/lexiflow"

pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT

for backend in $BACKENDS; do
  data="$STATE/profile-data-$backend"
  db_url=$(fresh_database "$backend" "$data" lexiflow_profile)
  full_env "$db_url" "$data"
  env "${FULL_ENV[@]}" PORT=$PORT "$BIN" serve >"$data/log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$PORT/health/liveness" "$pid" || { tail -20 "$data/log"; exit 1; }
  python3 "$ROOT/bench/seed.py" "http://127.0.0.1:$PORT" "$data" "$SEED"
  export TOKEN; TOKEN=$(cat "$data/token")
  export GET_PREFIX=/api/v1/cases/ IDS_FILE="$data/ids"
  for ep in $ENDPOINTS; do
    case $ep in
      get) url="http://127.0.0.1:$PORT/"; script="$ROOT/bench/wrk/get.lua" ;;
      list) url="http://127.0.0.1:$PORT/api/v1/cases?limit=20"; script="$ROOT/bench/wrk/token.lua" ;;
      post) url="http://127.0.0.1:$PORT/api/v1/cases"; script="$ROOT/bench/wrk/post.lua" ;;
    esac
    name="$OUTDIR/$backend-$ep"
    wrk -t"$THREADS" -c"$CONNS" -d3s -s "$script" "$url" >/dev/null # warm-up
    wrk -t"$THREADS" -c"$CONNS" -d"$DUR" -s "$script" "$url" >"$name.wrk" &
    wrk_pid=$!
    sleep 1
    perf record -q -F "$FREQ" -g --call-graph dwarf,32768 -p "$pid" -o "$name.data" -- sleep "$(( ${DUR%s} - 2 ))" 2>/dev/null
    wait "$wrk_pid"
    perf script -i "$name.data" 2>/dev/null | inferno-collapse-perf >"$name.folded"
    inferno-flamegraph --title "LexiFlow $backend $ep (full stack)" <"$name.folded" >"$name.svg"
    { echo "# $backend $ep: $(awk '/Requests\/sec/{print $2}' "$name.wrk") req/s under perf"
      python3 "$ROOT/bench/profile_top.py" "$name.folded"; } >"$name.top"
    rm -f "$name.data"
    echo "== $name.top"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done
