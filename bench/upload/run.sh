#!/usr/bin/env bash
# The upload benchmark: a SIZE_MB (100) MiB upload in 5 MiB chunks, in MB/s, against the
# machine's limit and @tus/server, in the same run, plus LexiFlow's RSS growth during a BIG_MB
# (1024) MiB upload. MB is MiB (1,048,576 bytes) throughout; a chunk is 5,242,880 bytes.
#
#   limit      the same bytes written to a new file on the same filesystem with dd (5 MiB
#              blocks), made durable as SYNC says, then hashed: MB/s = SIZE_MB / (write + hash)
#              seconds. Every round times the three writes (SYNC none: page cache only; end:
#              one fsync at the end, conv=fsync; chunk: O_DSYNC, each 5 MiB block on disk
#              before the next, as a store that syncs before acknowledging each PATCH) and both
#              hashers (openssl dgst -sha256, which uses the CPU's SHA instructions, and
#              coreutils sha256sum, software only); SYNC (chunk) and HASH (openssl) pick the
#              pair that is the target's limit, the others are printed beside it.
#   tusnode    npm @tus/server 2.4.5 + @tus/file-store 2.1.1 (tus-server.mjs) on Node
#   sink       the client's ceiling: sink.mjs, a tus server on Node that discards the bytes
#   lexiflow   the release build on a fresh database per backend, as deployed in the benchmarks
#              (bench/lib.sh's full_env) plus UPLOAD_DIR (a fresh directory beside the limit's
#              output) and MAX_FILE_SIZE=2147483648; a firm, a case, tus at /api/v1/uploads
#   rss        per backend, a fresh LexiFlow and one BIG_MB upload; its RSS is sampled every
#              RSS_INTERVAL (0.1) s: growth = peak during the upload - RSS just before it.
#              @tus/server is measured the same way for reference when tusnode is in PARTS.
#
# Every server gets the same client (client.mjs: npm tus-js-client 4.3.1, one connection, no
# retries, the file read slice by slice from disk in READ_KB reads); an upload's MB/s = SIZE_MB / (creation
# request sent -> last PATCH answered). The limit and the uploads are interleaved, ROUNDS (3)
# rounds, each round in a rotated order, after WARMUP (1) round that is not recorded; medians.
# Before each measurement the filesystem is synced (untimed), so that no one pays for the
# previous one's dirty pages. Then the targets, each met or NOT met: LexiFlow / limit >= 0.8;
# LexiFlow / @tus/server >= 2; RSS growth <= 64 MB. See bench/upload/README.md.
#
#   bench/upload/run.sh                                    # everything, both backends
#   PARTS="limit tusnode sink" bench/upload/run.sh         # no LexiFlow (no binary needed)
#   BACKENDS=sqlite PARTS="lexiflow rss" bench/upload/run.sh
#
# Env: PARTS ("limit tusnode sink lexiflow rss"), BACKENDS ("sqlite postgres"), SIZE_MB (100),
#      BIG_MB (1024), CHUNK (5242880 bytes), READ_KB (1024: the client's file reads; 0:
#      tus-js-client's own 64 KiB reads), ROUNDS (3), WARMUP (1 round, not recorded),
#      SYNC (chunk | end | none), HASH (openssl | sha256sum), RSS_INTERVAL (0.1 s),
#      TIMEOUT (600 s an upload may take), WORK (bench/.state/upload-work: the limit's output,
#      the servers' upload directories; emptied at the end unless KEEP=1),
#      PORT_TUS (3998), PORT_SINK (3999), PORT_LEXIFLOW (3996; the second backend gets the next port),
#      PG_URL (postgres://postgres@127.0.0.1:5432; database lexiflow_upload is re-created),
#      CARGO_TARGET_DIR ($HOME/.cache/lexiflow-target), LEXIFLOW_BIN (its release/lexiflow),
#      BUILD (0: use the existing release binary; 1: cargo build --release first),
#      BASE_BIN (another lexiflow binary, e.g. an earlier commit's: each backend also runs as
#      BACKEND@base with it, interleaved in the same rounds, and the results print new / base).
# The source files are made once from /dev/urandom and kept: bench/.state/upload-src-<MB>M.bin.
# Needs: node + npm (installs bench/upload's locked packages on first use), curl, dd,
# sha256sum, openssl (HASH=openssl), psql (postgres).
# Output is also kept in bench/.state/upload-<time>.txt.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STATE="$ROOT/bench/.state"
mkdir -p "$STATE"

PARTS=${PARTS:-"limit tusnode sink lexiflow rss"}
BACKENDS=${BACKENDS:-"sqlite postgres"}
SIZE_MB=${SIZE_MB:-100}
BIG_MB=${BIG_MB:-1024}
CHUNK=${CHUNK:-5242880}
READ_KB=${READ_KB:-1024}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-1}
SYNC=${SYNC:-chunk}
HASH=${HASH:-openssl}
RSS_INTERVAL=${RSS_INTERVAL:-0.1}
TIMEOUT=${TIMEOUT:-600}
WORK=${WORK:-$STATE/upload-work}
KEEP=${KEEP:-0}
PORT_TUS=${PORT_TUS:-3998}
PORT_SINK=${PORT_SINK:-3999}
PORT_LEXIFLOW=${PORT_LEXIFLOW:-3996}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
BUILD=${BUILD:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lexiflow-target}
BIN=${LEXIFLOW_BIN:-$CARGO_TARGET_DIR/release/lexiflow}
BASE_BIN=${BASE_BIN:-}
. "$ROOT/bench/lib.sh"

for p in $PARTS; do
  case $p in limit | tusnode | sink | lexiflow | rss) ;; *) echo "error: unknown part '$p' (limit, tusnode, sink, lexiflow, rss)" >&2; exit 1 ;; esac
done
for b in $BACKENDS; do
  case $b in postgres | sqlite) ;; *) echo "error: unknown backend '$b' (sqlite, postgres)" >&2; exit 1 ;; esac
done
if [ -n "$BASE_BIN" ]; then
  [ -x "$BASE_BIN" ] || { echo "error: BASE_BIN $BASE_BIN is not an executable" >&2; exit 1; }
  BACKENDS="$BACKENDS $(for b in $BACKENDS; do printf '%s@base ' "$b"; done)"
fi
case $SYNC in none | end | chunk) ;; *) echo "error: SYNC must be none, end or chunk" >&2; exit 1 ;; esac
case $HASH in openssl | sha256sum) ;; *) echo "error: HASH must be openssl or sha256sum" >&2; exit 1 ;; esac
[[ $READ_KB =~ ^[0-9]+$ ]] || { echo "error: READ_KB must be a number" >&2; exit 1; }
for v in SIZE_MB BIG_MB CHUNK ROUNDS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "error: $v must be a positive integer" >&2; exit 1; }
done
case $WARMUP in 0 | 1) ;; *) echo "error: WARMUP must be 0 or 1" >&2; exit 1 ;; esac
has() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# LexiFlow runs only in the parts that need it, on each backend.
LEXI=0
{ has lexiflow || has rss; } && [ -n "${BACKENDS// /}" ] && LEXI=1

need=(node npm curl dd sha256sum)
[ "$HASH" = openssl ] && need+=(openssl)
[ "$LEXI" = 1 ] && case " $BACKENDS " in *" postgres "*) need+=(psql) ;; esac
[ "$LEXI" = 1 ] && [ "$BUILD" = 1 ] && need+=(cargo)
for c in "${need[@]}"; do
  command -v "$c" >/dev/null || { echo "error: $c not found (Debian: apt-get install nodejs npm curl coreutils openssl postgresql-client)" >&2; exit 1; }
done
HASHERS="sha256sum"
command -v openssl >/dev/null && HASHERS="openssl sha256sum"
if [ "$LEXI" = 1 ]; then
  if [ "$BUILD" = 1 ]; then
    echo "== building (release)"
    cargo build --release --locked --quiet --manifest-path "$ROOT/Cargo.toml" --bin lexiflow
  fi
  [ -x "$BIN" ] || {
    echo "error: no release binary at $BIN; build it (cargo build --release --bin lexiflow) or run with BUILD=1" >&2
    exit 1
  }
fi

OUT="$STATE/upload-$(date -u +%Y%m%dT%H%M%SZ).txt"
RESULTS="$STATE/upload-results.jsonl"
: >"$RESULTS"
exec > >(tee "$OUT") 2>&1

SIZE=$((SIZE_MB * 1048576))
BIG=$((BIG_MB * 1048576))
SRC="$STATE/upload-src-${SIZE_MB}M.bin"
BIGSRC="$STATE/upload-src-${BIG_MB}M.bin"
mkdir -p "$WORK"

echo "== upload benchmark $(date -u +%FT%TZ) on $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== PARTS=\"$PARTS\" BACKENDS=\"$BACKENDS\" SIZE_MB=$SIZE_MB BIG_MB=$BIG_MB CHUNK=$CHUNK ROUNDS=$ROUNDS WARMUP=$WARMUP"
echo "== MB = MiB (1048576 bytes); an upload's MB/s = SIZE_MB / (creation request sent -> last PATCH answered);" \
  "client reads of $([ "$READ_KB" = 0 ] && echo "64 KiB (tus-js-client's own source)" || echo "$READ_KB KiB")"
case $SYNC in
  none) sync_text="(page cache only, no sync)" ;;
  end) sync_text="+ one fsync at the end (conv=fsync)" ;;
  chunk) sync_text="with O_DSYNC (each $CHUNK-byte block on disk before the next, as an fsync before acknowledging each PATCH)" ;;
esac
hash_text="coreutils sha256sum (software only)"
[ "$HASH" = openssl ] && hash_text="openssl dgst -sha256 (the CPU's SHA instructions where it has them)"
echo "== the target's limit: SYNC=$SYNC HASH=$HASH: dd bs=$CHUNK of the same bytes to a new file $sync_text," \
  "then $hash_text of the written file"
echo "== work directory $WORK: $(df -PT "$WORK" | awk 'NR==2 {printf "%s %s, %.0f GB free", $1, $2, $5 / 1048576}')"
[ "$LEXI" = 1 ] && echo "== binary $BIN ($(date -u -r "$BIN" +%FT%TZ))"
[ "$LEXI" = 1 ] && [ -n "$BASE_BIN" ] && echo "== base binary $BASE_BIN ($(date -u -r "$BASE_BIN" +%FT%TZ)): stacks BACKEND@base"

if [ ! -d "$HERE/node_modules" ]; then
  echo "== npm ci (bench/upload)"
  (cd "$HERE" && npm ci --silent --no-audit --no-fund)
fi
echo "== $(node -e 'const d = process.argv[1] + "/node_modules/", v = (p) => { try { return require(d + p + "/package.json").version; } catch { return "?"; } };
  console.log(`@tus/server ${v("@tus/server")}, @tus/file-store ${v("@tus/file-store")}, tus-js-client ${v("tus-js-client")}, node ${process.version}`);' "$HERE")"

# digest FILE [HASHER]: the file's SHA-256 in hex.
digest() {
  case ${2:-$HASH} in
    openssl) openssl dgst -sha256 -r "$1" | cut -d' ' -f1 ;;
    *) sha256sum "$1" | cut -d' ' -f1 ;;
  esac
}
# source_file PATH BYTES: makes PATH (a PDF header, then random bytes) unless it has that size; keeps its SHA-256
# in PATH.sha256; reads it once so that it is in the page cache for everyone.
source_file() {
  local f=$1 n=$2
  if [ ! -f "$f" ] || [ "$(stat -c %s "$f")" != "$n" ] || [ ! -s "$f.sha256" ] || [ "$(head -c 5 "$f")" != "%PDF-" ]; then
    echo "== making $f ($((n / 1048576)) MiB from /dev/urandom)"
    rm -f "$f" "$f.sha256"
    # A PDF header, then random bytes: LexiFlow takes only files whose bytes are an accepted
    # type (it sniffs them), and random bytes are not one.
    { printf '%%PDF-1.7\n%%\342\343\317\323\n'; head -c "$((n - 15))" /dev/urandom; } >"$f.tmp"
    mv "$f.tmp" "$f"
    digest "$f" >"$f.sha256"
  fi
  cat "$f" >/dev/null
}
source_file "$SRC" "$SIZE"
SRC_SUM=$(cat "$SRC.sha256")
if has rss; then source_file "$BIGSRC" "$BIG"; fi
[ "$(df -P "$WORK" | awk 'NR==2 {print $1}')" = "$(df -P "$SRC" | awk 'NR==2 {print $1}')" ] ||
  echo "== note: the source files and $WORK are on different filesystems"

track_processes
# The limit's output and the uploads are large: removed at the end unless KEEP=1 (only what
# this script makes in WORK).
remove_work() { rm -rf "$WORK/limit" "$WORK"/tusnode-* "$WORK"/lexiflow-* "$WORK"/marker-* "$WORK/round-src.bin"; }
trap 'cleanup; [ "$KEEP" = 1 ] || remove_work' EXIT

# round_source ROUND: this round's file, RSRC (SHA-256 RSUM): the source with a mark of the
# round after its PDF header, so that no round uploads bytes a LexiFlow already holds (it
# stores the same bytes once per firm, and the stored-bytes check would find no new file).
# Every contender of the round sends the same file; it is read once so it is in the page cache.
round_source() {
  RSRC="$WORK/round-src.bin"
  cp "$SRC" "$RSRC"
  printf 'round %04d %s' "$1" "$(date +%s%N)" | dd of="$RSRC" bs=1 seek=15 conv=notrunc status=none
  RSUM=$(digest "$RSRC")
  cat "$RSRC" >/dev/null
}

now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", (b - a) / 1e9 }'; }
# settle: no dirty pages left from the measurement before (untimed).
settle() { sync -f "$WORK"; }

# ---- servers

# start_tus TAG: a fresh @tus/server; sets TUS_PID, TUS_DIR, TUS_LOG.
start_tus() {
  TUS_DIR="$WORK/tusnode-$1"
  TUS_LOG="$STATE/upload-tusnode-$1.log"
  rm -rf "$TUS_DIR"
  mkdir -p "$TUS_DIR"
  node "$HERE/tus-server.mjs" PORT="$PORT_TUS" DIR="$TUS_DIR" >"$TUS_LOG" 2>&1 &
  TUS_PID=$!
  PIDS+=("$TUS_PID")
  wait_http "http://127.0.0.1:$PORT_TUS/health" "$TUS_PID" || { echo "error: @tus/server did not start"; tail -20 "$TUS_LOG"; exit 1; }
}

# start_lexiflow BACKEND TAG PORT: LexiFlow on a fresh database and a fresh UPLOAD_DIR, a firm
# registered and a case created; sets L_PID, L_BASE, L_TOKEN, L_CASE, L_LOG, L_DIR for BACKEND.
declare -A L_PID L_BASE L_TOKEN L_CASE L_LOG L_DIR
# start_lexiflow KEY TAG PORT: KEY is a backend, or BACKEND@base for BASE_BIN.
start_lexiflow() {
  local backend=$1 tag=$2 port=$3 data db_url reg made pid base bin=$BIN db=lexiflow_upload
  case $backend in *@base) bin=$BASE_BIN db=lexiflow_upload_base ;; esac
  data="$STATE/data-upload-${backend/@/-}"
  db_url=$(fresh_database "${backend%@base}" "$data" "$db")
  full_env "$db_url" "$data"
  L_DIR[$backend]="$WORK/lexiflow-${backend/@/-}-$tag"
  rm -rf "${L_DIR[$backend]}"
  mkdir -p "${L_DIR[$backend]}"
  L_LOG[$backend]="$STATE/upload-lexiflow-${backend/@/-}-$tag.log"
  base="http://127.0.0.1:$port"
  env "${FULL_ENV[@]}" PORT="$port" UPLOAD_DIR="${L_DIR[$backend]}" MAX_FILE_SIZE=2147483648 "$bin" serve >"${L_LOG[$backend]}" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_http "$base/health/liveness" "$pid" || { echo "error: LexiFlow ($backend) did not start"; tail -20 "${L_LOG[$backend]}"; exit 1; }
  reg=$(post "$base/api/v1/auth/register" \
    '{"firmName":"Bench","email":"bench@bench.test","password":"correct horse battery staple","firstName":"B","lastName":"Ench"}') ||
    { echo "error: registering the firm failed: $reg"; exit 1; }
  L_TOKEN[$backend]=$(jget "$reg" data.accessToken)
  made=$(post "$base/api/v1/cases" '{"caseNumber":"U-1","title":"Upload bench","type":"civil"}' "${L_TOKEN[$backend]}") ||
    { echo "error: creating the case failed: $made"; exit 1; }
  L_CASE[$backend]=$(jget "$made" data.id)
  [ -n "${L_TOKEN[$backend]}" ] && [ -n "${L_CASE[$backend]}" ] || { echo "error: no token or case id: $reg $made"; exit 1; }
  L_PID[$backend]=$pid
  L_BASE[$backend]=$base
}

# log_summary LOG: the server log's warnings and errors, counted, the first few shown.
log_summary() {
  local w e
  w=$(grep -c '"level":"WARN"' "$1" || true)
  e=$(grep -c '"level":"ERROR"' "$1" || true)
  echo "   server log: ${w:-0} warnings, ${e:-0} errors ($1)"
  grep -E '"level":"(WARN|ERROR)"' "$1" | head -5 | cut -c1-240 | sed 's/^/     /' || true
}

# start_sink: the client's ceiling (sink.mjs); sets SINK_PID.
start_sink() {
  node "$HERE/sink.mjs" PORT="$PORT_SINK" >"$STATE/upload-sink.log" 2>&1 &
  SINK_PID=$!
  PIDS+=("$SINK_PID")
  wait_http "http://127.0.0.1:$PORT_SINK/health" "$SINK_PID" || { echo "error: the sink did not start"; tail -20 "$STATE/upload-sink.log"; exit 1; }
}

# ---- measurements (each appends one JSON line to RESULTS)

# measure_limit ROUND: the three writes, then both hashers on the last written file.
measure_limit() {
  local round=$1 out="$WORK/limit/out.bin" v t0 t1 flag sum h rec
  mkdir -p "$WORK/limit"
  declare -A w hs
  # The target's variant last, so that the hashes read the file it wrote.
  for v in $(printf '%s\n' none end chunk | grep -vx "$SYNC") "$SYNC"; do
    rm -f "$out"
    settle
    case $v in none) flag= ;; end) flag=conv=fsync ;; chunk) flag=oflag=dsync ;; esac
    t0=$(now_ns)
    dd if="$RSRC" of="$out" bs="$CHUNK" $flag status=none
    t1=$(now_ns)
    w[$v]=$(secs "$t0" "$t1")
  done
  for h in $HASHERS; do
    t0=$(now_ns)
    sum=$(digest "$out" "$h")
    t1=$(now_ns)
    hs[$h]=$(secs "$t0" "$t1")
    [ "$sum" = "$RSUM" ] || { echo "error: $h of the written file is $sum, not the source's $RSUM"; exit 1; }
  done
  rm -f "$out"
  rec=$(printf '{"part":"limit","round":%s,"write":{"none":%s,"end":%s,"chunk":%s},"hash":{"sha256sum":%s,"openssl":%s}}' \
    "$round" "${w[none]}" "${w[end]}" "${w[chunk]}" "${hs[sha256sum]}" "${hs[openssl]:-null}")
  echo "$rec" >>"$RESULTS"
  node -e 'const r = JSON.parse(process.argv[1]), mb = +process.argv[2], s = process.argv[3], h = process.argv[4];
    const f = (x) => x == null ? "-" : x.toFixed(3);
    console.log(`${r.round ? "" : "(warm-up) "}limit       round ${r.round}  ${(mb / (r.write[s] + r.hash[h])).toFixed(1).padStart(7)} MB/s` +
      `   write none ${f(r.write.none)} s, end ${f(r.write.end)} s, chunk ${f(r.write.chunk)} s;` +
      ` sha-256 openssl ${f(r.hash.openssl)} s, sha256sum ${f(r.hash.sha256sum)} s`);' "$rec" "$SIZE_MB" "$SYNC" "$HASH"
}

# stored_check FILE_OR_EMPTY: "match", "MISMATCH" or "not found" for the bytes a server stored.
stored_check() {
  [ -n "$1" ] && [ -f "$1" ] || { echo "not found"; return; }
  [ "$(digest "$1")" = "$2" ] && echo match || echo MISMATCH
}

# upload STACK ROUND FILE SUM: one upload with client.mjs; STACK is tusnode, sink or lexiflow-BACKEND.
# A failed upload prints why and marks the stack failed (it is skipped from then on).
declare -A FAILED
ERRORS=0
upload() {
  local stack=$1 round=$2 file=$3 sum=$4 backend= pid endpoint token= case_id= dir cout cerr cpid cpu0 cpu1 res stored marker
  case $stack in
    tusnode) pid=$TUS_PID endpoint="http://127.0.0.1:$PORT_TUS/files" dir=$TUS_DIR case_id=00000000-0000-0000-0000-000000000000 ;;
    sink) pid=$SINK_PID endpoint="http://127.0.0.1:$PORT_SINK/files" dir= case_id=00000000-0000-0000-0000-000000000000 ;;
    lexiflow-*)
      backend=${stack#lexiflow-}
      pid=${L_PID[$backend]} endpoint="${L_BASE[$backend]}/api/v1/uploads" dir=${L_DIR[$backend]}
      token=${L_TOKEN[$backend]} case_id=${L_CASE[$backend]}
      ;;
  esac
  cout="$STATE/upload-client-$stack.out"
  cerr="$STATE/upload-client-$stack.err"
  marker="$WORK/marker-$stack"
  settle
  touch "$marker"
  cpu0=$(cpu_seconds "$pid")
  node "$HERE/client.mjs" ENDPOINT="$endpoint" FILE="$file" CHUNK="$CHUNK" TOKEN="$token" CASE_ID="$case_id" \
    READ_KB="$READ_KB" TIMEOUT="$TIMEOUT" PROGRESS="${PROGRESS:-0}" >"$cout" 2>"$cerr" &
  cpid=$!
  PIDS+=("$cpid")
  [ -z "${ON_CLIENT:-}" ] || "$ON_CLIENT" "$pid" "$cpid"
  wait "$cpid" || true
  forget "$cpid"
  cpu1=$(cpu_seconds "$pid" 2>/dev/null || echo "$cpu0")
  res=$(tail -n1 "$cout")
  [ -n "$res" ] || res='{}'
  if [ "$(jget "$res" ok)" != true ]; then
    local status body why
    status=$(jget "$res" status)
    body=$(jget "$res" body)
    if [ -n "$status" ]; then why="$(jget "$res" stage) answered HTTP $status: ${body:0:300}"; else why="$(jget "$res" stage) failed: $(jget "$res" message)"; fi
    [ "$res" != '{}' ] || why="the client printed nothing: $(tail -5 "$cerr")"
    kill -0 "$pid" 2>/dev/null || why="$why (the server died)"
    echo "error: $stack round $round: $why"
    case $stack in lexiflow-*)
      if [ "$status" = 404 ] && case $body in *'no route'*) true ;; *) false ;; esac; then
        echo "error: $BIN has no tus endpoint at /api/v1/uploads (built before uploads?): rebuild it (BUILD=1)"
        why="no /api/v1/uploads in this binary"
      fi
      log_summary "${L_LOG[$backend]}"
      ;;
    esac
    FAILED[$stack]=$why
    ERRORS=1
    printf '{"part":"upload","stack":"%s","round":%s,"ok":false,"error":%s}\n' "$stack" "$round" \
      "$(node -p 'JSON.stringify(process.argv[1])' "$why")" >>"$RESULTS"
    return 1
  fi
  # The stored bytes, outside the timing: @tus/server keeps DIR/<id>; for LexiFlow, the one
  # file under UPLOAD_DIR of the upload's size written since the upload started.
  if [ "$stack" = sink ]; then
    stored="not kept"
  elif [ "$stack" = tusnode ]; then
    local id
    id=$(jget "$res" location)
    id=${id##*/}
    stored=$(stored_check "$dir/$id" "$sum")
    rm -f "$dir/$id" "$dir/$id.json"
  else
    local found
    found=$(find "$dir" -type f -newer "$marker" -size "$(stat -c %s "$file")c" 2>/dev/null)
    if [ "$(printf '%s' "$found" | grep -c .)" = 1 ]; then stored=$(stored_check "$found" "$sum"); else stored="not found"; fi
  fi
  rm -f "$marker"
  RES=$(node -e 'const [res, stack, backend, round, c0, c1, stored] = process.argv.slice(1);
    console.log(JSON.stringify({ part: "upload", stack, backend: backend || null, round: round === "rss" ? round : +round, ...JSON.parse(res),
      cpu: +(c1 - c0).toFixed(2), stored }));' "$res" "$stack" "$backend" "$round" "$cpu0" "$cpu1" "$stored")
  node -e 'const r = JSON.parse(process.argv[1]), name = { tusnode: "@tus/server", sink: "sink" }[r.stack] ?? r.stack;
    console.log(`${r.round === 0 ? "(warm-up) " : ""}${name.padEnd(11)} ${r.round === "rss" ? "   " : "round"} ${r.round}  ${r.mbps.toFixed(1).padStart(7)} MB/s` +
      `   ${r.seconds.toFixed(3)} s, ${r.patches} PATCHes, final offset ${r.headOffset} (HEAD ${r.headStatus}),` +
      ` server CPU ${r.cpu.toFixed(2)} s, stored bytes: ${r.stored}`);' "$RES"
  [ "$round" = rss ] || echo "$RES" >>"$RESULTS"
}

# ---- rounds: the limit and the 100 MB uploads, interleaved

STACKS=()
has limit && STACKS+=(limit)
has tusnode && STACKS+=(tusnode)
has sink && STACKS+=(sink)
if has lexiflow; then for b in $BACKENDS; do STACKS+=("lexiflow-$b"); done; fi

if [ ${#STACKS[@]} -gt 0 ]; then
  has tusnode && start_tus rounds
  has sink && start_sink
  if has lexiflow; then
    i=0
    for b in $BACKENDS; do
      # The backends next to each other (the documented ports); BASE_BIN's past the Node servers'.
      case $b in
        *@base) start_lexiflow "$b" rounds $((PORT_LEXIFLOW + 10 + i)) ;;
        *) start_lexiflow "$b" rounds $((PORT_LEXIFLOW + i)) ;;
      esac
      echo "== LexiFlow ($b) on ${L_BASE[$b]}: case ${L_CASE[$b]}, UPLOAD_DIR ${L_DIR[$b]}"
      i=$((i + 1))
    done
  fi
  echo "== $SIZE_MB MiB ($SIZE bytes, sha256 ${SRC_SUM:0:16}...) in $CHUNK-byte chunks: ${STACKS[*]}; $ROUNDS rounds, each in a rotated order"
  first=1
  [ "$WARMUP" = 1 ] && first=0
  for round in $(seq "$first" "$ROUNDS"); do
    round_source "$round"
    n=${#STACKS[@]}
    for k in $(seq 0 $((n - 1))); do
      s=${STACKS[$(((k + round) % n))]}
      if [ "$s" = limit ]; then
        measure_limit "$round"
      elif [ -z "${FAILED[$s]:-}" ]; then
        upload "$s" "$round" "$RSRC" "$RSUM" || true
      fi
    done
  done
  if has tusnode; then stop "$TUS_PID"; fi
  if has sink; then stop "$SINK_PID"; fi
  if has lexiflow; then
    for b in $BACKENDS; do
      stop "${L_PID[$b]}"
      [ -n "${FAILED[lexiflow-$b]:-}" ] || log_summary "${L_LOG[$b]}"
    done
  fi
  [ "$KEEP" = 1 ] || remove_work
fi

# ---- RSS during a BIG_MB upload

RSS_SAMPLES=
# sample_rss SERVER_PID CLIENT_PID: the server's RSS every RSS_INTERVAL s while the client runs.
sample_rss() {
  while kill -0 "$2" 2>/dev/null; do
    rss_kb "$1" >>"$RSS_SAMPLES" 2>/dev/null || true
    sleep "$RSS_INTERVAL"
  done
}

# rss_run STACK: a fresh server, one BIG_MB upload, RSS sampled.
rss_run() {
  local stack=$1 backend= pid log before hwm0 hwm1 after peak rec
  case $stack in
    tusnode) start_tus rss; pid=$TUS_PID log=$TUS_LOG ;;
    lexiflow-*)
      backend=${stack#lexiflow-}
      start_lexiflow "$backend" rss "$PORT_LEXIFLOW"
      pid=${L_PID[$backend]} log=${L_LOG[$backend]}
      ;;
  esac
  echo "== rss $stack: a fresh server, one $BIG_MB MiB upload, RSS every ${RSS_INTERVAL}s"
  sleep 1
  before=$(rss_kb "$pid")
  hwm0=$(peak_rss_kb "$pid")
  RSS_SAMPLES="$STATE/upload-rss-$stack.samples"
  : >"$RSS_SAMPLES"
  if ON_CLIENT=sample_rss PROGRESS=1 upload "$stack" rss "$BIGSRC" "$(cat "$BIGSRC.sha256")"; then
    hwm1=$(peak_rss_kb "$pid")
    after=$(rss_kb "$pid")
    peak=$(sort -n "$RSS_SAMPLES" | tail -1)
    rec=$(node -e 'const [stack, backend, res, before, hwm0, hwm1, after, peak, n] = process.argv.slice(1);
      // VmHWM is the process lifetime peak: when it rose during the upload, the upload reached it.
      const sampled = +peak, top = +hwm1 > +hwm0 ? Math.max(sampled, +hwm1) : sampled;
      const r = JSON.parse(res);
      console.log(JSON.stringify({ part: "rss", stack, backend: backend || null, beforeKb: +before, sampledPeakKb: sampled,
        hwmBeforeKb: +hwm0, hwmAfterKb: +hwm1, peakKb: top, afterKb: +after, growthKb: top - +before, samples: +n,
        mbps: r.mbps, seconds: r.seconds, stored: r.stored, bytes: r.bytes }));' \
      "$stack" "$backend" "$RES" "$before" "$hwm0" "$hwm1" "$after" "$peak" "$(wc -l <"$RSS_SAMPLES")")
    echo "$rec" >>"$RESULTS"
    node -e 'const r = JSON.parse(process.argv[1]), m = (k) => (k / 1024).toFixed(1);
      console.log(`   RSS before ${m(r.beforeKb)} MB, peak ${m(r.peakKb)} MB (sampled ${m(r.sampledPeakKb)}, ${r.samples} samples;` +
        ` VmHWM ${m(r.hwmBeforeKb)} -> ${m(r.hwmAfterKb)}), after ${m(r.afterKb)} MB: growth ${m(r.growthKb)} MB`);' "$rec"
  else
    printf '{"part":"rss","stack":"%s","backend":"%s","error":%s}\n' "$stack" "$backend" \
      "$(node -p 'JSON.stringify(process.argv[1])' "${FAILED[$stack]}")" >>"$RESULTS"
  fi
  stop "$pid"
  [ "$stack" = tusnode ] || log_summary "$log"
  [ "$KEEP" = 1 ] || rm -rf "$WORK"/tusnode-rss "$WORK"/lexiflow-*-rss
}

if has rss; then
  has tusnode && rss_run tusnode
  for b in $BACKENDS; do
    case ${FAILED[lexiflow-$b]:-} in
      "no /api/v1/uploads in this binary")
        echo "== rss lexiflow-$b: skipped (${FAILED[lexiflow-$b]})"
        printf '{"part":"rss","stack":"lexiflow-%s","backend":"%s","error":"%s"}\n' "$b" "$b" "${FAILED[lexiflow-$b]}" >>"$RESULTS"
        ;;
      *) unset "FAILED[lexiflow-$b]"; rss_run "lexiflow-$b" ;;
    esac
  done
fi

# ---- results

node - "$RESULTS" "$SIZE_MB" "$SYNC" "$HASH" <<'JS'
const fs = require("node:fs");
const [file, sizeMb, SYNC, HASH] = process.argv.slice(2);
const rows = fs.readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
const f = (x, d = 1) => (x == null || Number.isNaN(x) ? "-" : Number(x).toFixed(d));
const median = (v) => { const s = v.filter((x) => x != null).sort((a, b) => a - b); const m = s.length >> 1;
  return !s.length ? null : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const mark = (ok) => (ok ? "met" : "NOT met");
const MB = +sizeMb;
const limitMbps = (r, s = SYNC, h = HASH) => (r.hash[h] == null ? null : MB / (r.write[s] + r.hash[h]));

const lim = rows.filter((r) => r.part === "limit" && r.round > 0);
const ups = rows.filter((r) => r.part === "upload" && r.round > 0);
// Every stack that ran, also one that failed (in the warm-up too).
const stacks = [...new Set(rows.filter((r) => r.part === "upload").map((r) => r.stack))];
const name = (s) => ({ tusnode: "@tus/server" })[s] ?? s;
const rounds = [...new Set([...lim, ...ups].map((r) => r.round))].sort((a, b) => a - b);
const per = {}; // per[stack][round] = MB/s
if (lim.length) per.limit = Object.fromEntries(lim.map((r) => [r.round, limitMbps(r)]));
for (const s of stacks) per[s] = Object.fromEntries(ups.filter((r) => r.stack === s && r.ok).map((r) => [r.round, r.mbps]));
const cols = Object.keys(per);
const targets = [];
if (cols.length) {
  const how = `dd ${SYNC === "none" ? "(no sync)" : SYNC === "end" ? "+ fsync" : "O_DSYNC per chunk"} + ${HASH}`;
  console.log(`\n== ${MB} MiB upload, MB/s (MiB/s)${per.limit ? `; limit = ${how}` : ""}`);
  const w = [7, ...cols.map((c) => Math.max(name(c).length, 9))];
  const line = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(w[0]) : String(c).padStart(w[i]))).join("  ");
  console.log(line(["round", ...cols.map(name)]));
  for (const n of rounds) console.log(line([n, ...cols.map((c) => f(per[c][n]))]));
  const med = Object.fromEntries(cols.map((c) => [c, median(Object.values(per[c]))]));
  console.log(line(["median", ...cols.map((c) => f(med[c]))]));

  if (lim.length) {
    console.log("\n== the limit's parts, medians in seconds (MB/s of each write + hash pair below)");
    const wm = Object.fromEntries(["none", "end", "chunk"].map((s) => [s, median(lim.map((r) => r.write[s]))]));
    const hm = Object.fromEntries(["openssl", "sha256sum"].map((h) => [h, median(lim.map((r) => r.hash[h]))]));
    console.log(`write: none (page cache) ${f(wm.none, 3)}  end (fsync once) ${f(wm.end, 3)}  chunk (O_DSYNC) ${f(wm.chunk, 3)};` +
      `  sha-256: openssl ${f(hm.openssl, 3)}  sha256sum ${f(hm.sha256sum, 3)}`);
    for (const h of ["openssl", "sha256sum"]) {
      if (hm[h] == null) continue;
      console.log(`  + ${h.padEnd(9)}: ` + ["none", "end", "chunk"].map((s) =>
        `${s} ${f(median(lim.map((r) => limitMbps(r, s, h))))} MB/s${s === SYNC && h === HASH ? " (the limit)" : ""}`).join(", "));
    }
  }

  const ratio = (a, b) => {
    const rs = rounds.map((n) => (per[a][n] != null && per[b][n] ? per[a][n] / per[b][n] : null)).filter((x) => x != null);
    return { perRound: median(rs), ofMedians: med[a] != null && med[b] ? med[a] / med[b] : null, n: rs.length };
  };
  const rtext = (r) => `${f(r.perRound, 3)} (median of ${r.n} rounds' ratios; ratio of medians ${f(r.ofMedians, 3)})`;
  if (per.limit && (per.tusnode || per.sink)) console.log("");
  if (per.limit && per.tusnode) console.log(`@tus/server / limit = ${rtext(ratio("tusnode", "limit"))}   (for reference)`);
  if (per.limit && per.sink) console.log(`sink / limit = ${rtext(ratio("sink", "limit"))}   (the client's ceiling against the limit)`);
  const fails = rows.filter((r) => r.part === "upload" && r.ok === false);
  for (const s of stacks.filter((s) => s.startsWith("lexiflow-"))) {
    const failed = fails.find((r) => r.stack === s);
    const bad = ups.filter((r) => r.stack === s && r.ok && r.stored !== "match").length;
    const note = failed ? ` (failed: ${failed.error})` : bad ? ` (${bad} uploads' stored bytes not found or different)` : "";
    if (per.limit) {
      const r = ratio(s, "limit");
      targets.push(`${s} / limit = ${rtext(r)}   target >= 0.8: ${mark(!failed && !bad && r.perRound >= 0.8)}${note}`);
    }
    if (per.tusnode) {
      const r = ratio(s, "tusnode");
      targets.push(`${s} / @tus/server = ${rtext(r)}   target >= 2: ${mark(!failed && !bad && r.perRound >= 2)}${note}`);
    }
  }
  for (const s of stacks.filter((s) => s.startsWith("lexiflow-") && !s.endsWith("@base"))) {
    if (per[`${s}@base`]) console.log(`${s} / ${s}@base = ${rtext(ratio(s, `${s}@base`))}   (this binary against BASE_BIN)`);
  }
  for (const r of ups.filter((r) => r.ok && r.stored !== "match" && r.stack !== "sink"))
    console.log(`note: ${name(r.stack)} round ${r.round}: stored bytes ${r.stored}`);
}

const rss = rows.filter((r) => r.part === "rss");
if (rss.length) {
  console.log("\n== RSS during one upload (MB = MiB)");
  const w = [17, 9, 9, 9, 9, 8];
  const line = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(w[0]) : String(c).padStart(w[i]))).join("  ");
  console.log(line(["stack", "before", "peak", "growth", "after", "MB/s"]));
  for (const r of rss) {
    if (r.error) { console.log(line([name(r.stack), "-", "-", "-", "-", "-"]) + `  failed: ${r.error}`); continue; }
    console.log(line([name(r.stack), f(r.beforeKb / 1024), f(r.peakKb / 1024), f(r.growthKb / 1024), f(r.afterKb / 1024), f(r.mbps)]));
  }
  for (const r of rss.filter((r) => r.stack.startsWith("lexiflow-"))) {
    const mb = r.error ? null : r.growthKb / 1024;
    targets.push(`${r.stack} RSS growth during a ${r.error ? "big" : f(r.bytes / 1048576, 0) + " MiB"} upload = ${f(mb)} MB   target <= 64 MB: ` +
      `${mark(mb != null && mb <= 64 && r.stored !== "MISMATCH")}${r.error ? ` (failed: ${r.error})` : ""}`);
  }
}
if (targets.length) {
  console.log("\n== targets");
  for (const t of targets) console.log(t);
}
JS
echo "== kept in $OUT"
[ "$ERRORS" = 0 ] || exit 1
