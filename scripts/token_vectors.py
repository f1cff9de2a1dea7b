#!/usr/bin/env python3
"""Known answers for stream tokens (src/token.rs, format version 1), computed with Python's
standard hmac, hashlib and base64 modules from the format as the module documentation states
it, independently of the Rust code.

Usage:
    python3 scripts/token_vectors.py [OUTPUT_PATH]

Every instance sharing a token key must issue and accept the same tokens, across versions (a
rolling deploy verifies on one instance what another issued): a change to the MAC label, the
MAC input layout, the key id or the byte layout must fail these vectors.

The format (src/token.rs "Format (version 1)", src/secret.rs KeyId):

    key id = HMAC-SHA256(key, "streamguard token key id")[:4]
    tag    = HMAC-SHA256(key, "streamguard stream token v1\\0" || 0x01 || key id
                              || AccountSid || CallSid || expiry || nonce)
    token  = base64url without padding (RFC 4648 section 5) of
             0x01 || key id || expiry || nonce || tag                     (61 bytes, 82 chars)

    expiry = issue time + TTL, in milliseconds since the Unix epoch, 8 bytes big-endian
    SIDs   = their 34 ASCII characters; nonce = 16 bytes

Verification (src/token.rs "Verification order") stops at the first failure: length (82
characters), canonical base64url, version byte, a key with the token's key id then the MAC,
then expiry (now < expiry, and expiry at most one hour after now). Each vector comes with
tampered twins, each refused with the error that order gives (TokenError::as_str labels).
"""

import base64
import hashlib
import hmac
import json
import sys

KEY_ID_LABEL = b"streamguard token key id"
MAC_LABEL = b"streamguard stream token v1\0"
VERSION = 1
MAX_TTL_MS = 3_600_000


def h(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def key_id(key: bytes) -> bytes:
    return h(key, KEY_ID_LABEL)[:4]


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def token_bytes(key, account, call, expires_at_ms, nonce, version=VERSION, kid=None,
                mac_label=MAC_LABEL):
    kid = key_id(key) if kid is None else kid
    expiry = expires_at_ms.to_bytes(8, "big")
    mac_input = (mac_label + bytes([VERSION]) + kid + account.encode("ascii")
                 + call.encode("ascii") + expiry + nonce)
    tag = h(key, mac_input)
    return bytes([version]) + kid + expiry + nonce + tag


def flip(raw: bytes, index: int, mask: int = 0x01) -> bytes:
    b = bytearray(raw)
    b[index] ^= mask
    return bytes(b)


# Byte offsets of the fields in the 61 raw bytes.
VERSION_AT, KEY_ID_AT, EXPIRY_AT, NONCE_AT, TAG_AT = 0, 1, 5, 13, 29

ACCOUNT = "AC0123456789abcdef0123456789abcdef"
CALL = "CA0123456789abcdef0123456789abcdef"
OTHER_ACCOUNT = "ACfedcba9876543210fedcba9876543210"
OTHER_CALL = "CAfedcba9876543210fedcba9876543210"

CASES = [
    {
        "id": "typical",
        "key": b"streamguard-token-vector-key-001",
        "account": ACCOUNT,
        "call": CALL,
        "issued_at_ms": 1_700_000_000_000,
        "ttl_ms": 60_000,
        "nonce": bytes(range(16)),
    },
    {
        # The longest key, the longest TTL, an all-ones nonce, the other SIDs.
        "id": "long-key-max-ttl",
        "key": bytes(range(64)),
        "account": OTHER_ACCOUNT,
        "call": OTHER_CALL,
        "issued_at_ms": 1,
        "ttl_ms": MAX_TTL_MS,
        "nonce": bytes([0xFF] * 16),
    },
    {
        # The shortest TTL (1 ms), a key of one repeated byte, mixed SIDs.
        "id": "min-ttl",
        "key": bytes([0xA5] * 32),
        "account": ACCOUNT,
        "call": OTHER_CALL,
        "issued_at_ms": 1_750_000_000_123,
        "ttl_ms": 1,
        "nonce": bytes.fromhex("00ff00ff102030405060708090a0b0c0"),
    },
]


def vector(case):
    key = case["key"]
    expires = case["issued_at_ms"] + case["ttl_ms"]
    raw = token_bytes(key, case["account"], case["call"], expires, case["nonce"])
    token = b64url(raw)
    assert len(raw) == 61 and len(token) == 82
    now = case["issued_at_ms"]
    last_valid = expires - 1

    def twin(what, text, error, account=None, call=None, at=None):
        return {
            "what": what,
            "token": text,
            "account": account or case["account"],
            "call": call or case["call"],
            "at_ms": now if at is None else at,
            "error": error,
        }

    other_call = OTHER_CALL if case["call"] == CALL else CALL
    other_account = OTHER_ACCOUNT if case["account"] == ACCOUNT else ACCOUNT
    # The last character carries 2 bits of the tag and 4 zero bits: setting one of the zero
    # bits spells the same bytes non-canonically.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    stray = token[:-1] + alphabet[alphabet.index(token[-1]) | 1]
    twins = [
        twin("flipped first MAC byte", b64url(flip(raw, TAG_AT)), "token_bad_mac"),
        twin("flipped last MAC byte", b64url(flip(raw, 60, 0x80)), "token_bad_mac"),
        twin("changed call", token, "token_bad_mac", call=other_call),
        twin("changed account", token, "token_bad_mac", account=other_account),
        twin("changed expiry (one millisecond later, same MAC)",
             b64url(raw[:EXPIRY_AT] + (expires + 1).to_bytes(8, "big") + raw[NONCE_AT:]),
             "token_bad_mac"),
        twin("changed nonce", b64url(flip(raw, NONCE_AT + 15)), "token_bad_mac"),
        twin("changed key id", b64url(flip(raw, KEY_ID_AT)), "token_unknown_key"),
        twin("changed version", b64url(flip(raw, VERSION_AT, 0x02)), "token_version"),
        twin("MAC under another label",
             b64url(token_bytes(key, case["account"], case["call"], expires, case["nonce"],
                                mac_label=b"streamguard stream token v2\0")),
             "token_bad_mac"),
        twin("presented at its expiry", token, "token_expired", at=expires),
        twin("expiry over an hour after now",
             token, "token_expiry_too_far", at=expires - MAX_TTL_MS - 1),
        twin("one character short", token[:-1], "token_length"),
        twin("padded", token + "==", "token_length"),
        twin("non-canonical last character", stray, "token_encoding"),
        twin("standard instead of url-safe alphabet",
             token.replace("-", "+").replace("_", "/") if ("-" in token or "_" in token)
             else token[:-2] + "+" + token[-1],
             "token_encoding"),
    ]
    return {
        "id": case["id"],
        "key": key.hex(),
        "key_id": key_id(key).hex(),
        "account": case["account"],
        "call": case["call"],
        "issued_at_ms": case["issued_at_ms"],
        "ttl_ms": case["ttl_ms"],
        "nonce": case["nonce"].hex(),
        "expires_at_ms": expires,
        "token": token,
        "valid_at_ms": [now, last_valid],
        "twins": twins,
    }


def main(argv):
    doc = {
        "source": "scripts/token_vectors.py (Python hmac/hashlib/base64, from the format "
                  "documented in src/token.rs, independent of the Rust code)",
        "vectors": [vector(c) for c in CASES],
    }
    text = json.dumps(doc, indent=2) + "\n"
    if len(argv) > 1:
        with open(argv[1], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv)
