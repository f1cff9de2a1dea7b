//! Target `token`: arbitrary text into `token::verify`, and issue → mutate → verify.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::limits::{MAX_TOKEN_TTL, TOKEN_NONCE_BYTES};
use crate::time::UnixTime;
use crate::token::{self, IssueError, TokenError};

use super::fixtures::{ACCOUNT, CALL, NOW, fixtures, violated};
use super::messages::{AccountChoice, ByteEdit, CallChoice, MAX_EDITS, apply_edit};

#[cfg(doc)]
use super::fixtures::{TOKEN_KEY, UNUSED_TOKEN_KEY};

/// Input of the `token` target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TokenInput {
    /// Any text into [`token::verify`] ([`token_verify`]).
    Verify(String),
    /// Issue, mutate, verify ([`token_mutation`]).
    Mutation(TokenMutation),
}

/// Issue a token, then alter it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TokenMutation {
    /// The account the token is issued for.
    pub account: AccountChoice,
    /// The call the token is issued for.
    pub call: CallChoice,
    /// Issued this many milliseconds after [`NOW`].
    pub issued_after_ms: u32,
    /// Lifetime in microseconds (up to 71 minutes: valid and invalid TTLs both occur).
    pub ttl_us: u32,
    /// The nonce.
    pub nonce: [u8; TOKEN_NONCE_BYTES],
    /// Edits of the token text (at most [`MAX_EDITS`]).
    pub text_edits: Vec<ByteEdit>,
    /// Edits of the decoded 61 bytes, re-encoded canonically (at most [`MAX_EDITS`]).
    pub raw_edits: Vec<ByteEdit>,
}

/// Target `token`: dispatches to [`token_verify`] or [`token_mutation`].
pub fn token(input: &TokenInput) -> bool {
    match input {
        TokenInput::Verify(text) => token_verify(text.as_bytes()),
        TokenInput::Mutation(m) => {
            token_mutation(m);
            false
        }
    }
}

/// `data` as a token presented for ([`ACCOUNT`], [`CALL`]) at [`NOW`]. Returns whether it
/// verified.
///
/// Invariants: verification is deterministic; it succeeds only for a live fixture token
/// issued with [`TOKEN_KEY`] for exactly this account and call, with the claims it was
/// issued with; it never succeeds with a key set that issued nothing ([`UNUSED_TOKEN_KEY`]);
/// anything not [`token::TOKEN_CHARS`] long fails on its length, before any decoding.
pub fn token_verify(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let fx = fixtures();
    let result = token::verify(&fx.keys, text, &fx.account, &fx.call, NOW);
    if result != token::verify(&fx.keys, text, &fx.account, &fx.call, NOW) {
        violated(format_args!("token::verify is not deterministic"));
    }
    if text.len() != token::TOKEN_CHARS && result != Err(TokenError::Length) {
        violated(format_args!(
            "a {}-character token gave {result:?}, not a length error",
            text.len()
        ));
    }
    if token::verify(&fx.unused_keys, text, &fx.account, &fx.call, NOW).is_ok() {
        violated(format_args!(
            "a token verified with a key that never issued anything: {text:?}"
        ));
    }
    match result {
        Ok(claims) => {
            let Some(issued) = fx.issued(text) else {
                violated(format_args!(
                    "a token that was never issued verified: {text:?}"
                ))
            };
            let ok = issued.by_token_key
                && issued.account == fx.account
                && issued.call == fx.call
                && NOW < issued.expires_at
                && claims.expires_at == issued.expires_at;
            if !ok {
                violated(format_args!(
                    "{:?} verified for {ACCOUNT} / {CALL} at NOW",
                    issued.which
                ));
            }
            true
        }
        Err(_) => false,
    }
}

/// Issues a token as `m` describes, checks it verifies exactly where it should, then checks
/// that every alteration of it is rejected.
///
/// Invariants: a token issues exactly when its TTL is between 1 ms and [`MAX_TOKEN_TTL`];
/// a fresh token is [`token::TOKEN_CHARS`] characters of the base64url
/// alphabet; it verifies for its own account and call from issuance until one millisecond
/// before its expiry, with the claims it was issued with; it does not verify at its expiry,
/// for another call, for another account, or with a key set that did not issue it; and no
/// text that differs from it (byte edits of the text, or bit edits of its decoded bytes
/// re-encoded canonically) verifies at all.
pub fn token_mutation(m: &TokenMutation) {
    let fx = fixtures();
    let (account, other_account) = match m.account {
        AccountChoice::Configured => (fx.account, fx.other_account),
        AccountChoice::Other => (fx.other_account, fx.account),
    };
    let (call, other_call) = match m.call {
        CallChoice::Call => (fx.call, fx.other_call),
        CallChoice::Other => (fx.other_call, fx.call),
    };
    let ttl = Duration::from_micros(u64::from(m.ttl_us));
    let issued_at = NOW.saturating_add(Duration::from_millis(u64::from(m.issued_after_ms)));
    let key = fx.keys.current();
    // Expiry has millisecond resolution: a TTL under 1 ms would mint a token expired on
    // arrival, and one over the maximum one no verifier accepts; both must be refused.
    let ttl_in_range = ttl.as_millis() > 0 && ttl <= MAX_TOKEN_TTL;
    let issued = match token::issue_with_nonce(key, &account, &call, issued_at, ttl, m.nonce) {
        Ok(t) if ttl_in_range => t,
        Err(IssueError::TtlOutOfRange) if !ttl_in_range => return,
        other => violated(format_args!("issuing with a TTL of {ttl:?} gave {other:?}")),
    };
    let text = issued.as_str();
    if text.len() != token::TOKEN_CHARS
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        violated(format_args!(
            "issued token {text:?} is not 82 base64url characters"
        ));
    }
    let expires_at = issued_at.saturating_add(ttl);
    let last_valid = UnixTime::from_millis(expires_at.as_millis().saturating_sub(1));
    for at in [issued_at, last_valid] {
        match token::verify(&fx.keys, text, &account, &call, at) {
            Ok(c) if c.expires_at == expires_at && c.nonce == m.nonce && c.key_id == key.id() => {}
            other => violated(format_args!(
                "a fresh token gave {other:?} at {at:?} (issued {issued_at:?}, ttl {ttl:?})"
            )),
        }
    }
    if token::verify(&fx.keys, text, &account, &call, expires_at) != Err(TokenError::Expired) {
        violated(format_args!("a token still verifies at its expiry"));
    }
    let rejected_elsewhere = token::verify(&fx.keys, text, &account, &other_call, issued_at)
        .is_err()
        && token::verify(&fx.keys, text, &other_account, &call, issued_at).is_err()
        && token::verify(&fx.unused_keys, text, &account, &call, issued_at).is_err();
    if !rejected_elsewhere {
        violated(format_args!(
            "a token verifies for another call, another account or another key"
        ));
    }

    let reject_unless_same = |candidate: &[u8], how: &str| {
        if candidate == text.as_bytes() {
            return;
        }
        let Ok(candidate) = std::str::from_utf8(candidate) else {
            return;
        };
        if let Ok(c) = token::verify(&fx.keys, candidate, &account, &call, issued_at) {
            violated(format_args!(
                "altered token {candidate:?} ({how}) verified: {c:?}; original {text:?}"
            ));
        }
    };
    let mut edited = text.as_bytes().to_vec();
    for e in m.text_edits.iter().take(MAX_EDITS) {
        apply_edit(&mut edited, *e);
        reject_unless_same(&edited, "text edit");
    }
    let Ok(mut raw) = URL_SAFE_NO_PAD.decode(text) else {
        violated(format_args!("an issued token is not base64url"))
    };
    for e in m.raw_edits.iter().take(MAX_EDITS) {
        apply_edit(&mut raw, *e);
        reject_unless_same(URL_SAFE_NO_PAD.encode(&raw).as_bytes(), "raw edit");
    }
}
