//! The voice webhook decision (`src/webhook.rs`) with minting through the in-memory replay
//! store (`src/store/`), composed as the server composes them: a signed form webhook gets
//! `200` TwiML with exactly one token `<Parameter>` that verifies for that call and account; a
//! replay within the TTL gets byte-identical TwiML; a call that has streamed gets nothing for
//! its call memory; every refusal (405, 413, 415, 403, 400, 503) has its exact reason and
//! status, and records nothing (`MemoryStore::len` unchanged).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod common;

use std::time::Duration;

use common::{ACCOUNT, CALL, OTHER_ACCOUNT, OTHER_CALL, T0, TTL, account, call, keyset};
use futures_util::FutureExt as _;
use ring::rand::SystemRandom;
use streamguard::limits::{DEFAULT_CALL_MEMORY, MAX_WEBHOOK_BODY_BYTES, MAX_WEBHOOK_PARAMS};
use streamguard::secret::{AuthToken, KeySet};
use streamguard::sid::{AccountSid, CallSid};
use streamguard::signature::{SignatureError, compute_signature};
use streamguard::store::{self, MemoryStore, StoreError, StoreKey, StorePolicy};
use streamguard::time::UnixTime;
use streamguard::token::{TokenError, verify};
use streamguard::upgrade::RequestHead;
use streamguard::webhook::{
    CONTENT_TYPE_XML, CallTwiml, WebhookPolicy, WebhookReject, answer, decide,
};
use streamguard::wire::form;

const SIGNED_URL: &str = "https://streamguard.example.com/voice/webhook";
const STREAM_URL: &str = "wss://streamguard.example.com/voice/stream";
const AUTH: &str = "f1e2d3c4b5a6978877665544332211ff";
const FORM: &str = "application/x-www-form-urlencoded";

struct World {
    auth: AuthToken,
    account: AccountSid,
    keys: KeySet,
    store: MemoryStore,
    store_key: StoreKey,
}

/// What the server answers a webhook with.
struct Answer {
    call_sid: CallSid,
    twiml: String,
}

fn policy(streams_per_call: u32) -> StorePolicy {
    StorePolicy {
        token_ttl: TTL,
        call_memory: DEFAULT_CALL_MEMORY,
        streams_per_call,
    }
}

impl World {
    fn new() -> Self {
        Self::with_store(MemoryStore::new(1024, policy(1)))
    }

    fn with_store(store: MemoryStore) -> Self {
        let auth = AuthToken::new(AUTH).unwrap();
        Self {
            store_key: StoreKey::derive(&auth),
            auth,
            account: account(ACCOUNT),
            keys: keyset(1),
            store,
        }
    }

    fn policy(&self) -> WebhookPolicy<'_> {
        WebhookPolicy {
            signed_url: SIGNED_URL,
            auth: &self.auth,
            account: &self.account,
        }
    }

    /// `decide`, then the mint through the store, then the TwiML: the server's steps.
    fn decide_at(&self, r: &Request, now: UnixTime) -> Result<Answer, WebhookReject> {
        let verified = decide(&r.head, &r.body, &self.policy())?;
        let token = store::mint(
            &self.store,
            &self.store_key,
            &self.keys,
            &verified.account_sid,
            &verified.call_sid,
            now,
            TTL,
            &SystemRandom::new(),
        )
        .now_or_never()
        .expect("the memory store answers at once")?;
        let twiml = answer(STREAM_URL, &token, &CallTwiml::default())
            .map_err(|_| WebhookReject::Internal)?;
        Ok(Answer {
            call_sid: verified.call_sid,
            twiml,
        })
    }

    fn decide(&self, r: &Request) -> Result<Answer, WebhookReject> {
        self.decide_at(r, T0)
    }

    /// Opens the stream of `token` for (ACCOUNT, `call_sid`) at `now`, as the server does
    /// after the session verified it.
    fn redeem(&self, token: &str, call_sid: &str, now: UnixTime) -> Result<(), store::RedeemError> {
        let claims = verify(&self.keys, token, &account(ACCOUNT), &call(call_sid), now).unwrap();
        store::redeem(
            &self.store,
            &self.store_key,
            &account(ACCOUNT),
            &call(call_sid),
            &claims,
            now,
        )
        .now_or_never()
        .expect("the memory store answers at once")
    }
}

/// Twilio's voice webhook parameters for `call_sid` in `account_sid`.
fn twilio_params<'a>(account_sid: &'a str, call_sid: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", account_sid),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Called", "+18005551212"),
        ("Caller", "+14158675309"),
        ("Direction", "inbound"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]
}

#[derive(Clone)]
struct Request {
    head: RequestHead,
    body: Vec<u8>,
}

impl Request {
    /// A POST of `params`, form-encoded, signed by `auth` over `signed_over` (the URL Twilio
    /// would have requested).
    fn signed(params: &[(&str, &str)], auth: &str, signed_over: &str, target: &str) -> Self {
        let sig = compute_signature(&AuthToken::new(auth).unwrap(), signed_over, params);
        Self {
            head: RequestHead {
                method: "POST".to_owned(),
                target: target.to_owned(),
                headers: vec![
                    ("Host".to_owned(), b"streamguard.example.com".to_vec()),
                    ("Content-Type".to_owned(), FORM.as_bytes().to_vec()),
                    ("X-Twilio-Signature".to_owned(), sig.into_bytes()),
                    ("I-Twilio-Idempotency-Token".to_owned(), b"abc".to_vec()),
                ],
            },
            body: common::form_encode(params).into_bytes(),
        }
    }

    /// The normal case: Twilio's parameters for (ACCOUNT, CALL), correctly signed.
    fn good() -> Self {
        Self::signed(
            &twilio_params(ACCOUNT, CALL),
            AUTH,
            SIGNED_URL,
            "/voice/webhook",
        )
    }

    fn method(mut self, m: &str) -> Self {
        self.head.method = m.to_owned();
        self
    }

    fn remove(mut self, name: &str) -> Self {
        self.head
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn set(self, name: &str, value: &[u8]) -> Self {
        self.remove(name).add(name, value)
    }

    fn add(mut self, name: &str, value: &[u8]) -> Self {
        self.head.headers.push((name.to_owned(), value.to_vec()));
        self
    }

    fn body(mut self, b: &[u8]) -> Self {
        self.body = b.to_vec();
        self
    }
}

/// The token of the single `<Parameter>` of a TwiML answer, after checking the document's
/// exact shape.
fn token_of(twiml: &str) -> String {
    let doc = roxmltree::Document::parse(twiml).unwrap();
    let params: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("Parameter"))
        .collect();
    assert_eq!(params.len(), 1, "{twiml}");
    assert_eq!(params[0].attribute("name"), Some("token"));
    let stream = params[0].parent().unwrap();
    assert!(stream.has_tag_name("Stream"));
    assert_eq!(stream.attribute("url"), Some(STREAM_URL));
    assert!(stream.parent().unwrap().has_tag_name("Connect"));
    let token = params[0].attribute("value").unwrap().to_owned();
    // The exact bytes, written out here rather than by the renderer.
    assert_eq!(
        twiml,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{STREAM_URL}"><Parameter name="token" value="{token}" /></Stream></Connect></Response>"#
        )
    );
    token
}

#[test]
fn signed_webhook_gets_twiml_with_a_token_for_that_call() {
    let w = World::new();
    let acc = w.decide(&Request::good()).unwrap();
    assert_eq!(acc.call_sid.as_str(), CALL);
    let token = token_of(&acc.twiml);
    assert!(verify(&w.keys, &token, &account(ACCOUNT), &call(CALL), T0).is_ok());
    // Bound to that call and account only.
    assert_eq!(
        verify(&w.keys, &token, &account(ACCOUNT), &call(OTHER_CALL), T0).map(|_| ()),
        Err(TokenError::BadMac)
    );
    assert_eq!(
        verify(&w.keys, &token, &account(OTHER_ACCOUNT), &call(CALL), T0).map(|_| ()),
        Err(TokenError::BadMac)
    );
    // Valid for the configured TTL.
    assert_eq!(
        verify(
            &w.keys,
            &token,
            &account(ACCOUNT),
            &call(CALL),
            common::after(T0, TTL)
        )
        .map(|_| ()),
        Err(TokenError::Expired)
    );
    assert_eq!(w.store.len(), 1);
    // Debug of the verified webhook names the parameters, never their values.
    let verified = decide(&Request::good().head, &Request::good().body, &w.policy()).unwrap();
    let shown = format!("{verified:?}");
    assert!(shown.contains("From"), "{shown}");
    common::assert_no_leak(&shown, &[&token, "+14158675309", "+18005551212"]);
    assert_eq!(CONTENT_TYPE_XML, "text/xml");
}

#[test]
fn replayed_webhook_gets_byte_identical_twiml() {
    let w = World::new();
    let first = w.decide(&Request::good()).unwrap();
    for now in [
        T0,
        common::plus_ms(T0, 1),
        common::before(common::after(T0, TTL), Duration::from_millis(1)),
    ] {
        let again = w.decide_at(&Request::good(), now).unwrap();
        assert_eq!(again.twiml, first.twiml, "{now:?}");
        assert_eq!(w.store.len(), 1);
    }
    // Once the token has expired, a new one is minted.
    let later = common::after(T0, TTL);
    let fresh = w.decide_at(&Request::good(), later).unwrap();
    assert_ne!(token_of(&fresh.twiml), token_of(&first.twiml));
    assert!(
        verify(
            &w.keys,
            &token_of(&fresh.twiml),
            &account(ACCOUNT),
            &call(CALL),
            later
        )
        .is_ok()
    );
    // Another call gets another token.
    let other = Request::signed(
        &twilio_params(ACCOUNT, OTHER_CALL),
        AUTH,
        SIGNED_URL,
        "/voice/webhook",
    );
    let other = w.decide_at(&other, later).unwrap();
    assert_eq!(other.call_sid.as_str(), OTHER_CALL);
    assert_ne!(token_of(&other.twiml), token_of(&fresh.twiml));
}

/// Requests that are accepted although they differ from the plain one.
#[test]
fn accepted_variants() {
    let params = twilio_params(ACCOUNT, CALL);
    let cases: Vec<(&str, Request)> = vec![
        (
            "signed over the :443 port variant",
            Request::signed(
                &params,
                AUTH,
                "https://streamguard.example.com:443/voice/webhook",
                "/voice/webhook",
            ),
        ),
        (
            "query string, signed with it",
            Request::signed(
                &params,
                AUTH,
                &format!("{SIGNED_URL}?tenant=acme"),
                "/voice/webhook?tenant=acme",
            ),
        ),
        (
            "content type with charset",
            Request::good().set("Content-Type", format!("{FORM}; charset=utf-8").as_bytes()),
        ),
        (
            "content type in upper case",
            Request::good().set("Content-Type", FORM.to_uppercase().as_bytes()),
        ),
        ("parameters in another order", {
            let mut p = params.clone();
            p.reverse();
            Request::signed(&p, AUTH, SIGNED_URL, "/voice/webhook")
        }),
    ];
    for (name, r) in cases {
        let w = World::new();
        let acc = w.decide(&r).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(
            verify(
                &w.keys,
                &token_of(&acc.twiml),
                &account(ACCOUNT),
                &call(CALL),
                T0
            )
            .is_ok(),
            "{name}"
        );
    }
}

/// Every refusal: the exact reason, the status, nothing minted, nothing secret in the error.
#[test]
fn rejection_table() {
    let good = Request::good();
    let params = twilio_params(ACCOUNT, CALL);
    let without = |name: &str| -> Vec<(&str, &str)> {
        params.iter().copied().filter(|(k, _)| *k != name).collect()
    };
    let with = |extra: (&'static str, &'static str)| -> Vec<(&str, &str)> {
        let mut p = params.clone();
        p.push(extra);
        p
    };
    let replace = |name: &str, value: &'static str| -> Vec<(&str, &str)> {
        params
            .iter()
            .map(|(k, v)| if *k == name { (*k, value) } else { (*k, *v) })
            .collect()
    };
    let signed = |p: &[(&str, &str)]| Request::signed(p, AUTH, SIGNED_URL, "/voice/webhook");
    let too_large = vec![b'a'; MAX_WEBHOOK_BODY_BYTES + 1];
    let many: Vec<(String, String)> = (0..=MAX_WEBHOOK_PARAMS)
        .map(|i| (format!("p{i}"), "1".to_owned()))
        .collect();
    let many_ref: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let tampered_body = common::form_encode(&replace("CallSid", OTHER_CALL));

    let cases: Vec<(&str, Request, WebhookReject, u16)> = vec![
        (
            "GET",
            good.clone().method("GET"),
            WebhookReject::Method,
            405,
        ),
        (
            "lowercase post",
            good.clone().method("post"),
            WebhookReject::Method,
            405,
        ),
        (
            "GET with a huge body is 405",
            good.clone().method("GET").body(&too_large),
            WebhookReject::Method,
            405,
        ),
        (
            "body over the limit",
            good.clone().body(&too_large),
            WebhookReject::TooLarge,
            413,
        ),
        (
            "unsigned body over the limit is 413",
            good.clone().remove("X-Twilio-Signature").body(&too_large),
            WebhookReject::TooLarge,
            413,
        ),
        (
            "missing signature",
            good.clone().remove("X-Twilio-Signature"),
            WebhookReject::Signature(SignatureError::Missing),
            403,
        ),
        (
            "malformed signature",
            good.clone().set("X-Twilio-Signature", b"nope"),
            WebhookReject::Signature(SignatureError::Malformed),
            403,
        ),
        (
            "repeated signature",
            {
                let sig = compute_signature(&AuthToken::new(AUTH).unwrap(), SIGNED_URL, &params);
                good.clone().add("X-Twilio-Signature", sig.as_bytes())
            },
            WebhookReject::Signature(SignatureError::Malformed),
            403,
        ),
        (
            "signed with another auth token",
            Request::signed(&params, "another-auth-token", SIGNED_URL, "/voice/webhook"),
            WebhookReject::Signature(SignatureError::Mismatch),
            403,
        ),
        (
            "signed over the Host-derived URL",
            Request::signed(
                &params,
                AUTH,
                "https://evil.example/voice/webhook",
                "/voice/webhook",
            )
            .set("Host", b"evil.example"),
            WebhookReject::Signature(SignatureError::Mismatch),
            403,
        ),
        (
            "signed over an X-Forwarded URL",
            Request::signed(
                &params,
                AUTH,
                "http://streamguard.example.com/voice/webhook",
                "/voice/webhook",
            )
            .add("X-Forwarded-Proto", b"http"),
            WebhookReject::Signature(SignatureError::Mismatch),
            403,
        ),
        (
            "query present, signed without it",
            Request::signed(&params, AUTH, SIGNED_URL, "/voice/webhook?tenant=acme"),
            WebhookReject::Signature(SignatureError::Mismatch),
            403,
        ),
        (
            "body changed after signing",
            good.clone().body(tampered_body.as_bytes()),
            WebhookReject::Signature(SignatureError::Mismatch),
            403,
        ),
        (
            "extra parameter after signing",
            good.clone()
                .body(format!("{}&Extra=1", common::form_encode(&params)).as_bytes()),
            WebhookReject::Signature(SignatureError::Mismatch),
            403,
        ),
        (
            "not a form (JSON content type)",
            good.clone().set("Content-Type", b"application/json"),
            WebhookReject::UnsupportedMediaType,
            415,
        ),
        (
            "JSON body correctly signed over bodySHA256",
            json_webhook(),
            WebhookReject::UnsupportedMediaType,
            415,
        ),
        (
            "unsigned JSON body",
            json_webhook().remove("X-Twilio-Signature"),
            WebhookReject::UnsupportedMediaType,
            415,
        ),
        (
            "no content type",
            good.clone().remove("Content-Type"),
            WebhookReject::UnsupportedMediaType,
            415,
        ),
        (
            "content type repeated",
            good.clone().add("Content-Type", FORM.as_bytes()),
            WebhookReject::UnsupportedMediaType,
            415,
        ),
        (
            "malformed escape",
            good.clone().body(b"AccountSid=%zz"),
            WebhookReject::MalformedForm,
            403,
        ),
        (
            "not UTF-8",
            good.clone().body(&[0xff, 0xfe, b'=', b'1']),
            WebhookReject::MalformedForm,
            403,
        ),
        (
            "too many parameters",
            signed(&many_ref),
            WebhookReject::MalformedForm,
            403,
        ),
        // Validly signed, but the account is not ours.
        (
            "other AccountSid",
            signed(&twilio_params(OTHER_ACCOUNT, CALL)),
            WebhookReject::Account,
            403,
        ),
        (
            "missing AccountSid",
            signed(&without("AccountSid")),
            WebhookReject::Account,
            403,
        ),
        (
            "repeated AccountSid",
            signed(&with(("AccountSid", ACCOUNT))),
            WebhookReject::Account,
            403,
        ),
        (
            "AccountSid and another",
            signed(&with(("AccountSid", OTHER_ACCOUNT))),
            WebhookReject::Account,
            403,
        ),
        (
            "malformed AccountSid",
            signed(&replace("AccountSid", "AC123")),
            WebhookReject::Account,
            403,
        ),
        (
            "AccountSid in upper case",
            signed(&replace("AccountSid", "AC0123456789ABCDEF0123456789ABCDEF")),
            WebhookReject::Account,
            403,
        ),
        (
            "accountsid (wrong name case)",
            signed(
                &without("AccountSid")
                    .into_iter()
                    .chain([("accountsid", ACCOUNT)])
                    .collect::<Vec<_>>(),
            ),
            WebhookReject::Account,
            403,
        ),
        // Validly signed, our account, but no usable call.
        (
            "missing CallSid",
            signed(&without("CallSid")),
            WebhookReject::CallSid,
            400,
        ),
        (
            "malformed CallSid",
            signed(&replace("CallSid", "CA123")),
            WebhookReject::CallSid,
            400,
        ),
        (
            "CallSid with another prefix",
            signed(&replace("CallSid", ACCOUNT)),
            WebhookReject::CallSid,
            400,
        ),
        (
            "empty CallSid",
            signed(&replace("CallSid", "")),
            WebhookReject::CallSid,
            400,
        ),
        (
            "repeated CallSid",
            signed(&with(("CallSid", CALL))),
            WebhookReject::CallSid,
            400,
        ),
        (
            "two CallSids",
            signed(&with(("CallSid", OTHER_CALL))),
            WebhookReject::CallSid,
            400,
        ),
    ];
    for (name, r, reason, status) in cases {
        let w = World::new();
        let got = w.decide(&r);
        assert_eq!(got.map(|a| a.call_sid), Err(reason), "{name}");
        assert_eq!(reason.status(), status, "{name}");
        assert!(w.store.is_empty(), "{name}: the store recorded a token");
    }
    // A rejection holds no data, so it cannot carry the auth token or the signature (which
    // searching its `Debug` could never have found).
    common::assert_holds_no_data::<WebhookReject>();
}

/// A JSON webhook signed as Twilio signs JSON bodies (`bodySHA256` in the URL): valid, but
/// not the voice webhook's form.
fn json_webhook() -> Request {
    let body = format!(r#"{{"AccountSid":"{ACCOUNT}","CallSid":"{CALL}"}}"#);
    let url = format!(
        "{SIGNED_URL}?bodySHA256={}",
        streamguard::signature::body_sha256(body.as_bytes())
    );
    let sig = compute_signature::<&str, &str>(&AuthToken::new(AUTH).unwrap(), &url, &[]);
    let target = url.strip_prefix("https://streamguard.example.com").unwrap();
    Request {
        head: RequestHead {
            method: "POST".to_owned(),
            target: target.to_owned(),
            headers: vec![
                ("Content-Type".to_owned(), b"application/json".to_vec()),
                ("X-Twilio-Signature".to_owned(), sig.into_bytes()),
            ],
        },
        body: body.into_bytes(),
    }
}

#[test]
fn full_store_is_503_and_records_nothing_new() {
    let w = World::with_store(MemoryStore::new(1, policy(1)));
    let first = w.decide(&Request::good()).unwrap();
    let other = Request::signed(
        &twilio_params(ACCOUNT, OTHER_CALL),
        AUTH,
        SIGNED_URL,
        "/voice/webhook",
    );
    let got = w.decide(&other).map(|a| a.call_sid);
    assert_eq!(got, Err(WebhookReject::Store(StoreError::Full)));
    assert_eq!(WebhookReject::Store(StoreError::Full).status(), 503);
    assert_eq!(
        WebhookReject::Store(StoreError::Full).as_str(),
        "call_records_full"
    );
    assert_eq!(w.store.len(), 1);
    // The known call still gets its token, and can stream: redemption adds no record.
    assert_eq!(w.decide(&Request::good()).unwrap().twiml, first.twiml);
    assert_eq!(w.redeem(&token_of(&first.twiml), CALL, T0), Ok(()));
    // The first call has streamed, so its record is kept for the call memory even after its
    // token expired: the store stays full, and fails closed rather than forget it.
    let later = common::after(T0, TTL);
    assert_eq!(
        w.decide_at(&other, later).map(|a| a.call_sid),
        Err(WebhookReject::Store(StoreError::Full))
    );
    // After the call memory, the record is forgotten and the other call gets its token.
    let much_later = common::after(T0, DEFAULT_CALL_MEMORY);
    assert_eq!(
        w.decide_at(&other, much_later)
            .map(|a| a.call_sid.as_str().to_owned()),
        Ok(OTHER_CALL.to_owned())
    );
}

/// The captured-webhook replay: once the call has streamed, the same signed webhook gets no
/// token (403, the generic refusal) for the whole call memory, not only within the TTL; a
/// call minted for but never streamed gets the same token within the TTL and a new one after.
#[test]
fn a_streamed_call_is_refused_a_new_token_for_its_call_memory() {
    let w = World::new();
    let token = token_of(&w.decide(&Request::good()).unwrap().twiml);
    assert_eq!(w.redeem(&token, CALL, T0), Ok(()));
    for (what, at) in [
        ("at once", T0),
        ("after the TTL", common::after(T0, TTL)),
        (
            "610 s later (the reported replay)",
            common::after(T0, Duration::from_secs(610)),
        ),
        (
            "1 ms before the call memory ends",
            common::before(
                common::after(T0, DEFAULT_CALL_MEMORY),
                Duration::from_millis(1),
            ),
        ),
    ] {
        let got = w.decide_at(&Request::good(), at).map(|a| a.call_sid);
        assert_eq!(got, Err(WebhookReject::CallAlreadyStreamed), "{what}");
        assert_eq!(WebhookReject::CallAlreadyStreamed.status(), 403);
        assert_eq!(
            WebhookReject::CallAlreadyStreamed.as_str(),
            "call_already_streamed"
        );
    }
    // The spent token never opens a second stream either.
    assert!(w.redeem(&token, CALL, T0).is_err());
    // Once the memory has passed, the call is forgotten.
    let after_memory = common::after(T0, DEFAULT_CALL_MEMORY);
    assert!(w.decide_at(&Request::good(), after_memory).is_ok());
}

/// `--streams-per-call 2` (a call sent back to the webhook by `<Redirect>`): a second token
/// after the first stream, a second stream with it, and nothing after that.
#[test]
fn streams_per_call_allows_exactly_that_many_streams() {
    let w = World::with_store(MemoryStore::new(1024, policy(2)));
    let first = token_of(&w.decide(&Request::good()).unwrap().twiml);
    assert_eq!(w.redeem(&first, CALL, T0), Ok(()));
    let at = common::plus_ms(T0, 5);
    let second = token_of(&w.decide_at(&Request::good(), at).unwrap().twiml);
    assert_ne!(first, second, "a new token for the second stream");
    assert!(
        w.redeem(&first, CALL, at).is_err(),
        "the first token stays spent"
    );
    assert_eq!(w.redeem(&second, CALL, at), Ok(()));
    assert_eq!(
        w.decide_at(&Request::good(), common::plus_ms(T0, 10))
            .map(|a| a.call_sid),
        Err(WebhookReject::CallAlreadyStreamed)
    );
}

#[test]
fn form_parsing() {
    type Pairs = &'static [(&'static str, &'static str)];
    let cases: &[(&[u8], Option<Pairs>)] = &[
        (b"", Some(&[])),
        (b"a=1&b=2", Some(&[("a", "1"), ("b", "2")])),
        (b"a=1&&b=2&", Some(&[("a", "1"), ("b", "2")])),
        (b"a", Some(&[("a", "")])),
        (b"a=1&a=2", Some(&[("a", "1"), ("a", "2")])),
        (
            b"From=%2B14158675309&x=a+b",
            Some(&[("From", "+14158675309"), ("x", "a b")]),
        ),
        (b"a=%zz", None),
        (b"%zz=1", None),
        (b"a=%FF", None),
        (&[0xff], None),
    ];
    for (body, expected) in cases {
        let got = form::parse(body);
        let want = expected.map(|p| {
            p.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        });
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(body));
    }
    let at_limit = vec!["a=1"; MAX_WEBHOOK_PARAMS].join("&");
    assert_eq!(
        form::parse(at_limit.as_bytes()).map(|p| p.len()),
        Some(MAX_WEBHOOK_PARAMS)
    );
    let over = vec!["a=1"; MAX_WEBHOOK_PARAMS + 1].join("&");
    assert_eq!(form::parse(over.as_bytes()), None);
}

/// The body bound is inclusive: a signed Twilio form of exactly `MAX_WEBHOOK_BODY_BYTES` is
/// verified and answered; the same form one byte longer is `TooLarge` (413) and records
/// nothing (the store is as before; the refusal holds no data).
#[test]
fn the_body_bound_is_exact() {
    let w = World::new();
    let base = twilio_params(ACCOUNT, CALL);
    common::assert_holds_no_data::<WebhookReject>();
    let sized = |n: usize| {
        let pad = "a".repeat(n);
        let mut p = base.clone();
        p.push(("Pad", pad.as_str()));
        let r = Request::signed(&p, AUTH, SIGNED_URL, "/voice/webhook");
        (r.body.len(), r)
    };
    let (empty_len, _) = sized(0);
    let (len, at) = sized(MAX_WEBHOOK_BODY_BYTES - empty_len);
    assert_eq!(len, MAX_WEBHOOK_BODY_BYTES);
    match w.decide(&at) {
        Ok(answer) => assert_eq!(answer.call_sid, call(CALL)),
        Err(e) => panic!("a body at the bound is refused: {e:?}"),
    }
    let (len, over) = sized(MAX_WEBHOOK_BODY_BYTES - empty_len + 1);
    assert_eq!(len, MAX_WEBHOOK_BODY_BYTES + 1);
    let Err(refused) = w.decide(&over) else {
        panic!("a body over the bound is answered")
    };
    assert_eq!((refused, refused.status()), (WebhookReject::TooLarge, 413));
    assert_eq!(w.store.len(), 1, "the refused webhook recorded something");
}

/// `application/x-www-form-urlencoded` both ways, against known answers from an independent
/// implementation: each encoded text is what Node's `URLSearchParams` (WHATWG URL Standard)
/// writes for the value, computed with
/// `node -e 'console.log(new URLSearchParams([["k", VALUE]]).toString())'`.
#[test]
fn form_encoding_agrees_with_whatwg_urlsearchparams() {
    use streamguard::wire::form;
    let vectors: &[(&str, &str)] = &[
        ("+1 (415) 555-0100", "%2B1+%28415%29+555-0100"),
        ("a b*-._~", "a+b*-._%7E"),
        ("é/?&=%+", "%C3%A9%2F%3F%26%3D%25%2B"),
        (
            "CA0123456789abcdef0123456789abcdef",
            "CA0123456789abcdef0123456789abcdef",
        ),
        ("<Say>\"hi\"</Say>", "%3CSay%3E%22hi%22%3C%2FSay%3E"),
        ("\u{1F600}", "%F0%9F%98%80"),
    ];
    for (value, encoded) in vectors {
        assert_eq!(form::encode(value), *encoded, "encode {value:?}");
        assert_eq!(
            form::decode(encoded).as_deref(),
            Some(*value),
            "decode {encoded}"
        );
        // Lowercase hex is as valid on the way in.
        let lower = encoded.to_ascii_lowercase();
        if lower.contains('%') && value.bytes().all(|b| !b.is_ascii_uppercase()) {
            assert_eq!(
                form::decode(&lower).as_deref(),
                Some(*value),
                "decode {lower}"
            );
        }
    }
    let body = vectors
        .iter()
        .map(|(v, e)| format!("{}={e}", form::encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let parsed = form::parse(body.as_bytes()).unwrap();
    assert_eq!(
        parsed,
        vectors
            .iter()
            .map(|(v, _)| ((*v).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
    );
    for bad in ["%", "%4", "%G0", "%C3"] {
        assert_eq!(form::decode(bad), None, "{bad}");
    }
}
