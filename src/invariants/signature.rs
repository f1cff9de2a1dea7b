//! Target `signature`: arbitrary URLs, parameters, bodies and headers into
//! `signature::validate`.

//!
//! The oracle does not take the crate's word for what a signature is: it computes the signed
//! data (URL, then every key and its distinct values in byte order), the HMAC-SHA1, the port
//! variants and the expected answer of `validate` itself, from `PROTOCOL.md` §4 and the
//! documented validation order, and asks the crate's functions only for the answers it
//! checks. (Reversing the parameter sort in `src/signature.rs` used to pass every corpus
//! replay, because the oracle computed the expected header with `compute_signature`.)

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac};

use crate::limits::{MAX_SIGNATURE_HEADER_BYTES, MAX_SIGNED_URL_BYTES};
use crate::secret::AuthToken;
use crate::signature::{self, SignatureError};

use super::Crate;
use super::fixtures::{AUTH_TOKEN, OTHER_AUTH_TOKEN, fixtures, violated};
use super::messages::{ByteEdit, apply_edit};

/// Most form parameters of one `signature` input that are used (the rest is ignored).
pub const MAX_SIGNATURE_PARAMS: usize = 8;

/// The URL of a signature input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum SignedUrl {
    /// `https://{rest}`.
    Https(String),
    /// `wss://{rest}`.
    Wss(String),
    /// `http://{rest}`.
    Http(String),
    /// Any text.
    Raw(String),
}

/// The body of a signature input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum SignedBody {
    /// No body (form parameters or a GET).
    None,
    /// A body; the URL is left as it is.
    Raw(Vec<u8>),
    /// A body, with `bodySHA256={its hash}` appended to the URL's query (a JSON webhook).
    Hashed(Vec<u8>),
}

/// The `X-Twilio-Signature` header of a signature input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum SignatureHeader {
    /// No header.
    Missing,
    /// The signature of the URL as given (computed by the oracle, from `PROTOCOL.md` §4).
    Computed,
    /// The signature of the URL with the scheme's default port added, or without its port.
    PortVariant {
        /// Which variant.
        with_port: bool,
    },
    /// The signature of the URL as given, made with [`OTHER_AUTH_TOKEN`].
    OtherAuthToken,
    /// [`SignatureHeader::Computed`] with one byte edit.
    Edited(ByteEdit),
    /// Any bytes.
    Raw(Vec<u8>),
}

/// Input of the `signature` target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SignatureInput {
    /// The URL.
    pub url: SignedUrl,
    /// The body.
    pub body: SignedBody,
    /// The header.
    pub header: SignatureHeader,
    /// The form parameters.
    pub params: Vec<(String, String)>,
}

/// The code the `signature` target checks: by default the crate's own functions. A test
/// implements it with one method replaced by a deliberately wrong one, to show the oracle
/// rejects it (`tests/invariants_fire.rs`).
pub trait SignatureCode {
    /// [`signature::compute_signature`].
    fn compute_signature(
        &self,
        auth: &AuthToken,
        url: &str,
        params: &[(String, String)],
    ) -> String {
        signature::compute_signature(auth, url, params)
    }

    /// [`signature::port_variants`].
    fn port_variants(&self, url: &str) -> Result<(String, String), SignatureError> {
        signature::port_variants(url)
    }

    /// [`signature::validate`].
    fn validate(
        &self,
        auth: &AuthToken,
        url: &str,
        params: &[(String, String)],
        body: Option<&[u8]>,
        header: Option<&[u8]>,
    ) -> Result<(), SignatureError> {
        signature::validate(auth, url, params, body, header)
    }
}

impl SignatureCode for Crate {}

/// `bodySHA256`, the query parameter of a JSON webhook (`PROTOCOL.md` §4), written out here.
const BODY_HASH: &str = "bodySHA256";

/// The SHA-1 HMAC is 20 bytes: its canonical padded base64 is 28 characters.
const SIGNATURE_BYTES: usize = 20;

/// The `X-Twilio-Signature` for `url` and `params` under the auth token `auth_token`, as
/// `PROTOCOL.md` §4 states it and computed here without `crate::signature`:
/// base64(HMAC-SHA1(key = the auth token's bytes, data = the URL, then for each key in byte
/// order, and for each distinct value of that key in byte order, the key and the value)).
pub fn expected_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut by_key: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (k, v) in params {
        by_key.entry(k.as_str()).or_default().insert(v.as_str());
    }
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(url.as_bytes());
    for (k, values) in by_key {
        for v in values {
            ctx.update(k.as_bytes());
            ctx.update(v.as_bytes());
        }
    }
    STANDARD.encode(ctx.sign().as_ref())
}

/// The two URLs a signature over `url` is accepted over, (with the port, without it), as
/// `PROTOCOL.md` §4 states them: the URL with the scheme's default port added (443 for
/// `https` and `wss`, 80 for `http` and `ws`) or its own port kept, and the URL with its
/// port removed; one of the two is `url` itself. `None` when `url` cannot be signed (the
/// documented `SignatureError::BadUrl`): longer than [`MAX_SIGNED_URL_BYTES`], no `://`, a
/// scheme other than those four (any case), or an authority (up to the first `/`, `?` or
/// `#`; userinfo ends at its last `@`) whose host is empty, whose colon is outside an IPv6
/// literal `[...]`, or whose port is not one to five digits up to 65535. Written from that
/// statement, without `crate::signature`.
pub fn expected_variants(url: &str) -> Option<(String, String)> {
    if url.len() > MAX_SIGNED_URL_BYTES {
        return None;
    }
    let (scheme, after_scheme) = url.split_once("://")?;
    let is = |names: [&str; 2]| names.iter().any(|n| scheme.eq_ignore_ascii_case(n));
    let default_port = if is(["https", "wss"]) {
        "443"
    } else if is(["http", "ws"]) {
        "80"
    } else {
        return None;
    };
    let authority_len = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let (authority, tail) = after_scheme.split_at_checked(authority_len)?;
    let (userinfo, host_and_port) = match authority.rsplit_once('@') {
        Some((user, hp)) => (authority.get(..user.len().checked_add(1)?)?, hp),
        None => ("", authority),
    };
    let host_len = if host_and_port.starts_with('[') {
        host_and_port.find(']')?.checked_add(1)?
    } else {
        host_and_port.find(':').unwrap_or(host_and_port.len())
    };
    let (host, after_host) = host_and_port.split_at_checked(host_len)?;
    if host.is_empty() {
        return None;
    }
    let port = if after_host.is_empty() {
        default_port
    } else {
        let digits = after_host.strip_prefix(':')?;
        let ok = (1..=5).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.parse::<u32>().is_ok_and(|n| n <= 65_535);
        if !ok {
            return None;
        }
        digits
    };
    Some((
        format!("{scheme}://{userinfo}{host}:{port}{tail}"),
        format!("{scheme}://{userinfo}{host}{tail}"),
    ))
}

/// The raw values of `name` in the query of `url` (fragment removed), written out here.
fn query_values<'a>(url: &'a str, name: &str) -> Vec<&'a str> {
    let url = url.split('#').next().unwrap_or_default();
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|s| s.split_once('=').unwrap_or((s, "")))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .collect()
}

fn sha256_hex(body: &[u8]) -> String {
    digest::digest(&digest::SHA256, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What `validate` must answer, from `PROTOCOL.md` §4 and the validation order documented in
/// `src/signature.rs` (header, URL, body hash, MAC), computed here: no header is `Missing`;
/// a header over [`MAX_SIGNATURE_HEADER_BYTES`] or not the canonical base64 of 20 bytes is
/// `Malformed`; a URL that cannot be signed is `BadUrl`; then the `bodySHA256` rule (a body
/// needs exactly one `bodySHA256` in the query, no form parameters, and its lowercase hex
/// SHA-256 there; a `bodySHA256` needs a body); then the header must be the signature of one
/// of the two port variants, or it is a `Mismatch`.
pub fn expected_validate(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    body: Option<&[u8]>,
    header: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let canonical = header.len() <= MAX_SIGNATURE_HEADER_BYTES
        && STANDARD
            .decode(header)
            .is_ok_and(|raw| raw.len() == SIGNATURE_BYTES);
    if !canonical {
        return Err(SignatureError::Malformed);
    }
    let (with_port, without_port) = expected_variants(url).ok_or(SignatureError::BadUrl)?;
    let hashes = query_values(url, BODY_HASH);
    match (body, hashes.as_slice()) {
        (None, []) => {}
        (None, _) => return Err(SignatureError::BodyHashWithoutBody),
        (Some(_), [_]) if !params.is_empty() => return Err(SignatureError::BodyWithParams),
        (Some(b), [h]) if *h != sha256_hex(b) => return Err(SignatureError::BodyHashMismatch),
        (Some(_), [_]) => {}
        (Some(_), _) => return Err(SignatureError::BodyHashMissing),
    }
    if [with_port, without_port]
        .iter()
        .any(|v| expected_signature(auth_token, v, params).as_bytes() == header)
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Target `signature`: [`signature::validate`] with the input's URL, parameters, body and
/// header, under [`AUTH_TOKEN`]. Returns whether it accepted. See [`signature_with`].
pub fn signature(input: &SignatureInput) -> bool {
    signature_with(&Crate, input)
}

/// The `signature` target's oracle over `code`.
///
/// Invariants, each against the oracle's own computation ([`expected_signature`],
/// [`expected_variants`], [`expected_validate`]), never against the crate's:
/// - `compute_signature` of the URL as given is the signature `PROTOCOL.md` §4 defines
///   (which does not depend on the order of the parameters or on repeated identical pairs);
/// - `port_variants` gives exactly the two variants §4 defines, or `BadUrl` exactly when
///   the URL cannot be signed;
/// - `validate` is deterministic, does not depend on the order of the parameters, and gives
///   exactly the answer [`expected_validate`] gives: accepted exactly when the header is the
///   signature of one port variant and the `bodySHA256` rule holds, otherwise the first
///   failing check in the documented order (so a signature made with another auth token is
///   never accepted).
pub fn signature_with<C: SignatureCode + ?Sized>(code: &C, input: &SignatureInput) -> bool {
    let fx = fixtures();
    let mut url = match &input.url {
        SignedUrl::Https(rest) => format!("https://{rest}"),
        SignedUrl::Wss(rest) => format!("wss://{rest}"),
        SignedUrl::Http(rest) => format!("http://{rest}"),
        SignedUrl::Raw(u) => u.clone(),
    };
    let body = match &input.body {
        SignedBody::None => None,
        SignedBody::Raw(b) => Some(b.as_slice()),
        SignedBody::Hashed(b) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{sep}{BODY_HASH}={}", sha256_hex(b));
            Some(b.as_slice())
        }
    };
    // Bounded: each input signs about eight times, and every signing sorts the parameters
    // with string comparisons that the fuzzer's compare tracing makes expensive; hundreds of
    // parameters made this target ten times slower without reaching anything new. Order,
    // repetition and de-duplication are all exercised by a handful.
    let params = input
        .params
        .get(..input.params.len().min(MAX_SIGNATURE_PARAMS))
        .unwrap_or_default();

    let variants = expected_variants(&url);
    let got_variants = code.port_variants(&url);
    match (&got_variants, &variants) {
        (Ok(got), Some(want)) if got == want => {}
        (Err(SignatureError::BadUrl), None) => {}
        _ => violated(format_args!(
            "port_variants({url:?}) gave {got_variants:?}, PROTOCOL.md §4 gives {variants:?}"
        )),
    }

    let expected = expected_signature(AUTH_TOKEN, &url, params);
    let computed = code.compute_signature(&fx.auth, &url, params);
    if computed != expected {
        violated(format_args!(
            "compute_signature({url:?}, {params:?}) gave {computed:?}, PROTOCOL.md §4 gives \
             {expected:?}"
        ));
    }

    let header: Option<Vec<u8>> = match &input.header {
        SignatureHeader::Missing => None,
        SignatureHeader::Computed => Some(expected.clone().into_bytes()),
        SignatureHeader::PortVariant { with_port } => match &variants {
            Some((with, without)) => {
                let v = if *with_port { with } else { without };
                Some(expected_signature(AUTH_TOKEN, v, params).into_bytes())
            }
            None => Some(expected.clone().into_bytes()),
        },
        SignatureHeader::OtherAuthToken => {
            Some(expected_signature(OTHER_AUTH_TOKEN, &url, params).into_bytes())
        }
        SignatureHeader::Edited(e) => {
            let mut h = expected.clone().into_bytes();
            apply_edit(&mut h, *e);
            Some(h)
        }
        SignatureHeader::Raw(h) => Some(h.clone()),
    };
    let header = header.as_deref();
    let result = code.validate(&fx.auth, &url, params, body, header);
    let mut reversed = params.to_vec();
    reversed.reverse();
    let again = code.validate(&fx.auth, &url, &reversed, body, header);
    if again != result {
        violated(format_args!(
            "validate gave {result:?}, then {again:?} with the parameters reversed"
        ));
    }
    let want = expected_validate(AUTH_TOKEN, &url, params, body, header);
    if result != want {
        violated(format_args!(
            "validate({url:?}, {params:?}, body {}, header {:?}) gave {result:?}, \
             PROTOCOL.md §4 gives {want:?}",
            if body.is_some() { "given" } else { "none" },
            header.map(String::from_utf8_lossy),
        ));
    }
    result.is_ok()
}
