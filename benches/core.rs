//! Per-operation cost of the trusted core (`cargo bench --bench core`): token issue and
//! verify, a `start` end to end (parse, token resolution, verification, AccountSid check,
//! redemption in the in-memory store), a media frame after authentication (the fast path and
//! the general parser), TwiML rendering, the webhook signature over a realistic 12-field
//! form, the upgrade signature. Timings are medians on whatever machine runs them: compare
//! them with each other and across commits; BENCHMARKS.md has this machine's, and the
//! targets. Nothing here is asserted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // a measuring tool: a panic is a broken setup

use std::hint::black_box;
use std::time::Duration;

use divan::Bencher;
use streamguard::kit::simulator::{media_message, start_message};
use streamguard::limits::DEFAULT_MAX_MESSAGE_BYTES;
use streamguard::secret::{AuthToken, KeySet, TokenKey};
use streamguard::session::{AuthContext, Event, Output, Session, UrlToken};
use streamguard::sid::{AccountSid, CallSid, StreamSid};
use streamguard::signature::{compute_signature, validate, validate_url_only};
use streamguard::store::{self, MemoryStore, StoreKey, StorePolicy};
use streamguard::time::UnixTime;
use streamguard::token::{issue_with_nonce, verify};
use streamguard::wire::frames::{parse_inbound, parse_inbound_general};
use streamguard::wire::twiml::{self, StreamTwiml};

fn main() {
    divan::main();
}

const TTL: Duration = Duration::from_secs(60);

struct Fixture {
    account: AccountSid,
    call: CallSid,
    stream: StreamSid,
    keys: KeySet,
    auth: AuthToken,
    now: UnixTime,
}

fn fixture() -> Fixture {
    Fixture {
        account: AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap(),
        call: CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap(),
        stream: StreamSid::parse("MZ0123456789abcdef0123456789abcdef").unwrap(),
        keys: KeySet::single(TokenKey::from_bytes(&[7; 32]).unwrap()),
        auth: AuthToken::new("0123456789abcdef0123456789abcdef").unwrap(),
        now: UnixTime::from_millis(1_800_000_000_000),
    }
}

fn ctx(f: &Fixture) -> AuthContext<'_> {
    AuthContext {
        keys: &f.keys,
        expected_account: &f.account,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
    }
}

fn call(n: u64) -> CallSid {
    CallSid::parse(&format!("CA{n:032x}")).unwrap()
}

fn nonce(n: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b
}

#[divan::bench]
fn token_issue(bencher: Bencher<'_, '_>) {
    let f = fixture();
    bencher.bench_local(|| {
        issue_with_nonce(
            f.keys.current(),
            &f.account,
            &f.call,
            f.now,
            TTL,
            black_box([1; 16]),
        )
    });
}

#[divan::bench]
fn token_verify(bencher: Bencher<'_, '_>) {
    let f = fixture();
    let token =
        issue_with_nonce(f.keys.current(), &f.account, &f.call, f.now, TTL, [1; 16]).unwrap();
    bencher.bench_local(|| {
        verify(
            &f.keys,
            black_box(token.as_str()),
            &f.account,
            &f.call,
            f.now,
        )
    });
}

#[divan::bench]
fn token_verify_garbage(bencher: Bencher<'_, '_>) {
    let f = fixture();
    bencher.bench_local(|| verify(&f.keys, black_box("nope"), &f.account, &f.call, f.now));
}

/// A `start` end to end: parse, resolve the token (customParameters, none in the URL),
/// verify it, check the AccountSid, redeem it in the in-memory store, authenticate. Each
/// iteration is a fresh call whose token was minted in the store beforehand (not timed).
#[divan::bench]
fn start_end_to_end(bencher: Bencher<'_, '_>) {
    use futures_util::FutureExt as _;
    let f = fixture();
    let ctx = ctx(&f);
    let store = MemoryStore::new(
        1 << 22,
        StorePolicy {
            token_ttl: TTL,
            call_memory: Duration::from_secs(14_400),
            streams_per_call: 1,
        },
    );
    let store_key = StoreKey::derive(&f.auth);
    let rng = ring::rand::SystemRandom::new();
    let mut n = 0u64;
    bencher
        .with_inputs(|| {
            n += 1;
            let call = call(n);
            let token = store::mint(
                &store, &store_key, &f.keys, &f.account, &call, f.now, TTL, &rng,
            )
            .now_or_never()
            .unwrap()
            .unwrap();
            start_message(
                &f.account,
                &call,
                &f.stream,
                &[("token".to_owned(), token.as_str().to_owned())],
            )
        })
        .bench_local_refs(|start| {
            let s = Session::new(f.now, Duration::from_secs(5), UrlToken::NONE);
            let (s, out) = s.handle(Event::Text(start), f.now, &ctx);
            let Output::Redeem(r) = out else {
                panic!("not a redemption: {out:?}")
            };
            let result = store::redeem(
                &store,
                &store_key,
                &r.account_sid,
                &r.call_sid,
                &r.claims,
                f.now,
            )
            .now_or_never()
            .unwrap()
            .map_err(streamguard::session::RedeemFailure::Store);
            let (s, out) = s.handle(Event::Redeemed(result), f.now, &ctx);
            assert!(s.is_authenticated());
            out
        });
}

/// One media frame through an authenticated session (parse, streamSid check, hand-off):
/// what the server does per frame besides the socket read.
#[divan::bench]
fn media_frame(bencher: Bencher<'_, '_>) {
    let f = fixture();
    let ctx = ctx(&f);
    let token =
        issue_with_nonce(f.keys.current(), &f.account, &f.call, f.now, TTL, nonce(1)).unwrap();
    let start = start_message(
        &f.account,
        &f.call,
        &f.stream,
        &[("token".to_owned(), token.as_str().to_owned())],
    );
    let redeeming = Session::new(f.now, Duration::from_secs(5), UrlToken::NONE)
        .handle(Event::Text(&start), f.now, &ctx)
        .0;
    let streaming = redeeming.handle(Event::Redeemed(Ok(())), f.now, &ctx).0;
    assert!(streaming.is_authenticated());
    let media = media_message(&f.stream, 7);
    let mut state = Some(streaming);
    bencher.bench_local(|| {
        let (next, out) = state
            .take()
            .unwrap()
            .handle(Event::Text(black_box(&media)), f.now, &ctx);
        assert!(matches!(out, Output::Media(_)));
        state = Some(next);
    });
}

/// A media message parsed by the fast path (what the server uses) and by serde_json alone.
#[divan::bench(args = ["fast path", "general parser"])]
fn media_parse(bencher: Bencher<'_, '_>, path: &str) {
    let f = fixture();
    let media = media_message(&f.stream, 7);
    let parse = if path == "fast path" {
        parse_inbound
    } else {
        parse_inbound_general
    };
    bencher.bench_local(|| parse(black_box(&media), DEFAULT_MAX_MESSAGE_BYTES));
}

#[divan::bench]
fn twiml_render(bencher: Bencher<'_, '_>) {
    let f = fixture();
    let token =
        issue_with_nonce(f.keys.current(), &f.account, &f.call, f.now, TTL, [1; 16]).unwrap();
    let t = StreamTwiml::connect("wss://voice.example.com/voice/stream")
        .parameter("token", token.as_str());
    bencher.bench_local(|| twiml::render(black_box(&t)));
}

/// The 12 fields Twilio posts with a voice webhook, with realistic values.
fn voice_form(f: &Fixture) -> Vec<(String, String)> {
    [
        ("AccountSid", f.account.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", f.call.as_str()),
        ("CallStatus", "ringing"),
        ("Called", "+15005550006"),
        ("Caller", "+14155551212"),
        ("Direction", "inbound"),
        ("From", "+14155551212"),
        ("FromCity", "SAN FRANCISCO"),
        ("FromCountry", "US"),
        ("To", "+15005550006"),
        ("ToCountry", "US"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[divan::bench]
fn webhook_signature(bencher: Bencher<'_, '_>) {
    let f = fixture();
    let url = "https://voice.example.com/voice/webhook";
    let params = voice_form(&f);
    assert_eq!(params.len(), 12);
    let sig = compute_signature(&f.auth, url, &params);
    bencher.bench_local(|| {
        validate(&f.auth, black_box(url), &params, None, Some(sig.as_bytes())).unwrap();
    });
}

#[divan::bench]
fn upgrade_signature(bencher: Bencher<'_, '_>) {
    let f = fixture();
    let url = "wss://voice.example.com/voice/stream";
    let sig = compute_signature::<&str, &str>(&f.auth, url, &[]);
    bencher.bench_local(|| {
        validate_url_only(&f.auth, black_box(url), Some(sig.as_bytes())).unwrap();
    });
}
