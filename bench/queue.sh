#!/usr/bin/env bash
# The job-queue benchmark: 10,000 no-op jobs enqueued in bulk (batches of 1,000), then
# processed by one worker with concurrency 10 — lexiflow-queue on SQLite and on PostgreSQL,
# and BullMQ (npm `bullmq`) on the local Redis, in the same run. Prints jobs/s for enqueue
# and processing, and the ratio of our PostgreSQL processing rate to BullMQ's (target >= 1).
#
#   bench/queue.sh                 # ROUNDS=2
# Env: N (10000), BATCH (1000), CONCURRENCY (10), ROUNDS (2), PG_URL
#      (postgres://postgres@127.0.0.1:5432/test), REDIS_HOST/REDIS_PORT (127.0.0.1:6379).
# Needs: cargo, node + npm (installs bench/bullmq's locked packages on first use), PostgreSQL, Redis.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lexiflow-target}
export N=${N:-10000} BATCH=${BATCH:-1000} CONCURRENCY=${CONCURRENCY:-10}
ROUNDS=${ROUNDS:-2}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
OUT=$(mktemp)

echo "== queue benchmark $(date -u +%FT%TZ) on $(nproc) cores; N=$N BATCH=$BATCH CONCURRENCY=$CONCURRENCY ROUNDS=$ROUNDS"
cargo build --release --locked --quiet --manifest-path "$ROOT/Cargo.toml" -p lexiflow-queue --example queue_bench
BIN="$CARGO_TARGET_DIR/release/examples/queue_bench"
if [ ! -d "$ROOT/bench/bullmq/node_modules" ]; then
  (cd "$ROOT/bench/bullmq" && npm ci --silent --no-audit --no-fund)
fi
for r in $(seq 1 "$ROUNDS"); do
  DATABASE_URL=sqlite "$BIN" | tee -a "$OUT"
  DATABASE_URL=$PG_URL "$BIN" | tee -a "$OUT"
  (cd "$ROOT/bench/bullmq" && node bench.js) | tee -a "$OUT"
done
python3 - "$OUT" <<'PY'
import re, statistics, sys, collections
rates = collections.defaultdict(lambda: {"enqueue": [], "process": []})
for line in open(sys.argv[1]):
    m = re.match(r"(lexiflow-queue (\w+)|bullmq [\d.]+) .*enqueue=(\d+) .*process=(\d+)", line)
    if not m:
        continue
    who = f"lexiflow-queue {m.group(2)}" if m.group(2) else "bullmq"
    rates[who]["enqueue"].append(int(m.group(3)))
    rates[who]["process"].append(int(m.group(4)))
print("\n== median jobs/s")
for who, r in rates.items():
    print(f"{who:26} enqueue {statistics.median(r['enqueue']):8.0f}   process {statistics.median(r['process']):8.0f}")
if "bullmq" in rates and "lexiflow-queue postgres" in rates:
    ratio = statistics.median(rates["lexiflow-queue postgres"]["process"]) / statistics.median(rates["bullmq"]["process"])
    print(f"\nprocessing, PostgreSQL / BullMQ = {ratio:.2f}  ({'ok' if ratio >= 1 else 'BELOW TARGET'})")
PY
rm -f "$OUT"
