#!/usr/bin/env bash
# Runs every cargo-fuzz target of keyhold (fuzz/fuzz_targets/) in turn for
# a set time each, and prints per target what it ran and whether it found
# a crash. Exits 1 when any target crashed (the input is kept under
# fuzz/artifacts/TARGET/), 0 otherwise.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
#   SECONDS_PER_TARGET  default 60
#   TARGET              default: every target (`cargo fuzz list`)
#
# Environment:
#   FUZZ_TARGET_DIR  where the instrumented build goes (default
#                    /tmp/fuzz-target; never the repository's
#                    target/, so it does not lock `cargo test`)
#   FUZZ_SANITIZER   address (default) or none
#   FUZZ_ARGS        extra libFuzzer flags, e.g. "-jobs=2 -workers=2"
#
# cargo-fuzz needs nightly compiler flags (-Z sanitizer, coverage
# instrumentation). On a stable toolchain this script sets
# RUSTC_BOOTSTRAP=1, which lets stable rustc accept them.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi

export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/tmp/fuzz-target}"
sanitizer="${FUZZ_SANITIZER:-address}"
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (cargo install --locked cargo-fuzz)"
  cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "fuzz.sh: building ${#targets[@]} targets (sanitizer: $sanitizer, target dir: $CARGO_TARGET_DIR)"
build_start=$(date +%s)
cargo fuzz build --sanitizer "$sanitizer" "${targets[@]:0:1}" >/dev/null
for t in "${targets[@]:1}"; do
  cargo fuzz build --sanitizer "$sanitizer" "$t" >/dev/null
done
echo "fuzz.sh: build took $(($(date +%s) - build_start)) s"

logdir="$(mktemp -d /tmp/keyhold-fuzz-logs.XXXXXX)"
crashed=0
summary=()
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  seeds="fuzz/seeds/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  dirs=("$corpus")
  [ -d "$seeds" ] && dirs+=("$seeds")
  dict=()
  [ -f "fuzz/dicts/$t.dict" ] && dict=("-dict=fuzz/dicts/$t.dict")
  log="$logdir/$t.log"
  echo "fuzz.sh: $t for ${secs} s (log: $log)"
  start=$(date +%s)
  set +e
  # shellcheck disable=SC2086
  cargo fuzz run --sanitizer "$sanitizer" "$t" "${dirs[@]}" -- \
    -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="fuzz/artifacts/$t/" "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
  rc=$?
  set -e
  took=$(($(date +%s) - start))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  [ -n "$execs" ] || execs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | grep -o '[0-9]*' || true)
  [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#' || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  corpus_n=$(find "$corpus" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    result="no crash"
  else
    crashed=$((crashed + 1))
    artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/Test unit written to //' || true)
    why=$(grep -m1 -E 'panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer|SUMMARY:' "$log" | head -c 200 || true)
    result="CRASH (exit $rc) ${artifact:-see log}: ${why}"
    echo "fuzz.sh: $t crashed; reproduce with: RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$CARGO_TARGET_DIR cargo fuzz run --sanitizer $sanitizer $t ${artifact:-ARTIFACT}"
  fi
  line=$(printf '%-16s %4ss %12s execs  cov %-6s corpus %-6s %s' "$t" "$took" "${execs:-?}" "${cov:-?}" "$corpus_n" "$result")
  echo "fuzz.sh: $line"
  summary+=("$line")
done

echo
echo "fuzz.sh summary (${secs} s per target, sanitizer $sanitizer; logs in $logdir):"
for s in "${summary[@]}"; do echo "  $s"; done
if [ "$crashed" -ne 0 ]; then
  echo "fuzz.sh: $crashed of ${#targets[@]} targets crashed"
  exit 1
fi
echo "fuzz.sh: no target crashed"
