#!/usr/bin/env bash
# Follows the README's "Production set-up" literally on this machine, as
# root: creates the `keyhold` system user, its directories and the key
# file, initialises the store as that user, then starts `keyhold serve` as
# that user without systemd, with the environment of scripts/keyhold.service,
# checks /healthz and who owns what, stops the server by its PID, does the
# same on the documented Unix socket in the unit's RuntimeDirectory= (and
# checks the socket file is gone after), and removes everything it made.
# CI runs it (tests/production.rs).
#
# Usage: scripts/production-setup.sh [KEYHOLD_BINARY]
#   (default: $KEYHOLD_BIN, else target/release/keyhold)
#
# It refuses to run where a `keyhold` user, /var/lib/keyhold or
# /etc/keyhold already exists: it is for a fresh machine or a CI
# container, never for a host that runs keyhold.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

bin=${1:-${KEYHOLD_BIN:-target/release/keyhold}}
if [ "$(id -u)" != 0 ]; then
  echo "production-setup: must run as root (it creates a system user)" >&2
  exit 2
fi
if [ ! -x "$bin" ]; then
  echo "production-setup: no keyhold binary at $bin (cargo build --release, or pass its path)" >&2
  exit 2
fi
for what in /var/lib/keyhold /etc/keyhold /run/keyhold; do
  if [ -e "$what" ]; then
    echo "production-setup: $what exists: this script is for a fresh machine; nothing was changed" >&2
    exit 2
  fi
done
if getent passwd keyhold >/dev/null || getent group keyhold >/dev/null; then
  echo "production-setup: a keyhold user or group exists: this script is for a fresh machine; nothing was changed" >&2
  exit 2
fi

# The README installs the binary into /usr/local/bin; here it goes into a
# directory of its own at the front of PATH, so a binary already
# installed on this machine is left alone. Everything after uses `keyhold`
# from PATH, as the README does.
tmp=$(mktemp -d)
chmod 0755 "$tmp"
install -d -m 0755 "$tmp/bin"
install -m 0755 "$bin" "$tmp/bin/keyhold"
export PATH="$tmp/bin:$PATH"
cd /

server_pid=
cleanup() {
  set +e
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid"
    wait "$server_pid"
  fi
  userdel keyhold 2>/dev/null
  getent group keyhold >/dev/null && groupdel keyhold
  rm -rf /var/lib/keyhold /etc/keyhold /run/keyhold "$tmp"
}
trap cleanup EXIT

# --- begin: README production set-up (tests/production.rs compares these lines with README.md) ---
# 1. The service user, its data directory, and the key file's directory
#    (root's; the keyhold group may read it).
useradd --system --user-group --home-dir /var/lib/keyhold --shell /usr/sbin/nologin keyhold
install -d -m 0700 -o keyhold -g keyhold /var/lib/keyhold
install -d -m 0750 -o root -g keyhold /etc/keyhold

# 2. A Fernet key, written (fsync'd) into the key file, newest first.
keyhold keygen --key-file /etc/keyhold/fernet.keys
chgrp keyhold /etc/keyhold/fernet.keys
chmod 0640 /etc/keyhold/fernet.keys
export FERNET_KEY_FILE=/etc/keyhold/fernet.keys

# 3. The store, its key check value and the first admin token, made as
#    the service user (the token alone on stdout, shown once: store it now).
TOKEN=$(runuser -u keyhold -- keyhold init --data-dir /var/lib/keyhold)
# --- end: README production set-up ---

fail() {
  echo "production-setup: FAIL: $*" >&2
  exit 1
}

case "$TOKEN" in kh_*) ;; *) fail "init did not print an admin token" ;; esac
[ "$(stat -c %U:%a /var/lib/keyhold)" = keyhold:700 ] || fail "/var/lib/keyhold is $(stat -c %U:%a /var/lib/keyhold)"
[ "$(stat -c %U:%G:%a /etc/keyhold)" = root:keyhold:750 ] || fail "/etc/keyhold is $(stat -c %U:%G:%a /etc/keyhold)"
[ "$(stat -c %U:%G:%a /etc/keyhold/fernet.keys)" = root:keyhold:640 ] \
  || fail "the key file is $(stat -c %U:%G:%a /etc/keyhold/fernet.keys)"
not_keyholds=$(find /var/lib/keyhold ! -user keyhold -print)
[ -z "$not_keyholds" ] || fail "not owned by keyhold: $not_keyholds"

# 4. What the systemd unit does, without systemd: `keyhold serve` as the
#    keyhold user with exactly the unit's Environment= lines (the listen
#    address aside: an ephemeral port, so a CI host's 8787 may be taken).
unit_env=()
while IFS= read -r line; do
  unit_env+=("${line#Environment=}")
done < <(grep '^Environment=' "$repo/scripts/keyhold.service")
[ "${#unit_env[@]}" -gt 0 ] || fail "the unit sets no Environment="
printf '%s\n' "${unit_env[@]}" | grep -qx "FERNET_KEY_FILE=$FERNET_KEY_FILE" \
  || fail "the unit does not read the key file the README writes ($FERNET_KEY_FILE)"
exec_start=$(sed -n 's/^ExecStart=//p' "$repo/scripts/keyhold.service")
[ "$exec_start" = "/usr/local/bin/keyhold serve" ] || fail "unexpected ExecStart=$exec_start"

# Starts `keyhold serve` as keyhold with the unit's environment and
# KEYHOLD_LISTEN=$1; sets server_pid and addr (what it says it listens on).
start_server() {
  out="$tmp/serve.out"
  # setpriv (util-linux, like runuser) execs in place, so $! is the server.
  setpriv --reuid keyhold --regid keyhold --init-groups \
    env -i PATH="$PATH" "${unit_env[@]}" KEYHOLD_LISTEN="$1" keyhold serve >"$out" 2>"$tmp/serve.err" &
  server_pid=$!
  addr=
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/^keyhold listening on //p' "$out" | head -n1)
    [ -n "$addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/serve.err" >&2; fail "serve exited"; }
    sleep 0.1
  done
  [ -n "$addr" ] || fail "serve did not say where it listens"
}

# SIGTERM by PID; serve must exit 0.
stop_server() {
  kill "$server_pid"
  status=0
  wait "$server_pid" || status=$?
  server_pid=
  [ "$status" = 0 ] || { cat "$tmp/serve.err" >&2; fail "serve exited $status on SIGTERM"; }
}

start_server 127.0.0.1:0
health=$(curl -fsS "$addr/healthz") || fail "/healthz did not answer"
echo "production-setup: /healthz at $addr: $health"
[ "$(stat -c %U /proc/$server_pid/)" = keyhold ] || fail "serve does not run as keyhold"
# The header comes from stdin (`-H @-`), so the token is never in curl's argv.
printf 'Authorization: Bearer %s\n' "$TOKEN" | curl -fsS -H @- "$addr/api/tokens" >/dev/null \
  || fail "the admin token from init does not work"
stop_server

# 5. The documented Unix socket, in the directory the unit's
#    RuntimeDirectory= makes (systemd makes it at each start, owned by the
#    service user; here by hand, with the unit's mode).
unit="$repo/scripts/keyhold.service"
sock=/run/keyhold/keyhold.sock
[ "$(sed -n 's/^RuntimeDirectory=//p' "$unit")" = keyhold ] || fail "the unit has no RuntimeDirectory=keyhold"
grep -qx "# Environment=KEYHOLD_LISTEN=unix:$sock" "$unit" || fail "the unit does not show $sock"
rt_mode=$(sed -n 's/^RuntimeDirectoryMode=//p' "$unit")
install -d -m "${rt_mode:-0755}" -o keyhold -g keyhold /run/keyhold
start_server "unix:$sock"
[ "$addr" = "unix:$sock" ] || fail "serve listens on $addr, not unix:$sock"
curl -fsS --unix-socket "$sock" http://keyhold/healthz >/dev/null || fail "/healthz did not answer on $sock"
[ "$(stat -c %U:%G:%a "$sock")" = keyhold:keyhold:660 ] || fail "the socket is $(stat -c %U:%G:%a "$sock")"
stop_server
[ ! -e "$sock" ] || fail "the socket file outlived the server"

not_keyholds=$(find /var/lib/keyhold ! -user keyhold -print)
[ -z "$not_keyholds" ] || fail "not owned by keyhold after serving: $not_keyholds"
echo "production-setup: ok"
