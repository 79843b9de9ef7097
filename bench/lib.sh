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
