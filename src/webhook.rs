//! The voice webhook decision for `POST {webhook-path}`: a pure function from the request to
//! the response (time, randomness and the token ledger are arguments).
//!
//! Checks, in order (the first failure decides the status; the body of every rejection is
//! empty):
//! 1. the method is `POST` (`405`);
//! 2. the body is at most [`MAX_WEBHOOK_BODY_BYTES`] (`413`; the server also stops reading
//!    there);
//! 3. `X-Twilio-Signature` over `{public-url}{webhook-path}` plus the request's query string,
//!    with the form parameters, either port variant (`403`). A body that is not
//!    `application/x-www-form-urlencoded` is validated as a raw body against `bodySHA256`;
//!    a form that cannot be decoded cannot have been signed and is refused the same way;
//! 4. the form's `AccountSid` is present once and is the configured account, in constant
//!    time (`403`);
//! 5. the form's `CallSid` is present once and well formed (`400`).
//!
//! Then the token is minted through the [`TokenLedger`], so a retried or replayed webhook for
//! a call whose token is still live gets the identical token, and the answer is `200` with
//! `Content-Type: text/xml` and the TwiML of [`crate::wire::twiml::render`]:
//! `<Connect><Stream url="{ws(s) public url}{stream-path}">` with one
//! `<Parameter name="token" value="{token}" />`.

use std::fmt;
use std::time::Duration;

use ring::rand::SecureRandom;

use crate::extract::TOKEN_PARAM;
use crate::limits::MAX_WEBHOOK_BODY_BYTES;
use crate::replay::{MintError, TokenLedger};
use crate::secret::{AuthToken, KeySet};
use crate::sid::{AccountSid, CallSid, check_account_sid};
use crate::signature::{self, SignatureError};
use crate::time::UnixTime;
use crate::wire::form;
use crate::wire::request::RequestHead;
use crate::wire::twiml::{self, StreamTwiml};

/// The TwiML media type.
pub const CONTENT_TYPE_XML: &str = "text/xml";

/// What the webhook decision needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct WebhookPolicy<'a> {
    /// `{public-url}{webhook-path}`: the URL Twilio signs, without query.
    pub signed_url: &'a str,
    /// `{ws(s) public url}{stream-path}`: the `<Stream url>`.
    pub stream_url: &'a str,
    /// The Twilio auth token.
    pub auth: &'a AuthToken,
    /// `TWILIO_ACCOUNT_SID`.
    pub account: &'a AccountSid,
    /// The keys that issue tokens.
    pub keys: &'a KeySet,
    /// `--token-ttl`.
    pub token_ttl: Duration,
}

/// Why a webhook was refused. For logs only; the peer sees a bare status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookReject {
    /// Not `POST` (`405`).
    Method,
    /// Body over the limit (`413`).
    TooLarge,
    /// The body is a form that cannot be decoded, or has too many parameters (`403`).
    MalformedForm,
    /// The signature check failed (`403`).
    Signature(SignatureError),
    /// `AccountSid` missing, repeated, malformed or not the configured account (`403`).
    Account,
    /// `CallSid` missing, repeated or malformed (`400`).
    CallSid,
    /// The token ledger is full of live tokens (`503`).
    LedgerFull,
    /// Issuing failed: randomness or a TwiML configuration error (`500`).
    Internal,
}

impl WebhookReject {
    /// The HTTP status answered.
    pub fn status(self) -> u16 {
        match self {
            Self::Method => 405,
            Self::TooLarge => 413,
            Self::MalformedForm | Self::Signature(_) | Self::Account => 403,
            Self::CallSid => 400,
            Self::LedgerFull => 503,
            Self::Internal => 500,
        }
    }

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::TooLarge => "too_large",
            Self::MalformedForm => "malformed_form",
            Self::Signature(e) => e.as_str(),
            Self::Account => "account_mismatch",
            Self::CallSid => "call_sid_invalid",
            Self::LedgerFull => "ledger_full",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for WebhookReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Method => f.write_str("method is not POST"),
            Self::TooLarge => f.write_str("body is too large"),
            Self::MalformedForm => f.write_str("form body cannot be decoded"),
            Self::Signature(e) => write!(f, "webhook signature: {e}"),
            Self::Account => f.write_str("AccountSid is missing or not the configured account"),
            Self::CallSid => f.write_str("CallSid is missing or malformed"),
            Self::LedgerFull => f.write_str("token ledger is full"),
            Self::Internal => f.write_str("token or TwiML could not be produced"),
        }
    }
}

/// A successful webhook: the TwiML to answer with.
#[derive(Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The call the token was minted for (for logs).
    pub call_sid: CallSid,
    /// The response body (contains the token: never log it).
    pub twiml: String,
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepted")
            .field("call_sid", &self.call_sid)
            .field("twiml", &"..redacted..")
            .finish()
    }
}

fn is_form(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|ct| {
        let essence = ct.split(|&b| b == b';').next().unwrap_or_default();
        essence
            .trim_ascii()
            .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
    })
}

fn single<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut values = params
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str());
    match (values.next(), values.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    }
}

/// Decides the webhook response, in the order given in the module documentation.
pub fn decide(
    req: &RequestHead,
    body: &[u8],
    policy: &WebhookPolicy<'_>,
    ledger: &TokenLedger,
    now: UnixTime,
    rng: &dyn SecureRandom,
) -> Result<Accepted, WebhookReject> {
    if req.method != "POST" {
        return Err(WebhookReject::Method);
    }
    if body.len() > MAX_WEBHOOK_BODY_BYTES {
        return Err(WebhookReject::TooLarge);
    }
    let signed_url = match req.query() {
        Some(q) => format!("{}?{q}", policy.signed_url),
        None => policy.signed_url.to_owned(),
    };
    let header = req
        .single_header(signature::HEADER)
        .map_err(|_| WebhookReject::Signature(SignatureError::Malformed))?;
    let content_type = req.single_header("content-type").ok().flatten();
    let params = if is_form(content_type) {
        let params = form::parse(body).ok_or(WebhookReject::MalformedForm)?;
        signature::validate(policy.auth, &signed_url, &params, None, header)
            .map_err(WebhookReject::Signature)?;
        params
    } else {
        signature::validate::<&str, &str>(policy.auth, &signed_url, &[], Some(body), header)
            .map_err(WebhookReject::Signature)?;
        Vec::new()
    };

    let account = single(&params, "AccountSid")
        .and_then(|a| AccountSid::parse(a).ok())
        .ok_or(WebhookReject::Account)?;
    check_account_sid(policy.account, &account).map_err(|_| WebhookReject::Account)?;
    let call_sid = single(&params, "CallSid")
        .and_then(|c| CallSid::parse(c).ok())
        .ok_or(WebhookReject::CallSid)?;

    let token = ledger
        .mint(policy.keys, &account, &call_sid, now, policy.token_ttl, rng)
        .map_err(|e| match e {
            MintError::Full => WebhookReject::LedgerFull,
            _ => WebhookReject::Internal,
        })?;
    let twiml = twiml::render(
        &StreamTwiml::connect(policy.stream_url).parameter(TOKEN_PARAM, token.as_str()),
    )
    .map_err(|_| WebhookReject::Internal)?;
    Ok(Accepted { call_sid, twiml })
}
