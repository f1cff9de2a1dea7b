//! Target `token`: arbitrary text into `token::verify`, and issue → mutate → verify.
//!
//! The format is not taken from the crate: [`expected_token`] builds a token from the format
//! as `src/token.rs` documents it (HMAC-SHA256 over the label and the fields, computed here
//! with `ring::hmac`), and a freshly issued token must be exactly that. Known answers from an
//! independent Python script pin the same format in `tests/token.rs`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::limits::{MAX_TOKEN_TTL, TOKEN_NONCE_BYTES};
use crate::secret::{KeySet, TokenKey};
use crate::sid::{AccountSid, CallSid};
use crate::time::UnixTime;
use crate::token::{self, Claims, IssueError, TokenError};

use super::Crate;
use super::fixtures::{ACCOUNT, CALL, NOW, TOKEN_KEY, fixtures, violated};
use super::messages::{AccountChoice, ByteEdit, CallChoice, MAX_EDITS, apply_edit};

#[cfg(doc)]
use super::fixtures::UNUSED_TOKEN_KEY;

/// The code the `token` target checks: by default the crate's own functions. A test
/// implements it with one method replaced by a deliberately wrong one, to show the oracle
/// rejects it (`tests/invariants_fire.rs`).
pub trait TokenCode {
    /// [`token::issue_with_nonce`], the token as text.
    fn issue_with_nonce(
        &self,
        key: &TokenKey,
        account: &AccountSid,
        call: &CallSid,
        now: UnixTime,
        ttl: Duration,
        nonce: [u8; TOKEN_NONCE_BYTES],
    ) -> Result<String, IssueError> {
        token::issue_with_nonce(key, account, call, now, ttl, nonce).map(|t| t.as_str().to_owned())
    }

    /// [`token::verify`].
    fn verify(
        &self,
        keys: &KeySet,
        token: &str,
        account: &AccountSid,
        call: &CallSid,
        now: UnixTime,
    ) -> Result<Claims, TokenError> {
        token::verify(keys, token, account, call, now)
    }
}

impl TokenCode for Crate {}

/// The token `src/token.rs` documents for these fields (format version 1), built here with
/// `ring::hmac` and without `crate::token`:
/// `base64url-nopad(0x01 || key id || expiry || nonce || tag)`, where the key id is the first
/// four bytes of HMAC-SHA256(key, "streamguard token key id"), the expiry is milliseconds
/// since the epoch in 8 bytes big-endian, and the tag is HMAC-SHA256(key,
/// "streamguard stream token v1\0" || 0x01 || key id || AccountSid || CallSid || expiry ||
/// nonce).
pub fn expected_token(
    key: &[u8],
    account: &str,
    call: &str,
    expires_at_ms: u64,
    nonce: &[u8; TOKEN_NONCE_BYTES],
) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let id_tag = hmac::sign(&key, b"streamguard token key id");
    let key_id = id_tag.as_ref().get(..4).unwrap_or_default();
    let expiry = expires_at_ms.to_be_bytes();
    let mut ctx = hmac::Context::with_key(&key);
    for part in [
        b"streamguard stream token v1\0".as_slice(),
        &[1],
        key_id,
        account.as_bytes(),
        call.as_bytes(),
        &expiry,
        nonce,
    ] {
        ctx.update(part);
    }
    let tag = ctx.sign();
    let raw = [&[1u8][..], key_id, &expiry, nonce, tag.as_ref()].concat();
    URL_SAFE_NO_PAD.encode(raw)
}

/// Input of the `token` target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum TokenInput {
    /// Any text into [`token::verify`] ([`token_verify`]).
    Verify(String),
    /// Issue, mutate, verify ([`token_mutation`]).
    Mutation(TokenMutation),
}

/// Issue a token, then alter it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
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
    token_with(&Crate, input)
}

/// [`token()`] over `code`.
pub fn token_with<C: TokenCode + ?Sized>(code: &C, input: &TokenInput) -> bool {
    match input {
        TokenInput::Verify(text) => token_verify_with(code, text.as_bytes()),
        TokenInput::Mutation(m) => {
            token_mutation_with(code, m);
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
    token_verify_with(&Crate, data)
}

/// [`token_verify`] over `code`.
pub fn token_verify_with<C: TokenCode + ?Sized>(code: &C, data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let fx = fixtures();
    let result = code.verify(&fx.keys, text, &fx.account, &fx.call, NOW);
    if result != code.verify(&fx.keys, text, &fx.account, &fx.call, NOW) {
        violated(format_args!("token::verify is not deterministic"));
    }
    if text.len() != token::TOKEN_CHARS && result != Err(TokenError::Length) {
        violated(format_args!(
            "a {}-character token gave {result:?}, not a length error",
            text.len()
        ));
    }
    if code
        .verify(&fx.unused_keys, text, &fx.account, &fx.call, NOW)
        .is_ok()
    {
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
/// re-encoded canonically) verifies at all. A fresh token is byte for byte the documented
/// format ([`expected_token`]).
pub fn token_mutation(m: &TokenMutation) {
    token_mutation_with(&Crate, m);
}

/// [`token_mutation`] over `code`.
pub fn token_mutation_with<C: TokenCode + ?Sized>(code: &C, m: &TokenMutation) {
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
    let issued = match code.issue_with_nonce(key, &account, &call, issued_at, ttl, m.nonce) {
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
    let documented = expected_token(
        &TOKEN_KEY,
        account.as_str(),
        call.as_str(),
        expires_at.as_millis(),
        &m.nonce,
    );
    if text != documented {
        violated(format_args!(
            "issued token {text:?} is not the documented format's {documented:?}"
        ));
    }
    let last_valid = UnixTime::from_millis(expires_at.as_millis().saturating_sub(1));
    for at in [issued_at, last_valid] {
        match code.verify(&fx.keys, text, &account, &call, at) {
            Ok(c) if c.expires_at == expires_at && c.nonce == m.nonce && c.key_id == key.id() => {}
            other => violated(format_args!(
                "a fresh token gave {other:?} at {at:?} (issued {issued_at:?}, ttl {ttl:?})"
            )),
        }
    }
    if code.verify(&fx.keys, text, &account, &call, expires_at) != Err(TokenError::Expired) {
        violated(format_args!("a token still verifies at its expiry"));
    }
    let rejected_elsewhere = code
        .verify(&fx.keys, text, &account, &other_call, issued_at)
        .is_err()
        && code
            .verify(&fx.keys, text, &other_account, &call, issued_at)
            .is_err()
        && code
            .verify(&fx.unused_keys, text, &account, &call, issued_at)
            .is_err();
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
        if let Ok(c) = code.verify(&fx.keys, candidate, &account, &call, issued_at) {
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
