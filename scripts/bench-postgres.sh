#!/usr/bin/env bash
# Durable reveals/s on PostgreSQL (issue 17): one node and two nodes on one
# database, 64 connections in all, beside the same load on sled, on this
# machine. Prints `name: value unit` lines like scripts/bench.sh.
#
# It starts a PostgreSQL server of its own (initdb into the work directory,
# as the unprivileged user keyhold-test when run as root, on a free
# loopback port, fsync and synchronous_commit on: every acknowledged reveal
# is on disk), fills a sled store with examples/fill, moves a copy into the
# database with `keyhold migrate`, and stops every process by its PID.
#
# BENCH_SECS (10), BENCH_WARMUP (2), BENCH_REPEATS (3), BENCH_KEYS (1000),
# BENCH_CONNS (64), BENCH_DIR (/var/tmp), BENCH_NO_BUILD (0).
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_SECS=${BENCH_SECS:-10}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_REPEATS=${BENCH_REPEATS:-3}
BENCH_KEYS=${BENCH_KEYS:-1000}
BENCH_CONNS=${BENCH_CONNS:-64}
BENCH_NO_BUILD=${BENCH_NO_BUILD:-0}
TARGET=${CARGO_TARGET_DIR:-target}
KH=$TARGET/release/keyhold
LOADGEN=$TARGET/release/examples/loadgen
FILL=$TARGET/release/examples/fill

if [ "$BENCH_NO_BUILD" != 1 ]; then
  cargo build --release --locked --bin keyhold --example loadgen --example fill >&2
fi
PGBIN=
for d in $(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || echo /nonexistent)")") /usr/lib/postgresql/*/bin; do
  if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then PGBIN=$d; break; fi
done
[ -n "$PGBIN" ] || { echo "bench-postgres.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 2; }

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/keyhold-pgbench.XXXXXX")
PIDS=()
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u keyhold-test -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -f "$WORK/pg/postmaster.pid" ]; then
    pid=$(head -n 1 "$WORK/pg/postmaster.pid")
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" = 0 ]; then
  id keyhold-test >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin keyhold-test
  chmod 755 "$WORK"
  mkdir -p "$WORK/pg" "$WORK/sock" && chown keyhold-test: "$WORK/pg" "$WORK/sock"
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U keyhold -A trust -E UTF8 --locale=C >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/server.log" -w \
  -o "-p $PORT -k $WORK/sock -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
"$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U keyhold -d postgres -qc "CREATE DATABASE bench" >/dev/null
URL="postgres://keyhold@127.0.0.1:$PORT/bench"

FERNET_KEY=$("$KH" keygen)
export FERNET_KEY
unset FERNET_KEYS FERNET_KEY_FILE KEYHOLD_KEY_COMMAND KEYHOLD_DATA_DIR KEYHOLD_DATABASE_URL 2>/dev/null || true
printf '# keyhold PostgreSQL benchmark, %s, commit %s; %s cores; PostgreSQL %s (fsync on, synchronous_commit on) on %s\n' \
  "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(nproc)" \
  "$("$PGBIN/postgres" --version | awk '{print $3}')" "$(df -P "$WORK" | awk 'NR == 2 { print $1 }')"

"$KH" init --data-dir "$WORK/sled" >"$WORK/token" 2>/dev/null
"$FILL" "$WORK/sled" --keys "$BENCH_KEYS" --audit 0 --ids-out "$WORK/ids" >/dev/null
cp -r "$WORK/sled" "$WORK/sled-copy"
"$KH" migrate --from-data-dir "$WORK/sled-copy" --to-database-url "$URL" 2>"$WORK/migrate.err" \
  || { cat "$WORK/migrate.err" >&2; exit 1; }

# serve NAME ARGS...: starts a server; its address in ADDR_NAME.
serve() {
  local name=$1; shift
  "$KH" serve "$@" --listen 127.0.0.1:0 --reveal-rate 1000000000/s --log warn \
    >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PIDS+=($!)
  for _ in $(seq 1 300); do
    a=$(sed -n 's|^keyhold listening on \(http://[0-9.:]*\)$|\1|p' "$WORK/$name.out" | head -1)
    [ -n "$a" ] && { printf -v "ADDR_$name" '%s' "$a"; return 0; }
    sleep 0.1
  done
  cat "$WORK/$name.err" >&2; return 1
}
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
}
load() { # NAME ADDR CONNS
  "$LOADGEN" reveal --addr "$2" --token-file "$WORK/token" --conns "$3" --secs "$BENCH_SECS" \
    --warmup "$BENCH_WARMUP" --repeats "$BENCH_REPEATS" --name "$1" --ids-file "$WORK/ids"
}

serve sled --data-dir "$WORK/sled"
load sled_reveal_c$BENCH_CONNS "$ADDR_sled" "$BENCH_CONNS"
stop_all

serve a --database-url "$URL" --node-name a
load pg1_reveal_c$BENCH_CONNS "$ADDR_a" "$BENCH_CONNS"
stop_all

half=$((BENCH_CONNS / 2))
serve a --database-url "$URL" --node-name a
serve b --database-url "$URL" --node-name b
load pg2_node_a_reveal_c$half "$ADDR_a" "$half" >"$WORK/fa" &
la=$!
load pg2_node_b_reveal_c$half "$ADDR_b" "$half" >"$WORK/fb"
wait "$la"
cat "$WORK/fa" "$WORK/fb"
sum=$(awk '$1 ~ /_per_s:$/ { s += $2 } END { printf "%.1f", s }' "$WORK/fa" "$WORK/fb")
printf 'pg2_reveal_c%s_per_s: %s req/s\n' "$BENCH_CONNS" "$sum"
stop_all
"$KH" audit verify --database-url "$URL" >/dev/null 2>"$WORK/verify.err" \
  && echo "# the chain verifies after the two-node run" \
  || { echo "# the chain does NOT verify:"; cat "$WORK/verify.err"; }
