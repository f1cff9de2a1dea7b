//! `X-Twilio-Signature` (`src/signature.rs`): the known answers of Twilio's official SDK
//! test suites (`tests/data/twilio-signature.json`), a tampered twin of each accepted vector
//! (every bit of the signature, one character of the URL, a parameter key, a parameter
//! value, the auth token, the body), the port-variant rules of `PROTOCOL.md` §4, malformed and
//! missing headers, `bodySHA256`, and properties: compute/validate agreement, sensitivity to
//! every input, parameter order and de-duplication, and no panics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use serde::Deserialize;
use streamguard::limits::MAX_SIGNATURE_HEADER_BYTES;
use streamguard::secret::AuthToken;
use streamguard::signature::{
    SignatureError, body_sha256, compute_signature, port_variants, validate, validate_url_only,
};

// ---------------------------------------------------------------------------------------------
// Known answers
// ---------------------------------------------------------------------------------------------

/// One entry of `tests/data/twilio-signature.json`.
#[derive(Debug, Deserialize)]
struct Vector {
    source: String,
    auth_token: String,
    url: String,
    params: Vec<(String, String)>,
    body: Option<String>,
    expected_signature: String,
    expected_valid: bool,
    notes: String,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("data/twilio-signature.json");
    let v: Vec<Vector> = serde_json::from_str(text).unwrap();
    assert_eq!(v.len(), 10, "the vector file changed: review this test");
    v
}

/// Over which string the SDK computed the vector's signature, as its notes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SignedOver {
    /// The URL exactly as given.
    AsGiven,
    /// The URL with its explicit port removed.
    PortRemoved,
    /// The URL with this default port added.
    PortAdded(&'static str),
}

fn signed_over(v: &Vector) -> SignedOver {
    if v.notes.contains("port removed") {
        SignedOver::PortRemoved
    } else if v.notes.contains(":443 added") {
        SignedOver::PortAdded("443")
    } else if v.notes.contains(":80 added") {
        SignedOver::PortAdded("80")
    } else {
        SignedOver::AsGiven
    }
}

/// `(start, end)` byte offsets of the authority of `url` (test-local parser for the simple
/// URLs of the vectors; independent of the crate's).
fn authority_span(url: &str) -> (usize, usize) {
    let start = url.find("://").unwrap() + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    (start, end)
}

fn strip_port(url: &str) -> String {
    let (start, end) = authority_span(url);
    let authority = &url[start..end];
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    format!("{}{host}{}", &url[..start], &url[end..])
}

fn add_port(url: &str, port: &str) -> String {
    let (_, end) = authority_span(url);
    format!("{}:{port}{}", &url[..end], &url[end..])
}

fn params_ref(v: &Vector) -> Vec<(&str, &str)> {
    v.params
        .iter()
        .map(|(k, val)| (k.as_str(), val.as_str()))
        .collect()
}

/// `validate` with an auth token given as text and a present header.
fn check(
    auth: &str,
    url: &str,
    params: &[(&str, &str)],
    body: Option<&str>,
    header: &[u8],
) -> Result<(), SignatureError> {
    validate(
        &AuthToken::new(auth).unwrap(),
        url,
        params,
        body.map(str::as_bytes),
        Some(header),
    )
}

#[test]
fn every_vector_validates_as_the_sdk_says() {
    for v in vectors() {
        let got = check(
            &v.auth_token,
            &v.url,
            &params_ref(&v),
            v.body.as_deref(),
            v.expected_signature.as_bytes(),
        );
        if v.expected_valid {
            assert_eq!(got, Ok(()), "{}", v.source);
        } else {
            // The only invalid vector's signature is not even base64 of 20 bytes.
            let decodes_to_20 = STANDARD
                .decode(&v.expected_signature)
                .is_ok_and(|b| b.len() == 20);
            let want = if decodes_to_20 {
                SignatureError::Mismatch
            } else {
                SignatureError::Malformed
            };
            assert_eq!(got, Err(want), "{}", v.source);
        }
    }
}

#[test]
fn compute_signature_reproduces_every_valid_vector() {
    let mut kinds = Vec::new();
    for v in vectors().iter().filter(|v| v.expected_valid) {
        let kind = signed_over(v);
        kinds.push(kind);
        let auth = AuthToken::new(&v.auth_token).unwrap();
        let params = params_ref(v);
        let string_signed = match kind {
            SignedOver::AsGiven => v.url.clone(),
            SignedOver::PortRemoved => strip_port(&v.url),
            SignedOver::PortAdded(p) => add_port(&v.url, p),
        };
        assert_eq!(
            compute_signature(&auth, &string_signed, &params),
            v.expected_signature,
            "{} ({kind:?})",
            v.source
        );
        // Where the SDK signed a port variant, the URL as given gives another signature: the
        // vector really exercises the variant rule.
        if kind != SignedOver::AsGiven {
            assert_ne!(
                compute_signature(&auth, &v.url, &params),
                v.expected_signature,
                "{}",
                v.source
            );
        }
    }
    // The notes were read as intended: one "port removed", two "port added", six as given.
    let count = |k: fn(&SignedOver) -> bool| kinds.iter().filter(|x| k(x)).count();
    assert_eq!(count(|k| *k == SignedOver::PortRemoved), 1);
    assert_eq!(count(|k| matches!(k, SignedOver::PortAdded(_))), 2);
    assert_eq!(count(|k| *k == SignedOver::AsGiven), 6);
}

#[test]
fn url_only_vector_is_the_websocket_shape() {
    let v = vectors()
        .into_iter()
        .find(|v| v.expected_valid && v.params.is_empty() && v.body.is_none())
        .unwrap();
    let auth = AuthToken::new(&v.auth_token).unwrap();
    assert_eq!(
        validate_url_only(&auth, &v.url, Some(v.expected_signature.as_bytes())),
        Ok(())
    );
    assert_eq!(
        validate_url_only(&auth, &v.url, None),
        Err(SignatureError::Missing)
    );
}

// ---------------------------------------------------------------------------------------------
// Tampered twins
// ---------------------------------------------------------------------------------------------

/// A different character in the same class, so the URL stays well formed.
fn other_char(c: char) -> char {
    if c.is_ascii_lowercase() {
        c.to_ascii_uppercase()
    } else if c.is_ascii_uppercase() {
        c.to_ascii_lowercase()
    } else if let Some(d) = c.to_digit(10) {
        char::from_digit((d + 1) % 10, 10).unwrap()
    } else {
        'Z'
    }
}

fn replace_at(s: &str, i: usize, c: char) -> String {
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..i]);
    out.push(c);
    out.push_str(&s[i + 1..]);
    out
}

/// Byte offsets of the URL characters a tampered twin changes: the host name, and everything
/// after the `/` that ends the authority (for the body vector, only up to the query, since
/// the query carries `bodySHA256`, whose tampering has its own test).
fn mutable_positions(v: &Vector) -> Vec<usize> {
    let (start, end) = authority_span(&v.url);
    let authority = &v.url[start..end];
    let host_len = authority.find(':').unwrap_or(authority.len());
    let tail_end = if v.body.is_some() {
        v.url.find('?').unwrap()
    } else {
        v.url.len()
    };
    (start..start + host_len)
        .filter(|&i| v.url.as_bytes()[i].is_ascii_alphabetic())
        .chain(end + 1..tail_end)
        .collect()
}

#[test]
fn every_bit_of_the_signature_matters() {
    for v in vectors().iter().filter(|v| v.expected_valid) {
        let good = STANDARD.decode(&v.expected_signature).unwrap();
        assert_eq!(good.len(), 20);
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                let header = STANDARD.encode(&bad);
                assert_eq!(
                    check(
                        &v.auth_token,
                        &v.url,
                        &params_ref(v),
                        v.body.as_deref(),
                        header.as_bytes()
                    ),
                    Err(SignatureError::Mismatch),
                    "{} byte {byte} bit {bit}",
                    v.source
                );
            }
        }
    }
}

#[test]
fn one_character_of_the_url_matters() {
    for v in vectors().iter().filter(|v| v.expected_valid) {
        let positions = mutable_positions(v);
        assert!(positions.len() > 10, "{}", v.source);
        for i in positions {
            let c = char::from(v.url.as_bytes()[i]);
            let url = replace_at(&v.url, i, other_char(c));
            assert_eq!(
                check(
                    &v.auth_token,
                    &url,
                    &params_ref(v),
                    v.body.as_deref(),
                    v.expected_signature.as_bytes()
                ),
                Err(SignatureError::Mismatch),
                "{} -> {url}",
                v.source
            );
        }
    }
}

#[test]
fn each_parameter_key_and_value_matters() {
    for v in vectors()
        .iter()
        .filter(|v| v.expected_valid && !v.params.is_empty())
    {
        for i in 0..v.params.len() {
            let (k, val) = &v.params[i];
            let mut key_changed = params_ref(v);
            let first = k.chars().next().unwrap();
            let new_key = format!("{}{}", other_char(first), &k[first.len_utf8()..]);
            key_changed[i].0 = &new_key;
            let new_value = format!("{val}0");
            let mut value_changed = params_ref(v);
            value_changed[i].1 = &new_value;
            let mut dropped = params_ref(v);
            dropped.remove(i);
            for (what, params) in [("key", &key_changed), ("value", &value_changed)] {
                assert_eq!(
                    check(
                        &v.auth_token,
                        &v.url,
                        params,
                        None,
                        v.expected_signature.as_bytes()
                    ),
                    Err(SignatureError::Mismatch),
                    "{} {what} of param {i}",
                    v.source
                );
            }
            // Dropping a parameter matters unless an identical pair remains (de-duplication).
            let has_twin = v
                .params
                .iter()
                .enumerate()
                .any(|(j, p)| j != i && p == &v.params[i]);
            let want = if has_twin {
                Ok(())
            } else {
                Err(SignatureError::Mismatch)
            };
            assert_eq!(
                check(
                    &v.auth_token,
                    &v.url,
                    &dropped,
                    None,
                    v.expected_signature.as_bytes()
                ),
                want,
                "{} drop param {i}",
                v.source
            );
        }
        // An extra parameter matters.
        let mut extra = params_ref(v);
        extra.push(("Extra", "1"));
        assert_eq!(
            check(
                &v.auth_token,
                &v.url,
                &extra,
                None,
                v.expected_signature.as_bytes()
            ),
            Err(SignatureError::Mismatch),
            "{} extra param",
            v.source
        );
    }
}

#[test]
fn the_auth_token_matters() {
    for v in vectors().iter().filter(|v| v.expected_valid) {
        for other in ["12346", "1234", "123456", " 12345", "12345 "] {
            assert_ne!(other, v.auth_token);
            assert_eq!(
                check(
                    other,
                    &v.url,
                    &params_ref(v),
                    v.body.as_deref(),
                    v.expected_signature.as_bytes()
                ),
                Err(SignatureError::Mismatch),
                "{} auth {other:?}",
                v.source
            );
        }
    }
}

#[test]
fn the_body_matters() {
    let v = vectors()
        .into_iter()
        .find(|v| v.expected_valid && v.body.is_some())
        .unwrap();
    let body = v.body.clone().unwrap();
    // The vector's bodySHA256 is the SHA-256 of its body (known answer).
    let hash_in_url = v.url.rsplit_once("bodySHA256=").unwrap().1;
    assert_eq!(body_sha256(body.as_bytes()), hash_in_url);
    let sig = v.expected_signature.as_bytes();
    // A changed body no longer matches bodySHA256.
    let changed = body.replace("value", "valuf");
    assert_eq!(
        check(&v.auth_token, &v.url, &[], Some(&changed), sig),
        Err(SignatureError::BodyHashMismatch)
    );
    // Changed body with its own hash put in the URL: the signature covers the URL.
    let url = v.url.replace(hash_in_url, &body_sha256(changed.as_bytes()));
    assert_eq!(
        check(&v.auth_token, &url, &[], Some(&changed), sig),
        Err(SignatureError::Mismatch)
    );
}

// ---------------------------------------------------------------------------------------------
// Port variants (PROTOCOL.md §4)
// ---------------------------------------------------------------------------------------------

/// URL, and (with port, without port) or the error.
type Variants = Result<(&'static str, &'static str), SignatureError>;

const PORT_VARIANTS: &[(&str, Variants)] = &[
    // Default ports: wss 443, ws 80, https 443, http 80.
    (
        "wss://example.com/voice/stream",
        Ok((
            "wss://example.com:443/voice/stream",
            "wss://example.com/voice/stream",
        )),
    ),
    (
        "ws://example.com/voice/stream",
        Ok((
            "ws://example.com:80/voice/stream",
            "ws://example.com/voice/stream",
        )),
    ),
    (
        "https://example.com/voice",
        Ok(("https://example.com:443/voice", "https://example.com/voice")),
    ),
    (
        "http://example.com/voice",
        Ok(("http://example.com:80/voice", "http://example.com/voice")),
    ),
    // An explicit port, default or not, is kept in one variant and removed in the other.
    (
        "wss://example.com:443/voice/stream",
        Ok((
            "wss://example.com:443/voice/stream",
            "wss://example.com/voice/stream",
        )),
    ),
    (
        "wss://example.com:8443/voice/stream",
        Ok((
            "wss://example.com:8443/voice/stream",
            "wss://example.com/voice/stream",
        )),
    ),
    (
        "https://example.com:80/x",
        Ok(("https://example.com:80/x", "https://example.com/x")),
    ),
    (
        "http://example.com:1234/myapp.php?foo=1&bar=2",
        Ok((
            "http://example.com:1234/myapp.php?foo=1&bar=2",
            "http://example.com/myapp.php?foo=1&bar=2",
        )),
    ),
    (
        "ws://127.0.0.1:8080/voice/stream",
        Ok((
            "ws://127.0.0.1:8080/voice/stream",
            "ws://127.0.0.1/voice/stream",
        )),
    ),
    (
        "wss://example.com:0/x",
        Ok(("wss://example.com:0/x", "wss://example.com/x")),
    ),
    (
        "wss://example.com:65535/x",
        Ok(("wss://example.com:65535/x", "wss://example.com/x")),
    ),
    // Scheme and host case are kept verbatim; the scheme is matched case-insensitively.
    (
        "WSS://Example.COM/Voice",
        Ok(("WSS://Example.COM:443/Voice", "WSS://Example.COM/Voice")),
    ),
    ("Http://H/x", Ok(("Http://H:80/x", "Http://H/x"))),
    // No path; query or fragment straight after the authority.
    (
        "wss://example.com",
        Ok(("wss://example.com:443", "wss://example.com")),
    ),
    (
        "https://example.com?a=1",
        Ok(("https://example.com:443?a=1", "https://example.com?a=1")),
    ),
    (
        "https://example.com#f",
        Ok(("https://example.com:443#f", "https://example.com#f")),
    ),
    // A colon or @ after the authority is not a port or userinfo.
    (
        "https://example.com/a:1?b=c:2",
        Ok((
            "https://example.com:443/a:1?b=c:2",
            "https://example.com/a:1?b=c:2",
        )),
    ),
    (
        "https://example.com/a@b",
        Ok(("https://example.com:443/a@b", "https://example.com/a@b")),
    ),
    // IPv6 literals: the colons inside the brackets are not a port.
    ("wss://[::1]/x", Ok(("wss://[::1]:443/x", "wss://[::1]/x"))),
    (
        "wss://[::1]:8443/x",
        Ok(("wss://[::1]:8443/x", "wss://[::1]/x")),
    ),
    (
        "http://[2001:db8::1]",
        Ok(("http://[2001:db8::1]:80", "http://[2001:db8::1]")),
    ),
    // Userinfo is kept in both variants, and its colon is not a port.
    (
        "wss://user:pass@example.com/x",
        Ok((
            "wss://user:pass@example.com:443/x",
            "wss://user:pass@example.com/x",
        )),
    ),
    (
        "wss://user:pass@example.com:8443/x",
        Ok((
            "wss://user:pass@example.com:8443/x",
            "wss://user:pass@example.com/x",
        )),
    ),
    (
        "https://u@[::1]:9/x",
        Ok(("https://u@[::1]:9/x", "https://u@[::1]/x")),
    ),
    // Not signable.
    ("ftp://example.com/x", Err(SignatureError::BadUrl)),
    ("example.com/x", Err(SignatureError::BadUrl)),
    ("wss:/example.com/x", Err(SignatureError::BadUrl)),
    ("", Err(SignatureError::BadUrl)),
    ("wss:///x", Err(SignatureError::BadUrl)),
    ("wss://:443/x", Err(SignatureError::BadUrl)),
    ("wss://user@/x", Err(SignatureError::BadUrl)),
    ("wss://example.com:/x", Err(SignatureError::BadUrl)),
    ("wss://example.com:65536/x", Err(SignatureError::BadUrl)),
    ("wss://example.com:99999/x", Err(SignatureError::BadUrl)),
    ("wss://example.com:123456/x", Err(SignatureError::BadUrl)),
    ("wss://example.com:-1/x", Err(SignatureError::BadUrl)),
    ("wss://example.com:+443/x", Err(SignatureError::BadUrl)),
    ("wss://example.com:44a/x", Err(SignatureError::BadUrl)),
    ("wss://example.com: 443/x", Err(SignatureError::BadUrl)),
    ("wss://[::1/x", Err(SignatureError::BadUrl)),
    ("wss://[::1]x/y", Err(SignatureError::BadUrl)),
    ("wss://[::1]:/y", Err(SignatureError::BadUrl)),
];

#[test]
fn port_variant_table() {
    for (url, expected) in PORT_VARIANTS {
        let got = port_variants(url);
        let got = got
            .as_ref()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .map_err(|e| *e);
        assert_eq!(got, *expected, "{url}");
    }
    // Too long to sign.
    let long = format!("wss://example.com/{}", "a".repeat(16 * 1024));
    assert_eq!(port_variants(&long), Err(SignatureError::BadUrl));
}

/// The fuzz target's oracle computes signatures, port variants and `validate`'s answer on its
/// own (`invariants::expected_*`): it must agree with Twilio's SDK vectors and with the port
/// table above, or the fuzz target would judge the crate against a wrong statement.
#[test]
fn the_fuzz_oracle_agrees_with_the_sdk_vectors_and_the_port_table() {
    use streamguard::invariants::{expected_signature, expected_validate, expected_variants};
    for v in vectors() {
        let params: Vec<(String, String)> = v.params.clone();
        let body = v.body.as_deref().map(str::as_bytes);
        let header = Some(v.expected_signature.as_bytes());
        let want = if v.expected_valid {
            Ok(())
        } else {
            Err(SignatureError::Malformed)
        };
        assert_eq!(
            expected_validate(&v.auth_token, &v.url, &params, body, header),
            want,
            "{}",
            v.source
        );
        if v.expected_valid && signed_over(&v) == SignedOver::AsGiven {
            assert_eq!(
                expected_signature(&v.auth_token, &v.url, &params),
                v.expected_signature,
                "{}",
                v.source
            );
        }
    }
    for (url, expected) in PORT_VARIANTS {
        let got = expected_variants(url);
        let got = got.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
        assert_eq!(got, expected.ok(), "{url}");
    }
    let long = format!("wss://example.com/{}", "a".repeat(16 * 1024));
    assert_eq!(expected_variants(&long), None);
}

/// An authority whose host holds a colon outside IPv6 brackets is not a valid authority
/// (RFC 3986 §3.2.2), so the URL cannot be signed (`BadUrl`'s documented meaning).
#[test]

fn colon_in_host_is_a_bad_url() {
    for url in ["wss://h:443:443/x", "https://h:1:2/x", "wss://a:b:c/x"] {
        assert_eq!(port_variants(url), Err(SignatureError::BadUrl), "{url}");
    }
}

/// A signature over either variant validates for the URL; a signature over any other port
/// does not. The SDKs' "https else 80" rule would wrongly use 80 for `wss`.
#[test]
fn validate_accepts_exactly_the_two_variants() {
    let auth = AuthToken::new("12345").unwrap();
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "wss://example.com/voice/stream",
            &[
                "wss://example.com/voice/stream",
                "wss://example.com:443/voice/stream",
            ],
            &[
                "wss://example.com:80/voice/stream",
                "wss://example.com:8443/voice/stream",
                "https://example.com/voice/stream",
            ],
        ),
        (
            "wss://example.com:443/voice/stream",
            &[
                "wss://example.com/voice/stream",
                "wss://example.com:443/voice/stream",
            ],
            &["wss://example.com:80/voice/stream"],
        ),
        (
            "wss://example.com:8443/voice/stream",
            &[
                "wss://example.com/voice/stream",
                "wss://example.com:8443/voice/stream",
            ],
            &["wss://example.com:443/voice/stream"],
        ),
        (
            "ws://example.com/voice/stream",
            &[
                "ws://example.com/voice/stream",
                "ws://example.com:80/voice/stream",
            ],
            &["ws://example.com:443/voice/stream"],
        ),
        (
            "http://example.com/x",
            &["http://example.com/x", "http://example.com:80/x"],
            &["http://example.com:443/x"],
        ),
    ];
    for (url, accepted, refused) in cases {
        for signed in *accepted {
            let sig = compute_signature::<&str, &str>(&auth, signed, &[]);
            assert_eq!(
                validate_url_only(&auth, url, Some(sig.as_bytes())),
                Ok(()),
                "{url} signed over {signed}"
            );
        }
        for signed in *refused {
            let sig = compute_signature::<&str, &str>(&auth, signed, &[]);
            assert_eq!(
                validate_url_only(&auth, url, Some(sig.as_bytes())),
                Err(SignatureError::Mismatch),
                "{url} signed over {signed}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_and_missing_headers() {
    let auth = AuthToken::new("12345").unwrap();
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let good = compute_signature::<&str, &str>(&auth, url, &[]);
    assert_eq!(validate_url_only(&auth, url, Some(good.as_bytes())), Ok(()));
    let raw = STANDARD.decode(&good).unwrap();

    // Non-canonical: the last data character of a 20-byte value carries 2 unused bits.
    let mut non_canonical = good.clone().into_bytes();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let last_data = non_canonical[26];
    let idx = alphabet.iter().position(|&c| c == last_data).unwrap();
    non_canonical[26] = alphabet[idx | 1];
    assert_ne!(non_canonical, good.as_bytes());

    let url_safe = base64::engine::general_purpose::URL_SAFE.encode(&raw);
    let cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("not base64".into(), b"WRONG_SIGNATURE".to_vec()),
        (
            "punctuation".into(),
            b"!!!!!!!!!!!!!!!!!!!!!!!!!!!=".to_vec(),
        ),
        ("19 bytes".into(), STANDARD.encode([7u8; 19]).into_bytes()),
        ("21 bytes".into(), STANDARD.encode([7u8; 21]).into_bytes()),
        (
            "32 bytes (a SHA-256 MAC)".into(),
            STANDARD.encode([7u8; 32]).into_bytes(),
        ),
        (
            "no padding".into(),
            good.trim_end_matches('=').as_bytes().to_vec(),
        ),
        ("extra padding".into(), format!("{good}=").into_bytes()),
        ("non-canonical trailing bits".into(), non_canonical),
        ("leading space".into(), format!(" {good}").into_bytes()),
        ("trailing newline".into(), format!("{good}\n").into_bytes()),
        ("twice".into(), format!("{good}{good}").into_bytes()),
        ("two values".into(), format!("{good}, {good}").into_bytes()),
        ("not UTF-8".into(), vec![0xff; 28]),
        ("1 KiB".into(), "A".repeat(1024).into_bytes()),
        (
            "1 KiB of the good one".into(),
            good.repeat(1024 / good.len() + 1).into_bytes(),
        ),
        (
            "just over the limit".into(),
            "A".repeat(MAX_SIGNATURE_HEADER_BYTES + 1).into_bytes(),
        ),
        (
            "hex".into(),
            raw.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes(),
        ),
    ];
    if url_safe != good {
        // Only if the two alphabets differ for this value.
        let mut c = cases;
        c.push(("URL-safe alphabet".into(), url_safe.into_bytes()));
        run_header_cases(&auth, url, &c);
    } else {
        run_header_cases(&auth, url, &cases);
    }
    assert_eq!(
        validate_url_only(&auth, url, None),
        Err(SignatureError::Missing)
    );
    // Header checks come before the URL: a malformed header on an unsignable URL is still
    // Malformed, a missing one still Missing.
    assert_eq!(
        validate_url_only(&auth, "ftp://x", Some(b"!")),
        Err(SignatureError::Malformed)
    );
    assert_eq!(
        validate_url_only(&auth, "ftp://x", None),
        Err(SignatureError::Missing)
    );
    assert_eq!(
        validate_url_only(&auth, "ftp://x", Some(good.as_bytes())),
        Err(SignatureError::BadUrl)
    );
}

fn run_header_cases(auth: &AuthToken, url: &str, cases: &[(String, Vec<u8>)]) {
    for (what, header) in cases {
        assert_eq!(
            validate_url_only(auth, url, Some(header)),
            Err(SignatureError::Malformed),
            "{what}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// bodySHA256
// ---------------------------------------------------------------------------------------------

#[test]
fn body_hash_known_answers() {
    // FIPS 180-2 / NIST examples.
    assert_eq!(
        body_sha256(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        body_sha256(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn body_hash_table() {
    let auth = AuthToken::new("12345").unwrap();
    let body = br#"{"property": "value"}"#;
    let hash = body_sha256(body);
    let base = "https://example.com/hook";
    let with_hash = format!("{base}?bodySHA256={hash}");
    let upper = format!("{base}?bodySHA256={}", hash.to_uppercase());
    let twice = format!("{with_hash}&bodySHA256={hash}");
    let wrong = format!("{base}?bodySHA256={}", body_sha256(b"other"));
    let in_fragment = format!("{base}#?bodySHA256={hash}");
    type Row<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Option<&'a [u8]>,
        Result<(), SignatureError>,
    );
    let cases: Vec<Row<'_>> = vec![
        ("matching body", &with_hash, vec![], Some(body), Ok(())),
        (
            "body without a hash",
            base,
            vec![],
            Some(body),
            Err(SignatureError::BodyHashMissing),
        ),
        (
            "hash without a body",
            &with_hash,
            vec![],
            None,
            Err(SignatureError::BodyHashWithoutBody),
        ),
        (
            "other body",
            &with_hash,
            vec![],
            Some(b"{}"),
            Err(SignatureError::BodyHashMismatch),
        ),
        (
            "empty body",
            &with_hash,
            vec![],
            Some(b""),
            Err(SignatureError::BodyHashMismatch),
        ),
        (
            "hash of another body",
            &wrong,
            vec![],
            Some(body),
            Err(SignatureError::BodyHashMismatch),
        ),
        (
            "uppercase hex",
            &upper,
            vec![],
            Some(body),
            Err(SignatureError::BodyHashMismatch),
        ),
        (
            "hash twice",
            &twice,
            vec![],
            Some(body),
            Err(SignatureError::BodyHashMissing),
        ),
        (
            "body and params",
            &with_hash,
            vec![("CallSid", "CA1")],
            Some(body),
            Err(SignatureError::BodyWithParams),
        ),
        (
            "hash in the fragment",
            &in_fragment,
            vec![],
            Some(body),
            Err(SignatureError::BodyHashMissing),
        ),
    ];
    for (what, url, params, body, expected) in cases {
        // Each header is a valid signature over the URL and params, so only the body rule can
        // refuse it.
        let sig = compute_signature(&auth, url, &params);
        assert_eq!(
            validate(&auth, url, &params, body, Some(sig.as_bytes())),
            expected,
            "{what}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// A URL built from parts, so each test knows both port variants without asking the crate.
#[derive(Clone, Debug)]
struct Url {
    scheme: String,
    host: String,
    port: Option<u16>,
    tail: String,
}

impl Url {
    fn default_port(&self) -> u16 {
        match self.scheme.to_ascii_lowercase().as_str() {
            "https" | "wss" => 443,
            _ => 80,
        }
    }

    fn with_port(&self, port: Option<u16>) -> String {
        match port {
            Some(p) => format!("{}://{}:{p}{}", self.scheme, self.host, self.tail),
            None => format!("{}://{}{}", self.scheme, self.host, self.tail),
        }
    }

    fn text(&self) -> String {
        self.with_port(self.port)
    }
}

fn url_strategy() -> impl Strategy<Value = Url> {
    (
        prop_oneof![
            Just("http"),
            Just("https"),
            Just("ws"),
            Just("wss"),
            Just("HTTPS"),
            Just("Wss")
        ],
        prop_oneof![
            "[a-z0-9-]{1,12}(\\.[a-zA-Z]{2,5}){0,2}",
            "\\[[0-9a-f]{0,4}::[0-9a-f]{0,4}\\]",
            "(user(:pw)?@)[a-z]{1,8}",
        ],
        proptest::option::of(1u16..),
        // Lowercase-only query alphabet: it can never spell `bodySHA256`.
        "(/[a-zA-Z0-9._~%:@-]{0,8}){0,3}(\\?[a-z0-9=&%+]{0,20})?",
    )
        .prop_map(|(scheme, host, port, tail)| Url {
            scheme: scheme.to_owned(),
            host,
            port,
            tail,
        })
}

fn params_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(("[A-Za-z][A-Za-z0-9.]{0,7}", "\\PC{0,10}"), 0..6)
}

fn auth_strategy() -> impl Strategy<Value = String> {
    "[ -~]{1,64}"
}

fn as_refs(p: &[(String, String)]) -> Vec<(&str, &str)> {
    p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

proptest! {
    #![proptest_config(common::proptest_config())]

    /// For any URL, parameters and auth token, the signature `compute_signature` produces
    /// over the URL as given, and over either of its port variants, is the one the fuzz
    /// oracle computes independently, and validates.
    #[test]
    fn compute_and_validate_agree(url in url_strategy(), params in params_strategy(), auth in auth_strategy()) {
        let auth_text = auth;
        let auth = AuthToken::new(&auth_text).unwrap();
        let owned = params;
        let params = as_refs(&owned);
        let text = url.text();
        let with_port = url.with_port(Some(url.port.unwrap_or(url.default_port())));
        // The fuzz oracle's own port variants are these too.
        prop_assert_eq!(
            streamguard::invariants::expected_variants(&text),
            Some((with_port.clone(), url.with_port(None)))
        );
        for signed in [text.clone(), url.with_port(None), with_port] {
            let sig = compute_signature(&auth, &signed, &params);
            // And the signature is the one PROTOCOL.md §4 defines, as the fuzz oracle
            // computes it without the crate.
            prop_assert_eq!(&sig, &streamguard::invariants::expected_signature(&auth_text, &signed, &owned));
            prop_assert_eq!(validate(&auth, &text, &params, None, Some(sig.as_bytes())), Ok(()), "signed over {}", signed);
        }
    }

    /// A signature over the URL with any port other than the given one and the scheme's
    /// default is refused.
    #[test]
    fn other_ports_are_refused(url in url_strategy(), other in 1u16.., auth in auth_strategy()) {
        prop_assume!(Some(other) != url.port && other != url.default_port());
        let auth = AuthToken::new(&auth).unwrap();
        let sig = compute_signature::<&str, &str>(&auth, &url.with_port(Some(other)), &[]);
        prop_assert_eq!(validate_url_only(&auth, &url.text(), Some(sig.as_bytes())), Err(SignatureError::Mismatch));
    }

    /// Changing one character of the URL's path or query or host name (replacing it or
    /// inserting one), a parameter key, a parameter value or the auth token makes the
    /// signature of the original refuse with `Mismatch`.
    #[test]
    fn any_change_breaks_the_signature(
        url in url_strategy(),
        params in params_strategy(),
        auth in auth_strategy(),
        what in 0u8..6,
        pick in any::<prop::sample::Index>(),
        c in "[a-zA-Z0-9/._~-]",
    ) {
        let auth_token = AuthToken::new(&auth).unwrap();
        let text = url.text();
        let p = as_refs(&params);
        let sig = compute_signature(&auth_token, &text, &p);
        let c = c.chars().next().unwrap();
        let (changed_url, changed_params, changed_auth): (String, Vec<(String, String)>, String) = match what {
            // Replace a character of the tail (path and query).
            // (Never the first character: a letter there would join the authority.)
            0 => {
                prop_assume!(url.tail.len() > 1);
                let i = 1 + pick.index(url.tail.len() - 1);
                let old = char::from(url.tail.as_bytes()[i]);
                prop_assume!(old != c);
                let tail = replace_at(&url.tail, i, c);
                (Url { tail, ..url.clone() }.text(), params.clone(), auth.clone())
            }
            // Insert a character into the tail.
            1 => {
                prop_assume!(!url.tail.is_empty());
                let i = 1 + pick.index(url.tail.len());
                let mut tail = url.tail.clone();
                tail.insert(i, c);
                (Url { tail, ..url.clone() }.text(), params.clone(), auth.clone())
            }
            // Change a host letter's case (the host is signed verbatim).
            2 => {
                let letters: Vec<usize> = url.host.char_indices().filter(|(_, ch)| ch.is_ascii_alphabetic()).map(|(i, _)| i).collect();
                prop_assume!(!letters.is_empty());
                let i = letters[pick.index(letters.len())];
                let host = replace_at(&url.host, i, other_char(char::from(url.host.as_bytes()[i])));
                (Url { host, ..url.clone() }.text(), params.clone(), auth.clone())
            }
            // Append to a key.
            3 => {
                prop_assume!(!params.is_empty());
                let mut ps = params.clone();
                let i = pick.index(ps.len());
                ps[i].0.push(c);
                (text.clone(), ps, auth.clone())
            }
            // Append to a value.
            4 => {
                prop_assume!(!params.is_empty());
                let mut ps = params.clone();
                let i = pick.index(ps.len());
                ps[i].1.push(c);
                (text.clone(), ps, auth.clone())
            }
            // Change the auth token.
            _ => {
                let i = pick.index(auth.len());
                let old = char::from(auth.as_bytes()[i]);
                prop_assume!(old != c);
                (text.clone(), params.clone(), replace_at(&auth, i, c))
            }
        };
        // Identical pairs count once: a change that only turns one pair into a copy of
        // another, while a copy of the original remains, leaves the signed data as it was.
        let distinct = |ps: &[(String, String)]| ps.iter().cloned().collect::<std::collections::BTreeSet<_>>();
        prop_assume!(distinct(&params) != distinct(&changed_params) || !(3..=4).contains(&what));
        let got = validate(
            &AuthToken::new(&changed_auth).unwrap(),
            &changed_url,
            &as_refs(&changed_params),
            None,
            Some(sig.as_bytes()),
        );
        prop_assert_eq!(got, Err(SignatureError::Mismatch), "{} {:?}", changed_url, changed_params);
    }

    /// The order of form parameters does not matter, and repeating an identical (key, value)
    /// pair does not change the signature; adding a different value for a repeated key does.
    #[test]
    fn parameter_order_and_duplicates(
        params in params_strategy(),
        shuffled_seed in any::<u64>(),
        pick in any::<prop::sample::Index>(),
        new_value in "\\PC{0,10}",
    ) {
        let auth = AuthToken::new("12345").unwrap();
        let url = "https://example.com/hook";
        let base = compute_signature(&auth, url, &as_refs(&params));
        // A deterministic shuffle (rotation and reversal driven by the seed).
        let mut shuffled = params.clone();
        if !shuffled.is_empty() {
            let k = usize::try_from(shuffled_seed % u64::try_from(shuffled.len()).unwrap()).unwrap();
            shuffled.rotate_left(k);
            if shuffled_seed & 1 == 1 {
                shuffled.reverse();
            }
        }
        prop_assert_eq!(&compute_signature(&auth, url, &as_refs(&shuffled)), &base);
        prop_assume!(!params.is_empty());
        let (k, v) = params[pick.index(params.len())].clone();
        let mut duplicated = params.clone();
        duplicated.push((k.clone(), v.clone()));
        prop_assert_eq!(&compute_signature(&auth, url, &as_refs(&duplicated)), &base);
        prop_assert_eq!(validate(&auth, url, &as_refs(&duplicated), None, Some(base.as_bytes())), Ok(()));
        prop_assume!(!params.iter().any(|(k2, v2)| *k2 == k && *v2 == new_value));
        let mut repeated = params.clone();
        repeated.push((k, new_value));
        prop_assert_ne!(&compute_signature(&auth, url, &as_refs(&repeated)), &base);
        prop_assert_eq!(
            validate(&auth, url, &as_refs(&repeated), None, Some(base.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }

}

/// One input of [`validate_never_panics_and_accepts_only_28_characters`].
#[derive(Clone, Debug)]
struct AnyRequest {
    url: String,
    params: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    header: Option<Vec<u8>>,
    auth: String,
}

/// `validate` never panics, whatever the URL, parameters, body and header, and accepts only a
/// header that is exactly 28 characters. Random headers are never right, so half the inputs
/// carry the signature of a URL built from parts (always signable) and their parameters:
/// those reach the "accepted" branch, and the test fails if no input did.
#[test]
fn validate_never_panics_and_accepts_only_28_characters() {
    let anything = (
        prop_oneof![
            "\\PC{0,60}",
            "(wss?|https?|ftp)://[\\[\\]:@a-z0-9./?#=&%-]{0,40}"
        ],
        proptest::collection::vec(("\\PC{0,8}", "\\PC{0,8}"), 0..4),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        auth_strategy(),
    )
        .prop_map(|(url, params, body, header, auth)| AnyRequest {
            url,
            params,
            body,
            header,
            auth,
        });
    let signed =
        (url_strategy(), params_strategy(), auth_strategy()).prop_map(|(url, params, auth)| {
            let url = url.text();
            let header = compute_signature(&AuthToken::new(&auth).unwrap(), &url, &params);
            AnyRequest {
                url,
                params,
                body: None,
                header: Some(header.into_bytes()),
                auth,
            }
        });
    let accepted = common::run_property(file!(), prop_oneof![anything, signed], |r| {
        let auth = AuthToken::new(&r.auth).unwrap();
        let got = validate(
            &auth,
            &r.url,
            &as_refs(&r.params),
            r.body.as_deref(),
            r.header.as_deref(),
        );
        let _ = port_variants(&r.url);
        if got.is_ok() {
            prop_assert_eq!(r.header.as_ref().map(Vec::len), Some(28));
        }
        Ok(got.is_ok())
    });
    assert!(
        accepted > 0,
        "no input was accepted: the accepted-means-28-characters branch was never reached"
    );
}

/// `url_problem` names what makes a URL unsignable, and nothing for a signable one; it and
/// `port_variants` agree, up to the 16 KiB bound exactly (inclusive).
#[test]
fn url_problem_names_each_fault_and_agrees_with_port_variants() {
    use streamguard::limits::MAX_SIGNED_URL_BYTES;
    use streamguard::signature::{port_variants, url_problem};
    for ok in [
        "wss://voice.example.com/voice/stream",
        "https://voice.example.com:8443/voice/webhook?a=1",
        "HTTP://user@voice.example.com/x",
        "ws://h",
    ] {
        assert_eq!(url_problem(ok), None, "{ok}");
        assert!(port_variants(ok).is_ok(), "{ok}");
    }
    for (bad, says) in [
        ("voice.example.com/voice/webhook", "it has no scheme"),
        ("ftp://voice.example.com/x", "its scheme must be"),
        ("https:///voice/webhook", "it names no host"),
        ("https://:443/voice/webhook", "it names no host"),
        ("https://user@/voice/webhook", "it names no host"),
        (
            "https://voice.example.com:99999/x",
            "its host or port is malformed",
        ),
    ] {
        let problem = url_problem(bad).unwrap_or_else(|| panic!("{bad} has a problem"));
        assert!(problem.starts_with(says), "{bad}: {problem}");
        assert!(port_variants(bad).is_err(), "{bad}");
    }
    let base = "https://voice.example.com/";
    let at = format!("{base}{}", "a".repeat(MAX_SIGNED_URL_BYTES - base.len()));
    assert_eq!(at.len(), MAX_SIGNED_URL_BYTES);
    assert_eq!(url_problem(&at), None);
    assert!(port_variants(&at).is_ok());
    let over = format!("{at}a");
    assert_eq!(url_problem(&over), Some("it is longer than 16 KiB"));
    assert!(port_variants(&over).is_err());
}
