#!/usr/bin/env python3
"""Builds a fixture of the Python reference's `api_keys` table.

Writes OUTDIR/api_keys.db (a real SQLite table, written with sqlite3) and
the three forms `keyhold import` reads, made by the sqlite3 shell when it
is installed (else written the way it prints them):

    api_keys.json    like `sqlite3 -json api_keys.db 'SELECT * FROM api_keys'`
    api_keys.jsonl   one JSON object a line
    api_keys.csv     like `sqlite3 -csv -header ...` (CRLF rows, NULL empty)

Tokens are made with Python's cryptography.fernet under FERNET_KEY (from
the environment, never argv). Row i holds the plaintext `sk-ref-<i>`.

    FERNET_KEY=... make_reference_fixture.py OUTDIR [--rows N] [--foreign-row]

--foreign-row adds one more row encrypted under a different, random key.
Exit status 3 when the `cryptography` package is missing.
"""
import argparse
import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys

try:
    from cryptography.fernet import Fernet
except ImportError:
    sys.stderr.write(
        "make_reference_fixture.py: the Python package `cryptography` is missing: "
        "install it with `python3 -m pip install cryptography`\n"
    )
    sys.exit(3)

# The reference's table (SQLAlchemy model with an integer primary key).
SCHEMA = """
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    provider VARCHAR(64) NOT NULL,
    key_name VARCHAR(200) NOT NULL,
    encrypted_key TEXT NOT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_used DATETIME
)
"""
COLUMNS = ["id", "provider", "key_name", "encrypted_key", "created_at", "last_used"]
PROVIDERS = ["claude", "gemini", "github"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--foreign-row", action="store_true")
    args = ap.parse_args()
    key = os.environ.get("FERNET_KEY")
    if not key:
        sys.stderr.write("make_reference_fixture.py: set FERNET_KEY\n")
        return 2
    f = Fernet(key.encode())
    os.makedirs(args.outdir, exist_ok=True)
    db_path = os.path.join(args.outdir, "api_keys.db")
    if os.path.exists(db_path):
        os.remove(db_path)
    db = sqlite3.connect(db_path)
    db.execute(SCHEMA)
    rows = []
    for i in range(1, args.rows + 1):
        created = f"2024-0{1 + i % 9}-{10 + i % 18:02d} 12:{i % 60:02d}:05"
        last_used = None if i % 3 == 0 else f"2024-10-{1 + i % 28:02d} 08:00:00.125000"
        rows.append(
            (
                PROVIDERS[i % len(PROVIDERS)],
                f"key, \"number\" {i}",
                f.encrypt(f"sk-ref-{i}".encode()).decode(),
                created,
                last_used,
            )
        )
    if args.foreign_row:
        other = Fernet(Fernet.generate_key())
        rows.append(("claude", "foreign", other.encrypt(b"sk-foreign").decode(), "2024-02-02 02:02:02", None))
    db.executemany(
        "INSERT INTO api_keys (provider, key_name, encrypted_key, created_at, last_used) VALUES (?, ?, ?, ?, ?)",
        rows,
    )
    db.commit()
    out = [dict(zip(COLUMNS, r)) for r in db.execute("SELECT * FROM api_keys ORDER BY id")]
    db.close()

    json_path = os.path.join(args.outdir, "api_keys.json")
    csv_path = os.path.join(args.outdir, "api_keys.csv")
    query = "SELECT * FROM api_keys ORDER BY id"
    if shutil.which("sqlite3"):
        # The real shell, when it is installed.
        with open(json_path, "wb") as fh:
            subprocess.run(["sqlite3", "-json", db_path, query], stdout=fh, check=True)
        with open(csv_path, "wb") as fh:
            subprocess.run(["sqlite3", "-csv", "-header", db_path, query], stdout=fh, check=True)
    else:
        # What the shell prints. -json: one array, a row a line, no spaces.
        with open(json_path, "w") as fh:
            fh.write("[" + ",\n".join(json.dumps(r, separators=(",", ":")) for r in out) + "]\n")
        # -csv -header: quoting as needed, NULL as an empty field (older
        # shells end rows with CRLF; keyhold reads both).
        with open(csv_path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\r\n")
            w.writerow(COLUMNS)
            for r in out:
                w.writerow(["" if r[c] is None else r[c] for c in COLUMNS])
    with open(os.path.join(args.outdir, "api_keys.jsonl"), "w") as fh:
        for r in out:
            fh.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
