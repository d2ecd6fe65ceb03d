#!/usr/bin/env bash
# A million distinct client addresses through a trusted proxy's
# X-Forwarded-For against a release server; prints RSS before, at peak and
# after pruning. KEYHOLD_FLOOD_ADDRESSES overrides the count.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
KEYHOLD_BIN="$PWD/target/release/keyhold" \
  cargo test --release --locked --test limiter_memory -- --ignored --nocapture 2>&1 \
  | grep -E "limiter flood|test result"
