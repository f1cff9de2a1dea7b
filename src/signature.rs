//! `X-Twilio-Signature`: compute and validate, as Twilio's official helper libraries do.
//!
//! Source: Twilio, "Webhooks security" (<https://www.twilio.com/docs/usage/webhooks/webhooks-security>)
//! and the request validators of twilio-python, twilio-node and twilio-java, whose test
//! vectors are in `tests/data/twilio-signature.json`.
//!
//! `signature = base64(HMAC-SHA1(key = auth token, data = URL + for each (key, value) in
//! sorted order: key + value))`, where:
//! - the URL is the full URL Twilio requested, byte for byte (query included, percent-encoding
//!   and host case as given);
//! - form parameters are sorted by key in byte order; a key that repeats contributes each of
//!   its distinct values, in sorted order (the Python and Node validators de-duplicate and
//!   sort);
//! - query parameters are not added as parameters: they are already in the URL;
//! - a JSON body is not a parameter: the URL carries `bodySHA256=<hex SHA-256 of the body>`,
//!   which must match, and the parameter list is empty;
//! - the WebSocket handshake is a GET without a body: the data is the URL alone.
//!
//! [`validate`] accepts the signature computed over either port variant of the URL, as the
//! official validators do: the URL with its explicit port removed, or with the scheme's
//! default port added (443 for `https` and `wss`, 80 for `http` and `ws`; the SDKs' "https
//! else 80" rule is wrong for `wss`). Both variants are always computed and compared in
//! constant time, so the time taken does not depend on which one matched.
//!
//! Validation order: header length and encoding, URL shape (scheme, port), body hash, then
//! the MAC comparison.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac};

use crate::limits::{MAX_SIGNATURE_HEADER_BYTES, MAX_SIGNED_URL_BYTES};
use crate::secret::AuthToken;

/// The header Twilio puts its signature in.
pub const HEADER: &str = "X-Twilio-Signature";

/// The query parameter that carries the SHA-256 of a JSON body.
pub const BODY_HASH_PARAM: &str = "bodySHA256";

const SHA1_BYTES: usize = 20;

/// Why a signature was not accepted. For logs and metrics only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// No `X-Twilio-Signature` header.
    Missing,
    /// The header is not canonical base64 of a 20-byte HMAC-SHA1, or is too long.
    Malformed,
    /// The URL is not `http`, `https`, `ws` or `wss` with a valid authority and port, or is
    /// too long.
    BadUrl,
    /// A body was given, but the URL has no `bodySHA256` parameter (or has it twice).
    BodyHashMissing,
    /// The URL has a `bodySHA256` parameter, but no body was given.
    BodyHashWithoutBody,
    /// The body's SHA-256 is not the URL's `bodySHA256`.
    BodyHashMismatch,
    /// A body was given together with form parameters.
    BodyWithParams,
    /// The signature does not match this URL, these parameters and this auth token.
    Mismatch,
}

impl SignatureError {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "signature_missing",
            Self::Malformed => "signature_malformed",
            Self::BadUrl => "signature_bad_url",
            Self::BodyHashMissing => "signature_body_hash_missing",
            Self::BodyHashWithoutBody => "signature_body_hash_without_body",
            Self::BodyHashMismatch => "signature_body_hash_mismatch",
            Self::BodyWithParams => "signature_body_with_params",
            Self::Mismatch => "signature_mismatch",
        }
    }
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "X-Twilio-Signature header is missing",
            Self::Malformed => "X-Twilio-Signature header is not a base64 HMAC-SHA1",
            Self::BadUrl => "URL cannot be signed (scheme, authority or port)",
            Self::BodyHashMissing => "body given but the URL has no single bodySHA256",
            Self::BodyHashWithoutBody => "URL has bodySHA256 but no body was given",
            Self::BodyHashMismatch => "body does not match bodySHA256",
            Self::BodyWithParams => "both a body and form parameters were given",
            Self::Mismatch => "signature does not match",
        })
    }
}

impl std::error::Error for SignatureError {}

/// A URL split around its port: `{scheme}://{userinfo}{host}[:{port}]{tail}`, where
/// `userinfo` keeps its `@` and `tail` is the path, query and fragment.
struct SplitUrl<'a> {
    scheme: &'a str,
    userinfo: &'a str,
    host: &'a str,
    port: Option<&'a str>,
    tail: &'a str,
    default_port: &'static str,
}

fn split_url(url: &str) -> Result<SplitUrl<'_>, SignatureError> {
    if url.len() > MAX_SIGNED_URL_BYTES {
        return Err(SignatureError::BadUrl);
    }
    let (scheme, rest) = url.split_once("://").ok_or(SignatureError::BadUrl)?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return Err(SignatureError::BadUrl),
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => authority.split_at(at.saturating_add(1)),
        None => ("", authority),
    };
    // An IPv6 literal's colons are inside brackets; the port separator comes after `]`.
    let host_end = if host_port.starts_with('[') {
        host_port
            .find(']')
            .ok_or(SignatureError::BadUrl)?
            .saturating_add(1)
    } else {
        host_port.rfind(':').unwrap_or(host_port.len())
    };
    let (host, port_part) = host_port.split_at(host_end);
    // A colon left in a host that is not an IPv6 literal means two ports (`h:1:2`).
    if host.is_empty() || (!host.starts_with('[') && host.contains(':')) {
        return Err(SignatureError::BadUrl);
    }
    let port = match port_part.strip_prefix(':') {
        None if port_part.is_empty() => None,
        None => return Err(SignatureError::BadUrl),
        Some(p) => {
            let valid = !p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u32>().is_ok_and(|n| n <= 65_535);
            if !valid {
                return Err(SignatureError::BadUrl);
            }
            Some(p)
        }
    };
    Ok(SplitUrl {
        scheme,
        userinfo,
        host,
        port,
        tail,
        default_port,
    })
}

/// What makes `url` impossible to sign, in words for a person (`streamguard sign --url`), or
/// `None` if it can be signed.
///
/// ```
/// use streamguard::signature::url_problem;
/// assert_eq!(url_problem("wss://voice.example.com/voice/stream"), None);
/// assert!(url_problem("voice.example.com/voice/webhook").unwrap().contains("scheme"));
/// ```
pub fn url_problem(url: &str) -> Option<&'static str> {
    if url.len() > MAX_SIGNED_URL_BYTES {
        return Some("it is longer than 16 KiB");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some(
            "it has no scheme: give the full URL Twilio requested, https://... for a webhook, \
             wss://... for the stream upgrade",
        );
    };
    if !matches!(
        scheme.to_ascii_lowercase().as_str(),
        "https" | "http" | "wss" | "ws"
    ) {
        return Some("its scheme must be https or http (webhooks), wss or ws (the upgrade)");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() || host_port.starts_with(':') {
        return Some("it names no host");
    }
    match split_url(url) {
        Ok(_) => None,
        Err(_) => Some("its host or port is malformed (the port must be a number up to 65535)"),
    }
}

/// The two URLs a signature is accepted over: (with the port, without the port). One of them
/// is always `url` itself.
///
/// ```
/// use streamguard::signature::port_variants;
/// let (with, without) = port_variants("wss://example.com/voice/stream").unwrap();
/// assert_eq!(with, "wss://example.com:443/voice/stream");
/// assert_eq!(without, "wss://example.com/voice/stream");
/// ```
pub fn port_variants(url: &str) -> Result<(String, String), SignatureError> {
    let SplitUrl {
        scheme,
        userinfo,
        host,
        port,
        tail,
        default_port,
    } = split_url(url)?;
    let port = port.unwrap_or(default_port);
    Ok((
        format!("{scheme}://{userinfo}{host}:{port}{tail}"),
        format!("{scheme}://{userinfo}{host}{tail}"),
    ))
}

/// The raw values of `name` in the query of `url`.
fn query_values<'a>(url: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    let without_fragment = url.split_once('#').map_or(url, |(u, _)| u);
    let query = without_fragment.split_once('?').map_or("", |(_, q)| q);
    crate::wire::form::pairs(query)
        .filter(move |(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn sign_data<K: AsRef<str>, V: AsRef<str>>(
    auth: &AuthToken,
    url: &str,
    params: &[(K, V)],
) -> hmac::Tag {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    // Byte order of the UTF-8 strings (`str`'s `Ord`), keys first, then values; identical
    // pairs contribute once.
    sorted.sort_unstable();
    sorted.dedup();
    let mut ctx = hmac::Context::with_key(auth.hmac());
    ctx.update(url.as_bytes());
    for (k, v) in sorted {
        ctx.update(k.as_bytes());
        ctx.update(v.as_bytes());
    }
    ctx.sign()
}

/// The `X-Twilio-Signature` value Twilio would send for a request to `url` (exactly as given,
/// no port variant) with form parameters `params`.
///
/// ```
/// use streamguard::secret::AuthToken;
/// use streamguard::signature::compute_signature;
/// // Known answer from Twilio's SDK test suites.
/// let auth = AuthToken::new("12345").unwrap();
/// let params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675309"),
///               ("Digits", "1234"), ("From", "+14158675309"), ("To", "+18005551212")];
/// assert_eq!(
///     compute_signature(&auth, "https://mycompany.com/myapp.php?foo=1&bar=2", &params),
///     "RSOYDt4T1cUTdK1PDd93/VVr8B8="
/// );
/// ```
pub fn compute_signature<K: AsRef<str>, V: AsRef<str>>(
    auth: &AuthToken,
    url: &str,
    params: &[(K, V)],
) -> String {
    STANDARD.encode(sign_data(auth, url, params).as_ref())
}

/// Checks an `X-Twilio-Signature` header for a request to `url` with form parameters
/// `params`, or with a raw `body` (JSON webhooks, which carry `bodySHA256` in the URL).
/// `header` is `None` when the request has no such header.
pub fn validate<K: AsRef<str>, V: AsRef<str>>(
    auth: &AuthToken,
    url: &str,
    params: &[(K, V)],
    body: Option<&[u8]>,
    header: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > MAX_SIGNATURE_HEADER_BYTES {
        return Err(SignatureError::Malformed);
    }
    let mut presented = [0u8; SHA1_BYTES];
    match STANDARD.decode_slice(header, &mut presented) {
        Ok(SHA1_BYTES) => {}
        _ => return Err(SignatureError::Malformed),
    }

    let (with_port, without_port) = port_variants(url)?;

    check_body_hash(url, body, !params.is_empty())?;

    // Both variants, always; `|` rather than `||` so neither comparison is skipped.
    let a = constant_time_eq::constant_time_eq(
        sign_data(auth, &with_port, params).as_ref(),
        &presented,
    );
    let b = constant_time_eq::constant_time_eq(
        sign_data(auth, &without_port, params).as_ref(),
        &presented,
    );
    if a | b {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Checks the `bodySHA256` rule: a `body` needs exactly one `bodySHA256` in the URL's query,
/// equal (in constant time) to the lowercase hex SHA-256 of the body, and no form
/// parameters; a URL with `bodySHA256` needs a body.
pub fn check_body_hash(
    url: &str,
    body: Option<&[u8]>,
    has_params: bool,
) -> Result<(), SignatureError> {
    let mut hashes = query_values(url, BODY_HASH_PARAM);
    match (body, hashes.next(), hashes.next()) {
        (None, None, _) => Ok(()),
        (None, Some(_), _) => Err(SignatureError::BodyHashWithoutBody),
        (Some(_), None, _) | (Some(_), Some(_), Some(_)) => Err(SignatureError::BodyHashMissing),
        (Some(_), Some(_), None) if has_params => Err(SignatureError::BodyWithParams),
        (Some(body), Some(expected), None) => {
            let actual = body_sha256(body);
            if constant_time_eq::constant_time_eq(actual.as_bytes(), expected.as_bytes()) {
                Ok(())
            } else {
                Err(SignatureError::BodyHashMismatch)
            }
        }
    }
}

/// [`validate`] for a request without parameters or body: the WebSocket handshake, a GET
/// whose signature is the HMAC over the URL alone.
pub fn validate_url_only(
    auth: &AuthToken,
    url: &str,
    header: Option<&[u8]>,
) -> Result<(), SignatureError> {
    validate::<&str, &str>(auth, url, &[], None, header)
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            if let Some(&d) = DIGITS.get(usize::from(nibble)) {
                s.push(char::from(d));
            }
        }
    }
    s
}

/// Lowercase hex SHA-256 of `body`: the `bodySHA256` value for a JSON webhook.
pub fn body_sha256(body: &[u8]) -> String {
    hex_lower(digest::digest(&digest::SHA256, body).as_ref())
}
