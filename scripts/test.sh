#!/usr/bin/env bash
# Runs every test of keyhold on a fresh machine: installs what the tests
# need (Python 3 with `cryptography`, for the Fernet interop test; sqlite3,
# curl and script, for the docs' commands;
# Debian's chromium, chromium-driver and firefox-esr, for the console's
# browser tests; PostgreSQL's server, for the PostgreSQL backend's tests),
# then the whole cargo test suite against the real binary. Arguments go to
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null 2>&1; then
  echo "test.sh: installing python3 (needed by the Fernet interop test)"
  apt-get update -qq && apt-get install -y -qq python3 python3-pip >/dev/null
fi
if ! python3 -c 'import cryptography' >/dev/null 2>&1; then
  echo "test.sh: installing the Python package cryptography (Fernet interop test)"
  python3 -m pip install --quiet cryptography \
    || apt-get install -y -qq python3-cryptography >/dev/null
fi

# The commands the docs' shell blocks use, which tests/docs_run.rs runs
# as written: sqlite3 (docs/migration.md), curl, and script (util-linux;
# a terminal for `keys add`'s prompt).
tools=()
command -v sqlite3 >/dev/null 2>&1 || tools+=(sqlite3)
command -v curl >/dev/null 2>&1 || tools+=(curl)
command -v script >/dev/null 2>&1 || tools+=(bsdutils)
if [ ${#tools[@]} -gt 0 ]; then
  echo "test.sh: installing ${tools[*]} (the docs' commands, tests/docs_run.rs)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tools[@]}" >/dev/null
fi

# Firefox is driven over its own Marionette socket: Debian packages no
# geckodriver, and the test needs none.
browsers=()
command -v chromium >/dev/null 2>&1 || browsers+=(chromium)
command -v chromedriver >/dev/null 2>&1 || browsers+=(chromium-driver)
command -v firefox-esr >/dev/null 2>&1 || command -v firefox >/dev/null 2>&1 || browsers+=(firefox-esr)
if [ ${#browsers[@]} -gt 0 ]; then
  echo "test.sh: installing ${browsers[*]} (the console's browser tests)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${browsers[@]}" >/dev/null
fi

# PostgreSQL's server binaries, for tests/postgres.rs (each test starts a
# server of its own in a temporary directory, as an unprivileged user, on
# a free loopback port). Debian puts them in /usr/lib/postgresql/*/bin.
have_initdb() {
  command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
if ! have_initdb; then
  echo "test.sh: installing PostgreSQL (Debian's postgresql package) for the PostgreSQL tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  # The package's own cluster is not needed: the tests run their own. Stop
  # it only if the package started it (by its PID, never by name).
  for pidfile in /var/run/postgresql/*.pid /var/lib/postgresql/*/main/postmaster.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(head -n 1 "$pidfile")
    [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null || true
  done
fi
have_initdb || { echo "test.sh: PostgreSQL's initdb is still missing" >&2; exit 1; }

# Every target, unless the arguments select some (`scripts/test.sh --test
# reference`): cargo's --all-targets would override a selection.
targets=--all-targets
for a in "$@"; do
  case "$a" in
    --) break ;;
    --test | --test=* | --tests | --lib | --bin | --bin=* | --bins | --bench | --bench=* \
      | --benches | --example | --example=* | --examples | --doc) targets= ;;
  esac
done
cargo test --locked $targets "$@"

# The whole run also repeats the API, rate-limit, reveal-audit, export,
# lifecycle, key-lifecycle, token-lifecycle, client, exec, log and version-window suites
# with every store on PostgreSQL (a server of its own per test).
if [ $# -eq 0 ]; then
  echo "test.sh: the API, rate-limit, reveal-audit, export, lifecycle, key-lifecycle, token-lifecycle, client, exec, log and version-window suites again, on PostgreSQL"
  KEYHOLD_TEST_BACKEND=postgres cargo test --locked --test api --test rate_limit --test reveal_audit \
    --test export --test lifecycle --test key_lifecycle --test token_lifecycle --test client \
    --test exec_refs --test logs --test version_window
fi
