//! The pre-upgrade decision for `GET {stream-path}`: a pure function from the request head
//! to "upgrade" or "answer with this status". The server calls it before it sends anything,
//! and the `upgrade_request` fuzz target calls the same function.
//!
//! Checks, in order (the first failure decides the status):
//! 1. the request target's path is exactly the stream path (`404`), in origin form;
//! 2. the method is `GET` (`405`);
//! 3. the handshake is a valid WebSocket opening handshake (RFC 6455 §4.2.1): `Upgrade:
//!    websocket`, `Connection` containing `upgrade`, `Sec-WebSocket-Version: 13`, a
//!    `Sec-WebSocket-Key` that is base64 of 16 bytes, each header at most once (`400`);
//! 4. `X-Twilio-Signature`, by [`SignatureMode`]: the URL-only HMAC over
//!    `{ws(s) public url}{stream-path}` plus the request's query string if any, either port
//!    variant (`401`). The URL is the configured public URL, never one built from `Host` or
//!    `X-Forwarded-*`.
//!
//! Capacity (`503`) is checked by the server after this function accepts, so that requests
//! that would be refused anyway never hold a slot.
//!
//! A valid upgrade signature proves the request came from Twilio, but it is the same for
//! every call (the URL is the same), so it can be replayed: it never replaces the per-call
//! token checked by [`crate::session`].

use std::fmt;

use base64::Engine as _;

use crate::limits::MAX_REQUEST_TARGET_BYTES;
use crate::secret::AuthToken;
use crate::session::UrlToken;
use crate::signature::{self, SignatureError};
pub use crate::wire::request::{Repeated, RequestHead};

/// Whether the handshake must carry a valid `X-Twilio-Signature` (`--upgrade-signature`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum SignatureMode {
    /// `required`: missing or invalid is refused.
    #[default]
    Required,
    /// `if-present`: invalid is refused, missing is allowed.
    IfPresent,
    /// `off`: not checked (the token still is).
    Off,
}

impl SignatureMode {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::IfPresent => "if-present",
            Self::Off => "off",
        }
    }

    /// Parses the command-line spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Required, Self::IfPresent, Self::Off]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// What the upgrade decision needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct UpgradePolicy<'a> {
    /// The route, e.g. `/voice/stream`.
    pub stream_path: &'a str,
    /// `{ws(s) public url}{stream-path}`: the URL Twilio signs, without query.
    pub signed_url: &'a str,
    /// The Twilio auth token.
    pub auth: &'a AuthToken,
    /// `--upgrade-signature`.
    pub mode: SignatureMode,
}

/// Why a handshake is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// No `Upgrade: websocket`.
    UpgradeHeader,
    /// `Connection` does not contain `upgrade`.
    ConnectionHeader,
    /// `Sec-WebSocket-Version` is not `13`.
    Version,
    /// `Sec-WebSocket-Key` is missing or not base64 of 16 bytes.
    Key,
    /// A handshake header appears more than once.
    RepeatedHeader,
}

/// Why an upgrade request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeReject {
    /// Not the stream path (`404`).
    NotFound,
    /// Not `GET` (`405`).
    Method,
    /// Not a valid WebSocket handshake (`400`).
    Handshake(HandshakeError),
    /// The signature check failed (`401`).
    Signature(SignatureError),
    /// `--max-pending` reached (`503`; decided by the server).
    PendingFull,
    /// `--max-pending-per-ip` reached (`503`; decided by the server).
    PendingPerIpFull,
    /// `--max-streams` reached (`503`; decided by the server).
    StreamsFull,
}

impl UpgradeReject {
    /// The HTTP status answered.
    pub fn status(self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::Method => 405,
            Self::Handshake(_) => 400,
            Self::Signature(_) => 401,
            Self::PendingFull | Self::PendingPerIpFull | Self::StreamsFull => 503,
        }
    }

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Method => "method",
            Self::Handshake(_) => "bad_handshake",
            Self::Signature(SignatureError::Missing) => "upgrade_signature_missing",
            Self::Signature(_) => "upgrade_signature_invalid",
            Self::PendingFull => "pending_full",
            Self::PendingPerIpFull => "pending_per_ip_full",
            Self::StreamsFull => "streams_full",
        }
    }
}

impl fmt::Display for UpgradeReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("not the stream path"),
            Self::Method => f.write_str("method is not GET"),
            Self::Handshake(e) => write!(f, "malformed WebSocket handshake: {e:?}"),
            Self::Signature(e) => write!(f, "upgrade signature: {e}"),
            Self::PendingFull => f.write_str("too many pending connections"),
            Self::PendingPerIpFull => f.write_str("too many pending connections from this IP"),
            Self::StreamsFull => f.write_str("too many streams"),
        }
    }
}

/// An accepted upgrade: what the server needs to answer `101` and run the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    pub accept_key: String,
    /// The token in the request target, if any.
    pub url_token: UrlToken,
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn check_handshake(req: &RequestHead) -> Result<String, HandshakeError> {
    let one = |name| {
        req.single_header(name)
            .map_err(|Repeated| HandshakeError::RepeatedHeader)
    };
    if !one("upgrade")?.is_some_and(|v| has_token(v, "websocket")) {
        return Err(HandshakeError::UpgradeHeader);
    }
    if !req
        .header_values("connection")
        .any(|v| has_token(v, "upgrade"))
    {
        return Err(HandshakeError::ConnectionHeader);
    }
    if one("sec-websocket-version")?.map(<[u8]>::trim_ascii) != Some(b"13".as_slice()) {
        return Err(HandshakeError::Version);
    }
    let key = one("sec-websocket-key")?
        .map(<[u8]>::trim_ascii)
        .ok_or(HandshakeError::Key)?;
    let mut decoded = [0u8; 16];
    match base64::engine::general_purpose::STANDARD.decode_slice(key, &mut decoded) {
        Ok(16) => {}
        _ => return Err(HandshakeError::Key),
    }
    Ok(tungstenite::handshake::derive_accept_key(key))
}

/// Decides whether to upgrade, in the order given in the module documentation.
pub fn decide(req: &RequestHead, policy: &UpgradePolicy<'_>) -> Result<Accepted, UpgradeReject> {
    if req.target.len() > MAX_REQUEST_TARGET_BYTES || req.path() != policy.stream_path {
        return Err(UpgradeReject::NotFound);
    }
    if req.method != "GET" {
        return Err(UpgradeReject::Method);
    }
    let accept_key = check_handshake(req).map_err(UpgradeReject::Handshake)?;

    if policy.mode != SignatureMode::Off {
        let header = req
            .single_header(signature::HEADER)
            .map_err(|Repeated| UpgradeReject::Signature(SignatureError::Malformed))?;
        if header.is_some() || policy.mode == SignatureMode::Required {
            let url = match req.query() {
                Some(q) => format!("{}?{q}", policy.signed_url),
                None => policy.signed_url.to_owned(),
            };
            signature::validate_url_only(policy.auth, &url, header)
                .map_err(UpgradeReject::Signature)?;
        }
    }
    Ok(Accepted {
        accept_key,
        url_token: UrlToken::from_target(&req.target),
    })
}
