//! Measurements that do not belong in tests: per-operation cost of the pure core, and the
//! memory an idle (upgraded, unauthenticated) connection costs a real `streamguard serve`.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench
//! ```
//!
//! Timings are wall-clock medians of repeated batches on whatever machine runs this; compare
//! them with each other and across commits, not across machines.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing
)] // a measuring tool, not library code

use std::hint::black_box;
use std::time::{Duration, Instant};

use streamguard::kit::simulator::{media_message, start_message};
use streamguard::limits::DEFAULT_MAX_MESSAGE_BYTES;
use streamguard::secret::{AuthToken, KeySet, TokenKey};
use streamguard::session::{AuthContext, Event, Output, Session, UrlToken};
use streamguard::sid::{AccountSid, CallSid, StreamSid};
use streamguard::signature::{compute_signature, validate};
use streamguard::store::{self, MemoryStore, StoreKey, StorePolicy};
use streamguard::time::UnixTime;
use streamguard::token::{issue_with_nonce, verify};

/// Median nanoseconds per call of `f` over 15 batches of `n` calls.
fn time(name: &str, n: u32, mut f: impl FnMut()) {
    let mut per_op: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    println!("{name:<44} {:>10.0} ns/op", per_op[per_op.len() / 2]);
}

fn micro() {
    let account = AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap();
    let call = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
    let stream = StreamSid::parse("MZ0123456789abcdef0123456789abcdef").unwrap();
    let keys = KeySet::single(TokenKey::from_bytes(&[7; 32]).unwrap());
    let now = UnixTime::from_millis(1_800_000_000_000);
    let token = issue_with_nonce(
        keys.current(),
        &account,
        &call,
        now,
        Duration::from_secs(60),
        [1; 16],
    )
    .unwrap();
    let auth = AuthToken::new("0123456789abcdef0123456789abcdef").unwrap();
    let url = "https://voice.example.com/voice/webhook";
    let params: Vec<(String, String)> = (0..12)
        .map(|i| (format!("Param{i}"), format!("value-{i}")))
        .collect();
    let sig = compute_signature(&auth, url, &params);

    println!("pure core (one core, release build)");
    time("token::verify (valid)", 100_000, || {
        black_box(verify(&keys, black_box(token.as_str()), &account, &call, now).unwrap());
    });
    time(
        "token::verify (garbage, rejected at length)",
        1_000_000,
        || {
            black_box(verify(&keys, black_box("nope"), &account, &call, now).unwrap_err());
        },
    );
    time("signature::validate (12 form params)", 100_000, || {
        black_box(validate(&auth, url, &params, None, Some(sig.as_bytes()))).unwrap();
    });

    let start = start_message(
        &account,
        &call,
        &stream,
        &[("token".to_owned(), token.as_str().to_owned())],
    );
    let media = media_message(&stream, 0);
    let ctx = AuthContext {
        keys: &keys,
        expected_account: &account,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
    };
    let redeeming = Session::new(now, Duration::from_secs(5), UrlToken::NONE)
        .handle(Event::Text(&start), now, &ctx)
        .0;
    let mut streaming = redeeming.handle(Event::Redeemed(Ok(())), now, &ctx).0;
    assert!(streaming.is_authenticated());
    time("session: one 160-byte media frame", 200_000, || {
        let state = std::mem::replace(&mut streaming, Session::Closed);
        let (next, out) = state.handle(Event::Text(black_box(&media)), now, &ctx);
        black_box(out);
        streaming = next;
    });
    let mut n = 0u64;
    time(
        "session: start up to the redemption (incl. issuing its token)",
        20_000,
        || {
            n += 1;
            let call = CallSid::parse(&format!("CA{n:032x}")).unwrap();
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&n.to_be_bytes());
            let token = issue_with_nonce(
                keys.current(),
                &account,
                &call,
                now,
                Duration::from_secs(60),
                nonce,
            )
            .unwrap();
            let start = start_message(
                &account,
                &call,
                &stream,
                &[("token".to_owned(), token.as_str().to_owned())],
            );
            let s = Session::new(now, Duration::from_secs(5), UrlToken::NONE);
            let (s, out) = s.handle(Event::Text(&start), now, &ctx);
            assert!(s.is_redeeming() && matches!(out, Output::Redeem(_)));
        },
    );

    let memory = MemoryStore::new(
        1 << 20,
        StorePolicy {
            token_ttl: Duration::from_secs(60),
            call_memory: Duration::from_secs(14_400),
            streams_per_call: 1,
        },
    );
    let store_key = StoreKey::derive(&auth);
    let rng = ring::rand::SystemRandom::new();
    let mut n = 0u64;
    time(
        "store (memory): mint, verify, redeem one call",
        20_000,
        || {
            use futures_util::FutureExt as _;
            n += 1;
            let call = CallSid::parse(&format!("CA{n:032x}")).unwrap();
            let ttl = Duration::from_secs(60);
            let token = store::mint(&memory, &store_key, &keys, &account, &call, now, ttl, &rng)
                .now_or_never()
                .unwrap()
                .unwrap();
            let claims = verify(&keys, token.as_str(), &account, &call, now).unwrap();
            store::redeem(&memory, &store_key, &account, &call, &claims, now)
                .now_or_never()
                .unwrap()
                .unwrap();
        },
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Opens `n` upgraded connections that never send `start`, against a real server process,
/// and reports its resident memory per connection.
fn idle_connections(n: usize) {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("streamguard");
    if !bin.exists() {
        println!(
            "\n(skipping idle-connection memory: build the binary first with `cargo build --release`)"
        );
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(&bin)
        .args([
            "serve",
            "--listen",
            &addr,
            "--public-url",
            &format!("http://{addr}"),
        ])
        .args(["--upgrade-signature", "off", "--start-timeout-ms", "120000"])
        .args([
            "--max-pending",
            &n.to_string(),
            "--max-pending-per-ip",
            &n.to_string(),
        ])
        .env("TWILIO_AUTH_TOKEN", "0123456789abcdef0123456789abcdef")
        .env("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef")
        .env(
            "STREAMGUARD_TOKEN_KEY",
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        )
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut conns = Vec::new();
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = rss_kib(child.id());
    let request = format!(
        "GET /voice/stream HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    for _ in 0..n {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 101");
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    println!("\nidle upgraded connections (real `streamguard serve`, release build)");
    println!(
        "{n} connections: RSS {before} KiB -> {after} KiB = {:.1} KiB per connection",
        (after.saturating_sub(before)) as f64 / n as f64
    );
}

/// Resident memory per record of the in-memory replay store: `n` calls minted, then all of
/// them streamed (the record a call keeps for its call memory).
fn call_records(n: u64) {
    use futures_util::FutureExt as _;
    let account = AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap();
    let keys = KeySet::single(TokenKey::from_bytes(&[7; 32]).unwrap());
    let auth = AuthToken::new("0123456789abcdef0123456789abcdef").unwrap();
    let store_key = StoreKey::derive(&auth);
    let rng = ring::rand::SystemRandom::new();
    let now = UnixTime::from_millis(1_800_000_000_000);
    let ttl = Duration::from_secs(60);
    let store = MemoryStore::new(
        usize::try_from(n).unwrap(),
        StorePolicy {
            token_ttl: ttl,
            call_memory: Duration::from_secs(14_400),
            streams_per_call: 1,
        },
    );
    let before = rss_kib(std::process::id());
    for i in 0..n {
        let call = CallSid::parse(&format!("CA{i:032x}")).unwrap();
        let token = store::mint(&store, &store_key, &keys, &account, &call, now, ttl, &rng)
            .now_or_never()
            .unwrap()
            .unwrap();
        let claims = verify(&keys, token.as_str(), &account, &call, now).unwrap();
        store::redeem(&store, &store_key, &account, &call, &claims, now)
            .now_or_never()
            .unwrap()
            .unwrap();
    }
    let after = rss_kib(std::process::id());
    let per = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    println!(
        "\nreplay store (memory): {n} streamed calls, {before} -> {after} KiB RSS, {per:.0} bytes per record"
    );
    black_box(store);
}

fn main() {
    micro();
    call_records(1_000_000);
    idle_connections(1000);
}
