//! Configuration that cannot work is refused with the rule that failed; configuration that
//! works but is probably not meant is accepted with a warning (`src/server/config.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

use std::time::Duration;

use streamguard::secret::{AuthToken, KeySet, TokenKey};
use streamguard::server::{Config, ConfigError, PublicUrl};
use streamguard::sid::AccountSid;
use streamguard::upgrade::SignatureMode;

fn config(public: &str) -> Config {
    Config::new(
        PublicUrl::parse(public).unwrap(),
        AuthToken::new("0123456789abcdef0123456789abcdef").unwrap(),
        AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap(),
        KeySet::single(TokenKey::from_bytes(&[9; 32]).unwrap()),
    )
}

/// Each refused `--public-url` with the words its message must contain.
#[test]
fn public_url_errors_name_the_rule_that_failed() {
    let cases: &[(&str, &str)] = &[
        ("voice.example.com", "must start with https://"),
        ("ftp://voice.example.com", "scheme must be https"),
        ("HTTPS://voice.example.com", "scheme must be https"),
        ("https://", "must name a host"),
        ("https:///voice", "must name a host"),
        ("https://voice.example.com/?x=1", "no query or fragment"),
        ("https://voice.example.com#top", "no query or fragment"),
        ("https://voice.example.com/a b", "no spaces"),
        ("https://voice.example.com:0", "port"),
        ("https://voice.example.com:99999", "port"),
    ];
    for (input, words) in cases {
        let e = PublicUrl::parse(input).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ConfigError::PublicUrl(_)), "{input}");
        assert!(text.contains(words), "{input}: {text}");
        assert!(text.starts_with("--public-url: "), "{input}: {text}");
    }
    for ok in [
        "https://voice.example.com",
        "https://voice.example.com/",
        "https://voice.example.com:8443/tenant-a",
        "http://127.0.0.1:8080",
    ] {
        assert!(PublicUrl::parse(ok).is_ok(), "{ok}");
    }
    let p = PublicUrl::parse("https://voice.example.com/tenant-a/").unwrap();
    assert_eq!(p.http(), "https://voice.example.com/tenant-a");
    assert_eq!(p.ws(), "wss://voice.example.com/tenant-a");
    assert_eq!(p.path_prefix(), "/tenant-a");
}

#[test]
fn settings_that_cannot_work_are_refused() {
    type Edit = fn(&mut Config);
    let cases: &[(&str, Edit, &str)] = &[
        (
            "TTL under a second (every token would expire before Twilio connects)",
            |c| c.token_ttl = Duration::from_millis(999),
            "--token-ttl",
        ),
        ("TTL zero", |c| c.token_ttl = Duration::ZERO, "--token-ttl"),
        (
            "TTL over an hour",
            |c| c.token_ttl = Duration::from_secs(3601),
            "--token-ttl",
        ),
        (
            "call memory shorter than the TTL",
            |c| c.call_memory = Duration::from_secs(30),
            "--call-memory",
        ),
        (
            "no streams per call",
            |c| c.streams_per_call = 0,
            "--streams-per-call",
        ),
        (
            "no call capacity",
            |c| c.call_capacity = 0,
            "--call-capacity",
        ),
        (
            "no connections",
            |c| c.max_connections = 0,
            "--max-connections",
        ),
        ("no pending", |c| c.max_pending = 0, "--max-pending"),
        (
            "routes collide",
            |c| c.stream_path = c.webhook_path.clone(),
            "must differ",
        ),
    ];
    for (what, edit, words) in cases {
        let mut c = config("https://voice.example.com");
        edit(&mut c);
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains(words), "{what}: {e}");
    }
    let mut c = config("https://voice.example.com");
    c.token_ttl = Duration::from_secs(1);
    c.call_memory = Duration::from_secs(1);
    assert_eq!(c.validate(), Ok(()), "the smallest working values");
}

#[test]
fn settings_that_work_but_surprise_are_warned_about() {
    let clean = config("https://voice.example.com");
    assert_eq!(clean.validate(), Ok(()));
    assert!(clean.warnings().is_empty(), "{:?}", clean.warnings());

    let http = config("http://voice.example.com");
    let w = http.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("31922") && w[0].contains("ws://voice.example.com/voice/stream"));

    let doubled = config("https://voice.example.com/voice/webhook");
    let w = doubled.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("https://voice.example.com/voice/webhook/voice/webhook"),
        "{w:?}"
    );

    for (mode, words) in [
        (SignatureMode::Off, "not checked"),
        (
            SignatureMode::IfPresent,
            "without X-Twilio-Signature are accepted",
        ),
    ] {
        let mut c = config("https://voice.example.com");
        c.upgrade_signature = mode;
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains(words), "{w:?}");
    }
}

/// The defaults and bounds the README's flags and refusals tables promise (values written
/// here by hand from those tables and the public record, not read from `limits`), and that
/// `Config::new` applies them: a change to one is a change of contract, made on purpose.
#[test]
fn the_documented_defaults_and_bounds_are_in_force() {
    use streamguard::limits::*;
    let c = config("https://voice.example.com");
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.webhook_path, "/voice/webhook");
    assert_eq!(c.stream_path, "/voice/stream");
    assert_eq!(c.token_ttl, Duration::from_secs(60));
    assert_eq!(c.call_memory, Duration::from_secs(14_400));
    assert_eq!(c.streams_per_call, 1);
    assert_eq!(c.call_capacity, 1_000_000);
    assert_eq!(c.start_timeout, Duration::from_millis(5000));
    assert_eq!(c.upgrade_signature, SignatureMode::Required);
    assert_eq!(c.max_pending, 1024);
    assert_eq!(c.max_pending_per_ip, 4);
    assert_eq!(c.max_streams, 1024);
    assert_eq!(c.max_message_bytes, 65_536);
    assert_eq!(c.max_connections, 4096);
    assert_eq!(c.metrics_listen, None);
    c.validate().unwrap();

    // Bounds: --token-ttl 1..=3600 s, --call-memory at most 30 days, --streams-per-call
    // 1..=100; the webhook body 64 KiB, request heads 16 KiB, the outbound budget 1 MiB (the
    // public record), the descriptor reserve 64.
    assert_eq!(
        (MIN_TOKEN_TTL, MAX_TOKEN_TTL),
        (Duration::from_secs(1), Duration::from_secs(3600))
    );
    assert_eq!(MAX_CALL_MEMORY, Duration::from_secs(2_592_000));
    let mut over = config("https://voice.example.com");
    over.call_memory = Duration::from_secs(2_592_001);
    assert!(over.validate().is_err(), "30 days and a second");
    over.call_memory = Duration::from_secs(2_592_000);
    over.validate().unwrap();
    assert_eq!(MAX_STREAMS_PER_CALL, 100);
    assert_eq!(MAX_WEBHOOK_BODY_BYTES, 65_536);
    assert_eq!(MAX_REQUEST_HEAD_BYTES, 16_384);
    assert_eq!(MAX_OUTBOUND_BUFFER_BYTES, 1_048_576);
    assert_eq!(FD_RESERVE, 64);
    assert_eq!(
        (WEBHOOK_BODY_TIMEOUT, HTTP_HEADER_TIMEOUT),
        (Duration::from_secs(10), Duration::from_secs(10))
    );
    // The accept back-off of the metrics table: 5 ms doubling to 1 s, a warning at most every 5 s.
    assert_eq!(
        (ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX, ACCEPT_WARN_EVERY),
        (
            Duration::from_millis(5),
            Duration::from_secs(1),
            Duration::from_secs(5)
        )
    );
}
