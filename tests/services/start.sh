#!/usr/bin/env bash
# Installs, starts and checks the local services the upload and Redis TLS tests need:
#   * ClamAV's clamd (Debian package clamav-daemon) on 127.0.0.1:3310, with a private config and
#     a private database that holds ONE signature: the EICAR test file (no freshclam, no network);
#   * moto's S3-compatible server (PyPI moto[server], pinned in requirements-s3.txt) on
#     127.0.0.1:5055, from the venv $HOME/.cache/lexiflow-venv;
#   * two Redis servers speaking only TLS (Debian's redis-server), with a private test CA made
#     here by openssl in $HOME/.cache/lexiflow-redis-tls: on 6380 any client, on 6381 only
#     clients with a certificate from that CA.
# Idempotent: a service that already answers is left alone, so a second run takes milliseconds.
#
# Usage:
#   tests/services/start.sh            start/check both; print VAR=value lines on stdout
#   eval "$(tests/services/start.sh --env)"   same, but print `export VAR=value` lines
#   tests/services/start.sh --stop     stop the instances this script started (pid files)
# Progress goes to stderr as `== HH:MM:SS message`; stdout carries only the variable lines.
#
# Overrides (optional): LEXIFLOW_CLAMD_PORT (3310), LEXIFLOW_MOTO_PORT (5055),
# LEXIFLOW_REDIS_TLS_PORT (6380; the client-certificate one is the next port),
# LEXIFLOW_VENV ($HOME/.cache/lexiflow-venv).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODE=plain
case "${1:-}" in
  "") ;;
  --env) MODE=env ;;
  --stop) MODE=stop ;;
  -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--env|--stop]" >&2; exit 2 ;;
esac

HOST=127.0.0.1
CLAMD_PORT="${LEXIFLOW_CLAMD_PORT:-3310}"
MOTO_PORT="${LEXIFLOW_MOTO_PORT:-5055}"
CACHE="$HOME/.cache"
CLAMD_DIR="$CACHE/lexiflow-clamd"
MOTO_DIR="$CACHE/lexiflow-moto"
REDIS_TLS_PORT="${LEXIFLOW_REDIS_TLS_PORT:-6380}"
REDIS_MTLS_PORT=$((REDIS_TLS_PORT + 1))
REDIS_TLS_DIR="$CACHE/lexiflow-redis-tls"
VENV="${LEXIFLOW_VENV:-$CACHE/lexiflow-venv}"
EICAR_MD5=44d88612fea8a8f36de82e1278abb02f
# The 68-byte EICAR test string, base64-encoded so that no shell quoting can touch its
# `\`, `$`, `!` and `%` characters. Decoded it is X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-...-FILE!$H+H*
EICAR_B64='WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo='
EICAR_SIG_NAME=LexiFlow-Test-EICAR

# fd 9 = the caller's stdout (only the variable lines go there); everything else -> stderr.
# The daemons are started with 8>&- 9>&- so they never hold the caller's pipe (or our lock)
# open: `eval "$(start.sh --env)"` would otherwise wait for them forever.
exec 9>&1 1>&2

log() { echo "== $(date -u +%H:%M:%S) $*"; }
die() { log "ERROR: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

mkdir -p "$CACHE"
exec 8>"$CACHE/lexiflow-services.lock"
flock -w 300 8 || die "another tests/services/start.sh holds $CACHE/lexiflow-services.lock"

# --- helpers ----------------------------------------------------------------------------------

# apt_install PKG...: quiet install that never lets a package's maintainer scripts start the
# service it ships (policy-rc.d answers 101 unless the machine already has one of its own).
apt_install() {
  (
    export DEBIAN_FRONTEND=noninteractive
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
      $SUDO chmod +x /usr/sbin/policy-rc.d
    fi
    out=$(mktemp)
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "$@"; } \
      >"$out" 2>&1 || { cat "$out"; rm -f "$out"; exit 1; }
    rm -f "$out"
  )
}

# clamd_cmd CMD: one newline-delimited clamd command (PING, VERSION); prints the reply line.
clamd_cmd() (
  exec 3<>"/dev/tcp/$HOST/$CLAMD_PORT" || exit 1
  printf 'n%s\n' "$1" >&3
  IFS= read -r -t 10 reply <&3 || exit 1
  printf '%s\n' "$reply"
) 2>/dev/null

# clamd_instream FILE: scans FILE (< 4 GiB, sent as one chunk) with nINSTREAM; prints the reply.
clamd_instream() (
  size=$(stat -c %s "$1")
  exec 3<>"/dev/tcp/$HOST/$CLAMD_PORT" || exit 1
  printf 'nINSTREAM\n' >&3
  printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' \
    $((size >> 24 & 255)) $((size >> 16 & 255)) $((size >> 8 & 255)) $((size & 255)))" >&3
  cat "$1" >&3
  printf '\x00\x00\x00\x00' >&3
  IFS= read -r -t 30 reply <&3 || exit 1
  printf '%s\n' "$reply"
) 2>/dev/null

clamd_up() { [ "$(clamd_cmd PING || true)" = PONG ]; }

# moto answers an unsigned GET / with S3's ListAllMyBucketsResult.
moto_up() (
  exec 3<>"/dev/tcp/$HOST/$MOTO_PORT" || exit 1
  printf 'GET / HTTP/1.0\r\nHost: %s:%s\r\n\r\n' "$HOST" "$MOTO_PORT" >&3
  timeout 5 cat <&3 | grep -q ListAllMyBucketsResult
) 2>/dev/null

port_taken() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# stop_pidfile FILE NAME: TERM (then KILL) the process recorded in FILE, if it is still alive.
stop_pidfile() {
  local pid
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $2 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

if [ "$MODE" = stop ]; then
  stop_pidfile "$CLAMD_DIR/clamd.pid" clamd
  stop_pidfile "$MOTO_DIR/moto.pid" moto_server
  stop_pidfile "$REDIS_TLS_DIR/tls.pid" "redis-server (TLS)"
  stop_pidfile "$REDIS_TLS_DIR/mtls.pid" "redis-server (TLS, client certificates)"
  exit 0
fi

# --- ClamAV clamd -------------------------------------------------------------------------------
start_clamd() {
  local clamd t0 md5 reply
  if clamd_up; then
    log "clamd already answers PING on $HOST:$CLAMD_PORT"
    return 0
  fi
  clamd=$(command -v clamd || true)
  if [ -z "$clamd" ] && [ -x /usr/sbin/clamd ]; then clamd=/usr/sbin/clamd; fi
  if [ -z "$clamd" ]; then
    log "installing clamav-daemon (Debian package)"
    t0=$SECONDS
    apt_install clamav-daemon
    clamd=/usr/sbin/clamd
    [ -x "$clamd" ] || die "clamav-daemon installed but $clamd is missing"
    log "clamav-daemon installed in $((SECONDS - t0)) s"
  fi

  mkdir -p "$CLAMD_DIR/db" "$CLAMD_DIR/tmp"
  printf '%s' "$EICAR_B64" | base64 -d >"$CLAMD_DIR/eicar.com"
  md5=$(md5sum <"$CLAMD_DIR/eicar.com" | cut -d' ' -f1)
  [ "$md5" = "$EICAR_MD5" ] || die "EICAR md5 is $md5, expected $EICAR_MD5"
  [ "$(stat -c %s "$CLAMD_DIR/eicar.com")" = 68 ] || die "EICAR file is not 68 bytes"
  printf 'LexiFlow clean test file: no signature matches this.\n' >"$CLAMD_DIR/clean.txt"
  # Hash signature: <md5>:<size>:<name>; clamd reports it as <name>.UNOFFICIAL.
  printf '%s:68:%s\n' "$md5" "$EICAR_SIG_NAME" >"$CLAMD_DIR/db/test.hdb"

  cat >"$CLAMD_DIR/clamd.conf" <<EOF
# Generated by tests/services/start.sh: a private clamd for LexiFlow's tests.
TCPSocket $CLAMD_PORT
TCPAddr $HOST
Foreground no
PidFile $CLAMD_DIR/clamd.pid
LogFile $CLAMD_DIR/clamd.log
LogTime yes
LogFileMaxSize 5M
DatabaseDirectory $CLAMD_DIR/db
TemporaryDirectory $CLAMD_DIR/tmp
OfficialDatabaseOnly no
Bytecode no
SelfCheck 3600
ConcurrentDatabaseReload no
StreamMaxLength 64M
MaxFileSize 64M
MaxScanSize 128M
MaxThreads 8
ReadTimeout 60
CommandReadTimeout 30
IdleTimeout 30
EOF
  # No User line: clamd then keeps the identity it was started with (root in CI, the
  # developer otherwise), so the files above need no clamav ownership. No LocalSocket.

  stop_pidfile "$CLAMD_DIR/clamd.pid" "stale clamd"
  if port_taken "$CLAMD_PORT"; then
    die "$HOST:$CLAMD_PORT is taken by something that does not answer clamd's PING"
  fi
  log "starting clamd on $HOST:$CLAMD_PORT (config $CLAMD_DIR/clamd.conf)"
  t0=$(date +%s%N)
  # Foreground no: clamd loads the database, binds, then daemonizes and writes its PidFile.
  "$clamd" -c "$CLAMD_DIR/clamd.conf" </dev/null >>"$CLAMD_DIR/clamd.out" 2>&1 8>&- 9>&- ||
    { tail -n 20 "$CLAMD_DIR/clamd.out" "$CLAMD_DIR/clamd.log" 2>/dev/null; die "clamd failed to start"; }
  for _ in $(seq 1 120); do clamd_up && break; sleep 0.25; done
  clamd_up || { tail -n 20 "$CLAMD_DIR/clamd.log"; die "clamd did not answer PING within 30 s"; }
  log "clamd answers PONG ($(clamd_cmd VERSION)) after $(( ($(date +%s%N) - t0) / 1000000 )) ms"

  reply=$(clamd_instream "$CLAMD_DIR/eicar.com" || true)
  [ "$reply" = "stream: $EICAR_SIG_NAME.UNOFFICIAL FOUND" ] || die "EICAR scan replied '$reply'"
  log "INSTREAM EICAR -> $reply"
  reply=$(clamd_instream "$CLAMD_DIR/clean.txt" || true)
  [ "$reply" = "stream: OK" ] || die "clean scan replied '$reply'"
  log "INSTREAM clean file -> $reply"
}

# --- moto S3 server -----------------------------------------------------------------------------
start_moto() {
  local t0 pid
  if moto_up; then
    log "moto S3 server already answers on http://$HOST:$MOTO_PORT"
    return 0
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating the Python venv $VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      log "installing python3-venv (Debian package)"
      rm -rf "$VENV"
      apt_install python3 python3-venv
      python3 -m venv "$VENV"
    fi
  fi
  log "pip install -r tests/services/requirements-s3.txt (moto[server], pinned)"
  t0=$SECONDS
  "$VENV/bin/pip" install -q --disable-pip-version-check --cache-dir "$CACHE/pip" \
    -r "$HERE/requirements-s3.txt"
  log "pip done in $((SECONDS - t0)) s"

  mkdir -p "$MOTO_DIR"
  stop_pidfile "$MOTO_DIR/moto.pid" "stale moto_server"
  if port_taken "$MOTO_PORT"; then
    die "$HOST:$MOTO_PORT is taken by something that does not answer like moto's S3"
  fi
  log "starting moto_server on http://$HOST:$MOTO_PORT (log $MOTO_DIR/moto.log)"
  t0=$(date +%s%N)
  (
    cd "$MOTO_DIR"
    exec setsid nohup "$VENV/bin/moto_server" -H "$HOST" -p "$MOTO_PORT" \
      </dev/null >>"$MOTO_DIR/moto.log" 2>&1 8>&- 9>&-
  ) &
  pid=$!
  echo "$pid" >"$MOTO_DIR/moto.pid"
  for _ in $(seq 1 240); do
    moto_up && break
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$MOTO_DIR/moto.log"; die "moto_server exited"; }
    sleep 0.25
  done
  moto_up || { tail -n 30 "$MOTO_DIR/moto.log"; die "moto_server did not answer within 60 s"; }
  log "moto_server (pid $pid) answers after $(( ($(date +%s%N) - t0) / 1000000 )) ms"

  # Self-check with boto3 (installed with moto): bucket, 2-part multipart upload with a 5 MiB
  # first part, ranged GET; then removes what it made, so the server is left empty.
  "$VENV/bin/python" - "http://$HOST:$MOTO_PORT" <<'PY'
import os, sys, uuid
import boto3
from botocore.config import Config

s3 = boto3.client(
    "s3", endpoint_url=sys.argv[1], region_name="us-east-1",
    aws_access_key_id="lexiflow-test", aws_secret_access_key="lexiflow-test",
    config=Config(s3={"addressing_style": "path"}),
)
bucket = "lexiflow-selfcheck-" + uuid.uuid4().hex[:12]
key = "probe.bin"
part1 = os.urandom(5 * 1024 * 1024)
part2 = os.urandom(1000)
s3.create_bucket(Bucket=bucket)
try:
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=1, Body=part1)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=2, Body=part2)["ETag"]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up,
        MultipartUpload={"Parts": [{"ETag": e1, "PartNumber": 1}, {"ETag": e2, "PartNumber": 2}]},
    )
    assert done["ETag"].strip('"').endswith("-2"), done["ETag"]
    whole = part1 + part2
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(whole)
    lo, hi = len(part1) - 10, len(part1) + 9
    got = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={lo}-{hi}")
    assert got["Body"].read() == whole[lo:hi + 1], "ranged GET returned wrong bytes"
    assert got["ContentRange"] == f"bytes {lo}-{hi}/{len(whole)}", got["ContentRange"]
    print(f"== S3 self-check: multipart {len(whole)} bytes (ETag {done['ETag']}), "
          f"ranged GET -> {got['ResponseMetadata']['HTTPStatusCode']} {got['ContentRange']}",
          file=sys.stderr)
finally:
    for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=o["Key"])
    for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    s3.delete_bucket(Bucket=bucket)
PY
}

# --- Redis over TLS -----------------------------------------------------------------------------
redis_tls_up() {
  # $1 port; a client certificate is offered on both, the 6380 one does not ask for it.
  [ "$(timeout 5 redis-cli --tls --cacert "$REDIS_TLS_DIR/ca.crt" --cert "$REDIS_TLS_DIR/client.crt" \
    --key "$REDIS_TLS_DIR/client.key" -h localhost -p "$1" PING 2>/dev/null)" = PONG ]
}

start_redis_tls() {
  local d=$REDIS_TLS_DIR port auth pidfile
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
  command -v openssl >/dev/null || apt_install openssl
  mkdir -p "$d"
  # A test CA, a server certificate for localhost and 127.0.0.1, a client certificate; made
  # once and kept (valid 10 years), or again when one is missing.
  if [ ! -s "$d/ca.crt" ] || [ ! -s "$d/server.crt" ] || [ ! -s "$d/server.key" ] || [ ! -s "$d/client.crt" ] ||
    [ ! -s "$d/client.key" ]; then
    log "making a test CA and certificates in $d"
    (
      cd "$d"
      openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
        -subj "/CN=LexiFlow test CA" 2>/dev/null
      openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
        -days 3650 -extfile server.ext 2>/dev/null
      openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=lexiflow-test" 2>/dev/null
      printf 'extendedKeyUsage=clientAuth\n' >client.ext
      openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt \
        -days 3650 -extfile client.ext 2>/dev/null
      chmod 600 ./*.key
    )
  fi
  for port in "$REDIS_TLS_PORT" "$REDIS_MTLS_PORT"; do
    if [ "$port" = "$REDIS_TLS_PORT" ]; then auth=no pidfile=$d/tls.pid; else auth=yes pidfile=$d/mtls.pid; fi
    if redis_tls_up "$port"; then
      log "redis-server (TLS, client certificates: $auth) already answers on localhost:$port"
      continue
    fi
    stop_pidfile "$pidfile" "stale redis-server (TLS)"
    port_taken "$port" && die "$HOST:$port is taken by something that does not answer like Redis over TLS"
    log "starting redis-server on localhost:$port, TLS only, client certificates: $auth"
    redis-server --port 0 --tls-port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --tls-cert-file "$d/server.crt" --tls-key-file "$d/server.key" --tls-ca-cert-file "$d/ca.crt" \
      --tls-auth-clients "$auth" --daemonize yes --pidfile "$pidfile" --logfile "$d/redis-$port.log" 8>&- 9>&-
    for _ in $(seq 1 50); do redis_tls_up "$port" && break; sleep 0.1; done
    redis_tls_up "$port" || { tail -n 20 "$d/redis-$port.log"; die "redis-server (TLS) did not answer on $port"; }
  done
}

start_clamd
start_moto
start_redis_tls

if [ "$MODE" = env ]; then
  P="export "
else
  P=""
fi
{
  echo "${P}LEXIFLOW_TEST_CLAMD=$HOST:$CLAMD_PORT"
  echo "${P}LEXIFLOW_TEST_S3_ENDPOINT=http://$HOST:$MOTO_PORT"
  echo "${P}LEXIFLOW_TEST_REDIS_TLS_URL=rediss://localhost:$REDIS_TLS_PORT"
  echo "${P}LEXIFLOW_TEST_REDIS_MTLS_URL=rediss://localhost:$REDIS_MTLS_PORT"
  echo "${P}LEXIFLOW_TEST_REDIS_TLS_DIR=$REDIS_TLS_DIR"
} >&9
