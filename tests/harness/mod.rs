//! A server on 127.0.0.1 port 0 with a recording media handler, and a simulated Twilio
//! pointed at it. Shared by the end-to-end test files.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamguard::kit::simulator::{
    Signing, StreamPlan, Twilio, parse_twiml, sid_from, strip_query,
};
use streamguard::secret::{AuthToken, KeySet, TokenKey};
use streamguard::server::{
    Config, HandlerFactory, MediaHandler, PublicUrl, Server, ServerHandle, StartedStream,
    StreamEnd, StreamHandle,
};
use streamguard::session::StreamInfo;
use streamguard::sid::{AccountSid, CallSid, StreamSid};
use streamguard::time::{Clock, ManualClock, SystemClock, UnixTime};
use streamguard::wire::frames::{DtmfFrame, MarkFrame, MediaFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const AUTH_TOKEN: &str = "0123456789abcdef0123456789abcdef";
pub const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub const KEY: [u8; 32] = [7; 32];

/// What the application saw, in order, across all streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Start(StreamInfo),
    Media(StreamSid, String),
    Dtmf(StreamSid),
    Mark(StreamSid),
    End(StreamSid, StreamEnd),
}

#[derive(Clone, Default)]
pub struct Recorder {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub echo: bool,
    /// Outbound bytes to queue per inbound media frame (backpressure tests).
    pub flood: usize,
    /// Streams whose handler was given the call's verified webhook.
    pub webhooks: Arc<Mutex<usize>>,
}

impl Recorder {
    pub fn events(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn media_of(&self, stream: &StreamSid) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Seen::Media(s, p) if s == *stream => Some(p),
                _ => None,
            })
            .collect()
    }

    pub fn ends(&self) -> Vec<(StreamSid, StreamEnd)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Seen::End(s, end) => Some((s, end)),
                _ => None,
            })
            .collect()
    }

    /// Waits (bounded) until `n` streams have ended.
    pub async fn wait_ends(&self, n: usize) -> Vec<(StreamSid, StreamEnd)> {
        for _ in 0..500 {
            let ends = self.ends();
            if ends.len() >= n {
                return ends;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.ends()
    }
}

struct Recording {
    rec: Recorder,
    stream: StreamSid,
}

impl MediaHandler for Recording {
    fn on_start(&mut self, started: &StartedStream, _out: &StreamHandle) {
        self.rec
            .seen
            .lock()
            .unwrap()
            .push(Seen::Start(started.info.clone()));
        *self.rec.webhooks.lock().unwrap() += usize::from(started.webhook.is_some());
    }
    fn on_media(&mut self, frame: &MediaFrame<'_>, out: &StreamHandle) {
        self.rec
            .seen
            .lock()
            .unwrap()
            .push(Seen::Media(frame.stream_sid, frame.payload().to_owned()));
        if self.rec.echo {
            let _ = out.media_base64(frame.payload());
        }
        let mut left = self.rec.flood;
        while left > 0 {
            let chunk = left.min(60_000);
            if out.media_base64(&"A".repeat(chunk)).is_err() {
                break;
            }
            left -= chunk;
        }
    }
    fn on_dtmf(&mut self, frame: &DtmfFrame, _out: &StreamHandle) {
        self.rec
            .seen
            .lock()
            .unwrap()
            .push(Seen::Dtmf(frame.stream_sid));
    }
    fn on_mark(&mut self, frame: &MarkFrame, _out: &StreamHandle) {
        self.rec
            .seen
            .lock()
            .unwrap()
            .push(Seen::Mark(frame.stream_sid));
    }
    fn on_end(&mut self, end: StreamEnd) {
        self.rec
            .seen
            .lock()
            .unwrap()
            .push(Seen::End(self.stream, end));
    }
}

impl HandlerFactory for Recorder {
    fn create(&self, started: &StartedStream) -> Box<dyn MediaHandler> {
        Box::new(Recording {
            rec: self.clone(),
            stream: started.info.stream_sid,
        })
    }
}

pub struct Harness {
    pub server: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub twilio: Twilio,
    pub recorder: Recorder,
    pub webhook_url: String,
    pub stream_url: String,
    pub account: AccountSid,
    pub clock: Option<Arc<ManualClock>>,
}

pub struct Options {
    pub echo: bool,
    pub manual_clock: bool,
    pub flood: usize,
    pub configure: fn(&mut Config),
    /// The replay store (the in-memory one when `None`).
    pub store: Option<streamguard::server::ReplayStoreConfig>,
    /// The public URL (`http://{the listener's address}` when `None`): instances behind one
    /// load balancer share one.
    pub public_url: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            echo: false,
            manual_clock: false,
            flood: 0,
            configure: |_| {},
            store: None,
            public_url: None,
        }
    }
}

pub fn account() -> AccountSid {
    AccountSid::parse(ACCOUNT).unwrap()
}

pub fn call(n: u64) -> CallSid {
    CallSid::parse(&sid_from("CA", 42, n)).unwrap()
}

pub fn stream_sid(n: u64) -> StreamSid {
    StreamSid::parse(&sid_from("MZ", 42, n)).unwrap()
}

impl Harness {
    pub async fn start(opts: Options) -> Self {
        Self::start_inner(opts, None).await
    }

    /// The same server with `handlers` instead of the recording handler (`recorder` then
    /// sees nothing): for tests whose own handler checks what arrives (tests/soak.rs).
    pub async fn start_with_handlers(opts: Options, handlers: Arc<dyn HandlerFactory>) -> Self {
        Self::start_inner(opts, Some(handlers)).await
    }

    async fn start_inner(opts: Options, handlers: Option<Arc<dyn HandlerFactory>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let public_url = match opts.public_url {
            Some(u) => PublicUrl::parse(u).unwrap(),
            None => PublicUrl::parse(&format!("http://{addr}")).unwrap(),
        };
        let mut config = Config::new(
            public_url,
            AuthToken::new(AUTH_TOKEN).unwrap(),
            account(),
            KeySet::single(TokenKey::from_bytes(&KEY).unwrap()),
        );
        (opts.configure)(&mut config);
        if let Some(store) = opts.store {
            config.replay_store = store;
        }
        let webhook_url = config.webhook_url();
        let stream_url = config.stream_url();
        let recorder = Recorder {
            echo: opts.echo,
            flood: opts.flood,
            ..Recorder::default()
        };
        let (clock, manual): (Arc<dyn Clock>, _) = if opts.manual_clock {
            let c = Arc::new(ManualClock::new(UnixTime::from_millis(1_800_000_000_000)));
            (c.clone(), Some(c))
        } else {
            (Arc::new(SystemClock), None)
        };
        let handlers = handlers.unwrap_or_else(|| Arc::new(recorder.clone()));
        let server = Server::builder(config)
            .shared_handlers(handlers)
            .shared_clock(clock)
            .build()
            .unwrap()
            .serve(listener)
            .await
            .unwrap();
        Self {
            server: Some(server),
            addr,
            twilio: Twilio {
                connect_to: addr,
                auth_token: AuthToken::new(AUTH_TOKEN).unwrap(),
                account_sid: account(),
            },
            recorder,
            webhook_url,
            stream_url,
            account: account(),
            clock: manual,
        }
    }

    pub fn server(&self) -> &ServerHandle {
        self.server.as_ref().unwrap()
    }

    /// Twilio's voice webhook for call `n`, signed as `signing` says.
    pub async fn webhook(
        &self,
        n: u64,
        signing: Signing,
    ) -> streamguard::kit::simulator::WebhookReply {
        self.twilio
            .post_webhook(
                &self.webhook_url,
                &self.twilio.voice_params(&call(n)),
                signing,
            )
            .await
            .unwrap()
    }

    /// The signed webhook for call `n`; returns the token from the TwiML.
    pub async fn token_for(&self, n: u64) -> String {
        let reply = self.webhook(n, Signing::Valid).await;
        assert_eq!(reply.status, 200);
        parse_twiml(&reply.body)
            .unwrap()
            .parameter("token")
            .unwrap()
            .to_owned()
    }

    /// A full call plan for call `n`, stream `n`, carrying `params` in customParameters.
    pub fn plan(&self, n: u64, params: Vec<(String, String)>, frames: usize) -> StreamPlan {
        StreamPlan::call(
            strip_query(&self.stream_url),
            self.account,
            call(n),
            stream_sid(n),
            params,
            frames,
        )
    }

    pub fn token_param(token: &str) -> Vec<(String, String)> {
        vec![("token".to_owned(), token.to_owned())]
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

pub type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

impl Harness {
    /// Opens a signed stream and sends nothing.
    pub async fn connect_stream(&self) -> Client {
        let url = strip_query(&self.stream_url).to_owned();
        let mut req =
            tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
        let auth = AuthToken::new(AUTH_TOKEN).unwrap();
        let sig = streamguard::signature::compute_signature::<&str, &str>(&auth, &url, &[]);
        req.headers_mut()
            .insert("X-Twilio-Signature", sig.parse().unwrap());
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        tokio_tungstenite::client_async(req, tcp).await.unwrap().0
    }

    /// Sends `start` for call `n` with `token`, then `frames` media frames.
    pub async fn send_start(&self, ws: &mut Client, n: u64, token: &str, frames: usize) {
        use futures_util::SinkExt;
        let params = Self::token_param(token);
        let start = streamguard::kit::simulator::start_message(
            &self.account,
            &call(n),
            &stream_sid(n),
            &params,
        );
        ws.send(tungstenite::Message::text(start)).await.unwrap();
        for i in 0..frames {
            let m = streamguard::kit::simulator::media_message(&stream_sid(n), i);
            ws.send(tungstenite::Message::text(m)).await.unwrap();
        }
    }

    /// Opens a signed stream for call `n` with `token`, sends `start` and `frames` media
    /// frames, and hands back the open socket without reading from it.
    pub async fn open_stream(&self, n: u64, token: &str, frames: usize) -> Client {
        let mut ws = self.connect_stream().await;
        self.send_start(&mut ws, n, token, frames).await;
        ws
    }

    /// Waits (at most 5 s) until `f` holds for the server's metrics, and fails the test if
    /// it never does; returns the metrics that satisfied it.
    pub async fn wait_metrics(
        &self,
        f: impl Fn(&streamguard::server::Snapshot) -> bool,
    ) -> streamguard::server::Snapshot {
        for _ in 0..500 {
            let m = self.server().metrics();
            if f(&m) {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "metrics never reached the expected state: {:?}",
            self.server().metrics()
        );
    }

    /// Plays a full signed call `n` with `token` in customParameters and `frames` frames.
    pub async fn call_with(
        &self,
        n: u64,
        token: &str,
        frames: usize,
    ) -> streamguard::kit::simulator::StreamOutcome {
        self.twilio
            .stream(&self.plan(n, Self::token_param(token), frames))
            .await
            .unwrap()
    }
}

/// Reads until the server's close frame; its code.
pub async fn close_code_of(ws: &mut Client) -> Option<u16> {
    read_close(ws, false).await
}

/// [`close_code_of`] for a refused connection: the peer must receive nothing before the
/// close (no text or binary message: nothing leaked); panics if it does.
pub async fn refusal_close_code(ws: &mut Client) -> Option<u16> {
    read_close(ws, true).await
}

async fn read_close(ws: &mut Client, refused: bool) -> Option<u16> {
    use futures_util::StreamExt;
    let read = async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(tungstenite::Message::Close(f)) => {
                    // Answer the close, as a well-behaved peer does.
                    let _ = futures_util::SinkExt::close(ws).await;
                    return f.map(|f| u16::from(f.code));
                }
                Ok(m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_))) => {
                    assert!(!refused, "a refused peer received a message: {m:?}");
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
}

/// Sends raw bytes and returns the status code of the response and the response head and
/// body as text. Stops reading at the end of the body (by `Content-Length`), after a `101`
/// head, or when the server closes.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = tcp.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_ascii_lowercase();
                if head.starts_with("http/1.1 101") {
                    break;
                }
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Raises the soft descriptor limit to the hard one and checks that `needed` fit.
pub fn raise_fd_limit(needed: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        now >= needed,
        "this test needs {needed} file descriptors but RLIMIT_NOFILE is {now}: run `ulimit -n 20000` first"
    );
    now
}
