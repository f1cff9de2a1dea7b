//! The voice webhook decision for `POST {webhook-path}`: a pure function from the request to
//! "this is Twilio, for this call of the configured account" or the status to refuse with.
//!
//! Checks, in order (the first failure decides the status; the body of every rejection is
//! empty):
//! 1. the method is `POST` (`405`);
//! 2. the body is at most [`MAX_WEBHOOK_BODY_BYTES`] (`413`; the server also stops reading
//!    there);
//! 3. the body is `application/x-www-form-urlencoded` (`415`): Twilio's voice webhook always
//!    is, and a JSON body carries no `CallSid` to mint for (the signature tools still sign
//!    `bodySHA256` URLs: [`crate::signature`]);
//! 4. `X-Twilio-Signature` over `{public-url}{webhook-path}` plus the request's query string,
//!    with the form parameters, either port variant (`403`); a form that cannot be decoded
//!    cannot have been signed and is refused the same way;
//! 5. the form's `AccountSid` is present once and is the configured account, in constant
//!    time (`403`);
//! 6. the form's `CallSid` is present once and well formed (`400`).
//!
//! The server then mints the call's token through the replay store ([`crate::store::mint`]):
//! a retried webhook for a call whose token is still live gets the identical token; a call
//! that has already streamed gets none (`403`, like a bad signature: a captured webhook is
//! signed forever, since Twilio's signature carries no timestamp); a store that is full or
//! unreachable refuses (`503`). The answer ([`answer`]) is `200` with `Content-Type: text/xml`
//! and the TwiML of [`crate::wire::twiml::render`]:
//! `<Connect><Stream url="{ws(s) public url}{stream-path}">` with one
//! `<Parameter name="token" value="{token}" />`.

use std::fmt;

use crate::extract::TOKEN_PARAM;
use crate::limits::MAX_WEBHOOK_BODY_BYTES;
use crate::secret::{AuthToken, StreamToken};
use crate::sid::{AccountSid, CallSid, check_account_sid};
use crate::signature::{self, SignatureError};
use crate::store::{MintError, MintRefusal, StoreError};
use crate::wire::form;
use crate::wire::request::RequestHead;
use crate::wire::twiml::{self, Method, Response, Say, StreamTwiml, Track, TwimlError, Verb};

/// The TwiML media type.
pub const CONTENT_TYPE_XML: &str = "text/xml";

/// What the webhook decision needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct WebhookPolicy<'a> {
    /// `{public-url}{webhook-path}`: the URL Twilio signs, without query.
    pub signed_url: &'a str,
    /// The Twilio auth token.
    pub auth: &'a AuthToken,
    /// `TWILIO_ACCOUNT_SID`.
    pub account: &'a AccountSid,
}

/// Why a webhook was refused. For logs only; the peer sees a bare status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookReject {
    /// Not `POST` (`405`).
    Method,
    /// Body over the limit (`413`).
    TooLarge,
    /// The body is not `application/x-www-form-urlencoded` (`415`).
    UnsupportedMediaType,
    /// The body is a form that cannot be decoded, or has too many parameters (`403`).
    MalformedForm,
    /// The signature check failed (`403`).
    Signature(SignatureError),
    /// `AccountSid` missing, repeated, malformed or not the configured account (`403`).
    Account,
    /// `CallSid` missing, repeated or malformed (`400`).
    CallSid,
    /// The call has already streamed and is still remembered (`403`).
    CallAlreadyStreamed,
    /// The replay store refused for its own reasons: full (`503`) or unavailable (`503`).
    Store(StoreError),
    /// Issuing failed: randomness, a dropped key, or a TwiML configuration error (`500`).
    Internal,
}

impl WebhookReject {
    /// The HTTP status answered.
    pub fn status(self) -> u16 {
        match self {
            Self::Method => 405,
            Self::TooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::MalformedForm | Self::Signature(_) | Self::Account => 403,
            Self::CallAlreadyStreamed => 403,
            Self::CallSid => 400,
            Self::Store(_) => 503,
            Self::Internal => 500,
        }
    }

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::TooLarge => "too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::MalformedForm => "malformed_form",
            Self::Signature(e) => e.as_str(),
            Self::Account => "account_mismatch",
            Self::CallSid => "call_sid_invalid",
            Self::CallAlreadyStreamed => "call_already_streamed",
            Self::Store(e) => e.as_str(),
            Self::Internal => "internal",
        }
    }
}

impl From<MintError> for WebhookReject {
    fn from(e: MintError) -> Self {
        match e {
            MintError::Refused(MintRefusal::CallAlreadyStreamed) => Self::CallAlreadyStreamed,
            MintError::Store(e) => Self::Store(e),
            _ => Self::Internal,
        }
    }
}

impl fmt::Display for WebhookReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Method => f.write_str("method is not POST"),
            Self::TooLarge => f.write_str("body is too large"),
            Self::UnsupportedMediaType => {
                f.write_str("body is not application/x-www-form-urlencoded")
            }
            Self::MalformedForm => f.write_str("form body cannot be decoded"),
            Self::Signature(e) => write!(f, "webhook signature: {e}"),
            Self::Account => f.write_str("AccountSid is missing or not the configured account"),
            Self::CallSid => f.write_str("CallSid is missing or malformed"),
            Self::CallAlreadyStreamed => f.write_str(
                "the call has already streamed (a replayed webhook, or the call sent back by \
                 <Redirect>: see --streams-per-call)",
            ),
            Self::Store(e) => e.fmt(f),
            Self::Internal => f.write_str("token or TwiML could not be produced"),
        }
    }
}

/// A webhook that is Twilio's, for a call of the configured account.
#[derive(Clone, PartialEq, Eq)]
pub struct Verified {
    /// `AccountSid` (the configured account).
    pub account_sid: AccountSid,
    /// `CallSid`.
    pub call_sid: CallSid,
    /// Every form parameter, decoded, in the order received (`From`, `To`, ...).
    pub params: Vec<(String, String)>,
}

impl fmt::Debug for Verified {
    /// Parameter names only: values are phone numbers and the like.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Verified")
            .field("account_sid", &self.account_sid)
            .field("call_sid", &self.call_sid)
            .field("param_names", &names)
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

/// Decides whether a webhook is Twilio's, in the order given in the module documentation.
pub fn decide(
    req: &RequestHead,
    body: &[u8],
    policy: &WebhookPolicy<'_>,
) -> Result<Verified, WebhookReject> {
    if req.method != "POST" {
        return Err(WebhookReject::Method);
    }
    if body.len() > MAX_WEBHOOK_BODY_BYTES {
        return Err(WebhookReject::TooLarge);
    }
    let content_type = req.single_header("content-type").ok().flatten();
    if !is_form(content_type) {
        return Err(WebhookReject::UnsupportedMediaType);
    }
    let signed_url = match req.query() {
        Some(q) => format!("{}?{q}", policy.signed_url),
        None => policy.signed_url.to_owned(),
    };
    let header = req
        .single_header(signature::HEADER)
        .map_err(|_| WebhookReject::Signature(SignatureError::Malformed))?;
    let params = form::parse(body).ok_or(WebhookReject::MalformedForm)?;
    signature::validate(policy.auth, &signed_url, &params, None, header)
        .map_err(WebhookReject::Signature)?;

    let account_sid = single(&params, "AccountSid")
        .and_then(|a| AccountSid::parse(a).ok())
        .ok_or(WebhookReject::Account)?;
    check_account_sid(policy.account, &account_sid).map_err(|_| WebhookReject::Account)?;
    let call_sid = single(&params, "CallSid")
        .and_then(|c| CallSid::parse(c).ok())
        .ok_or(WebhookReject::CallSid)?;
    Ok(Verified {
        account_sid,
        call_sid,
        params,
    })
}

/// What the application wants around the stream of a call: everything in the answer except
/// the stream URL and the token, which streamguard always sets. The default is a bare
/// `<Connect><Stream>`.
///
/// Set the fields you need and leave the rest at their defaults ([`TwimlHook`] shows a
/// `<Say>` and a `<Parameter>`). A listen-only stream of both sides of the call, say:
///
/// ```
/// use streamguard::webhook::CallTwiml;
/// use streamguard::wire::twiml::{Say, Track, Verb};
///
/// let shape = CallTwiml {
///     say: Some(Say { text: "This call is recorded.".to_owned(), ..Say::default() }),
///     verb: Verb::Start,        // TwiML goes on after `<Start>` ...
///     track: Some(Track::Both), // (both tracks: `<Start>` only)
///     pause_after: Some(3600),  // ... so a `<Pause>` keeps the call up
///     ..CallTwiml::default()
/// };
/// # assert_eq!(shape.name, None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CallTwiml {
    /// `<Say>` before the stream.
    pub say: Option<Say>,
    /// `<Connect>` (bidirectional, the default) or `<Start>` (listen only).
    pub verb: Verb,
    /// `<Stream name>`.
    pub name: Option<String>,
    /// `<Stream track>` (only `inbound_track` under `<Connect>`).
    pub track: Option<Track>,
    /// `<Stream statusCallback>`.
    pub status_callback: Option<String>,
    /// `<Stream statusCallbackMethod>`.
    pub status_callback_method: Option<Method>,
    /// More `<Parameter>`s: they arrive in `start.customParameters` (on any instance). The
    /// name `token` is streamguard's.
    pub parameters: Vec<(String, String)>,
    /// `<Pause length>` after the verb, in seconds (keeps a `<Start>` call up).
    pub pause_after: Option<u32>,
}

/// Shapes the answer of each verified webhook. Called after the signature, the account and
/// the CallSid have been checked, and before the token is minted; the application sees every
/// form field (`From`, `To`, ...). A closure `Fn(&Verified) -> CallTwiml` is a hook; give it
/// to the server builder's `twiml`.
///
/// ```
/// use streamguard::webhook::{CallTwiml, TwimlHook, Verified};
/// use streamguard::wire::twiml::Say;
/// # use streamguard::sid::{AccountSid, CallSid};
///
/// // Greet the caller, and pass their number to the stream: a `<Parameter>` arrives in
/// // `start.customParameters` (`StartedStream::info`), on whichever instance takes the stream.
/// let hook = |call: &Verified| CallTwiml {
///     say: Some(Say { text: "Connecting you now.".to_owned(), ..Say::default() }),
///     parameters: vec![("caller".to_owned(), call.param("From").unwrap_or("").to_owned())],
///     ..CallTwiml::default()
/// };
/// // Server::builder(config).twiml(hook)
///
/// # let call = Verified {
/// #     account_sid: AccountSid::parse("AC0123456789abcdef0123456789abcdef")?,
/// #     call_sid: CallSid::parse("CA0123456789abcdef0123456789abcdef")?,
/// #     params: vec![("From".to_owned(), "+15550100".to_owned())],
/// # };
/// let shape = hook.twiml(&call); // `call`: a verified webhook with From=+15550100
/// assert_eq!(shape.parameters, [("caller".to_owned(), "+15550100".to_owned())]);
/// # Ok::<(), streamguard::sid::SidError>(())
/// ```
pub trait TwimlHook: Send + Sync + 'static {
    /// What to put around the stream of `call`.
    fn twiml(&self, call: &Verified) -> CallTwiml;
}

impl<F> TwimlHook for F
where
    F: Fn(&Verified) -> CallTwiml + Send + Sync + 'static,
{
    fn twiml(&self, call: &Verified) -> CallTwiml {
        self(call)
    }
}

/// The default hook: a bare `<Connect><Stream>`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BareStream;

impl TwimlHook for BareStream {
    fn twiml(&self, _call: &Verified) -> CallTwiml {
        CallTwiml::default()
    }
}

/// The TwiML that answers a verified webhook: what `shape` asks for, with
/// `<Stream url="{stream_url}">` and the call's token in `<Parameter name="token">` (after the
/// application's parameters). A `token` parameter of the application's own is refused
/// ([`TwimlError::DuplicateParameterName`]).
pub fn answer(
    stream_url: &str,
    token: &StreamToken,
    shape: &CallTwiml,
) -> Result<String, TwimlError> {
    let mut parameters = shape.parameters.clone();
    parameters.push((TOKEN_PARAM.to_owned(), token.as_str().to_owned()));
    twiml::render_response(&Response {
        say: shape.say.clone(),
        stream: StreamTwiml {
            verb: shape.verb,
            url: stream_url.to_owned(),
            name: shape.name.clone(),
            track: shape.track,
            status_callback: shape.status_callback.clone(),
            status_callback_method: shape.status_callback_method,
            parameters,
        },
        pause_after: shape.pause_after,
    })
}

impl Verified {
    /// The value of form field `name` (the first, if it repeats).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}
