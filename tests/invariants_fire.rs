//! Every oracle of `streamguard::invariants` fires: for each fuzz target, the target's oracle
//! is run over an implementation of its `*Code` trait with one function deliberately wrong,
//! and must reject it with `invariant violated: ...` naming the broken promise; the same
//! input run over the crate's own code (`Crate`) must pass, so the rejection is the wrong
//! implementation's doing and not the input's.
//!
//! An oracle that passes a wrong implementation is a test that cannot fail: this file is what
//! shows the fuzz targets and the corpus replays (`tests/fuzz_invariants.rs`) can.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

use std::panic::{AssertUnwindSafe, catch_unwind};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use streamguard::invariants::{
    self, AUTH_TOKEN, Crate, SignatureCode, SignatureHeader, SignatureInput, SignedBody, SignedUrl,
};
use streamguard::secret::AuthToken;
use streamguard::signature::{self, SignatureError};

// ---------------------------------------------------------------------------------------------
// Running an oracle
// ---------------------------------------------------------------------------------------------

/// The message of the invariant `f` violates, or `None` if it returns.
fn violation(f: impl FnOnce()) -> Option<String> {
    let err = catch_unwind(AssertUnwindSafe(f)).err()?;
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    assert!(
        msg.starts_with("invariant violated: "),
        "panicked, but not with a violated invariant: {msg}"
    );
    Some(msg)
}

/// `wrong` must be rejected with a message containing `needle`, and `right` (the same input
/// over the crate's code) must pass.
fn assert_fires(what: &str, right: impl FnOnce(), wrong: impl FnOnce(), needle: &str) {
    if let Some(msg) = violation(right) {
        panic!("{what}: the crate's own code already fails: {msg}");
    }
    match violation(wrong) {
        None => panic!("{what}: the oracle accepted a deliberately wrong implementation"),
        Some(msg) => assert!(
            msg.contains(needle),
            "{what}: rejected, but for another reason than {needle:?}: {msg}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// signature
// ---------------------------------------------------------------------------------------------

/// HMAC-SHA1 of `url` and `params` under the fuzz auth token, with the pairs de-duplicated
/// and sorted in *descending* byte order: the mistake the old oracle could not see.
fn reverse_sorted_signature(url: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = params.iter().collect();
    pairs.sort();
    pairs.dedup();
    pairs.reverse();
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, AUTH_TOKEN.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(url.as_bytes());
    for (k, v) in pairs {
        ctx.update(k.as_bytes());
        ctx.update(v.as_bytes());
    }
    STANDARD.encode(ctx.sign().as_ref())
}

/// `compute_signature` and `validate` both with the parameter sort reversed: consistent with
/// each other, so only an oracle that computes the signature itself can tell.
struct ReversedSort;

impl SignatureCode for ReversedSort {
    fn compute_signature(&self, _: &AuthToken, url: &str, params: &[(String, String)]) -> String {
        reverse_sorted_signature(url, params)
    }

    fn validate(
        &self,
        _: &AuthToken,
        url: &str,
        params: &[(String, String)],
        _: Option<&[u8]>,
        header: Option<&[u8]>,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let (with, without) = signature::port_variants(url)?;
        if [with, without]
            .iter()
            .any(|v| reverse_sorted_signature(v, params).as_bytes() == header)
        {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Only `validate` reverses the sort; `compute_signature` is the crate's.
struct ReversedSortInValidate;

impl SignatureCode for ReversedSortInValidate {
    fn validate(
        &self,
        auth: &AuthToken,
        url: &str,
        params: &[(String, String)],
        body: Option<&[u8]>,
        header: Option<&[u8]>,
    ) -> Result<(), SignatureError> {
        ReversedSort.validate(auth, url, params, body, header)
    }
}

/// Accepts any well-formed header.
struct AcceptsAnySignature;

impl SignatureCode for AcceptsAnySignature {
    fn validate(
        &self,
        auth: &AuthToken,
        url: &str,
        params: &[(String, String)],
        body: Option<&[u8]>,
        header: Option<&[u8]>,
    ) -> Result<(), SignatureError> {
        match signature::validate(auth, url, params, body, header) {
            Err(SignatureError::Mismatch) => Ok(()),
            other => other,
        }
    }
}

/// Skips the `bodySHA256` comparison.
struct IgnoresBodyHash;

impl SignatureCode for IgnoresBodyHash {
    fn validate(
        &self,
        auth: &AuthToken,
        url: &str,
        params: &[(String, String)],
        body: Option<&[u8]>,
        header: Option<&[u8]>,
    ) -> Result<(), SignatureError> {
        match signature::validate(auth, url, params, body, header) {
            Err(SignatureError::BodyHashMismatch) => Ok(()),
            other => other,
        }
    }
}

/// Reports a missing header as a mismatch (the validation order says `Missing` first).
struct MissingAsMismatch;

impl SignatureCode for MissingAsMismatch {
    fn validate(
        &self,
        auth: &AuthToken,
        url: &str,
        params: &[(String, String)],
        body: Option<&[u8]>,
        header: Option<&[u8]>,
    ) -> Result<(), SignatureError> {
        match signature::validate(auth, url, params, body, header) {
            Err(SignatureError::Missing) => Err(SignatureError::Mismatch),
            other => other,
        }
    }
}

/// The SDKs' "https, else 80" default port: wrong for `wss` (`PROTOCOL.md` §4).
struct HttpsElse80;

impl SignatureCode for HttpsElse80 {
    fn port_variants(&self, url: &str) -> Result<(String, String), SignatureError> {
        let (with, without) = signature::port_variants(url)?;
        Ok((with.replacen(":443", ":80", 1), without))
    }
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn webhook(header: SignatureHeader) -> SignatureInput {
    SignatureInput {
        url: SignedUrl::Https("s.example/hook".to_owned()),
        body: SignedBody::None,
        header,
        params: params(&[("CallSid", "CA1"), ("AccountSid", "AC1"), ("From", "+1")]),
    }
}

#[test]
fn signature_oracle_catches_a_reversed_parameter_sort() {
    let input = webhook(SignatureHeader::Computed);
    assert_fires(
        "compute_signature and validate reversed",
        || assert!(invariants::signature_with(&Crate, &input)),
        || {
            invariants::signature_with(&ReversedSort, &input);
        },
        "compute_signature(",
    );
    assert_fires(
        "validate alone reversed",
        || assert!(invariants::signature_with(&Crate, &input)),
        || {
            invariants::signature_with(&ReversedSortInValidate, &input);
        },
        "validate(",
    );
    // With no parameter, or one, the order cannot matter: the reversed code is right there,
    // and the oracle must not reject it.
    for p in [params(&[]), params(&[("CallSid", "CA1")])] {
        let input = SignatureInput {
            params: p,
            ..webhook(SignatureHeader::Computed)
        };
        assert_eq!(
            violation(|| assert!(invariants::signature_with(&ReversedSort, &input))),
            None
        );
    }
}

#[test]
fn signature_oracle_catches_wrong_answers_of_validate() {
    let body = b"{\"a\":1}".to_vec();
    let other_hash = signature::body_sha256(b"{\"a\":2}");
    let cases: Vec<(&str, &dyn SignatureCode, SignatureInput, &str)> = vec![
        (
            "accepts a header made with another auth token",
            &AcceptsAnySignature,
            webhook(SignatureHeader::OtherAuthToken),
            "gave Ok(()), PROTOCOL.md §4 gives Err(Mismatch)",
        ),
        (
            "accepts an edited header",
            &AcceptsAnySignature,
            webhook(SignatureHeader::Edited(invariants::ByteEdit::FlipBit(3, 1))),
            "gave Ok(()), PROTOCOL.md §4 gives Err(Mismatch)",
        ),
        (
            "ignores the body hash",
            &IgnoresBodyHash,
            SignatureInput {
                url: SignedUrl::Https(format!("s.example/hook?bodySHA256={other_hash}")),
                body: SignedBody::Raw(body),
                header: SignatureHeader::Computed,
                params: vec![],
            },
            "PROTOCOL.md §4 gives Err(BodyHashMismatch)",
        ),
        (
            "a missing header reported as a mismatch",
            &MissingAsMismatch,
            webhook(SignatureHeader::Missing),
            "gave Err(Mismatch), PROTOCOL.md §4 gives Err(Missing)",
        ),
        (
            "port 80 for wss",
            &HttpsElse80,
            SignatureInput {
                url: SignedUrl::Wss("s.example/voice/stream".to_owned()),
                body: SignedBody::None,
                header: SignatureHeader::PortVariant { with_port: true },
                params: vec![],
            },
            "port_variants(",
        ),
    ];
    for (what, wrong, input, needle) in &cases {
        assert_fires(
            what,
            || {
                invariants::signature_with(&Crate, input);
            },
            || {
                invariants::signature_with(*wrong, input);
            },
            needle,
        );
    }
}
