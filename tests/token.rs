//! Stream tokens (`src/token.rs`, `src/secret.rs`): known answers computed independently
//! (`tests/data/token-vectors.json`, from `scripts/token_vectors.py`) with a tampered twin of
//! each, issue/verify round trips, binding to one call and one account, expiry, the documented verification order (length, encoding,
//! version, key id and MAC, expiry), tampering, key rotation, key and key-set constraints,
//! TTL bounds, and redacting `Debug` of every secret-bearing type.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{ACCOUNT, CALL, OTHER_ACCOUNT, OTHER_CALL, T0, TTL, account, call, key, keyset};
use proptest::prelude::*;
use serde::Deserialize;
use streamguard::limits::{
    MAX_TOKEN_TTL, TOKEN_KEY_MAX_BYTES, TOKEN_KEY_MIN_BYTES, TOKEN_MAX_KEYS,
};
use streamguard::secret::{AuthToken, AuthTokenError, KeyError, KeySet, TokenKey};
use streamguard::time::UnixTime;
use streamguard::token::{
    IssueError, TOKEN_BYTES, TOKEN_CHARS, TokenError, VERSION_1, issue, issue_with_nonce, verify,
};

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn the_token(n: u64) -> String {
    common::token_for(&keyset(1), &account(ACCOUNT), &call(CALL), T0, n)
        .as_str()
        .to_owned()
}

fn verify_default(token: &str, now: UnixTime) -> Result<(), TokenError> {
    verify(&keyset(1), token, &account(ACCOUNT), &call(CALL), now).map(|_| ())
}

/// Decodes a token (independently of the crate) into its 61 bytes.
fn decode(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(token).unwrap()
}

fn encode(raw: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

// ---------------------------------------------------------------------------------------------
// Known answers
// ---------------------------------------------------------------------------------------------

/// `tests/data/token-vectors.json`: tokens computed by `scripts/token_vectors.py` with
/// Python's `hmac`, from the format as `src/token.rs` documents it.
#[derive(Debug, Deserialize)]
struct TokenVectors {
    source: String,
    vectors: Vec<TokenVector>,
}

#[derive(Debug, Deserialize)]
struct TokenVector {
    id: String,
    key: String,
    key_id: String,
    account: String,
    call: String,
    issued_at_ms: u64,
    ttl_ms: u64,
    nonce: String,
    expires_at_ms: u64,
    token: String,
    valid_at_ms: Vec<u64>,
    twins: Vec<Twin>,
}

/// The vector's token (or a tampered copy) presented for `account` / `call` at `at_ms`:
/// refused with the `TokenError` whose label is `error`.
#[derive(Debug, Deserialize)]
struct Twin {
    what: String,
    token: String,
    account: String,
    call: String,
    at_ms: u64,
    error: String,
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "{s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn token_vectors() -> TokenVectors {
    let doc: TokenVectors = serde_json::from_str(include_str!("data/token-vectors.json")).unwrap();
    assert!(
        doc.source.contains("scripts/token_vectors.py"),
        "{}",
        doc.source
    );
    assert_eq!(
        doc.vectors.len(),
        3,
        "the vector file changed: review this test"
    );
    doc
}

/// Every way `verify` can refuse a token.
const ALL_TOKEN_ERRORS: [TokenError; 7] = [
    TokenError::Length,
    TokenError::Encoding,
    TokenError::Version,
    TokenError::UnknownKey,
    TokenError::BadMac,
    TokenError::Expired,
    TokenError::ExpiryTooFar,
];

/// `issue_with_nonce` gives the vector's token byte for byte, the key id is the vector's,
/// and `verify` accepts the token from its issue time to one millisecond before its expiry,
/// with the vector's claims. A change to the MAC label, the MAC input layout, the key id or
/// the byte layout fails here (and would break tokens between instances in a rolling
/// deploy).

#[test]
fn known_answers_issue_exactly_and_verify() {
    for v in token_vectors().vectors {
        let key = TokenKey::from_bytes(&hex(&v.key)).unwrap();
        assert_eq!(key.id().to_bytes().to_vec(), hex(&v.key_id), "{}", v.id);
        let nonce: [u8; 16] = hex(&v.nonce).try_into().unwrap();
        let (a, c) = (account(&v.account), call(&v.call));
        let issued = issue_with_nonce(
            &key,
            &a,
            &c,
            UnixTime::from_millis(v.issued_at_ms),
            Duration::from_millis(v.ttl_ms),
            nonce,
        )
        .unwrap();
        assert_eq!(issued.as_str(), v.token, "{}", v.id);
        // The token fuzz target's oracle builds the same bytes from the documented format.
        assert_eq!(
            streamguard::invariants::expected_token(
                &hex(&v.key),
                &v.account,
                &v.call,
                v.expires_at_ms,
                &nonce
            ),
            v.token,
            "{}",
            v.id
        );
        let keys = KeySet::single(key);
        assert_eq!(v.valid_at_ms.len(), 2, "{}", v.id);
        for at in &v.valid_at_ms {
            let claims = verify(&keys, &v.token, &a, &c, UnixTime::from_millis(*at)).unwrap();
            assert_eq!(claims.key_id, keys.current().id(), "{}", v.id);
            assert_eq!(claims.expires_at.as_millis(), v.expires_at_ms, "{}", v.id);
            assert_eq!(claims.nonce, nonce, "{}", v.id);
        }
    }
}

/// Every tampered twin of every vector (a flipped MAC byte, another call, another account,
/// another expiry, nonce, key id or version, a MAC under another label, the wrong time, the
/// wrong length or encoding) is refused, with the error the documented verification order
/// gives.
#[test]
fn every_tampered_twin_is_refused_with_its_documented_error() {
    let all = ALL_TOKEN_ERRORS;
    let mut kinds: Option<Vec<String>> = None;
    for v in token_vectors().vectors {
        let keys = KeySet::single(TokenKey::from_bytes(&hex(&v.key)).unwrap());
        for t in &v.twins {
            let want = all
                .iter()
                .copied()
                .find(|e| e.as_str() == t.error)
                .unwrap_or_else(|| panic!("unknown error label {}", t.error));
            let got = verify(
                &keys,
                &t.token,
                &account(&t.account),
                &call(&t.call),
                UnixTime::from_millis(t.at_ms),
            );
            assert_eq!(got.map(|_| ()), Err(want), "{}: {}", v.id, t.what);
        }
        // Every vector has the same twins, and they include the ones that matter most.
        let whats: Vec<String> = v.twins.iter().map(|t| t.what.clone()).collect();
        for must in [
            "flipped first MAC byte",
            "flipped last MAC byte",
            "changed call",
            "changed account",
            "changed expiry (one millisecond later, same MAC)",
            "changed key id",
        ] {
            assert!(
                whats.iter().any(|w| w == must),
                "{}: no twin {must:?}",
                v.id
            );
        }
        match &kinds {
            None => kinds = Some(whats),
            Some(k) => assert_eq!(*k, whats, "{}", v.id),
        }
    }
}

#[test]
fn format_constants_match_the_documented_layout() {
    // 1 version + 4 key id + 8 expiry + 16 nonce + 32 tag.
    assert_eq!(TOKEN_BYTES, 61);
    assert_eq!(TOKEN_CHARS, 82);
    let t = the_token(1);
    assert_eq!(t.len(), TOKEN_CHARS);
    assert!(t.bytes().all(|b| B64URL.contains(&b)), "{t}");
    let raw = decode(&t);
    assert_eq!(raw.len(), TOKEN_BYTES);
    assert_eq!(raw[0], VERSION_1);
    assert_eq!(raw[1..5], key(1).id().to_bytes());
    let expiry = u64::from_be_bytes(raw[5..13].try_into().unwrap());
    assert_eq!(expiry, T0.as_millis() + 60_000);
    assert_eq!(raw[13..29], common::nonce(1));
}

#[test]
fn verify_returns_the_claims_of_the_token() {
    let t = the_token(7);
    let claims = verify(&keyset(1), &t, &account(ACCOUNT), &call(CALL), T0).unwrap();
    assert_eq!(claims.key_id, key(1).id());
    assert_eq!(claims.expires_at, common::after(T0, TTL));
    assert_eq!(claims.nonce, common::nonce(7));
}

#[test]
fn issue_with_system_random_round_trips_and_differs_each_time() {
    let rng = ring::rand::SystemRandom::new();
    let keys = keyset(1);
    let a = issue(
        keys.current(),
        &account(ACCOUNT),
        &call(CALL),
        T0,
        TTL,
        &rng,
    )
    .unwrap();
    let b = issue(
        keys.current(),
        &account(ACCOUNT),
        &call(CALL),
        T0,
        TTL,
        &rng,
    )
    .unwrap();
    assert_ne!(a.as_str(), b.as_str());
    assert_ne!(a, b);
    assert_eq!(a, a.clone());
    for t in [&a, &b] {
        assert!(verify(&keys, t.as_str(), &account(ACCOUNT), &call(CALL), T0).is_ok());
    }
}

/// Binding: (account, call, keys) presented to `verify`, and the expected error, for a token
/// issued by key 1 for (ACCOUNT, CALL).
#[test]
fn a_token_verifies_only_for_its_call_and_account() {
    let t = the_token(1);
    let cases: &[(&str, &str, Result<(), TokenError>)] = &[
        (ACCOUNT, CALL, Ok(())),
        (ACCOUNT, OTHER_CALL, Err(TokenError::BadMac)),
        (OTHER_ACCOUNT, CALL, Err(TokenError::BadMac)),
        (OTHER_ACCOUNT, OTHER_CALL, Err(TokenError::BadMac)),
        // Same digits, other case: another SID to Twilio, so another binding.
        (
            "AC0123456789ABCDEF0123456789ABCDEF",
            CALL,
            Err(TokenError::BadMac),
        ),
        (
            ACCOUNT,
            "CA0123456789ABCDEF0123456789ABCDEF",
            Err(TokenError::BadMac),
        ),
    ];
    for (a, c, expected) in cases {
        let got = verify(&keyset(1), &t, &account(a), &call(c), T0).map(|_| ());
        assert_eq!(got, *expected, "{a} {c}");
    }
    // Account and call are not interchangeable: a token for (account X, call Y) is refused
    // for (account Y, call X), where X and Y are the same 32 digits in the other role.
    let (x, y) = (0x1111u64, 0x2222u64);
    let keys = keyset(1);
    let t = issue_with_nonce(
        keys.current(),
        &common::nth_account(x),
        &common::nth_call(y),
        T0,
        TTL,
        common::nonce(1),
    )
    .unwrap();
    assert_eq!(
        verify(
            &keys,
            t.as_str(),
            &common::nth_account(y),
            &common::nth_call(x),
            T0
        )
        .map(|_| ()),
        Err(TokenError::BadMac)
    );
}

#[test]
fn expiry_boundaries() {
    let t = the_token(1);
    let expiry = common::after(T0, TTL);
    let cases: &[(UnixTime, Result<(), TokenError>)] = &[
        (T0, Ok(())),
        (common::plus_ms(T0, 59_999), Ok(())),
        (expiry, Err(TokenError::Expired)),
        (common::plus_ms(expiry, 1), Err(TokenError::Expired)),
        (UnixTime::from_millis(u64::MAX), Err(TokenError::Expired)),
        // Before issuance, but still within MAX_TOKEN_TTL of the expiry: valid (clock skew
        // between instances is tolerated up to that bound).
        (common::before(T0, Duration::from_secs(60)), Ok(())),
        (common::before(expiry, MAX_TOKEN_TTL), Ok(())),
        (
            common::before(
                common::before(expiry, MAX_TOKEN_TTL),
                Duration::from_millis(1),
            ),
            Err(TokenError::ExpiryTooFar),
        ),
        (UnixTime::EPOCH, Err(TokenError::ExpiryTooFar)),
    ];
    for (now, expected) in cases {
        assert_eq!(verify_default(&t, *now), *expected, "now = {now:?}");
    }
}

/// A token issued at a `now` far in the future (a misconfigured or hostile issuer clock)
/// carries an expiry further than MAX_TOKEN_TTL ahead of the verifier's `now`.
#[test]
fn expiry_too_far_for_a_token_issued_in_the_future() {
    let keys = keyset(1);
    let future = common::after(T0, Duration::from_secs(24 * 3600));
    let t = issue_with_nonce(
        keys.current(),
        &account(ACCOUNT),
        &call(CALL),
        future,
        TTL,
        common::nonce(1),
    )
    .unwrap();
    assert_eq!(
        verify(&keys, t.as_str(), &account(ACCOUNT), &call(CALL), T0).map(|_| ()),
        Err(TokenError::ExpiryTooFar)
    );
    // The same token is fine at its own issue time: the MAC was never the problem.
    assert!(verify(&keys, t.as_str(), &account(ACCOUNT), &call(CALL), future).is_ok());
    // And a token with the longest allowed TTL is valid at its issue time (exactly at the
    // bound is not "too far").
    let longest = issue_with_nonce(
        keys.current(),
        &account(ACCOUNT),
        &call(CALL),
        T0,
        MAX_TOKEN_TTL,
        common::nonce(2),
    )
    .unwrap();
    assert!(verify(&keys, longest.as_str(), &account(ACCOUNT), &call(CALL), T0).is_ok());
}

#[test]
fn ttl_bounds() {
    let keys = keyset(1);
    let cases: &[(UnixTime, Duration, Result<(), IssueError>)] = &[
        (T0, Duration::ZERO, Err(IssueError::TtlOutOfRange)),
        // Under the expiry's millisecond resolution: would be expired when issued.
        (
            T0,
            Duration::from_nanos(999_999),
            Err(IssueError::TtlOutOfRange),
        ),
        (
            T0,
            MAX_TOKEN_TTL + Duration::from_millis(1),
            Err(IssueError::TtlOutOfRange),
        ),
        (
            T0,
            MAX_TOKEN_TTL + Duration::from_nanos(1),
            Err(IssueError::TtlOutOfRange),
        ),
        (T0, Duration::MAX, Err(IssueError::TtlOutOfRange)),
        (T0, MAX_TOKEN_TTL, Ok(())),
        (T0, Duration::from_millis(1), Ok(())),
        (
            UnixTime::from_millis(u64::MAX - 1000),
            TTL,
            Err(IssueError::ExpiryOverflow),
        ),
    ];
    for (now, ttl, expected) in cases {
        let got = issue_with_nonce(
            keys.current(),
            &account(ACCOUNT),
            &call(CALL),
            *now,
            *ttl,
            common::nonce(1),
        )
        .map(|_| ());
        assert_eq!(got, *expected, "now {now:?} ttl {ttl:?}");
    }
}

/// The documented order is length, encoding, version, key id / MAC, expiry: each case below
/// is wrong in the named way *and* in every later way, so only that order gives the error.
#[test]
fn verification_order() {
    let t = the_token(1);
    let raw = decode(&t);
    let expired = common::after(T0, Duration::from_secs(3600));

    // Version byte changed: the MAC (which covers the version) fails too, and the token is
    // also expired at `expired`; Version must win.
    for v in [0u8, 2, 0x7f, 0xff] {
        let mut r = raw.clone();
        r[0] = v;
        assert_eq!(
            verify_default(&encode(&r), expired),
            Err(TokenError::Version),
            "{v}"
        );
    }
    // Key id changed: no key has it; the MAC would also fail and it is expired.
    let mut r = raw.clone();
    r[1] ^= 0x01;
    assert_eq!(
        verify_default(&encode(&r), expired),
        Err(TokenError::UnknownKey)
    );
    // A MAC failure is reported before expiry.
    let mut r = raw.clone();
    r[60] ^= 0x80;
    assert_eq!(
        verify_default(&encode(&r), expired),
        Err(TokenError::BadMac)
    );
    // Expiry field changed: the MAC covers it.
    let mut r = raw.clone();
    r[12] ^= 0x01;
    assert_eq!(verify_default(&encode(&r), T0), Err(TokenError::BadMac));
    // Nonce changed: the MAC covers it.
    let mut r = raw.clone();
    r[20] ^= 0x01;
    assert_eq!(verify_default(&encode(&r), T0), Err(TokenError::BadMac));
    // Non-canonical encoding of a token whose version is also wrong: Encoding first.
    let mut r = raw.clone();
    r[0] = 2;
    let mut text = encode(&r).into_bytes();
    *text.last_mut().unwrap() = b'B';
    assert_eq!(
        verify_default(std::str::from_utf8(&text).unwrap(), expired),
        Err(TokenError::Encoding)
    );
    // Wrong length and not base64 at all: Length first.
    assert_eq!(
        verify_default(&"!".repeat(TOKEN_CHARS + 1), expired),
        Err(TokenError::Length)
    );
}

/// The last of 82 characters carries 2 data bits and 4 padding bits; canonical base64url
/// needs those 4 bits zero, so only `A`, `Q`, `g`, `w` may end a token.
#[test]
fn non_canonical_last_character_is_an_encoding_error() {
    let t = the_token(1);
    let last = *t.as_bytes().last().unwrap();
    let mut seen_canonical_other = 0;
    for &c in B64URL {
        if c == last {
            continue;
        }
        let mut bytes = t.clone().into_bytes();
        *bytes.last_mut().unwrap() = c;
        let s = String::from_utf8(bytes).unwrap();
        let index = u8::try_from(B64URL.iter().position(|&x| x == c).unwrap()).unwrap();
        let expected = if index & 0x0f == 0 {
            // Canonical, but a different tag byte.
            seen_canonical_other += 1;
            Err(TokenError::BadMac)
        } else {
            Err(TokenError::Encoding)
        };
        assert_eq!(
            verify_default(&s, T0),
            expected,
            "last char {}",
            char::from(c)
        );
    }
    assert_eq!(seen_canonical_other, 3);
}

/// Strings that are not 82 characters of base64url, and the error.
const NOT_TOKENS: &[(&str, TokenError)] = &[
    ("", TokenError::Length),
    ("A", TokenError::Length),
    ("not a token", TokenError::Length),
];

#[test]
fn malformed_tokens() {
    for (s, e) in NOT_TOKENS {
        assert_eq!(verify_default(s, T0), Err(*e), "{s:?}");
    }
    let t = the_token(1);
    let mut cases: Vec<(String, TokenError)> = vec![
        // Padding makes it longer.
        (format!("{t}=="), TokenError::Length),
        // Standard-alphabet characters in a base64url token.
        (format!("+{}", &t[1..]), TokenError::Encoding),
        (format!("/{}", &t[1..]), TokenError::Encoding),
        // Padding inside an 82-character string.
        (format!("{}=", &t[..81]), TokenError::Encoding),
        (format!("{}==", &t[..80]), TokenError::Encoding),
        // Whitespace.
        (format!(" {}", &t[1..]), TokenError::Encoding),
        (format!("{}\n", &t[..81]), TokenError::Encoding),
        (" ".repeat(TOKEN_CHARS), TokenError::Encoding),
        // 82 characters, but one of them is non-ASCII (two bytes): the length is in bytes.
        (format!("é{}", &t[2..]), TokenError::Encoding),
        (format!("é{}", &t[1..]), TokenError::Length),
        ("A".repeat(10_000), TokenError::Length),
    ];
    // The standard-base64 spelling of the same bytes, where it differs.
    let standard = STANDARD.encode(decode(&t));
    if standard.trim_end_matches('=') != t {
        cases.push((
            standard.trim_end_matches('=').to_owned(),
            TokenError::Encoding,
        ));
    }
    for (s, e) in &cases {
        assert_eq!(verify_default(s, T0), Err(*e), "{s:?}");
    }
}

#[test]
fn unknown_key_and_rotation() {
    let old = keyset(1);
    let t = the_token(1); // issued by key 1
    // Verified by a set that does not hold key 1: UnknownKey, not BadMac.
    assert_eq!(
        verify(&keyset(2), &t, &account(ACCOUNT), &call(CALL), T0).map(|_| ()),
        Err(TokenError::UnknownKey)
    );
    // Rotation: new key first, old key kept. Tokens of the old key still verify, and report
    // the old key's id; new tokens are issued by the new key.
    let rotated = KeySet::new(vec![key(2), key(1)]).unwrap();
    let claims = verify(&rotated, &t, &account(ACCOUNT), &call(CALL), T0).unwrap();
    assert_eq!(claims.key_id, key(1).id());
    assert_eq!(rotated.current().id(), key(2).id());
    let fresh = common::token_for(&rotated, &account(ACCOUNT), &call(CALL), T0, 2);
    assert_eq!(decode(fresh.as_str())[1..5], key(2).id().to_bytes());
    assert!(verify(&rotated, fresh.as_str(), &account(ACCOUNT), &call(CALL), T0).is_ok());
    // The old set does not know the new key.
    assert_eq!(
        verify(&old, fresh.as_str(), &account(ACCOUNT), &call(CALL), T0).map(|_| ()),
        Err(TokenError::UnknownKey)
    );
    // Rotation finished: the old key dropped, its tokens no longer verify.
    let after_rotation = KeySet::new(vec![key(2)]).unwrap();
    assert_eq!(
        verify(&after_rotation, &t, &account(ACCOUNT), &call(CALL), T0).map(|_| ()),
        Err(TokenError::UnknownKey)
    );
    // Order of verification keys does not matter.
    let other_order = KeySet::new(vec![key(1), key(2)]).unwrap();
    assert!(
        verify(
            &other_order,
            fresh.as_str(),
            &account(ACCOUNT),
            &call(CALL),
            T0
        )
        .is_ok()
    );
}

#[test]
fn key_constraints() {
    let len_cases: &[(usize, Result<(), KeyError>)] = &[
        (0, Err(KeyError::TooShort)),
        (TOKEN_KEY_MIN_BYTES - 1, Err(KeyError::TooShort)),
        (TOKEN_KEY_MIN_BYTES, Ok(())),
        (48, Ok(())),
        (TOKEN_KEY_MAX_BYTES, Ok(())),
        (TOKEN_KEY_MAX_BYTES + 1, Err(KeyError::TooLong)),
        (1024, Err(KeyError::TooLong)),
    ];
    assert_eq!((TOKEN_KEY_MIN_BYTES, TOKEN_KEY_MAX_BYTES), (32, 64));
    for (len, expected) in len_cases {
        let bytes = vec![0x42u8; *len];
        assert_eq!(TokenKey::from_bytes(&bytes).map(|_| ()), *expected, "{len}");
        let b64 = STANDARD.encode(&bytes);
        assert_eq!(
            TokenKey::from_base64(&b64).map(|_| ()),
            *expected,
            "b64 {len}"
        );
    }
    let b64_cases: &[(&str, Result<(), KeyError>)] = &[
        ("not base64!", Err(KeyError::NotBase64)),
        // 32 bytes without padding: standard padded base64 only.
        (
            "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI",
            Err(KeyError::NotBase64),
        ),
        ("QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=", Ok(())),
        // Surrounding whitespace is trimmed (environment variables often end in a newline).
        (" QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=\n", Ok(())),
        // URL-safe alphabet is not standard base64.
        (
            "_kJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=",
            Err(KeyError::NotBase64),
        ),
    ];
    for (text, expected) in b64_cases {
        assert_eq!(
            TokenKey::from_base64(text).map(|_| ()),
            *expected,
            "{text:?}"
        );
    }
    // A key from bytes and from their base64 is the same key (same id, verifies the same).
    let k = TokenKey::from_base64(&STANDARD.encode(common::key_bytes(1))).unwrap();
    assert_eq!(k.id(), key(1).id());
    assert_ne!(key(1).id(), key(2).id());
}

#[test]
fn key_set_constraints() {
    assert_eq!(KeySet::new(vec![]).map(|_| ()), Err(KeyError::Empty));
    assert_eq!(
        KeySet::new(vec![key(1), key(1)]).map(|_| ()),
        Err(KeyError::DuplicateKeyId)
    );
    assert_eq!(
        KeySet::new(vec![key(1), key(2), key(1)]).map(|_| ()),
        Err(KeyError::DuplicateKeyId)
    );
    let max: Vec<TokenKey> = (0..u8::try_from(TOKEN_MAX_KEYS).unwrap())
        .map(key)
        .collect();
    assert!(KeySet::new(max).is_ok());
    let too_many: Vec<TokenKey> = (0..u8::try_from(TOKEN_MAX_KEYS + 1).unwrap())
        .map(key)
        .collect();
    assert_eq!(TOKEN_MAX_KEYS + 1, 9);
    assert_eq!(KeySet::new(too_many).map(|_| ()), Err(KeyError::TooMany));

    let b1 = STANDARD.encode(common::key_bytes(1));
    let b2 = STANDARD.encode(common::key_bytes(2));
    let list_cases: Vec<(String, Result<(), KeyError>)> = vec![
        (format!("{b2},{b1}"), Ok(())),
        (format!("{b2}, {b1}"), Ok(())),
        (format!("{b1},{b1}"), Err(KeyError::DuplicateKeyId)),
        (String::new(), Err(KeyError::TooShort)),
        (format!("{b1},"), Err(KeyError::TooShort)),
        (format!("{b1},nope!"), Err(KeyError::NotBase64)),
        // The count is checked before duplicates.
        (vec![b1.clone(); 9].join(","), Err(KeyError::TooMany)),
        (
            (0..9u8)
                .map(|i| STANDARD.encode(common::key_bytes(i)))
                .collect::<Vec<_>>()
                .join(","),
            Err(KeyError::TooMany),
        ),
        (
            (0..8u8)
                .map(|i| STANDARD.encode(common::key_bytes(i)))
                .collect::<Vec<_>>()
                .join(","),
            Ok(()),
        ),
    ];
    for (text, expected) in &list_cases {
        assert_eq!(
            KeySet::from_base64_list(text).map(|_| ()),
            *expected,
            "{text:?}"
        );
    }
    let list = KeySet::from_base64_list(&format!("{b2},{b1}")).unwrap();
    assert_eq!(list.current().id(), key(2).id());
    assert!(verify(&list, &the_token(1), &account(ACCOUNT), &call(CALL), T0).is_ok());
}

#[test]
fn generated_keys_are_valid_and_distinct() {
    let rng = ring::rand::SystemRandom::new();
    let a = TokenKey::generate(&rng).unwrap();
    let b = TokenKey::generate(&rng).unwrap();
    assert_ne!(a.id(), b.id());
    assert!(KeySet::new(vec![a, b]).is_ok());
}

#[test]
fn debug_output_never_contains_secrets() {
    // An ASCII key so that a raw-bytes-as-text rendering would also be caught.
    let key_material = b"super-secret-streamguard-key-0123456789";
    let k = TokenKey::from_bytes(key_material).unwrap();
    let id = k.id();
    let key_debug = format!("{k:?}");
    // The id shows as the 8 lowercase hex digits of its 4 bytes (as in the token).
    let hex: String = id.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(id.to_string(), hex);
    assert_eq!(format!("{id:?}"), format!("KeyId({hex})"));
    let keyset = KeySet::new(vec![k, key(9)]).unwrap();
    let set_debug = format!("{keyset:?}");
    let mut secrets = common::renderings(key_material);
    secrets.extend(common::renderings(&common::key_bytes(9)));
    for text in [&key_debug, &set_debug] {
        common::assert_no_leak(
            text,
            &secrets.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        // The public id is shown, so an operator can tell keys apart.
        assert!(text.contains(&id.to_string()), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }

    let t = issue_with_nonce(
        keyset.current(),
        &account(ACCOUNT),
        &call(CALL),
        T0,
        TTL,
        common::nonce(42),
    )
    .unwrap();
    let token_debug = format!("{t:?}");
    let claims = verify(&keyset, t.as_str(), &account(ACCOUNT), &call(CALL), T0).unwrap();
    let claims_debug = format!("{claims:?}");
    let mut token_secrets = vec![t.as_str().to_owned(), t.as_str()[..16].to_owned()];
    token_secrets.extend(common::renderings(&common::nonce(42)));
    let token_secrets: Vec<&str> = token_secrets.iter().map(String::as_str).collect();
    common::assert_no_leak(&token_debug, &token_secrets);
    // What `Debug` does show: that it is a token, and its length.
    assert_eq!(token_debug, "StreamToken(..redacted, 82 chars..)");
    common::assert_no_leak(&claims_debug, &token_secrets);
    assert!(claims_debug.contains(&id.to_string()), "{claims_debug}");

    let auth_text = "f1e2d3c4b5a6978877665544332211ff";
    let auth = AuthToken::new(auth_text).unwrap();
    common::assert_no_leak(&format!("{auth:?}"), &[auth_text, &auth_text[..8]]);
    assert_eq!(format!("{auth:?}"), "AuthToken(..redacted..)");

    // Errors carry nothing either: they hold no data. (Searching the `Debug` of these
    // fieldless values for key bytes could not fail.)
    common::assert_holds_no_data::<KeyError>();
    common::assert_holds_no_data::<TokenError>();
}

#[test]
fn auth_token_constraints() {
    assert_eq!(AuthToken::new("").map(|_| ()), Err(AuthTokenError::Empty));
    assert!(AuthToken::new(&"a".repeat(256)).is_ok());
    assert_eq!(
        AuthToken::new(&"a".repeat(257)).map(|_| ()),
        Err(AuthTokenError::TooLong)
    );
}

#[test]
fn error_labels_are_distinct() {
    let all = ALL_TOKEN_ERRORS;
    let labels: std::collections::HashSet<&str> = all.iter().map(|e| e.as_str()).collect();
    assert_eq!(labels.len(), all.len());
}

/// Strategy: an 82-character base64url string.
fn b64url_string(len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(B64URL), len)
        .prop_map(|v| String::from_utf8(v).unwrap())
}

proptest! {
    #![proptest_config(common::proptest_config())]

    /// For any call, account, issue time, TTL and nonce: the token verifies for that call and
    /// account at every instant from issuance until just before `issued + ttl`, and is
    /// `Expired` from `issued + ttl` on.
    #[test]
    fn verify_issue_round_trip_until_expiry(
        call_n in any::<u64>(),
        acct_n in any::<u64>(),
        issued_ms in 0u64..4_000_000_000_000,
        ttl_ms in 1u64..=3_600_000,
        nonce in any::<[u8; 16]>(),
        offset in any::<u64>(),
    ) {
        let keys = keyset(3);
        let (a, c) = (common::nth_account(acct_n), common::nth_call(call_n));
        let issued = UnixTime::from_millis(issued_ms);
        let ttl = Duration::from_millis(ttl_ms);
        let t = issue_with_nonce(keys.current(), &a, &c, issued, ttl, nonce).unwrap();
        let before_expiry = common::plus_ms(issued, offset % ttl_ms);
        let claims = verify(&keys, t.as_str(), &a, &c, before_expiry).unwrap();
        prop_assert_eq!(claims.nonce, nonce);
        prop_assert_eq!(claims.expires_at, common::plus_ms(issued, ttl_ms));
        let at_or_after = common::plus_ms(issued, ttl_ms + offset % 10_000_000);
        prop_assert_eq!(
            verify(&keys, t.as_str(), &a, &c, at_or_after).map(|_| ()),
            Err(TokenError::Expired)
        );
    }

    /// A token verifies for no other CallSid and no other AccountSid: the MAC fails.
    #[test]
    fn token_is_bound_to_call_and_account(
        call_n in any::<u64>(), other_call in any::<u64>(),
        acct_n in any::<u64>(), other_acct in any::<u64>(),
        nonce in any::<[u8; 16]>(),
    ) {
        prop_assume!(call_n != other_call && acct_n != other_acct);
        let keys = keyset(3);
        let (a, c) = (common::nth_account(acct_n), common::nth_call(call_n));
        let (a2, c2) = (common::nth_account(other_acct), common::nth_call(other_call));
        let t = issue_with_nonce(keys.current(), &a, &c, T0, TTL, nonce).unwrap();
        prop_assert!(verify(&keys, t.as_str(), &a, &c, T0).is_ok());
        for (acct, cl) in [(&a, &c2), (&a2, &c), (&a2, &c2)] {
            prop_assert_eq!(
                verify(&keys, t.as_str(), acct, cl, T0).map(|_| ()),
                Err(TokenError::BadMac)
            );
        }
    }

    /// Replacing any one character of a valid token with any other base64url character
    /// makes verification fail.
    #[test]
    fn any_single_character_change_fails(
        nonce_n in any::<u64>(), pos in 0usize..82, replacement in proptest::sample::select(B64URL),
    ) {
        let t = the_token(nonce_n);
        prop_assume!(t.as_bytes()[pos] != replacement);
        let mut bytes = t.into_bytes();
        bytes[pos] = replacement;
        let s = String::from_utf8(bytes).unwrap();
        prop_assert!(verify_default(&s, T0).is_err(), "{}", s);
    }

    /// Every proper prefix of a token, and the token with anything appended, has the wrong
    /// length.
    #[test]
    fn truncation_and_extension_fail(
        nonce_n in any::<u64>(), cut in 0usize..82, suffix in "[A-Za-z0-9_=-]{1,20}",
    ) {
        let t = the_token(nonce_n);
        prop_assert_eq!(verify_default(&t[..cut], T0), Err(TokenError::Length));
        prop_assert_eq!(verify_default(&format!("{t}{suffix}"), T0), Err(TokenError::Length));
        prop_assert_eq!(verify_default(&format!("{suffix}{t}"), T0), Err(TokenError::Length));
    }

    /// `verify` never panics and never succeeds on arbitrary text.
    #[test]
    fn arbitrary_strings_never_verify(s in any::<String>()) {
        prop_assert!(verify_default(&s, T0).is_err());
    }

    /// `verify` never succeeds on an arbitrary 82-character base64url string.
    #[test]
    fn arbitrary_base64url_never_verifies(s in b64url_string(TOKEN_CHARS)) {
        prop_assert!(verify_default(&s, T0).is_err());
    }

    /// A token with the right version, a known key id and a live expiry, but any other
    /// nonce/tag bytes than a real issuance produced, fails with exactly `BadMac`: only the
    /// MAC stands between a forger and acceptance, and it holds.
    #[test]
    fn forged_token_with_valid_header_is_bad_mac(
        nonce in any::<[u8; 16]>(),
        tag in proptest::collection::vec(any::<u8>(), 32),
    ) {
        let mut raw = Vec::with_capacity(TOKEN_BYTES);
        raw.push(VERSION_1);
        raw.extend_from_slice(&key(1).id().to_bytes());
        raw.extend_from_slice(&(T0.as_millis() + 30_000).to_be_bytes());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&tag);
        prop_assert_eq!(verify_default(&encode(&raw), T0), Err(TokenError::BadMac));
    }
}

/// Every reason a token fails, or cannot be issued, has a message of its own in the logs.
#[test]
fn errors_have_distinct_messages() {
    let verify_errors = ALL_TOKEN_ERRORS;
    let issue_errors = [
        IssueError::TtlOutOfRange,
        IssueError::ExpiryOverflow,
        IssueError::Randomness,
    ];
    let messages: Vec<String> = verify_errors
        .iter()
        .map(ToString::to_string)
        .chain(issue_errors.iter().map(ToString::to_string))
        .collect();
    common::assert_distinct_messages(&messages);
}
