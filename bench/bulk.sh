#!/usr/bin/env bash
# The bulk-insert and report benchmark: 100,000 cases through LexiFlow's bulk path (validated,
# audited, one transaction) on PostgreSQL and SQLite, beside PostgreSQL's own \copy of the
# same rows into an identical table in the same run; then the case summary report uncached
# versus cached. See bench/bulk.rs for what is measured.
#
#   bench/bulk.sh                 # N=100000 ROUNDS=3
# First, the import shape: 100,000 cases in ten POST /cases/bulk requests of 10,000 on a fresh
# database, each request's time printed (last / first at most 1.5).
# Env: N, ROUNDS, BACKENDS (postgres,sqlite), SHAPES (bulk,import), DB_SQLITE_CACHE_MIB, PG_URL (postgres://postgres@127.0.0.1:5432/test), CARGO_TARGET_DIR.
# Needs: cargo, psql (Debian: postgresql-client), a PostgreSQL server.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lexiflow-target}
echo "== bulk benchmark $(date -u +%FT%TZ) on $(nproc) cores"
cargo build --release --locked --quiet --manifest-path "$ROOT/Cargo.toml" --example bench-bulk
exec "$CARGO_TARGET_DIR/release/examples/bench-bulk"
