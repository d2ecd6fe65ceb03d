#!/usr/bin/env bash
# Runs every test of keyhold on a fresh machine: installs what the tests
# need (Python 3 with `cryptography`, for the Fernet interop test), then
# the whole cargo test suite against the real binary.
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

cargo test --locked --all-targets "$@"
