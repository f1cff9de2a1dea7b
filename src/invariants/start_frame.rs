//! Target `start_frame`: one WebSocket text message, the first on a fresh connection.

use crate::limits::{DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_START_TIMEOUT};
use crate::session::{AuthContext, Event, Output, Session, UrlToken};
use crate::token;
use crate::wire::frames::Inbound;

use super::Crate;
use super::checks::{
    Redeemed, SessionCode, check_authenticated, check_sid_text, close_code_of, custom_token_of,
    handle_with_store,
};
use super::fixtures::{NOW, STREAM_PATH, fixture_store, fixtures, violated};

#[cfg(doc)]
use super::fixtures::TOKEN_KEY;
#[cfg(doc)]
use crate::wire::frames;

/// What a `start_frame` input reached, for tests that check the corpus covers the accepted
/// path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    /// Not UTF-8: the WebSocket layer refuses it before the parser sees it.
    NotText,
    /// Refused by the parser.
    Unparsed,
    /// Parsed, but not a `start`.
    OtherMessage,
    /// A `start` that was refused.
    StartRefused,
    /// A `start` that authenticated the stream.
    Authenticated,
}

/// Target `start_frame`: `data` as one WebSocket text message, the first one on a fresh
/// connection, into [`frames::parse_inbound`] and [`Session::handle`] (with the server's
/// default message limit and the fixture replay store).
///
/// Invariants:
/// - parsing is deterministic, and a parsed message re-encodes to JSON that parses to the
///   same message;
/// - when the media fast path recognises the text, the general parser (serde_json) parses it
///   to the same frame;
/// - a parsed `start` has valid SIDs and one `streamSid`;
/// - a session that authenticates does so only for a `start`, for the configured account,
///   with a live token issued with [`TOKEN_KEY`] for exactly `start.accountSid` and
///   `start.callSid` (and that token verifies for no other call);
/// - anything else is either ignored (`connected`) or closes with 1008 or 1009.
///
/// ```
/// use streamguard::invariants::{self, StartOutcome, StartSpec};
/// let start = invariants::start_json(&StartSpec::valid());
/// assert_eq!(invariants::start_frame(start.as_bytes()), StartOutcome::Authenticated);
/// assert_eq!(invariants::start_frame(b"{}"), StartOutcome::Unparsed);
/// ```
pub fn start_frame(data: &[u8]) -> StartOutcome {
    start_frame_with(&Crate, data)
}

/// [`start_frame`] over `code`.
pub fn start_frame_with<C: SessionCode + ?Sized>(code: &C, data: &[u8]) -> StartOutcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return StartOutcome::NotText;
    };
    let parsed = code.parse_inbound(text, DEFAULT_MAX_MESSAGE_BYTES);
    if parsed != code.parse_inbound(text, DEFAULT_MAX_MESSAGE_BYTES) {
        violated(format_args!("parse_inbound is not deterministic"));
    }
    if let Some(fast) = code.parse_media_fast(text) {
        let general = crate::wire::frames::parse_inbound_general(text, usize::MAX);
        if general != Ok(Inbound::Media(fast.clone())) {
            violated(format_args!(
                "the media fast path gave {fast:?} where the general parser gave {general:?}"
            ));
        }
    }
    if let Ok(msg) = &parsed {
        let json = match serde_json::to_string(msg) {
            Ok(j) => j,
            Err(e) => violated(format_args!("a parsed message does not re-encode: {e}")),
        };
        // Re-encoding adds defaulted fields, so it may be longer than the limit: no limit.
        match code.parse_inbound(&json, usize::MAX) {
            Ok(again) if again == *msg => {}
            other => violated(format_args!(
                "re-encoded message {json:?} parses to {other:?}, not {msg:?}"
            )),
        }
        if let Inbound::Start(s) = msg {
            if s.stream_sid != s.start.stream_sid {
                violated(format_args!("a start with two streamSids was parsed"));
            }
            check_sid_text("accountSid", s.start.account_sid.as_str(), "AC");
            check_sid_text("callSid", s.start.call_sid.as_str(), "CA");
            check_sid_text("streamSid", s.start.stream_sid.as_str(), "MZ");
        }
    }

    let fx = fixtures();
    let store = fixture_store();
    let ctx = AuthContext {
        keys: &fx.keys,
        expected_account: &fx.account,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
    };
    let session = Session::new(NOW, DEFAULT_START_TIMEOUT, UrlToken::NONE);
    let (next, output) = handle_with_store(code, session, Event::Text(text), NOW, &ctx, &store);
    let is_start = matches!(parsed, Ok(Inbound::Start(_)));
    match output {
        Output::Authenticated(info) => {
            let Ok(Inbound::Start(start)) = &parsed else {
                violated(format_args!(
                    "authenticated on a message that is not a start"
                ))
            };
            if info.call_sid != start.start.call_sid || info.stream_sid != start.stream_sid {
                violated(format_args!(
                    "the authenticated stream is not the one the start describes"
                ));
            }
            if next != Session::Streaming(info.clone()) {
                violated(format_args!(
                    "authenticated, but the session is not streaming"
                ));
            }
            check_authenticated(&info, text, STREAM_PATH, NOW, &mut Redeemed::default());
            // "Exactly": the same token must not verify for another call or account.
            if let Some(t) = custom_token_of(text) {
                let other_call = if info.call_sid == fx.call {
                    fx.other_call
                } else {
                    fx.call
                };
                if token::verify(&fx.keys, &t, &info.account_sid, &other_call, NOW).is_ok()
                    || token::verify(&fx.keys, &t, &fx.other_account, &info.call_sid, NOW).is_ok()
                {
                    violated(format_args!(
                        "the accepted token also verifies for another call or account"
                    ));
                }
            }
            StartOutcome::Authenticated
        }
        Output::Nothing => {
            if !matches!(parsed, Ok(Inbound::Connected(_)))
                || !matches!(next, Session::AwaitingStart { .. })
            {
                violated(format_args!(
                    "a first message other than connected was silently accepted: {parsed:?}"
                ));
            }
            StartOutcome::OtherMessage
        }
        Output::Close(reason) => {
            let code = close_code_of(code, reason);
            let too_large = text.len() > DEFAULT_MAX_MESSAGE_BYTES;
            if (code == 1009) != too_large || code == 1003 {
                violated(format_args!(
                    "a text message of {} bytes closed with {code} ({reason:?})",
                    text.len()
                ));
            }
            if !next.is_closed() {
                violated(format_args!("a close left the session open"));
            }
            match (&parsed, is_start) {
                (Err(_), _) => StartOutcome::Unparsed,
                (Ok(_), true) => StartOutcome::StartRefused,
                (Ok(_), false) => StartOutcome::OtherMessage,
            }
        }
        other => violated(format_args!(
            "{other:?} reached the application before authentication"
        )),
    }
}
