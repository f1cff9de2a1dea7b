//! Target `session`: sequences of events on two connections sharing one replay store.

use std::time::Duration;

use crate::limits::DEFAULT_START_TIMEOUT;
use crate::session::{AuthContext, Event, Output, Reason, Session, StreamInfo, UrlToken};
use crate::store::MemoryStore;
use crate::time::UnixTime;

use super::Crate;
use super::checks::{Redeemed, SessionCode, check_authenticated, close_code_of, handle_with_store};
#[cfg(doc)]
use super::fixtures::STREAM;
use super::fixtures::{
    FixtureToken, NOW, SESSION_MAX_MESSAGE_BYTES, STREAM_PATH, fixture_store, fixture_token,
    fixtures, violated,
};
use super::messages::{
    ByteEdit, MAX_EDITS, StartSpec, StreamChoice, Template, apply_edit, message_json, start_json,
};

/// Most events of one `session` input that are driven (the rest is ignored), so that one
/// iteration stays short.
pub const MAX_SESSION_STEPS: usize = 64;

/// The token in the upgrade request target of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum UrlTokenChoice {
    /// `/voice/stream` (every real Twilio connection).
    None,
    /// `/voice/stream?token={fixture token}`.
    Fixture(FixtureToken),
    /// `/voice/stream?{query}`.
    Query(String),
}

impl UrlTokenChoice {
    fn target(&self) -> String {
        match self {
            Self::None => STREAM_PATH.to_owned(),
            Self::Fixture(which) => format!("{STREAM_PATH}?token={}", fixture_token(*which)),
            Self::Query(q) => format!("{STREAM_PATH}?{q}"),
        }
    }
}

/// One event on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum SessionEvent {
    /// `connected`.
    Connected,
    /// A `start`.
    Start(StartSpec),
    /// `media` for a stream.
    Media(StreamChoice),
    /// `dtmf` for a stream.
    Dtmf(StreamChoice),
    /// `mark` for a stream.
    Mark(StreamChoice),
    /// `stop` for a stream.
    Stop(StreamChoice),
    /// An event Twilio does not define, for a stream.
    Unknown(StreamChoice),
    /// A message of kind `template` for [`STREAM`] with byte edits; text that is no longer
    /// UTF-8 arrives as [`Event::Malformed`], as the WebSocket layer would report it.
    Mutated {
        /// The message.
        template: Template,
        /// The edits (at most [`MAX_EDITS`] are applied).
        edits: Vec<ByteEdit>,
    },
    /// Any text message.
    Text(String),
    /// A text message one byte over [`SESSION_MAX_MESSAGE_BYTES`].
    Oversized,
    /// A binary message.
    Binary,
    /// The transport refused a message over the size limit.
    TooLarge,
    /// A ping or pong.
    Control,
    /// A frame the transport could not decode.
    Malformed,
    /// Time passes by this many milliseconds, then a timer tick.
    Tick(u16),
    /// The peer closes.
    PeerClosed,
}

/// One step of a `session` input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Step {
    /// Whether the event happens on the second connection (otherwise the first).
    pub second: bool,
    /// The event.
    pub event: SessionEvent,
}

/// Input of the `session` target: two connections, upgraded at [`NOW`] and sharing one
/// replay store, and the events that happen on them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SessionInput {
    /// The token in the first connection's upgrade URL.
    pub first_url: UrlTokenChoice,
    /// The token in the second connection's upgrade URL.
    pub second_url: UrlTokenChoice,
    /// The events, in order (at most [`MAX_SESSION_STEPS`] are driven).
    pub steps: Vec<Step>,
}

/// What a `session` input reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionOutcome {
    /// Streams authenticated (over both connections).
    pub authenticated: usize,
    /// Media, dtmf, mark and stop messages handed to the application.
    pub delivered: usize,
    /// Closes asked for.
    pub closes: usize,
}

struct Connection {
    session: Option<Session>,
    target: String,
    /// The stream's identity while it is authenticated.
    info: Option<StreamInfo>,
    /// Whether this connection has ever been authenticated.
    authenticated_once: bool,
}

/// Target `session`: drives [`Session::handle`] with the input's events on two connections
/// that share one replay store, with a clock that starts at [`NOW`] and moves only on
/// [`SessionEvent::Tick`].
///
/// Invariants, checked after every event:
/// - no media, dtmf, mark or stop reaches the application before `Authenticated`, and before
///   it the session asks for nothing but a close (nothing else is sent to the peer);
/// - at most one `Authenticated` per connection, and per call and per token over both
///   connections (single use, one stream per call); each is for the configured account and
///   for exactly the account and call the presented token was issued for;
/// - once closed, a session stays closed and every event produces `Nothing`;
/// - every close carries the code its cause specifies and it is 1003 (binary), 1009 (over
///   the size limit) or 1008 (everything else); a close ends the session;
/// - a session still waiting for `start` at its deadline closes on the next tick or text
///   message (1008), and a tick before it changes nothing;
/// - an authenticated stream keeps its identity, and every message delivered is for it.
pub fn session(input: &SessionInput) -> SessionOutcome {
    session_with(&Crate, input)
}

/// [`session()`] over `code`.
pub fn session_with<C: SessionCode + ?Sized>(code: &C, input: &SessionInput) -> SessionOutcome {
    let fx = fixtures();
    let store = fixture_store();
    let ctx = AuthContext {
        keys: &fx.keys,
        expected_account: &fx.account,
        max_message_bytes: SESSION_MAX_MESSAGE_BYTES,
    };
    let mut conns = [&input.first_url, &input.second_url].map(|u| {
        let target = u.target();
        Connection {
            session: Some(Session::new(
                NOW,
                DEFAULT_START_TIMEOUT,
                UrlToken::from_target(&target),
            )),
            target,
            info: None,
            authenticated_once: false,
        }
    });
    let mut now = NOW;
    let mut redeemed = Redeemed::default();
    let mut outcome = SessionOutcome::default();

    for step in input.steps.iter().take(MAX_SESSION_STEPS) {
        let [first, second] = &mut conns;
        let conn = if step.second { second } else { first };
        let owned_text;
        let event = match &step.event {
            SessionEvent::Connected => {
                owned_text = message_json(Template::Connected, StreamChoice::Stream);
                Event::Text(&owned_text)
            }
            SessionEvent::Start(spec) => {
                owned_text = start_json(spec);
                Event::Text(&owned_text)
            }
            SessionEvent::Media(s) => {
                owned_text = message_json(Template::Media, *s);
                Event::Text(&owned_text)
            }
            SessionEvent::Dtmf(s) => {
                owned_text = message_json(Template::Dtmf, *s);
                Event::Text(&owned_text)
            }
            SessionEvent::Mark(s) => {
                owned_text = message_json(Template::Mark, *s);
                Event::Text(&owned_text)
            }
            SessionEvent::Stop(s) => {
                owned_text = message_json(Template::Stop, *s);
                Event::Text(&owned_text)
            }
            SessionEvent::Unknown(s) => {
                owned_text = message_json(Template::Unknown, *s);
                Event::Text(&owned_text)
            }
            SessionEvent::Mutated { template, edits } => {
                let mut bytes = message_json(*template, StreamChoice::Stream).into_bytes();
                for e in edits.iter().take(MAX_EDITS) {
                    apply_edit(&mut bytes, *e);
                }
                match String::from_utf8(bytes) {
                    Ok(t) => {
                        owned_text = t;
                        Event::Text(&owned_text)
                    }
                    Err(_) => Event::Malformed,
                }
            }
            SessionEvent::Text(t) => Event::Text(t),
            SessionEvent::Oversized => Event::Text(&fx.oversized),
            SessionEvent::Binary => Event::Binary,
            SessionEvent::TooLarge => Event::TooLarge,
            SessionEvent::Control => Event::Control,
            SessionEvent::Malformed => Event::Malformed,
            SessionEvent::Tick(ms) => {
                now = now.saturating_add(Duration::from_millis(u64::from(*ms)));
                Event::Tick
            }
            SessionEvent::PeerClosed => Event::PeerClosed,
        };
        let world = World {
            code,
            ctx: &ctx,
            store: &store,
        };
        step_connection(&world, conn, event, now, &mut redeemed, &mut outcome);
    }
    outcome
}

/// What every step of one `session` input shares: the code under test, the configuration and
/// the replay store.
struct World<'a, C: ?Sized> {
    code: &'a C,
    ctx: &'a AuthContext<'a>,
    store: &'a MemoryStore,
}

fn step_connection<C: SessionCode + ?Sized>(
    world: &World<'_, C>,
    conn: &mut Connection,
    event: Event<'_>,
    now: UnixTime,
    redeemed: &mut Redeemed,
    outcome: &mut SessionOutcome,
) {
    let World { code, ctx, store } = *world;
    let Some(before) = conn.session.take() else {
        violated(format_args!("connection lost its session"))
    };
    let was_closed = before.is_closed();
    let was_authenticated = before.is_authenticated();
    let past_deadline = before.deadline().is_some_and(|d| now >= d);
    if was_authenticated != conn.info.is_some() {
        violated(format_args!(
            "the session is authenticated without an Authenticated output, or the reverse"
        ));
    }
    let (next, output) = handle_with_store(code, before, event, now, ctx, store);

    if was_closed && (output != Output::Nothing || !next.is_closed()) {
        violated(format_args!(
            "a closed session produced {output:?} or reopened on {event:?}"
        ));
    }
    if !was_closed {
        match event {
            Event::PeerClosed if output != Output::Nothing || !next.is_closed() => {
                violated(format_args!("peer close gave {output:?}"))
            }
            Event::Binary if output != Output::Close(Reason::Binary) => {
                violated(format_args!("a binary frame gave {output:?}"))
            }
            Event::TooLarge if output != Output::Close(Reason::TooLarge) => {
                violated(format_args!("an oversized frame gave {output:?}"))
            }
            Event::Malformed if output != Output::Close(Reason::Malformed) => {
                violated(format_args!("a malformed frame gave {output:?}"))
            }
            Event::Control
                if !was_authenticated && output != Output::Close(Reason::ControlBeforeStart) =>
            {
                violated(format_args!("a ping before start gave {output:?}"))
            }
            Event::Control if was_authenticated && output != Output::Nothing => {
                violated(format_args!("a ping while streaming gave {output:?}"))
            }
            Event::Tick | Event::Text(_)
                if past_deadline && output != Output::Close(Reason::StartTimeout) =>
            {
                violated(format_args!(
                    "a session waiting for start past its deadline gave {output:?}"
                ))
            }
            Event::Tick if !past_deadline && output != Output::Nothing => {
                violated(format_args!("a tick before the deadline gave {output:?}"))
            }
            _ => {}
        }
    }

    match &output {
        Output::Nothing => {}
        Output::Redeem(_) => violated(format_args!("a redemption was left unanswered")),
        Output::Authenticated(info) => {
            let Event::Text(text) = event else {
                violated(format_args!("authenticated on {event:?}, not on a start"))
            };
            if was_authenticated || conn.authenticated_once {
                violated(format_args!(
                    "a second start was accepted on one connection"
                ))
            }
            if next != Session::Streaming(info.clone()) {
                violated(format_args!(
                    "authenticated, but the session is not streaming"
                ));
            }
            check_authenticated(info, text, &conn.target, now, redeemed);
            conn.info = Some((**info).clone());
            conn.authenticated_once = true;
            outcome.authenticated = outcome.authenticated.saturating_add(1);
        }
        Output::Media(_) | Output::Dtmf(_) | Output::Mark(_) | Output::Stop(_) => {
            let Some(info) = conn.info.as_ref().filter(|_| was_authenticated) else {
                violated(format_args!(
                    "{output:?} reached the application before authentication"
                ))
            };
            let sid = match &output {
                Output::Media(m) => m.stream_sid,
                Output::Dtmf(d) => d.stream_sid,
                Output::Mark(m) => m.stream_sid,
                Output::Stop(s) => s.stream_sid,
                _ => info.stream_sid,
            };
            if sid != info.stream_sid {
                violated(format_args!(
                    "a message for stream {sid} was delivered to stream {}",
                    info.stream_sid
                ));
            }
            let stopped = matches!(output, Output::Stop(_));
            if stopped != next.is_closed() {
                violated(format_args!(
                    "after {output:?} the session closed = {}",
                    next.is_closed()
                ));
            }
            outcome.delivered = outcome.delivered.saturating_add(1);
        }
        Output::Close(reason) => {
            let sent = close_code_of(code, *reason);
            // RFC 6455 §7.4.1: 1003 for data it cannot accept (binary), 1009 for a message
            // too big, 1008 for a policy violation (everything else).
            let expected = match event {
                Event::Binary => 1003,
                Event::TooLarge => 1009,
                Event::Text(t)
                    if t.len() > ctx.max_message_bytes && *reason != Reason::StartTimeout =>
                {
                    1009
                }
                _ => 1008,
            };
            if sent != expected {
                violated(format_args!(
                    "close for {reason:?} on {event:?} carries {sent}, the specification says {expected}"
                ));
            }
            if !next.is_closed() {
                violated(format_args!("a close left the session open"));
            }
            outcome.closes = outcome.closes.saturating_add(1);
        }
    }

    match (&next, &conn.info) {
        (Session::Streaming(now_info), Some(info)) if **now_info != *info => {
            violated(format_args!("a streaming session changed identity"))
        }
        (Session::Streaming(_), None) => {
            violated(format_args!("streaming without an Authenticated output"))
        }
        _ => {}
    }
    if !next.is_authenticated() {
        // The stream (if any) has ended.
        conn.info = None;
    }
    conn.session = Some(next);
}
