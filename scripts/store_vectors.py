#!/usr/bin/env python3
"""Known answers for the replay store's key derivations (src/store/mod.rs, StoreKey),
computed with Python's standard hmac module, independently of the Rust code.

Usage:
    python3 scripts/store_vectors.py [OUTPUT_PATH]

Every instance of one account must derive the same store key, record names and sealed
nonces from the same auth token, across versions (a rolling deploy shares one Redis):
a change to a label or to an input layout must fail these vectors.

    store key            = HMAC-SHA256(key = auth token bytes, "streamguard replay store key v1\\0")
    pad(a, c, expiry)    = HMAC-SHA256(store key, "streamguard nonce pad v1\\0" || AccountSid
                                       || CallSid || expiry in ms as 8 bytes big-endian)[:16]
    sealed nonce         = nonce XOR pad(a, c, expiry)
    call id(a, c)        = HMAC-SHA256(store key, "streamguard call v1\\0" || AccountSid || CallSid)[:16]
"""

import hashlib
import hmac
import json
import sys


def h(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


CASES = [
    {
        "auth_token": "f1e2d3c4b5a6978877665544332211ff",
        "nonce": bytes(range(16)),
        "expires_at_ms": 1_700_000_060_000,
        "account": "AC0123456789abcdef0123456789abcdef",
        "call": "CA0123456789abcdef0123456789abcdef",
    },
    {
        "auth_token": "0123456789abcdef0123456789abcdef",
        "nonce": bytes([0xFF] * 16),
        "expires_at_ms": 1,
        "account": "ACfedcba9876543210fedcba9876543210",
        "call": "CAfedcba9876543210fedcba9876543210",
    },
]


def vector(case):
    store_key = h(case["auth_token"].encode(), b"streamguard replay store key v1\0")
    account, call = case["account"].encode(), case["call"].encode()
    expiry = case["expires_at_ms"].to_bytes(8, "big")
    pad = h(store_key, b"streamguard nonce pad v1\0", account, call, expiry)[:16]
    sealed = bytes(n ^ p for n, p in zip(case["nonce"], pad))
    call_id = h(store_key, b"streamguard call v1\0", account, call)[:16]
    return {
        "auth_token": case["auth_token"],
        "account": case["account"],
        "call": case["call"],
        "expires_at_ms": case["expires_at_ms"],
        "nonce": case["nonce"].hex(),
        "sealed": sealed.hex(),
        "call_id": call_id.hex(),
    }


def main():
    doc = {
        "source": "scripts/store_vectors.py (Python hmac/hashlib, independent of the Rust code)",
        "vectors": [vector(c) for c in CASES],
    }
    text = json.dumps(doc, indent=2) + "\n"
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
