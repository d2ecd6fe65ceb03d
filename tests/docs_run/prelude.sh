# The set-up tests/docs_run.rs runs before every block it runs (the
# test's, not the docs'): put before the block's own lines in one script,
# run with `bash -euo pipefail`, with KH_DIR (a fresh temporary directory) and
# KH_REPO (the repository) set and the binary under test first on PATH.
cd "$KH_DIR"
keyhold keygen --key-file "$KH_DIR/fernet.keys" 2>/dev/null
export FERNET_KEY_FILE="$KH_DIR/fernet.keys"
TOKEN=$(keyhold init --data-dir "$KH_DIR/data" 2>/dev/null)
export KEYHOLD_TOKEN="$TOKEN"
KH_PUBKEY=$(keyhold audit public-key --data-dir "$KH_DIR/data")
mkdir -p "$KH_DIR/backups"
# FILE PID: the address the server printed on stdout.
await_listening() {
  for _ in $(seq 200); do
    a=$(sed -n 's/^keyhold listening on //p' "$1")
    if [ -n "$a" ]; then echo "$a"; return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then
      echo "the server stopped:" >&2; cat "$KH_DIR"/*.log >&2; return 1
    fi
    sleep 0.05
  done
  echo "the server did not listen within 10 s" >&2; return 1
}
# The server on the store, in the background; clients pointed at it.
start_server() {
  rm -f "$KH_DIR/server.out"
  keyhold serve --data-dir "$KH_DIR/data" --listen 127.0.0.1:0 \
    >"$KH_DIR/server.out" 2>>"$KH_DIR/server.log" &
  echo $! >"$KH_DIR/server.pid"
  KH_URL=$(await_listening "$KH_DIR/server.out" $!)
  export KEYHOLD_ADDR="$KH_URL"
}
stop_server() {
  if [ -s "$KH_DIR/server.pid" ]; then
    kill "$(cat "$KH_DIR/server.pid")" 2>/dev/null || true
    wait "$(cat "$KH_DIR/server.pid")" 2>/dev/null || true
    : >"$KH_DIR/server.pid"
  fi
}
trap stop_server EXIT
# One documented `keyhold serve` command: started (on an ephemeral
# loopback port unless it names one), asked /healthz, stopped.
serves() {
  rm -f "$KH_DIR/serves.out"
  KEYHOLD_LISTEN="${KEYHOLD_LISTEN:-127.0.0.1:0}" "$@" \
    >"$KH_DIR/serves.out" 2>"$KH_DIR/serves.log" &
  local pid=$!
  echo "$pid" >"$KH_DIR/serves.pid"
  local at
  at=$(await_listening "$KH_DIR/serves.out" "$pid")
  case "$at" in
    unix:*) curl -sS --fail-with-body --unix-socket "${at#unix:}" http://keyhold/healthz ;;
    https://*) curl -sS --fail-with-body --cacert "$KH_DIR/tls-ca.pem" "$at/healthz" ;;
    *) curl -sS --fail-with-body "$at/healthz" ;;
  esac
  echo " <- $at"
  kill "$pid"
  wait "$pid" || true
  : >"$KH_DIR/serves.pid"
  cat "$KH_DIR/serves.out" "$KH_DIR/serves.log"
}
# An export command: its stderr shown, the head it printed in ANCHOR.
exported() {
  "$@" 2>"$KH_DIR/export.err"
  cat "$KH_DIR/export.err" >&2
  ANCHOR=$(sed -n 's/.*when the export began was \([0-9]*:[0-9a-f]*\).*/\1/p' "$KH_DIR/export.err")
  [ -n "$ANCHOR" ]
}
# A key stored through the running server; its id on stdout.
add_key() { # PROVIDER NAME SECRET
  printf %s "$3" | keyhold keys add --provider "$1" --name "$2" 2>/dev/null
}
# A program the docs hand keys to: says which of them it got.
fake_program() { # PATH VAR...
  local path=$1; shift
  { echo '#!/bin/sh'
    for v in "$@"; do echo "echo \"$(basename "$path"): $v=\${$v:-unset}\""; done
  } >"$path"
  chmod +x "$path"
}
