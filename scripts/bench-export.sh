#!/usr/bin/env bash
# Exports 1,000,000 audit records and reports the export's time and peak
# RSS (the test fails above 64 MiB). Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --locked --test export_memory -- --ignored --nocapture 2>&1 \
  | grep -E "wrote|export|test result"
