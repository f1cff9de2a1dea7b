//! The invariants the fuzz targets check, as plain functions that tests can call too.
//!
//! Each public function here takes one fuzz input, drives one function of the pure core with
//! it, and asserts what that function promises: not only "does not panic", but the security
//! properties a reviewer would state in words ("no media before authentication", "never
//! accepts without a valid signature"). A violated invariant panics with a message that
//! names it: a panic is what libFuzzer records as a crash and what `cargo test` reports as a
//! failure. The fuzz targets in `fuzz/fuzz_targets/` are one line each around these
//! functions; `tests/fuzz_invariants.rs` runs the same functions over the committed corpora.
//!
//! | target | function | drives |
//! |---|---|---|
//! | `upgrade_request` | [`upgrade_request`] | [`upgrade::decide`] on structured request heads |
//! | `upgrade_request_raw` | [`upgrade_request_raw`] | [`upgrade::decide`] on raw HTTP bytes (`httparse`) |
//! | `start_frame` | [`start_frame`] | [`frames::parse_inbound`] and the `start` checks of [`Session::handle`] |
//! | `session` | [`session`] | [`Session::handle`] over sequences of events on two connections |
//! | `token` | [`token()`] ([`token_verify`], [`token_mutation`]) | [`token::verify`], [`token::issue_with_nonce`] |
//! | `twiml` | [`twiml()`] | [`twiml::render`], checked with a real XML parser |
//! | `signature` | [`signature()`] | [`signature::validate`], [`signature::compute_signature`] |
//!
//! # Fixed test secrets
//!
//! The functions use fixed, public secrets ([`TOKEN_KEY`], [`AUTH_TOKEN`]), a fixed
//! configured account ([`ACCOUNT`]) and a fixed clock ([`NOW`]), so that the committed
//! corpora can hold valid tokens and valid signatures and the fuzzer reaches the accepted
//! paths, where the interesting invariants are. Tokens are minted deterministically with
//! [`token::issue_with_nonce`] ([`fixture_token`]). These values are in the source code: they
//! protect nothing, and a server must never be configured with them.
//!
//! # Speed
//!
//! Keys, tokens and messages that do not depend on the input are built once
//! ([`std::sync::OnceLock`]); each iteration builds only what the input describes and a
//! small, empty [`ReplayGuard`] (which allocates nothing until a token is redeemed).

// A violated invariant must crash the fuzzer (and fail the test): panicking is the point of
// this module. Nothing here runs in the server.
#![allow(clippy::panic)]

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::digest;

use crate::extract;
use crate::limits::{
    DEFAULT_CALL_MEMORY, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_START_TIMEOUT,
    MAX_REQUEST_TARGET_BYTES, MAX_SIGNATURE_HEADER_BYTES, MAX_TOKEN_TTL, TOKEN_NONCE_BYTES,
};
use crate::secret::{AuthToken, KeySet, TokenKey};
use crate::session::{
    AuthContext, CloseCode, Event, Output, Reason, RedeemFailure, Redemption, Session, StreamInfo,
    UrlToken,
};
use crate::sid::{AccountSid, CallSid};
use crate::signature::{self, SignatureError};
use crate::store::{self, LiveToken, MemoryStore, RedeemError, StoreKey, StorePolicy};
use crate::time::UnixTime;
use crate::token::{self, IssueError, TokenError};
use crate::upgrade::{self, RequestHead, SignatureMode, UpgradePolicy, UpgradeReject};
use crate::wire::frames::{self, Inbound};
use crate::wire::twiml::{self, Field, StreamTwiml, Track, TwimlError, Verb};

// ---------------------------------------------------------------------------------------------
// Fixed test secrets and values
// ---------------------------------------------------------------------------------------------

/// The token key every target verifies with (32 public bytes: a test key, never a real one).
pub const TOKEN_KEY: [u8; 32] = *b"streamguard-fuzz-token-key-00001";

/// A second key, which issues [`FixtureToken::OtherKey`] and is not in the verifying set.
pub const OTHER_TOKEN_KEY: [u8; 32] = *b"streamguard-fuzz-token-key-00002";

/// A key that never issues anything the targets see: nothing may ever verify with it.
pub const UNUSED_TOKEN_KEY: [u8; 32] = *b"streamguard-fuzz-unused-key-0003";

/// The Twilio auth token every signature is made and checked with (public test value).
pub const AUTH_TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Another auth token: a signature made with it must never be accepted.
pub const OTHER_AUTH_TOKEN: &str = "ffeeddccbbaa99887766554433221100";

/// The configured account (`TWILIO_ACCOUNT_SID`).
pub const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
/// An account that is not the configured one.
pub const OTHER_ACCOUNT: &str = "ACfedcba9876543210fedcba9876543210";
/// The call most tokens are issued for.
pub const CALL: &str = "CA0123456789abcdef0123456789abcdef";
/// Another call of the configured account.
pub const OTHER_CALL: &str = "CAfedcba9876543210fedcba9876543210";
/// The stream of most messages.
pub const STREAM: &str = "MZ0123456789abcdef0123456789abcdef";
/// Another stream.
pub const OTHER_STREAM: &str = "MZfedcba9876543210fedcba9876543210";

/// The fixed "now" of every target: 2023-11-14T22:13:20Z.
pub const NOW: UnixTime = UnixTime::from_millis(1_700_000_000_000);

/// Lifetime of the fixture tokens.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);

/// The stream route of the upgrade targets.
pub const STREAM_PATH: &str = "/voice/stream";

/// Largest text message in the `session` target. Smaller than the server's default
/// ([`DEFAULT_MAX_MESSAGE_BYTES`]) so that an oversized message is cheap to build; the
/// `start_frame` target uses the default.
pub const SESSION_MAX_MESSAGE_BYTES: usize = 2048;

/// Most events of one `session` input that are driven (the rest is ignored), so that one
/// iteration stays short.
pub const MAX_SESSION_STEPS: usize = 64;

/// Most form parameters of one `signature` input that are used (the rest is ignored).
pub const MAX_SIGNATURE_PARAMS: usize = 8;

/// Most edits applied in one `token` or `session` mutation.
pub const MAX_EDITS: usize = 8;

/// The `Sec-WebSocket-Key` of RFC 6455 §1.3's example, used by [`UpgradeHeader::Key`].
pub const WEBSOCKET_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// RFC 6455 §1.3: the GUID appended to the key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The close codes a session may send (1000 comes with `Output::Stop`, not with a close).
const SESSION_CLOSE_CODES: [u16; 3] = [1003, 1008, 1009];

/// Reports a violated invariant: this is the crash the fuzzer looks for.
#[track_caller]
fn violated(what: fmt::Arguments<'_>) -> ! {
    panic!("invariant violated: {what}")
}

/// Unwraps a fixture built from the constants above: failing is a broken fixture, not an input.
#[track_caller]
fn fixture<T, E: fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("broken fuzz fixture {what}: {e:?}"),
    }
}

/// The tokens minted for the fixtures, all with [`TOKEN_TTL`] and a distinct fixed nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum FixtureToken {
    /// For ([`ACCOUNT`], [`CALL`]) at [`NOW`] with [`TOKEN_KEY`]: the one that authenticates.
    Valid,
    /// For ([`ACCOUNT`], [`OTHER_CALL`]) at [`NOW`] with [`TOKEN_KEY`].
    OtherCall,
    /// For ([`OTHER_ACCOUNT`], [`CALL`]) at [`NOW`] with [`TOKEN_KEY`].
    OtherAccount,
    /// For ([`ACCOUNT`], [`CALL`]) at [`NOW`] with [`OTHER_TOKEN_KEY`] (not in the key set).
    OtherKey,
    /// For ([`ACCOUNT`], [`CALL`]) two minutes before [`NOW`]: expired at `NOW`.
    Expired,
    /// A second token for ([`ACCOUNT`], [`CALL`]) with a valid MAC, but not the one the replay
    /// store minted ([`ON_RECORD`]): it never opens a stream.
    SecondForCall,
}

impl FixtureToken {
    /// Every fixture token.
    pub const ALL: [Self; 6] = [
        Self::Valid,
        Self::OtherCall,
        Self::OtherAccount,
        Self::OtherKey,
        Self::Expired,
        Self::SecondForCall,
    ];
}

struct IssuedToken {
    which: FixtureToken,
    text: String,
    account: AccountSid,
    call: CallSid,
    by_token_key: bool,
    expires_at: UnixTime,
    nonce: [u8; TOKEN_NONCE_BYTES],
}

/// One policy URL of the upgrade targets: the configured `{ws(s) public url}{stream-path}`
/// and the two URLs a signature is accepted over (RFC-independent: written out by hand).
struct PolicyUrls {
    signed_url: &'static str,
    with_port: &'static str,
    without_port: &'static str,
}

/// The configured stream URL of the upgrade targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum PolicyUrl {
    /// `wss://streamguard.example/voice/stream` (the raw target's policy).
    NoPort,
    /// `wss://streamguard.example:443/voice/stream`.
    DefaultPort,
    /// `wss://streamguard.example:8443/voice/stream`.
    OtherPort,
    /// `ws://127.0.0.1:8080/voice/stream` (local development).
    LocalWs,
}

impl PolicyUrl {
    fn urls(self) -> PolicyUrls {
        let (signed_url, with_port, without_port) = match self {
            Self::NoPort => (
                "wss://streamguard.example/voice/stream",
                "wss://streamguard.example:443/voice/stream",
                "wss://streamguard.example/voice/stream",
            ),
            Self::DefaultPort => (
                "wss://streamguard.example:443/voice/stream",
                "wss://streamguard.example:443/voice/stream",
                "wss://streamguard.example/voice/stream",
            ),
            Self::OtherPort => (
                "wss://streamguard.example:8443/voice/stream",
                "wss://streamguard.example:8443/voice/stream",
                "wss://streamguard.example/voice/stream",
            ),
            Self::LocalWs => (
                "ws://127.0.0.1:8080/voice/stream",
                "ws://127.0.0.1:8080/voice/stream",
                "ws://127.0.0.1/voice/stream",
            ),
        };
        PolicyUrls {
            signed_url,
            with_port,
            without_port,
        }
    }
}

struct Fixtures {
    keys: KeySet,
    store_key: StoreKey,
    unused_keys: KeySet,
    auth: AuthToken,
    other_auth: AuthToken,
    account: AccountSid,
    other_account: AccountSid,
    call: CallSid,
    other_call: CallSid,
    tokens: Vec<IssuedToken>,
    media_payload: String,
    oversized: String,
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(build_fixtures)
}

fn build_fixtures() -> Fixtures {
    let key = fixture(TokenKey::from_bytes(&TOKEN_KEY), "token key");
    let other_key = fixture(TokenKey::from_bytes(&OTHER_TOKEN_KEY), "other token key");
    let account = fixture(AccountSid::parse(ACCOUNT), "account");
    let other_account = fixture(AccountSid::parse(OTHER_ACCOUNT), "other account");
    let call = fixture(CallSid::parse(CALL), "call");
    let other_call = fixture(CallSid::parse(OTHER_CALL), "other call");
    let two_minutes_ago = UnixTime::from_millis(NOW.as_millis().saturating_sub(120_000));

    let specs = [
        (FixtureToken::Valid, &key, account, call, NOW, 1u8),
        (FixtureToken::OtherCall, &key, account, other_call, NOW, 2),
        (
            FixtureToken::OtherAccount,
            &key,
            other_account,
            call,
            NOW,
            3,
        ),
        (FixtureToken::OtherKey, &other_key, account, call, NOW, 4),
        (
            FixtureToken::Expired,
            &key,
            account,
            call,
            two_minutes_ago,
            5,
        ),
        (FixtureToken::SecondForCall, &key, account, call, NOW, 6),
    ];
    let tokens = specs
        .into_iter()
        .map(|(which, k, account, call, at, n)| {
            let nonce = [n; TOKEN_NONCE_BYTES];
            let text = fixture(
                token::issue_with_nonce(k, &account, &call, at, TOKEN_TTL, nonce),
                "token",
            )
            .as_str()
            .to_owned();
            IssuedToken {
                which,
                text,
                account,
                call,
                by_token_key: k.id() == key.id(),
                expires_at: fixture(at.checked_add(TOKEN_TTL).ok_or(()), "expiry"),
                nonce,
            }
        })
        .collect();

    // 160 bytes of mu-law silence: one 20 ms frame (PROTOCOL.md §2).
    let media_payload = STANDARD.encode([0xFFu8; 160]);
    let prefix = format!(
        r#"{{"event":"media","sequenceNumber":"3","streamSid":"{STREAM}","media":{{"track":"inbound","chunk":"1","timestamp":"5","payload":""#
    );
    let suffix = r#""}}"#;
    let fill = SESSION_MAX_MESSAGE_BYTES
        .saturating_add(1)
        .saturating_sub(prefix.len())
        .saturating_sub(suffix.len());
    let oversized = format!("{prefix}{}{suffix}", "A".repeat(fill));

    let auth = fixture(AuthToken::new(AUTH_TOKEN), "auth token");
    Fixtures {
        store_key: StoreKey::derive(&auth),
        keys: KeySet::single(key),
        unused_keys: KeySet::single(fixture(
            TokenKey::from_bytes(&UNUSED_TOKEN_KEY),
            "unused token key",
        )),
        auth,
        other_auth: fixture(AuthToken::new(OTHER_AUTH_TOKEN), "other auth token"),
        account,
        other_account,
        call,
        other_call,
        tokens,
        media_payload,
        oversized,
    }
}

impl Fixtures {
    fn token(&self, which: FixtureToken) -> &IssuedToken {
        match self.tokens.iter().find(|t| t.which == which) {
            Some(t) => t,
            None => panic!("broken fuzz fixture: no token {which:?}"),
        }
    }

    fn issued(&self, text: &str) -> Option<&IssuedToken> {
        self.tokens.iter().find(|t| t.text == text)
    }
}

/// The fixture tokens a replay store holds, as if the server had minted them: the live token
/// of ([`ACCOUNT`], [`CALL`]) is [`FixtureToken::Valid`], that of ([`ACCOUNT`],
/// [`OTHER_CALL`]) is [`FixtureToken::OtherCall`]. Every other fixture token is not on record
/// (another account, another key, expired, or superseded for its call).
pub const ON_RECORD: [FixtureToken; 2] = [FixtureToken::Valid, FixtureToken::OtherCall];

/// A fresh in-memory replay store holding the tokens of [`ON_RECORD`] (one stream per call,
/// the default call memory).
fn fixture_store() -> MemoryStore {
    let fx = fixtures();
    let store = MemoryStore::new(
        8,
        StorePolicy {
            token_ttl: TOKEN_TTL,
            call_memory: DEFAULT_CALL_MEMORY,
            streams_per_call: 1,
        },
    );
    for which in ON_RECORD {
        let t = fx.token(which);
        let live = LiveToken {
            key_id: fx.keys.current().id(),
            expires_at: t.expires_at,
            sealed: fx
                .store_key
                .seal_nonce(&t.account, &t.call, t.expires_at, &t.nonce),
        };
        let id = fx.store_key.call_id(&t.account, &t.call);
        fixture(store.mint_now(id, live, NOW), "fixture store");
    }
    store
}

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
fn handle_with_store<'a>(
    session: Session,
    event: Event<'a>,
    now: UnixTime,
    ctx: &AuthContext<'_>,
    store: &MemoryStore,
) -> (Session, Output<'a>) {
    let (next, output) = session.handle(event, now, ctx);
    let Output::Redeem(r) = output else {
        return (next, output);
    };
    if !matches!(event, Event::Text(_)) || !next.is_redeeming() {
        violated(format_args!(
            "a redemption was asked for on {event:?}, or without the session redeeming"
        ));
    }
    let result = redeem_in(store, &r, now);
    let (after, out) = next.handle(Event::Redeemed(result), now, ctx);
    match (&result, &out) {
        (Ok(()), Output::Authenticated(_)) | (Err(_), Output::Close(_)) => {}
        _ => violated(format_args!(
            "the redemption result {result:?} was answered by {out:?}"
        )),
    }
    (after, out)
}

/// The text of a fixture token (deterministic: the same on every run and machine).
pub fn fixture_token(which: FixtureToken) -> &'static str {
    &fixtures().token(which).text
}

/// The `X-Twilio-Signature` Twilio would send for an upgrade of `target` under `policy`,
/// computed over the URL with the port (`with_port`) or without it.
pub fn upgrade_signature(policy: PolicyUrl, target: &str, with_port: bool) -> String {
    let urls = policy.urls();
    let base = if with_port {
        urls.with_port
    } else {
        urls.without_port
    };
    let url = match target.split_once('?') {
        Some((_, q)) => format!("{base}?{q}"),
        None => base.to_owned(),
    };
    signature::compute_signature::<&str, &str>(&fixtures().auth, &url, &[])
}

// ---------------------------------------------------------------------------------------------
// Twilio messages (PROTOCOL.md §2)
// ---------------------------------------------------------------------------------------------

/// Which AccountSid a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum AccountChoice {
    /// [`ACCOUNT`].
    Configured,
    /// [`OTHER_ACCOUNT`].
    Other,
}

/// Which CallSid a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CallChoice {
    /// [`CALL`].
    Call,
    /// [`OTHER_CALL`].
    Other,
}

/// Which StreamSid a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum StreamChoice {
    /// [`STREAM`].
    Stream,
    /// [`OTHER_STREAM`].
    Other,
}

impl AccountChoice {
    fn as_str(self) -> &'static str {
        match self {
            Self::Configured => ACCOUNT,
            Self::Other => OTHER_ACCOUNT,
        }
    }
}

impl CallChoice {
    fn as_str(self) -> &'static str {
        match self {
            Self::Call => CALL,
            Self::Other => OTHER_CALL,
        }
    }
}

impl StreamChoice {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stream => STREAM,
            Self::Other => OTHER_STREAM,
        }
    }
}

/// The `token` custom parameter of a `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TokenChoice {
    /// No `token` parameter.
    Missing,
    /// A fixture token.
    Fixture(FixtureToken),
    /// Any text.
    Raw(String),
}

/// A `start` message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct StartSpec {
    /// `start.accountSid`.
    pub account: AccountChoice,
    /// `start.callSid`.
    pub call: CallChoice,
    /// `start.streamSid`.
    pub stream: StreamChoice,
    /// Whether the top-level `streamSid` is another stream than `start.streamSid`.
    pub top_level_differs: bool,
    /// `start.customParameters.token`.
    pub token: TokenChoice,
    /// Whether `customParameters` also holds a parameter whose value needs JSON escaping.
    pub extra_parameter: bool,
}

impl StartSpec {
    /// The `start` of a genuine call: the configured account, [`CALL`], [`STREAM`] and
    /// [`FixtureToken::Valid`].
    pub fn valid() -> Self {
        Self {
            account: AccountChoice::Configured,
            call: CallChoice::Call,
            stream: StreamChoice::Stream,
            top_level_differs: false,
            token: TokenChoice::Fixture(FixtureToken::Valid),
            extra_parameter: false,
        }
    }
}

fn json_string(s: &str) -> String {
    // Serialising a `str` cannot fail; the fallback is never taken.
    serde_json::to_string(s).unwrap_or_default()
}

/// The JSON text of a `start` message shaped like Twilio's (`PROTOCOL.md` §2).
pub fn start_json(spec: &StartSpec) -> String {
    let stream = spec.stream.as_str();
    let top = match (spec.top_level_differs, spec.stream) {
        (false, s) => s.as_str(),
        (true, StreamChoice::Stream) => OTHER_STREAM,
        (true, StreamChoice::Other) => STREAM,
    };
    let mut params = Vec::new();
    match &spec.token {
        TokenChoice::Missing => {}
        TokenChoice::Fixture(which) => {
            params.push(format!(r#""token":{}"#, json_string(fixture_token(*which))))
        }
        TokenChoice::Raw(t) => params.push(format!(r#""token":{}"#, json_string(t))),
    }
    if spec.extra_parameter {
        params.push(r#""callId":"a&b<c>\"d\"\n""#.to_owned());
    }
    format!(
        r#"{{"event":"start","sequenceNumber":"1","streamSid":"{top}","start":{{"accountSid":"{account}","streamSid":"{stream}","callSid":"{call}","tracks":["inbound"],"customParameters":{{{params}}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}}}}"#,
        account = spec.account.as_str(),
        call = spec.call.as_str(),
        params = params.join(","),
    )
}

/// A Twilio message kind, for [`message_json`] and [`SessionEvent::Mutated`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Template {
    /// `connected`.
    Connected,
    /// `start` as [`StartSpec::valid`].
    Start,
    /// `media` with 160 bytes of silence.
    Media,
    /// `dtmf`.
    Dtmf,
    /// `mark`.
    Mark,
    /// `stop`.
    Stop,
    /// An `event` value Twilio does not define.
    Unknown,
}

impl Template {
    /// Every template.
    pub const ALL: [Self; 7] = [
        Self::Connected,
        Self::Start,
        Self::Media,
        Self::Dtmf,
        Self::Mark,
        Self::Stop,
        Self::Unknown,
    ];
}

/// The JSON text of a message of kind `t` for stream `stream` (`PROTOCOL.md` §2).
pub fn message_json(t: Template, stream: StreamChoice) -> String {
    let s = stream.as_str();
    match t {
        Template::Connected => {
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned()
        }
        Template::Start => start_json(&StartSpec {
            stream,
            ..StartSpec::valid()
        }),
        Template::Media => format!(
            r#"{{"event":"media","sequenceNumber":"3","streamSid":"{s}","media":{{"track":"inbound","chunk":"1","timestamp":"5","payload":"{}"}}}}"#,
            fixtures().media_payload
        ),
        Template::Dtmf => format!(
            r#"{{"event":"dtmf","sequenceNumber":"5","streamSid":"{s}","dtmf":{{"track":"inbound_track","digit":"1"}}}}"#
        ),
        Template::Mark => format!(
            r#"{{"event":"mark","sequenceNumber":"4","streamSid":"{s}","mark":{{"name":"label"}}}}"#
        ),
        Template::Stop => format!(
            r#"{{"event":"stop","sequenceNumber":"5","streamSid":"{s}","stop":{{"accountSid":"{ACCOUNT}","callSid":"{CALL}"}}}}"#
        ),
        Template::Unknown => format!(r#"{{"event":"fuzz","streamSid":"{s}"}}"#),
    }
}

/// One byte edit of a message or token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ByteEdit {
    /// Removes the byte at this position (modulo the length).
    Delete(u16),
    /// Inserts a byte at this position (modulo the length plus one).
    Insert(u16, u8),
    /// Replaces the byte at this position (modulo the length).
    Replace(u16, u8),
    /// Flips one bit (`bit % 8`) of the byte at this position (modulo the length).
    FlipBit(u16, u8),
    /// Keeps only the first `n` bytes (modulo the length plus one).
    Truncate(u16),
}

fn position(at: u16, len: usize) -> usize {
    usize::from(at).checked_rem(len).unwrap_or(0)
}

/// Applies `edit` to `bytes`.
pub fn apply_edit(bytes: &mut Vec<u8>, edit: ByteEdit) {
    let len = bytes.len();
    match edit {
        ByteEdit::Delete(at) if len > 0 => {
            bytes.remove(position(at, len));
        }
        ByteEdit::Insert(at, b) => bytes.insert(position(at, len.saturating_add(1)), b),
        ByteEdit::Replace(at, b) => {
            if let Some(x) = bytes.get_mut(position(at, len)) {
                *x = b;
            }
        }
        ByteEdit::FlipBit(at, bit) => {
            if let Some(x) = bytes.get_mut(position(at, len)) {
                *x ^= 1u8.wrapping_shl(u32::from(bit & 7));
            }
        }
        ByteEdit::Truncate(n) => bytes.truncate(position(n, len.saturating_add(1))),
        ByteEdit::Delete(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Shared oracles
// ---------------------------------------------------------------------------------------------

/// A SID's text is its two-letter prefix and 32 hex digits (checked without `crate::sid`).
fn check_sid_text(kind: &str, text: &str, prefix: &str) {
    let ok = text.len() == 34
        && text.starts_with(prefix)
        && text.bytes().skip(2).all(|b| b.is_ascii_hexdigit());
    if !ok {
        violated(format_args!("{kind} {text:?} is not a valid {prefix} SID"));
    }
}

/// The `start.customParameters.token` of `text`, read with a generic JSON parser.
fn custom_token_of(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get("start")?
        .get("customParameters")?
        .get(extract::TOKEN_PARAM)?
        .as_str()
        .map(str::to_owned)
}

/// What has been authenticated so far with one [`ReplayGuard`].
#[derive(Default)]
struct Redeemed {
    tokens: Vec<FixtureToken>,
    calls: Vec<CallSid>,
}

/// Checks an `Output::Authenticated(info)` produced by the `start` message `text` on a
/// connection upgraded at `url_target`: the stream is for the configured account, the token
/// that was presented is a live fixture token issued with [`TOKEN_KEY`] for exactly this
/// account and call, and neither the token nor the call has opened a stream before.
fn check_authenticated(
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

fn close_code_of(reason: Reason) -> u16 {
    let code = reason.close_code().as_u16();
    if !SESSION_CLOSE_CODES.contains(&code) {
        violated(format_args!(
            "close for {reason:?} carries code {code}, not 1003, 1008 or 1009"
        ));
    }
    code
}

// ---------------------------------------------------------------------------------------------
// Target: start_frame
// ---------------------------------------------------------------------------------------------

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
/// default message limit and an empty replay guard).
///
/// Invariants:
/// - parsing is deterministic, and a parsed message re-encodes to JSON that parses to the
///   same message;
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
    let Ok(text) = std::str::from_utf8(data) else {
        return StartOutcome::NotText;
    };
    let parsed = frames::parse_inbound(text, DEFAULT_MAX_MESSAGE_BYTES);
    if parsed != frames::parse_inbound(text, DEFAULT_MAX_MESSAGE_BYTES) {
        violated(format_args!("parse_inbound is not deterministic"));
    }
    if let Ok(msg) = &parsed {
        let json = match serde_json::to_string(msg) {
            Ok(j) => j,
            Err(e) => violated(format_args!("a parsed message does not re-encode: {e}")),
        };
        // Re-encoding adds defaulted fields, so it may be longer than the limit: no limit.
        match frames::parse_inbound(&json, usize::MAX) {
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
    let (next, output) = handle_with_store(session, Event::Text(text), NOW, &ctx, &store);
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
            let code = close_code_of(reason);
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

// ---------------------------------------------------------------------------------------------
// Target: session
// ---------------------------------------------------------------------------------------------

/// The token in the upgrade request target of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
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
pub struct Step {
    /// Whether the event happens on the second connection (otherwise the first).
    pub second: bool,
    /// The event.
    pub event: SessionEvent,
}

/// Input of the `session` target: two connections, upgraded at [`NOW`] and sharing one
/// replay guard, and the events that happen on them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
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
/// that share one [`ReplayGuard`], with a clock that starts at [`NOW`] and moves only on
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
        step_connection(conn, event, now, &ctx, &store, &mut redeemed, &mut outcome);
    }
    outcome
}

fn step_connection(
    conn: &mut Connection,
    event: Event<'_>,
    now: UnixTime,
    ctx: &AuthContext<'_>,
    store: &MemoryStore,
    redeemed: &mut Redeemed,
    outcome: &mut SessionOutcome,
) {
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
    let (next, output) = handle_with_store(before, event, now, ctx, store);

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
            let code = close_code_of(*reason);
            let expected = match event {
                Event::Binary => CloseCode::Unsupported.as_u16(),
                Event::TooLarge => CloseCode::TooBig.as_u16(),
                Event::Text(t)
                    if t.len() > ctx.max_message_bytes && *reason != Reason::StartTimeout =>
                {
                    CloseCode::TooBig.as_u16()
                }
                _ => CloseCode::Policy.as_u16(),
            };
            if code != expected {
                violated(format_args!(
                    "close for {reason:?} on {event:?} carries {code}, the specification says {expected}"
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

// ---------------------------------------------------------------------------------------------
// Target: token
// ---------------------------------------------------------------------------------------------

/// Input of the `token` target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TokenInput {
    /// Any text into [`token::verify`] ([`token_verify`]).
    Verify(String),
    /// Issue, mutate, verify ([`token_mutation`]).
    Mutation(TokenMutation),
}

/// Issue a token, then alter it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TokenMutation {
    /// The account the token is issued for.
    pub account: AccountChoice,
    /// The call the token is issued for.
    pub call: CallChoice,
    /// Issued this many milliseconds after [`NOW`].
    pub issued_after_ms: u32,
    /// Lifetime in microseconds (up to 71 minutes: valid and invalid TTLs both occur).
    pub ttl_us: u32,
    /// The nonce.
    pub nonce: [u8; TOKEN_NONCE_BYTES],
    /// Edits of the token text (at most [`MAX_EDITS`]).
    pub text_edits: Vec<ByteEdit>,
    /// Edits of the decoded 61 bytes, re-encoded canonically (at most [`MAX_EDITS`]).
    pub raw_edits: Vec<ByteEdit>,
}

/// Target `token`: dispatches to [`token_verify`] or [`token_mutation`].
pub fn token(input: &TokenInput) -> bool {
    match input {
        TokenInput::Verify(text) => token_verify(text.as_bytes()),
        TokenInput::Mutation(m) => {
            token_mutation(m);
            false
        }
    }
}

/// `data` as a token presented for ([`ACCOUNT`], [`CALL`]) at [`NOW`]. Returns whether it
/// verified.
///
/// Invariants: verification is deterministic; it succeeds only for a live fixture token
/// issued with [`TOKEN_KEY`] for exactly this account and call, with the claims it was
/// issued with; it never succeeds with a key set that issued nothing ([`UNUSED_TOKEN_KEY`]);
/// anything not [`token::TOKEN_CHARS`] long fails on its length, before any decoding.
pub fn token_verify(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let fx = fixtures();
    let result = token::verify(&fx.keys, text, &fx.account, &fx.call, NOW);
    if result != token::verify(&fx.keys, text, &fx.account, &fx.call, NOW) {
        violated(format_args!("token::verify is not deterministic"));
    }
    if text.len() != token::TOKEN_CHARS && result != Err(TokenError::Length) {
        violated(format_args!(
            "a {}-character token gave {result:?}, not a length error",
            text.len()
        ));
    }
    if token::verify(&fx.unused_keys, text, &fx.account, &fx.call, NOW).is_ok() {
        violated(format_args!(
            "a token verified with a key that never issued anything: {text:?}"
        ));
    }
    match result {
        Ok(claims) => {
            let Some(issued) = fx.issued(text) else {
                violated(format_args!(
                    "a token that was never issued verified: {text:?}"
                ))
            };
            let ok = issued.by_token_key
                && issued.account == fx.account
                && issued.call == fx.call
                && NOW < issued.expires_at
                && claims.expires_at == issued.expires_at;
            if !ok {
                violated(format_args!(
                    "{:?} verified for {ACCOUNT} / {CALL} at NOW",
                    issued.which
                ));
            }
            true
        }
        Err(_) => false,
    }
}

/// Issues a token as `m` describes, checks it verifies exactly where it should, then checks
/// that every alteration of it is rejected.
///
/// Invariants: a token issues exactly when its TTL is between 1 ms and [`MAX_TOKEN_TTL`];
/// a fresh token is [`token::TOKEN_CHARS`] characters of the base64url
/// alphabet; it verifies for its own account and call from issuance until one millisecond
/// before its expiry, with the claims it was issued with; it does not verify at its expiry,
/// for another call, for another account, or with a key set that did not issue it; and no
/// text that differs from it (byte edits of the text, or bit edits of its decoded bytes
/// re-encoded canonically) verifies at all.
pub fn token_mutation(m: &TokenMutation) {
    let fx = fixtures();
    let (account, other_account) = match m.account {
        AccountChoice::Configured => (fx.account, fx.other_account),
        AccountChoice::Other => (fx.other_account, fx.account),
    };
    let (call, other_call) = match m.call {
        CallChoice::Call => (fx.call, fx.other_call),
        CallChoice::Other => (fx.other_call, fx.call),
    };
    let ttl = Duration::from_micros(u64::from(m.ttl_us));
    let issued_at = NOW.saturating_add(Duration::from_millis(u64::from(m.issued_after_ms)));
    let key = fx.keys.current();
    // Expiry has millisecond resolution: a TTL under 1 ms would mint a token expired on
    // arrival, and one over the maximum one no verifier accepts; both must be refused.
    let ttl_in_range = ttl.as_millis() > 0 && ttl <= MAX_TOKEN_TTL;
    let issued = match token::issue_with_nonce(key, &account, &call, issued_at, ttl, m.nonce) {
        Ok(t) if ttl_in_range => t,
        Err(IssueError::TtlOutOfRange) if !ttl_in_range => return,
        other => violated(format_args!("issuing with a TTL of {ttl:?} gave {other:?}")),
    };
    let text = issued.as_str();
    if text.len() != token::TOKEN_CHARS
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        violated(format_args!(
            "issued token {text:?} is not 82 base64url characters"
        ));
    }
    let expires_at = issued_at.saturating_add(ttl);
    let last_valid = UnixTime::from_millis(expires_at.as_millis().saturating_sub(1));
    for at in [issued_at, last_valid] {
        match token::verify(&fx.keys, text, &account, &call, at) {
            Ok(c) if c.expires_at == expires_at && c.nonce == m.nonce && c.key_id == key.id() => {}
            other => violated(format_args!(
                "a fresh token gave {other:?} at {at:?} (issued {issued_at:?}, ttl {ttl:?})"
            )),
        }
    }
    if token::verify(&fx.keys, text, &account, &call, expires_at) != Err(TokenError::Expired) {
        violated(format_args!("a token still verifies at its expiry"));
    }
    let rejected_elsewhere = token::verify(&fx.keys, text, &account, &other_call, issued_at)
        .is_err()
        && token::verify(&fx.keys, text, &other_account, &call, issued_at).is_err()
        && token::verify(&fx.unused_keys, text, &account, &call, issued_at).is_err();
    if !rejected_elsewhere {
        violated(format_args!(
            "a token verifies for another call, another account or another key"
        ));
    }

    let reject_unless_same = |candidate: &[u8], how: &str| {
        if candidate == text.as_bytes() {
            return;
        }
        let Ok(candidate) = std::str::from_utf8(candidate) else {
            return;
        };
        if let Ok(c) = token::verify(&fx.keys, candidate, &account, &call, issued_at) {
            violated(format_args!(
                "altered token {candidate:?} ({how}) verified: {c:?}; original {text:?}"
            ));
        }
    };
    let mut edited = text.as_bytes().to_vec();
    for e in m.text_edits.iter().take(MAX_EDITS) {
        apply_edit(&mut edited, *e);
        reject_unless_same(&edited, "text edit");
    }
    let Ok(mut raw) = URL_SAFE_NO_PAD.decode(text) else {
        violated(format_args!("an issued token is not base64url"))
    };
    for e in m.raw_edits.iter().take(MAX_EDITS) {
        apply_edit(&mut raw, *e);
        reject_unless_same(URL_SAFE_NO_PAD.encode(&raw).as_bytes(), "raw edit");
    }
}

// ---------------------------------------------------------------------------------------------
// Targets: upgrade_request, upgrade_request_raw
// ---------------------------------------------------------------------------------------------

/// The request method.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum HttpMethod {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// Any text.
    Raw(String),
}

/// The request target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum UpgradeTarget {
    /// [`STREAM_PATH`].
    StreamPath,
    /// `{STREAM_PATH}?{query}`.
    WithQuery(String),
    /// `{STREAM_PATH}?token={fixture token}`.
    WithToken(FixtureToken),
    /// Any text.
    Raw(String),
}

/// A header name the upgrade decision reads, or one it must ignore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum HeaderName {
    /// `Upgrade`.
    Upgrade,
    /// `Connection`.
    Connection,
    /// `Sec-WebSocket-Version`.
    SecWebSocketVersion,
    /// `Sec-WebSocket-Key`.
    SecWebSocketKey,
    /// `X-Twilio-Signature`.
    XTwilioSignature,
    /// `Host` (must not influence the signed URL).
    Host,
    /// `X-Forwarded-Proto` (must not influence the signed URL).
    XForwardedProto,
    /// `X-Forwarded-Host` (must not influence the signed URL).
    XForwardedHost,
}

impl HeaderName {
    fn as_str(self) -> &'static str {
        match self {
            Self::Upgrade => "Upgrade",
            Self::Connection => "Connection",
            Self::SecWebSocketVersion => "Sec-WebSocket-Version",
            Self::SecWebSocketKey => "Sec-WebSocket-Key",
            Self::XTwilioSignature => signature::HEADER,
            Self::Host => "Host",
            Self::XForwardedProto => "X-Forwarded-Proto",
            Self::XForwardedHost => "X-Forwarded-Host",
        }
    }
}

/// One header of an upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum UpgradeHeader {
    /// `Upgrade: websocket`.
    Upgrade,
    /// `Connection: Upgrade`.
    Connection,
    /// `Sec-WebSocket-Version: 13`.
    Version,
    /// `Sec-WebSocket-Key: {WEBSOCKET_KEY}`.
    Key,
    /// `X-Twilio-Signature` computed for this request's URL under the policy, over the URL
    /// with or without the port.
    Signature {
        /// Which port variant is signed.
        with_port: bool,
    },
    /// A known header name with any value.
    Named {
        /// The name.
        name: HeaderName,
        /// Whether the name is written in lower case.
        lowercase: bool,
        /// The value.
        value: Vec<u8>,
    },
    /// Any name and value.
    Raw {
        /// The name.
        name: String,
        /// The value.
        value: Vec<u8>,
    },
}

/// Input of the `upgrade_request` target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct UpgradeInput {
    /// The configured stream URL.
    pub policy: PolicyUrl,
    /// The method.
    pub method: HttpMethod,
    /// The request target.
    pub target: UpgradeTarget,
    /// The headers, in order.
    pub headers: Vec<UpgradeHeader>,
}

impl UpgradeInput {
    /// The request head this input describes.
    pub fn head(&self) -> RequestHead {
        let target = match &self.target {
            UpgradeTarget::StreamPath => STREAM_PATH.to_owned(),
            UpgradeTarget::WithQuery(q) => format!("{STREAM_PATH}?{q}"),
            UpgradeTarget::WithToken(which) => {
                format!("{STREAM_PATH}?token={}", fixture_token(*which))
            }
            UpgradeTarget::Raw(t) => t.clone(),
        };
        let headers = self
            .headers
            .iter()
            .map(|h| match h {
                UpgradeHeader::Upgrade => ("Upgrade".to_owned(), b"websocket".to_vec()),
                UpgradeHeader::Connection => ("Connection".to_owned(), b"Upgrade".to_vec()),
                UpgradeHeader::Version => ("Sec-WebSocket-Version".to_owned(), b"13".to_vec()),
                UpgradeHeader::Key => (
                    "Sec-WebSocket-Key".to_owned(),
                    WEBSOCKET_KEY.as_bytes().to_vec(),
                ),
                UpgradeHeader::Signature { with_port } => (
                    signature::HEADER.to_owned(),
                    upgrade_signature(self.policy, &target, *with_port).into_bytes(),
                ),
                UpgradeHeader::Named {
                    name,
                    lowercase,
                    value,
                } => {
                    let name = if *lowercase {
                        name.as_str().to_ascii_lowercase()
                    } else {
                        name.as_str().to_owned()
                    };
                    (name, value.clone())
                }
                UpgradeHeader::Raw { name, value } => (name.clone(), value.clone()),
            })
            .collect();
        let method = match &self.method {
            HttpMethod::Get => "GET".to_owned(),
            HttpMethod::Post => "POST".to_owned(),
            HttpMethod::Raw(m) => m.clone(),
        };
        RequestHead {
            method,
            target,
            headers,
        }
    }
}

/// What an upgrade input reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpgradeOutcome {
    /// Accepted with `--upgrade-signature required`.
    pub required: bool,
    /// Accepted with `if-present`.
    pub if_present: bool,
    /// Accepted with `off`.
    pub off: bool,
}

/// Target `upgrade_request`: the request head the input describes into [`upgrade::decide`],
/// under each [`SignatureMode`]. See [`check_upgrade`] for the invariants.
pub fn upgrade_request(input: &UpgradeInput) -> UpgradeOutcome {
    check_upgrade(&input.head(), input.policy)
}

/// Most headers the raw target parses (httparse needs a fixed array).
const RAW_MAX_HEADERS: usize = 32;

/// Target `upgrade_request_raw`: `data` parsed as an HTTP/1.x request head with `httparse`
/// (as hyper does), then into [`upgrade::decide`] under [`PolicyUrl::NoPort`] and each
/// [`SignatureMode`]. Input that is not a complete request head is not a request and is
/// skipped. See [`check_upgrade`] for the invariants.
pub fn upgrade_request_raw(data: &[u8]) -> Option<UpgradeOutcome> {
    let mut headers = [httparse::EMPTY_HEADER; RAW_MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(data) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let head = RequestHead {
        method: req.method?.to_owned(),
        target: req.path?.to_owned(),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect(),
    };
    Some(check_upgrade(&head, PolicyUrl::NoPort))
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2), computed here independently.
fn accept_key_for(key: &[u8]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(ctx.finish().as_ref())
}

/// The invariants of the upgrade decision for one request head, under `policy` and each
/// [`SignatureMode`]:
/// - `decide` never panics and gives the same answer twice (checked under `required`, the
///   mode that runs every check);
/// - it never answers 503 (capacity is the server's decision, after this one);
/// - a target whose path (before the first `?`) is not exactly [`STREAM_PATH`], or that is
///   longer than [`MAX_REQUEST_TARGET_BYTES`], is refused with 404, whatever else is wrong;
///   on the stream path, a method other than `GET` is refused with 405;
/// - an accepted request is a `GET` of the stream path with exactly one `Sec-WebSocket-Key`,
///   base64 of 16 bytes, and the answer's `Sec-WebSocket-Accept` is the RFC 6455 one;
/// - with `required`, an accepted request has exactly one `X-Twilio-Signature`, byte for byte
///   the signature of the policy URL (with or without its port, written out by hand here,
///   never taken from `Host` or `X-Forwarded-*`) plus `?query` if the target has one; with
///   `if-present`, the same or no such header at all;
/// - a request accepted with `required` is accepted the same way with `if-present`, and one
///   accepted with `if-present` the same way with `off`.
pub fn check_upgrade(head: &RequestHead, policy: PolicyUrl) -> UpgradeOutcome {
    let fx = fixtures();
    let urls = policy.urls();
    let decide = |mode| {
        let p = UpgradePolicy {
            stream_path: STREAM_PATH,
            signed_url: urls.signed_url,
            auth: &fx.auth,
            mode,
        };
        let first = upgrade::decide(head, &p);
        // Determinism is checked in the mode that runs every check.
        if mode == SignatureMode::Required && first != upgrade::decide(head, &p) {
            violated(format_args!("upgrade::decide is not deterministic"));
        }
        first
    };
    let results = [
        SignatureMode::Required,
        SignatureMode::IfPresent,
        SignatureMode::Off,
    ]
    .map(|mode| (mode, decide(mode)));

    let (path, query) = match head.target.find('?') {
        Some(i) => (
            head.target.get(..i).unwrap_or_default(),
            head.target.get(i.saturating_add(1)..),
        ),
        None => (head.target.as_str(), None),
    };
    let on_path = path == STREAM_PATH && head.target.len() <= MAX_REQUEST_TARGET_BYTES;
    let signatures: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(signature::HEADER))
        .map(|(_, v)| v.as_slice())
        .collect();
    // Computed once, and only when it can matter (one header, some mode accepted).
    let any_accepted = results.iter().any(|(_, r)| r.is_ok());
    let single_signature_valid = match signatures.as_slice() {
        [v] if any_accepted => [urls.with_port, urls.without_port].iter().any(|base| {
            let url = match query {
                Some(q) => format!("{base}?{q}"),
                None => (*base).to_owned(),
            };
            signature::compute_signature::<&str, &str>(&fx.auth, &url, &[]).as_bytes() == *v
        }),
        _ => false,
    };

    for (mode, result) in &results {
        match result {
            Err(reject) => {
                if reject.status() == 503 {
                    violated(format_args!("decide answered 503 ({reject:?})"));
                }
                if !on_path && *reject != UpgradeReject::NotFound {
                    violated(format_args!(
                        "a request for {:?} was refused with {reject:?}, not 404",
                        head.target
                    ));
                }
                if on_path && head.method != "GET" && *reject != UpgradeReject::Method {
                    violated(format_args!(
                        "a {:?} of the stream path was refused with {reject:?}, not 405",
                        head.method
                    ));
                }
                if on_path
                    && head.method == "GET"
                    && matches!(reject, UpgradeReject::NotFound | UpgradeReject::Method)
                {
                    violated(format_args!("a GET of the stream path gave {reject:?}"));
                }
            }
            Ok(accepted) => {
                if !on_path {
                    violated(format_args!(
                        "accepted a request for {:?}, not the stream path",
                        head.target
                    ));
                }
                if head.method != "GET" {
                    violated(format_args!("accepted a {:?} request", head.method));
                }
                let keys: Vec<&[u8]> = head
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
                    .map(|(_, v)| v.trim_ascii())
                    .collect();
                let [key] = keys.as_slice() else {
                    violated(format_args!(
                        "accepted with {} Sec-WebSocket-Key headers",
                        keys.len()
                    ))
                };
                if STANDARD.decode(key).map(|k| k.len()).ok() != Some(16) {
                    violated(format_args!(
                        "accepted a key that is not base64 of 16 bytes"
                    ));
                }
                if accepted.accept_key != accept_key_for(key) {
                    violated(format_args!("Sec-WebSocket-Accept is not RFC 6455's"));
                }
                let signed_ok = match signatures.as_slice() {
                    [] => *mode != SignatureMode::Required,
                    [_] => *mode == SignatureMode::Off || single_signature_valid,
                    _ => *mode == SignatureMode::Off,
                };
                if !signed_ok {
                    violated(format_args!(
                        "accepted with mode {} and {} X-Twilio-Signature header(s) that do not \
                         match the policy URL {}",
                        mode.as_str(),
                        signatures.len(),
                        urls.signed_url
                    ));
                }
            }
        }
    }
    let [(_, required), (_, if_present), (_, off)] = &results;
    for (stricter, looser, what) in [
        (required, if_present, "required but not if-present"),
        (if_present, off, "if-present but not off"),
    ] {
        if let Ok(a) = stricter
            && looser.as_ref() != Ok(a)
        {
            violated(format_args!("accepted with {what}: {looser:?}"));
        }
    }
    UpgradeOutcome {
        required: required.is_ok(),
        if_present: if_present.is_ok(),
        off: off.is_ok(),
    }
}

// ---------------------------------------------------------------------------------------------
// Target: twiml
// ---------------------------------------------------------------------------------------------

/// XML 1.0 §2.2 `Char`, written out here rather than taken from [`twiml::is_xml_char`].
fn xml_allows(c: char) -> bool {
    let u = u32::from(c);
    matches!(u, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x0010_FFFF)
}

/// The errors `render` may justly return for `t` (empty: it must succeed).
fn twiml_problems(t: &StreamTwiml) -> Vec<TwimlError> {
    let mut p = Vec::new();
    // `wss://` or `ws://` (any case), then a host: something that does not start with `/`.
    let url = t.url.as_bytes();
    let after_scheme = [b"wss://".as_slice(), b"ws://"].iter().find_map(|scheme| {
        url.get(..scheme.len())
            .filter(|head| head.eq_ignore_ascii_case(scheme))
            .and_then(|_| url.get(scheme.len()..))
    });
    if after_scheme.is_none_or(|rest| rest.first().is_none_or(|&b| b == b'/')) {
        p.push(TwimlError::UrlScheme);
    }
    if t.url.contains('?') {
        p.push(TwimlError::UrlHasQuery);
    }
    if t.url.contains('#') {
        p.push(TwimlError::UrlHasFragment);
    }
    if t.verb == Verb::Connect && t.track.is_some_and(|tr| tr != Track::Inbound) {
        p.push(TwimlError::TrackNotAllowed);
    }
    let bad = |s: &str| !s.chars().all(xml_allows);
    if bad(&t.url) {
        p.push(TwimlError::ForbiddenCharacter(Field::Url));
    }
    if t.name.as_deref().is_some_and(bad) {
        p.push(TwimlError::ForbiddenCharacter(Field::Name));
    }
    if t.status_callback.as_deref().is_some_and(bad) {
        p.push(TwimlError::ForbiddenCharacter(Field::StatusCallback));
    }
    for (i, (name, value)) in t.parameters.iter().enumerate() {
        if name.is_empty() {
            p.push(TwimlError::EmptyParameterName(i));
        }
        if t.parameters.iter().take(i).any(|(n, _)| n == name) {
            p.push(TwimlError::DuplicateParameterName(i));
        }
        if bad(name) {
            p.push(TwimlError::ForbiddenCharacter(Field::ParameterName(i)));
        }
        if bad(value) {
            p.push(TwimlError::ForbiddenCharacter(Field::ParameterValue(i)));
        }
    }
    p
}

fn elements<'a, 'input>(n: roxmltree::Node<'a, 'input>) -> Vec<roxmltree::Node<'a, 'input>> {
    n.children().collect()
}

/// Target `twiml`: [`twiml::render`] of `t`.
///
/// Invariants: rendering is deterministic; it fails exactly when the input has a problem
/// (a URL that is not `ws(s)://` and a host, has a query or fragment; a track other than
/// `inbound_track` under `<Connect>`; an empty or repeated parameter name; a character XML
/// 1.0 forbids), and then with one of that input's problems; a rendered document starts
/// with the XML declaration, holds no raw tab, newline or carriage return, parses with
/// `roxmltree`, has no text node, is `<Response><{Connect|Start}><Stream>` with exactly the
/// attributes given (in ascending name order) and one `<Parameter name value>` per
/// parameter, and every value reads back exactly as given.
pub fn twiml(t: &StreamTwiml) -> bool {
    let rendered = twiml::render(t);
    if rendered != twiml::render(t) {
        violated(format_args!("twiml::render is not deterministic"));
    }
    let problems = twiml_problems(t);
    let xml = match rendered {
        Err(e) => {
            if !problems.contains(&e) {
                violated(format_args!(
                    "render refused with {e:?}, but the input's problems are {problems:?}"
                ));
            }
            return false;
        }
        Ok(xml) => xml,
    };
    if !problems.is_empty() {
        violated(format_args!(
            "render accepted an input with problems {problems:?}: {xml:?}"
        ));
    }
    if !xml.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#) {
        violated(format_args!(
            "TwiML does not start with the declaration: {xml:?}"
        ));
    }
    if xml.contains(['\n', '\r', '\t']) {
        violated(format_args!("TwiML holds a raw tab or line break: {xml:?}"));
    }
    let doc = match roxmltree::Document::parse(&xml) {
        Ok(d) => d,
        Err(e) => violated(format_args!("rendered TwiML is not XML ({e}): {xml:?}")),
    };
    if let Some(n) = doc.descendants().find(|n| !n.is_element() && !n.is_root()) {
        violated(format_args!(
            "TwiML holds a non-element node {n:?}: {xml:?}"
        ));
    }
    let response = doc.root_element();
    let verb_name = match t.verb {
        Verb::Connect => "Connect",
        Verb::Start => "Start",
    };
    let verb = match elements(response).as_slice() {
        [v] if response.tag_name().name() == "Response"
            && v.tag_name().name() == verb_name
            && response.attributes().next().is_none()
            && v.attributes().next().is_none() =>
        {
            *v
        }
        _ => violated(format_args!(
            "TwiML is not <Response><{verb_name}>: {xml:?}"
        )),
    };
    let stream = match elements(verb).as_slice() {
        [s] if s.tag_name().name() == "Stream" => *s,
        _ => violated(format_args!(
            "<{verb_name}> does not hold one <Stream>: {xml:?}"
        )),
    };
    let mut expected: Vec<(&str, &str)> = Vec::new();
    if let Some(n) = &t.name {
        expected.push(("name", n));
    }
    if let Some(cb) = &t.status_callback {
        expected.push(("statusCallback", cb));
    }
    if let Some(m) = t.status_callback_method {
        expected.push(("statusCallbackMethod", m.as_str()));
    }
    if let Some(tr) = t.track {
        expected.push(("track", tr.as_str()));
    }
    expected.push(("url", &t.url));
    let attrs = |n: roxmltree::Node<'_, '_>| {
        n.attributes()
            .map(|a| (a.name().to_owned(), a.value().to_owned()))
            .collect::<Vec<_>>()
    };
    let same = |got: &[(String, String)], want: &[(&str, &str)]| {
        got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|((gn, gv), (wn, wv))| gn == wn && gv == wv)
    };
    if !same(&attrs(stream), &expected) {
        violated(format_args!(
            "<Stream> attributes {:?} are not {expected:?}",
            attrs(stream)
        ));
    }
    let params = elements(stream);
    if params.len() != t.parameters.len() {
        violated(format_args!(
            "{} <Parameter>s for {} parameters",
            params.len(),
            t.parameters.len()
        ));
    }
    for (p, (name, value)) in params.iter().zip(&t.parameters) {
        let want = [("name", name.as_str()), ("value", value.as_str())];
        if p.tag_name().name() != "Parameter" || !same(&attrs(*p), &want) || p.has_children() {
            violated(format_args!("<Parameter> {:?} is not {want:?}", attrs(*p)));
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Target: signature
// ---------------------------------------------------------------------------------------------

/// The URL of a signature input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum SignedUrl {
    /// `https://{rest}`.
    Https(String),
    /// `wss://{rest}`.
    Wss(String),
    /// `http://{rest}`.
    Http(String),
    /// Any text.
    Raw(String),
}

/// The body of a signature input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum SignedBody {
    /// No body (form parameters or a GET).
    None,
    /// A body; the URL is left as it is.
    Raw(Vec<u8>),
    /// A body, with `bodySHA256={its hash}` appended to the URL's query (a JSON webhook).
    Hashed(Vec<u8>),
}

/// The `X-Twilio-Signature` header of a signature input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum SignatureHeader {
    /// No header.
    Missing,
    /// [`signature::compute_signature`] of the URL as given.
    Computed,
    /// The signature of the URL with the scheme's default port added, or without its port.
    PortVariant {
        /// Which variant.
        with_port: bool,
    },
    /// The right computation with [`OTHER_AUTH_TOKEN`].
    OtherAuthToken,
    /// [`SignatureHeader::Computed`] with one byte edit.
    Edited(ByteEdit),
    /// Any bytes.
    Raw(Vec<u8>),
}

/// Input of the `signature` target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SignatureInput {
    /// The URL.
    pub url: SignedUrl,
    /// The body.
    pub body: SignedBody,
    /// The header.
    pub header: SignatureHeader,
    /// The form parameters.
    pub params: Vec<(String, String)>,
}

/// The raw values of `name` in the query of `url` (fragment removed), written out here.
fn query_values<'a>(url: &'a str, name: &str) -> Vec<&'a str> {
    let url = url.split('#').next().unwrap_or_default();
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|s| s.split_once('=').unwrap_or((s, "")))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .collect()
}

fn sha256_hex(body: &[u8]) -> String {
    digest::digest(&digest::SHA256, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `with` is `without` with `:digits` inserted at one place.
fn differ_by_port_only(with: &str, without: &str) -> bool {
    let common = with
        .bytes()
        .zip(without.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let (Some(with_rest), Some(without_rest)) = (with.get(common..), without.get(common..)) else {
        return false;
    };
    let Some(port_and_rest) = with_rest.strip_prefix(':') else {
        return false;
    };
    let rest = port_and_rest.trim_start_matches(|c: char| c.is_ascii_digit());
    rest.len() < port_and_rest.len() && rest == without_rest
}

/// Target `signature`: [`signature::validate`] with the input's URL, parameters, body and
/// header, under [`AUTH_TOKEN`]. Returns whether it accepted.
///
/// Invariants:
/// - `validate` is deterministic and does not depend on the order of the parameters;
///   `compute_signature` does not either, and an identical pair given twice counts once;
/// - [`signature::port_variants`] of a URL it accepts returns the URL itself as one of the
///   two variants, and the other differs only by the port;
/// - no header: `Missing`; a header over [`MAX_SIGNATURE_HEADER_BYTES`]: `Malformed`;
/// - accepted means: the header is byte for byte `compute_signature` of one port variant
///   with these parameters; a body comes with no parameters and exactly one `bodySHA256`
///   in the URL equal to the body's SHA-256 (lowercase hex); no body means no `bodySHA256`;
/// - agreement: the header `compute_signature` gives for the URL as given, or for either
///   port variant, is accepted whenever the URL can be signed and the body rule holds, and
///   the same computation with another auth token never is.
pub fn signature(input: &SignatureInput) -> bool {
    let fx = fixtures();
    let mut url = match &input.url {
        SignedUrl::Https(rest) => format!("https://{rest}"),
        SignedUrl::Wss(rest) => format!("wss://{rest}"),
        SignedUrl::Http(rest) => format!("http://{rest}"),
        SignedUrl::Raw(u) => u.clone(),
    };
    let body = match &input.body {
        SignedBody::None => None,
        SignedBody::Raw(b) => Some(b.as_slice()),
        SignedBody::Hashed(b) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{sep}{}={}", signature::BODY_HASH_PARAM, sha256_hex(b));
            Some(b.as_slice())
        }
    };
    // Bounded: each input signs a dozen times, and every signing sorts the parameters with
    // string comparisons that the fuzzer's compare tracing makes expensive; hundreds of
    // parameters made this target ten times slower without reaching anything new. Order,
    // repetition and de-duplication are all exercised by a handful.
    let params = input
        .params
        .get(..input.params.len().min(MAX_SIGNATURE_PARAMS))
        .unwrap_or_default();
    let variants = signature::port_variants(&url);
    if let Ok((with, without)) = &variants
        && (!differ_by_port_only(with, without) || (with != &url && without != &url))
    {
        violated(format_args!(
            "port variants of {url:?} are {with:?} and {without:?}"
        ));
    }

    let computed = signature::compute_signature(&fx.auth, &url, params);
    let mut reversed = params.to_vec();
    reversed.reverse();
    let mut doubled = params.to_vec();
    doubled.extend(params.iter().cloned());
    if signature::compute_signature(&fx.auth, &url, &reversed) != computed
        || signature::compute_signature(&fx.auth, &url, &doubled) != computed
    {
        violated(format_args!(
            "compute_signature depends on parameter order or repetition"
        ));
    }

    let header: Option<Vec<u8>> = match &input.header {
        SignatureHeader::Missing => None,
        SignatureHeader::Computed => Some(computed.clone().into_bytes()),
        SignatureHeader::PortVariant { with_port } => match &variants {
            Ok((with, without)) => {
                let v = if *with_port { with } else { without };
                Some(signature::compute_signature(&fx.auth, v, params).into_bytes())
            }
            Err(_) => Some(computed.clone().into_bytes()),
        },
        SignatureHeader::OtherAuthToken => {
            Some(signature::compute_signature(&fx.other_auth, &url, params).into_bytes())
        }
        SignatureHeader::Edited(e) => {
            let mut h = computed.clone().into_bytes();
            apply_edit(&mut h, *e);
            Some(h)
        }
        SignatureHeader::Raw(h) => Some(h.clone()),
    };
    let header = header.as_deref();
    let result = signature::validate(&fx.auth, &url, params, body, header);
    if result != signature::validate(&fx.auth, &url, &reversed, body, header) {
        violated(format_args!(
            "validate depends on the order of the parameters"
        ));
    }

    let hashes = query_values(&url, signature::BODY_HASH_PARAM);
    let body_rule = match body {
        None => hashes.is_empty(),
        Some(b) => params.is_empty() && matches!(hashes.as_slice(), [h] if *h == sha256_hex(b)),
    };
    match header {
        None if result != Err(SignatureError::Missing) => {
            violated(format_args!("no header gave {result:?}"))
        }
        Some(h)
            if h.len() > MAX_SIGNATURE_HEADER_BYTES && result != Err(SignatureError::Malformed) =>
        {
            violated(format_args!("a {}-byte header gave {result:?}", h.len()))
        }
        _ => {}
    }
    if result.is_ok() {
        let Ok((with, without)) = &variants else {
            violated(format_args!(
                "accepted a URL without port variants: {url:?}"
            ))
        };
        let matches_variant = [with, without]
            .iter()
            .any(|v| header == Some(signature::compute_signature(&fx.auth, v, params).as_bytes()));
        if !matches_variant {
            violated(format_args!(
                "accepted a header that is not the signature of {url:?} or its port variant"
            ));
        }
        if !body_rule {
            violated(format_args!(
                "accepted although the bodySHA256 rule does not hold for {url:?}"
            ));
        }
    }
    let should_accept = matches!(
        input.header,
        SignatureHeader::Computed | SignatureHeader::PortVariant { .. }
    ) && variants.is_ok()
        && body_rule;
    if should_accept && result.is_err() {
        violated(format_args!(
            "the signature compute_signature gives was refused with {result:?} for {url:?}"
        ));
    }
    if input.header == SignatureHeader::OtherAuthToken && result.is_ok() {
        violated(format_args!(
            "a signature made with another auth token was accepted"
        ));
    }
    result.is_ok()
}
