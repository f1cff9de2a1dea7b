//! Inputs that once broke (or would have broken) a fuzz invariant, replayed on every
//! `cargo test` through the same `streamguard::invariants` functions the fuzz targets call.
//!
//! When a fuzz target crashes: minimise the reproducer (`cargo fuzz tmin -s none TARGET
//! ARTIFACT`), inline it here as a test that calls the target's invariants function, keep the
//! artifact, and mark the test `#[ignore = "BUG: ..."]` until `src/` is fixed; the fix removes
//! the `ignore`. Never put a crashing input into `fuzz/corpus/`: `fuzz/run-all.sh` would fail
//! on it before fuzzing.
//!
//! The cases below were found by the core tests before the fuzz targets existed (commit
//! "Core tests: ... fix three edge cases they found"); each one violates a fuzz invariant
//! under the old code, so they stay here as regressions of the invariants themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

use streamguard::invariants::{self, AccountChoice, CallChoice, TokenMutation};
use streamguard::wire::twiml::StreamTwiml;

/// `check_url` used to lower-case `url.get(..6)`, which is `None` when byte 6 falls inside a
/// multi-byte character: `ws://é…` was refused as "not ws:// or wss://". Invariant: render
/// fails only for an input that has a problem.
#[test]
fn twiml_ws_url_with_non_ascii_host_renders() {
    let t = StreamTwiml::connect("ws://é.example/voice/stream");
    assert!(invariants::twiml(&t));
}

/// A URL with a scheme but no host (`wss:///path`) used to render. Invariant: render fails
/// exactly when the input has a problem (here: no host after the scheme).
#[test]
fn twiml_url_without_host_is_refused() {
    for url in ["wss:///voice/stream", "ws://", "WSS://"] {
        assert!(!invariants::twiml(&StreamTwiml::connect(url)), "{url}");
    }
}

/// `issue_with_nonce` used to accept a TTL under one millisecond and mint a token whose
/// expiry (millisecond resolution) was its issue time: expired on arrival. Invariant: a token
/// that issues verifies at its issue time; a TTL that cannot is refused.
#[test]
fn token_ttl_under_a_millisecond_is_refused_not_issued_expired() {
    for ttl_us in [0, 1, 500, 999, 1000, 1001] {
        invariants::token_mutation(&TokenMutation {
            account: AccountChoice::Configured,
            call: CallChoice::Call,
            issued_after_ms: 0,
            ttl_us,
            nonce: [9; 16],
            text_edits: vec![],
            raw_edits: vec![],
        });
    }
}
