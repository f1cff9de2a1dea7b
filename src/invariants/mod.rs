//! The invariants the fuzz targets check, as plain functions that tests can call too.
//!
//! Each public function here takes one fuzz input, drives one function of the pure core with
//! it, and asserts what that function promises: not only "does not panic", but the security
//! properties a reviewer would state in words ("no media before authentication", "never
//! accepts without a valid signature"). A violated invariant panics with a message that
//! names it: a panic is what libFuzzer records as a crash and what `cargo test` reports as a
//! failure. The fuzz targets in `fuzz/fuzz_targets/` are a few lines each around these
//! functions; `tests/fuzz_invariants.rs` runs the same functions over the committed corpora.
//!
//! One file per fuzz target, so that each oracle is read next to the target it serves:
//!
//! | target | file | function | drives |
//! |---|---|---|---|
//! | `upgrade_request` | `upgrade_request.rs` | [`upgrade_request`] ([`check_upgrade`]) | [`crate::upgrade::decide`] on structured request heads |
//! | `upgrade_request_raw` | `upgrade_request_raw.rs` | [`upgrade_request_raw`] | [`crate::upgrade::decide`] on raw HTTP bytes (`httparse`) |
//! | `start_frame` | `start_frame.rs` | [`start_frame`] | [`crate::wire::frames::parse_inbound`] and the `start` checks of [`crate::session::Session::handle`] |
//! | `session` | `session.rs` | [`session()`] | [`crate::session::Session::handle`] over sequences of events on two connections |
//! | `token` | `token.rs` | [`token()`] ([`token_verify`], [`token_mutation`]) | [`crate::token::verify`], [`crate::token::issue_with_nonce`] |
//! | `twiml` | `twiml.rs` | [`twiml()`] | [`crate::wire::twiml::render`], checked with a real XML parser |
//! | `signature` | `signature.rs` | [`signature()`] | [`crate::signature::validate`], [`crate::signature::compute_signature`] |
//!
//! Shared by several targets: `fixtures.rs` (the fixed secrets, values and tokens below, and
//! the replay store holding them), `messages.rs` (Twilio's messages and byte edits) and
//! `checks.rs` (what an authenticated stream must be, for `start_frame` and `session`).
//!
//! # Fixed test secrets
//!
//! The functions use fixed, public secrets ([`TOKEN_KEY`], [`AUTH_TOKEN`]), a fixed
//! configured account ([`ACCOUNT`]) and a fixed clock ([`NOW`]), so that the committed
//! corpora can hold valid tokens and valid signatures and the fuzzer reaches the accepted
//! paths, where the interesting invariants are. Tokens are minted deterministically with
//! [`crate::token::issue_with_nonce`] ([`fixture_token`]). These values are in the source code: they
//! protect nothing, and a server must never be configured with them.
//!
//! # Speed
//!
//! Keys, tokens and messages that do not depend on the input are built once
//! ([`std::sync::OnceLock`]); each iteration builds only what the input describes and a
//! small in-memory replay store holding the fixture tokens ([`ON_RECORD`]).

// A violated invariant must crash the fuzzer (and fail the test): panicking is the point of
// this module. Nothing here runs in the server.
#![allow(clippy::panic)]

/// The crate's own code: what every target checks. Each target's `*Code` trait
/// ([`SignatureCode`], ...) has the crate's functions as its default methods, and the target
/// function (`signature(input)`) is its `*_with` twin (`signature_with(&Crate, input)`).
/// `tests/invariants_fire.rs` implements the traits with one method deliberately wrong and
/// asserts each oracle rejects it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Crate;

/// One input of a structured fuzz target, from the bytes libFuzzer hands it: a readable seed
/// (`fuzz/corpus/<target>/seed-*.json`, the JSON of the typed value, a format this crate owns
/// and `tests/fuzz_invariants.rs` writes from typed values) when the bytes are that, and
/// otherwise the bytes read with `arbitrary` exactly as `libfuzzer_sys::fuzz_target!` reads
/// a typed input (`arbitrary_take_rest`). `None` when neither reads them.
///
/// The seeds do not depend on `arbitrary`'s private byte format: a new `arbitrary` release
/// reads the fuzzer's own finds differently, but the seeds still mean what they say.
///
/// ```
/// use streamguard::invariants::{self, SignatureInput};
/// let seed = br#"{"url":{"Https":"s.example/hook"},"body":"None","header":"Computed","params":[]}"#;
/// let input: SignatureInput = invariants::decode_input(seed).unwrap();
/// assert!(invariants::signature(&input));
/// ```
pub fn decode_input<T>(data: &[u8]) -> Option<T>
where
    T: for<'a> arbitrary::Arbitrary<'a> + serde::de::DeserializeOwned,
{
    if data.first() == Some(&b'{')
        && let Ok(seed) = serde_json::from_slice(data)
    {
        return Some(seed);
    }
    T::arbitrary_take_rest(arbitrary::Unstructured::new(data)).ok()
}

mod checks;
mod fixtures;
mod messages;
mod session;
mod signature;
mod start_frame;
mod token;
mod twiml;
mod upgrade_request;
mod upgrade_request_raw;

pub use checks::{SessionCode, check_sid_text};
pub use fixtures::{
    ACCOUNT, AUTH_TOKEN, CALL, FixtureToken, NOW, ON_RECORD, OTHER_ACCOUNT, OTHER_AUTH_TOKEN,
    OTHER_CALL, OTHER_STREAM, OTHER_TOKEN_KEY, SESSION_MAX_MESSAGE_BYTES, STREAM, STREAM_PATH,
    TOKEN_KEY, TOKEN_TTL, UNUSED_TOKEN_KEY, fixture_token,
};
pub use messages::{
    AccountChoice, ByteEdit, CallChoice, MAX_EDITS, StartSpec, StreamChoice, Template, TokenChoice,
    apply_edit, message_json, start_json,
};
pub use session::{
    MAX_SESSION_STEPS, SessionEvent, SessionInput, SessionOutcome, Step, UrlTokenChoice, session,
    session_with,
};
pub use signature::{
    MAX_SIGNATURE_PARAMS, SignatureCode, SignatureHeader, SignatureInput, SignedBody, SignedUrl,
    expected_signature, expected_validate, expected_variants, signature, signature_with,
};
pub use start_frame::{StartOutcome, start_frame, start_frame_with};
pub use token::{
    TokenCode, TokenInput, TokenMutation, expected_token, token, token_mutation,
    token_mutation_with, token_verify, token_verify_with, token_with,
};
pub use twiml::{TwimlCode, stream_url_problems, twiml, twiml_with};
pub use upgrade_request::{
    HeaderName, HttpMethod, PolicyUrl, UpgradeCode, UpgradeHeader, UpgradeInput, UpgradeOutcome,
    UpgradeTarget, WEBSOCKET_KEY, check_upgrade, check_upgrade_with, upgrade_request,
    upgrade_request_with, upgrade_signature,
};
pub use upgrade_request_raw::{upgrade_request_raw, upgrade_request_raw_with};
