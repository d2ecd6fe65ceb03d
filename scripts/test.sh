#!/usr/bin/env bash
# Runs every test of keyhold on a fresh machine: installs what the tests
# need (Python 3 with `cryptography`, for the Fernet interop test;
# Debian's chromium and chromium-driver, for the console's browser test),
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

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "test.sh: installing chromium and chromium-driver (the console's browser test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
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
