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
