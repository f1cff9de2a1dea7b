//! Memory that does not belong in tests: bytes per call the in-memory replay store
//! remembers, and what an idle (upgraded, unauthenticated) connection costs a real
//! `streamguard serve`. Per-operation timings are in `benches/core.rs` (`cargo bench`);
//! authenticated streams under load in `streamguard load` (BENCHMARKS.md).
//!
//! ```sh
//! cargo build --release && cargo run --release --example memory
//! ```

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing
)] // a measuring tool, not library code

use std::hint::black_box;
use std::time::Duration;

use streamguard::secret::{AuthToken, KeySet, TokenKey};
use streamguard::sid::{AccountSid, CallSid};
use streamguard::store::{self, MemoryStore, StoreKey, StorePolicy};
use streamguard::time::UnixTime;
use streamguard::token::verify;

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
    call_records(1_000_000);
    idle_connections(1000);
}
