//! Target `signature`: arbitrary URLs, parameters, bodies and headers into
//! `signature::validate`.

use ring::digest;

use crate::limits::MAX_SIGNATURE_HEADER_BYTES;
use crate::signature::{self, SignatureError};

use super::fixtures::{fixtures, violated};
use super::messages::{ByteEdit, apply_edit};

#[cfg(doc)]
use super::fixtures::{AUTH_TOKEN, OTHER_AUTH_TOKEN};

/// Most form parameters of one `signature` input that are used (the rest is ignored).
pub const MAX_SIGNATURE_PARAMS: usize = 8;

/// The URL of a signature input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
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
pub enum SignatureHeader {
    /// No header.
    Missing,
    /// [`signature::compute_signature`] of the URL as given.
    Computed,
    /// The signature of the URL with the scheme's default port added, or without its port.
    PortVariant {
        /// Which variant.
        with_port: bool,
    },
    /// The right computation with [`OTHER_AUTH_TOKEN`].
    OtherAuthToken,
    /// [`SignatureHeader::Computed`] with one byte edit.
    Edited(ByteEdit),
    /// Any bytes.
    Raw(Vec<u8>),
}

/// Input of the `signature` target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
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

/// Whether `with` is `without` with `:digits` inserted at one place.
fn differ_by_port_only(with: &str, without: &str) -> bool {
    let common = with
        .bytes()
        .zip(without.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let (Some(with_rest), Some(without_rest)) = (with.get(common..), without.get(common..)) else {
        return false;
    };
    let Some(port_and_rest) = with_rest.strip_prefix(':') else {
        return false;
    };
    let rest = port_and_rest.trim_start_matches(|c: char| c.is_ascii_digit());
    rest.len() < port_and_rest.len() && rest == without_rest
}

/// Target `signature`: [`signature::validate`] with the input's URL, parameters, body and
/// header, under [`AUTH_TOKEN`]. Returns whether it accepted.
///
/// Invariants:
/// - `validate` is deterministic and does not depend on the order of the parameters;
///   `compute_signature` does not either, and an identical pair given twice counts once;
/// - [`signature::port_variants`] of a URL it accepts returns the URL itself as one of the
///   two variants, and the other differs only by the port;
/// - no header: `Missing`; a header over [`MAX_SIGNATURE_HEADER_BYTES`]: `Malformed`;
/// - accepted means: the header is byte for byte `compute_signature` of one port variant
///   with these parameters; a body comes with no parameters and exactly one `bodySHA256`
///   in the URL equal to the body's SHA-256 (lowercase hex); no body means no `bodySHA256`;
/// - agreement: the header `compute_signature` gives for the URL as given, or for either
///   port variant, is accepted whenever the URL can be signed and the body rule holds, and
///   the same computation with another auth token never is.
pub fn signature(input: &SignatureInput) -> bool {
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
            url = format!("{url}{sep}{}={}", signature::BODY_HASH_PARAM, sha256_hex(b));
            Some(b.as_slice())
        }
    };
    // Bounded: each input signs a dozen times, and every signing sorts the parameters with
    // string comparisons that the fuzzer's compare tracing makes expensive; hundreds of
    // parameters made this target ten times slower without reaching anything new. Order,
    // repetition and de-duplication are all exercised by a handful.
    let params = input
        .params
        .get(..input.params.len().min(MAX_SIGNATURE_PARAMS))
        .unwrap_or_default();
    let variants = signature::port_variants(&url);
    if let Ok((with, without)) = &variants
        && (!differ_by_port_only(with, without) || (with != &url && without != &url))
    {
        violated(format_args!(
            "port variants of {url:?} are {with:?} and {without:?}"
        ));
    }

    let computed = signature::compute_signature(&fx.auth, &url, params);
    let mut reversed = params.to_vec();
    reversed.reverse();
    let mut doubled = params.to_vec();
    doubled.extend(params.iter().cloned());
    if signature::compute_signature(&fx.auth, &url, &reversed) != computed
        || signature::compute_signature(&fx.auth, &url, &doubled) != computed
    {
        violated(format_args!(
            "compute_signature depends on parameter order or repetition"
        ));
    }

    let header: Option<Vec<u8>> = match &input.header {
        SignatureHeader::Missing => None,
        SignatureHeader::Computed => Some(computed.clone().into_bytes()),
        SignatureHeader::PortVariant { with_port } => match &variants {
            Ok((with, without)) => {
                let v = if *with_port { with } else { without };
                Some(signature::compute_signature(&fx.auth, v, params).into_bytes())
            }
            Err(_) => Some(computed.clone().into_bytes()),
        },
        SignatureHeader::OtherAuthToken => {
            Some(signature::compute_signature(&fx.other_auth, &url, params).into_bytes())
        }
        SignatureHeader::Edited(e) => {
            let mut h = computed.clone().into_bytes();
            apply_edit(&mut h, *e);
            Some(h)
        }
        SignatureHeader::Raw(h) => Some(h.clone()),
    };
    let header = header.as_deref();
    let result = signature::validate(&fx.auth, &url, params, body, header);
    if result != signature::validate(&fx.auth, &url, &reversed, body, header) {
        violated(format_args!(
            "validate depends on the order of the parameters"
        ));
    }

    let hashes = query_values(&url, signature::BODY_HASH_PARAM);
    let body_rule = match body {
        None => hashes.is_empty(),
        Some(b) => params.is_empty() && matches!(hashes.as_slice(), [h] if *h == sha256_hex(b)),
    };
    match header {
        None if result != Err(SignatureError::Missing) => {
            violated(format_args!("no header gave {result:?}"))
        }
        Some(h)
            if h.len() > MAX_SIGNATURE_HEADER_BYTES && result != Err(SignatureError::Malformed) =>
        {
            violated(format_args!("a {}-byte header gave {result:?}", h.len()))
        }
        _ => {}
    }
    if result.is_ok() {
        let Ok((with, without)) = &variants else {
            violated(format_args!(
                "accepted a URL without port variants: {url:?}"
            ))
        };
        let matches_variant = [with, without]
            .iter()
            .any(|v| header == Some(signature::compute_signature(&fx.auth, v, params).as_bytes()));
        if !matches_variant {
            violated(format_args!(
                "accepted a header that is not the signature of {url:?} or its port variant"
            ));
        }
        if !body_rule {
            violated(format_args!(
                "accepted although the bodySHA256 rule does not hold for {url:?}"
            ));
        }
    }
    let should_accept = matches!(
        input.header,
        SignatureHeader::Computed | SignatureHeader::PortVariant { .. }
    ) && variants.is_ok()
        && body_rule;
    if should_accept && result.is_err() {
        violated(format_args!(
            "the signature compute_signature gives was refused with {result:?} for {url:?}"
        ));
    }
    if input.header == SignatureHeader::OtherAuthToken && result.is_ok() {
        violated(format_args!(
            "a signature made with another auth token was accepted"
        ));
    }
    result.is_ok()
}
