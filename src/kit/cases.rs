//! The conformance catalogue: each case has a stable id, a one-line description, the outcome
//! a correct server gives, and a function that plays it against the target and says what
//! happened.
//!
//! The kit plays Twilio faithfully first (`call.legitimate`): a signed webhook with realistic
//! form fields and fresh SIDs, the TwiML read strictly, the `<Stream>` url with its query
//! dropped as Twilio drops it, an upgrade signed over that `ws(s)://` URL, `connected`,
//! `start` with the `<Parameter>`s as `customParameters`, 20 ms frames of 160-byte mu-law with
//! increasing `sequenceNumber`/`chunk`/`timestamp`, `stop`. Then it attacks.
//!
//! Judging is about security outcomes, not exact codes: a stream refusal passes when the
//! connection is closed (or dropped) before anything is sent to the peer, whatever the close
//! code (the observed code is reported; streamguard sends 1008, 1003 for a binary frame, 1009
//! for an oversized message); an HTTP refusal passes on any 4xx without a `101`. An accepted
//! stream is one that stays open (or echoes) after `start`. Cases that need something the
//! target does not show (an echo, a known token TTL) are SKIPped, never silently passed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use ring::rand::SystemRandom;
use tungstenite::Message;

use super::report::{CaseResult, Verdict};
use super::simulator::{
    Connection, Ended, Signing, Twilio, TwimlStream, Upgrade, connected_message, media_message,
    media_message_with, parse_twiml, random_sid, raw_exchange, start_message, stop_message,
    strip_query,
};
use crate::secret::AuthToken;
use crate::sid::{AccountSid, CallSid, StreamSid};
use crate::signature;

/// What the kit is pointed at, and what it must know about it.
pub struct Target {
    /// Where the bytes go (`--target`): the only address the kit connects to.
    pub connect_to: SocketAddr,
    /// `--target` as given, for reports.
    pub target: String,
    /// `--public-url`: the `http(s)` origin (plus prefix) the target signs against.
    pub public_url: String,
    /// `--webhook-path`.
    pub webhook_path: String,
    /// `--stream-path`.
    pub stream_path: String,
    /// `--token-ttl`, when known: enables the cases that wait for a token to expire.
    pub token_ttl: Option<Duration>,
    /// `--start-timeout-ms`, when known (5 s is assumed otherwise).
    pub start_timeout: Option<Duration>,
    /// `TWILIO_ACCOUNT_SID` (the value the target runs with).
    pub account_sid: AccountSid,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("target", &self.target)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// What one case found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// What the target did, in a few words.
    pub observed: String,
}

fn pass(observed: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Pass,
        observed: observed.into(),
    }
}

fn fail(observed: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Fail,
        observed: observed.into(),
    }
}

fn skip(observed: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Skip,
        observed: observed.into(),
    }
}

/// When a case runs: with the others one after another, alongside them (it mostly waits for
/// a TTL), or alone at the end (it loads the target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// One after another.
    Sequential,
    /// Alongside the sequential cases.
    Waiting,
    /// Alone, after everything else.
    Alone,
}

type CaseFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// A case of the catalogue.
pub struct Case {
    /// Stable id.
    pub id: &'static str,
    /// One line on what is tried.
    pub description: &'static str,
    /// What a correct server does.
    pub expected: &'static str,
    /// When it runs.
    pub phase: Phase,
    run: for<'a> fn(&'a Ctx) -> CaseFuture<'a>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("id", &self.id).finish()
    }
}

impl Case {
    /// Plays the case against `ctx`'s target.
    pub fn run<'a>(&self, ctx: &'a Ctx) -> CaseFuture<'a> {
        (self.run)(ctx)
    }

    /// The result for `outcome`.
    pub fn result(&self, outcome: Outcome) -> CaseResult {
        CaseResult {
            id: self.id,
            description: self.description,
            expected: self.expected,
            observed: outcome.observed,
            verdict: outcome.verdict,
        }
    }
}

/// Number of 20 ms frames in the legitimate call.
pub const LEGIT_FRAMES: usize = 10;

/// Pre-authentication connections held open by `stream.preauth_flood`.
pub const FLOOD_CONNECTIONS: usize = 40;

/// How long an accepted stream is given to show it is open (or to echo).
const ACCEPT_GRACE: Duration = Duration::from_millis(500);

/// The start timeout assumed when `--start-timeout-ms` is not given (the public record's).
pub const ASSUMED_START_TIMEOUT: Duration = Duration::from_secs(5);

/// The state the cases share.
pub struct Ctx {
    /// The target.
    pub target: Target,
    twilio: Twilio,
    rng: SystemRandom,
    /// Whether the target echoed the legitimate call's audio (learnt by `call.legitimate`).
    echoes: Mutex<Option<bool>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// One legitimate call's identity and its TwiML.
struct Call {
    call: CallSid,
    stream: StreamSid,
    twiml: TwimlStream,
}

impl Call {
    fn token(&self) -> Option<String> {
        twiml_token(&self.twiml)
    }
}

/// The token a TwiML answer hands out: its `<Parameter name="token">`, or else the `token` in
/// the stream URL's query (where a target that reads the token from the URL puts it; Twilio
/// drops it, which `twiml.shape` and `call.legitimate` judge, but it is still a token the
/// answer gave away).
fn twiml_token(twiml: &TwimlStream) -> Option<String> {
    twiml
        .parameter(crate::extract::TOKEN_PARAM)
        .map(str::to_owned)
        .or_else(|| {
            crate::extract::token_from_request_target(&twiml.url)
                .ok()
                .flatten()
        })
}

impl Ctx {
    /// The shared state for running cases against `target`, whose auth token (the value of
    /// `TWILIO_AUTH_TOKEN` it runs with) is `auth_token`.
    pub fn new(target: Target, auth_token: AuthToken) -> Self {
        let twilio = Twilio {
            connect_to: target.connect_to,
            auth_token,
            account_sid: target.account_sid,
        };
        Self {
            target,
            twilio,
            rng: SystemRandom::new(),
            echoes: Mutex::new(None),
        }
    }

    fn start_timeout(&self) -> Duration {
        self.target.start_timeout.unwrap_or(ASSUMED_START_TIMEOUT)
    }

    /// How long a refusal may take to arrive: the start deadline and two seconds.
    fn refusal_wait(&self) -> Duration {
        self.start_timeout().saturating_add(Duration::from_secs(2))
    }

    fn echoes(&self) -> Option<bool> {
        *self
            .echoes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn webhook_url(&self) -> String {
        format!("{}{}", self.target.public_url, self.target.webhook_path)
    }

    /// `{ws(s) public url}{stream-path}`: where the stream is, before any TwiML says so.
    fn default_stream_url(&self) -> String {
        let public = &self.target.public_url;
        let ws = match public.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!("ws://{}", public.strip_prefix("http://").unwrap_or(public)),
        };
        format!("{ws}{}", self.target.stream_path)
    }

    fn sid(&self, prefix: &str) -> String {
        random_sid(prefix, &self.rng).unwrap_or_else(|_| format!("{prefix}{}", "0".repeat(32)))
    }

    fn fresh_call(&self) -> CallSid {
        CallSid::parse(&self.sid("CA")).unwrap_or_else(|_| unreachable_call())
    }

    fn fresh_stream(&self) -> StreamSid {
        StreamSid::parse(&self.sid("MZ")).unwrap_or_else(|_| unreachable_stream())
    }

    fn other_account(&self) -> AccountSid {
        AccountSid::parse(&self.sid("AC")).unwrap_or(self.target.account_sid)
    }

    /// Posts the webhook of `call` with `params`, signed as `signing` says.
    async fn post(
        &self,
        params: &[(String, String)],
        signing: Signing,
    ) -> Result<super::simulator::WebhookReply, String> {
        self.twilio
            .post_webhook(&self.webhook_url(), params, signing)
            .await
            .map_err(|e| format!("webhook failed: {e}"))
    }

    /// A legitimate webhook for a fresh call: its TwiML.
    async fn legit_call(&self) -> Result<Call, String> {
        let call = self.fresh_call();
        self.webhook_for(call).await
    }

    async fn webhook_for(&self, call: CallSid) -> Result<Call, String> {
        let reply = self
            .post(&self.twilio.voice_params(&call), Signing::Valid)
            .await?;
        if reply.status != 200 {
            return Err(format!("signed webhook got HTTP {}", reply.status));
        }
        let twiml = parse_twiml(&reply.body).map_err(|e| format!("TwiML unreadable: {e}"))?;
        Ok(Call {
            call,
            stream: self.fresh_stream(),
            twiml,
        })
    }

    /// Opens the stream the way Twilio does: the TwiML's url without its query, signed.
    async fn open(&self, url: &str, signing: Signing) -> Result<Connection, String> {
        match self.twilio.open(url, signing).await {
            Ok(Upgrade::Open(c)) => Ok(*c),
            Ok(Upgrade::Refused(status)) => Err(format!("upgrade refused: HTTP {status}")),
            Err(e) => Err(format!("upgrade failed: {e}")),
        }
    }

    /// Opens the stream of `c` and sends `connected` and `start` with `params` (and
    /// `account`), then `frames` media frames.
    async fn start(
        &self,
        url: &str,
        c: &Call,
        account: AccountSid,
        params: &[(String, String)],
        frames: usize,
    ) -> Result<Connection, String> {
        let mut conn = self.open(url, Signing::Valid).await?;
        conn.send_text(connected_message()).await;
        conn.send_text(start_message(&account, &c.call, &c.stream, params))
            .await;
        for i in 0..frames {
            conn.send_text(media_message(&c.stream, i)).await;
        }
        Ok(conn)
    }
}

#[allow(clippy::panic)] // a parse of our own random SID cannot fail
fn unreachable_call() -> CallSid {
    panic!("a random CallSid did not parse")
}

#[allow(clippy::panic)] // a parse of our own random SID cannot fail
fn unreachable_stream() -> StreamSid {
    panic!("a random StreamSid did not parse")
}

fn describe_end(e: Option<&Ended>) -> String {
    match e {
        Some(Ended::Close(code)) => format!("close {code}"),
        Some(Ended::Dropped) => "dropped".to_owned(),
        None => "still open".to_owned(),
    }
}

/// Judges a stream that should be refused: closed (or dropped) within `wait`, nothing sent.
async fn judge_refused(mut conn: Connection, wait: Duration) -> Outcome {
    let end = conn.wait_end(wait).await;
    let received = conn.received().len();
    match end {
        Some(e) if !conn.received_anything() => pass(describe_end(Some(&e))),
        Some(e) => fail(format!(
            "{} after sending {received} messages",
            describe_end(Some(&e))
        )),
        None => {
            conn.close().await;
            fail(format!("still open after {} s", wait.as_secs()))
        }
    }
}

/// Whether a stream was accepted: still open after the grace period, or echoing.
async fn accepted(conn: &mut Connection) -> bool {
    conn.settle(ACCEPT_GRACE).await || !conn.echoed_payloads().is_empty()
}

fn token_params(token: &str) -> Vec<(String, String)> {
    vec![(crate::extract::TOKEN_PARAM.to_owned(), token.to_owned())]
}

fn expect_refusal_status(status: u16, body: &str) -> Outcome {
    let leaked = body.contains("<Stream") || body.contains("token");
    match status {
        400..=499 if !leaked => pass(format!("HTTP {status}")),
        400..=499 => fail(format!("HTTP {status} with a stream in the body")),
        s => fail(format!(
            "HTTP {s}{}",
            if leaked { ", TwiML with a token" } else { "" }
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The legitimate call and its TwiML
// ---------------------------------------------------------------------------------------------

fn legitimate(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let url = strip_query(&c.twiml.url).to_owned();
        let mut conn = match ctx.open(&url, Signing::Valid).await {
            Ok(conn) => conn,
            Err(e) => return fail(e),
        };
        conn.send_text(connected_message()).await;
        conn.send_text(start_message(
            &ctx.target.account_sid,
            &c.call,
            &c.stream,
            &c.twiml.parameters,
        ))
        .await;
        for i in 0..LEGIT_FRAMES {
            tokio::time::sleep(super::simulator::FRAME_INTERVAL).await;
            if !conn.send_text(media_message(&c.stream, i)).await {
                break;
            }
        }
        conn.wait_messages(LEGIT_FRAMES, Duration::from_secs(2))
            .await;
        let open = conn.settle(Duration::from_millis(100)).await;
        let echoed = conn.echoed_payloads();
        let sent: Vec<String> = (0..LEGIT_FRAMES)
            .map(|i| {
                base64::engine::general_purpose::STANDARD.encode(super::simulator::tone_frame(i))
            })
            .collect();
        let echoes = !echoed.is_empty();
        if let Ok(mut e) = ctx.echoes.lock() {
            *e = Some(echoes);
        }
        if !open {
            return fail(format!(
                "{} after start ({} messages)",
                describe_end(conn.ended()),
                conn.received().len()
            ));
        }
        if echoes && echoed != sent {
            return fail(format!(
                "echoed {}/{LEGIT_FRAMES} frames, not in order",
                echoed.len()
            ));
        }
        let seq = stop_message(
            &ctx.target.account_sid,
            &c.call,
            &c.stream,
            LEGIT_FRAMES.saturating_add(2),
        );
        conn.send_text(seq).await;
        let end = conn.wait_end(Duration::from_secs(2)).await;
        let ending = match end {
            Some(e) => describe_end(Some(&e)),
            None => {
                conn.close().await;
                "open after stop".to_owned()
            }
        };
        if echoes {
            pass(format!(
                "HTTP 200, open, {}/{LEGIT_FRAMES} echoed, {ending}",
                echoed.len()
            ))
        } else {
            pass(format!("HTTP 200, open (no echo), {ending}"))
        }
    })
}

/// Problems of a TwiML answer, judged independently of the renderer: a text node (other than
/// the words of a `<Say>`), a query in the stream URL, the wrong shape, no token parameter.
pub fn twiml_problems(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let doc = match roxmltree::Document::parse(body) {
        Ok(d) => d,
        Err(_) => return vec!["not well-formed XML".to_owned()],
    };
    if doc.descendants().any(|n| {
        n.is_text()
            && n.text().is_some_and(|t| !t.is_empty())
            && !n.parent().is_some_and(|p| p.has_tag_name("Say"))
    }) {
        out.push("text nodes (whitespace) inside the TwiML".to_owned());
    }
    let root = doc.root_element();
    let stream = root
        .children()
        .filter(|n| n.is_element())
        .find(|n| matches!(n.tag_name().name(), "Connect" | "Start"))
        .and_then(|v| v.children().find(|n| n.has_tag_name("Stream")));
    match (root.tag_name().name(), stream) {
        ("Response", Some(s)) => {
            let url = s.attribute("url").unwrap_or_default();
            if url.contains('?') {
                out.push("a query in the stream URL (Twilio drops it)".to_owned());
            }
            if !(url.starts_with("wss://") || url.starts_with("ws://")) {
                out.push("the stream URL is not ws(s)://".to_owned());
            }
            let has_token = s.children().any(|p| {
                p.has_tag_name("Parameter")
                    && p.attribute("name") == Some(crate::extract::TOKEN_PARAM)
                    && p.attribute("value").is_some_and(|v| !v.is_empty())
            });
            if !has_token {
                out.push("no <Parameter name=\"token\">".to_owned());
            }
        }
        _ => out.push("not <Response><Connect|Start><Stream>".to_owned()),
    }
    out
}

fn twiml_shape(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let call = ctx.fresh_call();
        let reply = match ctx
            .post(&ctx.twilio.voice_params(&call), Signing::Valid)
            .await
        {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        if reply.status != 200 {
            return fail(format!("HTTP {}", reply.status));
        }
        let problems = twiml_problems(&reply.body);
        if problems.is_empty() {
            pass("no text node, no query, a token <Parameter>")
        } else {
            fail(problems.join("; "))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

async fn refused_webhook(ctx: &Ctx, params: &[(String, String)], signing: Signing) -> Outcome {
    match ctx.post(params, signing).await {
        Ok(r) => expect_refusal_status(r.status, &r.body),
        Err(e) => fail(e),
    }
}

fn webhook_unsigned(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let p = ctx.twilio.voice_params(&ctx.fresh_call());
        refused_webhook(ctx, &p, Signing::Absent).await
    })
}

fn webhook_bad_signature(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let p = ctx.twilio.voice_params(&ctx.fresh_call());
        refused_webhook(ctx, &p, Signing::Forged).await
    })
}

fn webhook_tampered(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let params = ctx.twilio.voice_params(&ctx.fresh_call());
        let sig = signature::compute_signature(&ctx.twilio.auth_token, &ctx.webhook_url(), &params);
        let tampered: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| {
                if k == "From" {
                    (k.clone(), "+15005550006".to_owned())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect();
        let body = tampered
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    crate::wire::form::encode(k),
                    crate::wire::form::encode(v)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let path = ctx
            .webhook_url()
            .split_once("://")
            .and_then(|(_, r)| r.find('/').map(|i| r.get(i..).unwrap_or("/").to_owned()))
            .unwrap_or_else(|| ctx.target.webhook_path.clone());
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            host_of(&ctx.target.public_url),
            body.len()
        );
        match raw_exchange(ctx.target.connect_to, request.as_bytes()).await {
            Ok((status, text)) => {
                let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                expect_refusal_status(status, body)
            }
            Err(e) => fail(format!("request failed: {e}")),
        }
    })
}

fn host_of(url: &str) -> String {
    url.split_once("://")
        .map_or(url, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn webhook_other_account(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let other = ctx.other_account();
        let p: Vec<(String, String)> = ctx
            .twilio
            .voice_params(&ctx.fresh_call())
            .into_iter()
            .map(|(k, v)| {
                if k == "AccountSid" {
                    (k, other.as_str().to_owned())
                } else {
                    (k, v)
                }
            })
            .collect();
        refused_webhook(ctx, &p, Signing::Valid).await
    })
}

fn webhook_replay_within_ttl(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let call = ctx.fresh_call();
        let first = match ctx.webhook_for(call).await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let again = match ctx
            .post(&ctx.twilio.voice_params(&call), Signing::Valid)
            .await
        {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        if again.status != 200 {
            return pass(format!("replay refused: HTTP {}", again.status));
        }
        let second_token = parse_twiml(&again.body).ok().as_ref().and_then(twiml_token);
        match (first.token(), second_token) {
            (Some(a), Some(b)) if a == b => pass("the same token again"),
            (_, None) => pass("no token in the replay's answer"),
            (None, Some(_)) => fail("a token only in the replay's answer"),
            (Some(_), Some(_)) => fail("a second, different token"),
        }
    })
}

fn webhook_replay_after_stream(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let url = strip_query(&c.twiml.url).to_owned();
        let mut first = match ctx
            .start(&url, &c, ctx.target.account_sid, &c.twiml.parameters, 2)
            .await
        {
            Ok(conn) => conn,
            Err(e) => return fail(format!("the first stream: {e}")),
        };
        if !accepted(&mut first).await {
            return fail("the first stream was not accepted");
        }
        first.close().await;
        second_stream_for(ctx, c).await
    })
}

/// Replays the webhook of `c` (which has streamed) and tries a stream with whatever it gets.
async fn second_stream_for(ctx: &Ctx, c: Call) -> Outcome {
    let replay = match ctx
        .post(&ctx.twilio.voice_params(&c.call), Signing::Valid)
        .await
    {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if replay.status != 200 {
        return pass(format!("replay refused: HTTP {}", replay.status));
    }
    let Ok(twiml) = parse_twiml(&replay.body) else {
        return pass("replay answered without a stream");
    };
    let again = Call {
        call: c.call,
        stream: ctx.fresh_stream(),
        twiml,
    };
    let url = strip_query(&again.twiml.url).to_owned();
    let mut conn = match ctx
        .start(
            &url,
            &again,
            ctx.target.account_sid,
            &again.twiml.parameters,
            2,
        )
        .await
    {
        Ok(conn) => conn,
        Err(e) => return pass(format!("replay's stream: {e}")),
    };
    if accepted(&mut conn).await {
        conn.close().await;
        fail("a second stream for the call was accepted")
    } else {
        pass(format!(
            "HTTP 200, but its stream: {}",
            describe_end(conn.ended())
        ))
    }
}

fn webhook_replay_after_ttl(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let Some(ttl) = ctx.target.token_ttl else {
            return skip("needs --token-ttl");
        };
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let url = strip_query(&c.twiml.url).to_owned();
        let mut first = match ctx
            .start(&url, &c, ctx.target.account_sid, &c.twiml.parameters, 2)
            .await
        {
            Ok(conn) => conn,
            Err(e) => return fail(format!("the first stream: {e}")),
        };
        if !accepted(&mut first).await {
            return fail("the first stream was not accepted");
        }
        first.close().await;
        tokio::time::sleep(ttl.saturating_add(Duration::from_secs(1))).await;
        second_stream_for(ctx, c).await
    })
}

// ---------------------------------------------------------------------------------------------
// The upgrade
// ---------------------------------------------------------------------------------------------

async fn refused_upgrade(ctx: &Ctx, url: &str, signing: Signing) -> Outcome {
    match ctx.twilio.open(url, signing).await {
        Ok(Upgrade::Refused(status)) if (400..500).contains(&status) => {
            pass(format!("HTTP {status}"))
        }
        Ok(Upgrade::Refused(status)) => fail(format!("HTTP {status}")),
        Ok(Upgrade::Open(conn)) => {
            conn.close().await;
            fail("101: upgraded")
        }
        Err(e) => fail(format!("upgrade failed: {e}")),
    }
}

fn upgrade_unsigned(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move { refused_upgrade(ctx, &ctx.default_stream_url(), Signing::Absent).await })
}

fn upgrade_bad_signature(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move { refused_upgrade(ctx, &ctx.default_stream_url(), Signing::Forged).await })
}

fn upgrade_wrong_path(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let url = format!("{}-not-here", ctx.default_stream_url());
        refused_upgrade(ctx, &url, Signing::Valid).await
    })
}

async fn raw_upgrade(ctx: &Ctx, method: &str, key_header: &str) -> Outcome {
    let url = ctx.default_stream_url();
    let sig = signature::compute_signature::<&str, &str>(&ctx.twilio.auth_token, &url, &[]);
    let request = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{key_header}X-Twilio-Signature: {sig}\r\nContent-Length: 0\r\n\r\n",
        ctx.target.stream_path,
        host_of(&ctx.target.public_url)
    );
    match raw_exchange(ctx.target.connect_to, request.as_bytes()).await {
        Ok((status, _)) if (400..500).contains(&status) => pass(format!("HTTP {status}")),
        Ok((0, _)) => pass("connection closed, no answer"),
        Ok((status, _)) => fail(format!("HTTP {status}")),
        Err(e) => fail(format!("request failed: {e}")),
    }
}

fn upgrade_wrong_method(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        raw_upgrade(
            ctx,
            "POST",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        )
        .await
    })
}

fn upgrade_malformed(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move { raw_upgrade(ctx, "GET", "").await })
}

// ---------------------------------------------------------------------------------------------
// The stream: tokens
// ---------------------------------------------------------------------------------------------

/// A fresh legitimate call, then a stream for it with `params` (and `account`): judged as a
/// refusal.
async fn refused_start(
    ctx: &Ctx,
    params: impl FnOnce(&Call) -> Vec<(String, String)>,
    account: Option<AccountSid>,
) -> Outcome {
    let c = match ctx.legit_call().await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let url = strip_query(&c.twiml.url).to_owned();
    let p = params(&c);
    match ctx
        .start(&url, &c, account.unwrap_or(ctx.target.account_sid), &p, 3)
        .await
    {
        Ok(conn) => judge_refused(conn, ctx.refusal_wait()).await,
        Err(e) => fail(e),
    }
}

fn stream_no_token(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move { refused_start(ctx, |_| Vec::new(), None).await })
}

fn stream_garbage_token(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        refused_start(
            ctx,
            |_| token_params("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-P0BB"),
            None,
        )
        .await
    })
}

fn stream_other_call_token(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let other = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let Some(token) = other.token() else {
            return skip("the TwiML hands out no token");
        };
        refused_start(ctx, |_| token_params(&token), None).await
    })
}

fn stream_other_account(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let other = ctx.other_account();
        refused_start(ctx, |c| c.twiml.parameters.clone(), Some(other)).await
    })
}

fn stream_replayed_token(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let url = strip_query(&c.twiml.url).to_owned();
        let mut first = match ctx
            .start(&url, &c, ctx.target.account_sid, &c.twiml.parameters, 2)
            .await
        {
            Ok(conn) => conn,
            Err(e) => return fail(format!("the first stream: {e}")),
        };
        if !accepted(&mut first).await {
            return fail("the first stream was not accepted");
        }
        first.close().await;
        let replay = Call {
            call: c.call,
            stream: ctx.fresh_stream(),
            twiml: c.twiml.clone(),
        };
        match ctx
            .start(
                &url,
                &replay,
                ctx.target.account_sid,
                &c.twiml.parameters,
                3,
            )
            .await
        {
            Ok(conn) => judge_refused(conn, ctx.refusal_wait()).await,
            Err(e) => pass(e),
        }
    })
}

fn stream_token_race(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let url = strip_query(&c.twiml.url).to_owned();
        let (Ok(mut a), Ok(mut b)) = (
            ctx.open(&url, Signing::Valid).await,
            ctx.open(&url, Signing::Valid).await,
        ) else {
            return fail("could not open two connections");
        };
        let other = Call {
            call: c.call,
            stream: ctx.fresh_stream(),
            twiml: c.twiml.clone(),
        };
        let start_a = start_message(
            &ctx.target.account_sid,
            &c.call,
            &c.stream,
            &c.twiml.parameters,
        );
        let start_b = start_message(
            &ctx.target.account_sid,
            &other.call,
            &other.stream,
            &c.twiml.parameters,
        );
        let (sa, sb) = tokio::join!(a.send_text(start_a), b.send_text(start_b));
        let _ = (sa, sb);
        for i in 0..2 {
            a.send_text(media_message(&c.stream, i)).await;
            b.send_text(media_message(&other.stream, i)).await;
        }
        let (oa, ob) = tokio::join!(accepted(&mut a), accepted(&mut b));
        a.close().await;
        b.close().await;
        match (oa, ob) {
            (true, false) | (false, true) => pass("exactly one accepted"),
            (true, true) => fail("both accepted"),
            (false, false) => fail("neither accepted"),
        }
    })
}

fn stream_expired_token(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let Some(ttl) = ctx.target.token_ttl else {
            return skip("needs --token-ttl");
        };
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        tokio::time::sleep(ttl.saturating_add(Duration::from_secs(1))).await;
        let url = strip_query(&c.twiml.url).to_owned();
        match ctx
            .start(&url, &c, ctx.target.account_sid, &c.twiml.parameters, 3)
            .await
        {
            Ok(conn) => judge_refused(conn, ctx.refusal_wait()).await,
            Err(e) => pass(e),
        }
    })
}

fn with_query(url: &str, token: &str) -> String {
    format!(
        "{url}?{}={}",
        crate::extract::TOKEN_PARAM,
        crate::wire::form::encode(token)
    )
}

fn stream_token_in_url_only(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let Some(token) = c.token() else {
            return skip("the TwiML hands out no token");
        };
        let url = with_query(strip_query(&c.twiml.url), &token);
        let mut first = match ctx.start(&url, &c, ctx.target.account_sid, &[], 2).await {
            Ok(conn) => conn,
            Err(e) => return pass(e),
        };
        if !accepted(&mut first).await {
            return pass(format!("refused: {}", describe_end(first.ended())));
        }
        first.close().await;
        // Accepted from the URL: then it must still be single use.
        let again = Call {
            call: c.call,
            stream: ctx.fresh_stream(),
            twiml: c.twiml.clone(),
        };
        match ctx
            .start(&url, &again, ctx.target.account_sid, &[], 2)
            .await
        {
            Ok(mut conn) => {
                if accepted(&mut conn).await {
                    conn.close().await;
                    fail("accepted from the URL, twice")
                } else {
                    pass("accepted once from the URL, refused again")
                }
            }
            Err(e) => pass(format!("accepted once, then {e}")),
        }
    })
}

fn stream_token_conflict(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let decoy = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let Some(other_token) = decoy.token() else {
            return skip("the TwiML hands out no token");
        };
        let url = with_query(strip_query(&c.twiml.url), &other_token);
        match ctx
            .start(&url, &c, ctx.target.account_sid, &c.twiml.parameters, 3)
            .await
        {
            Ok(conn) => judge_refused(conn, ctx.refusal_wait()).await,
            Err(e) => pass(e),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The stream: protocol
// ---------------------------------------------------------------------------------------------

/// Opens a signed stream for a fresh legitimate call, sends `connected` and `first`, then the
/// call's valid `start`: judged as a refusal (the first message already closed it).
async fn refused_before_start(ctx: &Ctx, first: impl FnOnce(&StreamSid) -> Message) -> Outcome {
    let c = match ctx.legit_call().await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let url = strip_query(&c.twiml.url).to_owned();
    let mut conn = match ctx.open(&url, Signing::Valid).await {
        Ok(conn) => conn,
        Err(e) => return fail(e),
    };
    conn.send_text(connected_message()).await;
    conn.send(first(&c.stream)).await;
    conn.send_text(start_message(
        &ctx.target.account_sid,
        &c.call,
        &c.stream,
        &c.twiml.parameters,
    ))
    .await;
    conn.send_text(media_message(&c.stream, 0)).await;
    judge_refused(conn, ctx.refusal_wait()).await
}

fn stream_media_before_start(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move { refused_before_start(ctx, |s| Message::text(media_message(s, 0))).await })
}

fn stream_stop_before_start(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let account = ctx.target.account_sid;
        let call = ctx.fresh_call();
        refused_before_start(ctx, |s| Message::text(stop_message(&account, &call, s, 1))).await
    })
}

fn stream_mark_before_start(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        refused_before_start(ctx, |s| {
            Message::text(format!(
                r#"{{"event":"mark","sequenceNumber":"2","streamSid":"{s}","mark":{{"name":"m1"}}}}"#
            ))
        })
        .await
    })
}

fn stream_binary_frame(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move { refused_before_start(ctx, |_| Message::binary(vec![0xffu8; 160])).await })
}

/// Bytes of padding in `stream.oversized_message`'s `start`.
const OVERSIZED_PADDING: usize = 600 * 1024;

/// `message` (a JSON object) with a `padding` field of `bytes` bytes added: a field Twilio
/// does not send, which a parser that ignores unknown fields skips.
fn padded(message: &str, bytes: usize) -> String {
    match serde_json::from_str::<serde_json::Value>(message) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert(
                "padding".to_owned(),
                serde_json::Value::String("A".repeat(bytes)),
            );
            serde_json::Value::Object(m).to_string()
        }
        _ => message.to_owned(),
    }
}

/// The call's own valid `start`, padded to 600 KiB, then media: only a message limit stands
/// between it and authentication. (An oversized message of any other kind before `start`
/// would be refused as an event before `start` by a target with no size limit at all.)
fn stream_oversized(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let url = strip_query(&c.twiml.url).to_owned();
        let mut conn = match ctx.open(&url, Signing::Valid).await {
            Ok(conn) => conn,
            Err(e) => return fail(e),
        };
        conn.send_text(connected_message()).await;
        let start = start_message(
            &ctx.target.account_sid,
            &c.call,
            &c.stream,
            &c.twiml.parameters,
        );
        conn.send_text(padded(&start, OVERSIZED_PADDING)).await;
        conn.send_text(media_message(&c.stream, 0)).await;
        judge_refused(conn, ctx.refusal_wait()).await
    })
}

fn stream_malformed_json(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        refused_before_start(ctx, |_| Message::text(r#"{"event":"start","#.to_owned())).await
    })
}

fn stream_duplicate_start(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let url = strip_query(&c.twiml.url).to_owned();
        let mut conn = match ctx
            .start(&url, &c, ctx.target.account_sid, &c.twiml.parameters, 1)
            .await
        {
            Ok(conn) => conn,
            Err(e) => return fail(e),
        };
        if !accepted(&mut conn).await {
            return fail("the first start was not accepted");
        }
        conn.send_text(start_message(
            &ctx.target.account_sid,
            &c.call,
            &c.stream,
            &c.twiml.parameters,
        ))
        .await;
        match conn.wait_end(ctx.refusal_wait()).await {
            Some(e) => pass(format!("second start: {}", describe_end(Some(&e)))),
            None => {
                conn.close().await;
                fail("a second start on an open stream was accepted")
            }
        }
    })
}

fn stream_start_deadline(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let url = strip_query(&c.twiml.url).to_owned();
        let mut conn = match ctx.open(&url, Signing::Valid).await {
            Ok(conn) => conn,
            Err(e) => return fail(e),
        };
        // A slow client: `connected`, then nothing.
        conn.send_text(connected_message()).await;
        let limit = ctx.refusal_wait();
        let started = tokio::time::Instant::now();
        match conn.wait_end(limit).await {
            Some(e) if !conn.received_anything() => pass(format!(
                "{} after {:.1} s",
                describe_end(Some(&e)),
                started.elapsed().as_secs_f64()
            )),
            Some(e) => fail(format!("{} after sending data", describe_end(Some(&e)))),
            None => {
                conn.close().await;
                fail(format!("still open after {} s", limit.as_secs()))
            }
        }
    })
}

fn stream_preauth_flood(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let url = ctx.default_stream_url();
        let mut flood = Vec::new();
        let mut refused = 0usize;
        for _ in 0..FLOOD_CONNECTIONS {
            match ctx.twilio.open(&url, Signing::Valid).await {
                Ok(Upgrade::Open(conn)) => flood.push(*conn),
                Ok(Upgrade::Refused(_)) | Err(_) => refused = refused.saturating_add(1),
            }
        }
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(format!("during the flood: {e}")),
        };
        let stream_url = strip_query(&c.twiml.url).to_owned();
        let outcome = match ctx
            .start(
                &stream_url,
                &c,
                ctx.target.account_sid,
                &c.twiml.parameters,
                3,
            )
            .await
        {
            Ok(mut conn) => {
                let ok = accepted(&mut conn).await;
                let end = describe_end(conn.ended());
                conn.close().await;
                if ok {
                    pass(format!(
                        "the call got through ({} held, {refused} refused)",
                        flood.len()
                    ))
                } else {
                    fail(format!("the call was refused during the flood: {end}"))
                }
            }
            Err(e) => fail(format!("the call during the flood: {e}")),
        };
        for conn in flood {
            conn.close().await;
        }
        outcome
    })
}

// ---------------------------------------------------------------------------------------------
// Interception and injection
// ---------------------------------------------------------------------------------------------

fn interception(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let url = strip_query(&c.twiml.url).to_owned();
        let mut live = match ctx
            .start(&url, &c, ctx.target.account_sid, &c.twiml.parameters, 0)
            .await
        {
            Ok(conn) => conn,
            Err(e) => return fail(e),
        };
        if !accepted(&mut live).await {
            return fail("the legitimate call was not accepted");
        }
        // Two eavesdroppers, both with a signed upgrade: one only listens (`connected`, then
        // nothing: it is pending until the start deadline, which a server that sends audio to
        // every open connection gets wrong), the other claims the live call's identity with
        // no valid token.
        let mut listener = ctx.open(&url, Signing::Valid).await.ok();
        if let Some(l) = listener.as_mut() {
            l.send_text(connected_message()).await;
        }
        let mut spy = match ctx.open(&url, Signing::Valid).await {
            Ok(conn) => conn,
            Err(e) => {
                live.close().await;
                if let Some(l) = listener {
                    l.close().await;
                }
                return pass(format!("eavesdropper refused: {e}"));
            }
        };
        spy.send_text(connected_message()).await;
        spy.send_text(start_message(
            &ctx.target.account_sid,
            &c.call,
            &c.stream,
            &token_params("not-a-token"),
        ))
        .await;
        for i in 0..5 {
            live.send_text(media_message(&c.stream, i)).await;
        }
        spy.settle(ACCEPT_GRACE).await;
        if let Some(l) = listener.as_mut() {
            l.settle(ACCEPT_GRACE).await;
        }
        live.close().await;
        let heard = listener
            .as_ref()
            .filter(|l| l.received_anything())
            .map(|l| l.received().len());
        if let Some(l) = listener {
            l.close().await;
        }
        if spy.received_anything() {
            fail(format!(
                "the unauthenticated connection received {} messages",
                spy.received().len()
            ))
        } else if let Some(n) = heard {
            fail(format!(
                "a connection that never sent start received {n} text messages (or binary)"
            ))
        } else {
            pass(format!("nothing received; {}", describe_end(spy.ended())))
        }
    })
}

fn injection(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(async move {
        if ctx.echoes() != Some(true) {
            return skip("the target does not echo, so injection cannot be observed");
        }
        let c = match ctx.legit_call().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let url = strip_query(&c.twiml.url).to_owned();
        let mut live = match ctx
            .start(&url, &c, ctx.target.account_sid, &c.twiml.parameters, 0)
            .await
        {
            Ok(conn) => conn,
            Err(e) => return fail(e),
        };
        if !accepted(&mut live).await {
            return fail("the legitimate call was not accepted");
        }
        let marker =
            base64::engine::general_purpose::STANDARD.encode(b"INJECTED-AUDIO-not-from-the-caller");
        let mut attacker = ctx.open(&url, Signing::Valid).await.ok();
        if let Some(a) = attacker.as_mut() {
            a.send_text(connected_message()).await;
            // Frames for the live call's stream, before any start, then with a bad token.
            for i in 0..3 {
                a.send_text(media_message_with(&c.stream, i, &marker)).await;
            }
            a.send_text(start_message(
                &ctx.target.account_sid,
                &c.call,
                &c.stream,
                &token_params("not-a-token"),
            ))
            .await;
            for i in 3..6 {
                a.send_text(media_message_with(&c.stream, i, &marker)).await;
            }
        }
        for i in 0..5 {
            live.send_text(media_message(&c.stream, i)).await;
        }
        live.wait_messages(5, Duration::from_secs(2)).await;
        live.settle(Duration::from_millis(200)).await;
        let injected = live
            .echoed_payloads()
            .iter()
            .filter(|p| **p == marker)
            .count();
        live.close().await;
        if let Some(a) = attacker {
            a.close().await;
        }
        if injected == 0 {
            pass("no injected frame came back on the call")
        } else {
            fail(format!("{injected} injected frames came back on the call"))
        }
    })
}

/// Every case, in report order.
pub fn catalogue() -> Vec<Case> {
    use Phase::{Alone, Sequential, Waiting};
    let c = |id, description, expected, phase, run| Case {
        id,
        description,
        expected,
        phase,
        run,
    };
    vec![
        c(
            "call.legitimate",
            "a call as Twilio places it: signed webhook, TwiML, signed upgrade, start with the <Parameter>s, 20 ms frames, stop",
            "accepted and kept open; echo if the target echoes",
            Sequential,
            legitimate,
        ),
        c(
            "twiml.shape",
            "the TwiML answer, parsed strictly",
            "<Connect><Stream>, no text node, no query in the url, a token <Parameter>",
            Sequential,
            twiml_shape,
        ),
        c(
            "webhook.unsigned",
            "the voice webhook without X-Twilio-Signature",
            "refused (4xx), no TwiML",
            Sequential,
            webhook_unsigned,
        ),
        c(
            "webhook.bad_signature",
            "the voice webhook signed with another auth token",
            "refused (4xx), no TwiML",
            Sequential,
            webhook_bad_signature,
        ),
        c(
            "webhook.tampered_parameter",
            "a signed webhook whose From was changed after signing",
            "refused (4xx), no TwiML",
            Sequential,
            webhook_tampered,
        ),
        c(
            "webhook.other_account",
            "a signed webhook for another AccountSid",
            "refused (4xx), no TwiML",
            Sequential,
            webhook_other_account,
        ),
        c(
            "webhook.replay_within_ttl",
            "the same signed webhook again, within the token TTL",
            "the same token again, or refused: no second valid token",
            Sequential,
            webhook_replay_within_ttl,
        ),
        c(
            "webhook.replay_after_stream",
            "the call's signed webhook replayed after its stream",
            "no second stream for the call",
            Sequential,
            webhook_replay_after_stream,
        ),
        c(
            "webhook.replay_after_ttl",
            "the signed webhook of a streamed call replayed after the token TTL",
            "no second stream for the call",
            Waiting,
            webhook_replay_after_ttl,
        ),
        c(
            "upgrade.unsigned",
            "the WebSocket upgrade without X-Twilio-Signature",
            "refused before the upgrade (4xx)",
            Sequential,
            upgrade_unsigned,
        ),
        c(
            "upgrade.bad_signature",
            "the upgrade signed with another auth token",
            "refused before the upgrade (4xx)",
            Sequential,
            upgrade_bad_signature,
        ),
        c(
            "upgrade.wrong_path",
            "a signed upgrade of another path",
            "refused (4xx)",
            Sequential,
            upgrade_wrong_path,
        ),
        c(
            "upgrade.wrong_method",
            "a POST with WebSocket upgrade headers",
            "refused (4xx)",
            Sequential,
            upgrade_wrong_method,
        ),
        c(
            "upgrade.malformed_handshake",
            "an upgrade without Sec-WebSocket-Key",
            "refused (4xx)",
            Sequential,
            upgrade_malformed,
        ),
        c(
            "stream.no_token",
            "a start without a token",
            "closed before any audio, nothing sent (1008)",
            Sequential,
            stream_no_token,
        ),
        c(
            "stream.garbage_token",
            "a start with a token that was never issued",
            "closed, nothing sent (1008)",
            Sequential,
            stream_garbage_token,
        ),
        c(
            "stream.other_call_token",
            "a start with another call's genuine token",
            "closed, nothing sent (1008)",
            Sequential,
            stream_other_call_token,
        ),
        c(
            "stream.other_account",
            "a start for another AccountSid with the call's token",
            "closed, nothing sent (1008)",
            Sequential,
            stream_other_account,
        ),
        c(
            "stream.replayed_token",
            "a start with a token that already opened a stream",
            "closed, nothing sent (1008)",
            Sequential,
            stream_replayed_token,
        ),
        c(
            "stream.token_race",
            "two connections start with one token at once",
            "exactly one accepted",
            Sequential,
            stream_token_race,
        ),
        c(
            "stream.expired_token",
            "a start with a token past its TTL",
            "closed, nothing sent (1008)",
            Waiting,
            stream_expired_token,
        ),
        c(
            "stream.token_in_url_only",
            "the valid token only in the URL query (Twilio would drop it)",
            "refused, or accepted once and never again",
            Sequential,
            stream_token_in_url_only,
        ),
        c(
            "stream.token_conflict",
            "another call's token in the URL, the right one in customParameters",
            "closed, nothing sent (1008)",
            Sequential,
            stream_token_conflict,
        ),
        c(
            "stream.media_before_start",
            "media before start",
            "closed, nothing sent (1008)",
            Sequential,
            stream_media_before_start,
        ),
        c(
            "stream.stop_before_start",
            "stop before start",
            "closed, nothing sent (1008)",
            Sequential,
            stream_stop_before_start,
        ),
        c(
            "stream.mark_before_start",
            "mark before start",
            "closed, nothing sent (1008)",
            Sequential,
            stream_mark_before_start,
        ),
        c(
            "stream.duplicate_start",
            "a second start on an authenticated stream",
            "closed (1008)",
            Sequential,
            stream_duplicate_start,
        ),
        c(
            "stream.binary_frame",
            "a binary frame (Twilio sends text only)",
            "closed, nothing sent (1003)",
            Sequential,
            stream_binary_frame,
        ),
        c(
            "stream.oversized_message",
            "the call's valid start, padded to a 600 KiB text message",
            "closed, nothing sent (1009)",
            Sequential,
            stream_oversized,
        ),
        c(
            "stream.malformed_json",
            "a text message that is not JSON",
            "closed, nothing sent (1008)",
            Sequential,
            stream_malformed_json,
        ),
        c(
            "stream.start_deadline",
            "connected, then nothing (a slow client)",
            "closed within the start deadline",
            Sequential,
            stream_start_deadline,
        ),
        c(
            "stream.preauth_flood",
            "40 upgraded connections that never start, then a legitimate call",
            "the legitimate call authenticates",
            Alone,
            stream_preauth_flood,
        ),
        c(
            "interception.unauthenticated_hears_nothing",
            "while a call sends audio: a connection with the call's identity and no valid token, and one that never sends start",
            "neither receives anything",
            Sequential,
            interception,
        ),
        c(
            "injection.unauthenticated_frames_go_nowhere",
            "an unauthenticated connection sends audio for a live call's stream",
            "nothing it sent comes back on the call",
            Sequential,
            injection,
        ),
    ]
}
