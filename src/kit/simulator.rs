//! Twilio's side of a call, for `streamguard demo`, the end-to-end tests and conformance
//! checks against any media-stream server.
//!
//! It does what Twilio does, step by step, and each step can be altered to forge a request:
//! 1. [`Twilio::post_webhook`]: POST the voice webhook (form-encoded `CallSid`, `AccountSid`,
//!    ...) with an `X-Twilio-Signature` over the URL and the parameters;
//! 2. [`parse_twiml`]: read the `<Stream url>` and its `<Parameter>`s from the answer;
//! 3. [`strip_query`]: drop the query from the stream URL, as Twilio does (error 31920);
//! 4. [`Twilio::stream`]: open the WebSocket with a URL-only signature, send `connected`,
//!    `start` with the parameters in `customParameters`, 20 ms frames of 160-byte mu-law,
//!    `stop`, and record what comes back and how the connection was closed.
//!
//! The simulator connects to a given socket address (like `curl --resolve`), so the URLs
//! can name the public host while the bytes go to a local server.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

use crate::secret::AuthToken;
use crate::sid::{AccountSid, CallSid, StreamSid};
use crate::signature;
use crate::wire::form;
use crate::wire::frames::{
    ConnectedFrame, Inbound, MediaBody, MediaFrame, Short, StopBody, StopFrame,
};

/// Bytes of mu-law audio in one 20 ms frame at 8 kHz.
pub const FRAME_BYTES: usize = 160;

/// Time between frames in real time.
pub const FRAME_INTERVAL: Duration = Duration::from_millis(20);

/// How long the simulator waits for the server to answer or close.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong on the simulator's side (not a refusal by the server: those are
/// outcomes).
#[derive(Debug)]
#[non_exhaustive]
pub enum SimError {
    /// Connecting or I/O failed.
    Io(io::Error),
    /// The HTTP exchange failed.
    Http(String),
    /// The TwiML could not be read.
    Twiml(&'static str),
    /// A URL could not be used.
    Url(&'static str),
    /// The server did not answer in time.
    Timeout,
    /// A value the simulation needs could not be made (randomness, a key, a SID).
    Setup(&'static str),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "i/o: {e}"),
            Self::Http(e) => write!(f, "http: {e}"),
            Self::Twiml(e) => write!(f, "twiml: {e}"),
            Self::Url(e) => write!(f, "url: {e}"),
            Self::Timeout => f.write_str("no answer in time"),
            Self::Setup(what) => write!(f, "cannot set up the simulation: {what}"),
        }
    }
}

impl std::error::Error for SimError {}

impl From<io::Error> for SimError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// How a request is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signing {
    /// With the account's auth token, as Twilio does.
    Valid,
    /// No `X-Twilio-Signature` header.
    Absent,
    /// With another auth token (a forgery).
    Forged,
}

/// The answer to a webhook.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookReply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body (TwiML with a token on success: never log it).
    pub body: String,
}

impl fmt::Debug for WebhookReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookReply")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The `<Stream>` of a TwiML answer.
#[derive(Clone, PartialEq, Eq)]
pub struct TwimlStream {
    /// `Connect` or `Start`.
    pub verb: String,
    /// The `url` attribute, as written.
    pub url: String,
    /// The `<Parameter>`s, in order.
    pub parameters: Vec<(String, String)>,
}

impl fmt::Debug for TwimlStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.parameters.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("TwimlStream")
            .field("verb", &self.verb)
            .field("url", &self.url)
            .field("parameter_names", &names)
            .finish()
    }
}

impl TwimlStream {
    /// The value of parameter `name`.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the `<Stream>` out of a TwiML document, as Twilio would: `Response` →
/// `Connect`/`Start` → `Stream` with its `Parameter` children.
pub fn parse_twiml(body: &str) -> Result<TwimlStream, SimError> {
    let doc =
        roxmltree::Document::parse(body).map_err(|_| SimError::Twiml("not well-formed XML"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Response" {
        return Err(SimError::Twiml("root is not <Response>"));
    }
    let verb = root
        .children()
        .find(|n| n.is_element() && matches!(n.tag_name().name(), "Connect" | "Start"))
        .ok_or(SimError::Twiml("no <Connect> or <Start>"))?;
    let stream = verb
        .children()
        .find(|n| n.has_tag_name("Stream"))
        .ok_or(SimError::Twiml("no <Stream>"))?;
    let url = stream
        .attribute("url")
        .ok_or(SimError::Twiml("<Stream> has no url"))?;
    let parameters = stream
        .children()
        .filter(|n| n.has_tag_name("Parameter"))
        .map(|p| {
            let name = p.attribute("name").unwrap_or_default().to_owned();
            let value = p.attribute("value").unwrap_or_default().to_owned();
            (name, value)
        })
        .collect();
    Ok(TwimlStream {
        verb: verb.tag_name().name().to_owned(),
        url: url.to_owned(),
        parameters,
    })
}

/// The URL without its query string (and fragment): what Twilio actually connects to.
pub fn strip_query(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    url.get(..end).unwrap_or(url)
}

/// A new random-looking SID of the given kind, from a counter and a seed (deterministic).
pub fn sid_from(prefix: &str, seed: u64, n: u64) -> String {
    let mixed = seed.rotate_left(17) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{prefix}{mixed:016x}{:016x}", n ^ seed)
}

/// A 440 Hz tone as 8 kHz mu-law, frame `index` of it: deterministic audio whose frames
/// differ from each other, so an echo can be matched to its frame.
#[allow(clippy::arithmetic_side_effects)] // bounded signal math on constants, not peer input
pub fn tone_frame(index: usize) -> Vec<u8> {
    (0..FRAME_BYTES)
        .map(|i| {
            let n = (index.wrapping_mul(FRAME_BYTES).wrapping_add(i) % 8000) as f64;
            let sample = (n * 440.0 * std::f64::consts::TAU / 8000.0).sin() * 8000.0;
            mulaw_encode(sample as i16)
        })
        .collect()
}

/// G.711 mu-law encoding of one 16-bit linear sample (ITU-T G.711, with the usual bias of
/// 0x84 and clip at 32635).
#[allow(clippy::arithmetic_side_effects)] // every operand is bounded by the clip below
pub fn mulaw_encode(sample: i16) -> u8 {
    const BIAS: u32 = 0x84;
    const CLIP: u32 = 32_635;
    let sign: u8 = if sample < 0 { 0x80 } else { 0 };
    let magnitude = i32::from(sample).unsigned_abs().min(CLIP) + BIAS;
    // The position of the highest set bit of magnitude >> 7 (1..=255): 0..=7.
    let exponent = (31 - (magnitude >> 7).leading_zeros()).min(7);
    let mantissa = ((magnitude >> (exponent + 3)) & 0x0f) as u8;
    !(sign | ((exponent as u8) << 4) | mantissa)
}

/// The `start` message Twilio sends, with `parameters` as `customParameters`.
pub fn start_message(
    account: &AccountSid,
    call: &CallSid,
    stream: &StreamSid,
    parameters: &[(String, String)],
) -> String {
    let custom: serde_json::Map<String, serde_json::Value> = parameters
        .iter()
        .map(|(n, v)| (n.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": stream,
        "start": {
            "accountSid": account,
            "streamSid": stream,
            "callSid": call,
            "tracks": ["inbound"],
            "customParameters": custom,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        }
    })
    .to_string()
}

fn sequenced(n: usize) -> Option<Short> {
    Short::new(n.to_string())
}

/// The `media` message for frame `index` (sequence numbers follow `connected` and `start`).
pub fn media_message(stream: &StreamSid, index: usize) -> String {
    let payload = base64::engine::general_purpose::STANDARD.encode(tone_frame(index));
    media_message_with(stream, index, &payload)
}

/// The `connected` message.
pub fn connected_message() -> String {
    let c = ConnectedFrame {
        protocol: Short::new("Call"),
        version: Short::new("1.0.0"),
    };
    serde_json::to_string(&Inbound::Connected(c)).unwrap_or_default()
}

/// The `stop` message.
pub fn stop_message(
    account: &AccountSid,
    call: &CallSid,
    stream: &StreamSid,
    seq: usize,
) -> String {
    let s = StopFrame {
        sequence_number: sequenced(seq),
        stream_sid: *stream,
        stop: Some(StopBody {
            account_sid: *account,
            call_sid: *call,
        }),
    };
    serde_json::to_string(&Inbound::Stop(s)).unwrap_or_default()
}

/// The identifiers and parameters of a `start` message.
#[derive(Clone, PartialEq, Eq)]
pub struct StartSpec {
    /// `start.accountSid`.
    pub account: AccountSid,
    /// `start.callSid`.
    pub call: CallSid,
    /// `streamSid` and `start.streamSid`.
    pub stream: StreamSid,
    /// `start.customParameters`, in order (values may be secrets: no `Debug`).
    pub parameters: Vec<(String, String)>,
}

/// What to send on a stream.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamPlan {
    /// The URL to open (Twilio's, i.e. without query, unless forging).
    pub url: String,
    /// How the upgrade is signed.
    pub signing: Signing,
    /// Send `connected` first.
    pub connected: bool,
    /// The `start` to send; `None` sends none.
    pub start: Option<StartSpec>,
    /// Number of 20 ms media frames after `start`.
    pub media_frames: usize,
    /// Send the first media frames in the same write as `start`.
    pub media_with_start: bool,
    /// Send `stop` at the end.
    pub stop: bool,
    /// Wait [`FRAME_INTERVAL`] between media frames (real time), or send them at once.
    pub paced: bool,
    /// Raw messages to send instead of everything above (after `connected`, if set).
    pub raw: Vec<Message>,
}

impl fmt::Debug for StreamPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamPlan")
            .field("url", &self.url)
            .field("signing", &self.signing)
            .field("media_frames", &self.media_frames)
            .finish_non_exhaustive()
    }
}

impl StreamPlan {
    /// A full, legitimate stream: `connected`, `start` with `parameters`, `frames` media
    /// frames, `stop`.
    pub fn call(
        url: &str,
        account: AccountSid,
        call: CallSid,
        stream: StreamSid,
        parameters: Vec<(String, String)>,
        frames: usize,
    ) -> Self {
        Self {
            url: strip_query(url).to_owned(),
            signing: Signing::Valid,
            connected: true,
            start: Some(StartSpec {
                account,
                call,
                stream,
                parameters,
            }),
            media_frames: frames,
            media_with_start: false,
            stop: true,
            paced: false,
            raw: Vec::new(),
        }
    }
}

/// How a stream attempt ended.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StreamOutcome {
    /// The HTTP status if the server refused the upgrade (no `101`).
    pub http_status: Option<u16>,
    /// The close code the server sent, if it sent a close frame.
    pub close_code: Option<u16>,
    /// The close reason text the server sent.
    pub close_reason: String,
    /// Every text message the server sent, in order.
    pub received: Vec<String>,
    /// Binary messages the server sent.
    pub binary_received: usize,
}

impl StreamOutcome {
    /// Whether the server sent anything at all besides a refusal or a close.
    pub fn received_anything(&self) -> bool {
        !self.received.is_empty() || self.binary_received > 0
    }

    /// The payloads of outbound `media` messages received.
    pub fn echoed_payloads(&self) -> Vec<String> {
        media_payloads(&self.received)
    }
}

/// Twilio, as seen by a media-stream server.
pub struct Twilio {
    /// Where the server's socket is (the URLs may name another host).
    pub connect_to: SocketAddr,
    /// The account's auth token (signs requests).
    pub auth_token: AuthToken,
    /// The account.
    pub account_sid: AccountSid,
}

impl fmt::Debug for Twilio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Twilio")
            .field("connect_to", &self.connect_to)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

fn forged_token() -> Result<AuthToken, SimError> {
    AuthToken::new("not-the-auth-token-0123456789abcdef")
        .map_err(|_| SimError::Setup("forged auth token"))
}

impl Twilio {
    /// The form parameters of a voice webhook for an inbound call, as Twilio sends them (the
    /// geographic fields included).
    pub fn voice_params(&self, call: &CallSid) -> Vec<(String, String)> {
        [
            ("AccountSid", self.account_sid.as_str()),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", call.as_str()),
            ("CallStatus", "ringing"),
            ("CallToken", ""),
            ("Called", "+14155550100"),
            ("CalledCity", "SAN FRANCISCO"),
            ("CalledCountry", "US"),
            ("CalledState", "CA"),
            ("CalledZip", "94105"),
            ("Caller", "+14155550199"),
            ("CallerCity", "OAKLAND"),
            ("CallerCountry", "US"),
            ("CallerState", "CA"),
            ("CallerZip", "94612"),
            ("Direction", "inbound"),
            ("From", "+14155550199"),
            ("FromCity", "OAKLAND"),
            ("FromCountry", "US"),
            ("FromState", "CA"),
            ("FromZip", "94612"),
            ("To", "+14155550100"),
            ("ToCity", "SAN FRANCISCO"),
            ("ToCountry", "US"),
            ("ToState", "CA"),
            ("ToZip", "94105"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    fn signature_for(
        &self,
        signing: Signing,
        url: &str,
        params: &[(String, String)],
    ) -> Result<Option<String>, SimError> {
        Ok(match signing {
            Signing::Valid => Some(signature::compute_signature(&self.auth_token, url, params)),
            Signing::Absent => None,
            Signing::Forged => Some(signature::compute_signature(&forged_token()?, url, params)),
        })
    }

    /// POSTs a form webhook to `url` (which names the public host; the bytes go to
    /// `connect_to`).
    pub async fn post_webhook(
        &self,
        url: &str,
        params: &[(String, String)],
        signing: Signing,
    ) -> Result<WebhookReply, SimError> {
        let uri: hyper::Uri = url.parse().map_err(|_| SimError::Url("webhook url"))?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or(SimError::Url("webhook url has no host"))?;
        let body = params
            .iter()
            .map(|(k, v)| format!("{}={}", form::encode(k), form::encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut req = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(hyper::header::HOST, host)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(
                hyper::header::USER_AGENT,
                "TwilioProxy/1.1 (streamguard simulator)",
            );
        if let Some(sig) = self.signature_for(signing, url, params)? {
            req = req.header(signature::HEADER, sig);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SimError::Http(e.to_string()))?;

        let exchange = async {
            let tcp = TcpStream::connect(self.connect_to).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| SimError::Http(e.to_string()))?;
            let driver = tokio::spawn(conn);
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| SimError::Http(e.to_string()))?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| SimError::Http(e.to_string()))?
                .to_bytes();
            driver.abort();
            Ok::<_, SimError>(WebhookReply {
                status,
                content_type,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        };
        tokio::time::timeout(REPLY_TIMEOUT, exchange)
            .await
            .map_err(|_| SimError::Timeout)?
    }

    /// Opens the stream and plays `plan`; returns how the server answered.
    pub async fn stream(&self, plan: &StreamPlan) -> Result<StreamOutcome, SimError> {
        let mut request = plan
            .url
            .as_str()
            .into_client_request()
            .map_err(|_| SimError::Url("stream url"))?;
        if let Some(sig) = self.signature_for(plan.signing, &plan.url, &[])? {
            let value = sig.parse().map_err(|_| SimError::Url("signature header"))?;
            request.headers_mut().insert(signature::HEADER, value);
        }
        let tcp = TcpStream::connect(self.connect_to).await?;
        let config = tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(crate::limits::WS_READ_BUFFER_BYTES)
            .write_buffer_size(crate::limits::WS_WRITE_BUFFER_BYTES);
        let handshake = tokio_tungstenite::client_async_with_config(request, tcp, Some(config));
        let mut ws = match tokio::time::timeout(REPLY_TIMEOUT, handshake).await {
            Err(_) => return Err(SimError::Timeout),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                return Ok(StreamOutcome {
                    http_status: Some(resp.status().as_u16()),
                    ..StreamOutcome::default()
                });
            }
            Ok(Err(e)) => return Err(SimError::Http(e.to_string())),
            Ok(Ok((ws, _))) => ws,
        };

        let mut outcome = StreamOutcome::default();
        let send_all = async {
            if plan.connected {
                ws.send(Message::text(connected_message())).await?;
            }
            for m in &plan.raw {
                ws.send(m.clone()).await?;
            }
            if let Some(StartSpec {
                account,
                call,
                stream,
                parameters,
            }) = &plan.start
            {
                let start = Message::text(start_message(account, call, stream, parameters));
                if plan.media_with_start {
                    ws.feed(start).await?;
                } else {
                    ws.send(start).await?;
                }
                for i in 0..plan.media_frames {
                    let m = Message::text(media_message(stream, i));
                    if plan.media_with_start && i < 3 {
                        ws.feed(m).await?;
                        continue;
                    }
                    if plan.paced {
                        tokio::time::sleep(FRAME_INTERVAL).await;
                    }
                    ws.send(m).await?;
                }
                ws.flush().await?;
                if plan.stop {
                    let seq = plan.media_frames.saturating_add(2);
                    ws.send(Message::text(stop_message(account, call, stream, seq)))
                        .await?;
                }
            }
            Ok::<_, tungstenite::Error>(())
        };
        // The server may close before everything is sent (a refusal): that is an outcome,
        // not a simulator error.
        let _ = send_all.await;

        let read_all = async {
            while let Some(msg) = ws.next().await {
                match msg {
                    Ok(Message::Text(t)) => outcome.received.push(t.as_str().to_owned()),
                    Ok(Message::Binary(_)) => {
                        outcome.binary_received = outcome.binary_received.saturating_add(1)
                    }
                    Ok(Message::Close(frame)) => {
                        if let Some(f) = frame {
                            outcome.close_code = Some(u16::from(f.code));
                            outcome.close_reason = f.reason.as_str().to_owned();
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        };
        let _ = tokio::time::timeout(REPLY_TIMEOUT, read_all).await;
        Ok(outcome)
    }
}

/// How a live connection ended, as the simulator saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The server sent a close frame with this code.
    Close(u16),
    /// The connection ended without a close frame (reset, EOF, protocol error).
    Dropped,
}

/// An open WebSocket to the server, driven message by message: for conformance cases that
/// need to keep a stream open, race two connections, or see exactly what comes back.
pub struct Connection {
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    received: Vec<String>,
    binary: usize,
    ended: Option<Ended>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("received", &self.received.len())
            .field("binary", &self.binary)
            .field("ended", &self.ended)
            .finish()
    }
}

impl Connection {
    /// Sends one message; `false` if the connection is gone.
    pub async fn send(&mut self, m: Message) -> bool {
        if self.ended.is_some() {
            return false;
        }
        matches!(
            tokio::time::timeout(REPLY_TIMEOUT, self.ws.send(m)).await,
            Ok(Ok(()))
        )
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: String) -> bool {
        self.send(Message::text(text)).await
    }

    fn record(&mut self, m: Option<Result<Message, tungstenite::Error>>) {
        match m {
            Some(Ok(Message::Text(t))) => self.received.push(t.as_str().to_owned()),
            Some(Ok(Message::Binary(_))) => self.binary = self.binary.saturating_add(1),
            Some(Ok(Message::Close(frame))) => {
                self.ended =
                    Some(frame.map_or(Ended::Dropped, |f| Ended::Close(u16::from(f.code))));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => self.ended = Some(Ended::Dropped),
        }
    }

    /// Reads what the server sends until it closes or `quiet` passes with nothing new;
    /// returns whether the connection is still open.
    pub async fn settle(&mut self, quiet: Duration) -> bool {
        while self.ended.is_none() {
            match tokio::time::timeout(quiet, self.ws.next()).await {
                Ok(m) => self.record(m),
                Err(_) => break,
            }
        }
        self.ended.is_none()
    }

    /// Reads until the server closes or `limit` passes; returns how it ended, if it did.
    pub async fn wait_end(&mut self, limit: Duration) -> Option<Ended> {
        let deadline = deadline_after(limit);
        while self.ended.is_none() {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(m) => self.record(m),
                Err(_) => break,
            }
        }
        self.ended.clone()
    }

    /// Reads until `n` text messages have arrived in all, the server closes, or `limit` passes.
    pub async fn wait_messages(&mut self, n: usize, limit: Duration) {
        let deadline = deadline_after(limit);
        while self.ended.is_none() && self.received.len() < n {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(m) => self.record(m),
                Err(_) => break,
            }
        }
    }

    /// How the connection ended, if it has.
    pub fn ended(&self) -> Option<&Ended> {
        self.ended.as_ref()
    }

    /// Every text message received so far.
    pub fn received(&self) -> &[String] {
        &self.received
    }

    /// Whether anything at all (text or binary) was received.
    pub fn received_anything(&self) -> bool {
        !self.received.is_empty() || self.binary > 0
    }

    /// The payloads of outbound `media` messages received so far.
    pub fn echoed_payloads(&self) -> Vec<String> {
        media_payloads(&self.received)
    }

    /// Closes the connection with a close frame (1000), as Twilio does at the end of a call.
    pub async fn close(mut self) {
        if self.ended.is_none() {
            let _ = tokio::time::timeout(REPLY_TIMEOUT, self.ws.close(None)).await;
        }
    }
}

/// `limit` from now (or as far as the clock goes).
fn deadline_after(limit: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(limit).unwrap_or(now)
}

fn media_payloads(received: &[String]) -> Vec<String> {
    received
        .iter()
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .filter(|v| v.get("event").and_then(|e| e.as_str()) == Some("media"))
        .filter_map(|v| v.pointer("/media/payload")?.as_str().map(str::to_owned))
        .collect()
}

/// What an upgrade attempt got: an open connection, or the HTTP status of the refusal.
#[derive(Debug)]
pub enum Upgrade {
    /// `101`: the WebSocket is open.
    Open(Box<Connection>),
    /// Refused with this status.
    Refused(u16),
}

impl Twilio {
    /// Opens a WebSocket to `url` (query kept as given), signed as `signing` says, and sends
    /// nothing yet.
    pub async fn open(&self, url: &str, signing: Signing) -> Result<Upgrade, SimError> {
        Ok(match self.handshake(url, signing).await? {
            Err(status) => Upgrade::Refused(status),
            Ok(ws) => Upgrade::Open(Box::new(Connection {
                ws,
                received: Vec::new(),
                binary: 0,
                ended: None,
            })),
        })
    }

    /// The WebSocket handshake to `url`, signed as `signing` says: the open stream, or the
    /// status of the refusal.
    pub(crate) async fn handshake(
        &self,
        url: &str,
        signing: Signing,
    ) -> Result<Result<tokio_tungstenite::WebSocketStream<TcpStream>, u16>, SimError> {
        let mut request = url
            .into_client_request()
            .map_err(|_| SimError::Url("stream url"))?;
        if let Some(sig) = self.signature_for(signing, url, &[])? {
            let value = sig.parse().map_err(|_| SimError::Url("signature header"))?;
            request.headers_mut().insert(signature::HEADER, value);
        }
        let tcp = TcpStream::connect(self.connect_to).await?;
        let _ = tcp.set_nodelay(true);
        let config = tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(crate::limits::WS_READ_BUFFER_BYTES)
            .write_buffer_size(crate::limits::WS_WRITE_BUFFER_BYTES)
            .max_message_size(Some(1 << 20));
        let handshake = tokio_tungstenite::client_async_with_config(request, tcp, Some(config));
        match tokio::time::timeout(REPLY_TIMEOUT, handshake).await {
            Err(_) => Err(SimError::Timeout),
            Ok(Err(tungstenite::Error::Http(resp))) => Ok(Err(resp.status().as_u16())),
            Ok(Err(e)) => Err(SimError::Http(e.to_string())),
            Ok(Ok((ws, _))) => Ok(Ok(ws)),
        }
    }
}

/// Sends raw bytes to `addr` and reads the answer until the server closes, the head of a
/// `101` has arrived, or [`REPLY_TIMEOUT`] passes: the status (0 if none) and the text.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Result<(u16, String), SimError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(request).await?;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = tcp.read(&mut chunk).await.unwrap_or(0);
            let Some(got) = chunk.get(..n).filter(|g| !g.is_empty()) else {
                break;
            };
            buf.extend_from_slice(got);
            let text = String::from_utf8_lossy(&buf);
            if text.contains("\r\n\r\n") {
                let head = text.to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let body_at = text.find("\r\n\r\n").map_or(0, |i| i.saturating_add(4));
                if head.starts_with("http/1.1 101") || buf.len() >= body_at.saturating_add(length) {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(REPLY_TIMEOUT, read).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

/// A `media` message for frame `index` carrying `payload` (base64) instead of the tone.
pub fn media_message_with(stream: &StreamSid, index: usize, payload: &str) -> String {
    let counter = |n: usize| Some(Cow::Owned(n.to_string()));
    let frame = MediaFrame {
        sequence_number: counter(index.saturating_add(2)),
        stream_sid: *stream,
        media: MediaBody {
            track: Some(Cow::Borrowed("inbound")),
            chunk: counter(index.saturating_add(1)),
            timestamp: counter(index.saturating_mul(20)),
            payload: Cow::Borrowed(payload),
        },
    };
    serde_json::to_string(&Inbound::Media(frame)).unwrap_or_default()
}

/// A fresh random SID with `prefix` (`AC`, `CA`, `MZ`), as Twilio makes them.
pub fn random_sid(prefix: &str, rng: &dyn ring::rand::SecureRandom) -> Result<String, SimError> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)
        .map_err(|_| SimError::Setup("randomness"))?;
    let mut out = String::with_capacity(34);
    out.push_str(prefix);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}
