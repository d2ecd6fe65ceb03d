#!/usr/bin/env bash
# Kills a release server with SIGKILL at random moments under concurrent
# creates and reveals, RUNS times (default 100), and checks after each that
# every acknowledged create is stored and decrypts, every acknowledged
# reveal has its audit record, and the audit chain verifies.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-100}"
cargo build --release --locked
KEYHOLD_BIN="$PWD/target/release/keyhold" KEYHOLD_CRASH_RUNS="$RUNS" \
  cargo test --release --locked --test reliability sigkill -- --nocapture 2>&1 \
  | grep -E "crash test|test result|panicked"
