//! Target `upgrade_request`: structured request heads into `upgrade::decide`, and the
//! invariants of the upgrade decision both upgrade targets check.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest;

use crate::limits::MAX_REQUEST_TARGET_BYTES;
use crate::signature;
use crate::upgrade::{self, Accepted, RequestHead, SignatureMode, UpgradePolicy, UpgradeReject};

use super::Crate;
use super::fixtures::{AUTH_TOKEN, FixtureToken, STREAM_PATH, fixture_token, fixtures, violated};
use super::signature::expected_signature;

/// The code the upgrade targets check: by default the crate's own decision. A test implements
/// it with a deliberately wrong one, to show the oracle rejects it
/// (`tests/invariants_fire.rs`).
pub trait UpgradeCode {
    /// [`upgrade::decide`].
    fn decide(
        &self,
        head: &RequestHead,
        policy: &UpgradePolicy<'_>,
    ) -> Result<Accepted, UpgradeReject> {
        upgrade::decide(head, policy)
    }
}

impl UpgradeCode for Crate {}

/// The `Sec-WebSocket-Key` of RFC 6455 §1.3's example, used by [`UpgradeHeader::Key`].
pub const WEBSOCKET_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// RFC 6455 §1.3: the GUID appended to the key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// One policy URL of the upgrade targets: the configured `{ws(s) public url}{stream-path}`
/// and the two URLs a signature is accepted over (RFC-independent: written out by hand).
struct PolicyUrls {
    signed_url: &'static str,
    with_port: &'static str,
    without_port: &'static str,
}

/// The configured stream URL of the upgrade targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum PolicyUrl {
    /// `wss://streamguard.example/voice/stream` (the raw target's policy).
    NoPort,
    /// `wss://streamguard.example:443/voice/stream`.
    DefaultPort,
    /// `wss://streamguard.example:8443/voice/stream`.
    OtherPort,
    /// `ws://127.0.0.1:8080/voice/stream` (local development).
    LocalWs,
}

impl PolicyUrl {
    fn urls(self) -> PolicyUrls {
        let (signed_url, with_port, without_port) = match self {
            Self::NoPort => (
                "wss://streamguard.example/voice/stream",
                "wss://streamguard.example:443/voice/stream",
                "wss://streamguard.example/voice/stream",
            ),
            Self::DefaultPort => (
                "wss://streamguard.example:443/voice/stream",
                "wss://streamguard.example:443/voice/stream",
                "wss://streamguard.example/voice/stream",
            ),
            Self::OtherPort => (
                "wss://streamguard.example:8443/voice/stream",
                "wss://streamguard.example:8443/voice/stream",
                "wss://streamguard.example/voice/stream",
            ),
            Self::LocalWs => (
                "ws://127.0.0.1:8080/voice/stream",
                "ws://127.0.0.1:8080/voice/stream",
                "ws://127.0.0.1/voice/stream",
            ),
        };
        PolicyUrls {
            signed_url,
            with_port,
            without_port,
        }
    }
}

/// The `X-Twilio-Signature` Twilio would send for an upgrade of `target` under `policy`,
/// computed over the URL with the port (`with_port`) or without it (by the signature oracle,
/// [`expected_signature`], not by `crate::signature`).
pub fn upgrade_signature(policy: PolicyUrl, target: &str, with_port: bool) -> String {
    let urls = policy.urls();
    let base = if with_port {
        urls.with_port
    } else {
        urls.without_port
    };
    let url = match target.split_once('?') {
        Some((_, q)) => format!("{base}?{q}"),
        None => base.to_owned(),
    };
    expected_signature(AUTH_TOKEN, &url, &[])
}

/// The request method.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum HttpMethod {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// Any text.
    Raw(String),
}

/// The request target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum UpgradeTarget {
    /// [`STREAM_PATH`].
    StreamPath,
    /// `{STREAM_PATH}?{query}`.
    WithQuery(String),
    /// `{STREAM_PATH}?token={fixture token}`.
    WithToken(FixtureToken),
    /// Any text.
    Raw(String),
}

/// A header name the upgrade decision reads, or one it must ignore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum HeaderName {
    /// `Upgrade`.
    Upgrade,
    /// `Connection`.
    Connection,
    /// `Sec-WebSocket-Version`.
    SecWebSocketVersion,
    /// `Sec-WebSocket-Key`.
    SecWebSocketKey,
    /// `X-Twilio-Signature`.
    XTwilioSignature,
    /// `Host` (must not influence the signed URL).
    Host,
    /// `X-Forwarded-Proto` (must not influence the signed URL).
    XForwardedProto,
    /// `X-Forwarded-Host` (must not influence the signed URL).
    XForwardedHost,
}

impl HeaderName {
    fn as_str(self) -> &'static str {
        match self {
            Self::Upgrade => "Upgrade",
            Self::Connection => "Connection",
            Self::SecWebSocketVersion => "Sec-WebSocket-Version",
            Self::SecWebSocketKey => "Sec-WebSocket-Key",
            Self::XTwilioSignature => signature::HEADER,
            Self::Host => "Host",
            Self::XForwardedProto => "X-Forwarded-Proto",
            Self::XForwardedHost => "X-Forwarded-Host",
        }
    }
}

/// One header of an upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum UpgradeHeader {
    /// `Upgrade: websocket`.
    Upgrade,
    /// `Connection: Upgrade`.
    Connection,
    /// `Sec-WebSocket-Version: 13`.
    Version,
    /// `Sec-WebSocket-Key: {WEBSOCKET_KEY}`.
    Key,
    /// `X-Twilio-Signature` computed for this request's URL under the policy, over the URL
    /// with or without the port.
    Signature {
        /// Which port variant is signed.
        with_port: bool,
    },
    /// A known header name with any value.
    Named {
        /// The name.
        name: HeaderName,
        /// Whether the name is written in lower case.
        lowercase: bool,
        /// The value.
        value: Vec<u8>,
    },
    /// Any name and value.
    Raw {
        /// The name.
        name: String,
        /// The value.
        value: Vec<u8>,
    },
}

/// Input of the `upgrade_request` target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct UpgradeInput {
    /// The configured stream URL.
    pub policy: PolicyUrl,
    /// The method.
    pub method: HttpMethod,
    /// The request target.
    pub target: UpgradeTarget,
    /// The headers, in order.
    pub headers: Vec<UpgradeHeader>,
}

impl UpgradeInput {
    /// The request head this input describes.
    pub fn head(&self) -> RequestHead {
        let target = match &self.target {
            UpgradeTarget::StreamPath => STREAM_PATH.to_owned(),
            UpgradeTarget::WithQuery(q) => format!("{STREAM_PATH}?{q}"),
            UpgradeTarget::WithToken(which) => {
                format!("{STREAM_PATH}?token={}", fixture_token(*which))
            }
            UpgradeTarget::Raw(t) => t.clone(),
        };
        let headers = self
            .headers
            .iter()
            .map(|h| match h {
                UpgradeHeader::Upgrade => ("Upgrade".to_owned(), b"websocket".to_vec()),
                UpgradeHeader::Connection => ("Connection".to_owned(), b"Upgrade".to_vec()),
                UpgradeHeader::Version => ("Sec-WebSocket-Version".to_owned(), b"13".to_vec()),
                UpgradeHeader::Key => (
                    "Sec-WebSocket-Key".to_owned(),
                    WEBSOCKET_KEY.as_bytes().to_vec(),
                ),
                UpgradeHeader::Signature { with_port } => (
                    signature::HEADER.to_owned(),
                    upgrade_signature(self.policy, &target, *with_port).into_bytes(),
                ),
                UpgradeHeader::Named {
                    name,
                    lowercase,
                    value,
                } => {
                    let name = if *lowercase {
                        name.as_str().to_ascii_lowercase()
                    } else {
                        name.as_str().to_owned()
                    };
                    (name, value.clone())
                }
                UpgradeHeader::Raw { name, value } => (name.clone(), value.clone()),
            })
            .collect();
        let method = match &self.method {
            HttpMethod::Get => "GET".to_owned(),
            HttpMethod::Post => "POST".to_owned(),
            HttpMethod::Raw(m) => m.clone(),
        };
        RequestHead {
            method,
            target,
            headers,
        }
    }
}

/// What an upgrade input reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpgradeOutcome {
    /// Accepted with `--upgrade-signature required`.
    pub required: bool,
    /// Accepted with `if-present`.
    pub if_present: bool,
    /// Accepted with `off`.
    pub off: bool,
}

/// Target `upgrade_request`: the request head the input describes into [`upgrade::decide`],
/// under each [`SignatureMode`]. See [`check_upgrade`] for the invariants.
pub fn upgrade_request(input: &UpgradeInput) -> UpgradeOutcome {
    upgrade_request_with(&Crate, input)
}

/// [`upgrade_request`] over `code`.
pub fn upgrade_request_with<C: UpgradeCode + ?Sized>(
    code: &C,
    input: &UpgradeInput,
) -> UpgradeOutcome {
    check_upgrade_with(code, &input.head(), input.policy)
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2), computed here independently.
fn accept_key_for(key: &[u8]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(ctx.finish().as_ref())
}

/// The invariants of the upgrade decision for one request head, under `policy` and each
/// [`SignatureMode`]:
/// - `decide` never panics and gives the same answer twice (checked under `required`, the
///   mode that runs every check);
/// - it never answers 503 (capacity is the server's decision, after this one);
/// - a target whose path (before the first `?`) is not exactly [`STREAM_PATH`], or that is
///   longer than [`MAX_REQUEST_TARGET_BYTES`], is refused with 404, whatever else is wrong;
///   on the stream path, a method other than `GET` is refused with 405;
/// - an accepted request is a `GET` of the stream path with exactly one `Sec-WebSocket-Key`,
///   base64 of 16 bytes, and the answer's `Sec-WebSocket-Accept` is the RFC 6455 one;
/// - with `required`, an accepted request has exactly one `X-Twilio-Signature`, byte for byte
///   the signature ([`expected_signature`], the signature oracle's, not the crate's) of the
///   policy URL (with or without its port, written out by hand here, never taken from `Host`
///   or `X-Forwarded-*`) plus `?query` if the target has one; with
///   `if-present`, the same or no such header at all;
/// - a request accepted with `required` is accepted the same way with `if-present`, and one
///   accepted with `if-present` the same way with `off`.
pub fn check_upgrade(head: &RequestHead, policy: PolicyUrl) -> UpgradeOutcome {
    check_upgrade_with(&Crate, head, policy)
}

/// [`check_upgrade`] over `code`.
pub fn check_upgrade_with<C: UpgradeCode + ?Sized>(
    code: &C,
    head: &RequestHead,
    policy: PolicyUrl,
) -> UpgradeOutcome {
    let fx = fixtures();
    let urls = policy.urls();
    let decide = |mode| {
        let p = UpgradePolicy {
            stream_path: STREAM_PATH,
            signed_url: urls.signed_url,
            auth: &fx.auth,
            mode,
        };
        let first = code.decide(head, &p);
        // Determinism is checked in the mode that runs every check.
        if mode == SignatureMode::Required && first != code.decide(head, &p) {
            violated(format_args!("upgrade::decide is not deterministic"));
        }
        first
    };
    let results = [
        SignatureMode::Required,
        SignatureMode::IfPresent,
        SignatureMode::Off,
    ]
    .map(|mode| (mode, decide(mode)));

    let (path, query) = match head.target.find('?') {
        Some(i) => (
            head.target.get(..i).unwrap_or_default(),
            head.target.get(i.saturating_add(1)..),
        ),
        None => (head.target.as_str(), None),
    };
    let on_path = path == STREAM_PATH && head.target.len() <= MAX_REQUEST_TARGET_BYTES;
    let signatures: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(signature::HEADER))
        .map(|(_, v)| v.as_slice())
        .collect();
    // Computed once, and only when it can matter (one header, some mode accepted).
    let any_accepted = results.iter().any(|(_, r)| r.is_ok());
    let single_signature_valid = match signatures.as_slice() {
        [v] if any_accepted => [urls.with_port, urls.without_port].iter().any(|base| {
            let url = match query {
                Some(q) => format!("{base}?{q}"),
                None => (*base).to_owned(),
            };
            expected_signature(AUTH_TOKEN, &url, &[]).as_bytes() == *v
        }),
        _ => false,
    };

    for (mode, result) in &results {
        match result {
            Err(reject) => {
                if reject.status() == 503 {
                    violated(format_args!("decide answered 503 ({reject:?})"));
                }
                if !on_path && *reject != UpgradeReject::NotFound {
                    violated(format_args!(
                        "a request for {:?} was refused with {reject:?}, not 404",
                        head.target
                    ));
                }
                if on_path && head.method != "GET" && *reject != UpgradeReject::Method {
                    violated(format_args!(
                        "a {:?} of the stream path was refused with {reject:?}, not 405",
                        head.method
                    ));
                }
                if on_path
                    && head.method == "GET"
                    && matches!(reject, UpgradeReject::NotFound | UpgradeReject::Method)
                {
                    violated(format_args!("a GET of the stream path gave {reject:?}"));
                }
            }
            Ok(accepted) => {
                if !on_path {
                    violated(format_args!(
                        "accepted a request for {:?}, not the stream path",
                        head.target
                    ));
                }
                if head.method != "GET" {
                    violated(format_args!("accepted a {:?} request", head.method));
                }
                let keys: Vec<&[u8]> = head
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
                    .map(|(_, v)| v.trim_ascii())
                    .collect();
                let [key] = keys.as_slice() else {
                    violated(format_args!(
                        "accepted with {} Sec-WebSocket-Key headers",
                        keys.len()
                    ))
                };
                if STANDARD.decode(key).map(|k| k.len()).ok() != Some(16) {
                    violated(format_args!(
                        "accepted a key that is not base64 of 16 bytes"
                    ));
                }
                if accepted.accept_key != accept_key_for(key) {
                    violated(format_args!("Sec-WebSocket-Accept is not RFC 6455's"));
                }
                let signed_ok = match signatures.as_slice() {
                    [] => *mode != SignatureMode::Required,
                    [_] => *mode == SignatureMode::Off || single_signature_valid,
                    _ => *mode == SignatureMode::Off,
                };
                if !signed_ok {
                    violated(format_args!(
                        "accepted with mode {} and {} X-Twilio-Signature header(s) that do not \
                         match the policy URL {}",
                        mode.as_str(),
                        signatures.len(),
                        urls.signed_url
                    ));
                }
            }
        }
    }
    let [(_, required), (_, if_present), (_, off)] = &results;
    for (stricter, looser, what) in [
        (required, if_present, "required but not if-present"),
        (if_present, off, "if-present but not off"),
    ] {
        if let Ok(a) = stricter
            && looser.as_ref() != Ok(a)
        {
            violated(format_args!("accepted with {what}: {looser:?}"));
        }
    }
    UpgradeOutcome {
        required: required.is_ok(),
        if_present: if_present.is_ok(),
        off: off.is_ok(),
    }
}
