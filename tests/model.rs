//! Model checking of the whole trust protocol with [stateright]: every interleaving of Twilio,
//! the server and an attacker, up to stated bounds, explored exhaustively (breadth first).
//!
//! # What is modelled
//!
//! - **Twilio**, for each call: the signed voice webhook; then, with the token of the answer,
//!   a signed upgrade to the stream URL, and on that connection `start` (the token in
//!   `customParameters`) and one `media`, in order.
//! - **The server**, with the crate's real pure functions on real bytes: the webhook decision
//!   ([`webhook::decide`]) on a signed form body; minting through the replay store
//!   ([`store::candidate_with_nonce`], [`CallRecord::mint`], [`store::token_of`]); the upgrade
//!   decision ([`upgrade::decide`]) on a real request head; [`Session::new`] and
//!   [`Session::handle`] on real JSON frames; and each redemption the session asks for, carried
//!   out as `src/server/stream.rs` does: a stream slot first (`--max-streams`, a counter here;
//!   `tests/loom.rs` checks the real one), then [`store::presented`] and [`CallRecord::redeem`],
//!   reported back with [`Event::Redeemed`]. A redemption is a step of its own, so other
//!   connections (and time) interleave between a verified `start` and its result, and the
//!   connection reads nothing meanwhile, as the server does. The store is a value in the model
//!   state, a map from [`CallId`] to [`CallRecord`] with the records' rules applied to it one
//!   operation at a time: exactly what `MemoryStore` does under its mutex (and the Redis store
//!   in its scripts). Expired records are forgotten when time passes, as `MemoryStore` purges
//!   them.
//! - **Time**, in steps of 30 s: the start timeout and the token TTL are one step, the call
//!   memory two, so a run with two steps crosses every one of them. Each step delivers `Tick`
//!   to every connection whose start deadline has come, as the server's timer does.
//! - **An attacker** with a budget of actions, who sees every message: the webhooks (it may
//!   replay any of them, at any time, as often as its budget allows), the TwiML answers and so
//!   every token ever minted (stronger than a network attacker: one that reads logs), the
//!   upgrade request (its signature is the same for every call and never expires). An action
//!   is a webhook replay, a connection of its own opened (replaying Twilio's upgrade, or
//!   unsigned with a token in the URL when the signature mode lets it) with a first frame (a
//!   `start` for any call with any token it knows, or `media`), or a `media` on a connection
//!   it holds. Time passing is not budgeted, but bounded. Reordering, duplication and loss are
//!   the interleavings themselves: nothing makes Twilio's steps, the server's redemptions, the
//!   attacker's replays or time happen in any particular order, and any of them may never
//!   happen. With `junk` on, the attacker also sends forged webhooks, tampered, foreign-key and
//!   garbage tokens, conflicting URL and `start` tokens, `start`s under another account,
//!   second `start`s, `connected` and `stop`, opens connections it leaves silent or signs
//!   with another auth token, and cuts any connection, Twilio's included.
//!
//! Not modelled: nonces are not random but unique per (call, mint) (the k-th token issued for
//! call c has nonce (c, k)), which is what 128 random bits give with overwhelming probability;
//! an HTTP webhook is one step (request, decision, mint, answer); Twilio's TLS connections
//! cannot be written to by the attacker; `--max-pending` evictions (`tests/loom.rs` and the
//! capacity unit tests cover them).
//!
//! # Properties
//!
//! Each is stated in words on the function that checks it: no media before authentication,
//! at most `streams_per_call` streams per call within its call memory, an authenticated
//! stream is for the call and account its token was minted for, a connection without a
//! minted token never authenticates, and (without an attacker) every legitimate call
//! authenticates and streams (`eventually`). The properties read what the model recorded of
//! the outputs (which connection got `Authenticated`, what it had presented, what reached the
//! application), never the session's own opinion of itself. `sometimes` properties prove the
//! exploration reaches the interesting places (a legitimate stream, an attacker winning a
//! race with a stolen token, a replay refused by the store, a token of another call, an
//! expired token, a timeout, a forgotten call minting again ...), so a run cannot pass by
//! exploring little.
//!
//! The model has teeth: the store rules, the webhook check and the session step are
//! swappable pieces ([`Rules`]), and every property is broken by some deliberately broken
//! piece, with the counterexample printed step by step (up to the first state that breaks
//! it): a store that forgets a redemption, one that counts streams off by one and one that
//! forgets the call memory break the streams-per-call property; a session that forwards
//! media sent before `start` breaks "no media before authentication"; a session that
//! verifies the token for any call and reports `start.callSid` breaks "authenticates as
//! minted"; a webhook check that still accepts the retired auth token lets a forged
//! webhook mint, which breaks "no connection without a minted token authenticates"; and a
//! call refused for want of a stream slot breaks liveness.
//!
//! `cargo test --test model -- --nocapture` prints the bounds, the states explored and the
//! time; with `STREAMGUARD_MODEL_DEEP=1` in the environment
//! (`STREAMGUARD_MODEL_DEEP=1 cargo test --release --test model -- --nocapture`) the deep
//! test runs larger bounds (about 7 million states, two to three minutes, under 2 GiB);
//! without it, that test prints one line saying it was skipped.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use stateright::{Checker, Expectation, HasDiscoveries, Model, Path, Property};
use streamguard::invariants::{
    ACCOUNT, AUTH_TOKEN, NOW, OTHER_ACCOUNT, OTHER_AUTH_TOKEN, TOKEN_KEY, UNUSED_TOKEN_KEY,
    WEBSOCKET_KEY,
};
use streamguard::secret::{AuthToken, KeySet, TokenKey};
use streamguard::session::{
    AuthContext, Event, Output, Reason, RedeemFailure, Redemption, Session,
};
use streamguard::sid::{AccountSid, CallSid};
use streamguard::signature::{self, compute_signature};
use streamguard::store::{
    self, CallId, CallRecord, LiveToken, MintDecision, Presented, RedeemError, RedeemRefusal,
    StoreKey, StorePolicy,
};
use streamguard::time::UnixTime;
use streamguard::token::{TokenError, issue_with_nonce};
use streamguard::upgrade::{self, RequestHead, SignatureMode, UpgradePolicy};
use streamguard::webhook::{self, Verified, WebhookPolicy, WebhookReject};
use streamguard::wire::frames::{Inbound, parse_inbound};

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

const WEBHOOK_URL: &str = "https://streamguard.example/voice/webhook";
const STREAM_URL: &str = "wss://streamguard.example/voice/stream";
const STREAM_PATH: &str = "/voice/stream";

/// One step of time.
const QUANTUM: Duration = Duration::from_secs(30);
/// `--start-timeout-ms`: one quantum.
const START_TIMEOUT: Duration = QUANTUM;
/// `--token-ttl`: one quantum.
const TOKEN_TTL: Duration = QUANTUM;
/// `--call-memory`, in quanta.
const CALL_MEMORY_QUANTA: u8 = 2;
/// `--call-memory`: two quanta.
const CALL_MEMORY: Duration = Duration::from_secs(QUANTUM.as_secs() * CALL_MEMORY_QUANTA as u64);

/// The bounds of one run.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    /// Twilio calls, each with its own CallSid.
    calls: u8,
    /// Connections opened in all (Twilio's and the attacker's).
    connections: u8,
    /// Actions the attacker may take (time passing is not one).
    attacker_actions: u8,
    /// Steps of time ([`QUANTUM`]) that may pass.
    quanta: u8,
    /// `--streams-per-call`.
    streams_per_call: u32,
    /// `--max-streams`.
    max_streams: u8,
    /// `--upgrade-signature`.
    upgrade_mode: SignatureMode,
    /// Whether the attacker also sends what should only be refused (see the module
    /// documentation) and cuts connections.
    junk: bool,
}

impl Bounds {
    /// Default run 1: one call, three connections, an attacker with three actions, two steps
    /// of time (past the start timeout, the TTL and the call memory), the upgrade signature
    /// `if-present` (weaker than the default `required`, so the attacker can also open
    /// unsigned connections with a token in the URL: every property must hold even so).
    const ONE_CALL: Self = Self {
        calls: 1,
        connections: 3,
        attacker_actions: 3,
        quanta: 2,
        streams_per_call: 1,
        max_streams: 2,
        upgrade_mode: SignatureMode::IfPresent,
        junk: false,
    };

    /// Default run 2: two calls, three connections, an attacker with two actions, one step
    /// of time (past the start timeout and the TTL).
    const TWO_CALLS: Self = Self {
        calls: 2,
        attacker_actions: 2,
        quanta: 1,
        ..Self::ONE_CALL
    };

    /// Twilio alone: three calls, no attacker, no time passing.
    const HONEST: Self = Self {
        calls: 3,
        connections: 3,
        attacker_actions: 0,
        quanta: 0,
        streams_per_call: 1,
        max_streams: 3,
        upgrade_mode: SignatureMode::Required,
        junk: false,
    };

    fn describe(&self) -> String {
        format!(
            "{} calls, {} connections, {} attacker actions{}, {} steps of {} s (start timeout \
             {} s, TTL {} s, call memory {} s), streams-per-call {}, max-streams {}, upgrade \
             signature {}",
            self.calls,
            self.connections,
            self.attacker_actions,
            if self.junk { " (with junk)" } else { "" },
            self.quanta,
            QUANTUM.as_secs(),
            START_TIMEOUT.as_secs(),
            TOKEN_TTL.as_secs(),
            CALL_MEMORY.as_secs(),
            self.streams_per_call,
            self.max_streams,
            self.upgrade_mode.as_str(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The swappable rules
// ---------------------------------------------------------------------------------------------

/// The swappable pieces of the server: the rules the replay store applies to one call's
/// record, the webhook check, and one step of a connection's session. The real ones are the
/// crate's [`CallRecord::mint`], [`CallRecord::redeem`], [`webhook::decide`] and
/// [`Session::handle`] (every method's default); the broken ones below each override one or
/// two of them, to show that the model catches a server that gets them wrong.
trait Rules: Send + Sync + 'static {
    /// What the rules are, for the report.
    fn name(&self) -> &'static str;

    /// The webhook route's check of a request.
    fn webhook(
        &self,
        head: &RequestHead,
        body: &[u8],
        policy: &WebhookPolicy<'_>,
    ) -> Result<Verified, WebhookReject> {
        webhook::decide(head, body, policy)
    }

    /// One event on a connection's session. `world` is the server's configuration (and the
    /// calls of the model, which a broken session may look at).
    fn handle<'a>(
        &self,
        session: Session,
        event: Event<'a>,
        now: UnixTime,
        ctx: &AuthContext<'_>,
        world: &World,
    ) -> (Session, Output<'a>) {
        let _ = world;
        session.handle(event, now, ctx)
    }

    fn mint(
        &self,
        record: Option<CallRecord>,
        candidate: LiveToken,
        now: UnixTime,
        policy: &StorePolicy,
    ) -> (Option<CallRecord>, MintDecision) {
        CallRecord::mint(record, candidate, now, policy)
    }

    fn redeem(
        &self,
        record: Option<CallRecord>,
        presented: &Presented,
        now: UnixTime,
        policy: &StorePolicy,
    ) -> (Option<CallRecord>, Result<(), RedeemRefusal>) {
        CallRecord::redeem(record, presented, now, policy)
    }
}

/// The crate's rules, unchanged.
struct CrateRules;

impl Rules for CrateRules {
    fn name(&self) -> &'static str {
        "the crate's (CallRecord::mint / redeem, webhook::decide, Session::handle)"
    }
}

/// Broken: a successful redemption is not written back (the token stays live).
struct ForgetsRedemption;

impl Rules for ForgetsRedemption {
    fn name(&self) -> &'static str {
        "broken: forgets a redemption"
    }

    fn redeem(
        &self,
        record: Option<CallRecord>,
        presented: &Presented,
        now: UnixTime,
        policy: &StorePolicy,
    ) -> (Option<CallRecord>, Result<(), RedeemRefusal>) {
        match CallRecord::redeem(record, presented, now, policy) {
            (_, Ok(())) => (record, Ok(())),
            refused => refused,
        }
    }
}

/// Broken: counts streams off by one (`>` for `>=`), so a call gets a second stream: a
/// replayed webhook mints again after the first, and that token redeems.
struct OffByOneStreamCount;

fn one_more(policy: &StorePolicy) -> StorePolicy {
    StorePolicy {
        streams_per_call: policy.streams_per_call + 1,
        ..*policy
    }
}

impl Rules for OffByOneStreamCount {
    fn name(&self) -> &'static str {
        "broken: counts streams off by one"
    }

    fn mint(
        &self,
        record: Option<CallRecord>,
        candidate: LiveToken,
        now: UnixTime,
        policy: &StorePolicy,
    ) -> (Option<CallRecord>, MintDecision) {
        CallRecord::mint(record, candidate, now, &one_more(policy))
    }

    fn redeem(
        &self,
        record: Option<CallRecord>,
        presented: &Presented,
        now: UnixTime,
        policy: &StorePolicy,
    ) -> (Option<CallRecord>, Result<(), RedeemRefusal>) {
        CallRecord::redeem(record, presented, now, &one_more(policy))
    }
}

/// Broken: a redemption does not extend the record to the call memory (it is forgotten when
/// the token would have expired).
struct ForgetsCallMemory;

impl Rules for ForgetsCallMemory {
    fn name(&self) -> &'static str {
        "broken: forgets the call memory"
    }

    fn redeem(
        &self,
        record: Option<CallRecord>,
        presented: &Presented,
        now: UnixTime,
        policy: &StorePolicy,
    ) -> (Option<CallRecord>, Result<(), RedeemRefusal>) {
        match CallRecord::redeem(record, presented, now, policy) {
            (Some(next), Ok(())) => (
                Some(CallRecord {
                    keep_until: record.map_or(next.keep_until, |r| r.keep_until),
                    ..next
                }),
                Ok(()),
            ),
            other => other,
        }
    }
}

/// Broken: a session that hands a `media` frame arriving before `start` to the application
/// (as early audio) instead of closing the connection. Everything else is the crate's.
struct ForwardsEarlyMedia;

impl Rules for ForwardsEarlyMedia {
    fn name(&self) -> &'static str {
        "broken: the session forwards media that comes before start"
    }

    fn handle<'a>(
        &self,
        session: Session,
        event: Event<'a>,
        now: UnixTime,
        ctx: &AuthContext<'_>,
        _world: &World,
    ) -> (Session, Output<'a>) {
        if let (Session::AwaitingStart { .. }, Event::Text(text)) = (&session, event)
            && let Ok(Inbound::Media(m)) = parse_inbound(text, ctx.max_message_bytes)
        {
            return (session, Output::Media(m));
        }
        session.handle(event, now, ctx)
    }
}

/// Broken: a session that does not bind the token to `start.callSid`. When the token does not
/// verify for the call `start` names, it is tried for every other call the server takes
/// webhooks for; if it verifies for one, it is redeemed for that call (so the replay store,
/// which keys records by call, accepts it), but the stream is reported as the call `start`
/// named: the identity comes from the unauthenticated frame, not from the token.
struct IgnoresTheCallBinding;

impl Rules for IgnoresTheCallBinding {
    fn name(&self) -> &'static str {
        "broken: the session verifies the token for any call, reports start.callSid"
    }

    fn handle<'a>(
        &self,
        session: Session,
        event: Event<'a>,
        now: UnixTime,
        ctx: &AuthContext<'_>,
        world: &World,
    ) -> (Session, Output<'a>) {
        let (next, output) = session.clone().handle(event, now, ctx);
        let Event::Text(text) = event else {
            return (next, output);
        };
        if output != Output::Close(Reason::Token(TokenError::BadMac)) {
            return (next, output);
        }
        let Some(named) = world.calls.iter().find(|c| text.contains(c.as_str())) else {
            return (next, output);
        };
        for other in world.calls.iter().filter(|c| *c != named) {
            let text = text.replace(named.as_str(), other.as_str());
            if let (Session::Redeeming(mut info), Output::Redeem(r)) =
                session.clone().handle(Event::Text(&text), now, ctx)
            {
                info.call_sid = *named;
                return (Session::Redeeming(info), Output::Redeem(r));
            }
        }
        (next, output)
    }
}

/// Broken: a webhook check that still accepts requests signed with the auth token that was
/// rotated out (here the model's other auth token, the one the attacker forges with).
struct AcceptsTheRetiredAuthToken {
    retired: AuthToken,
}

impl AcceptsTheRetiredAuthToken {
    fn new() -> Self {
        Self {
            retired: AuthToken::new(OTHER_AUTH_TOKEN).unwrap(),
        }
    }
}

impl Rules for AcceptsTheRetiredAuthToken {
    fn name(&self) -> &'static str {
        "broken: the webhook check still accepts the retired auth token"
    }

    fn webhook(
        &self,
        head: &RequestHead,
        body: &[u8],
        policy: &WebhookPolicy<'_>,
    ) -> Result<Verified, WebhookReject> {
        webhook::decide(head, body, policy).or_else(|_| {
            let retired = WebhookPolicy {
                auth: &self.retired,
                ..*policy
            };
            webhook::decide(head, body, &retired)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// State and actions
// ---------------------------------------------------------------------------------------------

/// A token as the model refers to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Tok {
    /// The `k`-th token the server issued for call `call`.
    Minted { call: u8, k: u8 },
    /// That token with one character of its MAC changed.
    Tampered { call: u8, k: u8 },
    /// A well-formed token for call 0, signed with a key the server does not have.
    Foreign,
    /// Not a token at all.
    Garbage,
}

/// Which webhook minted a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Origin {
    /// Twilio's own webhook.
    Twilio,
    /// The attacker's replay of a webhook Twilio sent.
    Replay,
    /// A webhook the attacker forged (never accepted, if the server is right).
    Forged,
}

/// A token the server issued: what the TwiML answer carried, and for what.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Minted {
    text: String,
    /// The webhook's CallSid and AccountSid, as [`webhook::decide`] verified them.
    call_sid: CallSid,
    account_sid: AccountSid,
    origin: Origin,
    at: u8,
}

/// Where Twilio is with one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Twilio {
    /// The webhook is still to be sent.
    Idle,
    /// The webhook was answered with this token.
    Answered(Tok),
    /// Streaming with `token` on connection `conn`; `sent` of its frames (start, media) sent
    /// so far.
    Streaming { token: Tok, conn: u8, sent: u8 },
    /// Finished (refused, closed, or done).
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Owner {
    Twilio(u8),
    Attacker,
}

/// A redemption the session asked for, not yet carried out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Pending {
    redemption: Redemption,
    at: u8,
}

/// One upgraded connection: the session and what the server holds for it, and the model's
/// record of what happened on it (the "ghost" fields the properties read).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Conn {
    owner: Owner,
    session: Session,
    pending: Option<Pending>,
    /// Holds a stream slot.
    slot: bool,
    /// The token in the upgrade URL, if any.
    url: Option<Tok>,
    /// The tokens (URL, customParameters) of the `start` the session verified.
    presented: Option<(Option<Tok>, Option<Tok>)>,
    /// When the store was asked to redeem.
    redeem_at: Option<u8>,
    /// `Output::Authenticated` was produced, for this CallSid and AccountSid.
    authenticated: Option<(CallSid, AccountSid)>,
    authentications: u8,
    /// Media, dtmf, mark or stop reached the application before `Output::Authenticated`.
    app_before_auth: bool,
    /// Media frames handed to the application.
    media: u8,
    /// Why the server closed it (the metrics label).
    closed: Option<&'static str>,
}

/// One stream the server authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Authentication {
    call_sid: CallSid,
    /// When the store redeemed its token.
    at: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    /// Quanta since [`NOW`].
    now: u8,
    /// The replay store.
    store: BTreeMap<CallId, CallRecord>,
    /// Tokens issued, per call index, in order.
    minted: Vec<Vec<Minted>>,
    twilio: Vec<Twilio>,
    conns: Vec<Conn>,
    /// Stream slots taken (`--max-streams`).
    active_streams: u8,
    attacker_left: u8,
    /// Twilio's webhook of each call has been sent (and seen).
    seen_webhooks: Vec<bool>,
    /// Twilio's upgrade request has been sent (and seen).
    seen_upgrade: bool,
    authentications: Vec<Authentication>,
}

/// What the attacker opens a connection with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upgrade {
    /// Twilio's upgrade request, replayed (signed, no query).
    Replayed,
    /// Unsigned, with `?token=` in the URL.
    UrlToken(Tok),
    /// Signed with another auth token.
    BadSignature,
}

/// A frame the attacker sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    Connected,
    /// `start` for call `call` (its stream), under the configured account or another.
    Start {
        call: u8,
        other_account: bool,
        token: Option<Tok>,
    },
    Media {
        call: u8,
    },
    Stop {
        call: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Twilio sends the voice webhook of call c.
    TwilioWebhook(u8),
    /// Twilio opens the stream of call c.
    TwilioUpgrade(u8),
    /// Twilio sends the next frame of call c.
    TwilioFrame(u8),
    /// The server carries out the redemption connection j asked for.
    ServerRedeem(u8),
    /// A quantum of time passes.
    Wait,
    /// The attacker replays Twilio's webhook of call c.
    ReplayWebhook(u8),
    /// The attacker sends a webhook for call c signed with another auth token.
    ForgedWebhook(u8),
    /// The attacker opens a connection and sends nothing (yet).
    Open(Upgrade),
    /// The attacker opens a connection and sends its first frame.
    Connect(Upgrade, Frame),
    /// The attacker sends a frame on its connection j.
    Send(u8, Frame),
    /// The attacker cuts connection j.
    Cut(u8),
}

/// What happened in a step, for counterexample traces (collected only when printing one).
struct Notes(Option<Vec<String>>);

impl Notes {
    fn add(&mut self, note: impl FnOnce() -> String) {
        if let Some(v) = &mut self.0 {
            v.push(note());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// The server's configuration and the requests Twilio and the attacker can send.
struct World {
    keys: KeySet,
    store_key: StoreKey,
    auth: AuthToken,
    account: AccountSid,
    policy: StorePolicy,
    calls: Vec<CallSid>,
    /// Twilio's webhook of each call (head, body).
    webhooks: Vec<(RequestHead, Vec<u8>)>,
    /// The same, signed with another auth token.
    forged_webhooks: Vec<(RequestHead, Vec<u8>)>,
    twilio_upgrade: RequestHead,
    bad_upgrade: RequestHead,
    foreign_token: String,
}

fn call_sid(c: u8) -> String {
    format!("CA{:032x}", 0xca11_0000_u32 + u32::from(c))
}

fn stream_sid(c: u8) -> String {
    format!("MZ{:032x}", 0x5742_0000_u32 + u32::from(c))
}

fn webhook_request(auth: &AuthToken, call: &str) -> (RequestHead, Vec<u8>) {
    let params = [
        ("AccountSid", ACCOUNT),
        ("CallSid", call),
        ("From", "+14155550100"),
        ("To", "+14155550199"),
    ];
    // Input construction: the signature Twilio computes (the crate's signing is pinned to
    // Twilio's known answers in tests/signature.rs).
    let sig = compute_signature(auth, WEBHOOK_URL, &params);
    let body = params
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B")))
        .collect::<Vec<_>>()
        .join("&");
    let head = RequestHead {
        method: "POST".into(),
        target: "/voice/webhook".into(),
        headers: vec![
            ("Host".into(), b"streamguard.example".to_vec()),
            (
                "Content-Type".into(),
                b"application/x-www-form-urlencoded".to_vec(),
            ),
            (signature::HEADER.into(), sig.into_bytes()),
        ],
    };
    (head, body.into_bytes())
}

fn upgrade_request(target: &str, sig: Option<String>) -> RequestHead {
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        ("Host".into(), b"streamguard.example".to_vec()),
        ("Upgrade".into(), b"websocket".to_vec()),
        ("Connection".into(), b"Upgrade".to_vec()),
        ("Sec-WebSocket-Version".into(), b"13".to_vec()),
        (
            "Sec-WebSocket-Key".into(),
            WEBSOCKET_KEY.as_bytes().to_vec(),
        ),
    ];
    if let Some(sig) = sig {
        headers.push((signature::HEADER.into(), sig.into_bytes()));
    }
    RequestHead {
        method: "GET".into(),
        target: target.into(),
        headers,
    }
}

impl World {
    fn new(bounds: &Bounds) -> Self {
        let auth = AuthToken::new(AUTH_TOKEN).unwrap();
        let other_auth = AuthToken::new(OTHER_AUTH_TOKEN).unwrap();
        let calls: Vec<String> = (0..bounds.calls).map(call_sid).collect();
        let no_params: &[(&str, &str)] = &[];
        let foreign = TokenKey::from_bytes(&UNUSED_TOKEN_KEY).unwrap();
        let account = AccountSid::parse(ACCOUNT).unwrap();
        let foreign_token = issue_with_nonce(
            &foreign,
            &account,
            &CallSid::parse(&call_sid(0)).unwrap(),
            NOW,
            TOKEN_TTL,
            [0xF0; 16],
        )
        .unwrap();
        Self {
            keys: KeySet::single(TokenKey::from_bytes(&TOKEN_KEY).unwrap()),
            store_key: StoreKey::derive(&auth),
            webhooks: calls.iter().map(|c| webhook_request(&auth, c)).collect(),
            forged_webhooks: calls
                .iter()
                .map(|c| webhook_request(&other_auth, c))
                .collect(),
            twilio_upgrade: upgrade_request(
                STREAM_PATH,
                Some(compute_signature(&auth, STREAM_URL, no_params)),
            ),
            bad_upgrade: upgrade_request(
                STREAM_PATH,
                Some(compute_signature(&other_auth, STREAM_URL, no_params)),
            ),
            foreign_token: foreign_token.as_str().to_owned(),
            auth,
            account,
            policy: StorePolicy {
                token_ttl: TOKEN_TTL,
                call_memory: CALL_MEMORY,
                streams_per_call: bounds.streams_per_call,
            },
            calls: calls.iter().map(|c| CallSid::parse(c).unwrap()).collect(),
        }
    }
}

fn time(q: u8) -> UnixTime {
    NOW.checked_add(QUANTUM * u32::from(q)).unwrap()
}

/// The nonce of the `k`-th token issued for call `c`: unique per (call, mint).
fn nonce(c: u8, k: u8) -> [u8; 16] {
    let mut n = [0x5A; 16];
    n[0] = c;
    n[1] = k;
    n
}

// The frames are written out as text: every value in them is a SID, a fixed word or a token
// (base64url), none of which needs JSON escaping.

fn start_json(call: u8, account: &str, token: Option<&str>) -> String {
    let stream = stream_sid(call);
    let call = call_sid(call);
    let custom = token.map_or(String::new(), |t| format!(r#""token":"{t}""#));
    format!(
        r#"{{"event":"start","sequenceNumber":"1","streamSid":"{stream}","start":{{"accountSid":"{account}","streamSid":"{stream}","callSid":"{call}","tracks":["inbound"],"customParameters":{{{custom}}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}}}}"#
    )
}

fn media_json(call: u8) -> String {
    let stream = stream_sid(call);
    format!(
        r#"{{"event":"media","sequenceNumber":"2","streamSid":"{stream}","media":{{"track":"inbound","chunk":"1","timestamp":"5","payload":"AAAA"}}}}"#
    )
}

fn stop_json(call: u8) -> String {
    let stream = stream_sid(call);
    let call = call_sid(call);
    format!(
        r#"{{"event":"stop","sequenceNumber":"3","streamSid":"{stream}","stop":{{"accountSid":"{ACCOUNT}","callSid":"{call}"}}}}"#
    )
}

fn connected_json() -> String {
    r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned()
}

/// Frames Twilio sends on its stream: `start`, one `media`.
const TWILIO_FRAMES: u8 = 2;

/// The model: Twilio, the server and the attacker, with the rules `R`.
struct Protocol<R> {
    bounds: Bounds,
    rules: R,
    world: World,
}

impl<R: Rules> Protocol<R> {
    fn new(bounds: Bounds, rules: R) -> Self {
        Self {
            world: World::new(&bounds),
            bounds,
            rules,
        }
    }

    fn ctx(&self) -> AuthContext<'_> {
        AuthContext {
            keys: &self.world.keys,
            expected_account: &self.world.account,
            max_message_bytes: 4096,
        }
    }

    fn text_of(&self, s: &State, t: Tok) -> String {
        match t {
            Tok::Minted { call, k } => s.minted[usize::from(call)][usize::from(k)].text.clone(),
            Tok::Tampered { call, k } => {
                let mut chars: Vec<char> = s.minted[usize::from(call)][usize::from(k)]
                    .text
                    .chars()
                    .collect();
                // Inside the MAC.
                chars[60] = if chars[60] == 'A' { 'B' } else { 'A' };
                chars.into_iter().collect()
            }
            Tok::Foreign => self.world.foreign_token.clone(),
            Tok::Garbage => "not-a-token".to_owned(),
        }
    }

    /// Every token the attacker knows: every one minted (it reads the TwiML answers), and,
    /// with junk, what it can make up.
    fn known_tokens(&self, s: &State) -> Vec<Tok> {
        let mut out = Vec::new();
        for (c, tokens) in s.minted.iter().enumerate() {
            for k in 0..tokens.len() {
                out.push(Tok::Minted {
                    call: c as u8,
                    k: k as u8,
                });
            }
        }
        if self.bounds.junk {
            if let Some(Tok::Minted { call, k }) = out.first().copied() {
                out.push(Tok::Tampered { call, k });
            }
            out.push(Tok::Foreign);
            out.push(Tok::Garbage);
        }
        out
    }

    fn put(s: &mut State, id: CallId, record: Option<CallRecord>) {
        match record {
            Some(r) => {
                s.store.insert(id, r);
            }
            None => {
                s.store.remove(&id);
            }
        }
    }

    /// The server's webhook route: decide, mint through the store, answer with the token.
    fn webhook(
        &self,
        s: &mut State,
        req: &(RequestHead, Vec<u8>),
        origin: Origin,
        notes: &mut Notes,
    ) -> Option<Tok> {
        let policy = WebhookPolicy {
            signed_url: WEBHOOK_URL,
            auth: &self.world.auth,
            account: &self.world.account,
        };
        let verified = match self.rules.webhook(&req.0, &req.1, &policy) {
            Ok(v) => v,
            Err(e) => {
                notes.add(|| format!("webhook refused: {} {}", e.status(), e.as_str()));
                return None;
            }
        };
        let c = self
            .world
            .calls
            .iter()
            .position(|sid| *sid == verified.call_sid)
            .expect("the webhook's CallSid is one of the model's calls");
        let now = time(s.now);
        let issued = s.minted[c].len() as u8;
        let world = &self.world;
        let candidate = store::candidate_with_nonce(
            &world.store_key,
            &world.keys,
            &verified.account_sid,
            &verified.call_sid,
            now,
            TOKEN_TTL,
            nonce(c as u8, issued),
        )
        .expect("the model's TTL is in range");
        let id = world
            .store_key
            .call_id(&verified.account_sid, &verified.call_sid);
        let (record, decision) =
            self.rules
                .mint(s.store.get(&id).copied(), candidate, now, &world.policy);
        Self::put(s, id, record);
        let (live, reused) = match decision {
            MintDecision::Issued(live) => (live, false),
            MintDecision::Reused(live) => (live, true),
            MintDecision::Refused(r) => {
                notes.add(|| format!("webhook accepted, no token: 403 ({r:?})"));
                return None;
            }
        };
        let text = store::token_of(
            &world.store_key,
            &world.keys,
            &verified.account_sid,
            &verified.call_sid,
            &live,
        )
        .expect("the token's key is in the set")
        .as_str()
        .to_owned();
        let k = match s.minted[c].iter().position(|m| m.text == text) {
            Some(k) => k,
            None => {
                assert!(!reused, "the store reused a token it never issued");
                s.minted[c].push(Minted {
                    text,
                    call_sid: verified.call_sid,
                    account_sid: verified.account_sid,
                    origin,
                    at: s.now,
                });
                s.minted[c].len() - 1
            }
        };
        let tok = Tok::Minted {
            call: c as u8,
            k: k as u8,
        };
        notes.add(|| {
            format!(
                "200, token {} {}",
                tok_name(tok),
                if reused {
                    "(the live one again)"
                } else {
                    "issued"
                }
            )
        });
        Some(tok)
    }

    /// The server's upgrade route: decide, take a pending slot, start a session.
    fn open(
        &self,
        s: &mut State,
        head: &RequestHead,
        owner: Owner,
        url: Option<Tok>,
        notes: &mut Notes,
    ) -> Option<u8> {
        let policy = UpgradePolicy {
            stream_path: STREAM_PATH,
            signed_url: STREAM_URL,
            auth: &self.world.auth,
            mode: self.bounds.upgrade_mode,
        };
        let accepted = match upgrade::decide(head, &policy) {
            Ok(a) => a,
            Err(e) => {
                notes.add(|| format!("upgrade refused: {} {}", e.status(), e.as_str()));
                return None;
            }
        };
        if s.active_streams >= self.bounds.max_streams {
            notes.add(|| "upgrade refused: 503 streams_full".to_owned());
            return None;
        }
        let j = s.conns.len() as u8;
        s.conns.push(Conn {
            owner,
            session: Session::new(time(s.now), START_TIMEOUT, accepted.url_token),
            pending: None,
            slot: false,
            url,
            presented: None,
            redeem_at: None,
            authenticated: None,
            authentications: 0,
            app_before_auth: false,
            media: 0,
            closed: None,
        });
        notes.add(|| format!("101, connection {j}"));
        Some(j)
    }

    /// Feeds one event to connection `j`'s session and carries out what it returns.
    fn feed(&self, s: &mut State, j: u8, event: Event<'_>, custom: Option<Tok>, notes: &mut Notes) {
        let now = s.now;
        let conn = &mut s.conns[usize::from(j)];
        let session = std::mem::replace(&mut conn.session, Session::Closed);
        let (next, output) = self
            .rules
            .handle(session, event, time(now), &self.ctx(), &self.world);
        conn.session = next;
        match output {
            Output::Nothing => notes.add(|| "nothing".to_owned()),
            Output::Redeem(r) => {
                notes.add(|| format!("start verified for {}: redeem", r.call_sid));
                conn.pending = Some(Pending {
                    redemption: r,
                    at: now,
                });
                conn.presented = Some((conn.url, custom));
                conn.redeem_at = Some(now);
            }
            Output::Authenticated(info) => {
                notes.add(|| format!("AUTHENTICATED as {}", info.call_sid));
                conn.authenticated = Some((info.call_sid, info.account_sid));
                conn.authentications += 1;
                let at = conn.redeem_at.expect("authenticated after a redemption");
                s.authentications.push(Authentication {
                    call_sid: info.call_sid,
                    at,
                });
            }
            Output::Media(_) | Output::Dtmf(_) | Output::Mark(_) | Output::Stop(_) => {
                notes.add(|| "handed to the application".to_owned());
                if conn.authenticated.is_none() {
                    conn.app_before_auth = true;
                }
                if matches!(output, Output::Media(_)) {
                    conn.media += 1;
                }
            }
            Output::Close(reason) => {
                notes.add(|| {
                    let code = reason.close_code().as_u16();
                    format!("closed {code} ({}: {reason})", reason.as_str())
                });
                conn.closed = Some(reason.as_str());
            }
        }
        let conn = &mut s.conns[usize::from(j)];
        if conn.session.is_closed() {
            if conn.slot {
                conn.slot = false;
                s.active_streams -= 1;
            }
            if let Owner::Twilio(c) = conn.owner {
                s.twilio[usize::from(c)] = Twilio::Done;
            }
        }
    }

    /// The server carries out connection `j`'s redemption: a stream slot, then the store.
    fn redeem(&self, s: &mut State, j: u8, notes: &mut Notes) {
        let pending = s.conns[usize::from(j)]
            .pending
            .take()
            .expect("a pending redemption");
        let result = if s.active_streams >= self.bounds.max_streams {
            notes.add(|| "no stream slot".to_owned());
            Err(RedeemFailure::StreamsFull)
        } else {
            s.active_streams += 1;
            s.conns[usize::from(j)].slot = true;
            let r = &pending.redemption;
            let world = &self.world;
            let offer = store::presented(&world.store_key, &r.account_sid, &r.call_sid, &r.claims);
            let id = world.store_key.call_id(&r.account_sid, &r.call_sid);
            let (record, result) = self.rules.redeem(
                s.store.get(&id).copied(),
                &offer,
                time(pending.at),
                &world.policy,
            );
            Self::put(s, id, record);
            notes.add(|| format!("store: {result:?}"));
            result.map_err(|refusal| {
                s.conns[usize::from(j)].slot = false;
                s.active_streams -= 1;
                RedeemFailure::Store(RedeemError::Refused(refusal))
            })
        };
        self.feed(s, j, Event::Redeemed(result), None, notes);
    }

    fn is_open(c: &Conn) -> bool {
        !c.session.is_closed() && c.pending.is_none()
    }

    fn step(&self, last: &State, action: Action, notes: &mut Notes) -> State {
        let mut s = last.clone();
        match action {
            Action::TwilioWebhook(c) => {
                s.seen_webhooks[usize::from(c)] = true;
                let req = &self.world.webhooks[usize::from(c)];
                s.twilio[usize::from(c)] = match self.webhook(&mut s, req, Origin::Twilio, notes) {
                    Some(tok) => Twilio::Answered(tok),
                    None => Twilio::Done,
                };
            }
            Action::TwilioUpgrade(c) => {
                s.seen_upgrade = true;
                let Twilio::Answered(token) = last.twilio[usize::from(c)] else {
                    unreachable!("enabled only once answered");
                };
                let head = &self.world.twilio_upgrade;
                s.twilio[usize::from(c)] =
                    match self.open(&mut s, head, Owner::Twilio(c), None, notes) {
                        Some(conn) => Twilio::Streaming {
                            token,
                            conn,
                            sent: 0,
                        },
                        None => Twilio::Done,
                    };
            }
            Action::TwilioFrame(c) => {
                let Twilio::Streaming { token, conn, sent } = last.twilio[usize::from(c)] else {
                    unreachable!("enabled only while streaming");
                };
                s.twilio[usize::from(c)] = Twilio::Streaming {
                    token,
                    conn,
                    sent: sent + 1,
                };
                let (text, custom) = match sent {
                    0 => {
                        let t = self.text_of(&s, token);
                        (start_json(c, ACCOUNT, Some(&t)), Some(token))
                    }
                    _ => (media_json(c), None),
                };
                self.feed(&mut s, conn, Event::Text(&text), custom, notes);
            }
            Action::ServerRedeem(j) => self.redeem(&mut s, j, notes),
            Action::Wait => {
                s.now += 1;
                let now = time(s.now);
                notes.add(|| format!("t = {} s", u64::from(s.now) * QUANTUM.as_secs()));
                s.store.retain(|_, r| r.is_live(now));
                for j in 0..s.conns.len() {
                    let due = s.conns[j].session.deadline().is_some_and(|d| d <= now);
                    if due && s.conns[j].pending.is_none() {
                        self.feed(&mut s, j as u8, Event::Tick, None, notes);
                    }
                }
            }
            Action::ReplayWebhook(c) => {
                s.attacker_left -= 1;
                let req = &self.world.webhooks[usize::from(c)];
                self.webhook(&mut s, req, Origin::Replay, notes);
            }
            Action::ForgedWebhook(c) => {
                s.attacker_left -= 1;
                let req = &self.world.forged_webhooks[usize::from(c)];
                self.webhook(&mut s, req, Origin::Forged, notes);
            }
            Action::Open(how) => {
                s.attacker_left -= 1;
                self.attacker_open(&mut s, how, notes);
            }
            Action::Connect(how, frame) => {
                s.attacker_left -= 1;
                if let Some(j) = self.attacker_open(&mut s, how, notes) {
                    self.attacker_send(&mut s, j, frame, notes);
                }
            }
            Action::Send(j, frame) => {
                s.attacker_left -= 1;
                self.attacker_send(&mut s, j, frame, notes);
            }
            Action::Cut(j) => {
                s.attacker_left -= 1;
                self.feed(&mut s, j, Event::PeerClosed, None, notes);
            }
        }
        s
    }

    fn attacker_open(&self, s: &mut State, how: Upgrade, notes: &mut Notes) -> Option<u8> {
        match how {
            Upgrade::Replayed => {
                let head = &self.world.twilio_upgrade;
                self.open(s, head, Owner::Attacker, None, notes)
            }
            Upgrade::BadSignature => {
                let head = &self.world.bad_upgrade;
                self.open(s, head, Owner::Attacker, None, notes)
            }
            Upgrade::UrlToken(t) => {
                let target = format!("{STREAM_PATH}?token={}", self.text_of(s, t));
                let head = upgrade_request(&target, None);
                self.open(s, &head, Owner::Attacker, Some(t), notes)
            }
        }
    }

    fn attacker_send(&self, s: &mut State, j: u8, frame: Frame, notes: &mut Notes) {
        let (text, custom) = match frame {
            Frame::Connected => (connected_json(), None),
            Frame::Start {
                call,
                other_account,
                token,
            } => {
                let t = token.map(|t| self.text_of(s, t));
                let account = if other_account {
                    OTHER_ACCOUNT
                } else {
                    ACCOUNT
                };
                (start_json(call, account, t.as_deref()), token)
            }
            Frame::Media { call } => (media_json(call), None),
            Frame::Stop { call } => (stop_json(call), None),
        };
        self.feed(s, j, Event::Text(&text), custom, notes);
    }

    // -- properties, in words -------------------------------------------------------------

    /// No media (nor dtmf, mark, stop) from a connection reaches the application before that
    /// connection's `start` was authenticated: before `Output::Authenticated`, which comes only
    /// from a successful redemption.
    fn no_media_before_authentication(&self, s: &State) -> bool {
        s.conns.iter().all(|c| !c.app_before_auth)
    }

    /// Each connection authenticates at most once, and at most `streams_per_call` streams of
    /// one CallSid authenticate within any span shorter than the call memory, whatever the
    /// interleaving: concurrent connections, replayed webhooks and starts, tokens replayed
    /// across their expiry and the call memory. (After the call memory a replayed webhook
    /// mints again: the README's reason to keep the memory above the longest call.)
    fn streams_per_call_within_memory(&self, s: &State) -> bool {
        let n = self.bounds.streams_per_call as usize;
        s.conns.iter().all(|c| c.authentications <= 1)
            && s.authentications.iter().all(|a| {
                s.authentications
                    .iter()
                    .filter(|b| {
                        b.call_sid == a.call_sid && b.at <= a.at && a.at - b.at < CALL_MEMORY_QUANTA
                    })
                    .count()
                    <= n
            })
    }

    /// An authenticated stream's CallSid and AccountSid are those of the webhook its token
    /// was minted for.
    fn authenticated_as_minted(&self, s: &State) -> bool {
        s.conns.iter().all(|c| {
            let Some((call_sid, account_sid)) = c.authenticated else {
                return true;
            };
            let Some((url, custom)) = c.presented else {
                return false;
            };
            [url, custom].into_iter().flatten().all(|t| match t {
                Tok::Minted { call, k } => {
                    let m = &s.minted[usize::from(call)][usize::from(k)];
                    m.call_sid == call_sid && m.account_sid == account_sid
                }
                _ => true, // the next property's concern
            })
        })
    }

    /// A connection that presented no token minted in answer to a webhook Twilio sent (no
    /// token, a garbage, tampered or foreign one, or one minted for a forged webhook) never
    /// authenticates.
    fn only_minted_tokens_authenticate(&self, s: &State) -> bool {
        s.conns.iter().all(|c| {
            if c.authenticated.is_none() {
                return true;
            }
            let Some((url, custom)) = c.presented else {
                return false;
            };
            let tokens: Vec<Tok> = [url, custom].into_iter().flatten().collect();
            !tokens.is_empty()
                && tokens.iter().all(|t| match *t {
                    Tok::Minted { call, k } => {
                        s.minted[usize::from(call)][usize::from(k)].origin != Origin::Forged
                    }
                    _ => false,
                })
        })
    }

    /// Every call Twilio places has an authenticated stream that received its media.
    fn every_call_streams(&self, s: &State) -> bool {
        (0..self.bounds.calls).all(|c| {
            s.conns
                .iter()
                .any(|conn| conn.owner == Owner::Twilio(c) && conn.media > 0)
        })
    }

    fn closed_with(s: &State, reason: &str) -> bool {
        s.conns.iter().any(|c| c.closed == Some(reason))
    }
}

fn tok_name(t: Tok) -> String {
    match t {
        Tok::Minted { call, k } => format!("T{call}.{k}"),
        Tok::Tampered { call, k } => format!("tampered T{call}.{k}"),
        Tok::Foreign => "foreign-key token".to_owned(),
        Tok::Garbage => "garbage".to_owned(),
    }
}

fn upgrade_name(u: Upgrade) -> String {
    match u {
        Upgrade::Replayed => "Twilio's upgrade replayed".to_owned(),
        Upgrade::BadSignature => "bad signature".to_owned(),
        Upgrade::UrlToken(t) => format!("unsigned, ?token={}", tok_name(t)),
    }
}

fn frame_name(f: Frame) -> String {
    match f {
        Frame::Connected => "connected".to_owned(),
        Frame::Start {
            call,
            other_account,
            token,
        } => format!(
            "start for call {call}{} with {}",
            if other_account {
                " (other account)"
            } else {
                ""
            },
            token.map_or("no token".to_owned(), tok_name)
        ),
        Frame::Media { call } => format!("media of call {call}"),
        Frame::Stop { call } => format!("stop of call {call}"),
    }
}

fn action_name(a: Action) -> String {
    match a {
        Action::TwilioWebhook(c) => format!("Twilio: webhook of call {c}"),
        Action::TwilioUpgrade(c) => format!("Twilio: upgrade for call {c}"),
        Action::TwilioFrame(c) => format!("Twilio: next frame of call {c}"),
        Action::ServerRedeem(j) => format!("server: redeem for connection {j}"),
        Action::Wait => format!("{} s pass", QUANTUM.as_secs()),
        Action::ReplayWebhook(c) => format!("attacker: replays the webhook of call {c}"),
        Action::ForgedWebhook(c) => format!("attacker: forges a webhook for call {c}"),
        Action::Open(how) => format!("attacker: opens a connection ({})", upgrade_name(how)),
        Action::Connect(how, f) => format!(
            "attacker: opens a connection ({}) and sends {}",
            upgrade_name(how),
            frame_name(f)
        ),
        Action::Send(j, f) => format!("attacker: sends {} on connection {j}", frame_name(f)),
        Action::Cut(j) => format!("attacker: cuts connection {j}"),
    }
}

impl<R: Rules> Model for Protocol<R> {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let calls = usize::from(self.bounds.calls);
        vec![State {
            now: 0,
            store: BTreeMap::new(),
            minted: vec![Vec::new(); calls],
            twilio: vec![Twilio::Idle; calls],
            conns: Vec::new(),
            active_streams: 0,
            attacker_left: self.bounds.attacker_actions,
            seen_webhooks: vec![false; calls],
            seen_upgrade: false,
            authentications: Vec::new(),
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        let b = &self.bounds;
        let room = s.conns.len() < usize::from(b.connections);
        // Twilio.
        for c in 0..b.calls {
            match s.twilio[usize::from(c)] {
                Twilio::Idle => actions.push(Action::TwilioWebhook(c)),
                Twilio::Answered(_) if room => actions.push(Action::TwilioUpgrade(c)),
                Twilio::Streaming { conn, sent, .. }
                    if sent < TWILIO_FRAMES && Self::is_open(&s.conns[usize::from(conn)]) =>
                {
                    actions.push(Action::TwilioFrame(c));
                }
                _ => {}
            }
        }
        // The server.
        for (j, conn) in s.conns.iter().enumerate() {
            if conn.pending.is_some() {
                actions.push(Action::ServerRedeem(j as u8));
            }
        }
        if s.now < b.quanta {
            actions.push(Action::Wait);
        }
        // The attacker.
        if s.attacker_left == 0 {
            return;
        }
        for c in 0..b.calls {
            if s.seen_webhooks[usize::from(c)] {
                actions.push(Action::ReplayWebhook(c));
            }
        }
        if b.junk {
            actions.push(Action::ForgedWebhook(0));
        }
        let known = self.known_tokens(s);
        let start = |call, token| Frame::Start {
            call,
            other_account: false,
            token,
        };
        if room {
            if s.seen_upgrade {
                // Twilio's upgrade replayed, then a start for any call with any token it
                // knows, or media before any start.
                for call in 0..b.calls {
                    for &t in &known {
                        actions.push(Action::Connect(Upgrade::Replayed, start(call, Some(t))));
                    }
                }
                actions.push(Action::Connect(Upgrade::Replayed, Frame::Media { call: 0 }));
            }
            if b.upgrade_mode != SignatureMode::Required || b.junk {
                // Unsigned, the token in the URL; a start without one (or, with junk, with
                // another: a conflict).
                for &t in &known {
                    for call in 0..b.calls {
                        actions.push(Action::Connect(Upgrade::UrlToken(t), start(call, None)));
                    }
                    if b.junk {
                        let other = known.iter().copied().find(|&o| o != t);
                        actions.push(Action::Connect(Upgrade::UrlToken(t), start(0, other)));
                    }
                }
            }
            if b.junk {
                actions.push(Action::Open(Upgrade::Replayed));
                actions.push(Action::Connect(
                    Upgrade::BadSignature,
                    start(0, known.first().copied()),
                ));
            }
        }
        for (j, conn) in s.conns.iter().enumerate() {
            if !Self::is_open(conn) {
                continue;
            }
            let j = j as u8;
            if conn.owner == Owner::Attacker {
                actions.push(Action::Send(j, Frame::Media { call: 0 }));
                if b.junk {
                    for &t in &known {
                        actions.push(Action::Send(j, start(0, Some(t))));
                    }
                    actions.push(Action::Send(
                        j,
                        Frame::Start {
                            call: 0,
                            other_account: true,
                            token: known.first().copied(),
                        },
                    ));
                    actions.push(Action::Send(j, Frame::Connected));
                    actions.push(Action::Send(j, Frame::Stop { call: 0 }));
                }
            }
            if b.junk {
                actions.push(Action::Cut(j));
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        Some(self.step(last, action, &mut Notes(None)))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut p = vec![
            Property::always(NO_EARLY_MEDIA, |m: &Self, s| {
                m.no_media_before_authentication(s)
            }),
            Property::always(PER_CALL, |m: &Self, s| m.streams_per_call_within_memory(s)),
            Property::always(AS_MINTED, |m: &Self, s| m.authenticated_as_minted(s)),
            Property::always(ONLY_MINTED, |m: &Self, s| {
                m.only_minted_tokens_authenticate(s)
            }),
        ];
        if self.bounds.attacker_actions == 0 {
            p.push(Property::eventually(
                "every legitimate call authenticates and streams",
                |m: &Self, s| m.every_call_streams(s),
            ));
        } else {
            p.extend([
                Property::sometimes("a legitimate call streams", |_, s: &State| {
                    s.conns
                        .iter()
                        .any(|c| matches!(c.owner, Owner::Twilio(_)) && c.media > 0)
                }),
                Property::sometimes(
                    "the attacker wins a race with a token it has seen",
                    |_, s: &State| {
                        s.conns
                            .iter()
                            .any(|c| c.owner == Owner::Attacker && c.authenticated.is_some())
                    },
                ),
                Property::sometimes("a replayed token is refused by the store", |_, s| {
                    Self::closed_with(s, "token_replayed")
                }),
                Property::sometimes("media before start is refused", |_, s| {
                    Self::closed_with(s, "event_before_start")
                }),
            ]);
            if self.bounds.calls > 1 {
                p.push(Property::sometimes(
                    "a token of another call is refused",
                    |_, s| Self::closed_with(s, "token_bad_mac"),
                ));
            }
            if self.bounds.quanta > 0 {
                p.push(Property::sometimes(
                    "an expired token is refused",
                    |_, s| Self::closed_with(s, "token_expired"),
                ));
                p.push(Property::sometimes(
                    "a connection times out before start",
                    |_, s| Self::closed_with(s, "start_timeout"),
                ));
            }
            if self.bounds.quanta >= CALL_MEMORY_QUANTA {
                p.push(Property::sometimes(
                    "a call that has streamed mints again after its call memory",
                    |_, s: &State| {
                        s.authentications.iter().any(|a| {
                            s.minted.iter().flatten().any(|m| {
                                m.call_sid == a.call_sid && m.at >= a.at + CALL_MEMORY_QUANTA
                            })
                        })
                    },
                ));
            }
            if usize::from(self.bounds.max_streams) < usize::from(self.bounds.calls) {
                p.push(Property::sometimes(
                    "a stream is refused at --max-streams",
                    |_, s| Self::closed_with(s, "streams_full"),
                ));
            }
            if self.bounds.junk {
                p.push(Property::sometimes(
                    "a start under another account is refused",
                    |_, s| Self::closed_with(s, "account_mismatch"),
                ));
                p.push(Property::sometimes(
                    "a token with a changed MAC is refused",
                    |_, s| Self::closed_with(s, "token_bad_mac"),
                ));
                p.push(Property::sometimes(
                    "a token of another key is refused",
                    |_, s| Self::closed_with(s, "token_unknown_key"),
                ));
            }
            if self.bounds.junk && self.bounds.upgrade_mode != SignatureMode::Required {
                p.push(Property::sometimes(
                    "a URL token and another in start conflict",
                    |_, s| Self::closed_with(s, "token_conflict"),
                ));
            }
        }
        p
    }
}

// ---------------------------------------------------------------------------------------------
// Running the checker
// ---------------------------------------------------------------------------------------------

// The safety properties' names, as the checker reports them.
const NO_EARLY_MEDIA: &str = "no media before authentication";
const PER_CALL: &str = "at most streams_per_call streams of a call within its call memory";
const AS_MINTED: &str = "a stream authenticates as the call and account its token was minted for";
const ONLY_MINTED: &str = "no connection without a minted token authenticates";

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// The counterexample (or example) `path`, one named step a line, with what the server did.
/// A safety property's counterexample ends at the first state that breaks it (the checker's
/// path may go further: a broken property stays broken).
fn trace<R: Rules>(
    model: &Protocol<R>,
    property: &Property<Protocol<R>>,
    path: &Path<State, Action>,
) -> String {
    let mut steps = path.clone().into_vec();
    if matches!(property.expectation, Expectation::Always)
        && let Some(i) = steps
            .iter()
            .position(|(s, _)| !(property.condition)(model, s))
    {
        steps.truncate(i);
    }
    let mut out = String::new();
    let mut n = 0;
    for (state, action) in steps {
        let Some(action) = action else { continue };
        n += 1;
        let mut notes = Notes(Some(Vec::new()));
        model.step(&state, action, &mut notes);
        let notes = notes.0.unwrap_or_default();
        writeln!(
            out,
            "  {n:>2}. [t={:>3} s] {} -> {}",
            u64::from(state.now) * QUANTUM.as_secs(),
            action_name(action),
            notes.join("; ")
        )
        .unwrap();
    }
    out
}

/// Explores every state within `bounds` with the rules `rules`; checks every property;
/// returns the unique states explored.
fn check_all<R: Rules>(what: &str, bounds: Bounds, rules: R, floor: usize) -> usize {
    let model = Protocol::new(bounds, rules);
    let started = Instant::now();
    let checker = model.checker().threads(threads()).spawn_bfs().join();
    let took = started.elapsed();
    let model = checker.model();
    eprintln!(
        "{what}: {}\n  rules: {}\n  {} unique states ({} generated), depth {}, in {:.2?}",
        bounds.describe(),
        model.rules.name(),
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        took,
    );
    assert!(checker.is_done(), "the exploration did not finish");
    for p in model.properties() {
        let found = checker.discovery(p.name);
        if p.expectation.discovery_is_failure() {
            if let Some(path) = found {
                panic!(
                    "property violated: \"{}\"\n{}",
                    p.name,
                    trace(model, &p, &path)
                );
            }
        } else {
            assert!(
                found.is_some(),
                "the exploration never reached: \"{}\"",
                p.name
            );
        }
    }
    let states = checker.unique_state_count();
    assert!(
        states >= floor,
        "only {states} states explored (expected at least {floor})"
    );
    states
}

/// Explores until `property` fails (it must); prints and returns the counterexample. On one
/// thread, so that the counterexample (which the tests look into) is the same on every run.
fn find_counterexample<R: Rules>(bounds: Bounds, rules: R, property: &'static str) -> String {
    let model = Protocol::new(bounds, rules);
    let checker = model
        .checker()
        .threads(1)
        .finish_when(HasDiscoveries::AnyOf([property].into_iter().collect()))
        .spawn_bfs()
        .join();
    let model = checker.model();
    let path = checker.discovery(property).unwrap_or_else(|| {
        panic!(
            "the model did not catch \"{}\": \"{property}\" held over {} states",
            model.rules.name(),
            checker.unique_state_count()
        )
    });
    let p = model
        .properties()
        .into_iter()
        .find(|p| p.name == property)
        .expect("a property of the model");
    let trace = trace(model, &p, &path);
    eprintln!(
        "{}\n  rules: {}\n  \"{property}\" fails ({} states explored); counterexample:\n{trace}",
        bounds.describe(),
        model.rules.name(),
        checker.unique_state_count()
    );
    trace
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The default runs: one call against an attacker with three actions over the whole call
/// memory, and two calls (tokens spliced across calls, two Twilio streams at once) against an
/// attacker with two actions over the TTL.
#[test]
fn the_protocol_holds_against_a_replaying_attacker() {
    check_all(
        "one call, deep in time",
        Bounds::ONE_CALL,
        CrateRules,
        5_000,
    );
    check_all("two calls", Bounds::TWO_CALLS, CrateRules, 20_000);
}

/// The environment variable that turns on the deep run.
const DEEP_VAR: &str = "STREAMGUARD_MODEL_DEEP";

/// Larger bounds, when `STREAMGUARD_MODEL_DEEP=1` (best in a release build); otherwise one
/// line saying so.
#[test]
fn the_protocol_holds_against_a_replaying_attacker_deep() {
    if std::env::var_os(DEEP_VAR).is_none_or(|v| v != "1") {
        eprintln!(
            "deep run skipped: {DEEP_VAR}=1 cargo test --release --test model -- --nocapture \
             runs it (about 7 million states, minutes)"
        );
        return;
    }
    let runs = [
        (
            "deep: two calls, four attacker actions",
            Bounds {
                attacker_actions: 4,
                quanta: 2,
                ..Bounds::TWO_CALLS
            },
        ),
        (
            "deep: two calls, three attacker actions, three steps of time",
            Bounds {
                attacker_actions: 3,
                quanta: 3,
                ..Bounds::TWO_CALLS
            },
        ),
        (
            "deep: junk",
            Bounds {
                attacker_actions: 3,
                quanta: 2,
                junk: true,
                ..Bounds::TWO_CALLS
            },
        ),
        (
            "deep: junk, upgrade signature required, one stream slot",
            Bounds {
                attacker_actions: 3,
                quanta: 2,
                max_streams: 1,
                upgrade_mode: SignatureMode::Required,
                junk: true,
                ..Bounds::TWO_CALLS
            },
        ),
        (
            "deep: two streams per call",
            Bounds {
                attacker_actions: 3,
                quanta: 2,
                streams_per_call: 2,
                max_streams: 3,
                ..Bounds::TWO_CALLS
            },
        ),
    ];
    for (what, bounds) in runs {
        check_all(what, bounds, CrateRules, 400_000);
    }
}

#[test]
fn every_legitimate_call_authenticates_without_interference() {
    check_all("no attacker", Bounds::HONEST, CrateRules, 1_000);
}

/// The liveness property is not vacuous: with fewer stream slots than calls, a legitimate
/// call is refused, and the checker says so.
#[test]
fn a_call_refused_for_want_of_a_stream_slot_breaks_liveness() {
    let bounds = Bounds {
        max_streams: 2,
        ..Bounds::HONEST
    };
    let trace = find_counterexample(
        bounds,
        CrateRules,
        "every legitimate call authenticates and streams",
    );
    assert!(trace.contains("streams_full"));
}

/// The small bounds the broken stores are caught in.
const SMALL: Bounds = Bounds {
    calls: 1,
    connections: 2,
    attacker_actions: 2,
    quanta: 0,
    ..Bounds::ONE_CALL
};

#[test]
fn a_store_that_forgets_a_redemption_is_caught() {
    let trace = find_counterexample(SMALL, ForgetsRedemption, PER_CALL);
    assert!(trace.contains("AUTHENTICATED"));
}

#[test]
fn a_store_that_lets_a_second_stream_through_is_caught() {
    let bounds = Bounds {
        attacker_actions: 3,
        ..SMALL
    };
    let trace = find_counterexample(bounds, OffByOneStreamCount, PER_CALL);
    assert!(trace.contains("replays the webhook"));
}

#[test]
fn a_store_that_forgets_the_call_memory_is_caught() {
    let bounds = Bounds {
        attacker_actions: 3,
        quanta: 2,
        ..SMALL
    };
    let trace = find_counterexample(bounds, ForgetsCallMemory, PER_CALL);
    assert!(trace.contains("replays the webhook"));
}

#[test]
fn a_session_that_forwards_media_before_start_is_caught() {
    let trace = find_counterexample(SMALL, ForwardsEarlyMedia, NO_EARLY_MEDIA);
    // The attacker's media, on a connection that never sent start, reaches the application.
    let last = trace.lines().last().unwrap();
    assert!(last.contains("attacker: opens a connection"), "{last}");
    assert!(last.contains("sends media of call 0"), "{last}");
    assert!(last.ends_with("handed to the application"), "{last}");
}

#[test]
fn a_session_that_ignores_the_call_binding_is_caught() {
    let bounds = Bounds {
        calls: 2,
        attacker_actions: 1,
        ..SMALL
    };
    let trace = find_counterexample(bounds, IgnoresTheCallBinding, AS_MINTED);
    // The attacker opens a stream for call 0 with the token of call 1, and it authenticates
    // as call 0.
    assert!(
        trace.contains("start for call 0 with T1.0")
            || trace.contains("?token=T1.0) and sends start for call 0"),
        "{trace}"
    );
    let last = trace.lines().last().unwrap();
    assert!(
        last.ends_with(&format!("AUTHENTICATED as {}", call_sid(0))),
        "{last}"
    );
}

#[test]
fn a_webhook_check_that_accepts_the_retired_auth_token_is_caught() {
    let bounds = Bounds {
        attacker_actions: 2,
        junk: true,
        ..SMALL
    };
    let trace = find_counterexample(bounds, AcceptsTheRetiredAuthToken::new(), ONLY_MINTED);
    // The forged webhook mints T0.0 (Twilio's own webhook then gets that live token too), and
    // a stream authenticates with it.
    let first = trace.lines().next().unwrap();
    assert!(
        first.ends_with("attacker: forges a webhook for call 0 -> 200, token T0.0 issued"),
        "{first}"
    );
    let last = trace.lines().last().unwrap();
    assert!(last.contains("AUTHENTICATED"), "{last}");
}
