#!/usr/bin/env bash
# keyhold's benchmarks (issue 6), in one run: builds release, then measures
#
#   fsync    the disk's serial fsync rate (4 KiB write + fsync, in the
#            data directory's filesystem)
#   fernet   keyhold's and Python cryptography's Fernet per operation on a
#            100-byte key, and their ratio
#   reveal   reveals/s and p50/p99/p999 latency at 1, 16 and 64 concurrent
#            keep-alive connections against a real server on a fresh store
#            of BENCH_KEYS keys (every reveal durably audited), by id and by
#            provider, the server's peak RSS, and the reveals/fsync ratio
#   create   key creates/s (POST /api/keys) and latency
#   mid      with BENCH_MID_KEYS keys: start to healthy, peak RSS under
#            reveal load, and the time to rotate them all
#   export   time to export BENCH_EXPORT_RECORDS audit records (JSONL)
#   import   time to import BENCH_IMPORT_ROWS rows of the Python reference
#   big      the reveal benchmark on BENCH_BIG_KEYS keys, then again after
#            BENCH_AUDIT more audit records, and the ratio to `reveal`
#   purge    the time of DELETE ?purge=true (it rewrites the store's files)
#            on stores of BENCH_PURGE_SIZES, and the store's size before
#            and after
#
# Every figure is one line `name: value unit`; lines starting with `#` are
# context. Sizes default to the issue's; for a quick smoke run:
#
#   BENCH_SECS=2 BENCH_WARMUP=0.5 BENCH_REPEATS=1 BENCH_KEYS=1000 \
#   BENCH_MID_KEYS=2000 BENCH_EXPORT_RECORDS=20000 BENCH_IMPORT_ROWS=2000 \
#   BENCH_BIG_KEYS=20000 BENCH_AUDIT=50000 scripts/bench.sh
#
# Environment (defaults in brackets):
#   BENCH_PARTS        parts to run [fsync fernet reveal create mid export import big purge]
#   BENCH_PURGE_SIZES  KEYS:AUDIT_RECORDS stores for purge [1000:0 100000:1000000]
#   BENCH_PURGE_RUNS   purges per store (median) [3]
#   BENCH_SCALE        0 drops mid, export, import, big and purge [1]
#   BENCH_DIR          work directory, on the disk under test [mktemp -d in /var/tmp]
#   BENCH_KEEP         1 keeps the work directory [0]
#   BENCH_SECS         measured seconds per load window [10]
#   BENCH_WARMUP       unmeasured seconds before each window [2]
#   BENCH_REPEATS      windows per figure; figures are their medians [3]
#   BENCH_CONNS        reveal concurrency levels [1 16 64]
#   BENCH_BIG_CONNS    levels of the big-store runs [$BENCH_CONNS]
#   BENCH_CREATE_CONNS create concurrency levels [1 16]
#   BENCH_KEYS         keys in the base store [1000]
#   BENCH_MID_KEYS     keys for start-up, RSS and rotate [100000]
#   BENCH_EXPORT_RECORDS audit records to export [1000000]
#   BENCH_IMPORT_ROWS  rows to import [100000]
#   BENCH_BIG_KEYS     keys in the big store [1000000]
#   BENCH_AUDIT        audit records added to the big store [5000000]
#   BENCH_FILL_BATCH   keys/records per transaction when filling [5000]
#   BENCH_RATE         the server's reveal rate limit [1000000000/s]
#   BENCH_FSYNC_SECS   seconds of the fsync probe [2]
#   BENCH_FERNET_ITERS Fernet operations per measurement [200000]
#   BENCH_STARTUP_RUNS start-to-healthy runs (median) [5]
#   BENCH_CLIENT_THREADS load generator threads [1]
#   BENCH_NO_BUILD     1 skips the cargo build [0]
#   CARGO_TARGET_DIR   where the build goes [target]
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

BENCH_PARTS=${BENCH_PARTS:-fsync fernet reveal create mid export import big purge}
BENCH_PURGE_SIZES=${BENCH_PURGE_SIZES:-1000:0 100000:1000000}
BENCH_PURGE_RUNS=${BENCH_PURGE_RUNS:-3}
BENCH_SCALE=${BENCH_SCALE:-1}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_SECS=${BENCH_SECS:-10}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_REPEATS=${BENCH_REPEATS:-3}
BENCH_CONNS=${BENCH_CONNS:-1 16 64}
BENCH_BIG_CONNS=${BENCH_BIG_CONNS:-$BENCH_CONNS}
BENCH_CREATE_CONNS=${BENCH_CREATE_CONNS:-1 16}
BENCH_KEYS=${BENCH_KEYS:-1000}
BENCH_MID_KEYS=${BENCH_MID_KEYS:-100000}
BENCH_EXPORT_RECORDS=${BENCH_EXPORT_RECORDS:-1000000}
BENCH_IMPORT_ROWS=${BENCH_IMPORT_ROWS:-100000}
BENCH_BIG_KEYS=${BENCH_BIG_KEYS:-1000000}
BENCH_AUDIT=${BENCH_AUDIT:-5000000}
BENCH_FILL_BATCH=${BENCH_FILL_BATCH:-5000}
BENCH_RATE=${BENCH_RATE:-1000000000/s}
BENCH_FSYNC_SECS=${BENCH_FSYNC_SECS:-2}
BENCH_FERNET_ITERS=${BENCH_FERNET_ITERS:-200000}
BENCH_STARTUP_RUNS=${BENCH_STARTUP_RUNS:-5}
BENCH_CLIENT_THREADS=${BENCH_CLIENT_THREADS:-1}
BENCH_NO_BUILD=${BENCH_NO_BUILD:-0}
if [ "$BENCH_SCALE" = 0 ]; then
  # shellcheck disable=SC2086 # split on purpose
  BENCH_PARTS=$(printf '%s\n' $BENCH_PARTS | { grep -vxE 'mid|export|import|big|purge' || true; } | tr '\n' ' ')
fi

TARGET=${CARGO_TARGET_DIR:-target}
KH=$TARGET/release/keyhold
LOADGEN=$TARGET/release/examples/loadgen
FILL=$TARGET/release/examples/fill

want() { case " $BENCH_PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
fig() { printf '%s: %s %s\n' "$1" "$2" "$3"; }       # one figure
note() { printf '# %s\n' "$*"; }                     # context
now() { printf '%s' "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "nan"; else printf "%.3f", a / b }'; }
# The median of its arguments (numbers).
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# The value of figure $1 in file $2.
val() { awk -v n="$1:" '$1 == n { print $2; exit }' "$2"; }

# ------------------------------------------------------------------ build
if [ "$BENCH_NO_BUILD" != 1 ]; then
  note "building release (keyhold, examples loadgen and fill) into $TARGET"
  cargo build --release --locked --bin keyhold --example loadgen --example fill >&2
fi
for b in "$KH" "$LOADGEN" "$FILL"; do
  [ -x "$b" ] || { echo "bench.sh: $b is missing: build first" >&2; exit 2; }
done

# ------------------------------------------------------------- work area
if [ -n "${BENCH_DIR:-}" ]; then
  mkdir -p "$BENCH_DIR"
  WORK=$(mktemp -d "$BENCH_DIR/keyhold-bench.XXXXXX")
else
  WORK=$(mktemp -d /var/tmp/keyhold-bench.XXXXXX)
fi
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$BENCH_KEEP" = 1 ]; then
    note "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

FERNET_KEY=$("$KH" keygen)
export FERNET_KEY
unset FERNET_KEYS FERNET_KEY_FILE KEYHOLD_KEY_COMMAND KEYHOLD_DATA_DIR 2>/dev/null || true

# ---------------------------------------------------------------- machine
note "keyhold benchmarks, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
note "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r)"
note "disk: $WORK on $(df -P "$WORK" | awk 'NR == 2 { print $1 }') ($(findmnt -no FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK")), $(df -h --output=avail "$WORK" | tail -1 | tr -d ' ') free"
note "sizes: keys $BENCH_KEYS, mid $BENCH_MID_KEYS, export $BENCH_EXPORT_RECORDS, import $BENCH_IMPORT_ROWS, big $BENCH_BIG_KEYS keys + $BENCH_AUDIT audit; windows ${BENCH_REPEATS} x ${BENCH_SECS}s (+${BENCH_WARMUP}s warm-up); parts: $BENCH_PARTS"

# --------------------------------------------------------------- helpers

# new_store NAME KEYS AUDIT: a fresh, initialised, filled data directory
# $WORK/NAME (admin token in NAME.token, a sample of key ids in NAME.ids).
new_store() {
  local dir=$WORK/$1
  "$KH" init --data-dir "$dir" >"$dir.token" 2>/dev/null
  chmod 600 "$dir.token"
  if [ "$2" != 0 ] || [ "$3" != 0 ]; then
    local t0; t0=$(now)
    "$FILL" "$dir" --keys "$2" --audit "$3" --batch "$BENCH_FILL_BATCH" --ids-out "$dir.ids" \
      >"$dir.fill" 2>&1 || { cat "$dir.fill" >&2; return 1; }
    note "filled $1 with $2 keys and $3 audit records in $(since "$t0") s, $(du -sh "$dir" | cut -f1) on disk"
  fi
}

# start_server NAME: serves $WORK/NAME on a free loopback port; sets ADDR.
start_server() {
  local dir=$WORK/$1
  : >"$dir.out"
  "$KH" serve --data-dir "$dir" --listen 127.0.0.1:0 --reveal-rate "$BENCH_RATE" --record-budget "$BENCH_RATE" --log "${SERVER_LOG:-warn}" \
    >"$dir.out" 2>"$dir.err" &
  SERVER_PID=$!
  local _
  for _ in $(seq 1 600); do
    ADDR=$(sed -n 's|^keyhold listening on \(http://[0-9.:]*\)$|\1|p' "$dir.out" | head -1)
    [ -n "$ADDR" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench.sh: the server on $dir did not start:" >&2
  cat "$dir.err" >&2
  return 1
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=
}

# peak_rss NAME: the running server's VmHWM as a figure NAME (MiB).
peak_rss() {
  local kb; kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status")
  fig "$1" "$(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }')" MiB
}

# load MODE NAME STORE CONNS [extra args]: one load run, figures to stdout
# and appended to $WORK/figures.
load() {
  local mode=$1 name=$2 store=$3 conns=$4
  shift 4
  "$LOADGEN" "$mode" --addr "$ADDR" --token-file "$WORK/$store.token" --conns "$conns" \
    --secs "$BENCH_SECS" --warmup "$BENCH_WARMUP" --repeats "$BENCH_REPEATS" \
    --threads "$BENCH_CLIENT_THREADS" --name "$name" "$@" | tee -a "$WORK/figures"
}

# reveal_levels PREFIX STORE CONNS...: the reveal benchmark by id.
reveal_levels() {
  local prefix=$1 store=$2
  shift 2
  local c
  for c in "$@"; do
    load reveal "${prefix}_c$c" "$store" "$c" --ids-file "$WORK/$store.ids"
  done
}

: >"$WORK/figures"

# ------------------------------------------------------------------ fsync
if want fsync; then
  note "--- fsync: serial 4 KiB write + fsync in $WORK"
  "$LOADGEN" fsync --dir "$WORK" --secs "$BENCH_FSYNC_SECS" --name fsync_serial | tee -a "$WORK/figures"
  # What sled 0.34 does per flush on Linux is not fsync but
  # sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER) (its background flusher
  # fsyncs every 500 ms): measured the same way, for context. Python's
  # ctypes calls it, as the Rust tools here use no unsafe code.
  python3 - "$WORK" "$BENCH_FSYNC_SECS" <<'PY' | tee -a "$WORK/figures" || note "sync_file_range not measured"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
path = os.path.join(sys.argv[1], ".keyhold-sfr-probe")
fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
block, n, off, limit = b"Z" * 4096, 0, 0, float(sys.argv[2])
t0 = time.perf_counter()
try:
    while time.perf_counter() - t0 < limit and n < 100000:
        if off >= 64 << 20:
            os.lseek(fd, 0, os.SEEK_SET)
            off = 0
        os.write(fd, block)
        if libc.sync_file_range(fd, off, 4096, 1 | 2 | 4) != 0:
            raise OSError(ctypes.get_errno(), "sync_file_range")
        off += 4096
        n += 1
finally:
    os.close(fd)
    os.remove(path)
print(f"sync_file_range_serial_per_s: {n / (time.perf_counter() - t0):.1f} ops/s")
PY
fi

# ----------------------------------------------------------------- fernet
if want fernet; then
  note "--- fernet: per operation, 100-byte key"
  "$LOADGEN" fernet --iters "$BENCH_FERNET_ITERS" | tee -a "$WORK/figures"
  if python3 scripts/bench_fernet.py --iters "$BENCH_FERNET_ITERS" >"$WORK/py_fernet" 2>"$WORK/py_fernet.err"; then
    tee -a "$WORK/figures" <"$WORK/py_fernet"
    for op in encrypt decrypt; do
      fig "fernet_${op}_keyhold_over_python" \
        "$(div "$(val keyhold_fernet_$op "$WORK/figures")" "$(val python_fernet_$op "$WORK/figures")")" ratio \
        | tee -a "$WORK/figures"
    done
  else
    note "python Fernet not measured: $(cat "$WORK/py_fernet.err")"
  fi
fi

# ------------------------------------------------------- reveal and create
if want reveal || want create; then
  note "--- reveal/create: server on a fresh store of $BENCH_KEYS keys, rate limit $BENCH_RATE"
  new_store base "$BENCH_KEYS" 0
  start_server base
  if want reveal; then
    # shellcheck disable=SC2086
    reveal_levels reveal "base" $BENCH_CONNS
    last=${BENCH_CONNS##* }
    load reveal "reveal_provider_c$last" base "$last" --provider claude,gemini,github,openai
    peak_rss reveal_server_rss_peak | tee -a "$WORK/figures"
  fi
  if want create; then
    for c in $BENCH_CREATE_CONNS; do
      load create "create_c$c" base "$c"
    done
  fi
  stop_server
  # Every request the load generator sent was audited (reveals and creates,
  # warm-up included): the log must hold at least that many records.
  sent=$(awk '/_sent:/ { s += $2 } END { print s + 0 }' "$WORK/figures")
  records=$("$KH" audit verify --data-dir "$WORK/base" 2>&1 | grep -oE '[0-9]+ records?' | head -1 | grep -oE '[0-9]+' || echo "?")
  fig base_requests_sent "$sent" requests
  fig base_audit_records "$records" records
  if want fsync && want reveal; then
    for c in $BENCH_CONNS; do
      fig "reveal_c${c}_over_fsync" \
        "$(div "$(val "reveal_c${c}_per_s" "$WORK/figures")" "$(val fsync_serial_per_s "$WORK/figures")")" ratio \
        | tee -a "$WORK/figures"
      sfr=$(val sync_file_range_serial_per_s "$WORK/figures")
      if [ -n "$sfr" ]; then
        fig "reveal_c${c}_over_sync_file_range" "$(div "$(val "reveal_c${c}_per_s" "$WORK/figures")" "$sfr")" ratio
      fi
    done
  fi
  [ "$BENCH_KEEP" = 1 ] || rm -rf "$WORK/base"
fi

# -------------------------------------------------- mid: start-up, RSS, rotate
if want mid; then
  note "--- mid: $BENCH_MID_KEYS keys"
  new_store mid "$BENCH_MID_KEYS" 0
  fig mid_keys "$BENCH_MID_KEYS" keys
  "$LOADGEN" startup --bin "$KH" --data-dir "$WORK/mid" --runs "$BENCH_STARTUP_RUNS" --name startup \
    | tee -a "$WORK/figures"
  start_server mid
  load reveal mid_reveal_c64 mid 64 --ids-file "$WORK/mid.ids"
  peak_rss mid_server_rss_peak | tee -a "$WORK/figures"
  stop_server
  NEW_KEY=$("$KH" keygen)
  t0=$(now)
  env -u FERNET_KEY FERNET_KEYS="$NEW_KEY,$FERNET_KEY" "$KH" rotate --data-dir "$WORK/mid" \
    >"$WORK/rotate.out" 2>&1 || { cat "$WORK/rotate.out" >&2; exit 1; }
  fig rotate_time "$(since "$t0")" s | tee -a "$WORK/figures"
  fig rotate_keys "$BENCH_MID_KEYS" keys
  note "rotate said: $(tr '\n' ' ' <"$WORK/rotate.out" | cut -c1-300)"
  [ "$BENCH_KEEP" = 1 ] || rm -rf "$WORK/mid"
fi

# ----------------------------------------------------------------- export
if want export; then
  note "--- export: $BENCH_EXPORT_RECORDS audit records"
  new_store exp 0 "$BENCH_EXPORT_RECORDS"
  t0=$(now)
  "$KH" audit export --data-dir "$WORK/exp" -o "$WORK/export.jsonl" 2>"$WORK/export.err" \
    || { cat "$WORK/export.err" >&2; exit 1; }
  fig export_time "$(since "$t0")" s | tee -a "$WORK/figures"
  note "export said: $(tr '\n' ' ' <"$WORK/export.err" | cut -c1-300)"
  fig export_records "$(wc -l <"$WORK/export.jsonl" | tr -d ' ')" records
  fig export_size "$(du -m "$WORK/export.jsonl" | cut -f1)" MiB
  rm -f "$WORK/export.jsonl"
  [ "$BENCH_KEEP" = 1 ] || rm -rf "$WORK/exp"
fi

# ----------------------------------------------------------------- import
if want import; then
  note "--- import: $BENCH_IMPORT_ROWS rows of the Python reference (JSON Lines)"
  t0=$(now)
  python3 scripts/make_reference_fixture.py "$WORK/fixture" --rows "$BENCH_IMPORT_ROWS" \
    >"$WORK/fixture.out" 2>&1 || { cat "$WORK/fixture.out" >&2; exit 1; }
  note "fixture built by Python in $(since "$t0") s"
  "$KH" init --data-dir "$WORK/imp" >/dev/null 2>&1
  t0=$(now)
  "$KH" import --data-dir "$WORK/imp" --from "$WORK/fixture/api_keys.jsonl" >"$WORK/import.out" 2>&1 \
    || { cat "$WORK/import.out" >&2; exit 1; }
  fig import_time "$(since "$t0")" s | tee -a "$WORK/figures"
  fig import_rows "$BENCH_IMPORT_ROWS" rows
  note "import said: $(tr '\n' ' ' <"$WORK/import.out" | cut -c1-300)"
  [ "$BENCH_KEEP" = 1 ] || rm -rf "$WORK/imp" "$WORK/fixture"
fi

# -------------------------------------------------------------------- big
if want big; then
  note "--- big: $BENCH_BIG_KEYS keys, then + $BENCH_AUDIT audit records"
  new_store big "$BENCH_BIG_KEYS" 0
  start_server big
  # shellcheck disable=SC2086
  reveal_levels big_keys big $BENCH_BIG_CONNS
  peak_rss big_keys_server_rss_peak | tee -a "$WORK/figures"
  stop_server
  t0=$(now)
  "$FILL" "$WORK/big" --audit "$BENCH_AUDIT" --batch "$BENCH_FILL_BATCH" >"$WORK/big.fill2" 2>&1 \
    || { cat "$WORK/big.fill2" >&2; exit 1; }
  note "added $BENCH_AUDIT audit records in $(since "$t0") s, $(du -sh "$WORK/big" | cut -f1) on disk"
  start_server big
  # shellcheck disable=SC2086
  reveal_levels big_audit big $BENCH_BIG_CONNS
  peak_rss big_audit_server_rss_peak | tee -a "$WORK/figures"
  stop_server
  if want reveal; then
    for c in $BENCH_BIG_CONNS; do
      for p in big_keys big_audit; do
        base=$(val "reveal_c${c}_per_s" "$WORK/figures")
        if [ -n "$base" ]; then
          fig "${p}_c${c}_over_base" "$(div "$(val "${p}_c${c}_per_s" "$WORK/figures")" "$base")" ratio \
            | tee -a "$WORK/figures"
        fi
      done
    done
  fi
  [ "$BENCH_KEEP" = 1 ] || rm -rf "$WORK/big"
fi

# ---------------------------------------------------------------- purge
# DELETE /api/keys/{id}?purge=true rewrites the store's files before it
# answers, so that none holds the purged key (docs/security.md, "What a
# purge destroys"). On stores of BENCH_PURGE_SIZES (KEYS:AUDIT_RECORDS
# each), medians of BENCH_PURGE_RUNS purges: the request's time, and the
# pause (how long every other use of the store waited; the server logs
# it as paused_ms); and the data directory before and after.
if want purge; then
  for size in $BENCH_PURGE_SIZES; do
    pk=${size%%:*}
    pa=${size##*:}
    name=purge_${pk}keys_${pa}audit
    new_store "$name" "$pk" "$pa"
    SERVER_LOG=info start_server "$name"
    auth=$WORK/$name.auth
    printf 'Authorization: Bearer %s\n' "$(cat "$WORK/$name.token")" >"$auth"
    chmod 600 "$auth"
    fig "${name}_dir_before" "$(du -sk "$WORK/$name" | awk '{ printf "%.1f", $1 / 1024 }')" MiB
    times=
    pauses=
    for i in $(seq 1 "$BENCH_PURGE_RUNS"); do
      id=$(curl -sf -H @"$auth" -H 'content-type: application/json' \
        -d "{\"provider\":\"claude\",\"key_name\":\"purge-$i\",\"api_key\":\"sk-purge-bench-$i\"}" \
        "$ADDR/api/keys" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
      [ -n "$id" ] || { echo "bench.sh: could not create a key to purge" >&2; exit 1; }
      out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -X DELETE -H @"$auth" \
        "$ADDR/api/keys/$id?purge=true")
      [ "${out%% *}" = 200 ] || { echo "bench.sh: purge answered ${out%% *}" >&2; exit 1; }
      times="$times ${out##* }"
      pauses="$pauses $(sed -n 's/.*paused_ms[=":]*\([0-9]*\).*/\1/p' "$WORK/$name.err" | tail -1)"
    done
    fig "${name}_time" "$(median $times)" s
    fig "${name}_pause" "$(median $pauses)" ms
    fig "${name}_dir_after" "$(du -sk "$WORK/$name" | awk '{ printf "%.1f", $1 / 1024 }')" MiB
    stop_server
    [ "$BENCH_KEEP" = 1 ] || rm -rf "$WORK/$name"
  done
fi

# ---------------------------------------------------------------- targets
# The issue's targets, checked against this run's figures. They are meant
# for the default (full) sizes; at reduced sizes they are only indicative.
check() { # NAME FIGURE OP LIMIT
  local v sym=">="
  v=$(val "$2" "$WORK/figures")
  [ -n "$v" ] || return 0
  [ "$3" = le ] && sym="<="
  if awk -v v="$v" -v l="$4" -v op="$3" 'BEGIN { exit !((op == "ge" && v >= l) || (op == "le" && v <= l)) }'; then
    fig "target_$1" pass "($2 $v, needs $sym $4)"
  else
    fig "target_$1" miss "($2 $v, needs $sym $4)"
  fi
}
note "--- targets of issue 6 (meaningful at the default sizes; medians of BENCH_REPEATS windows)"
check group_commit reveal_c64_over_fsync ge 3
check reveal_p99 reveal_c64_p99 le 10
check fernet_decrypt fernet_decrypt_keyhold_over_python le 0.25
check big_store_throughput big_audit_c64_over_base ge 0.8
check rss_mid mid_server_rss_peak le 64
check rotate rotate_time le 10
check export export_time le 5
check import import_time le 10
check startup startup_healthy le 300
note "done"
