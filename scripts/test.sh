#!/usr/bin/env bash
# Runs every test of keyhold on a fresh machine: installs what the tests
# need (Python 3 with `cryptography`, for the Fernet interop test;
# Debian's chromium, chromium-driver and firefox-esr, for the console's
# browser tests),
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
