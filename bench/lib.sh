# Shared by bench/run.sh and bench/profile.sh (sourced): how a benchmarked LexiFlow is started.

# The JWT secret of every benchmarked server (a benchmark, not a deployment).
SECRET="bench-secret-0123456789-0123456789-0123456789"

# fresh_database BACKEND DATA_DIR NAME: empties DATA_DIR and, on PostgreSQL, re-creates the
# database NAME on $PG_URL; prints the DATABASE_URL to use.
fresh_database() {
  rm -rf "$2"
  mkdir -p "$2"
  if [ "$1" = postgres ]; then
    psql -X -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $3" -c "CREATE DATABASE $3" >/dev/null
    echo "$PG_URL/$3"
  else
    echo "sqlite://$2/lexiflow.db?mode=rwc"
  fi
}

# full_env DATABASE_URL DATA_DIR: sets the array FULL_ENV to the environment of LexiFlow as
# deployed in the benchmarks. development, not production, only because production refuses
# SECURITY_LAYER=off for the comparison stacks; it logs JSON lines at info level as production
# does, sends HSTS, and has rate limits raised so that they never refuse.
full_env() {
  FULL_ENV=(APP_ENV=development JWT_SECRET=$SECRET JWT_EXPIRES_IN=4h HOST=127.0.0.1 DATABASE_URL=$1
    LEXIFLOW_DATA_DIR=$2 LOG_FORMAT=json HSTS_MAX_AGE=31536000 THROTTLE_LIMIT=1000000000 THROTTLE_TTL=60000)
}

# wait_http URL PID: waits until URL answers, or fails when PID has exited or after 30 s.
wait_http() {
  for _ in $(seq 1 120); do
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.25
  done
  return 1
}

# track_processes: from now on PIDS lists the processes a script started; they are stopped
# when it exits (and on INT or TERM). Use `forget PID` once one was waited for, `stop PID` to
# end one.
track_processes() {
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  # Only the processes started here: a bare `wait` would also wait for the `tee` behind stdout.
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
}
# forget PID: a process that was waited for is no longer ours to kill (its id may be reused).
forget() {
  local keep=() p
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && [ "$p" != "$1" ] && keep+=("$p"); done
  PIDS=("${keep[@]:-}")
}
# stop PID: ends one process started here.
stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  forget "$1"
}

# jget JSON a.b.c: a field of a JSON document (empty when missing).
jget() {
  node -e 'let v = JSON.parse(process.argv[1]);
    for (const k of process.argv[2].split(".")) v = v == null ? undefined : v[k];
    process.stdout.write(v == null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));' "$1" "$2"
}

# post URL JSON [TOKEN]: the answer's body; fails on a non-2xx answer, showing it.
post() {
  curl -sS --fail-with-body --max-time 30 -H 'Content-Type: application/json' ${3:+-H "Authorization: Bearer $3"} -d "$2" "$1"
}

# cpu_seconds PID: the CPU seconds (user + system, all threads) a process has used.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); printf "%.2f", (f[12] + f[13]) / hz }' "/proc/$1/stat"
}
# rss_kb PID, peak_rss_kb PID: a process's resident set now, and at its peak, in KiB.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
peak_rss_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# rss_parts PID: the resident set split into heap and stacks (anonymous) and mapped files (the
# binary's code and data), and the peak so far, as "anon A MB + file F MB (peak P MB)".
rss_parts() {
  awk '/^RssAnon:/ {a = $2} /^RssFile:/ {f = $2} /^RssShmem:/ {f += $2} /^VmHWM:/ {p = $2}
    END { printf "anon %.1f MB + file %.1f MB (peak %.1f MB)", a / 1024, f / 1024, p / 1024 }' "/proc/$1/status"
}

# to_ms LATENCY: wrk's latency (812.00us, 1.23ms, 2.01s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.2f", n }'
}
