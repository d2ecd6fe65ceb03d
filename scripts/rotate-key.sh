#!/bin/sh
# Rotate the Fernet key of a running keyhold server, losing nothing: the
# procedure docs/operations.md describes, as one script (CI runs it end to
# end: tests/rotation_procedure.rs).
#
#   1. a new key at the top of the key file      keyhold keygen --key-file
#   2. the server reads it                       keyhold keyring reload
#   3. everything re-encrypted under it, online  keyhold rotate --remote
#   4. the old key retired, not deleted          keyhold keyring retire
#   5. the server drops it                       keyhold keyring reload
#
# Step 5 is refused, and the server keeps its keyring, if the store still
# needs a retired key; the refusal names the `keyhold keyring unretire`
# command that puts it back. Backups made before the rotation stay
# restorable: `keyhold restore` and `keyhold check --backup` read the
# retired keys too.
#
# Needs FERNET_KEY_FILE (the key file the server reads), KEYHOLD_ADDR and
# an admin token in KEYHOLD_TOKEN or KEYHOLD_TOKEN_FILE. Run it as the key
# file's owner (the service user: `runuser -u keyhold -- scripts/rotate-key.sh`).
# KEYHOLD_BIN names the binary (default: keyhold on PATH).
set -eu

: "${FERNET_KEY_FILE:?set FERNET_KEY_FILE to the key file the server reads}"
kh=${KEYHOLD_BIN:-keyhold}

step() { printf 'rotate-key: %s\n' "$*" >&2; }

step "1/5 a new key at the top of $FERNET_KEY_FILE"
"$kh" keygen --key-file "$FERNET_KEY_FILE"
step "2/5 the server reads the new keyring"
"$kh" keyring reload >/dev/null
step "3/5 everything re-encrypted under the new key (online)"
"$kh" rotate --remote
step "4/5 the old key retired (kept in the file, below [retired])"
"$kh" keyring retire >/dev/null
step "5/5 the server drops the retired key"
"$kh" keyring reload >/dev/null
"$kh" keyring list
step "done: keep the key file's retired keys while you keep backups made before today"
