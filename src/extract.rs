//! Where the stream token is found: the upgrade request's query, or `start.customParameters`.
//!
//! Twilio drops any query string from the `<Stream url>` (Twilio error 31920; `PROTOCOL.md`
//! §1), so real calls carry the token only in `start.customParameters.token`, filled from the
//! TwiML `<Parameter name="token">`. The query path exists for clients that are not Twilio
//! and for conformance tests; [`resolve_token`] makes sure the two can never disagree.
//!
//! Rules:
//! - a `token` query parameter that appears twice is ambiguous and an error, not "take the
//!   first";
//! - a query value is percent-decoded (`+` is a space, as in form encoding), must be UTF-8,
//!   non-empty and at most [`MAX_TOKEN_CHARS`] long;
//! - a token present in both places must be identical (compared in constant time);
//!   different values are an attacker signal and are rejected, never resolved in favour of
//!   either side.

use std::fmt;

use crate::limits::{MAX_REQUEST_TARGET_BYTES, MAX_TOKEN_CHARS};
use crate::wire::form;
use crate::wire::frames::StartFrame;

/// The name of the token parameter, in the query and in `customParameters`.
pub const TOKEN_PARAM: &str = "token";

/// Why no token could be taken from a request or message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExtractError {
    /// The request target is longer than [`MAX_REQUEST_TARGET_BYTES`].
    TargetTooLong,
    /// `token` appears more than once in the query.
    Ambiguous,
    /// A percent-escape is malformed, or the decoded bytes are not UTF-8.
    Encoding,
    /// The token is empty.
    Empty,
    /// The token is longer than [`MAX_TOKEN_CHARS`].
    TooLong,
    /// The query and `customParameters` both carry a token, and they differ.
    Conflict,
    /// No token anywhere.
    Missing,
}

impl ExtractError {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TargetTooLong => "token_target_too_long",
            Self::Ambiguous => "token_ambiguous",
            Self::Encoding => "token_bad_encoding",
            Self::Empty => "token_empty",
            Self::TooLong => "token_too_long",
            Self::Conflict => "token_conflict",
            Self::Missing => "token_missing",
        }
    }
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TargetTooLong => "request target is too long",
            Self::Ambiguous => "token appears more than once in the query",
            Self::Encoding => "token is not valid percent-encoded UTF-8",
            Self::Empty => "token is empty",
            Self::TooLong => "token is too long",
            Self::Conflict => "query token and customParameters token differ",
            Self::Missing => "no token in the query or customParameters",
        })
    }
}

impl std::error::Error for ExtractError {}

fn check_token_text(t: String) -> Result<String, ExtractError> {
    if t.is_empty() {
        return Err(ExtractError::Empty);
    }
    if t.len() > MAX_TOKEN_CHARS {
        return Err(ExtractError::TooLong);
    }
    Ok(t)
}

/// The `token` query parameter of an upgrade request target (`/path?token=...`), if any.
///
/// ```
/// use streamguard::extract::{token_from_request_target, ExtractError};
/// assert_eq!(token_from_request_target("/s?token=abc").unwrap().as_deref(), Some("abc"));
/// assert_eq!(token_from_request_target("/s").unwrap(), None);
/// assert_eq!(token_from_request_target("/s?token=a&token=a"), Err(ExtractError::Ambiguous));
/// ```
pub fn token_from_request_target(target: &str) -> Result<Option<String>, ExtractError> {
    if target.len() > MAX_REQUEST_TARGET_BYTES {
        return Err(ExtractError::TargetTooLong);
    }
    let without_fragment = target.split_once('#').map_or(target, |(t, _)| t);
    let Some((_, query)) = without_fragment.split_once('?') else {
        return Ok(None);
    };
    let mut found: Option<&str> = None;
    for (name, value) in form::pairs(query) {
        // Names are compared after decoding, so `%74oken` is also `token`.
        let name = form::decode(name).ok_or(ExtractError::Encoding)?;
        if name == TOKEN_PARAM {
            if found.is_some() {
                return Err(ExtractError::Ambiguous);
            }
            found = Some(value);
        }
    }
    match found {
        None => Ok(None),
        Some(raw) => {
            if raw.len() > MAX_TOKEN_CHARS.saturating_mul(3) {
                return Err(ExtractError::TooLong);
            }
            let t = form::decode(raw).ok_or(ExtractError::Encoding)?;
            check_token_text(t).map(Some)
        }
    }
}

/// `start.customParameters.token`, if present (bounded by the frame parser, checked again
/// here).
pub fn token_from_custom_parameters(start: &StartFrame) -> Result<Option<String>, ExtractError> {
    match start.start.custom_parameters.get(TOKEN_PARAM) {
        None => Ok(None),
        Some(t) => check_token_text(t.to_owned()).map(Some),
    }
}

/// The one token to verify, given what the request target and `customParameters` held.
///
/// | query | customParameters | result |
/// |---|---|---|
/// | none | none | `Missing` |
/// | `a` | none | `a` |
/// | none | `a` | `a` |
/// | `a` | `a` | `a` |
/// | `a` | `b` | `Conflict` |
pub fn resolve_token(
    from_url: Option<String>,
    from_custom: Option<String>,
) -> Result<String, ExtractError> {
    match (from_url, from_custom) {
        (None, None) => Err(ExtractError::Missing),
        (Some(t), None) | (None, Some(t)) => Ok(t),
        (Some(u), Some(c)) => {
            if constant_time_eq::constant_time_eq(u.as_bytes(), c.as_bytes()) {
                Ok(u)
            } else {
                Err(ExtractError::Conflict)
            }
        }
    }
}
