//! Oracles shared by the `start_frame` and `session` targets: what an authenticated stream
//! must be, which close codes a session may send, and a redemption carried out as the server
//! does it.

use crate::extract;
use crate::session::{
    AuthContext, CloseCode, Event, Output, Reason, RedeemFailure, Redemption, Session, StreamInfo,
};
use crate::sid::CallSid;
use crate::store::{self, MemoryStore, RedeemError};
use crate::time::UnixTime;
use crate::wire::frames::{self, FrameError, Inbound};

use super::Crate;
use super::fixtures::{ACCOUNT, FixtureToken, ON_RECORD, fixtures, violated};

/// The code the `start_frame` and `session` targets check: by default the crate's own parser
/// and state machine. A test implements it with one method replaced by a deliberately wrong
/// one, to show the oracles reject it (`tests/invariants_fire.rs`).
pub trait SessionCode {
    /// [`frames::parse_inbound`].
    fn parse_inbound<'a>(
        &self,
        text: &'a str,
        max_bytes: usize,
    ) -> Result<Inbound<'a>, FrameError> {
        frames::parse_inbound(text, max_bytes)
    }

    /// [`frames::parse_media_fast`]: the fast path [`frames::parse_inbound`] takes for a
    /// `media` message.
    fn parse_media_fast<'a>(&self, text: &'a str) -> Option<frames::MediaFrame<'a>> {
        frames::parse_media_fast(text)
    }

    /// [`Session::handle`].
    fn handle<'a>(
        &self,
        session: Session,
        event: Event<'a>,
        now: UnixTime,
        ctx: &AuthContext<'_>,
    ) -> (Session, Output<'a>) {
        session.handle(event, now, ctx)
    }

    /// [`Reason::close_code`]: the code a close is sent with.
    fn close_code(&self, reason: Reason) -> CloseCode {
        reason.close_code()
    }
}

impl SessionCode for Crate {}

/// The close codes a session may send (1000 comes with `Output::Stop`, not with a close).
const SESSION_CLOSE_CODES: [u16; 3] = [1003, 1008, 1009];

/// Carries out a redemption the way the server does, on `store`.
fn redeem_in(store: &MemoryStore, r: &Redemption, now: UnixTime) -> Result<(), RedeemFailure> {
    let key = &fixtures().store_key;
    let offer = store::presented(key, &r.account_sid, &r.call_sid, &r.claims);
    match store.redeem_now(key.call_id(&r.account_sid, &r.call_sid), &offer, now) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(refusal)) => Err(RedeemFailure::Store(RedeemError::Refused(refusal))),
        Err(e) => Err(RedeemFailure::Store(RedeemError::Store(e))),
    }
}

/// [`Session::handle`] for one event, with a redemption it asks for carried out on `store`
/// and reported in the same step (as the server does before it reads again). Checks that a
/// redemption is asked for only on a `start` text, and is answered by `Authenticated` or a
/// close.
pub(super) fn handle_with_store<'a, C: SessionCode + ?Sized>(
    code: &C,
    session: Session,
    event: Event<'a>,
    now: UnixTime,
    ctx: &AuthContext<'_>,
    store: &MemoryStore,
) -> (Session, Output<'a>) {
    let (next, output) = code.handle(session, event, now, ctx);
    let Output::Redeem(r) = output else {
        return (next, output);
    };
    if !matches!(event, Event::Text(_)) || !next.is_redeeming() {
        violated(format_args!(
            "a redemption was asked for on {event:?}, or without the session redeeming"
        ));
    }
    let result = redeem_in(store, &r, now);
    let (after, out) = code.handle(next, Event::Redeemed(result), now, ctx);
    match (&result, &out) {
        (Ok(()), Output::Authenticated(_)) | (Err(_), Output::Close(_)) => {}
        _ => violated(format_args!(
            "the redemption result {result:?} was answered by {out:?}"
        )),
    }
    (after, out)
}

/// A SID's text is its two-letter prefix and 32 hex digits (checked without `crate::sid`):
/// the check the targets make of every SID the parser and the session hand on.
pub fn check_sid_text(kind: &str, text: &str, prefix: &str) {
    let ok = text.len() == 34
        && text.starts_with(prefix)
        && text.bytes().skip(2).all(|b| b.is_ascii_hexdigit());
    if !ok {
        violated(format_args!("{kind} {text:?} is not a valid {prefix} SID"));
    }
}

/// The `start.customParameters.token` of `text`, read with a generic JSON parser.
pub(super) fn custom_token_of(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get("start")?
        .get("customParameters")?
        .get(extract::TOKEN_PARAM)?
        .as_str()
        .map(str::to_owned)
}

/// What has been authenticated so far with one replay store.
#[derive(Default)]
pub(super) struct Redeemed {
    tokens: Vec<FixtureToken>,
    calls: Vec<CallSid>,
}

/// Checks an `Output::Authenticated(info)` produced by the `start` message `text` on a
/// connection upgraded at `url_target`: the stream is for the configured account, the token
/// that was presented is a live fixture token issued with [`TOKEN_KEY`] for exactly this
/// account and call, and neither the token nor the call has opened a stream before.
pub(super) fn check_authenticated(
    info: &StreamInfo,
    text: &str,
    url_target: &str,
    now: UnixTime,
    redeemed: &mut Redeemed,
) {
    let fx = fixtures();
    if info.account_sid != fx.account {
        violated(format_args!(
            "authenticated a stream of account {} instead of the configured {ACCOUNT}",
            info.account_sid
        ));
    }
    check_sid_text("accountSid", info.account_sid.as_str(), "AC");
    check_sid_text("callSid", info.call_sid.as_str(), "CA");
    check_sid_text("streamSid", info.stream_sid.as_str(), "MZ");
    if info.custom_parameters.get(extract::TOKEN_PARAM).is_some() {
        violated(format_args!(
            "the token is still in the custom parameters handed to the application"
        ));
    }
    let from_url = extract::token_from_request_target(url_target)
        .ok()
        .flatten();
    let from_custom = custom_token_of(text);
    let presented = match (from_url, from_custom) {
        (Some(u), Some(c)) if u != c => violated(format_args!(
            "authenticated although the URL token and customParameters.token differ"
        )),
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => violated(format_args!("authenticated without any token")),
    };
    let Some(issued) = fx.issued(&presented) else {
        violated(format_args!(
            "authenticated with a token that was never issued (forged or altered): {presented:?}"
        ))
    };
    if !issued.by_token_key {
        violated(format_args!(
            "authenticated with {:?}, issued by a key not in the set",
            issued.which
        ));
    }
    if issued.account != info.account_sid || issued.call != info.call_sid {
        violated(format_args!(
            "authenticated {} / {} with {:?}, issued for {} / {}",
            info.account_sid, info.call_sid, issued.which, issued.account, issued.call
        ));
    }
    if now >= issued.expires_at {
        violated(format_args!(
            "authenticated with {:?} after it expired",
            issued.which
        ));
    }
    if !ON_RECORD.contains(&issued.which) {
        violated(format_args!(
            "authenticated with {:?}, a token the replay store never minted",
            issued.which
        ));
    }
    if redeemed.tokens.contains(&issued.which) {
        violated(format_args!(
            "token {:?} opened a second stream (single use)",
            issued.which
        ));
    }
    if redeemed.calls.contains(&info.call_sid) {
        violated(format_args!(
            "call {} opened a second stream (one stream per call)",
            info.call_sid
        ));
    }
    redeemed.tokens.push(issued.which);
    redeemed.calls.push(info.call_sid);
}

/// The code a close for `reason` is sent with, which must be one a session may send.
pub(super) fn close_code_of<C: SessionCode + ?Sized>(code_under_test: &C, reason: Reason) -> u16 {
    let code = code_under_test.close_code(reason).as_u16();
    if !SESSION_CLOSE_CODES.contains(&code) {
        violated(format_args!(
            "close for {reason:?} carries code {code}, not 1003, 1008 or 1009"
        ));
    }
    code
}
