#!/usr/bin/env bash
# Audits keyhold's dependencies (Cargo.lock, as it is) offline against a
# RustSec advisory database, with audit.toml at the repository root as
# the configuration: its accepted advisories, each with its reason.
#
#   scripts/audit-deps.sh ADVISORY_DB_PATH
#
# ADVISORY_DB_PATH is a checkout or snapshot of the RustSec advisory-db
# (the directory holding crates/ and rust/). It is read, never fetched,
# and never copied into the project.
#
# Exits 0 when nothing but accepted advisories is found; 1 when an
# advisory (vulnerability, unmaintained, unsound, notice) is not accepted
# in audit.toml; 2 on a usage error. It also audits fuzz/Cargo.lock
# (the cargo-fuzz crate's own lock file) when that exists, and says which
# accepted advisories no longer match anything.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

if [ "$#" -ne 1 ]; then
  echo "usage: scripts/audit-deps.sh ADVISORY_DB_PATH" >&2
  exit 2
fi
db="$(cd "$1" 2>/dev/null && pwd)" || {
  echo "audit-deps.sh: $1 is not a directory" >&2
  exit 2
}
if [ ! -d "$db/crates" ]; then
  echo "audit-deps.sh: $db holds no crates/ directory: give the advisory-db path" >&2
  exit 2
fi

if ! cargo audit --version >/dev/null 2>&1; then
  echo "audit-deps.sh: installing cargo-audit (cargo install --locked cargo-audit)"
  cargo install --locked cargo-audit
fi

# cargo-audit reads its configuration only from ./.cargo/audit.toml or
# $CARGO_HOME/audit.toml, so run it from a scratch directory holding ours.
work="$(mktemp -d /tmp/keyhold-audit.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/with-config/.cargo" "$work/bare"
cp audit.toml "$work/with-config/.cargo/audit.toml"

locks=("Cargo.lock")
[ -f fuzz/Cargo.lock ] && locks+=("fuzz/Cargo.lock")

mapfile -t accepted < <(sed -n '/^ignore *= *\[/,/^\]/p' audit.toml | grep -o 'RUSTSEC-[0-9]*-[0-9]*')
echo "audit-deps.sh: $(cargo audit --version 2>/dev/null | sed "s/-audit-audit/-audit/"), advisory db $db"
echo "audit-deps.sh: accepted in audit.toml: ${accepted[*]:-none}"

status=0
declare -A seen=()
for lock in "${locks[@]}"; do
  echo
  echo "== $lock"
  # Everything the database says about this lock file, accepted or not
  # (the bare directory has no configuration).
  all=$(
    cd "$work/bare"
    cargo audit --db "$db" --no-fetch --stale --no-yanked --file "$root/$lock" 2>&1
  ) || true
  mapfile -t ids < <(grep -o 'RUSTSEC-[0-9]*-[0-9]*' <<<"$all" | sort -u)
  for id in "${ids[@]}"; do
    seen[$id]=1
    crate=$(grep -B8 "^ID: *$id" <<<"$all" | grep -m1 '^Crate:' | awk '{print $2}')
    version=$(grep -B8 "^ID: *$id" <<<"$all" | grep -m1 '^Version:' | awk '{print $2}')
    kind=$(grep -B8 "^ID: *$id" <<<"$all" | grep -m1 -E '^Warning:' | awk '{print $2}')
    [ -n "$kind" ] || kind=vulnerability
    if printf '%s\n' "${accepted[@]}" | grep -qx "$id"; then
      echo "  accepted  $id  $crate $version ($kind): see audit.toml"
    else
      echo "  FOUND     $id  $crate $version ($kind): not accepted"
    fi
  done
  # The verdict: with audit.toml, denying every warning kind.
  set +e
  out=$(cd "$work/with-config" && cargo audit --db "$db" --no-fetch --stale \
    --file "$root/$lock" 2>&1)
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    echo "  result: ok (nothing found beyond the accepted advisories)"
  else
    status=1
    echo "  result: FAILED (cargo audit exited $rc):"
    while IFS= read -r l; do echo "    $l"; done <<<"$out"
  fi
done

for id in "${accepted[@]}"; do
  if [ -z "${seen[$id]:-}" ]; then
    echo "audit-deps.sh: note: $id is accepted in audit.toml but no longer found; remove it"
  fi
done
echo
if [ "$status" -eq 0 ]; then
  echo "audit-deps.sh: ok: no unaccepted advisory in ${locks[*]}"
else
  echo "audit-deps.sh: unaccepted advisories found (above): fix them, or accept them in audit.toml with a reason"
fi
exit "$status"
