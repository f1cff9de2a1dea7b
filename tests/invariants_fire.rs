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

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use streamguard::invariants::{
    self, AUTH_TOKEN, AccountChoice, ByteEdit, CallChoice, Crate, FixtureToken, SessionCode,
    SessionEvent, SessionInput, SignatureCode, SignatureHeader, SignatureInput, SignedBody,
    SignedUrl, StartSpec, Step, StreamChoice, TOKEN_KEY, TokenChoice, TokenCode, TokenInput,
    TokenMutation, TwimlCode, UpgradeCode, UpgradeHeader, UpgradeInput, UpgradeTarget,
    UrlTokenChoice,
};
use streamguard::secret::{AuthToken, KeySet, TokenKey};
use streamguard::session::{AuthContext, CloseCode, Event, Output, Reason, Session, StreamInfo};
use streamguard::sid::{AccountSid, CallSid};
use streamguard::signature::{self, SignatureError};
use streamguard::time::UnixTime;
use streamguard::token::{self, Claims, IssueError, TokenError};
use streamguard::upgrade::{
    self, Accepted, RequestHead, SignatureMode, UpgradePolicy, UpgradeReject,
};
use streamguard::wire::frames::{self, FrameError, Inbound, StartFrame};
use streamguard::wire::twiml::{self, StreamTwiml, TwimlError};

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

// ---------------------------------------------------------------------------------------------
// token
// ---------------------------------------------------------------------------------------------

/// HMAC-SHA256 under the fuzz token key, of `label` and the documented MAC input.
fn tag_with_label(
    label: &[u8],
    key_id: &[u8],
    a: &AccountSid,
    c: &CallSid,
    expiry: &[u8],
    nonce: &[u8],
) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &TOKEN_KEY);
    let mut ctx = hmac::Context::with_key(&key);
    for part in [
        label,
        &[1],
        key_id,
        a.as_bytes(),
        c.as_bytes(),
        expiry,
        nonce,
    ] {
        ctx.update(part);
    }
    ctx.sign()
}

const LABEL_V2: &[u8] = b"streamguard stream token v2\0";

/// Issues and verifies tokens whose MAC covers another label: self-consistent (what it issues,
/// it verifies, for the right call and account only), so only an oracle that knows the
/// documented format can tell. A rolling deploy mixing it with the real code would refuse
/// every token the other side issued.
struct LabelV2;

impl TokenCode for LabelV2 {
    fn issue_with_nonce(
        &self,
        key: &TokenKey,
        account: &AccountSid,
        call: &CallSid,
        now: UnixTime,
        ttl: Duration,
        nonce: [u8; 16],
    ) -> Result<String, IssueError> {
        let expiry = token::expiry(now, ttl)?.as_millis().to_be_bytes();
        let key_id = key.id().to_bytes();
        let tag = tag_with_label(LABEL_V2, &key_id, account, call, &expiry, &nonce);
        Ok(URL_SAFE_NO_PAD.encode([&[1u8][..], &key_id, &expiry, &nonce, tag.as_ref()].concat()))
    }

    fn verify(
        &self,
        keys: &KeySet,
        text: &str,
        account: &AccountSid,
        call: &CallSid,
        now: UnixTime,
    ) -> Result<Claims, TokenError> {
        let raw = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| TokenError::Encoding)?;
        if text.len() != token::TOKEN_CHARS || raw.len() != token::TOKEN_BYTES {
            return Err(TokenError::Length);
        }
        if raw[0] != 1 {
            return Err(TokenError::Version);
        }
        let fuzz_key = TokenKey::from_bytes(&TOKEN_KEY).unwrap();
        if raw[1..5] != fuzz_key.id().to_bytes() || keys.current().id() != fuzz_key.id() {
            return Err(TokenError::UnknownKey);
        }
        let tag = tag_with_label(
            LABEL_V2,
            &raw[1..5],
            account,
            call,
            &raw[5..13],
            &raw[13..29],
        );
        if tag.as_ref() != &raw[29..] {
            return Err(TokenError::BadMac);
        }
        let expires_at = UnixTime::from_millis(u64::from_be_bytes(raw[5..13].try_into().unwrap()));
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(Claims {
            key_id: fuzz_key.id(),
            expires_at,
            nonce: raw[13..29].try_into().unwrap(),
        })
    }
}

/// Does not check the expiry.
struct NoExpiry;

impl TokenCode for NoExpiry {
    fn verify(
        &self,
        keys: &KeySet,
        text: &str,
        account: &AccountSid,
        call: &CallSid,
        now: UnixTime,
    ) -> Result<Claims, TokenError> {
        // Checked as of one millisecond before the token's own expiry, whatever `now` is.
        let as_of = URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|raw| {
                raw.get(5..13)
                    .map(|e| u64::from_be_bytes(e.try_into().unwrap()))
            })
            .map_or(now, |expiry| {
                UnixTime::from_millis(expiry.saturating_sub(1))
            });
        token::verify(keys, text, account, call, as_of)
    }
}

/// Verifies a token for its call whatever call it is presented for (the MAC does not cover
/// the CallSid).
struct IgnoresCall;

impl TokenCode for IgnoresCall {
    fn verify(
        &self,
        keys: &KeySet,
        text: &str,
        account: &AccountSid,
        call: &CallSid,
        now: UnixTime,
    ) -> Result<Claims, TokenError> {
        let other = CallSid::parse(invariants::OTHER_CALL).unwrap();
        token::verify(keys, text, account, call, now)
            .or_else(|_| token::verify(keys, text, account, &other, now))
            .or_else(|_| {
                token::verify(
                    keys,
                    text,
                    account,
                    &CallSid::parse(invariants::CALL).unwrap(),
                    now,
                )
            })
    }
}

/// Reads only the first 82 characters, so anything appended to a token is accepted.
struct ReadsAPrefix;

impl TokenCode for ReadsAPrefix {
    fn verify(
        &self,
        keys: &KeySet,
        text: &str,
        account: &AccountSid,
        call: &CallSid,
        now: UnixTime,
    ) -> Result<Claims, TokenError> {
        token::verify(
            keys,
            text.get(..token::TOKEN_CHARS).unwrap_or(text),
            account,
            call,
            now,
        )
    }
}

/// Decodes before checking the length: a wrong length is reported as an encoding error.
struct DecodesFirst;

impl TokenCode for DecodesFirst {
    fn verify(
        &self,
        keys: &KeySet,
        text: &str,
        account: &AccountSid,
        call: &CallSid,
        now: UnixTime,
    ) -> Result<Claims, TokenError> {
        match token::verify(keys, text, account, call, now) {
            Err(TokenError::Length) => Err(TokenError::Encoding),
            other => other,
        }
    }
}

/// Issues with a TTL under a millisecond: a token expired on arrival.
struct IssuesZeroTtl;

impl TokenCode for IssuesZeroTtl {
    fn issue_with_nonce(
        &self,
        key: &TokenKey,
        account: &AccountSid,
        call: &CallSid,
        now: UnixTime,
        ttl: Duration,
        nonce: [u8; 16],
    ) -> Result<String, IssueError> {
        let ttl = if ttl.as_millis() == 0 {
            Duration::from_millis(1)
        } else {
            ttl
        };
        token::issue_with_nonce(key, account, call, now, ttl, nonce).map(|t| t.as_str().to_owned())
    }
}

fn mutation(ttl_us: u32, text_edits: Vec<ByteEdit>) -> TokenMutation {
    TokenMutation {
        account: AccountChoice::Configured,
        call: CallChoice::Call,
        issued_after_ms: 0,
        ttl_us,
        nonce: [7; 16],
        text_edits,
        raw_edits: vec![],
    }
}

#[test]
fn token_oracle_catches_a_changed_mac_label() {
    let input = mutation(60_000_000, vec![]);
    assert_fires(
        "MAC label v2 in issue and verify",
        || invariants::token_mutation_with(&Crate, &input),
        || invariants::token_mutation_with(&LabelV2, &input),
        "is not the documented format's",
    );
    // The oracle's own format is the one the independent Python vectors pin
    // (tests/token.rs checks expected_token against tests/data/token-vectors.json).
}

#[test]
fn token_oracles_catch_wrong_verification() {
    let fixture = |t| TokenInput::Verify(invariants::fixture_token(t).to_owned());
    let cases: Vec<(&str, &dyn TokenCode, TokenInput, &str)> = vec![
        (
            "accepts an expired fixture token",
            &NoExpiry,
            fixture(FixtureToken::Expired),
            "Expired verified for",
        ),
        (
            "accepts the token of another call",
            &IgnoresCall,
            fixture(FixtureToken::OtherCall),
            "OtherCall verified for",
        ),
        (
            "a fresh token verifies for another call",
            &IgnoresCall,
            TokenInput::Mutation(mutation(60_000_000, vec![])),
            "verifies for another call",
        ),
        (
            "accepts a token with a character appended",
            &ReadsAPrefix,
            TokenInput::Mutation(mutation(60_000_000, vec![ByteEdit::Insert(82, b'A')])),
            "altered token",
        ),
        (
            "reports a wrong length as an encoding error",
            &DecodesFirst,
            TokenInput::Verify("not-a-token".to_owned()),
            "not a length error",
        ),
        (
            "issues a token with a TTL under a millisecond",
            &IssuesZeroTtl,
            TokenInput::Mutation(mutation(999, vec![])),
            "issuing with a TTL of",
        ),
    ];
    for (what, wrong, input, needle) in &cases {
        assert_fires(
            what,
            || {
                invariants::token_with(&Crate, input);
            },
            || {
                invariants::token_with(*wrong, input);
            },
            needle,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// twiml
// ---------------------------------------------------------------------------------------------

/// The crate's renderer, with its output or its answer changed by `edit`.
struct EditedRender(fn(&StreamTwiml, Result<String, TwimlError>) -> Result<String, TwimlError>);

impl TwimlCode for EditedRender {
    fn render(&self, t: &StreamTwiml) -> Result<String, TwimlError> {
        (self.0)(t, twiml::render(t))
    }
}

const STREAM_URL: &str = "wss://streamguard.example/voice/stream";

#[test]
fn twiml_oracle_catches_wrong_renderings() {
    let good = || {
        StreamTwiml::connect(STREAM_URL)
            .parameter("token", "t")
            .parameter("x", "a\nb&c")
    };
    let cases: Vec<(&str, EditedRender, StreamTwiml, &str)> = vec![
        (
            "renders a URL with a query (the query stripped)",
            EditedRender(|t, r| match r {
                Err(TwimlError::UrlHasQuery) => twiml::render(&StreamTwiml {
                    url: t.url.split('?').next().unwrap().to_owned(),
                    ..t.clone()
                }),
                other => other,
            }),
            StreamTwiml::connect(format!("{STREAM_URL}?token=t")),
            "render accepted an input with problems [UrlHasQuery]",
        ),
        (
            "renders a URL without a host",
            EditedRender(|t, r| match r {
                Err(TwimlError::UrlScheme) => Ok(format!(
                    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{}" /></Connect></Response>"#,
                    t.url
                )),
                other => other,
            }),
            StreamTwiml::connect("wss://user@/voice/stream"),
            "render accepted an input with problems [UrlScheme]",
        ),
        (
            "refuses a good input",
            EditedRender(|_, _| Err(TwimlError::UrlScheme)),
            good(),
            "render refused with UrlScheme, but the input's problems are []",
        ),
        (
            "refuses a repeated parameter name with the wrong error",
            EditedRender(|_, r| r.map_err(|_| TwimlError::UrlHasQuery)),
            good().parameter("token", "again"),
            "render refused with UrlHasQuery",
        ),
        (
            "indents the document",
            EditedRender(|_, r| r.map(|x| x.replace("<Connect>", "\n  <Connect>"))),
            good(),
            "raw tab or line break",
        ),
        (
            "a space between elements",
            EditedRender(|_, r| r.map(|x| x.replace("<Connect>", " <Connect>"))),
            good(),
            "non-element node",
        ),
        (
            "no XML declaration",
            EditedRender(|_, r| {
                r.map(|x| x.replace(r#"<?xml version="1.0" encoding="UTF-8"?>"#, ""))
            }),
            good(),
            "does not start with the declaration",
        ),
        (
            "an unescaped ampersand",
            EditedRender(|_, r| r.map(|x| x.replace("&amp;", "&"))),
            good(),
            "is not XML",
        ),
        (
            "a line feed escaped as a space",
            EditedRender(|_, r| r.map(|x| x.replace("&#10;", " "))),
            good(),
            "<Parameter>",
        ),
        (
            "a parameter dropped",
            EditedRender(|t, _| {
                let mut fewer = t.clone();
                fewer.parameters.pop();
                twiml::render(&fewer)
            }),
            good(),
            "<Parameter>s for 2 parameters",
        ),
        (
            "<Start> instead of <Connect>",
            EditedRender(|_, r| r.map(|x| x.replace("Connect>", "Start>"))),
            good(),
            "is not <Response><Connect>",
        ),
        (
            "attributes out of order",
            EditedRender(|_, r| {
                r.map(|x| {
                    x.replace(
                        r#"name="call 1" track="both_tracks""#,
                        r#"track="both_tracks" name="call 1""#,
                    )
                })
            }),
            StreamTwiml {
                verb: twiml::Verb::Start,
                name: Some("call 1".to_owned()),
                track: Some(twiml::Track::Both),
                ..good()
            },
            "<Stream> attributes",
        ),
    ];
    for (what, wrong, input, needle) in &cases {
        assert_fires(
            what,
            || {
                invariants::twiml_with(&Crate, input);
            },
            || {
                invariants::twiml_with(wrong, input);
            },
            needle,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// upgrade_request, upgrade_request_raw
// ---------------------------------------------------------------------------------------------

/// Never checks the signature.
struct NoSignatureCheck;

impl UpgradeCode for NoSignatureCheck {
    fn decide(
        &self,
        head: &RequestHead,
        policy: &UpgradePolicy<'_>,
    ) -> Result<Accepted, UpgradeReject> {
        upgrade::decide(
            head,
            &UpgradePolicy {
                mode: SignatureMode::Off,
                ..*policy
            },
        )
    }
}

/// Signs against the host a proxy header names, instead of the configured URL.
struct TrustsForwardedHost;

impl UpgradeCode for TrustsForwardedHost {
    fn decide(
        &self,
        head: &RequestHead,
        policy: &UpgradePolicy<'_>,
    ) -> Result<Accepted, UpgradeReject> {
        let forwarded = head
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-host"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        match forwarded {
            Some(host) => {
                let url = format!("wss://{host}{}", policy.stream_path);
                upgrade::decide(
                    head,
                    &UpgradePolicy {
                        signed_url: &url,
                        ..*policy
                    },
                )
            }
            None => upgrade::decide(head, policy),
        }
    }
}

/// Answers with a `Sec-WebSocket-Accept` computed without RFC 6455's GUID.
struct AcceptKeyWithoutGuid;

impl UpgradeCode for AcceptKeyWithoutGuid {
    fn decide(
        &self,
        head: &RequestHead,
        policy: &UpgradePolicy<'_>,
    ) -> Result<Accepted, UpgradeReject> {
        upgrade::decide(head, policy).map(|mut a| {
            let key = head
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &key);
            a.accept_key = STANDARD.encode(digest.as_ref());
            a
        })
    }
}

/// Answers 503 (capacity is the server's decision, not this one's).
struct Busy;

impl UpgradeCode for Busy {
    fn decide(&self, _: &RequestHead, _: &UpgradePolicy<'_>) -> Result<Accepted, UpgradeReject> {
        Err(UpgradeReject::PendingFull)
    }
}

/// Checks the method before the path: a POST to another path is a 405, not a 404.
struct MethodFirst;

impl UpgradeCode for MethodFirst {
    fn decide(
        &self,
        head: &RequestHead,
        policy: &UpgradePolicy<'_>,
    ) -> Result<Accepted, UpgradeReject> {
        if head.method != "GET" {
            return Err(UpgradeReject::Method);
        }
        upgrade::decide(head, policy)
    }
}

/// `if-present` refuses what `required` accepts.
struct StricterIfPresent;

impl UpgradeCode for StricterIfPresent {
    fn decide(
        &self,
        head: &RequestHead,
        policy: &UpgradePolicy<'_>,
    ) -> Result<Accepted, UpgradeReject> {
        if policy.mode == SignatureMode::IfPresent {
            return Err(UpgradeReject::Signature(SignatureError::Mismatch));
        }
        upgrade::decide(head, policy)
    }
}

/// Answers differently the second time it is asked.
struct Flaky(Cell<u32>);

impl UpgradeCode for Flaky {
    fn decide(
        &self,
        head: &RequestHead,
        policy: &UpgradePolicy<'_>,
    ) -> Result<Accepted, UpgradeReject> {
        self.0.set(self.0.get() + 1);
        if self.0.get() == 2 {
            return Err(UpgradeReject::NotFound);
        }
        upgrade::decide(head, policy)
    }
}

fn handshake(extra: Vec<UpgradeHeader>) -> UpgradeInput {
    let mut headers = vec![
        UpgradeHeader::Upgrade,
        UpgradeHeader::Connection,
        UpgradeHeader::Version,
        UpgradeHeader::Key,
    ];
    headers.extend(extra);
    UpgradeInput {
        policy: invariants::PolicyUrl::NoPort,
        method: invariants::HttpMethod::Get,
        target: UpgradeTarget::StreamPath,
        headers,
    }
}

#[test]
fn upgrade_oracles_catch_wrong_decisions() {
    let signed = || handshake(vec![UpgradeHeader::Signature { with_port: false }]);
    let evil_url = "wss://evil.example/voice/stream";
    let flaky = Flaky(Cell::new(0));
    let cases: Vec<(&str, &dyn UpgradeCode, UpgradeInput, &str)> = vec![
        (
            "accepts an unsigned upgrade under required",
            &NoSignatureCheck,
            handshake(vec![]),
            "accepted with mode required and 0 X-Twilio-Signature",
        ),
        (
            "signs against X-Forwarded-Host",
            &TrustsForwardedHost,
            handshake(vec![
                UpgradeHeader::Named {
                    name: invariants::HeaderName::XForwardedHost,
                    lowercase: false,
                    value: b"evil.example".to_vec(),
                },
                UpgradeHeader::Named {
                    name: invariants::HeaderName::XTwilioSignature,
                    lowercase: false,
                    value: invariants::expected_signature(AUTH_TOKEN, evil_url, &[]).into_bytes(),
                },
            ]),
            "do not match the policy URL",
        ),
        (
            "Sec-WebSocket-Accept without the GUID",
            &AcceptKeyWithoutGuid,
            signed(),
            "Sec-WebSocket-Accept is not RFC 6455's",
        ),
        ("answers 503", &Busy, signed(), "decide answered 503"),
        (
            "405 for another path",
            &MethodFirst,
            UpgradeInput {
                method: invariants::HttpMethod::Post,
                target: UpgradeTarget::Raw("/other".to_owned()),
                ..signed()
            },
            "not 404",
        ),
        (
            "if-present stricter than required",
            &StricterIfPresent,
            signed(),
            "accepted with required but not if-present",
        ),
        ("not deterministic", &flaky, signed(), "not deterministic"),
    ];
    for (what, wrong, input, needle) in &cases {
        assert_fires(
            what,
            || {
                invariants::upgrade_request_with(&Crate, input);
            },
            || {
                invariants::upgrade_request_with(*wrong, input);
            },
            needle,
        );
    }
    // The raw target shares the oracle.
    let raw = b"GET /voice/stream HTTP/1.1\r\nHost: streamguard.example\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    assert_fires(
        "raw: accepts an unsigned upgrade under required",
        || assert!(invariants::upgrade_request_raw_with(&Crate, raw).is_some()),
        || {
            invariants::upgrade_request_raw_with(&NoSignatureCheck, raw);
        },
        "accepted with mode required and 0 X-Twilio-Signature",
    );
}

// ---------------------------------------------------------------------------------------------
// start_frame, session (and the shared checks of an authenticated stream)
// ---------------------------------------------------------------------------------------------

/// The crate's state machine, with each answer passed through `alter(state before, event,
/// the crate's answer)`.
struct Altered(for<'a> fn(&Session, Event<'a>, Transition<'a>) -> Transition<'a>);

/// What `Session::handle` answers: the next state and the output.
type Transition<'a> = (Session, Output<'a>);

impl SessionCode for Altered {
    fn handle<'a>(
        &self,
        session: Session,
        event: Event<'a>,
        now: UnixTime,
        ctx: &AuthContext<'_>,
    ) -> Transition<'a> {
        let before = session.clone();
        let answer = session.handle(event, now, ctx);
        (self.0)(&before, event, answer)
    }
}

/// The crate's code, with the close code of one reason changed.
struct CloseCodeOf(fn(Reason) -> CloseCode);

impl SessionCode for CloseCodeOf {
    fn close_code(&self, reason: Reason) -> CloseCode {
        (self.0)(reason)
    }
}

/// The crate's parser with its answer passed through `alter(text, the crate's answer)`.
struct AlteredParser(for<'a> fn(&'a str, Parsed<'a>) -> Parsed<'a>);

/// What `frames::parse_inbound` answers.
type Parsed<'a> = Result<Inbound<'a>, FrameError>;

impl SessionCode for AlteredParser {
    fn parse_inbound<'a>(&self, text: &'a str, max_bytes: usize) -> Parsed<'a> {
        (self.0)(text, frames::parse_inbound(text, max_bytes))
    }
}

/// A media fast path that also takes messages with a repeated field (the last value wins).
struct LenientFastPath;

impl SessionCode for LenientFastPath {
    fn parse_media_fast<'a>(&self, text: &'a str) -> Option<frames::MediaFrame<'a>> {
        let once = text.replacen(&format!(r#""streamSid":"{}","#, invariants::STREAM), "", 1);
        frames::parse_media_fast(&once).map(frames::MediaFrame::into_owned)
    }
}

/// A parser that answers differently the second time.
struct FlakyParser(Cell<u32>);

impl SessionCode for FlakyParser {
    fn parse_inbound<'a>(&self, text: &'a str, max_bytes: usize) -> Parsed<'a> {
        self.0.set(self.0.get() + 1);
        if self.0.get() == 2 {
            return Err(FrameError::Syntax);
        }
        frames::parse_inbound(text, max_bytes)
    }
}

fn text_of<'a>(event: &Event<'a>) -> Option<Inbound<'a>> {
    match event {
        Event::Text(t) => frames::parse_inbound(t, usize::MAX).ok(),
        _ => None,
    }
}

/// What the application would learn from `start`, token included.
fn info_of(start: &StartFrame) -> StreamInfo {
    StreamInfo {
        account_sid: start.start.account_sid,
        call_sid: start.start.call_sid,
        stream_sid: start.stream_sid,
        tracks: start.start.tracks.clone(),
        custom_parameters: start.start.custom_parameters.clone(),
        media_format: start.start.media_format.clone(),
    }
}

fn authenticate(start: &StartFrame) -> Transition<'static> {
    let info = Box::new(info_of(start));
    (
        Session::Streaming(info.clone()),
        Output::Authenticated(info),
    )
}

fn steps(events: Vec<(bool, SessionEvent)>) -> SessionInput {
    SessionInput {
        first_url: UrlTokenChoice::None,
        second_url: UrlTokenChoice::None,
        steps: events
            .into_iter()
            .map(|(second, event)| Step { second, event })
            .collect(),
    }
}

fn on_first(events: Vec<SessionEvent>) -> SessionInput {
    steps(events.into_iter().map(|e| (false, e)).collect())
}

fn valid_start() -> SessionEvent {
    SessionEvent::Start(StartSpec::valid())
}

fn start_with(f: impl FnOnce(&mut StartSpec)) -> SessionEvent {
    let mut spec = StartSpec::valid();
    f(&mut spec);
    SessionEvent::Start(spec)
}

#[test]
fn session_oracle_catches_wrong_state_machines() {
    let media = SessionEvent::Media(StreamChoice::Stream);
    let cases: Vec<(&str, &dyn SessionCode, SessionInput, &str)> = vec![
        (
            "media delivered before start",
            &Altered(|before, e, answer| match (before, text_of(&e)) {
                (Session::AwaitingStart { .. }, Some(Inbound::Media(m))) => {
                    (before.clone(), Output::Media(m))
                }
                _ => answer,
            }),
            on_first(vec![media.clone()]),
            "reached the application before authentication",
        ),
        (
            "authenticates without the replay store: a token twice",
            &Altered(|_, _, answer| match answer {
                (Session::Redeeming(info), Output::Redeem(_)) => (
                    Session::Streaming(info.clone()),
                    Output::Authenticated(info),
                ),
                other => other,
            }),
            steps(vec![(false, valid_start()), (true, valid_start())]),
            "opened a second stream (single use)",
        ),
        (
            "authenticates without the replay store: a token it never minted",
            &Altered(|_, _, answer| match answer {
                (Session::Redeeming(info), Output::Redeem(_)) => (
                    Session::Streaming(info.clone()),
                    Output::Authenticated(info),
                ),
                other => other,
            }),
            on_first(vec![start_with(|s| {
                s.token = TokenChoice::Fixture(FixtureToken::SecondForCall);
            })]),
            "a token the replay store never minted",
        ),
        (
            "a second start accepted",
            &Altered(|before, e, answer| match (before, text_of(&e)) {
                (Session::Streaming(info), Some(Inbound::Start(_))) => {
                    (before.clone(), Output::Authenticated(info.clone()))
                }
                _ => answer,
            }),
            on_first(vec![valid_start(), valid_start()]),
            "a second start was accepted on one connection",
        ),
        (
            "another account authenticated",
            &Altered(|_, e, answer| match (&answer.1, text_of(&e)) {
                (Output::Close(Reason::AccountMismatch), Some(Inbound::Start(s))) => {
                    authenticate(&s)
                }
                _ => answer,
            }),
            on_first(vec![start_with(|s| s.account = AccountChoice::Other)]),
            "instead of the configured",
        ),
        (
            "the token left in the parameters",
            &Altered(|_, e, answer| match (answer, text_of(&e)) {
                ((Session::Redeeming(_), Output::Redeem(r)), Some(Inbound::Start(s))) => {
                    (Session::Redeeming(Box::new(info_of(&s))), Output::Redeem(r))
                }
                (answer, _) => answer,
            }),
            on_first(vec![valid_start()]),
            "the token is still in the custom parameters",
        ),
        (
            "no start deadline",
            &Altered(|before, _, answer| match answer.1 {
                Output::Close(Reason::StartTimeout) => (before.clone(), Output::Nothing),
                _ => answer,
            }),
            on_first(vec![SessionEvent::Tick(5000)]),
            "past its deadline gave Nothing",
        ),
        (
            "a tick before the deadline closes",
            &Altered(|_, e, answer| match e {
                Event::Tick => (Session::Closed, Output::Close(Reason::StartTimeout)),
                _ => answer,
            }),
            on_first(vec![SessionEvent::Tick(1)]),
            "a tick before the deadline gave",
        ),
        (
            "media of another stream delivered",
            &Altered(|before, e, answer| match (before, text_of(&e)) {
                (Session::Streaming(_), Some(Inbound::Media(m))) => {
                    (before.clone(), Output::Media(m))
                }
                _ => answer,
            }),
            on_first(vec![
                valid_start(),
                SessionEvent::Media(StreamChoice::Other),
            ]),
            "was delivered to stream",
        ),
        (
            "stop leaves the stream open",
            &Altered(|before, _, answer| match answer.1 {
                Output::Stop(s) => (before.clone(), Output::Stop(s)),
                _ => answer,
            }),
            on_first(vec![
                valid_start(),
                SessionEvent::Stop(StreamChoice::Stream),
            ]),
            "the session closed = false",
        ),
        (
            "a closed session reopens",
            &Altered(|before, _, answer| match before {
                Session::Closed => (Session::Closed, Output::Close(Reason::Binary)),
                _ => answer,
            }),
            on_first(vec![SessionEvent::PeerClosed, SessionEvent::Binary]),
            "a closed session produced",
        ),
        (
            "a ping while streaming closes",
            &Altered(|before, e, answer| match (before, e) {
                (Session::Streaming(_), Event::Control) => {
                    (Session::Closed, Output::Close(Reason::ControlBeforeStart))
                }
                _ => answer,
            }),
            on_first(vec![valid_start(), SessionEvent::Control]),
            "a ping while streaming gave",
        ),
        (
            "a successful redemption answered by a close",
            &Altered(|_, e, answer| match e {
                Event::Redeemed(Ok(())) => (Session::Closed, Output::Close(Reason::OutOfOrder)),
                _ => answer,
            }),
            on_first(vec![valid_start()]),
            "the redemption result Ok(()) was answered by Close",
        ),
        (
            "binary closed with 1009",
            &CloseCodeOf(|r| match r {
                Reason::Binary => CloseCode::TooBig,
                r => r.close_code(),
            }),
            on_first(vec![SessionEvent::Binary]),
            "carries 1009, the specification says 1003",
        ),
        (
            "a refused token closed with 1011",
            &CloseCodeOf(|r| match r {
                Reason::Token(_) => CloseCode::Internal,
                r => r.close_code(),
            }),
            on_first(vec![start_with(|s| {
                s.token = TokenChoice::Raw("x".to_owned())
            })]),
            "not 1003, 1008 or 1009",
        ),
    ];
    for (what, wrong, input, needle) in &cases {
        assert_fires(
            what,
            || {
                invariants::session_with(&Crate, input);
            },
            || {
                invariants::session_with(*wrong, input);
            },
            needle,
        );
    }
}

#[test]
fn start_frame_oracle_catches_wrong_parsers_and_sessions() {
    let start = invariants::start_json(&StartSpec::valid());
    let media = invariants::message_json(invariants::Template::Media, StreamChoice::Stream);
    let connected = invariants::message_json(invariants::Template::Connected, StreamChoice::Stream);
    let other_account = invariants::start_json(&StartSpec {
        account: AccountChoice::Other,
        ..StartSpec::valid()
    });
    let oversized = format!("{media}{}", " ".repeat(70_000));
    let flaky = FlakyParser(Cell::new(0));
    let repeated_sid = media.replacen(
        r#""streamSid":"#,
        &format!(r#""streamSid":"{}","streamSid":"#, invariants::STREAM),
        1,
    );
    let cases: Vec<(&str, &dyn SessionCode, &str, &str)> = vec![
        (
            "a start with two streamSids parsed",
            // Consistently: the top-level streamSid of every start is read as OTHER_STREAM,
            // so that re-encoding agrees and only the two-streamSids check can object.
            &AlteredParser(|text, r| {
                let text = text.replacen(invariants::OTHER_STREAM, invariants::STREAM, 1);
                match frames::parse_inbound(&text, usize::MAX) {
                    Ok(Inbound::Start(mut s)) => {
                        s.stream_sid =
                            streamguard::sid::StreamSid::parse(invariants::OTHER_STREAM).unwrap();
                        Ok(Inbound::Start(s))
                    }
                    _ => r,
                }
            }),
            &start,
            "a start with two streamSids was parsed",
        ),
        (
            "a parser that changes its answer",
            &flaky,
            &start,
            "parse_inbound is not deterministic",
        ),
        (
            "a media fast path that takes a repeated streamSid",
            &LenientFastPath,
            &repeated_sid,
            "the media fast path gave",
        ),
        (
            "a parsed message that does not survive re-encoding",
            &AlteredParser(|_, r| match r {
                Ok(Inbound::Media(mut m)) => {
                    m.media.payload.to_mut().push('=');
                    Ok(Inbound::Media(m))
                }
                other => other,
            }),
            &media,
            "re-encoded message",
        ),
        (
            "media before start",
            &Altered(|before, e, answer| match (before, text_of(&e)) {
                (Session::AwaitingStart { .. }, Some(Inbound::Media(m))) => {
                    (before.clone(), Output::Media(m))
                }
                _ => answer,
            }),
            &media,
            "reached the application before authentication",
        ),
        (
            "media first ignored",
            &Altered(|before, _, answer| match answer.1 {
                Output::Close(Reason::EventBeforeStart) => (before.clone(), Output::Nothing),
                _ => answer,
            }),
            &media,
            "silently accepted",
        ),
        (
            "authenticated on connected",
            &Altered(|_, e, answer| match text_of(&e) {
                Some(Inbound::Connected(_)) => {
                    let start = invariants::start_json(&StartSpec::valid());
                    match frames::parse_inbound(&start, usize::MAX) {
                        Ok(Inbound::Start(s)) => authenticate(&s),
                        _ => answer,
                    }
                }
                _ => answer,
            }),
            &connected,
            "authenticated on a message that is not a start",
        ),
        (
            "another account authenticated",
            &Altered(|_, e, answer| match (&answer.1, text_of(&e)) {
                (Output::Close(Reason::AccountMismatch), Some(Inbound::Start(s))) => {
                    authenticate(&s)
                }
                _ => answer,
            }),
            &other_account,
            "instead of the configured",
        ),
        (
            "an oversized message closed with 1008",
            &CloseCodeOf(|r| match r {
                Reason::Frame(FrameError::TooLarge) => CloseCode::Policy,
                r => r.close_code(),
            }),
            &oversized,
            "closed with 1008",
        ),
        (
            "a text message closed with 1003",
            &CloseCodeOf(|r| match r {
                Reason::EventBeforeStart => CloseCode::Unsupported,
                r => r.close_code(),
            }),
            &media,
            "closed with 1003",
        ),
    ];
    for (what, wrong, text, needle) in &cases {
        assert_fires(
            what,
            || {
                invariants::start_frame_with(&Crate, text.as_bytes());
            },
            || {
                invariants::start_frame_with(*wrong, text.as_bytes());
            },
            needle,
        );
    }
}

/// The SID check every target makes of what the parser and the session hand on (without
/// `crate::sid`), fed SIDs the crate's types would never produce.
#[test]
fn the_sid_check_rejects_what_is_not_a_sid() {
    let ok = invariants::ACCOUNT;
    assert_eq!(
        violation(|| invariants::check_sid_text("accountSid", ok, "AC")),
        None
    );
    for (text, prefix) in [
        (invariants::CALL, "AC"),
        (&ok[..33], "AC"),
        (&format!("{ok}0")[..], "AC"),
        (&ok.replace('f', "g")[..], "AC"),
        ("", "MZ"),
    ] {
        let msg = violation(|| invariants::check_sid_text("sid", text, prefix))
            .unwrap_or_else(|| panic!("{text:?} passed as an {prefix} SID"));
        assert!(msg.contains("is not a valid"), "{msg}");
    }
}
