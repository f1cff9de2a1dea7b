//! Hostile load and faults over real loopback sockets (issue 14): a pre-auth flood, abrupt
//! and half-open disconnects at every phase, a peer that stops reading, the replay store
//! going away and coming back, garbage of every kind, and many legitimate calls streaming
//! while other connections misbehave. Every case ends by itself.
//!
//! Two sizes. The SHORT mode (the default, run by `cargo test`) is small enough for a debug
//! build on two cores. The FULL mode (`STREAMGUARD_SOAK=full`; `scripts/soak.sh` runs it in
//! release) streams 2,000 concurrent calls for 60 s and repeats the fault cycles more often.
//! The test raises its own soft `RLIMIT_NOFILE` to the hard limit and fails with a message if
//! the hard limit is too low for the mode (then `ulimit -n 20000`).
//!
//! What every case asserts, without any timing assert (the start deadline is configured, never
//! measured): the exact HTTP status or WebSocket close code the server documents for each
//! rejection (tests/server_stream.rs, tests/server_webhook.rs: 400/401/403/431/503 before
//! the upgrade, 1008 policy, 1009 too big after it), no secret in anything a rejected peer
//! got ([`common::assert_no_leak`]), and the server's pending, active and open connection
//! gauges back to zero at the end. Each case prints one `soak <case>:` line with its figures.
//!
//! The cases run one at a time (a lock, then a runtime of their own), so the process-wide figures (open descriptors, RSS,
//! live tasks) of one are not disturbed by another.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure
#![forbid(unsafe_code)]

mod common;
mod harness;
mod redis_support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::assert_no_leak;
use futures_util::{SinkExt, StreamExt};
use harness::{AUTH_TOKEN, Client, Harness, Options, call, raise_fd_limit, raw_http, stream_sid};
use redis_support::RedisServer;
use streamguard::kit::simulator::{
    Signing, connected_message, media_message_with, parse_twiml, start_message, stop_message,
    strip_query,
};
use streamguard::server::{
    HandlerFactory, MediaHandler, ReplayStoreConfig, Snapshot, StartedStream, StreamEnd,
    StreamHandle,
};
use streamguard::sid::StreamSid;
use streamguard::store::RedisSettings;
use streamguard::wire::frames::MediaFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tungstenite::Message;
use tungstenite::protocol::Role;

const POLICY: u16 = 1008;
const TOO_BIG: u16 = 1009;

// ---------------------------------------------------------------------------------------------
// Mode, serialisation, process figures
// ---------------------------------------------------------------------------------------------

fn full_mode() -> bool {
    std::env::var("STREAMGUARD_SOAK").is_ok_and(|v| v == "full")
}

/// `short` in the default mode, `full` with `STREAMGUARD_SOAK=full`.
fn pick<T>(short: T, full: T) -> T {
    if full_mode() { full } else { short }
}

/// One case at a time: the figures below are process-wide.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs one case alone, on a runtime of its own (two workers) built only once the case holds
/// [`SERIAL`]: a case waiting for its turn has no runtime yet, so it adds no descriptor or
/// thread to the figures of the case that runs.
fn serially(case: impl std::future::Future<Output = ()>) {
    let _alone = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(case);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Descriptors, RSS and live tasks at one moment.
#[derive(Clone, Copy, Debug)]
struct Figures {
    fds: usize,
    rss_kib: u64,
    tasks: usize,
}

impl Figures {
    fn now() -> Self {
        Self {
            fds: open_fds(),
            rss_kib: rss_kib(),
            tasks: alive_tasks(),
        }
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fds {} rss {} KiB tasks {}",
            self.fds, self.rss_kib, self.tasks
        )
    }
}

/// Waits (bounded: 10 s) until `f` holds; returns whether it did.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Waits until nothing is pending, active or open, and fails if that never happens.
async fn settled(h: &Harness) -> Snapshot {
    let quiet = |m: &Snapshot| {
        m.gauges.connections_pending == 0
            && m.gauges.streams_active == 0
            && m.gauges.connections_open == 0
    };
    let ok = eventually(|| quiet(&h.server().metrics())).await;
    let m = h.server().metrics();
    assert!(
        ok,
        "pending, active and open connections never returned to zero: {:?}",
        m.gauges
    );
    m
}

/// Waits until the runtime has no more live tasks than `baseline`; returns the count.
async fn tasks_back_to(baseline: usize) -> usize {
    eventually(|| alive_tasks() <= baseline).await;
    alive_tasks()
}

// ---------------------------------------------------------------------------------------------
// The checking handler: every media frame, in order, exactly once, per stream
// ---------------------------------------------------------------------------------------------

/// What one stream's handler saw.
#[derive(Clone, Debug, Default)]
struct StreamTally {
    frames: u64,
    /// Frames whose `sequenceNumber` was not the next expected one (lost, repeated,
    /// reordered) or that named another stream.
    out_of_order: u64,
    first_bad: Option<(u64, Option<String>)>,
    echo_refused: u64,
    end: Option<StreamEnd>,
}

#[derive(Default)]
struct Tally {
    echo: bool,
    started: AtomicU64,
    frames: AtomicU64,
    ended: Mutex<HashMap<StreamSid, StreamTally>>,
}

impl Tally {
    fn new(echo: bool) -> Arc<Self> {
        Arc::new(Self {
            echo,
            ..Self::default()
        })
    }

    fn of(&self, sid: &StreamSid) -> Option<StreamTally> {
        self.ended.lock().unwrap().get(sid).cloned()
    }

    /// Waits (bounded) for the end of `sid`.
    async fn wait_end(&self, sid: &StreamSid) -> StreamTally {
        eventually(|| self.of(sid).is_some()).await;
        self.of(sid)
            .unwrap_or_else(|| panic!("stream {sid} never ended at its handler"))
    }
}

struct Checking {
    tally: Arc<Tally>,
    sid: StreamSid,
    /// `media_message_with` numbers frame `i` as `i + 2` (after `connected` and `start`).
    next_seq: u64,
    seen: StreamTally,
}

impl MediaHandler for Checking {
    fn on_start(&mut self, _started: &StartedStream, _out: &StreamHandle) {
        self.tally.started.fetch_add(1, Ordering::Relaxed);
    }

    fn on_media(&mut self, frame: &MediaFrame<'_>, out: &StreamHandle) {
        self.tally.frames.fetch_add(1, Ordering::Relaxed);
        let seq = frame
            .sequence_number
            .as_deref()
            .and_then(|s| s.parse::<u64>().ok());
        if seq != Some(self.next_seq) || frame.stream_sid != self.sid {
            self.seen.out_of_order += 1;
            if self.seen.first_bad.is_none() {
                self.seen.first_bad = Some((
                    self.next_seq,
                    frame.sequence_number.as_deref().map(str::to_owned),
                ));
            }
        }
        self.next_seq = seq.map_or(self.next_seq + 1, |s| s + 1);
        self.seen.frames += 1;
        if self.tally.echo && out.media_base64(frame.payload()).is_err() {
            self.seen.echo_refused += 1;
        }
    }

    fn on_end(&mut self, end: StreamEnd) {
        self.seen.end = Some(end);
        self.tally
            .ended
            .lock()
            .unwrap()
            .insert(self.sid, self.seen.clone());
    }
}

struct Factory(Arc<Tally>);

impl HandlerFactory for Factory {
    fn create(&self, started: &StartedStream) -> Box<dyn MediaHandler> {
        Box::new(Checking {
            tally: Arc::clone(&self.0),
            sid: started.info.stream_sid,
            next_seq: 2,
            seen: StreamTally::default(),
        })
    }
}

async fn start_server(opts: Options, tally: &Arc<Tally>) -> Arc<Harness> {
    Arc::new(Harness::start_with_handlers(opts, Arc::new(Factory(Arc::clone(tally)))).await)
}

async fn stop_server(h: Arc<Harness>) {
    match Arc::try_unwrap(h) {
        Ok(h) => h.shutdown().await,
        Err(_) => panic!("the harness is still shared at the end of the case"),
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// Legitimate calls come from 127.0.0.1 (or, under the flood, each from its own address);
/// misbehaving ones from other loopback addresses (all of 127/8 is local), so the
/// per-address pending cap applies to them as to strangers.
const LEGIT: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The `k`-th source address of `block`, `127.{block}.x.y`.
fn loopback(block: u8, k: usize) -> Ipv4Addr {
    let k = u32::try_from(k % 60_000).unwrap();
    Ipv4Addr::new(
        127,
        block,
        u8::try_from(1 + k / 250).unwrap(),
        u8::try_from(1 + k % 250).unwrap(),
    )
}

async fn tcp_from(addr: SocketAddr, src: Ipv4Addr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    s.connect(addr).await
}

/// The signed upgrade request head for the stream route.
fn upgrade_head(h: &Harness) -> Vec<u8> {
    let url = strip_query(&h.stream_url);
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap();
    let auth = streamguard::secret::AuthToken::new(AUTH_TOKEN).unwrap();
    let sig = streamguard::signature::compute_signature::<&str, &str>(&auth, url, &[]);
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Twilio-Signature: {sig}\r\n\r\n",
        h.addr
    )
    .into_bytes()
}

/// Reads a response head (to its blank line, never past it: the server sends nothing more
/// until it closes) and returns it, or what came before the connection ended.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&head).into_owned()
}

/// A raw signed upgrade from `src`: the socket once `101` came, or the head it got instead.
async fn raw_upgrade(h: &Harness, src: Ipv4Addr) -> Result<TcpStream, String> {
    let mut tcp = tcp_from(h.addr, src).await.map_err(|e| e.to_string())?;
    tcp.write_all(&upgrade_head(h))
        .await
        .map_err(|e| e.to_string())?;
    let head = read_head(&mut tcp).await;
    if head.starts_with("HTTP/1.1 101") {
        Ok(tcp)
    } else {
        Err(head)
    }
}

/// A client WebSocket frame (masked, as RFC 6455 §5.3 requires), with `declared` as its
/// length (more than `payload` for a frame cut short).
fn client_frame(opcode: u8, payload: &[u8], declared: usize) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    if declared < 126 {
        f.push(0x80 | u8::try_from(declared).unwrap());
    } else if declared <= usize::from(u16::MAX) {
        f.push(0x80 | 126);
        f.extend(u16::try_from(declared).unwrap().to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend(u64::try_from(declared).unwrap().to_be_bytes());
    }
    let mask = [0x5a, 0x13, 0xc7, 0x2e];
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn text_frame(payload: &[u8]) -> Vec<u8> {
    client_frame(0x1, payload, payload.len())
}

/// A signed WebSocket client from `src`.
async fn ws_from(h: &Harness, src: Ipv4Addr) -> Client {
    let url = strip_query(&h.stream_url).to_owned();
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    let auth = streamguard::secret::AuthToken::new(AUTH_TOKEN).unwrap();
    let sig = streamguard::signature::compute_signature::<&str, &str>(&auth, &url, &[]);
    req.headers_mut()
        .insert("X-Twilio-Signature", sig.parse().unwrap());
    let tcp = tcp_from(h.addr, src).await.unwrap();
    tokio_tungstenite::client_async(req, tcp).await.unwrap().0
}

/// The token the signed webhook of call `n` returns.
async fn token(h: &Harness, n: u64) -> String {
    let reply = h.webhook(n, Signing::Valid).await;
    assert_eq!(reply.status, 200, "webhook of call {n}");
    parse_twiml(&reply.body)
        .unwrap()
        .parameter("token")
        .unwrap()
        .to_owned()
}

fn start_text(h: &Harness, n: u64, token: &str) -> String {
    start_message(
        &h.account,
        &call(n),
        &stream_sid(n),
        &Harness::token_param(token),
    )
}

/// Frame `i`'s payload: 160 bytes (20 ms of mu-law) that name `i`, so an echo is matched to
/// its frame.
fn payload(i: usize) -> String {
    let mut b = [0x7fu8; 160];
    b[..8].copy_from_slice(&u64::try_from(i).unwrap().to_be_bytes());
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn media(n: u64, i: usize) -> Message {
    Message::text(media_message_with(&stream_sid(n), i, &payload(i)))
}

/// The `payload` of an outbound `media` message, if it is one.
fn echoed_payload(text: &str) -> Option<&str> {
    if !text.contains("\"event\":\"media\"") {
        return None;
    }
    let at = text.find("\"payload\":\"")? + "\"payload\":\"".len();
    let len = text[at..].find('"')?;
    Some(&text[at..at + len])
}

/// How a legitimate call went, as its client saw it.
#[derive(Debug, Default)]
struct CallOutcome {
    n: u64,
    sent: usize,
    echoed: usize,
    /// Echoes that were not the next expected frame's payload.
    echo_mismatch: usize,
    /// Anything else the client received (there should be nothing).
    other: usize,
    close: Option<u16>,
}

/// A whole legitimate call `n` from `src`: webhook, upgrade, `connected`, `start`, `frames`
/// media frames (one per `pace` when given), `stop`; reads every echo and the close.
async fn legit_call(
    h: Arc<Harness>,
    n: u64,
    frames: usize,
    pace: Option<Duration>,
    src: Ipv4Addr,
    gate: Option<Arc<tokio::sync::Semaphore>>,
) -> CallOutcome {
    // Setting up (webhook, upgrade, `start`) under `gate`, so that thousands of calls do
    // not overflow the listener's backlog at once.
    let permit = match &gate {
        Some(g) => Some(Arc::clone(g).acquire_owned().await.unwrap()),
        None => None,
    };
    let tok = token(&h, n).await;
    let ws = ws_from(&h, src).await;
    let (mut sink, mut read) = ws.split();
    let reader = tokio::spawn(async move {
        let mut out = CallOutcome {
            n,
            ..CallOutcome::default()
        };
        while let Some(m) = read.next().await {
            match m {
                Ok(Message::Text(t)) => match echoed_payload(t.as_str()) {
                    Some(p) => {
                        if p != payload(out.echoed) {
                            out.echo_mismatch += 1;
                        }
                        out.echoed += 1;
                    }
                    None => out.other += 1,
                },
                Ok(Message::Close(f)) => {
                    out.close = f.map(|f| u16::from(f.code));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        out
    });
    // A failed send (the server closed first) shows in the outcome: `sent` stays short and
    // the close code says why.
    let started = sink.feed(Message::text(connected_message())).await.is_ok()
        && sink
            .send(Message::text(start_text(&h, n, &tok)))
            .await
            .is_ok();
    drop(permit);
    let frames = if started { frames } else { 0 };
    let mut ticks = pace.map(|p| {
        let mut t = tokio::time::interval(p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut sent = 0;
    for i in 0..frames {
        if let Some(t) = ticks.as_mut() {
            t.tick().await;
        }
        if sink.send(media(n, i)).await.is_err() {
            break;
        }
        sent += 1;
    }
    let _ = sink
        .send(Message::text(stop_message(
            &h.account,
            &call(n),
            &stream_sid(n),
            frames + 2,
        )))
        .await;
    let mut out = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .unwrap_or_else(|_| panic!("call {n}: the server never closed after stop"))
        .unwrap();
    let _ = sink.close().await;
    out.sent = sent;
    out
}

/// Asserts that call `o` delivered every frame exactly once, in order, at the handler, and got
/// every echo back (when `echo`), then `stop` closed it with 1000.
fn assert_delivered(o: &CallOutcome, frames: usize, echo: bool, tally: &Tally) {
    let n = o.n;
    assert_eq!(
        (o.sent, o.close),
        (frames, Some(1000)),
        "call {n}: every frame sent, then closed after stop"
    );
    let seen = tally
        .of(&stream_sid(n))
        .unwrap_or_else(|| panic!("call {n}: its handler never ended"));
    assert_eq!(seen.end, Some(StreamEnd::Stopped), "call {n}");
    assert_eq!(
        seen.frames, frames as u64,
        "call {n}: frames at the handler"
    );
    assert_eq!(
        (seen.out_of_order, &seen.first_bad),
        (0, &None),
        "call {n}: every frame once, in order"
    );
    assert_eq!(seen.echo_refused, 0, "call {n}: no echo refused");
    if echo {
        assert_eq!((o.echoed, o.echo_mismatch), (frames, 0), "call {n}: echoes");
    }
    assert_eq!(o.other, 0, "call {n}: nothing but echoes");
}

/// Every token and secret a rejected peer must never see.
fn secrets(tokens: &[String]) -> Vec<String> {
    let mut s = vec![
        AUTH_TOKEN.to_owned(),
        harness::KEY.iter().map(|b| format!("{b:02x}")).collect(),
        base64::engine::general_purpose::STANDARD.encode(harness::KEY),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(harness::KEY),
    ];
    s.extend(tokens.iter().cloned());
    s
}

fn no_leak(text: &str, secrets: &[String]) {
    let s: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_leak(text, &s);
}

/// The close code of a raw server close frame at the start of `bytes` (server frames are
/// unmasked), or `None` if `bytes` is not one.
fn raw_close_code(bytes: &[u8]) -> Option<u16> {
    (bytes.len() >= 4 && bytes[0] == 0x88).then(|| u16::from_be_bytes([bytes[2], bytes[3]]))
}

/// Whatever has already arrived on `tcp`, without waiting.
fn drain(tcp: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = tcp.try_read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Pre-auth flood
// ---------------------------------------------------------------------------------------------

/// The connections a flood holds.
#[derive(Default)]
struct Flood {
    upgraded: Vec<TcpStream>,
    /// Upgrades answered with something other than `101` (refused at the connection cap).
    not_upgraded: Vec<String>,
    idle: Vec<TcpStream>,
    half: Vec<TcpStream>,
    opened: usize,
}

/// Half a request head: never finished.
const HALF_HEAD: &[u8] = b"GET /voice/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webs";

impl Flood {
    /// One upgrade that never sends `start`, one idle socket and one half-sent head, the
    /// `k`-th of the flood (five upgrades per address: beyond the per-address cap of four).
    async fn one(&mut self, h: &Harness, k: usize) {
        match raw_upgrade(h, loopback(1, k / 5)).await {
            Ok(tcp) => self.upgraded.push(tcp),
            Err(head) => self.not_upgraded.push(head),
        }
        if let Ok(tcp) = tcp_from(h.addr, loopback(2, k)).await {
            self.idle.push(tcp);
        }
        if let Ok(mut tcp) = tcp_from(h.addr, loopback(3, k)).await {
            let _ = tcp.write_all(HALF_HEAD).await;
            self.half.push(tcp);
        }
        self.opened += 1;
    }
}

/// Hundreds of upgraded connections that never send `start`, idle sockets and half-sent
/// request heads, past `--max-pending` (128), the per-address cap (4) and
/// `--max-connections` (512): the oldest are evicted (1008 for an upgraded one), and
/// legitimate calls, each from its own address, keep authenticating within the start deadline
/// (3 s, configured, not measured) and deliver every frame. Then, with every stream slot
/// taken, one more upgrade is refused with 503 and an empty body. Afterwards nothing is
/// pending, active or open, and no flood connection received anything but `101` and a 1008
/// close frame (no secret).
#[test]
fn pre_auth_flood_does_not_starve_legitimate_calls() {
    serially(pre_auth_flood_does_not_starve_legitimate_calls_case());
}

async fn pre_auth_flood_does_not_starve_legitimate_calls_case() {
    let wave = pick(240, 1200);
    let trickle = pick(120, 800);
    let legit = pick(24u64, 200);
    let frames = 10;
    raise_fd_limit(u64::try_from(6 * (wave + trickle)).unwrap() + 1024);
    let before = Figures::now();
    let tally = Tally::new(true);
    let h = start_server(
        Options {
            configure: |c| {
                c.max_pending = 128;
                c.max_pending_per_ip = 4;
                c.max_connections = 512;
                c.max_streams = 16;
                c.start_timeout = Duration::from_secs(3);
            },
            ..Options::default()
        },
        &tally,
    )
    .await;
    let started = Instant::now();

    let mut flood = Flood::default();
    for k in 0..wave {
        flood.one(&h, k).await;
    }
    // Evicted upgrades wait CLOSE_TIMEOUT (2 s) for a close answer the flood never sends,
    // holding their connection slots; let those go before the legitimate calls start, so that
    // the calls meet the caps the flood keeps full, not a cap reached by lingering closes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let m = h.server().metrics();
    assert!(
        m.streams_rejected_for("pending_evicted") > 0,
        "the flood went past --max-pending: {:?}",
        m.streams_rejected
    );
    assert!(
        m.gauges.connections_evicted > 0,
        "the flood went past --max-connections: {:?}",
        m.gauges
    );

    // The legitimate calls, four at a time, while the flood goes on. Each comes from its own
    // address, as Twilio's calls come from many media servers: a full --max-pending closes
    // the oldest connection of the address holding the most pending ones
    // (src/server/capacity.rs), so a flood pays for itself and a client with one pending
    // connection is the last to go. (Four concurrent calls from one address would make that
    // address the biggest holder once the flood's own upgrades expire, and get it evicted:
    // the documented policy, not a starvation.)
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let h = Arc::clone(&h);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut more = Flood::default();
            for k in wave..wave + trickle {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                more.one(&h, k).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            more
        })
    };
    let outcomes: Vec<CallOutcome> = futures_util::stream::iter(0..legit)
        .map(|n| {
            legit_call(
                Arc::clone(&h),
                n,
                frames,
                None,
                loopback(9, usize::try_from(n).unwrap()),
                None,
            )
        })
        .buffer_unordered(4)
        .collect()
        .await;
    stop.store(true, Ordering::Relaxed);
    let mut more = flooder.await.unwrap();
    for o in &outcomes {
        assert_delivered(o, frames, true, &tally);
    }
    let during = h.server().metrics();

    // Beyond --max-streams: every slot taken by a live call, one more upgrade gets 503.
    let mut live = Vec::new();
    let mut tokens = Vec::new();
    for n in 0..16u64 {
        let n = 10_000 + n;
        let tok = token(&h, n).await;
        let mut ws = ws_from(&h, loopback(9, usize::try_from(n).unwrap())).await;
        ws.send(Message::text(start_text(&h, n, &tok)))
            .await
            .unwrap();
        let want = u64::try_from(outcomes.len()).unwrap() + n - 10_000 + 1;
        assert!(
            eventually(|| tally.started.load(Ordering::Relaxed) >= want).await,
            "live call {n} authenticated"
        );
        tokens.push(tok);
        live.push(ws);
    }
    let (status, resp) = raw_http(h.addr, &upgrade_head(&h)).await;
    assert_eq!(status, 503, "beyond --max-streams: {resp}");
    assert!(resp.ends_with("\r\n\r\n"), "empty body: {resp:?}");
    let secrets = secrets(&tokens);
    no_leak(&resp, &secrets);
    drop(live);

    // The flood: every upgrade got `101` and then a 1008 close (evicted, or its deadline), or
    // was refused outright; idle and half-sent sockets got nothing but their close.
    assert!(
        eventually(|| h.server().metrics().gauges.connections_pending == 0).await,
        "the pending flood ended (eviction or deadline)"
    );
    let mut closes = 0;
    for tcp in flood.upgraded.iter_mut().chain(more.upgraded.iter_mut()) {
        let mut got = drain(tcp);
        if got.len() < 4 {
            let mut buf = [0u8; 256];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await
            {
                got.extend_from_slice(&buf[..n]);
            }
        }
        no_leak(&String::from_utf8_lossy(&got), &secrets);
        assert_eq!(
            raw_close_code(&got),
            Some(POLICY),
            "a flood upgrade got a 1008 close and nothing else: {got:?}"
        );
        closes += 1;
    }
    for head in flood.not_upgraded.iter().chain(&more.not_upgraded) {
        no_leak(head, &secrets);
        assert!(!head.contains("101"), "{head}");
    }
    for tcp in flood
        .idle
        .iter()
        .chain(&flood.half)
        .chain(&more.idle)
        .chain(&more.half)
    {
        let got = String::from_utf8_lossy(&drain(tcp)).into_owned();
        no_leak(&got, &secrets);
        assert!(!got.contains("101"), "{got}");
    }
    let opened = flood.opened + more.opened;
    drop((flood, more));
    let end = settled(&h).await;
    let elapsed = started.elapsed();
    let after = Figures::now();
    stop_server(h).await;
    eprintln!(
        "soak pre_auth_flood_does_not_starve_legitimate_calls: mode {} | flood {opened} x (upgrade without start + idle socket + half head), {closes} upgrades closed 1008 | pending evicted {} (start_timeout {}), connections evicted {} refused {} | legit calls {} x {frames} frames: sent {} received {} lost 0, echoed {} | beyond max-streams: 503 | {:.1?} | before {before} after {after}",
        pick("short", "full"),
        end.streams_rejected_for("pending_evicted"),
        end.streams_rejected_for("start_timeout"),
        end.gauges.connections_evicted,
        end.gauges.connections_refused,
        outcomes.len(),
        outcomes.iter().map(|o| o.sent).sum::<usize>(),
        during.media_frames,
        outcomes.iter().map(|o| o.echoed).sum::<usize>(),
        elapsed,
    );
}

// ---------------------------------------------------------------------------------------------
// Garbage
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*): the same garbage on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

/// The reasons whose counters rose between two snapshots.
fn new_reasons(before: &Snapshot, after: &Snapshot) -> Vec<&'static str> {
    after
        .streams_rejected
        .iter()
        .filter(|(r, n)| before.streams_rejected.get(*r).copied().unwrap_or(0) < **n)
        .map(|(r, _)| *r)
        .collect()
}

/// Reads what the server sends until its close frame (answered) or the end: the close code
/// and every message before it.
async fn until_close(ws: &mut Client) -> (Option<u16>, Vec<String>) {
    let mut got = Vec::new();
    let read = async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(f)) => {
                    let _ = ws.close(None).await;
                    return f.map(|f| u16::from(f.code));
                }
                Ok(Message::Text(t)) => got.push(t.as_str().to_owned()),
                Ok(Message::Binary(b)) => got.push(format!("binary {b:?}")),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    let code = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()
        .flatten();
    (code, got)
}

/// A garbage case after the upgrade: what it is, a valid `start` to send first (or none),
/// the garbage, how it should end.
type WsCase = (String, Option<Vec<u8>>, Vec<u8>, Expect);

/// How a garbage case should end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Closed with this code, this reason counted, nothing else sent.
    Close(u16, &'static str),
    /// Accepted as documented: the field is an opaque bounded string handed to the
    /// application as it came (`sequenceNumber`, `tracks`, `mediaFormat`, `customParameters`
    /// other than `token`; none is logged). The stream authenticates, and the `stop` sent
    /// after it closes it with 1000.
    Accepted,
}

/// Control characters (NUL, SOH, US, DEL) as JSON escapes, put into one field at a time.
const CTRL: &str = "\u{0}\u{1}\u{1f}\u{7f}";

/// `start` for call `n` with `token`, as a JSON value to spoil.
fn start_value(h: &Harness, n: u64, token: &str) -> serde_json::Value {
    serde_json::from_str(&start_text(h, n, token)).unwrap()
}

/// Appends [`CTRL`] to the string at `pointer`.
fn with_ctrl(mut v: serde_json::Value, pointer: &str) -> Vec<u8> {
    let s = v.pointer_mut(pointer).unwrap();
    let spoiled = format!("{}{CTRL}", s.as_str().unwrap());
    *s = serde_json::Value::String(spoiled);
    v.to_string().into_bytes()
}

/// Upgrades from `src`, writes `prelude` (a valid `start`, for the cases after
/// authentication) and `garbage`, and reads to the close.
async fn ws_garbage(
    h: &Harness,
    src: Ipv4Addr,
    prelude: Option<Vec<u8>>,
    garbage: &[u8],
) -> (Option<u16>, Vec<String>) {
    let mut tcp = raw_upgrade(h, src).await.unwrap();
    if let Some(p) = prelude {
        tcp.write_all(&p).await.unwrap();
    }
    let _ = tcp.write_all(garbage).await;
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    until_close(&mut ws).await
}

/// Random bytes instead of HTTP, oversized and control-character heads, spoiled webhooks;
/// after the upgrade: invalid UTF-8, frame-level garbage, deeply nested and huge JSON,
/// thousands of `customParameters`, control characters in every field of `start`, before and
/// after authentication. Each gets exactly the status or close code the server documents
/// (400/401/403/431 before the upgrade; 1008, or 1009 for a message over the size limit,
/// after it) with its precise reason counted, and nothing else: no message, no secret. Then
/// a legitimate call still authenticates and streams, and nothing is left pending or open.
#[test]
fn garbage_gets_its_documented_rejection_and_serving_goes_on() {
    serially(garbage_gets_its_documented_rejection_and_serving_goes_on_case());
}

async fn garbage_gets_its_documented_rejection_and_serving_goes_on_case() {
    raise_fd_limit(1024);
    let before = Figures::now();
    let tally = Tally::new(true);
    let h = start_server(
        Options {
            echo: true,
            configure: |c| c.max_pending_per_ip = 64,
            ..Options::default()
        },
        &tally,
    )
    .await;
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let mut tokens: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut cases = 0usize;

    // Before the upgrade: plain HTTP answers.
    let mut random = rng.bytes(4096);
    random[0] = 0; // not a method character: refused at once, never waiting for more
    let mut random_head = rng.bytes(2048);
    random_head[0] = 0x7f;
    random_head.extend_from_slice(b"\r\n\r\n");
    let signed = String::from_utf8(upgrade_head(&h)).unwrap();
    let http_cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("random bytes instead of HTTP", random, 400),
        ("random bytes ending like a head", random_head, 400),
        (
            "request head over 16 KiB",
            format!(
                "GET /voice/stream HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
                "a".repeat(20_000)
            )
            .into_bytes(),
            431,
        ),
        (
            "control characters in the signature header",
            signed
                .replace("X-Twilio-Signature: ", "X-Twilio-Signature: \u{1}\u{7f}")
                .into_bytes(),
            400,
        ),
        (
            "random bytes as the signature",
            {
                let sig = base64::engine::general_purpose::STANDARD.encode(rng.bytes(20));
                let line = signed
                    .lines()
                    .find(|l| l.starts_with("X-Twilio-Signature"))
                    .unwrap();
                signed
                    .replace(line, &format!("X-Twilio-Signature: {sig}"))
                    .into_bytes()
            },
            401,
        ),
        (
            "control characters in the request target",
            signed
                .replacen("/voice/stream", "/voice/stream\u{1}", 1)
                .into_bytes(),
            400,
        ),
        (
            "control characters in the Upgrade header",
            signed
                .replace("Upgrade: websocket", "Upgrade: web\u{1}socket")
                .into_bytes(),
            400,
        ),
    ];
    for (what, bytes, status) in &http_cases {
        cases += 1;
        let (got, resp) = raw_http(h.addr, bytes).await;
        no_leak(&resp, &secrets(&tokens));
        if got != *status || resp.contains("101 ") {
            failures.push(format!("{what}: expected {status}, got {got}: {resp:?}"));
        }
    }
    // Spoiled but validly signed webhooks: the server's own answers.
    let base = h.twilio.voice_params(&call(500));
    let spoil = |name: &str| {
        base.iter()
            .map(|(k, v)| {
                let v = if k == name {
                    format!("{v}{CTRL}")
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect::<Vec<_>>()
    };
    for (what, params, status) in [
        ("control characters in CallSid", spoil("CallSid"), 400),
        ("control characters in AccountSid", spoil("AccountSid"), 403),
    ] {
        cases += 1;
        let reply = h
            .twilio
            .post_webhook(&h.webhook_url, &params, Signing::Valid)
            .await
            .unwrap();
        no_leak(&reply.body, &secrets(&tokens));
        if reply.status != status || !reply.body.is_empty() {
            failures.push(format!(
                "webhook {what}: expected {status}, got {} {:?}",
                reply.status, reply.body
            ));
        }
    }

    // After the upgrade, before authentication.
    let mut ws_cases: Vec<WsCase> = Vec::new();
    let pre =
        |what: &str, bytes: Vec<u8>, e: Expect| (what.to_owned(), None, text_frame(&bytes), e);
    ws_cases.push(pre(
        "invalid UTF-8 text frame",
        vec![0xff, 0xfe, 0xc0, 0x80],
        Expect::Close(POLICY, "ws_malformed"),
    ));
    ws_cases.push(pre(
        "invalid UTF-8 inside JSON",
        [&b"{\"event\":\"start\",\"streamSid\":\"\xff\xfe\"}"[..]].concat(),
        Expect::Close(POLICY, "ws_malformed"),
    ));
    let depth = 20_000;
    ws_cases.push(pre(
        "deeply nested JSON arrays",
        format!(
            "{{\"event\":\"start\",\"start\":{}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        )
        .into_bytes(),
        Expect::Close(POLICY, "frame_not_json"),
    ));
    ws_cases.push(pre(
        "deeply nested JSON objects",
        format!("{}1{}", "{\"a\":".repeat(depth / 3), "}".repeat(depth / 3)).into_bytes(),
        Expect::Close(POLICY, "frame_not_json"),
    ));
    ws_cases.push(pre(
        "huge JSON (over 64 KiB)",
        format!(
            "{{\"event\":\"start\",\"pad\":\"{}\"}}",
            "x".repeat(100_000)
        )
        .into_bytes(),
        Expect::Close(TOO_BIG, "message_too_large"),
    ));
    ws_cases.push((
        "frame-level garbage (reserved bits, random bytes)".to_owned(),
        None,
        {
            let mut b = rng.bytes(512);
            b[0] = 0x70 | (b[0] & 0x0f);
            b
        },
        Expect::Close(POLICY, "ws_malformed"),
    ));
    ws_cases.push((
        "an unmasked client frame".to_owned(),
        None,
        b"\x81\x05hello".to_vec(),
        Expect::Close(POLICY, "ws_malformed"),
    ));
    let mut n = 600u64;
    let mut next_token = async |h: &Harness, tokens: &mut Vec<String>| {
        n += 1;
        let t = token(h, n).await;
        tokens.push(t.clone());
        (n, t)
    };
    {
        let (n, t) = next_token(&h, &mut tokens).await;
        let mut v = start_value(&h, n, &t);
        let params = v
            .pointer_mut("/start/customParameters")
            .unwrap()
            .as_object_mut()
            .unwrap();
        for i in 0..3000 {
            params.insert(format!("p{i}"), serde_json::Value::String("v".to_owned()));
        }
        ws_cases.push(pre(
            "3,000 customParameters (with a valid token)",
            v.to_string().into_bytes(),
            Expect::Close(POLICY, "frame_invalid"),
        ));
    }
    {
        let (n, t) = next_token(&h, &mut tokens).await;
        let mut v = start_value(&h, n, &t);
        let params = v
            .pointer_mut("/start/customParameters")
            .unwrap()
            .as_object_mut()
            .unwrap();
        params.insert(
            "big".to_owned(),
            serde_json::Value::String("v".repeat(5000)),
        );
        ws_cases.push(pre(
            "a 5,000-byte customParameter",
            v.to_string().into_bytes(),
            Expect::Close(POLICY, "frame_invalid"),
        ));
    }
    let mut authenticated = 0u64;
    let accepted = |h: &Harness, n: u64, start: Vec<u8>| {
        let mut bytes = text_frame(&start);
        bytes.extend(text_frame(
            stop_message(&h.account, &call(n), &stream_sid(n), 2).as_bytes(),
        ));
        bytes
    };
    for (field, expect) in [
        ("/event", Expect::Close(POLICY, "event_before_start")),
        ("/streamSid", Expect::Close(POLICY, "frame_invalid")),
        ("/start/accountSid", Expect::Close(POLICY, "frame_invalid")),
        ("/start/streamSid", Expect::Close(POLICY, "frame_invalid")),
        ("/start/callSid", Expect::Close(POLICY, "frame_invalid")),
        (
            "/start/customParameters/token",
            Expect::Close(POLICY, "token_length"),
        ),
        ("/sequenceNumber", Expect::Accepted),
        ("/start/tracks/0", Expect::Accepted),
        ("/start/mediaFormat/encoding", Expect::Accepted),
    ] {
        let (n, t) = next_token(&h, &mut tokens).await;
        let start = with_ctrl(start_value(&h, n, &t), field);
        let what = format!("control characters in {field}");
        if expect == Expect::Accepted {
            authenticated += 1;
            ws_cases.push((what, None, accepted(&h, n, start), expect));
        } else {
            ws_cases.push(pre(&what, start, expect));
        }
    }
    {
        let (n, t) = next_token(&h, &mut tokens).await;
        let mut v = start_value(&h, n, &t);
        let params = v
            .pointer_mut("/start/customParameters")
            .unwrap()
            .as_object_mut()
            .unwrap();
        params.insert(
            format!("name{CTRL}"),
            serde_json::Value::String(format!("value{CTRL}")),
        );
        authenticated += 1;
        ws_cases.push((
            "control characters in a customParameter's name and value".to_owned(),
            None,
            accepted(&h, n, v.to_string().into_bytes()),
            Expect::Accepted,
        ));
    }

    // After authentication: a valid `start` first, then the garbage.
    let post_garbage: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "invalid UTF-8 text frame",
            text_frame(&[0xff, 0xfe, 0xc0, 0x80]),
            Expect::Close(POLICY, "ws_malformed"),
        ),
        (
            "deeply nested JSON for the media body",
            text_frame(
                format!(
                    "{{\"event\":\"media\",\"media\":{}{}}}",
                    "[".repeat(depth),
                    "]".repeat(depth)
                )
                .as_bytes(),
            ),
            Expect::Close(POLICY, "frame_invalid"),
        ),
        (
            "deeply nested JSON in an unknown field",
            text_frame(
                format!(
                    "{{\"event\":\"media\",\"x\":{}{}}}",
                    "[".repeat(depth),
                    "]".repeat(depth)
                )
                .as_bytes(),
            ),
            Expect::Close(POLICY, "frame_not_json"),
        ),
        (
            "huge JSON (over 64 KiB)",
            text_frame(
                format!(
                    "{{\"event\":\"media\",\"pad\":\"{}\"}}",
                    "x".repeat(100_000)
                )
                .as_bytes(),
            ),
            Expect::Close(TOO_BIG, "message_too_large"),
        ),
        (
            "frame-level garbage",
            {
                let mut b = rng.bytes(512);
                b[0] = 0x70 | (b[0] & 0x0f);
                b
            },
            Expect::Close(POLICY, "ws_malformed"),
        ),
    ];
    for (what, garbage, e) in post_garbage {
        let (n, t) = next_token(&h, &mut tokens).await;
        authenticated += 1;
        ws_cases.push((
            format!("after authentication: {what}"),
            Some(text_frame(start_text(&h, n, &t).as_bytes())),
            garbage,
            e,
        ));
    }
    // A media frame whose streamSid carries control characters, after authentication.
    {
        let (n, t) = next_token(&h, &mut tokens).await;
        authenticated += 1;
        let mut m: serde_json::Value =
            serde_json::from_str(&media_message_with(&stream_sid(n), 0, &payload(0))).unwrap();
        let bad = with_ctrl(m.take(), "/streamSid");
        ws_cases.push((
            "after authentication: control characters in a media streamSid".to_owned(),
            Some(text_frame(start_text(&h, n, &t).as_bytes())),
            text_frame(&bad),
            Expect::Close(POLICY, "frame_invalid"),
        ));
    }

    for (k, (what, prelude, garbage, expect)) in ws_cases.iter().enumerate() {
        cases += 1;
        let before = h.server().metrics();
        let (code, got) = ws_garbage(&h, loopback(4, k), prelude.clone(), garbage).await;
        for g in &got {
            no_leak(g, &secrets(&tokens));
        }
        let after = h.server().metrics();
        let reasons = new_reasons(&before, &after);
        let ok = match expect {
            Expect::Close(c, r) => code == Some(*c) && reasons == [*r] && got.is_empty(),
            Expect::Accepted => code == Some(1000) && reasons.is_empty() && got.is_empty(),
        };
        if !ok {
            failures.push(format!(
                "{what}: expected {expect:?}, got close {code:?}, reasons {reasons:?}, messages {}",
                got.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} garbage cases went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        tally.started.load(Ordering::Relaxed),
        authenticated,
        "only the cases with a valid start authenticated"
    );
    assert_eq!(
        tally.frames.load(Ordering::Relaxed),
        0,
        "no garbage reached the handler as media"
    );

    let accepted_opaque = ws_cases.iter().filter(|c| c.3 == Expect::Accepted).count();
    // Still serving.
    let o = legit_call(Arc::clone(&h), 999, 20, None, LEGIT, None).await;
    assert_delivered(&o, 20, true, &tally);
    let end = settled(&h).await;
    let after = Figures::now();
    stop_server(h).await;
    eprintln!(
        "soak garbage_gets_its_documented_rejection_and_serving_goes_on: {cases} garbage cases answered as documented ({} streams rejected with their reason, {accepted_opaque} opaque fields with control characters accepted) | then 1 legit call x 20 frames: sent {} received 20 lost 0, echoed {} | before {before} after {after}",
        end.streams_rejected_total(),
        o.sent,
        o.echoed
    );
}

// ---------------------------------------------------------------------------------------------
// Faults, repeated: nothing may grow
// ---------------------------------------------------------------------------------------------

/// Call `n` authenticated from `LEGIT`, with `frames` media frames already at the handler:
/// the socket and the call's token.
async fn streaming_call(h: &Harness, tally: &Tally, n: u64, frames: usize) -> (Client, String) {
    let tok = token(h, n).await;
    let seen = tally.frames.load(Ordering::Relaxed);
    let mut ws = ws_from(h, LEGIT).await;
    ws.send(Message::text(start_text(h, n, &tok)))
        .await
        .unwrap();
    for i in 0..frames {
        ws.send(media(n, i)).await.unwrap();
    }
    frames_reach(tally, seen + frames as u64).await;
    (ws, tok)
}

/// Waits until the handler has seen `n` media frames in total (across streams).
async fn frames_reach(tally: &Tally, n: u64) {
    assert!(
        eventually(|| tally.frames.load(Ordering::Relaxed) >= n).await,
        "the handler never saw {n} frames in total"
    );
}

/// One cycle of faults, one connection each, `n0..` their calls: abrupt disconnects mid-handshake
/// (at once, half a head, a whole head unread), mid-`start` (a frame cut short; a whole `start`
/// then gone), mid-stream; half-open (write side shut) before and after authentication; a
/// peer that stops reading while every frame is echoed. Returns how many faults it injected.
async fn fault_cycle(h: &Arc<Harness>, tally: &Tally, n0: u64, tokens: &mut Vec<String>) -> usize {
    let src = |k: u64| loopback(5, usize::try_from(n0 + k).unwrap());
    // Mid-handshake.
    drop(tcp_from(h.addr, src(0)).await.unwrap());
    let mut tcp = tcp_from(h.addr, src(1)).await.unwrap();
    tcp.write_all(HALF_HEAD).await.unwrap();
    drop(tcp);
    let mut tcp = tcp_from(h.addr, src(2)).await.unwrap();
    tcp.write_all(&upgrade_head(h)).await.unwrap();
    drop(tcp);
    // Mid-start: a frame announced at 400 bytes, 60 sent; then a whole start, and gone.
    let tok = token(h, n0 + 3).await;
    let start = start_text(h, n0 + 3, &tok);
    let mut tcp = raw_upgrade(h, src(3)).await.unwrap();
    tcp.write_all(&client_frame(0x1, &start.as_bytes()[..60], 400))
        .await
        .unwrap();
    drop(tcp);
    let mut tcp = raw_upgrade(h, src(4)).await.unwrap();
    tcp.write_all(&text_frame(start.as_bytes())).await.unwrap();
    drop(tcp);
    tokens.push(tok);

    // Mid-stream: five frames delivered, then the TCP connection dropped without a close.
    let n = n0 + 5;
    let (ws, tok) = streaming_call(h, tally, n, 5).await;
    drop(ws);
    let t = tally.wait_end(&stream_sid(n)).await;
    assert_eq!(
        (t.end, t.frames, t.out_of_order),
        (Some(StreamEnd::PeerGone), 5, 0),
        "mid-stream drop"
    );
    tokens.push(tok);

    // Half-open before authentication: the upgrade, then the write side shut.
    let mut tcp = raw_upgrade(h, src(6)).await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(
        rest.len() <= 64,
        "a half-open pending connection got {rest:?}"
    );
    no_leak(&String::from_utf8_lossy(&rest), &secrets(tokens));
    drop(tcp);

    // Half-open after authentication: three frames, then the write side shut.
    let n = n0 + 7;
    let (mut ws, tok) = streaming_call(h, tally, n, 3).await;
    ws.get_mut().shutdown().await.unwrap();
    let t = tally.wait_end(&stream_sid(n)).await;
    assert_eq!(
        (t.end, t.frames, t.out_of_order),
        (Some(StreamEnd::PeerGone), 3, 0),
        "half-open stream"
    );
    let (_, got) = until_close(&mut ws).await;
    assert_eq!(got.len(), 3, "the three echoes, then the end");
    drop(ws);
    tokens.push(tok);

    // A peer that stops reading while every frame is echoed: closed for backpressure once
    // its unread echoes pass the outbound budget (1 MiB), not buffered.
    let n = n0 + 8;
    let tok = token(h, n).await;
    let mut ws = ws_from(h, LEGIT).await;
    ws.send(Message::text(start_text(h, n, &tok)))
        .await
        .unwrap();
    let big = "A".repeat(48_000);
    let mut sent = 0;
    while sent < 4000 && tally.of(&stream_sid(n)).is_none() {
        let m = Message::text(media_message_with(&stream_sid(n), sent, &big));
        if tokio::time::timeout(Duration::from_secs(10), ws.send(m))
            .await
            .map_or(true, |r| r.is_err())
        {
            break;
        }
        sent += 1;
    }
    let t = tally.wait_end(&stream_sid(n)).await;
    assert_eq!(
        t.end,
        Some(StreamEnd::Backpressure),
        "a peer that stops reading ({sent} frames sent)"
    );
    assert_eq!(t.out_of_order, 0);
    drop(ws);
    tokens.push(tok);
    9
}

/// The fault cycle of [`fault_cycle`], repeated (10 times in the short mode, 50 in the full
/// one) after one warm-up cycle, on one server. After every cycle nothing is pending, active
/// or open. Bounds, against the figures after the warm-up:
/// - open descriptors at most 2 above: a connection leaked per cycle (its server-side socket)
///   would be 10 (50) above;
/// - live tasks no more than at the baseline: a leaked connection task per cycle would show;
/// - RSS at most 8 MiB (16 MiB) above: leaking the non-reading peer's outbound buffer (the
///   1 MiB budget) each cycle would be 10 MiB (50 MiB) above.
#[test]
fn faults_leave_no_task_fd_or_memory_behind() {
    serially(faults_leave_no_task_fd_or_memory_behind_case());
}

async fn faults_leave_no_task_fd_or_memory_behind_case() {
    raise_fd_limit(1024);
    let cycles = pick(10u64, 50);
    let rss_bound_kib = pick(8 * 1024, 16 * 1024);
    let tally = Tally::new(true);
    let h = start_server(
        Options {
            configure: |c| c.max_pending_per_ip = 64,
            ..Options::default()
        },
        &tally,
    )
    .await;
    let started = Instant::now();
    let mut tokens = Vec::new();
    let mut faults = fault_cycle(&h, &tally, 200_000, &mut tokens).await;
    settled(&h).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let base = Figures::now();
    let mut rss = Vec::new();
    for c in 1..=cycles {
        faults += fault_cycle(&h, &tally, 200_000 + c * 100, &mut tokens).await;
        settled(&h).await;
        rss.push(rss_kib());
    }
    let tasks = tasks_back_to(base.tasks).await;
    let after = Figures::now();
    let m = h.server().metrics();
    stop_server(h).await;
    eprintln!(
        "soak faults_leave_no_task_fd_or_memory_behind: mode {} | {cycles} cycles + 1 warm-up, {faults} faults | streams authenticated {} rejected {} | baseline {base} after {after} (rss per cycle {rss:?} KiB) | {:.1?}",
        pick("short", "full"),
        m.streams_authenticated,
        m.streams_rejected_total(),
        started.elapsed()
    );
    assert!(
        after.fds <= base.fds + 2,
        "descriptors grew: {base} -> {after}"
    );
    assert!(tasks <= base.tasks, "tasks grew: {} -> {tasks}", base.tasks);
    assert!(
        after.rss_kib <= base.rss_kib + rss_bound_kib,
        "RSS grew by more than {rss_bound_kib} KiB: {base} -> {after}"
    );
}

// ---------------------------------------------------------------------------------------------
// The replay store going away and coming back
// ---------------------------------------------------------------------------------------------

/// Redis (a real `redis-server`) killed and started again, repeatedly (4 cycles in the short
/// mode, 10 in the full one, after a warm-up cycle), under one server: while it is down a
/// webhook gets 503 with an empty body and a `start` with a token minted before gets 1008
/// (`replay_store_unavailable`) and nothing else; once it is back, calls authenticate and
/// deliver every frame, without a restart. Bounds against the figures after the warm-up:
/// descriptors at most 2 above (a connection leaked per cycle would be 4 or 10 above), live
/// tasks no more than the baseline, RSS at most 8 MiB above. Skipped with a `SKIPPED` line
/// when `redis-server` is not installed, unless `STREAMGUARD_REQUIRE_REDIS` is set.
#[test]
fn replay_store_outages_leave_no_task_fd_or_memory_behind() {
    serially(replay_store_outages_leave_no_task_fd_or_memory_behind_case());
}

async fn replay_store_outages_leave_no_task_fd_or_memory_behind_case() {
    let Some(mut redis) =
        RedisServer::start("replay_store_outages_leave_no_task_fd_or_memory_behind")
    else {
        return;
    };
    raise_fd_limit(1024);
    let cycles = pick(4u64, 10);
    let tally = Tally::new(true);
    let h = start_server(
        Options {
            store: Some(ReplayStoreConfig::Redis(
                RedisSettings::new(&redis.url(), None, None, Duration::from_millis(250)).unwrap(),
            )),
            configure: |c| c.max_pending_per_ip = 64,
            ..Options::default()
        },
        &tally,
    )
    .await;
    let started = Instant::now();
    let mut tokens = Vec::new();
    let mut waits = 0;
    let mut cycle = async |c: u64, redis: &mut RedisServer, tokens: &mut Vec<String>| {
        let n0 = 300_000 + c * 10;
        let o = legit_call(Arc::clone(&h), n0, 10, None, LEGIT, None).await;
        assert_delivered(&o, 10, true, &tally);
        let minted = token(&h, n0 + 1).await;
        tokens.push(minted.clone());

        redis.stop();
        let reply = h.webhook(n0 + 2, Signing::Valid).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (503, ""),
            "webhook while Redis is down"
        );
        let before = h.server().metrics();
        let mut ws = ws_from(&h, LEGIT).await;
        ws.send(Message::text(start_text(&h, n0 + 1, &minted)))
            .await
            .unwrap();
        let (code, got) = until_close(&mut ws).await;
        assert_eq!(
            (code, got.len()),
            (Some(POLICY), 0),
            "start while Redis is down"
        );
        let after = h.server().metrics();
        assert_eq!(new_reasons(&before, &after), ["replay_store_unavailable"]);
        no_leak(&reply.body, &secrets(tokens));

        redis.restart();
        let mut back = false;
        for _ in 0..400 {
            waits += 1;
            if h.webhook(n0 + 3, Signing::Valid).await.status == 200 {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(back, "webhooks work again once Redis is back");
        let o = legit_call(Arc::clone(&h), n0 + 4, 10, None, LEGIT, None).await;
        assert_delivered(&o, 10, true, &tally);
        settled(&h).await;
    };
    cycle(0, &mut redis, &mut tokens).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let base = Figures::now();
    for c in 1..=cycles {
        cycle(c, &mut redis, &mut tokens).await;
    }
    let tasks = tasks_back_to(base.tasks).await;
    let after = Figures::now();
    let m = h.server().metrics();
    stop_server(h).await;
    eprintln!(
        "soak replay_store_outages_leave_no_task_fd_or_memory_behind: mode {} | {cycles} Redis kill/restart cycles + 1 warm-up, {waits} webhook probes until back | calls {} ok, refused while down {} | store errors {:?} | baseline {base} after {after} | {:.1?}",
        pick("short", "full"),
        m.streams_authenticated,
        m.streams_rejected_for("replay_store_unavailable"),
        m.store_errors,
        started.elapsed()
    );
    assert!(
        after.fds <= base.fds + 2,
        "descriptors grew: {base} -> {after}"
    );
    assert!(tasks <= base.tasks, "tasks grew: {} -> {tasks}", base.tasks);
    assert!(
        after.rss_kib <= base.rss_kib + 8 * 1024,
        "RSS grew by more than 8 MiB: {base} -> {after}"
    );
}

// ---------------------------------------------------------------------------------------------
// No loss under faults
// ---------------------------------------------------------------------------------------------

/// What the fault injector did.
#[derive(Debug, Default)]
struct Injected {
    dropped_at_connect: usize,
    dropped_mid_head: usize,
    garbage_closed_1008: usize,
    dropped_mid_start: usize,
    dropped_mid_stream: usize,
    held_pending: usize,
}

impl Injected {
    fn total(&self) -> usize {
        self.dropped_at_connect
            + self.dropped_mid_head
            + self.garbage_closed_1008
            + self.dropped_mid_start
            + self.dropped_mid_stream
            + self.held_pending
    }
}

/// Injects faults from other addresses, one every few milliseconds, until `stop`: dropped
/// connections at every phase, garbage (each answered 1008), authenticated streams dropped
/// mid-stream, upgrades held without `start` (closed at the deadline).
async fn inject_faults(
    h: Arc<Harness>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> (Injected, u64) {
    let mut did = Injected::default();
    let mut held = Vec::new();
    let mut peak_active = 0;
    let mut k = 0usize;
    while !stop.load(Ordering::Relaxed) {
        peak_active = peak_active.max(h.server().metrics().gauges.streams_active);
        let src = loopback(6, k);
        match k % 7 {
            0 => {
                drop(tcp_from(h.addr, src).await.unwrap());
                did.dropped_at_connect += 1;
            }
            1 => {
                let mut tcp = tcp_from(h.addr, src).await.unwrap();
                let _ = tcp.write_all(HALF_HEAD).await;
                did.dropped_mid_head += 1;
            }
            2 | 5 => {
                let garbage: &[u8] = if k % 7 == 2 {
                    b"{\"event\":\"start\","
                } else {
                    &[0xff, 0xfe]
                };
                let (code, got) = ws_garbage(&h, src, None, &text_frame(garbage)).await;
                assert_eq!(
                    (code, got.len()),
                    (Some(POLICY), 0),
                    "garbage during the calls"
                );
                did.garbage_closed_1008 += 1;
            }
            3 => {
                let mut tcp = raw_upgrade(&h, src).await.unwrap();
                let _ = tcp
                    .write_all(&client_frame(0x1, b"{\"event\":\"start\",\"sequ", 300))
                    .await;
                did.dropped_mid_start += 1;
            }
            4 => {
                let n = 1_000_000 + u64::try_from(k).unwrap();
                let tok = token(&h, n).await;
                let mut ws = ws_from(&h, src).await;
                ws.send(Message::text(start_text(&h, n, &tok)))
                    .await
                    .unwrap();
                for i in 0..3 {
                    ws.send(media(n, i)).await.unwrap();
                }
                let t = tally.wait_end_after_drop(ws, &stream_sid(n)).await;
                assert_eq!(
                    (t.frames, t.out_of_order),
                    (3, 0),
                    "a stream dropped mid-stream"
                );
                did.dropped_mid_stream += 1;
            }
            _ => {
                if let Ok(tcp) = raw_upgrade(&h, src).await {
                    held.push(tcp);
                    did.held_pending += 1;
                }
            }
        }
        k += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(held);
    (did, peak_active)
}

impl Tally {
    /// Ends `ws` abruptly: shuts its write side (its frames are flushed, so the server reads
    /// them all, then the end of the stream, never a close frame), waits for the stream's end
    /// at its handler and returns what that saw, then drops the connection.
    async fn wait_end_after_drop(&self, ws: Client, sid: &StreamSid) -> StreamTally {
        let mut tcp = ws.into_inner();
        let _ = tcp.shutdown().await;
        let t = self.wait_end(sid).await;
        drop(tcp);
        t
    }
}

/// Many concurrent legitimate calls (100 for 5 s in the short mode; 2,000 for 60 s in the
/// full one), each streaming one frame per 20 ms with echo on, while faults are injected into
/// other connections from other addresses. Every media frame of every legitimate stream
/// reaches its handler exactly once and in order (`sequenceNumber` checked at the handler),
/// every echo comes back in order, every call ends with 1000 after `stop`; then nothing is
/// pending, active or open.
#[test]
fn no_media_frame_is_lost_while_other_connections_fail() {
    serially(no_media_frame_is_lost_while_other_connections_fail_case());
}

async fn no_media_frame_is_lost_while_other_connections_fail_case() {
    let calls = pick(100u64, 2000);
    let secs = pick(5u64, 60);
    let frames = usize::try_from(secs * 50).unwrap();
    raise_fd_limit(calls * 2 + 2048);
    let before = Figures::now();
    let tally = Tally::new(true);
    let h = start_server(
        Options {
            configure: |c| {
                c.max_pending = 4096;
                c.max_pending_per_ip = 4096;
                c.max_streams = 4096;
                c.max_connections = 8192;
            },
            ..Options::default()
        },
        &tally,
    )
    .await;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let injector = tokio::spawn(inject_faults(
        Arc::clone(&h),
        Arc::clone(&tally),
        Arc::clone(&stop),
    ));
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let tasks: Vec<_> = (0..calls)
        .map(|n| {
            tokio::spawn(legit_call(
                Arc::clone(&h),
                n,
                frames,
                Some(Duration::from_millis(20)),
                LEGIT,
                Some(Arc::clone(&gate)),
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let (injected, peak_active) = injector.await.unwrap();
    let elapsed = started.elapsed();
    let mut received = 0;
    for o in &outcomes {
        received += tally.of(&stream_sid(o.n)).map_or(0, |t| t.frames);
        assert_delivered(o, frames, true, &tally);
    }
    let sent: usize = outcomes.iter().map(|o| o.sent).sum();
    let echoed: usize = outcomes.iter().map(|o| o.echoed).sum();
    let end = settled(&h).await;
    let after = Figures::now();
    stop_server(h).await;
    eprintln!(
        "soak no_media_frame_is_lost_while_other_connections_fail: mode {} | {calls} calls x {frames} frames ({secs} s at 20 ms), peak {peak_active} active | frames sent {sent} received {received} lost {} out of order 0, echoed {echoed} | {} faults injected {injected:?} | streams authenticated {} rejected {:?} | {:.1?} | before {before} after {after}",
        pick("short", "full"),
        sent - usize::try_from(received).unwrap(),
        injected.total(),
        end.streams_authenticated,
        end.streams_rejected,
        elapsed,
    );
}
