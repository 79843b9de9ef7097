#!/usr/bin/env bash
# The calendar benchmark: 10,000 deadlines computed by rule (the counting alone, then through
# the API beside GET /auth/me in the same run), the .ics feed of a user with 10,000 events
# (added through the API as the table grows), and a sync pass of 1,000 events pushed to and
# pulled from a local fake of Google Calendar API v3; each with wall and CPU time. See
# bench/calendar.rs.
#
#   bench/calendar.sh                      # SQLite (the embedded default)
#   BACKEND=postgres bench/calendar.sh     # PostgreSQL, in a fresh schema
# Env: BACKEND (sqlite|postgres), PG_URL (postgres://postgres@127.0.0.1:5432/test), N_DEADLINES,
# N_EVENTS, N_SYNC, ROUNDS, CARGO_TARGET_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lexiflow-target}
cargo build --release --locked --quiet --manifest-path "$ROOT/Cargo.toml" --example bench-calendar
if [ "${BACKEND:-sqlite}" = postgres ]; then
  PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
  export PGOPTIONS="-c client_min_messages=warning"
  SCHEMA="bench_cal_$(date +%s)"
  psql "$PG_URL" -qc "CREATE SCHEMA $SCHEMA"
  trap 'psql "$PG_URL" -qc "DROP SCHEMA $SCHEMA CASCADE" >/dev/null' EXIT
  DATABASE_URL=$PG_URL SCHEMA=$SCHEMA "$CARGO_TARGET_DIR/release/examples/bench-calendar"
else
  unset DATABASE_URL
  "$CARGO_TARGET_DIR/release/examples/bench-calendar"
fi
