#!/usr/bin/env python3
"""Times Python `cryptography` Fernet per operation on a 100-byte key, the
reference that scripts/bench.sh compares keyhold's Fernet with (issue 6).

    scripts/bench_fernet.py [--iters 200000] [--repeats 5]

Prints `python_fernet_encrypt: N ns/op` and `python_fernet_decrypt: N ns/op`
(each the median of --repeats rounds of --iters/--repeats operations,
like examples/loadgen.rs `fernet`). Decrypt is `Fernet.decrypt(token)`
without a TTL, as keyhold decrypts. Exit status 3 when `cryptography` is
missing.
"""
import argparse
import statistics
import sys
import time

try:
    import cryptography
    from cryptography.fernet import Fernet
except ImportError:
    sys.stderr.write(
        "bench_fernet.py: the Python package `cryptography` is missing: "
        "install it with `python3 -m pip install cryptography`\n"
    )
    sys.exit(3)


def per_op_ns(fn, arg, n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn(arg)
    return (time.perf_counter_ns() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    repeats = max(1, args.repeats)
    per_round = max(1, args.iters // repeats)

    f = Fernet(Fernet.generate_key())
    plaintext = b"k" * 100
    token = f.encrypt(plaintext)
    assert f.decrypt(token) == plaintext

    enc, dec = [], []
    for _ in range(repeats):
        enc.append(per_op_ns(f.encrypt, plaintext, per_round))
        dec.append(per_op_ns(f.decrypt, token, per_round))
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        openssl = backend.openssl_version_text()
    except Exception:  # noqa: BLE001 - only informative
        openssl = "unknown OpenSSL"
    print(f"# python {sys.version.split()[0]}, cryptography {cryptography.__version__}, {openssl}")
    print(f"python_fernet_encrypt: {statistics.median(enc):.0f} ns/op")
    print(f"python_fernet_decrypt: {statistics.median(dec):.0f} ns/op")
    return 0


if __name__ == "__main__":
    sys.exit(main())
