//! The per-connection state machine (`src/session.rs`), driven with a real `KeySet` and an
//! in-memory replay store that the test carries redemptions out on, as the server does: the
//! happy path and its output order (a verified `start` asks for a redemption, and only its
//! success authenticates), every failure with its close code, proof that a failed connection
//! produced no `Authenticated`/`Media` output and (where it failed before redemption) left the
//! store unchanged, the closed state absorbing everything, URL token handling, and properties
//! over arbitrary event sequences.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod common;

use std::time::Duration;

use common::{
    ACCOUNT, CALL, OTHER_ACCOUNT, OTHER_CALL, OTHER_STREAM, STREAM, T0, TTL, account, call, keyset,
};
use proptest::prelude::*;
use streamguard::extract::ExtractError;
use streamguard::limits::{DEFAULT_CALL_MEMORY, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_START_TIMEOUT};
use streamguard::secret::{AuthToken, KeySet};
use streamguard::session::{
    AuthContext, CloseCode, Event, Output, Reason, RedeemFailure, Redemption, Session, UrlToken,
};
use streamguard::sid::AccountSid;
use streamguard::store::{
    self, LiveToken, MemoryStore, RedeemError, RedeemRefusal, StoreKey, StorePolicy,
};
use streamguard::time::UnixTime;
use streamguard::token::{TokenError, issue_with_nonce};
use streamguard::wire::frames::FrameError;

/// The configuration and shared state a server would hold.
struct World {
    keys: KeySet,
    account: AccountSid,
    store: MemoryStore,
    store_key: StoreKey,
    max: usize,
}

impl World {
    fn new() -> Self {
        Self::with_max(DEFAULT_MAX_MESSAGE_BYTES)
    }

    fn with_max(max: usize) -> Self {
        Self {
            keys: keyset(1),
            account: account(ACCOUNT),
            store: MemoryStore::new(
                1024,
                StorePolicy {
                    token_ttl: TTL,
                    call_memory: DEFAULT_CALL_MEMORY,
                    streams_per_call: 1,
                },
            ),
            store_key: StoreKey::derive(&AuthToken::new("session-test-auth-token").unwrap()),
            max,
        }
    }

    fn ctx(&self) -> AuthContext<'_> {
        AuthContext {
            keys: &self.keys,
            expected_account: &self.account,
            max_message_bytes: self.max,
        }
    }

    /// A token for (`acct`, `c`) issued at `at` with nonce `n`, from this world's key, and
    /// recorded in the store as the call's live token if the call has none yet (as the
    /// server's webhook would have minted it).
    fn token(&self, acct: &str, c: &str, at: UnixTime, n: u64) -> String {
        let t = common::token_for(&self.keys, &account(acct), &call(c), at, n);
        let expires_at = common::after(at, TTL);
        let live = LiveToken {
            key_id: self.keys.current().id(),
            expires_at,
            sealed: self.store_key.seal_nonce(
                &account(acct),
                &call(c),
                expires_at,
                &common::nonce(n),
            ),
        };
        let id = self.store_key.call_id(&account(acct), &call(c));
        self.store.mint_now(id, live, at).unwrap();
        t.as_str().to_owned()
    }

    /// Streams recorded for `c` (of the configured account).
    fn streamed(&self, c: &str) -> u32 {
        let id = self.store_key.call_id(&self.account, &call(c));
        self.store.record(id, T0).map_or(0, |r| r.streams)
    }

    /// Carries out a redemption the way the server does.
    fn redeem(&self, r: &Redemption, now: UnixTime) -> Result<(), RedeemFailure> {
        let offer = store::presented(&self.store_key, &r.account_sid, &r.call_sid, &r.claims);
        let id = self.store_key.call_id(&r.account_sid, &r.call_sid);
        match self.store.redeem_now(id, &offer, now) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refusal)) => Err(RedeemFailure::Store(RedeemError::Refused(refusal))),
            Err(e) => Err(RedeemFailure::Store(RedeemError::Store(e))),
        }
    }

    /// One event, with the redemption it may ask for carried out and reported before the
    /// next event, as the server does. Returns the final output of the event.
    fn step<'a>(&self, s: Session, event: Event<'a>, now: UnixTime) -> (Session, Output<'a>) {
        match s.handle(event, now, &self.ctx()) {
            (next, Output::Redeem(r)) => {
                assert!(next.is_redeeming());
                let result = self.redeem(&r, now);
                next.handle(Event::Redeemed(result), now, &self.ctx())
            }
            other => other,
        }
    }

    /// Feeds `events` at `now` to a fresh session; returns the final state and every output.
    fn run(&self, url_token: UrlToken, events: &[Ev]) -> (Session, Vec<Output<'static>>) {
        let mut s = Session::new(T0, DEFAULT_START_TIMEOUT, url_token);
        let mut outputs = Vec::new();
        for ev in events {
            let (next, out) = self.step(s, ev.event(), ev.now());
            s = next;
            outputs.push(out.into_owned());
        }
        (s, outputs)
    }
}

fn refused(r: RedeemRefusal) -> Reason {
    Reason::Redeem(RedeemError::Refused(r))
}

/// An owned event and the time it happens.
#[derive(Clone, Debug)]
enum Ev {
    Text(String),
    TextAt(String, UnixTime),
    Binary,
    TooLarge,
    Tick(UnixTime),
    PeerClosed,
}

impl Ev {
    fn event(&self) -> Event<'_> {
        match self {
            Ev::Text(t) | Ev::TextAt(t, _) => Event::Text(t),
            Ev::Binary => Event::Binary,
            Ev::TooLarge => Event::TooLarge,
            Ev::Tick(_) => Event::Tick,
            Ev::PeerClosed => Event::PeerClosed,
        }
    }

    fn now(&self) -> UnixTime {
        match self {
            Ev::TextAt(_, t) | Ev::Tick(t) => *t,
            _ => T0,
        }
    }
}

fn text(s: String) -> Ev {
    Ev::Text(s)
}

fn start_with_token(token: &str) -> String {
    common::start_json(
        STREAM,
        ACCOUNT,
        CALL,
        &[("token", token), ("tenant", "acme")],
    )
}

fn is_app_output(o: &Output<'_>) -> bool {
    matches!(
        o,
        Output::Authenticated(_)
            | Output::Media(_)
            | Output::Dtmf(_)
            | Output::Mark(_)
            | Output::Stop(_)
    )
}

#[test]
fn happy_path_outputs_in_order() {
    let w = World::new();
    let token = w.token(ACCOUNT, CALL, T0, 1);
    let events = vec![
        text(common::connected_json()),
        text(start_with_token(&token)),
        text(common::media_json(STREAM, 2, "AAAA")),
        text(common::media_json(STREAM, 3, "BBBB")),
        text(common::dtmf_json(STREAM)),
        text(common::mark_json(STREAM)),
        text(common::media_json(STREAM, 4, "CCCC")),
        text(common::stop_json(STREAM, ACCOUNT, CALL)),
    ];
    let (s, out) = w.run(UrlToken::NONE, &events);
    assert!(s.is_closed());
    assert_eq!(out.len(), 8);
    assert_eq!(out[0], Output::Nothing);
    let Output::Authenticated(info) = &out[1] else {
        panic!("{:?}", out[1])
    };
    assert_eq!(info.call_sid.as_str(), CALL);
    assert_eq!(info.account_sid.as_str(), ACCOUNT);
    assert_eq!(info.stream_sid.as_str(), STREAM);
    assert_eq!(info.tracks.iter().collect::<Vec<_>>(), ["inbound"]);
    assert_eq!(info.media_format.as_ref().unwrap().sample_rate, 8000);
    // The token has been used and is removed; other parameters are kept.
    assert_eq!(info.custom_parameters.get("token"), None);
    assert_eq!(
        info.custom_parameters.iter().collect::<Vec<_>>(),
        [("tenant", "acme")]
    );
    common::assert_no_leak(&format!("{out:?}"), &[&token]);

    let payloads: Vec<&str> = out
        .iter()
        .filter_map(|o| match o {
            Output::Media(m) => Some(m.payload()),
            _ => None,
        })
        .collect();
    assert_eq!(payloads, ["AAAA", "BBBB", "CCCC"]);
    assert!(matches!(out[4], Output::Dtmf(_)));
    assert!(matches!(out[5], Output::Mark(_)));
    assert!(matches!(out[7], Output::Stop(_)));
    assert_eq!(w.streamed(CALL), 1);
}

#[test]
fn peer_close_before_start_ends_quietly() {
    let w = World::new();
    let token = w.token(ACCOUNT, CALL, T0, 1);
    let (s, out) = w.run(
        UrlToken::NONE,
        &[
            text(common::connected_json()),
            Ev::PeerClosed,
            text(start_with_token(&token)),
        ],
    );
    assert!(s.is_closed());
    assert_eq!(out, [Output::Nothing, Output::Nothing, Output::Nothing]);
    assert_eq!(w.streamed(CALL), 0);
}

#[test]
fn states_report_themselves() {
    let w = World::new();
    let s = Session::new(T0, Duration::from_secs(5), UrlToken::NONE);
    assert_eq!(
        s.deadline(),
        Some(common::after(T0, Duration::from_secs(5)))
    );
    assert!(!s.is_authenticated() && !s.is_closed());
    let token = w.token(ACCOUNT, CALL, T0, 1);
    let start = start_with_token(&token);
    let (s, out) = s.handle(Event::Text(&start), T0, &w.ctx());
    assert!(matches!(out, Output::Redeem(_)));
    assert!(s.is_redeeming() && !s.is_authenticated() && !s.is_closed());
    assert_eq!(s.deadline(), None);
    let (s, out) = s.handle(Event::Redeemed(Ok(())), T0, &w.ctx());
    assert!(matches!(out, Output::Authenticated(_)));
    assert!(s.is_authenticated() && !s.is_redeeming() && !s.is_closed());
    assert_eq!(s.deadline(), None);
    let (s, out) = s.handle(Event::PeerClosed, T0, &w.ctx());
    assert_eq!(out, Output::Nothing);
    assert!(s.is_closed() && !s.is_authenticated());
}

/// A `media` frame read together with `start` is handled right after it: delivered, not
/// dropped and not treated as unauthenticated.
#[test]
fn media_right_after_start_is_delivered() {
    let w = World::new();
    let token = w.token(ACCOUNT, CALL, T0, 1);
    let (s, out) = w.run(
        UrlToken::NONE,
        &[
            text(start_with_token(&token)),
            text(common::media_json(STREAM, 2, "AAAA")),
        ],
    );
    assert!(s.is_authenticated());
    assert!(matches!(out[0], Output::Authenticated(_)));
    let Output::Media(m) = &out[1] else {
        panic!("{:?}", out[1])
    };
    assert_eq!(m.media.payload, "AAAA");
}

/// After authentication the start deadline no longer applies, and unknown events are
/// ignored.
#[test]
fn streaming_outlives_the_start_deadline() {
    let w = World::new();
    let token = w.token(ACCOUNT, CALL, T0, 1);
    let late = common::after(T0, Duration::from_secs(3600));
    let (s, out) = w.run(
        UrlToken::NONE,
        &[
            text(start_with_token(&token)),
            Ev::Tick(late),
            Ev::TextAt(r#"{"event":"transcription"}"#.to_owned(), late),
            Ev::TextAt(common::media_json(STREAM, 2, "AAAA"), late),
        ],
    );
    assert!(s.is_authenticated());
    assert_eq!(out[1], Output::Nothing);
    assert_eq!(out[2], Output::Nothing);
    assert!(matches!(out[3], Output::Media(_)));
}

/// How a failure case is set up.
struct Case {
    name: &'static str,
    url_token: UrlToken,
    events: Vec<Ev>,
    reason: Reason,
    code: u16,
}

/// Every way a connection fails before authentication.
fn pre_auth_cases(w: &World) -> Vec<Case> {
    let good = w.token(ACCOUNT, CALL, T0, 1);
    let other_call = w.token(ACCOUNT, OTHER_CALL, T0, 2);
    let other_account = w.token(OTHER_ACCOUNT, CALL, T0, 3);
    let other_key = issue_with_nonce(
        keyset(2).current(),
        &account(ACCOUNT),
        &call(CALL),
        T0,
        common::TTL,
        common::nonce(4),
    )
    .unwrap()
    .as_str()
    .to_owned();
    let forged = {
        let mut b = good.clone().into_bytes();
        b[40] = if b[40] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let expired = w.token(ACCOUNT, CALL, common::before(T0, common::TTL), 5);
    let start = |t: &str| text(start_with_token(t));
    let start_params = |p: &[(&str, &str)]| text(common::start_json(STREAM, ACCOUNT, CALL, p));
    let deadline = common::after(T0, DEFAULT_START_TIMEOUT);
    let before_deadline = common::before(deadline, Duration::from_millis(1));
    let oversized = format!(
        r#"{{"event":"connected","pad":"{}"}}"#,
        "x".repeat(DEFAULT_MAX_MESSAGE_BYTES)
    );
    let mismatched_start = start_with_token(&good).replacen(
        &format!(r#""streamSid":"{STREAM}""#),
        &format!(r#""streamSid":"{OTHER_STREAM}""#),
        1,
    );
    assert_ne!(mismatched_start, start_with_token(&good));
    let c = |name, events, reason, code| Case {
        name,
        url_token: UrlToken::NONE,
        events,
        reason,
        code,
    };
    vec![
        c(
            "no token",
            vec![start_params(&[("tenant", "acme")])],
            Reason::Extract(ExtractError::Missing),
            1008,
        ),
        c(
            "empty token",
            vec![start_params(&[("token", "")])],
            Reason::Extract(ExtractError::Empty),
            1008,
        ),
        c(
            "garbage token",
            vec![start("not-a-token")],
            Reason::Token(TokenError::Length),
            1008,
        ),
        c(
            "forged token",
            vec![start(&forged)],
            Reason::Token(TokenError::BadMac),
            1008,
        ),
        c(
            "token of another key",
            vec![start(&other_key)],
            Reason::Token(TokenError::UnknownKey),
            1008,
        ),
        c(
            "token for another call",
            vec![start(&other_call)],
            Reason::Token(TokenError::BadMac),
            1008,
        ),
        c(
            "token for another account",
            vec![start(&other_account)],
            Reason::Token(TokenError::BadMac),
            1008,
        ),
        c(
            "start from another account (checked before the token)",
            vec![text(common::start_json(
                STREAM,
                OTHER_ACCOUNT,
                CALL,
                &[("token", &other_account)],
            ))],
            Reason::AccountMismatch,
            1008,
        ),
        c(
            "expired token",
            vec![start(&expired)],
            Reason::Token(TokenError::Expired),
            1008,
        ),
        c(
            "media before start",
            vec![text(common::media_json(STREAM, 1, "AAAA"))],
            Reason::EventBeforeStart,
            1008,
        ),
        c(
            "mark before start",
            vec![text(common::mark_json(STREAM))],
            Reason::EventBeforeStart,
            1008,
        ),
        c(
            "dtmf before start",
            vec![text(common::dtmf_json(STREAM))],
            Reason::EventBeforeStart,
            1008,
        ),
        c(
            "stop before start",
            vec![text(common::stop_json(STREAM, ACCOUNT, CALL))],
            Reason::EventBeforeStart,
            1008,
        ),
        c(
            "unknown event before start",
            vec![text(r#"{"event":"transcription"}"#.to_owned())],
            Reason::EventBeforeStart,
            1008,
        ),
        c(
            "second connected",
            vec![
                text(common::connected_json()),
                text(common::connected_json()),
            ],
            Reason::UnexpectedConnected,
            1008,
        ),
        c(
            "malformed JSON",
            vec![text("{\"event\":".to_owned())],
            Reason::Frame(FrameError::Syntax),
            1008,
        ),
        c(
            "missing field",
            vec![text(format!(
                r#"{{"event":"start","streamSid":"{STREAM}"}}"#
            ))],
            Reason::Frame(FrameError::Schema),
            1008,
        ),
        c(
            "start streamSid mismatch",
            vec![text(mismatched_start)],
            Reason::Frame(FrameError::StreamSidMismatch),
            1008,
        ),
        c(
            "deadline passed (tick)",
            vec![Ev::Tick(before_deadline), Ev::Tick(deadline)],
            Reason::StartTimeout,
            1008,
        ),
        c(
            "valid start after the deadline",
            vec![Ev::TextAt(start_with_token(&good), deadline)],
            Reason::StartTimeout,
            1008,
        ),
        c("binary frame", vec![Ev::Binary], Reason::Binary, 1003),
        c(
            "binary after connected",
            vec![text(common::connected_json()), Ev::Binary],
            Reason::Binary,
            1003,
        ),
        c(
            "transport says too large",
            vec![Ev::TooLarge],
            Reason::TooLarge,
            1009,
        ),
        c(
            "oversized text",
            vec![text(oversized)],
            Reason::Frame(FrameError::TooLarge),
            1009,
        ),
        Case {
            name: "URL token conflicts with customParameters",
            url_token: UrlToken::from_target(&format!("/voice/stream?token={other_call}")),
            events: vec![start(&good)],
            reason: Reason::Extract(ExtractError::Conflict),
            code: 1008,
        },
        Case {
            name: "URL token ambiguous",
            url_token: UrlToken::from_target(&format!("/voice/stream?token={good}&token={good}")),
            events: vec![start(&good)],
            reason: Reason::Extract(ExtractError::Ambiguous),
            code: 1008,
        },
    ]
}

#[test]
fn every_pre_auth_failure_closes_with_its_code_and_changes_nothing() {
    let w = World::new();
    let good = w.token(ACCOUNT, CALL, T0, 1);
    for case in pre_auth_cases(&w) {
        let (s, out) = w.run(case.url_token.clone(), &case.events);
        assert!(s.is_closed(), "{}", case.name);
        assert_eq!(
            out.last(),
            Some(&Output::Close(case.reason)),
            "{}: {out:?}",
            case.name
        );
        // Only the last event closed; none before it produced anything.
        assert!(
            out[..out.len() - 1].iter().all(|o| *o == Output::Nothing),
            "{}",
            case.name
        );
        assert!(!out.iter().any(is_app_output), "{}", case.name);
        assert_eq!(
            case.reason.close_code().as_u16(),
            case.code,
            "{}",
            case.name
        );
        // Nothing was redeemed.
        assert_eq!(w.streamed(CALL), 0, "{}", case.name);
    }
    // And the world's token is still unused: it authenticates a fresh connection now.
    let (s, out) = w.run(UrlToken::NONE, &[text(start_with_token(&good))]);
    assert!(s.is_authenticated(), "{out:?}");
    assert_eq!(w.streamed(CALL), 1);
}

/// What goes to the peer cannot name the cause or carry the token: the wire reason is a
/// function of the close code alone (`CloseCode::wire_reason`), and neither `CloseCode` nor
/// `Reason` holds any data. (The failure table used to search `Debug` of these fieldless
/// values for the token, which could not fail.)
#[test]
fn close_reasons_hold_no_data() {
    common::assert_holds_no_data::<Reason>();
    common::assert_holds_no_data::<CloseCode>();
}

#[test]
fn replays_are_refused_after_a_successful_stream() {
    let w = World::new();
    let good = w.token(ACCOUNT, CALL, T0, 1);
    let (s, _) = w.run(UrlToken::NONE, &[text(start_with_token(&good))]);
    assert!(s.is_authenticated());
    // The same token again.
    let (s, out) = w.run(UrlToken::NONE, &[text(start_with_token(&good))]);
    assert!(s.is_closed());
    assert_eq!(out, [Output::Close(refused(RedeemRefusal::TokenReused))]);
    // A fresh token with a valid MAC for the same call: the store minted nothing after the
    // stream (the call has streamed), so it is not the call's token either.
    let fresh = w.token(ACCOUNT, CALL, T0, 99);
    let (s, out) = w.run(UrlToken::NONE, &[text(start_with_token(&fresh))]);
    assert!(s.is_closed());
    assert_eq!(out, [Output::Close(refused(RedeemRefusal::TokenReused))]);
    assert_eq!(w.streamed(CALL), 1);
}

/// A token with a valid MAC that the store never minted (a restart of an in-memory store, an
/// instance that does not share the store) verifies, is asked to be redeemed, and is refused.
#[test]
fn a_token_not_on_record_is_refused_after_verification() {
    let w = World::new();
    let outside = common::token_for(&w.keys, &w.account, &call(CALL), T0, 5);
    let start = start_with_token(outside.as_str());
    let s = Session::new(T0, DEFAULT_START_TIMEOUT, UrlToken::NONE);
    let (s, out) = s.handle(Event::Text(&start), T0, &w.ctx());
    let Output::Redeem(r) = out else {
        panic!("a verified start asks for a redemption: {out:?}")
    };
    assert_eq!(
        (r.account_sid.as_str(), r.call_sid.as_str()),
        (ACCOUNT, CALL)
    );
    assert!(s.is_redeeming() && !s.is_authenticated());
    let result = w.redeem(&r, T0);
    let (s, out) = s.handle(Event::Redeemed(result), T0, &w.ctx());
    assert!(s.is_closed());
    assert_eq!(out, Output::Close(refused(RedeemRefusal::NotOnRecord)));
}

/// While a redemption is outstanding nothing is delivered: the result decides, a frame fed
/// before it (a server bug) closes the connection, and a result nobody asked for does too.
#[test]
fn the_redemption_step_is_the_only_way_to_authenticate() {
    let w = World::new();
    let token = w.token(ACCOUNT, CALL, T0, 1);
    let start = start_with_token(&token);
    let media = common::media_json(STREAM, 2, "AAAA");
    let verified = || {
        let s = Session::new(T0, DEFAULT_START_TIMEOUT, UrlToken::NONE);
        let (s, out) = s.handle(Event::Text(&start), T0, &w.ctx());
        assert!(matches!(out, Output::Redeem(_)), "{out:?}");
        s
    };
    // Success: authenticated, then media flows.
    let (s, out) = verified().handle(Event::Redeemed(Ok(())), T0, &w.ctx());
    assert!(matches!(out, Output::Authenticated(_)) && s.is_authenticated());
    let (_, out) = s.handle(Event::Text(&media), T0, &w.ctx());
    assert!(matches!(out, Output::Media(_)));
    // Refusals: closed with 1008, nothing delivered.
    for failure in [
        RedeemFailure::StreamsFull,
        RedeemFailure::Store(RedeemError::Refused(RedeemRefusal::TokenReused)),
        RedeemFailure::Store(RedeemError::Store(
            streamguard::store::StoreError::Unavailable,
        )),
    ] {
        let (s, out) = verified().handle(Event::Redeemed(Err(failure)), T0, &w.ctx());
        assert!(s.is_closed(), "{failure:?}");
        let Output::Close(reason) = out else {
            panic!("{failure:?}: {out:?}")
        };
        assert_eq!(reason.close_code(), CloseCode::Policy, "{failure:?}");
    }
    // Time passing while redeeming changes nothing, even past the start deadline.
    let late = common::after(T0, DEFAULT_START_TIMEOUT);
    let (s, out) = verified().handle(Event::Tick, late, &w.ctx());
    assert_eq!(out, Output::Nothing);
    assert!(s.is_redeeming());
    // The peer going away while redeeming ends quietly.
    let (s, out) = verified().handle(Event::PeerClosed, T0, &w.ctx());
    assert_eq!(out, Output::Nothing);
    assert!(s.is_closed());
    // A frame fed before the result: a server bug, closed, not delivered and not dropped
    // into the authenticated state.
    for ev in [Event::Text(&media), Event::Binary, Event::Control] {
        let (s, out) = verified().handle(ev, T0, &w.ctx());
        assert_eq!(out, Output::Close(Reason::OutOfOrder), "{ev:?}");
        assert!(s.is_closed());
    }
    // A result nobody asked for.
    let fresh = Session::new(T0, DEFAULT_START_TIMEOUT, UrlToken::NONE);
    let (s, out) = fresh.handle(Event::Redeemed(Ok(())), T0, &w.ctx());
    assert_eq!(out, Output::Close(Reason::OutOfOrder));
    assert!(s.is_closed());
    assert_eq!(w.streamed(CALL), 0, "the test carried out no redemption");
}

/// Failures after authentication: the stream closes, nothing further is delivered.
#[test]
fn post_auth_failures() {
    type Make = fn(&str, &str) -> Ev;
    let cases: [(&str, Make, Reason, u16); 7] = [
        // The same start again (a replay on the open connection).
        (
            "second start",
            |c, t| text(common::start_json(STREAM, ACCOUNT, c, &[("token", t)])),
            Reason::SecondStart,
            1008,
        ),
        (
            "connected after start",
            |_, _| text(common::connected_json()),
            Reason::UnexpectedConnected,
            1008,
        ),
        (
            "media for another stream",
            |_, _| text(common::media_json(OTHER_STREAM, 2, "AAAA")),
            Reason::StreamSidMismatch,
            1008,
        ),
        (
            "stop for another stream",
            |_, _| text(common::stop_json(OTHER_STREAM, ACCOUNT, CALL)),
            Reason::StreamSidMismatch,
            1008,
        ),
        (
            "malformed JSON",
            |_, _| text("nope".to_owned()),
            Reason::Frame(FrameError::Syntax),
            1008,
        ),
        ("binary", |_, _| Ev::Binary, Reason::Binary, 1003),
        ("too large", |_, _| Ev::TooLarge, Reason::TooLarge, 1009),
    ];
    let w = World::new();
    for (i, (name, make, reason, code)) in cases.into_iter().enumerate() {
        // Each case is its own call, so the replay guard does not interfere.
        let n = u64::try_from(i).unwrap();
        let c = common::nth_call(1000 + n);
        let t = w.token(ACCOUNT, c.as_str(), T0, 500 + n);
        let start = common::start_json(STREAM, ACCOUNT, c.as_str(), &[("token", t.as_str())]);
        let (s, out) = w.run(
            UrlToken::NONE,
            &[
                text(start),
                make(c.as_str(), &t),
                text(common::media_json(STREAM, 3, "AAAA")),
            ],
        );
        assert!(s.is_closed(), "{name}");
        assert!(matches!(out[0], Output::Authenticated(_)), "{name}");
        assert_eq!(out[1], Output::Close(reason), "{name}");
        assert_eq!(reason.close_code().as_u16(), code, "{name}");
        // The media after the close is not delivered.
        assert_eq!(out[2], Output::Nothing, "{name}");
        assert_eq!(w.streamed(c.as_str()), 1, "{name}");
    }
}

#[test]
fn stop_ends_the_stream_normally() {
    let w = World::new();
    let token = w.token(ACCOUNT, CALL, T0, 1);
    let (s, out) = w.run(
        UrlToken::NONE,
        &[
            text(start_with_token(&token)),
            text(common::stop_json(STREAM, ACCOUNT, CALL)),
            text(common::media_json(STREAM, 3, "AAAA")),
        ],
    );
    assert!(s.is_closed());
    assert!(matches!(out[1], Output::Stop(_)));
    assert_eq!(out[2], Output::Nothing);
}

/// Once closed, every event leaves the session closed and produces nothing, including a
/// valid `start` with an unused token, which is not redeemed.
#[test]
fn closed_absorbs_everything() {
    let w = World::new();
    let token = w.token(ACCOUNT, CALL, T0, 1);
    let start = start_with_token(&token);
    let media = common::media_json(STREAM, 1, "AAAA");
    let events = [
        Event::Text(&start),
        Event::Text(&media),
        Event::Text("garbage"),
        Event::Binary,
        Event::TooLarge,
        Event::Tick,
        Event::PeerClosed,
    ];
    let closers = [Event::Binary, Event::PeerClosed, Event::Text("garbage")];
    for closer in closers {
        let (mut s, _) =
            Session::new(T0, DEFAULT_START_TIMEOUT, UrlToken::NONE).handle(closer, T0, &w.ctx());
        assert!(s.is_closed());
        for ev in events {
            let (next, out) = s.handle(ev, T0, &w.ctx());
            assert_eq!(out, Output::Nothing, "{ev:?}");
            assert!(next.is_closed());
            s = next;
        }
    }
    assert_eq!(w.streamed(CALL), 0);
}

#[test]
fn url_token_alone_or_agreeing_authenticates() {
    let w = World::new();
    for (i, with_custom) in [false, true].into_iter().enumerate() {
        let c = common::nth_call(i as u64 + 1);
        let t = w.token(ACCOUNT, c.as_str(), T0, 10 + i as u64);
        let params: Vec<(&str, &str)> = if with_custom {
            vec![("token", t.as_str())]
        } else {
            vec![]
        };
        let start = common::start_json(STREAM, ACCOUNT, c.as_str(), &params);
        // The token percent-encoded in the query, as a non-Twilio client would send it.
        let target = format!("/voice/stream?token={}", common::percent_encode(&t));
        let (s, out) = w.run(UrlToken::from_target(&target), &[text(start)]);
        assert!(s.is_authenticated(), "{out:?}");
        let Output::Authenticated(info) = &out[0] else {
            panic!()
        };
        assert_eq!(info.call_sid, c);
        assert_eq!(info.custom_parameters.get("token"), None);
    }
    // UrlToken's Debug never shows the token.
    let t = w.token(ACCOUNT, CALL, T0, 1);
    let u = UrlToken::from_target(&format!("/voice/stream?token={t}"));
    common::assert_no_leak(&format!("{u:?}"), &[&t]);
    common::assert_no_leak(
        &format!("{:?}", Session::new(T0, DEFAULT_START_TIMEOUT, u)),
        &[&t],
    );
}

/// Known answers: the close codes of RFC 6455 §7.4.1.
#[test]
fn close_codes_and_wire_reasons() {
    let cases = [
        (CloseCode::Normal, 1000),
        (CloseCode::GoingAway, 1001),
        (CloseCode::Unsupported, 1003),
        (CloseCode::Policy, 1008),
        (CloseCode::TooBig, 1009),
        (CloseCode::Internal, 1011),
    ];
    for (c, n) in cases {
        assert_eq!(c.as_u16(), n);
    }
    assert_eq!(CloseCode::Policy.wire_reason(), "policy violation");
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// One step of an arbitrary connection.
#[derive(Clone, Debug)]
enum Act {
    Connected,
    Start(StartKind),
    Media {
        other_stream: bool,
    },
    Dtmf,
    Mark,
    Stop,
    Unknown,
    /// One of the valid messages with one byte replaced.
    Mutated {
        which: usize,
        pos: prop::sample::Index,
        byte: u8,
    },
    Garbage(String),
    Binary,
    TooLarge,
    Oversized,
    Tick(u64),
    PeerClosed,
}

#[derive(Clone, Copy, Debug)]
enum StartKind {
    Valid,
    NoToken,
    OtherCall,
    OtherAccount,
    Forged,
}

fn act() -> impl Strategy<Value = Act> {
    let start_kind = prop_oneof![
        3 => Just(StartKind::Valid),
        1 => Just(StartKind::NoToken),
        1 => Just(StartKind::OtherCall),
        1 => Just(StartKind::OtherAccount),
        1 => Just(StartKind::Forged),
    ];
    prop_oneof![
        2 => Just(Act::Connected),
        4 => start_kind.prop_map(Act::Start),
        4 => any::<bool>().prop_map(|other_stream| Act::Media { other_stream }),
        1 => Just(Act::Dtmf),
        1 => Just(Act::Mark),
        1 => Just(Act::Stop),
        1 => Just(Act::Unknown),
        3 => (0usize..6, any::<prop::sample::Index>(), 0x20u8..0x7f)
            .prop_map(|(which, pos, byte)| Act::Mutated { which, pos, byte }),
        1 => "\\PC{0,30}".prop_map(Act::Garbage),
        1 => Just(Act::Binary),
        1 => Just(Act::TooLarge),
        1 => Just(Act::Oversized),
        2 => (0u64..3000).prop_map(Act::Tick),
        1 => Just(Act::PeerClosed),
    ]
}

/// What the property's world sends: the valid token and the messages built from it.
struct Script {
    token: String,
    messages: [String; 6],
    other_call_token: String,
    other_account_token: String,
}

const PROP_MAX: usize = 2048;

fn script(w: &World) -> Script {
    let token = w.token(ACCOUNT, CALL, T0, 1);
    Script {
        messages: [
            common::connected_json(),
            start_with_token(&token),
            common::media_json(STREAM, 2, "AAAA"),
            common::dtmf_json(STREAM),
            common::mark_json(STREAM),
            common::stop_json(STREAM, ACCOUNT, CALL),
        ],
        other_call_token: w.token(ACCOUNT, OTHER_CALL, T0, 2),
        other_account_token: w.token(OTHER_ACCOUNT, CALL, T0, 3),
        token,
    }
}

/// The event an action produces, as owned text where there is text.
fn materialise(a: &Act, sc: &Script) -> Result<String, Event<'static>> {
    Ok(match a {
        Act::Connected => sc.messages[0].clone(),
        Act::Start(StartKind::Valid) => sc.messages[1].clone(),
        Act::Start(StartKind::NoToken) => common::start_json(STREAM, ACCOUNT, CALL, &[]),
        Act::Start(StartKind::OtherCall) => start_with_token(&sc.other_call_token),
        Act::Start(StartKind::OtherAccount) => common::start_json(
            STREAM,
            OTHER_ACCOUNT,
            CALL,
            &[("token", &sc.other_account_token)],
        ),
        Act::Start(StartKind::Forged) => {
            let mut b = sc.token.clone().into_bytes();
            b[50] = if b[50] == b'x' { b'y' } else { b'x' };
            start_with_token(&String::from_utf8(b).unwrap())
        }
        Act::Media { other_stream } => {
            common::media_json(if *other_stream { OTHER_STREAM } else { STREAM }, 2, "AAAA")
        }
        Act::Dtmf => sc.messages[3].clone(),
        Act::Mark => sc.messages[4].clone(),
        Act::Stop => sc.messages[5].clone(),
        Act::Unknown => r#"{"event":"transcription"}"#.to_owned(),
        Act::Mutated { which, pos, byte } => {
            let mut b = sc.messages[*which].clone().into_bytes();
            let i = pos.index(b.len());
            b[i] = *byte;
            String::from_utf8(b).unwrap()
        }
        Act::Garbage(g) => g.clone(),
        Act::Oversized => "x".repeat(PROP_MAX + 1),
        Act::Binary => return Err(Event::Binary),
        Act::TooLarge => return Err(Event::TooLarge),
        Act::Tick(_) => return Err(Event::Tick),
        Act::PeerClosed => return Err(Event::PeerClosed),
    })
}

proptest! {
    #![proptest_config(common::proptest_config())]

    /// For any sequence of events (valid and mutated messages, binary frames, oversized
    /// messages, ticks, closes), whatever token the URL carries:
    /// - no Media, Dtmf, Mark or Stop output comes before Authenticated;
    /// - at most one Authenticated, and only for the valid token (in the start text or the
    ///   URL: the token presented is the one the store minted, whichever place it came
    ///   from), for CALL, without `token` in its parameters; the store counts exactly the
    ///   streams that authenticated;
    /// - once the session is closed it stays closed and every output is Nothing;
    /// - every Close carries 1003 for a binary frame, 1009 for an oversized message (reported
    ///   by the transport or seen by the parser), 1008 for anything else;
    /// - `is_authenticated` holds exactly between Authenticated and the close.
    #[test]
    fn session_invariants(
        lead_with_valid_start in any::<bool>(),
        rest in proptest::collection::vec(act(), 0..40),
        url_choice in 0u8..3,
    ) {
        // Half the runs open with a valid start, so the authenticated half of the state
        // machine is exercised as much as the other.
        let mut acts = Vec::new();
        if lead_with_valid_start {
            acts.push(Act::Start(StartKind::Valid));
        }
        acts.extend(rest);
        let w = World::with_max(PROP_MAX);
        let sc = script(&w);
        let url_token = match url_choice {
            0 => UrlToken::NONE,
            1 => UrlToken::from_target(&format!("/voice/stream?token={}", sc.token)),
            _ => UrlToken::from_target(&format!("/voice/stream?token={}", sc.other_call_token)),
        };
        let url_token_text = match url_choice {
            0 => None,
            1 => Some(sc.token.clone()),
            _ => Some(sc.other_call_token.clone()),
        };
        let mut s = Session::new(T0, DEFAULT_START_TIMEOUT, url_token);
        let mut now = T0;
        let mut authenticated = 0;
        let mut closed = false;
        for a in &acts {
            if let Act::Tick(ms) = a {
                now = common::plus_ms(now, *ms);
            }
            let owned = materialise(a, &sc);
            let event = match &owned {
                Ok(t) => Event::Text(t),
                Err(e) => *e,
            };
            let (next, out) = w.step(s, event, now);
            s = next;
            if closed {
                prop_assert_eq!(&out, &Output::Nothing, "{:?}", a);
                prop_assert!(s.is_closed());
                continue;
            }
            match &out {
                Output::Authenticated(info) => {
                    authenticated += 1;
                    prop_assert_eq!(authenticated, 1);
                    // The token that authenticated is the one the store minted: the start's
                    // customParameters.token, or the URL's, read here with serde_json rather
                    // than the crate's parser (they must agree when both are present).
                    let text = owned.as_ref().unwrap();
                    let custom = serde_json::from_str::<serde_json::Value>(text)
                        .ok()
                        .and_then(|v| v.pointer("/start/customParameters/token")?.as_str().map(str::to_owned));
                    let from_url = url_token_text.clone();
                    let presented = match (&custom, &from_url) {
                        (Some(c), Some(u)) => {
                            prop_assert_eq!(c, u, "authenticated with two different tokens");
                            c.clone()
                        }
                        (Some(t), None) | (None, Some(t)) => t.clone(),
                        (None, None) => panic!("authenticated without a token: {text}"),
                    };
                    prop_assert_eq!(&presented, &sc.token);
                    prop_assert_eq!(info.call_sid.as_str(), CALL);
                    prop_assert_eq!(info.account_sid.as_str(), ACCOUNT);
                    prop_assert_eq!(info.custom_parameters.get("token"), None);
                }
                Output::Media(_) | Output::Dtmf(_) | Output::Mark(_) => {
                    prop_assert_eq!(authenticated, 1, "{:?} before authentication", out);
                }
                Output::Stop(_) => {
                    prop_assert_eq!(authenticated, 1, "stop before authentication");
                    closed = true;
                }
                Output::Close(reason) => {
                    let want = match (&event, &owned) {
                        (Event::Binary, _) => 1003,
                        (Event::TooLarge, _) => 1009,
                        (_, Ok(t)) if t.len() > PROP_MAX => 1009,
                        _ => 1008,
                    };
                    prop_assert_eq!(reason.close_code().as_u16(), want, "{:?} on {:?}", reason, a);
                    closed = true;
                }
                Output::Nothing => {
                    if matches!(event, Event::PeerClosed) {
                        closed = true;
                    }
                }
                Output::Redeem(_) => prop_assert!(false, "a redemption was left unanswered"),
            }
            prop_assert_eq!(s.is_closed(), closed);
            prop_assert_eq!(s.is_authenticated(), authenticated == 1 && !closed);
            prop_assert_eq!(w.streamed(CALL), authenticated);
        }
    }
}
