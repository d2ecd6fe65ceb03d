#!/usr/bin/env python3
"""Fernet interop helper for keyhold's tests.

Proves that Python's cryptography.fernet and keyhold read each other's
tokens. The key comes from the FERNET_KEY environment variable and data
from stdin, so no secret is ever on a command line.

    fernet_interop.py genkey                       print a new key
    FERNET_KEY=... fernet_interop.py encrypt       stdin plaintext -> token
    FERNET_KEY=... fernet_interop.py decrypt       stdin token -> plaintext

Exit status 3 when the `cryptography` package is missing.
"""
import os
import sys

try:
    from cryptography.fernet import Fernet, InvalidToken
except ImportError:  # pragma: no cover - reported to the caller
    sys.stderr.write(
        "fernet_interop.py: the Python package `cryptography` is missing: "
        "install it with `python3 -m pip install cryptography`\n"
    )
    sys.exit(3)


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in ("genkey", "encrypt", "decrypt"):
        sys.stderr.write(__doc__)
        return 2
    mode = sys.argv[1]
    if mode == "genkey":
        sys.stdout.write(Fernet.generate_key().decode() + "\n")
        return 0
    key = os.environ.get("FERNET_KEY")
    if not key:
        sys.stderr.write("fernet_interop.py: set FERNET_KEY\n")
        return 2
    f = Fernet(key.encode())
    data = sys.stdin.buffer.read()
    if mode == "encrypt":
        sys.stdout.write(f.encrypt(data).decode() + "\n")
        return 0
    try:
        sys.stdout.buffer.write(f.decrypt(data.strip()))
    except InvalidToken:
        sys.stderr.write("fernet_interop.py: invalid token for this key\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
