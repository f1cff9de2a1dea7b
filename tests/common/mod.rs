//! Helpers shared by the integration tests of the pure core: the proptest configuration,
//! fixed SIDs, keys and times, deterministic tokens, Twilio message builders, a form encoder
//! and a leak check.
//!
//! Nothing here computes an expected answer with the code under test: builders only produce
//! inputs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure
#![allow(dead_code)] // each test crate uses a different subset of these helpers

use std::time::Duration;

use proptest::strategy::Strategy;
use proptest::test_runner::{
    Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestRunner,
};
use serde_json::json;
use streamguard::secret::{KeySet, StreamToken, TokenKey};
use streamguard::sid::{AccountSid, CallSid, StreamSid};
use streamguard::time::UnixTime;
use streamguard::token::issue_with_nonce;

/// Cases per property when `PROPTEST_CASES` is not set: enough to find shallow bugs while
/// keeping `cargo test` fast in debug builds. CI or a soak run sets `PROPTEST_CASES`.
pub const DEFAULT_CASES: u32 = 64;

/// The proptest configuration for every property in these tests: [`DEFAULT_CASES`] cases
/// unless `PROPTEST_CASES` is set (then `ProptestConfig::default()` has already read it and
/// it is kept), and failures persisted next to the test file
/// (`tests/<file>.proptest-regressions`) so that a shrunk counterexample is committed and
/// replayed on every later run.
pub fn proptest_config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
        "proptest-regressions",
    )));
    config
}

/// Runs the property `test` over `strategy` with [`proptest_config`] (failures persisted next
/// to `source_file`, pass `file!()`), and returns how many cases reached the branch the
/// property is about: `test` returns `Ok(true)` for those. A property whose interesting branch
/// no generated case reaches is weaker than its words, so callers assert the count is not
/// zero (and generate inputs that reach it).
pub fn run_property<S: Strategy>(
    source_file: &'static str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) -> u32 {
    let mut config = proptest_config();
    config.source_file = Some(source_file);
    let reached = std::cell::Cell::new(0u32);
    let result = TestRunner::new(config).run(&strategy, |v| {
        if test(v)? {
            reached.set(reached.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    reached.get()
}

// ---------------------------------------------------------------------------------------------
// SIDs
// ---------------------------------------------------------------------------------------------

/// The configured account, another account, the call tokens are issued for, another call,
/// their streams: the same fixed SIDs the fuzz targets use.
#[allow(unused_imports)] // each test crate uses a different subset
pub use streamguard::invariants::{ACCOUNT, CALL, OTHER_ACCOUNT, OTHER_CALL, OTHER_STREAM, STREAM};

pub fn account(s: &str) -> AccountSid {
    AccountSid::parse(s).unwrap()
}

pub fn call(s: &str) -> CallSid {
    CallSid::parse(s).unwrap()
}

pub fn stream(s: &str) -> StreamSid {
    StreamSid::parse(s).unwrap()
}

/// The `n`-th of a family of distinct, well-formed CallSids.
pub fn nth_call(n: u64) -> CallSid {
    CallSid::parse(&format!("CA{n:032x}")).unwrap()
}

/// The `n`-th of a family of distinct, well-formed AccountSids.
pub fn nth_account(n: u64) -> AccountSid {
    AccountSid::parse(&format!("AC{n:032x}")).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Keys, times, tokens
// ---------------------------------------------------------------------------------------------

/// 2023-11-14T22:13:20Z: the "now" of most tests.
pub const T0: UnixTime = UnixTime::from_millis(1_700_000_000_000);

/// The token lifetime of most tests.
pub const TTL: Duration = Duration::from_secs(60);

/// `t + d`.
pub fn after(t: UnixTime, d: Duration) -> UnixTime {
    t.checked_add(d).unwrap()
}

/// `t - d`.
pub fn before(t: UnixTime, d: Duration) -> UnixTime {
    let ms = u64::try_from(d.as_millis()).unwrap();
    UnixTime::from_millis(t.as_millis().checked_sub(ms).unwrap())
}

/// `t` plus `ms` milliseconds.
pub fn plus_ms(t: UnixTime, ms: u64) -> UnixTime {
    UnixTime::from_millis(t.as_millis() + ms)
}

/// 32 key bytes that differ for each `seed`.
pub fn key_bytes(seed: u8) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, x) in b.iter_mut().enumerate() {
        *x = seed.wrapping_mul(31).wrapping_add(u8::try_from(i).unwrap());
    }
    b
}

pub fn key(seed: u8) -> TokenKey {
    TokenKey::from_bytes(&key_bytes(seed)).unwrap()
}

pub fn keyset(seed: u8) -> KeySet {
    KeySet::single(key(seed))
}

/// A nonce that differs for each `n`.
pub fn nonce(n: u64) -> [u8; 16] {
    let mut out = [0xA5u8; 16];
    out[..8].copy_from_slice(&n.to_be_bytes());
    out
}

/// A deterministic token from the current key of `keys`.
pub fn token_for(
    keys: &KeySet,
    account: &AccountSid,
    call: &CallSid,
    now: UnixTime,
    n: u64,
) -> StreamToken {
    issue_with_nonce(keys.current(), account, call, now, TTL, nonce(n)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Twilio messages (PROTOCOL.md §2)
// ---------------------------------------------------------------------------------------------

pub fn connected_json() -> String {
    json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string()
}

/// A `start` message with the given SIDs and custom parameters (in order).
pub fn start_json(
    stream_sid: &str,
    account_sid: &str,
    call_sid: &str,
    params: &[(&str, &str)],
) -> String {
    let mut custom = serde_json::Map::new();
    for (k, v) in params {
        custom.insert((*k).to_owned(), json!(v));
    }
    json!({
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": stream_sid,
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": custom,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        }
    })
    .to_string()
}

pub fn media_json(stream_sid: &str, seq: u32, payload: &str) -> String {
    json!({
        "event": "media",
        "sequenceNumber": seq.to_string(),
        "streamSid": stream_sid,
        "media": {"track": "inbound", "chunk": seq.to_string(), "timestamp": "5", "payload": payload}
    })
    .to_string()
}

pub fn dtmf_json(stream_sid: &str) -> String {
    json!({
        "event": "dtmf",
        "sequenceNumber": "5",
        "streamSid": stream_sid,
        "dtmf": {"track": "inbound_track", "digit": "1"}
    })
    .to_string()
}

pub fn mark_json(stream_sid: &str) -> String {
    json!({
        "event": "mark",
        "sequenceNumber": "4",
        "streamSid": stream_sid,
        "mark": {"name": "label"}
    })
    .to_string()
}

pub fn stop_json(stream_sid: &str, account_sid: &str, call_sid: &str) -> String {
    json!({
        "event": "stop",
        "sequenceNumber": "5",
        "streamSid": stream_sid,
        "stop": {"accountSid": account_sid, "callSid": call_sid}
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// Encoding and leak checks
// ---------------------------------------------------------------------------------------------

/// Percent-encodes every byte except RFC 3986 unreserved characters (so `+` becomes `%2B`
/// and a space `%20`): the strictest form encoding, independent of the crate's decoder.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An `application/x-www-form-urlencoded` body from pairs, in order.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Fails if `text` (a Debug or Display rendering, an error, an output) contains any of the
/// `secrets`. Empty secrets are ignored.
#[track_caller]
pub fn assert_no_leak(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            s.is_empty() || !text.contains(s),
            "secret leaked into {text:?}"
        );
    }
}

/// `T` cannot carry a secret or any part of its input: it is `Copy` (so it holds no `String`,
/// `Vec` or `Box`) and at most 4 bytes (too small for a reference to text, 16 bytes, or a
/// nonce, 16). This is what stands behind "the error carries no token" for the crate's
/// fieldless error enums: asserting on their `Debug` output could not fail, this can, the day
/// one of them gains a field (and then its leak test must be written against real data).
#[track_caller]
pub fn assert_holds_no_data<T: Copy>() {
    let size = std::mem::size_of::<T>();
    assert!(
        size <= 4,
        "{} is {size} bytes: it may now carry input; test what it shows",
        std::any::type_name::<T>()
    );
}

/// Every way the bytes of a secret could plausibly be rendered: `{:?}` of the bytes, lowercase
/// and uppercase hex, standard and URL-safe base64, and the bytes as text when they are UTF-8.
pub fn renderings(bytes: &[u8]) -> Vec<String> {
    use base64::Engine as _;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![
        format!("{bytes:?}"),
        hex.clone(),
        hex.to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ];
    if let Ok(s) = std::str::from_utf8(bytes) {
        out.push(s.to_owned());
    }
    out
}

/// Each of `messages` (the `Display` of every variant of an error type) says something, and no
/// two say the same thing: a log line tells the reasons apart.
pub fn assert_distinct_messages(messages: &[String]) {
    for (i, m) in messages.iter().enumerate() {
        assert!(!m.trim().is_empty(), "message {i} is empty");
        for (j, other) in messages.iter().enumerate().skip(i + 1) {
            assert_ne!(m, other, "messages {i} and {j} are the same");
        }
    }
}
