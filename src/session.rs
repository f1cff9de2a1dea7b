//! The per-connection state machine of an upgraded media stream. Pure: no I/O, no clock; the
//! server feeds it WebSocket events and the time, and carries out the [`Output`] it returns.
//!
//! ```text
//!             connected (once, optional)
//!            ┌───────┐
//!            ▼       │  start + verified token           redeemed
//!     AwaitingStart ─┴─────────────────────▶ Redeeming ───────────▶ Streaming ──stop──▶ Closed
//!            │                                   │                      │
//!            └── anything else, deadline ──▶ Closed ◀── refused ────────┘ (protocol error)
//! ```
//!
//! Invariants (each is checked by the property tests and the `session` fuzz target):
//! - no media, mark, dtmf or stop reaches the application before [`Output::Authenticated`],
//!   and that comes only after the server reported a successful redemption;
//! - at most one `start` is ever accepted, and only with a token that verifies for that
//!   `start.callSid` and `start.accountSid`, for the configured account, redeemed once;
//! - the session asks the server to send nothing before authentication except a close (the
//!   WebSocket layer answers a Ping with the Pong RFC 6455 §5.5.2 requires, echoing only the
//!   peer's own bytes, before that close: a ping before `start` closes the connection);
//! - once [`Session::Closed`], every event leaves it closed and produces nothing;
//! - every close carries the code its cause specifies: 1008 for every authentication or
//!   protocol failure (one generic reason on the wire, the precise [`Reason`] for logs),
//!   1003 for a binary frame, 1009 for an oversized message, 1000 after `stop`.
//!
//! On `start` the checks run in this order: the token is taken from `customParameters` and
//! from the upgrade URL and resolved ([`crate::extract`]); the AccountSid is compared with
//! the configured one ([`crate::sid::check_account_sid`]); the token is verified for
//! `start.accountSid` and `start.callSid` ([`crate::token::verify`]). The session then asks
//! the server to redeem it ([`Output::Redeem`]): the server reserves a stream slot, redeems the
//! token in the replay store ([`crate::store`], in memory or shared), and reports the result
//! ([`Event::Redeemed`]). Only a successful redemption makes the state `Streaming`.
//!
//! While a redemption is outstanding the server reads nothing more from the connection, so a
//! `media` frame that arrived in the same read as `start` waits in the socket and is handled
//! after the result, never dropped and never handled as unauthenticated. An event other than
//! the result (or the time, or the peer going away) while redeeming is a server bug and closes
//! the connection ([`Reason::OutOfOrder`]), as does a result nobody asked for.

use std::fmt;
use std::time::Duration;

use crate::extract::{self, ExtractError, TOKEN_PARAM};
use crate::secret::KeySet;
use crate::sid::{AccountSid, CallSid, StreamSid, check_account_sid};
use crate::store::RedeemError;
use crate::time::UnixTime;
use crate::token::{self, Claims, TokenError};
use crate::wire::frames::{
    CustomParameters, DtmfFrame, FrameError, Inbound, MarkFrame, MediaFormat, MediaFrame,
    StartFrame, StopFrame, Tracks, parse_inbound,
};

/// A WebSocket close code (RFC 6455 §7.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the stream ended normally (`stop`).
    Normal,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1003: a binary frame (Twilio's protocol is text only; Twilio error 31950).
    Unsupported,
    /// 1008: any authentication or protocol failure.
    Policy,
    /// 1009: a message over the size limit.
    TooBig,
    /// 1011: the server failed (e.g. the application could not keep up).
    Internal,
}

impl CloseCode {
    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::Unsupported => 1003,
            Self::Policy => 1008,
            Self::TooBig => 1009,
            Self::Internal => 1011,
        }
    }

    /// The reason text sent with this code: one fixed string per code, never the cause.
    pub fn wire_reason(self) -> &'static str {
        match self {
            Self::Normal => "",
            Self::GoingAway => "going away",
            Self::Unsupported => "unsupported data",
            Self::Policy => "policy violation",
            Self::TooBig => "message too big",
            Self::Internal => "internal error",
        }
    }
}

/// The precise reason a connection was closed, for logs and metrics. Never sent to the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// A text message that is not a valid Twilio message.
    Frame(FrameError),
    /// No usable token (missing, ambiguous, conflicting ...).
    Extract(ExtractError),
    /// `start.accountSid` is not the configured account.
    AccountMismatch,
    /// The token failed verification.
    Token(TokenError),
    /// The replay store refused the token or could not answer.
    Redeem(RedeemError),
    /// `--max-streams` was reached when the stream would have authenticated (its token is
    /// not spent).
    StreamsFull,
    /// An event the state does not expect from the server (a frame while redeeming, a
    /// redemption result nobody asked for): a bug in the server, not the peer.
    OutOfOrder,
    /// No valid `start` before the deadline.
    StartTimeout,
    /// A `media`, `mark`, `dtmf`, `stop` or unknown event before `start`.
    EventBeforeStart,
    /// A second `connected`, or `connected` after `start`.
    UnexpectedConnected,
    /// A second `start`.
    SecondStart,
    /// A message for another `streamSid` than the one started.
    StreamSidMismatch,
    /// A binary frame.
    Binary,
    /// A message over the size limit.
    TooLarge,
    /// A ping or pong before `start` (Twilio sends none).
    ControlBeforeStart,
    /// A frame the WebSocket layer could not decode.
    Malformed,
}

impl Reason {
    /// A stable label for metrics (`streamguard_streams_rejected_total{reason=...}`) and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Frame(e) => e.as_str(),
            Self::Extract(e) => e.as_str(),
            Self::AccountMismatch => "account_mismatch",
            Self::Token(e) => e.as_str(),
            Self::Redeem(e) => e.as_str(),
            Self::StreamsFull => "streams_full",
            Self::OutOfOrder => "event_out_of_order",
            Self::StartTimeout => "start_timeout",
            Self::EventBeforeStart => "event_before_start",
            Self::UnexpectedConnected => "unexpected_connected",
            Self::SecondStart => "second_start",
            Self::StreamSidMismatch => "stream_sid_mismatch",
            Self::Binary => "binary_frame",
            Self::TooLarge => "message_too_large",
            Self::ControlBeforeStart => "control_before_start",
            Self::Malformed => "ws_malformed",
        }
    }

    /// The close code this reason is sent with.
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::Binary => CloseCode::Unsupported,
            Self::TooLarge | Self::Frame(FrameError::TooLarge) => CloseCode::TooBig,
            _ => CloseCode::Policy,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(e) => e.fmt(f),
            Self::Extract(e) => e.fmt(f),
            Self::AccountMismatch => f.write_str("start.accountSid is not the configured account"),
            Self::Token(e) => e.fmt(f),
            Self::Redeem(e) => e.fmt(f),
            Self::StreamsFull => f.write_str("too many streams"),
            Self::OutOfOrder => f.write_str("event out of order (server bug)"),
            Self::StartTimeout => f.write_str("no valid start before the deadline"),
            Self::EventBeforeStart => f.write_str("event before start"),
            Self::UnexpectedConnected => f.write_str("unexpected connected message"),
            Self::SecondStart => f.write_str("second start message"),
            Self::StreamSidMismatch => f.write_str("message for another stream"),
            Self::Binary => f.write_str("binary frame"),
            Self::TooLarge => f.write_str("message over the size limit"),
            Self::ControlBeforeStart => f.write_str("ping or pong before start"),
            Self::Malformed => f.write_str("undecodable WebSocket frame"),
        }
    }
}

/// The token found in the upgrade request target, if any, or why it was unusable. Redacting
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UrlToken(Result<Option<String>, ExtractError>);

impl UrlToken {
    /// No token in the URL (the case for every real Twilio connection).
    pub const NONE: Self = Self(Ok(None));

    /// Takes the token from an upgrade request target (`/path?query`).
    pub fn from_target(target: &str) -> Self {
        Self(extract::token_from_request_target(target))
    }
}

impl fmt::Debug for UrlToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Ok(None) => f.write_str("UrlToken(none)"),
            Ok(Some(_)) => f.write_str("UrlToken(..redacted..)"),
            Err(e) => write!(f, "UrlToken({e:?})"),
        }
    }
}

/// What the application learns about an authenticated stream. The `token` parameter is
/// removed from `custom_parameters`: it has been used and is nobody's business.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamInfo {
    /// The configured account (equal to `start.accountSid`).
    pub account_sid: AccountSid,
    /// The call the token was issued for.
    pub call_sid: CallSid,
    /// This stream.
    pub stream_sid: StreamSid,
    /// `start.tracks`.
    pub tracks: Tracks,
    /// `start.customParameters` without `token`.
    pub custom_parameters: CustomParameters,
    /// `start.mediaFormat`.
    pub media_format: Option<MediaFormat>,
}

/// What the session needs to check a `start`: immutable configuration only. The one piece of
/// shared state, the replay store, is the server's to consult ([`Output::Redeem`]).
#[derive(Clone, Copy, Debug)]
pub struct AuthContext<'a> {
    /// Keys that verify tokens.
    pub keys: &'a KeySet,
    /// The configured account (`TWILIO_ACCOUNT_SID`).
    pub expected_account: &'a AccountSid,
    /// Largest text message accepted, in bytes.
    pub max_message_bytes: usize,
}

/// A verified token the server must redeem before the stream may authenticate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Redemption {
    /// `start.accountSid` (the configured account).
    pub account_sid: AccountSid,
    /// `start.callSid`, the call the token verified for.
    pub call_sid: CallSid,
    /// What the token says.
    pub claims: Claims,
}

/// Why the server could not redeem, as it reports it in [`Event::Redeemed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedeemFailure {
    /// No stream slot was free (`--max-streams`); the store was not asked.
    StreamsFull,
    /// The store refused or could not answer.
    Store(RedeemError),
}

/// Something that happened on the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary,
    /// The transport refused a message over the size limit.
    TooLarge,
    /// A WebSocket ping or pong.
    Control,
    /// The transport could not decode a frame (invalid UTF-8 text, protocol violation).
    Malformed,
    /// Time passed (the `now` argument says how much).
    Tick,
    /// The peer closed the connection or it broke.
    PeerClosed,
    /// The server carried out the [`Output::Redeem`] it was asked for, with this result.
    Redeemed(Result<(), RedeemFailure>),
}

/// What the server must do after an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Nothing.
    Nothing,
    /// Reserve a stream slot, redeem this token in the replay store, and report the result
    /// with [`Event::Redeemed`]; read nothing more from the connection until then.
    Redeem(Redemption),
    /// The stream is authenticated: create the application's handler for it.
    Authenticated(Box<StreamInfo>),
    /// Hand audio to the application.
    Media(MediaFrame<'a>),
    /// Hand a key press to the application.
    Dtmf(DtmfFrame),
    /// Hand a played mark to the application.
    Mark(MarkFrame),
    /// The stream has ended: tell the application and close with 1000.
    Stop(StopFrame),
    /// Close the connection with `reason.close_code()` and its generic wire reason.
    Close(Reason),
}

impl Output<'_> {
    /// The same output owning what it borrowed from the message text (a `media` frame's
    /// strings), to keep past the message.
    pub fn into_owned(self) -> Output<'static> {
        match self {
            Self::Nothing => Output::Nothing,
            Self::Redeem(r) => Output::Redeem(r),
            Self::Authenticated(i) => Output::Authenticated(i),
            Self::Media(m) => Output::Media(m.into_owned()),
            Self::Dtmf(d) => Output::Dtmf(d),
            Self::Mark(m) => Output::Mark(m),
            Self::Stop(s) => Output::Stop(s),
            Self::Close(r) => Output::Close(r),
        }
    }
}

/// The state of one connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Session {
    /// Upgraded, not yet authenticated.
    AwaitingStart {
        /// When the connection is closed if no valid `start` has come.
        deadline: UnixTime,
        /// Whether `connected` has been seen.
        connected_seen: bool,
        /// The token from the upgrade URL.
        url_token: UrlToken,
    },
    /// The token verified; waiting for the server to redeem it.
    Redeeming(Box<StreamInfo>),
    /// Authenticated.
    Streaming(Box<StreamInfo>),
    /// Finished; nothing more happens.
    Closed,
}

impl Session {
    /// A session for a connection upgraded at `now`, which must send a valid `start` within
    /// `start_timeout`.
    pub fn new(now: UnixTime, start_timeout: Duration, url_token: UrlToken) -> Self {
        Self::AwaitingStart {
            deadline: now.saturating_add(start_timeout),
            connected_seen: false,
            url_token,
        }
    }

    /// Whether the stream is authenticated.
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Self::Streaming(_))
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }

    /// The start deadline, while one applies.
    pub fn deadline(&self) -> Option<UnixTime> {
        match self {
            Self::AwaitingStart { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// Whether a redemption is outstanding (the server must read nothing until it reports).
    pub fn is_redeeming(&self) -> bool {
        matches!(self, Self::Redeeming(_))
    }

    /// Consumes the state and one event at time `now`; returns the next state and what to do.
    pub fn handle<'a>(
        self,
        event: Event<'a>,
        now: UnixTime,
        ctx: &AuthContext<'_>,
    ) -> (Self, Output<'a>) {
        let close = |reason| (Self::Closed, Output::Close(reason));
        match (self, event) {
            (Self::Closed, _) => (Self::Closed, Output::Nothing),
            (Self::Redeeming(_), Event::PeerClosed) => (Self::Closed, Output::Nothing),
            (Self::Redeeming(info), Event::Tick) => (Self::Redeeming(info), Output::Nothing),
            (Self::Redeeming(info), Event::Redeemed(Ok(()))) => {
                (Self::Streaming(info.clone()), Output::Authenticated(info))
            }
            (Self::Redeeming(_), Event::Redeemed(Err(RedeemFailure::StreamsFull))) => {
                close(Reason::StreamsFull)
            }
            (Self::Redeeming(_), Event::Redeemed(Err(RedeemFailure::Store(e)))) => {
                close(Reason::Redeem(e))
            }
            (Self::Redeeming(_), _) | (_, Event::Redeemed(_)) => close(Reason::OutOfOrder),
            (state, event) => state.handle_frame(event, now, ctx),
        }
    }

    /// [`Self::handle`] for a state that awaits `start` or streams, and an event that is not a
    /// redemption result.
    fn handle_frame<'a>(
        self,
        event: Event<'a>,
        now: UnixTime,
        ctx: &AuthContext<'_>,
    ) -> (Self, Output<'a>) {
        let close = |reason| (Self::Closed, Output::Close(reason));
        match event {
            Event::PeerClosed => return (Self::Closed, Output::Nothing),
            Event::Binary => return close(Reason::Binary),
            Event::TooLarge => return close(Reason::TooLarge),
            Event::Malformed => return close(Reason::Malformed),
            Event::Control if !self.is_authenticated() => return close(Reason::ControlBeforeStart),
            Event::Control => return (self, Output::Nothing),
            Event::Tick | Event::Text(_) => {}
            Event::Redeemed(_) => return close(Reason::OutOfOrder),
        }
        if let Self::AwaitingStart { deadline, .. } = &self
            && now >= *deadline
        {
            return close(Reason::StartTimeout);
        }
        let Event::Text(text) = event else {
            return (self, Output::Nothing);
        };
        let msg = match parse_inbound(text, ctx.max_message_bytes) {
            Ok(m) => m,
            Err(e) => return close(Reason::Frame(e)),
        };
        match self {
            Self::Closed | Self::Redeeming(_) => close(Reason::OutOfOrder),
            Self::AwaitingStart {
                deadline,
                connected_seen,
                url_token,
            } => match msg {
                Inbound::Connected(_) if !connected_seen => (
                    Self::AwaitingStart {
                        deadline,
                        connected_seen: true,
                        url_token,
                    },
                    Output::Nothing,
                ),
                Inbound::Connected(_) => close(Reason::UnexpectedConnected),
                Inbound::Start(start) => match authenticate(&start, url_token, now, ctx) {
                    Ok((info, redemption)) => (Self::Redeeming(info), Output::Redeem(redemption)),
                    Err(reason) => close(reason),
                },
                Inbound::Media(_)
                | Inbound::Dtmf(_)
                | Inbound::Mark(_)
                | Inbound::Stop(_)
                | Inbound::Unknown => close(Reason::EventBeforeStart),
            },
            Self::Streaming(info) => {
                if msg.stream_sid().is_some_and(|s| *s != info.stream_sid) {
                    return close(Reason::StreamSidMismatch);
                }
                match msg {
                    Inbound::Media(m) => (Self::Streaming(info), Output::Media(m)),
                    Inbound::Dtmf(d) => (Self::Streaming(info), Output::Dtmf(d)),
                    Inbound::Mark(m) => (Self::Streaming(info), Output::Mark(m)),
                    Inbound::Stop(s) => (Self::Closed, Output::Stop(s)),
                    Inbound::Start(_) => close(Reason::SecondStart),
                    Inbound::Connected(_) => close(Reason::UnexpectedConnected),
                    // An event this build does not know, from an authenticated peer: ignored,
                    // so a message Twilio adds later does not drop calls.
                    Inbound::Unknown => (Self::Streaming(info), Output::Nothing),
                }
            }
        }
    }
}

/// The checks on `start`, in the order the module documentation gives, up to the redemption.
fn authenticate(
    start: &StartFrame,
    url_token: UrlToken,
    now: UnixTime,
    ctx: &AuthContext<'_>,
) -> Result<(Box<StreamInfo>, Redemption), Reason> {
    let from_url = url_token.0.map_err(Reason::Extract)?;
    let from_custom = extract::token_from_custom_parameters(start).map_err(Reason::Extract)?;
    let token = extract::resolve_token(from_url, from_custom).map_err(Reason::Extract)?;
    let body = &start.start;
    check_account_sid(ctx.expected_account, &body.account_sid)
        .map_err(|_| Reason::AccountMismatch)?;
    let claims = token::verify(ctx.keys, &token, &body.account_sid, &body.call_sid, now)
        .map_err(Reason::Token)?;
    let info = Box::new(StreamInfo {
        account_sid: body.account_sid,
        call_sid: body.call_sid,
        stream_sid: body.stream_sid,
        tracks: body.tracks.clone(),
        custom_parameters: body.custom_parameters.without(TOKEN_PARAM),
        media_format: body.media_format.clone(),
    });
    let redemption = Redemption {
        account_sid: body.account_sid,
        call_sid: body.call_sid,
        claims,
    };
    Ok((info, redemption))
}
