//! A small media-stream server for `tests/kit_teeth.rs`, built the way `src/server/` is
//! (hyper 1 with upgrades, tokio-tungstenite on the upgraded socket) from the crate's pure
//! decisions, with a [`Weakness`] switch that removes or breaks exactly one protection.
//!
//! With [`Weakness::None`] it is a correct target (the control: the kit must pass it on every
//! case, so that what fails under a weakness is that weakness's doing and not this server's).
//! It echoes the inbound audio of each authenticated stream on that stream's connection, like
//! [`streamguard::server::Echo`], so the kit sees echo (under
//! [`Weakness::BroadcastsToEveryConnection`] to every open connection instead). It keeps a table of the authenticated
//! streams by `streamSid`, as applications that route audio by the `streamSid` of each frame
//! do; only [`Weakness::MediaBeforeStart`] routes through it.
//!
//! Deliberately absent, because no weakness is about them: capacity limits (but the pending
//! cap of [`Weakness::PendingCapRefuses`]), metrics, logging, graceful shutdown (the listener
//! task is aborted when the [`WeakTarget`] is dropped).

#![allow(dead_code)] // each test uses a different part

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use streamguard::extract::TOKEN_PARAM;
use streamguard::kit::cases::Target;
use streamguard::limits::{
    DEFAULT_CALL_MEMORY, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_STREAMS_PER_CALL, MAX_STREAMS_PER_CALL,
    MAX_WEBHOOK_BODY_BYTES,
};
use streamguard::secret::{AuthToken, KeySet, StreamToken, TokenKey};
use streamguard::session::{
    AuthContext, CloseCode, Event, Output, RedeemFailure, Session, StreamInfo, UrlToken,
};
use streamguard::sid::{AccountSid, CallSid, StreamSid, check_account_sid};
use streamguard::store::{
    self, CallId, CallRecord, LiveToken, MemoryStore, MintDecision, Presented, RedeemRefusal,
    ReplayStore, StoreFill, StoreFuture, StoreKey, StorePolicy,
};
use streamguard::time::{Clock, SystemClock, UnixTime};
use streamguard::upgrade::{self, RequestHead, SignatureMode, UpgradePolicy, UpgradeReject};
use streamguard::webhook::{self, CONTENT_TYPE_XML, Verified, WebhookPolicy, WebhookReject};
use streamguard::wire::form;
use streamguard::wire::frames::{Inbound, Outbound, OutboundMedia, StartFrame, parse_inbound};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig};

/// The Twilio auth token every weak target runs with (the kit is given the same).
pub const AUTH_TOKEN: &str = "5e3a1f0c9b7d4e2a8c6f0b1d3e5a7c9f";
/// The configured account.
pub const ACCOUNT: &str = "AC5e3a1f0c9b7d4e2a8c6f0b1d3e5a7c9f";
pub const WEBHOOK_PATH: &str = "/voice/webhook";
pub const STREAM_PATH: &str = "/voice/stream";

/// The one protection a target goes without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weakness {
    /// Nothing removed: the control.
    None,
    /// Any `start` authenticates: no token is extracted, verified or redeemed, and the
    /// AccountSid of `start` is not compared (the webhook still mints as usual).
    NoTokenCheck,
    /// The session reads the token only from the upgrade URL's query (the token in
    /// `customParameters` is ignored), and the TwiML puts it there:
    /// `<Stream url="ws://.../voice/stream?token=..." />`, no `<Parameter>`. Twilio drops the
    /// query, so a real call arrives with no token.
    TokenFromUrlOnly,
    /// The expected AccountSid is one mutable value shared by every webhook and connection,
    /// set from each webhook's own `AccountSid` parameter instead of the configuration.
    SharedExpectedAccount,
    /// Events before `start` do not close the connection: `media` is handed to the stream its
    /// `streamSid` names (if one is live; it echoes it), `mark`, `dtmf` and `stop` are
    /// dropped, and the connection waits for `start` as if nothing had happened.
    MediaBeforeStart,
    /// The TwiML comes from an indented template: newlines and spaces as text nodes, inside
    /// `<Stream>` too.
    WhitespaceInStream,
    /// The webhook's `X-Twilio-Signature` is not checked (the AccountSid still is).
    UnsignedWebhook,
    /// Tokens are verified but never redeemed: a token is not single use.
    ReusableToken,
    /// Single use per token holds, but a call that has streamed may mint a new token and
    /// stream again (the store allows [`MAX_STREAMS_PER_CALL`] streams per call).
    SecondStreamPerCall,
    /// A streamed call is remembered only until its token expires (call memory zero, the
    /// project's old behaviour): its webhook replayed after the TTL mints again.
    ForgetsAfterTtl,
    /// The upgrade's `X-Twilio-Signature` is not checked (`SignatureMode::Off`).
    UnsignedUpgrade,
    /// No start deadline: a connection that never sends `start` stays open.
    NoStartDeadline,
    /// No limit on the size of a message (WebSocket or JSON): whatever a peer sends before
    /// authenticating is read and parsed in full.
    NoMessageLimit,
    /// Before `start`, a binary frame or a text message that is not JSON is dropped instead
    /// of closing the connection.
    LaxFrames,
    /// No idempotence at the webhook: every webhook mints a fresh token, which supersedes the
    /// call's live one, so a retried webhook (Twilio retries on a timeout) gets a different
    /// token. Single use and call memory still hold. The design of servers that sign a new
    /// token per request and keep "the call's current token".
    MintsEveryWebhook,
    /// Upgrades on any path, the signature checked against the URL as requested: what a
    /// Node `ws` server attached with `new WebSocket.Server({ server })` and no `path` does
    /// (with `validateRequest` over the request's own URL).
    AnyPath,
    /// The method of an upgrade is not checked: a hand-rolled upgrade that looks only at the
    /// `Upgrade` and `Connection` headers answers 101 to a `POST`.
    AnyMethod,
    /// `Sec-WebSocket-Key` is not checked: the accept key is derived from whatever came,
    /// even none (a hand-rolled handshake).
    NoHandshakeKey,
    /// A second `start` on an authenticated stream is ignored instead of closing it, as
    /// servers that only dispatch on `event` (and log a `start`) do.
    DuplicateStartIgnored,
    /// At most [`PENDING_CAP`] connections may wait for `start`; when they are all taken a new
    /// upgrade is refused (503) instead of the oldest pending one being evicted, so a flood of
    /// connections that never start locks real calls out until the start deadline.
    PendingCapRefuses,
    /// The application's answer to each frame (the echo) is sent to every open WebSocket
    /// connection, not only the stream's own, as `wss.clients.forEach(c => c.send(...))` does
    /// in many Node servers: a connection that never authenticated hears the call.
    BroadcastsToEveryConnection,
}

impl Weakness {
    /// Every variant, the control first.
    pub const ALL: &'static [Self] = &[
        Self::None,
        Self::NoTokenCheck,
        Self::TokenFromUrlOnly,
        Self::SharedExpectedAccount,
        Self::MediaBeforeStart,
        Self::WhitespaceInStream,
        Self::UnsignedWebhook,
        Self::ReusableToken,
        Self::SecondStreamPerCall,
        Self::ForgetsAfterTtl,
        Self::UnsignedUpgrade,
        Self::NoStartDeadline,
        Self::NoMessageLimit,
        Self::LaxFrames,
        Self::MintsEveryWebhook,
        Self::AnyPath,
        Self::AnyMethod,
        Self::NoHandshakeKey,
        Self::DuplicateStartIgnored,
        Self::PendingCapRefuses,
        Self::BroadcastsToEveryConnection,
    ];
}

/// How long a connection without a start deadline waits for `start`: longer than any case.
const NO_DEADLINE: Duration = Duration::from_secs(3600);

/// How often an unauthenticated connection looks at its start deadline.
const DEADLINE_POLL: Duration = Duration::from_millis(50);

/// The message limit of [`Weakness::NoMessageLimit`]: no limit, in effect.
const NO_LIMIT: usize = 64 << 20;

/// The pending-connection cap of [`Weakness::PendingCapRefuses`]: more than the few
/// connections the kit's cases hold at once, fewer than its flood.
pub const PENDING_CAP: usize = 8;

/// How long the closing handshake may take.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The writer side of a connection: what the table of live streams holds.
type Writer = mpsc::UnboundedSender<Message>;

struct Shared {
    weakness: Weakness,
    auth: AuthToken,
    account: AccountSid,
    keys: KeySet,
    store: Box<dyn ReplayStore>,
    store_key: StoreKey,
    rng: SystemRandom,
    token_ttl: Duration,
    start_timeout: Duration,
    /// `{http public url}{webhook path}`.
    webhook_url: String,
    /// `{ws public url}{stream path}`.
    stream_url: String,
    /// The expected account of [`Weakness::SharedExpectedAccount`].
    shared_account: Mutex<AccountSid>,
    /// Authenticated streams by `streamSid`.
    live: Mutex<HashMap<StreamSid, Writer>>,
    /// Connections waiting for `start`, for [`Weakness::PendingCapRefuses`].
    pending: Mutex<usize>,
    /// Every open WebSocket connection, for [`Weakness::BroadcastsToEveryConnection`].
    connections: Mutex<Vec<Writer>>,
}

impl Shared {
    fn now(&self) -> UnixTime {
        SystemClock.now()
    }

    /// The largest message read and parsed.
    fn max_message_bytes(&self) -> usize {
        match self.weakness {
            Weakness::NoMessageLimit => NO_LIMIT,
            _ => DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// `host:port` of the public URLs.
    fn public_host(&self) -> &str {
        let rest = self
            .webhook_url
            .strip_prefix("http://")
            .unwrap_or(&self.webhook_url);
        rest.strip_suffix(WEBHOOK_PATH).unwrap_or(rest)
    }

    /// The account a `start` is compared with.
    fn expected_account(&self) -> AccountSid {
        match self.weakness {
            Weakness::SharedExpectedAccount => *self.shared_account.lock().unwrap(),
            _ => self.account,
        }
    }
}

/// A running weak target on 127.0.0.1.
pub struct WeakTarget {
    pub weakness: Weakness,
    pub addr: SocketAddr,
    token_ttl: Duration,
    start_timeout: Duration,
    account: AccountSid,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for WeakTarget {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl WeakTarget {
    /// Starts a target with `weakness`, tokens valid for `token_ttl`, `start` due within
    /// `start_timeout`, on a port of its own.
    pub async fn start(weakness: Weakness, token_ttl: Duration, start_timeout: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let account = AccountSid::parse(ACCOUNT).unwrap();
        let auth = AuthToken::new(AUTH_TOKEN).unwrap();
        let policy = StorePolicy {
            token_ttl,
            call_memory: match weakness {
                Weakness::ForgetsAfterTtl => Duration::ZERO,
                _ => DEFAULT_CALL_MEMORY,
            },
            streams_per_call: match weakness {
                Weakness::SecondStreamPerCall => MAX_STREAMS_PER_CALL,
                _ => DEFAULT_STREAMS_PER_CALL,
            },
        };
        let shared = Arc::new(Shared {
            weakness,
            store_key: StoreKey::derive(&auth),
            auth,
            account,
            keys: KeySet::single(TokenKey::from_bytes(&[0x5a; 32]).unwrap()),
            store: match weakness {
                Weakness::MintsEveryWebhook => Box::new(SupersedingStore::new(policy)),
                _ => Box::new(MemoryStore::new(100_000, policy)),
            },
            rng: SystemRandom::new(),
            token_ttl,
            start_timeout,
            webhook_url: format!("http://{addr}{WEBHOOK_PATH}"),
            stream_url: format!("ws://{addr}{STREAM_PATH}"),
            shared_account: Mutex::new(account),
            live: Mutex::new(HashMap::new()),
            pending: Mutex::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, shared));
        Self {
            weakness,
            addr,
            token_ttl,
            start_timeout,
            account,
            accept,
        }
    }

    /// The kit's view of this target: both the token TTL and the start deadline are told.
    pub fn target(&self) -> Target {
        let public = format!("http://{}", self.addr);
        Target {
            connect_to: self.addr,
            target: public.clone(),
            public_url: public,
            webhook_path: WEBHOOK_PATH.to_owned(),
            stream_path: STREAM_PATH.to_owned(),
            token_ttl: Some(self.token_ttl),
            start_timeout: Some(self.start_timeout),
            account_sid: self.account,
        }
    }

    /// The auth token the kit signs with.
    pub fn auth_token(&self) -> AuthToken {
        AuthToken::new(AUTH_TOKEN).unwrap()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(route(req, shared).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}

fn empty(status: u16) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

fn head_of<B>(req: &Request<B>) -> RequestHead {
    RequestHead {
        method: req.method().as_str().to_owned(),
        target: req.uri().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
    }
}

async fn route(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        WEBHOOK_PATH => webhook(req, &shared).await,
        STREAM_PATH => upgrade(req, shared),
        _ if shared.weakness == Weakness::AnyPath
            && req.headers().contains_key(header::UPGRADE) =>
        {
            upgrade(req, shared)
        }
        _ => empty(404),
    }
}

// ---------------------------------------------------------------------------------------------
// The store of [`Weakness::MintsEveryWebhook`]
// ---------------------------------------------------------------------------------------------

/// The crate's record rules ([`CallRecord::mint`], [`CallRecord::redeem`]), except that a
/// mint never reuses the call's live token: the new one supersedes it.
struct SupersedingStore {
    records: Mutex<HashMap<CallId, CallRecord>>,
    policy: StorePolicy,
}

impl SupersedingStore {
    fn new(policy: StorePolicy) -> Self {
        Self {
            records: Mutex::new(HashMap::new()),
            policy,
        }
    }
}

impl ReplayStore for SupersedingStore {
    fn mint(
        &self,
        call: CallId,
        candidate: LiveToken,
        now: UnixTime,
    ) -> StoreFuture<'_, MintDecision> {
        let mut records = self.records.lock().unwrap();
        // The flaw: the live token is dropped, so the rule issues the candidate.
        let old = records.get(&call).map(|r| CallRecord { live: None, ..*r });
        let (new, decision) = CallRecord::mint(old, candidate, now, &self.policy);
        if let Some(r) = new {
            records.insert(call, r);
        }
        Box::pin(std::future::ready(Ok(decision)))
    }

    fn redeem(
        &self,
        call: CallId,
        presented: Presented,
        now: UnixTime,
    ) -> StoreFuture<'_, Result<(), RedeemRefusal>> {
        let mut records = self.records.lock().unwrap();
        let old = records.get(&call).copied();
        let (new, result) = CallRecord::redeem(old, &presented, now, &self.policy);
        match new {
            Some(r) => records.insert(call, r),
            None => records.remove(&call),
        };
        Box::pin(std::future::ready(Ok(result)))
    }

    fn fill(&self) -> StoreFill {
        StoreFill::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The webhook
// ---------------------------------------------------------------------------------------------

fn single<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut values = params.iter().filter(|(n, _)| n == name);
    match (values.next(), values.next()) {
        (Some((_, v)), None) => Some(v),
        _ => None,
    }
}

/// [`webhook::decide`] without step 4 (the signature): what [`Weakness::UnsignedWebhook`]
/// runs.
fn decide_unsigned(body: &[u8], account: &AccountSid) -> Result<Verified, WebhookReject> {
    let params = form::parse(body).ok_or(WebhookReject::MalformedForm)?;
    let account_sid = single(&params, "AccountSid")
        .and_then(|a| AccountSid::parse(a).ok())
        .ok_or(WebhookReject::Account)?;
    check_account_sid(account, &account_sid).map_err(|_| WebhookReject::Account)?;
    let call_sid = single(&params, "CallSid")
        .and_then(|c| CallSid::parse(c).ok())
        .ok_or(WebhookReject::CallSid)?;
    Ok(Verified {
        account_sid,
        call_sid,
        params,
    })
}

/// The TwiML of the weakness, or the crate's own.
fn twiml(shared: &Shared, token: &StreamToken) -> String {
    let url = &shared.stream_url;
    match shared.weakness {
        Weakness::WhitespaceInStream => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <Response>\n  <Connect>\n    <Stream url=\"{url}\">\n      \
             <Parameter name=\"{TOKEN_PARAM}\" value=\"{}\" />\n    </Stream>\n  \
             </Connect>\n</Response>\n",
            token.as_str()
        ),
        Weakness::TokenFromUrlOnly => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect>\
             <Stream url=\"{url}?{TOKEN_PARAM}={}\" /></Connect></Response>",
            token.as_str()
        ),
        _ => webhook::answer(url, token, &webhook::CallTwiml::default()).unwrap(),
    }
}

async fn webhook(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let head = head_of(&req);
    let Ok(body) = Limited::new(req.into_body(), MAX_WEBHOOK_BODY_BYTES)
        .collect()
        .await
        .map(|c| c.to_bytes())
    else {
        return empty(413);
    };
    let verified = match shared.weakness {
        Weakness::UnsignedWebhook => decide_unsigned(&body, &shared.account),
        Weakness::SharedExpectedAccount => {
            // "The account of this request" kept where every request can see it.
            let from_form = form::parse(&body)
                .and_then(|p| single(&p, "AccountSid").and_then(|a| AccountSid::parse(a).ok()));
            if let Some(a) = from_form {
                *shared.shared_account.lock().unwrap() = a;
            }
            let expected = shared.expected_account();
            webhook::decide(
                &head,
                &body,
                &WebhookPolicy {
                    signed_url: &shared.webhook_url,
                    auth: &shared.auth,
                    account: &expected,
                },
            )
        }
        _ => webhook::decide(
            &head,
            &body,
            &WebhookPolicy {
                signed_url: &shared.webhook_url,
                auth: &shared.auth,
                account: &shared.account,
            },
        ),
    };
    let verified = match verified {
        Ok(v) => v,
        Err(reason) => return empty(reason.status()),
    };
    let token = match store::mint(
        &*shared.store,
        &shared.store_key,
        &shared.keys,
        &verified.account_sid,
        &verified.call_sid,
        shared.now(),
        shared.token_ttl,
        &shared.rng,
    )
    .await
    {
        Ok(t) => t,
        Err(e) => return empty(WebhookReject::from(e).status()),
    };
    let mut r = Response::new(Full::new(Bytes::from(twiml(shared, &token))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_XML),
    );
    r
}

// ---------------------------------------------------------------------------------------------
// The upgrade
// ---------------------------------------------------------------------------------------------

/// A connection counted against [`PENDING_CAP`] until it authenticates or ends.
struct PendingSlot(Arc<Shared>);

impl PendingSlot {
    /// A slot, if one is free.
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        let mut pending = shared.pending.lock().unwrap();
        if *pending >= PENDING_CAP {
            return None;
        }
        *pending += 1;
        Some(Self(Arc::clone(shared)))
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        *self.0.pending.lock().unwrap() -= 1;
    }
}

fn header_value<'a>(head: &'a RequestHead, name: &str) -> Option<&'a [u8]> {
    head.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

fn upgrade(mut req: Request<Incoming>, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    let mut head = head_of(&req);
    let mode = match shared.weakness {
        Weakness::UnsignedUpgrade => SignatureMode::Off,
        _ => SignatureMode::Required,
    };
    // What the weakness checks the request against, or the configuration.
    let (stream_path, signed_url) = match shared.weakness {
        Weakness::AnyPath => {
            let path = head.path().to_owned();
            let url = format!("ws://{}{path}", shared.public_host());
            (path, url)
        }
        _ => (STREAM_PATH.to_owned(), shared.stream_url.clone()),
    };
    if shared.weakness == Weakness::AnyMethod {
        "GET".clone_into(&mut head.method);
    }
    // The accept key of whatever `Sec-WebSocket-Key` came, and a valid one for the checks.
    let lax_accept = (shared.weakness == Weakness::NoHandshakeKey).then(|| {
        let key = header_value(&head, "sec-websocket-key").unwrap_or_default();
        let accept = tungstenite::handshake::derive_accept_key(key);
        head.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("sec-websocket-key"));
        head.headers.push((
            "sec-websocket-key".to_owned(),
            b"dGhlIHNhbXBsZSBub25jZQ==".to_vec(),
        ));
        accept
    });
    let policy = UpgradePolicy {
        stream_path: &stream_path,
        signed_url: &signed_url,
        auth: &shared.auth,
        mode,
    };
    let mut accepted = match upgrade::decide(&head, &policy) {
        Ok(a) => a,
        Err(reason) => return empty(reason.status()),
    };
    if let Some(accept) = lax_accept {
        accepted.accept_key = accept;
    }
    let slot = match shared.weakness {
        Weakness::PendingCapRefuses => match PendingSlot::take(&shared) {
            Some(slot) => Some(slot),
            None => return empty(UpgradeReject::PendingFull.status()),
        },
        _ => None,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            stream(TokioIo::new(upgraded), shared, accepted.url_token, slot).await;
        }
    });
    let mut r = empty(101);
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accepted.accept_key).unwrap(),
    );
    r
}

// ---------------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------------

fn event_of(read: &Option<Result<Message, tungstenite::Error>>) -> Option<Event<'_>> {
    Some(match read {
        None | Some(Ok(Message::Close(_))) => Event::PeerClosed,
        Some(Ok(Message::Text(t))) => Event::Text(t.as_str()),
        Some(Ok(Message::Binary(_))) => Event::Binary,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Event::Control,
        Some(Ok(Message::Frame(_))) => return None,
        Some(Err(tungstenite::Error::Capacity(_))) => Event::TooLarge,
        Some(Err(tungstenite::Error::Utf8(_) | tungstenite::Error::Protocol(_))) => {
            Event::Malformed
        }
        Some(Err(_)) => Event::PeerClosed,
    })
}

/// What a weakness does with a text message that arrives before `start` is accepted.
enum BeforeStart {
    /// Give the session this text (the message as received, or rewritten).
    Session(String),
    /// Authenticate now, without the session's checks.
    Authenticate(StreamInfo),
    /// Swallow it; the connection waits on.
    Swallow,
}

fn info_of(start: &StartFrame) -> StreamInfo {
    let body = &start.start;
    StreamInfo {
        account_sid: body.account_sid,
        call_sid: body.call_sid,
        stream_sid: body.stream_sid,
        tracks: body.tracks.clone(),
        custom_parameters: body.custom_parameters.without(TOKEN_PARAM),
        media_format: body.media_format.clone(),
    }
}

/// `start` with `customParameters.token` removed: the session then sees only the URL's token.
fn without_custom_token(text: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    if let Some(params) = v
        .pointer_mut("/start/customParameters")
        .and_then(serde_json::Value::as_object_mut)
    {
        params.remove(TOKEN_PARAM);
    }
    v.to_string()
}

fn echo(to: &Writer, stream_sid: StreamSid, payload: String) {
    let out = Outbound::Media {
        stream_sid,
        media: OutboundMedia {
            payload: payload.into(),
        },
    };
    let _ = to.send(Message::text(out.to_json()));
}

fn before_start(shared: &Shared, text: &str) -> BeforeStart {
    let parsed = parse_inbound(text, shared.max_message_bytes());
    match (shared.weakness, parsed) {
        (Weakness::NoTokenCheck, Ok(Inbound::Start(s))) => BeforeStart::Authenticate(info_of(&s)),
        (Weakness::TokenFromUrlOnly, Ok(Inbound::Start(_))) => {
            BeforeStart::Session(without_custom_token(text))
        }
        (Weakness::MediaBeforeStart, Ok(Inbound::Media(m))) => {
            let to = shared.live.lock().unwrap().get(&m.stream_sid).cloned();
            if let Some(to) = to {
                echo(&to, m.stream_sid, m.media.payload.into_owned());
            }
            BeforeStart::Swallow
        }
        (
            Weakness::MediaBeforeStart,
            Ok(Inbound::Mark(_) | Inbound::Dtmf(_) | Inbound::Stop(_)),
        ) => BeforeStart::Swallow,
        (Weakness::LaxFrames, Err(_)) => BeforeStart::Swallow,
        _ => BeforeStart::Session(text.to_owned()),
    }
}

fn is_start(shared: &Shared, text: &str) -> Option<StreamSid> {
    match parse_inbound(text, shared.max_message_bytes()) {
        Ok(Inbound::Start(s)) => Some(s.start.stream_sid),
        _ => None,
    }
}

async fn stream(
    io: TokioIo<hyper::upgrade::Upgraded>,
    shared: Arc<Shared>,
    url_token: UrlToken,
    mut pending: Option<PendingSlot>,
) {
    let limit = shared.max_message_bytes();
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let last = m.is_close();
            if sink.send(m).await.is_err() || last {
                break;
            }
        }
    });

    let start_timeout = match shared.weakness {
        Weakness::NoStartDeadline => NO_DEADLINE,
        _ => shared.start_timeout,
    };
    let mut session = Session::new(shared.now(), start_timeout, url_token);
    let mut poll = tokio::time::interval(DEADLINE_POLL);
    let mut registered: Option<StreamSid> = None;
    shared.connections.lock().unwrap().push(tx.clone());

    let close = loop {
        let read = tokio::select! {
            r = source.next() => Some(r),
            _ = poll.tick(), if session.deadline().is_some() => None,
        };
        let event = match &read {
            None => Event::Tick,
            Some(r) => match event_of(r) {
                Some(e) => e,
                None => continue,
            },
        };
        let expected = shared.expected_account();
        let ctx = AuthContext {
            keys: &shared.keys,
            expected_account: &expected,
            max_message_bytes: limit,
        };
        let rewritten: String;
        let (next, mut output) = match (&session, event) {
            (Session::Streaming(_), Event::Text(text))
                if shared.weakness == Weakness::DuplicateStartIgnored
                    && is_start(&shared, text).is_some() =>
            {
                continue;
            }
            (Session::AwaitingStart { .. }, Event::Text(text)) => {
                match before_start(&shared, text) {
                    BeforeStart::Session(t) => {
                        rewritten = t;
                        session.handle(Event::Text(&rewritten), shared.now(), &ctx)
                    }
                    BeforeStart::Authenticate(info) => (
                        Session::Streaming(Box::new(info.clone())),
                        Output::Authenticated(Box::new(info)),
                    ),
                    BeforeStart::Swallow => continue,
                }
            }
            (Session::AwaitingStart { .. }, Event::Binary)
                if shared.weakness == Weakness::LaxFrames =>
            {
                continue;
            }
            _ => session.handle(event, shared.now(), &ctx),
        };
        session = next;
        if let Output::Redeem(r) = output {
            let result = match shared.weakness {
                Weakness::ReusableToken => Ok(()),
                _ => store::redeem(
                    &*shared.store,
                    &shared.store_key,
                    &r.account_sid,
                    &r.call_sid,
                    &r.claims,
                    shared.now(),
                )
                .await
                .map_err(RedeemFailure::Store),
            };
            let (next, out) = session.handle(Event::Redeemed(result), shared.now(), &ctx);
            session = next;
            output = out;
        }
        match output {
            Output::Authenticated(info) => {
                shared
                    .live
                    .lock()
                    .unwrap()
                    .insert(info.stream_sid, tx.clone());
                registered = Some(info.stream_sid);
                pending = None;
            }
            Output::Media(frame) if shared.weakness == Weakness::BroadcastsToEveryConnection => {
                let payload = frame.media.payload.into_owned();
                let everyone = shared.connections.lock().unwrap().clone();
                for w in &everyone {
                    echo(w, frame.stream_sid, payload.clone());
                }
            }
            Output::Media(frame) => echo(&tx, frame.stream_sid, frame.media.payload.into_owned()),
            Output::Stop(_) => break Some(CloseCode::Normal),
            Output::Close(reason) => break Some(reason.close_code()),
            Output::Nothing | Output::Redeem(_) | Output::Dtmf(_) | Output::Mark(_) => {}
        }
        if session.is_closed() {
            break None;
        }
    };

    if let Some(sid) = registered {
        let mut live = shared.live.lock().unwrap();
        if live.get(&sid).is_some_and(|w| w.same_channel(&tx)) {
            live.remove(&sid);
        }
    }
    shared
        .connections
        .lock()
        .unwrap()
        .retain(|w| !w.same_channel(&tx));
    drop(pending);
    if let Some(code) = close {
        let _ = tx.send(Message::Close(Some(CloseFrame {
            code: code.as_u16().into(),
            reason: code.wire_reason().into(),
        })));
    }
    drop(tx);
    let _ = tokio::time::timeout(CLOSE_WAIT, writer).await;
    if close.is_some() {
        // The peer's answer to the close, then drop the connection.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(m)) = source.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}
