//! The pre-upgrade decision (`src/upgrade.rs`): a table of requests and the status each
//! gets (404, 405, 400 for each handshake defect, 401 for the signature) in each
//! `SignatureMode`, the `Sec-WebSocket-Accept` of RFC 6455 §1.3, the signature taken over the
//! configured URL plus the request's query (never `Host`), both port variants, and a property:
//! `decide` is deterministic and, in `Required` mode, never accepts without a valid signature.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod common;

use proptest::prelude::*;
use streamguard::limits::MAX_REQUEST_TARGET_BYTES;
use streamguard::secret::AuthToken;
use streamguard::session::UrlToken;
use streamguard::signature::{SignatureError, compute_signature};
use streamguard::upgrade::{
    HandshakeError, RequestHead, SignatureMode, UpgradePolicy, UpgradeReject, decide,
};

const PATH: &str = "/voice/stream";
const SIGNED_URL: &str = "wss://streamguard.example.com/voice/stream";
const AUTH: &str = "0123456789abcdef0123456789abcdef";
/// RFC 6455 §1.3: the example key and its accept value.
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn auth() -> AuthToken {
    AuthToken::new(AUTH).unwrap()
}

fn sign(url: &str) -> String {
    compute_signature::<&str, &str>(&auth(), url, &[])
}

fn sign_with(auth_text: &str, url: &str) -> String {
    compute_signature::<&str, &str>(&AuthToken::new(auth_text).unwrap(), url, &[])
}

/// A request builder: starts as a valid, correctly signed Twilio upgrade of `target`.
#[derive(Clone)]
struct Req(RequestHead);

impl Req {
    fn get(target: &str) -> Self {
        let url = match target.split_once('?') {
            Some((_, q)) => format!("{SIGNED_URL}?{q}"),
            None => SIGNED_URL.to_owned(),
        };
        Self(RequestHead {
            method: "GET".to_owned(),
            target: target.to_owned(),
            headers: vec![
                ("Host".to_owned(), b"streamguard.example.com".to_vec()),
                ("Upgrade".to_owned(), b"websocket".to_vec()),
                ("Connection".to_owned(), b"Upgrade".to_vec()),
                ("Sec-WebSocket-Version".to_owned(), b"13".to_vec()),
                ("Sec-WebSocket-Key".to_owned(), RFC_KEY.as_bytes().to_vec()),
                ("X-Twilio-Signature".to_owned(), sign(&url).into_bytes()),
            ],
        })
    }

    fn method(mut self, m: &str) -> Self {
        self.0.method = m.to_owned();
        self
    }

    fn remove(mut self, name: &str) -> Self {
        self.0
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn set(self, name: &str, value: &str) -> Self {
        self.remove(name).add(name, value)
    }

    fn add(mut self, name: &str, value: &str) -> Self {
        self.0
            .headers
            .push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }

    fn add_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.0.headers.push((name.to_owned(), value.to_vec()));
        self
    }

    fn signature(&self) -> Option<String> {
        self.0
            .headers
            .iter()
            .find(|(n, _)| n == "X-Twilio-Signature")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

fn policy(auth: &AuthToken, mode: SignatureMode) -> UpgradePolicy<'_> {
    UpgradePolicy {
        stream_path: PATH,
        signed_url: SIGNED_URL,
        auth,
        mode,
    }
}

/// The answer to a request: accepted (`answer` then also checks the accept key and the URL
/// token) or refused with this status and reason.
#[derive(Debug, PartialEq)]
enum Want {
    Accept,
    Reject(u16, UpgradeReject),
}

use Want::{Accept, Reject};

const fn hs(e: HandshakeError) -> Want {
    Reject(400, UpgradeReject::Handshake(e))
}

const fn sig(e: SignatureError) -> Want {
    Reject(401, UpgradeReject::Signature(e))
}

/// Requests that get the same answer in every signature mode: routing and handshake.
fn mode_independent_cases() -> Vec<(&'static str, Req, Want)> {
    let ok = Req::get(PATH);
    let long_target = format!("{PATH}?{}", "a".repeat(MAX_REQUEST_TARGET_BYTES));
    vec![
        // Routing: the path must be exactly the stream path, in origin form.
        (
            "other path",
            Req::get("/voice/streams"),
            Reject(404, UpgradeReject::NotFound),
        ),
        (
            "prefix of the path",
            Req::get("/voice"),
            Reject(404, UpgradeReject::NotFound),
        ),
        (
            "trailing slash",
            Req::get("/voice/stream/"),
            Reject(404, UpgradeReject::NotFound),
        ),
        (
            "case differs",
            Req::get("/VOICE/STREAM"),
            Reject(404, UpgradeReject::NotFound),
        ),
        ("root", Req::get("/"), Reject(404, UpgradeReject::NotFound)),
        (
            "encoded path",
            Req::get("/voice%2Fstream"),
            Reject(404, UpgradeReject::NotFound),
        ),
        (
            "fragment",
            Req::get("/voice/stream#x"),
            Reject(404, UpgradeReject::NotFound),
        ),
        (
            "absolute-form target",
            Req::get("wss://streamguard.example.com/voice/stream"),
            Reject(404, UpgradeReject::NotFound),
        ),
        (
            "absolute-form http",
            Req::get("http://streamguard.example.com/voice/stream"),
            Reject(404, UpgradeReject::NotFound),
        ),
        (
            "target too long",
            Req::get(&long_target),
            Reject(404, UpgradeReject::NotFound),
        ),
        // Method, checked after the path.
        (
            "POST",
            ok.clone().method("POST"),
            Reject(405, UpgradeReject::Method),
        ),
        (
            "lowercase get",
            ok.clone().method("get"),
            Reject(405, UpgradeReject::Method),
        ),
        (
            "HEAD",
            ok.clone().method("HEAD"),
            Reject(405, UpgradeReject::Method),
        ),
        (
            "POST elsewhere is 404",
            Req::get("/other").method("POST"),
            Reject(404, UpgradeReject::NotFound),
        ),
        (
            "POST with a broken handshake is 405",
            ok.clone().method("POST").remove("Upgrade"),
            Reject(405, UpgradeReject::Method),
        ),
        // Handshake (RFC 6455 §4.2.1).
        (
            "no Upgrade",
            ok.clone().remove("Upgrade"),
            hs(HandshakeError::UpgradeHeader),
        ),
        (
            "Upgrade: h2c",
            ok.clone().set("Upgrade", "h2c"),
            hs(HandshakeError::UpgradeHeader),
        ),
        (
            "Upgrade empty",
            ok.clone().set("Upgrade", ""),
            hs(HandshakeError::UpgradeHeader),
        ),
        (
            "Upgrade repeated",
            ok.clone().add("Upgrade", "websocket"),
            hs(HandshakeError::RepeatedHeader),
        ),
        (
            "no Connection",
            ok.clone().remove("Connection"),
            hs(HandshakeError::ConnectionHeader),
        ),
        (
            "Connection: keep-alive",
            ok.clone().set("Connection", "keep-alive"),
            hs(HandshakeError::ConnectionHeader),
        ),
        (
            "Connection: upgrader",
            ok.clone().set("Connection", "upgrader"),
            hs(HandshakeError::ConnectionHeader),
        ),
        (
            "no Version",
            ok.clone().remove("Sec-WebSocket-Version"),
            hs(HandshakeError::Version),
        ),
        (
            "Version 8",
            ok.clone().set("Sec-WebSocket-Version", "8"),
            hs(HandshakeError::Version),
        ),
        (
            "Version 13, 8",
            ok.clone().set("Sec-WebSocket-Version", "13, 8"),
            hs(HandshakeError::Version),
        ),
        (
            "Version repeated",
            ok.clone().add("Sec-WebSocket-Version", "13"),
            hs(HandshakeError::RepeatedHeader),
        ),
        (
            "no Key",
            ok.clone().remove("Sec-WebSocket-Key"),
            hs(HandshakeError::Key),
        ),
        (
            "Key empty",
            ok.clone().set("Sec-WebSocket-Key", ""),
            hs(HandshakeError::Key),
        ),
        (
            "Key not base64",
            ok.clone()
                .set("Sec-WebSocket-Key", "not a base64 key!!!!!!=="),
            hs(HandshakeError::Key),
        ),
        (
            "Key of 15 bytes",
            ok.clone().set("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA"),
            hs(HandshakeError::Key),
        ),
        (
            "Key of 17 bytes",
            ok.clone()
                .set("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAA="),
            hs(HandshakeError::Key),
        ),
        (
            "Key of 32 bytes",
            ok.clone().set(
                "Sec-WebSocket-Key",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
            hs(HandshakeError::Key),
        ),
        (
            "Key non-canonical",
            ok.clone()
                .set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZR=="),
            hs(HandshakeError::Key),
        ),
        (
            "Key without padding",
            ok.clone()
                .set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ"),
            hs(HandshakeError::Key),
        ),
        (
            "Key repeated",
            ok.clone().add("Sec-WebSocket-Key", RFC_KEY),
            hs(HandshakeError::RepeatedHeader),
        ),
        (
            "Key not UTF-8",
            ok.clone()
                .remove("Sec-WebSocket-Key")
                .add_bytes("Sec-WebSocket-Key", &[0xff; 24]),
            hs(HandshakeError::Key),
        ),
        // Tolerated spellings.
        (
            "Upgrade: WebSocket",
            ok.clone().set("Upgrade", "WebSocket"),
            Accept,
        ),
        (
            "Connection list",
            ok.clone().set("Connection", "keep-alive, Upgrade"),
            Accept,
        ),
        (
            "Connection repeated",
            ok.clone()
                .set("Connection", "keep-alive")
                .add("Connection", "upgrade"),
            Accept,
        ),
        (
            "header names in any case",
            ok.clone().remove("Upgrade").add("uPGRADE", "websocket"),
            Accept,
        ),
        (
            "Key with surrounding spaces",
            ok.clone().set("Sec-WebSocket-Key", &format!(" {RFC_KEY} ")),
            Accept,
        ),
    ]
}

/// Requests whose answer depends on the mode: (name, request, Required, IfPresent, Off).
fn signature_cases() -> Vec<(&'static str, Req, Want, Want, Want)> {
    let ok = Req::get(PATH);
    let with_query = Req::get("/voice/stream?token=abc&x=1");
    vec![
        ("valid", ok.clone(), Accept, Accept, Accept),
        (
            "missing",
            ok.clone().remove("X-Twilio-Signature"),
            sig(SignatureError::Missing),
            Accept,
            Accept,
        ),
        (
            "signed over the :443 variant",
            ok.clone().set(
                "X-Twilio-Signature",
                &sign("wss://streamguard.example.com:443/voice/stream"),
            ),
            Accept,
            Accept,
            Accept,
        ),
        (
            "signed over :80 (the SDKs' wrong wss default)",
            ok.clone().set(
                "X-Twilio-Signature",
                &sign("wss://streamguard.example.com:80/voice/stream"),
            ),
            sig(SignatureError::Mismatch),
            sig(SignatureError::Mismatch),
            Accept,
        ),
        (
            "signed over https",
            ok.clone().set(
                "X-Twilio-Signature",
                &sign("https://streamguard.example.com/voice/stream"),
            ),
            sig(SignatureError::Mismatch),
            sig(SignatureError::Mismatch),
            Accept,
        ),
        (
            "signed with another auth token",
            ok.clone().set(
                "X-Twilio-Signature",
                &sign_with("another-auth-token", SIGNED_URL),
            ),
            sig(SignatureError::Mismatch),
            sig(SignatureError::Mismatch),
            Accept,
        ),
        (
            "signed over the Host-derived URL",
            ok.clone().set("Host", "evil.example").set(
                "X-Twilio-Signature",
                &sign("wss://evil.example/voice/stream"),
            ),
            sig(SignatureError::Mismatch),
            sig(SignatureError::Mismatch),
            Accept,
        ),
        (
            "X-Forwarded-Host is ignored",
            ok.clone()
                .add("X-Forwarded-Host", "evil.example")
                .add("X-Forwarded-Proto", "https")
                .set(
                    "X-Twilio-Signature",
                    &sign("wss://evil.example/voice/stream"),
                ),
            sig(SignatureError::Mismatch),
            sig(SignatureError::Mismatch),
            Accept,
        ),
        (
            "malformed",
            ok.clone().set("X-Twilio-Signature", "not base64"),
            sig(SignatureError::Malformed),
            sig(SignatureError::Malformed),
            Accept,
        ),
        (
            "empty",
            ok.clone().set("X-Twilio-Signature", ""),
            sig(SignatureError::Malformed),
            sig(SignatureError::Malformed),
            Accept,
        ),
        (
            "repeated (both valid)",
            ok.clone()
                .add("X-Twilio-Signature", &ok.signature().unwrap()),
            sig(SignatureError::Malformed),
            sig(SignatureError::Malformed),
            Accept,
        ),
        // With a query, the signed URL is the configured URL plus the query.
        (
            "query, signed with the query",
            with_query.clone(),
            Accept,
            Accept,
            Accept,
        ),
        (
            "query, signed without it",
            with_query
                .clone()
                .set("X-Twilio-Signature", &sign(SIGNED_URL)),
            sig(SignatureError::Mismatch),
            sig(SignatureError::Mismatch),
            Accept,
        ),
        (
            "query, signed with another query",
            with_query.clone().set(
                "X-Twilio-Signature",
                &sign(&format!("{SIGNED_URL}?token=abd&x=1")),
            ),
            sig(SignatureError::Mismatch),
            sig(SignatureError::Mismatch),
            Accept,
        ),
        (
            "no query, signed with one",
            ok.clone().set(
                "X-Twilio-Signature",
                &sign(&format!("{SIGNED_URL}?token=abc")),
            ),
            sig(SignatureError::Mismatch),
            sig(SignatureError::Mismatch),
            Accept,
        ),
        // The handshake is checked before the signature.
        (
            "broken handshake, no signature",
            ok.clone().remove("Upgrade").remove("X-Twilio-Signature"),
            hs(HandshakeError::UpgradeHeader),
            hs(HandshakeError::UpgradeHeader),
            hs(HandshakeError::UpgradeHeader),
        ),
    ]
}

fn answer(req: &RequestHead, mode: SignatureMode) -> Want {
    let a = auth();
    match decide(req, &policy(&a, mode)) {
        Ok(acc) => {
            // Every acceptance answers the RFC 6455 example key with the RFC's value and
            // carries the token of the request target.
            assert_eq!(acc.accept_key, RFC_ACCEPT, "{:?}", req.headers);
            assert_eq!(acc.url_token, UrlToken::from_target(&req.target));
            Accept
        }
        Err(e) => Reject(e.status(), e),
    }
}

#[test]
fn routing_and_handshake_table_in_every_mode() {
    for mode in [
        SignatureMode::Required,
        SignatureMode::IfPresent,
        SignatureMode::Off,
    ] {
        for (name, req, want) in mode_independent_cases() {
            assert_eq!(answer(&req.0, mode), want, "{name} ({})", mode.as_str());
        }
    }
}

#[test]
fn signature_table_per_mode() {
    for (name, req, required, if_present, off) in signature_cases() {
        assert_eq!(
            answer(&req.0, SignatureMode::Required),
            required,
            "{name} (required)"
        );
        assert_eq!(
            answer(&req.0, SignatureMode::IfPresent),
            if_present,
            "{name} (if-present)"
        );
        assert_eq!(answer(&req.0, SignatureMode::Off), off, "{name} (off)");
    }
}

#[test]
fn accepted_upgrade_carries_the_url_token_redacted() {
    let a = auth();
    let token = "s3cr3t-t0ken-value";
    let req = Req::get(&format!("{PATH}?token={token}"));
    let acc = decide(&req.0, &policy(&a, SignatureMode::Required)).unwrap();
    assert_eq!(
        acc.url_token,
        UrlToken::from_target(&format!("{PATH}?token={token}"))
    );
    assert_ne!(acc.url_token, UrlToken::NONE);
    common::assert_no_leak(&format!("{acc:?}"), &[token]);
    let plain = decide(&Req::get(PATH).0, &policy(&a, SignatureMode::Required)).unwrap();
    assert_eq!(plain.url_token, UrlToken::NONE);
}

#[test]
fn rejections_carry_no_secret() {
    // A rejection holds no data, so it cannot carry the auth token or the signature (which
    // searching its `Debug` could never have found).
    common::assert_holds_no_data::<UpgradeReject>();
    let a = auth();
    for (name, req, ..) in signature_cases() {
        if let Err(e) = decide(&req.0, &policy(&a, SignatureMode::Required)) {
            // The label says missing vs invalid, nothing more.
            assert!(
                matches!(
                    e.as_str(),
                    "upgrade_signature_missing" | "upgrade_signature_invalid" | "bad_handshake"
                ),
                "{name}: {}",
                e.as_str()
            );
        }
    }
}

#[test]
fn capacity_statuses() {
    for (e, s) in [
        (UpgradeReject::PendingFull, 503),
        (UpgradeReject::PendingPerIpFull, 503),
        (UpgradeReject::StreamsFull, 503),
    ] {
        assert_eq!(e.status(), s);
    }
}

#[test]
fn signature_mode_spellings() {
    for m in [
        SignatureMode::Required,
        SignatureMode::IfPresent,
        SignatureMode::Off,
    ] {
        assert_eq!(SignatureMode::parse(m.as_str()), Some(m));
    }
    assert_eq!(SignatureMode::default(), SignatureMode::Required);
    assert_eq!(SignatureMode::parse("Required"), None);
    assert_eq!(SignatureMode::parse(""), None);
}

// ---------------------------------------------------------------------------------------------
// Property
// ---------------------------------------------------------------------------------------------

/// The signature a generated request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SigChoice {
    None,
    Garbage,
    WrongAuth,
    OtherUrl,
    WithoutQuery,
    Right,
    RightPort443,
}

#[derive(Clone, Debug)]
struct Gen {
    method: &'static str,
    target: &'static str,
    drop_header: Option<usize>,
    sig: SigChoice,
    sig_twice: bool,
    garbage: Vec<u8>,
    extra: Vec<(String, Vec<u8>)>,
}

fn gen_request() -> impl Strategy<Value = Gen> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("get")],
        prop_oneof![
            Just(PATH),
            Just("/voice/stream?token=abc"),
            Just("/voice/stream?x=1&y=2"),
            Just("/other")
        ],
        proptest::option::of(0usize..4),
        prop_oneof![
            Just(SigChoice::None),
            Just(SigChoice::Garbage),
            Just(SigChoice::WrongAuth),
            Just(SigChoice::OtherUrl),
            Just(SigChoice::WithoutQuery),
            Just(SigChoice::Right),
            Just(SigChoice::RightPort443),
        ],
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(
            (
                "[A-Za-z-]{1,12}",
                proptest::collection::vec(any::<u8>(), 0..20),
            ),
            0..3,
        ),
    )
        .prop_map(
            |(method, target, drop_header, sig, sig_twice, garbage, extra)| Gen {
                method,
                target,
                drop_header,
                sig,
                sig_twice,
                garbage,
                extra,
            },
        )
}

fn build(g: &Gen) -> RequestHead {
    let query = g.target.split_once('?').map(|(_, q)| q);
    let full = |base: &str| match query {
        Some(q) => format!("{base}?{q}"),
        None => base.to_owned(),
    };
    let value: Option<Vec<u8>> = match g.sig {
        SigChoice::None => None,
        SigChoice::Garbage => Some(g.garbage.clone()),
        SigChoice::WrongAuth => Some(sign_with("wrong-auth", &full(SIGNED_URL)).into_bytes()),
        SigChoice::OtherUrl => Some(sign(&full("wss://evil.example/voice/stream")).into_bytes()),
        SigChoice::WithoutQuery => Some(sign(SIGNED_URL).into_bytes()),
        SigChoice::Right => Some(sign(&full(SIGNED_URL)).into_bytes()),
        SigChoice::RightPort443 => {
            Some(sign(&full("wss://streamguard.example.com:443/voice/stream")).into_bytes())
        }
    };
    let mut r = Req::get(g.target)
        .method(g.method)
        .remove("X-Twilio-Signature");
    let handshake = [
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Key",
    ];
    if let Some(i) = g.drop_header {
        r = r.remove(handshake[i]);
    }
    for (n, v) in &g.extra {
        // Extra headers never spell a handshake or signature header.
        if !handshake.iter().any(|h| h.eq_ignore_ascii_case(n))
            && !n.eq_ignore_ascii_case("X-Twilio-Signature")
        {
            r = r.add_bytes(n, v);
        }
    }
    if let Some(v) = value {
        r = r.add_bytes("X-Twilio-Signature", &v);
        if g.sig_twice {
            r = r.add_bytes("X-Twilio-Signature", &v);
        }
    }
    r.0
}

proptest! {
    #![proptest_config(common::proptest_config())]

    /// `decide` is deterministic (same request, same answer, also for a clone), and in
    /// `Required` mode it accepts exactly the requests that are a GET of the stream path with
    /// a complete handshake and one signature computed with the right auth token over the
    /// configured URL (either port variant) plus the request's query. Garbage, a wrong auth
    /// token, another host, a dropped query, a missing or repeated header never pass.
    #[test]
    fn required_mode_never_accepts_without_a_valid_signature(g in gen_request()) {
        let req = build(&g);
        let a = auth();
        let p = policy(&a, SignatureMode::Required);
        let first = decide(&req, &p);
        prop_assert_eq!(&decide(&req, &p), &first);
        prop_assert_eq!(&decide(&req.clone(), &p), &first);
        let signed_ok = matches!(g.sig, SigChoice::Right | SigChoice::RightPort443)
            // Without a query, "without the query" is the right URL.
            || (g.sig == SigChoice::WithoutQuery && !g.target.contains('?'));
        let should_accept = g.method == "GET"
            && g.target.split('?').next() == Some(PATH)
            && g.drop_header.is_none()
            && signed_ok
            && !g.sig_twice;
        prop_assert_eq!(first.is_ok(), should_accept, "{:?} -> {:?}", g, first);
    }

    /// In `IfPresent` mode a present signature must be valid; in `Off` mode the signature
    /// header never changes the answer.
    #[test]
    fn other_modes(g in gen_request()) {
        let req = build(&g);
        let a = auth();
        let if_present = decide(&req, &policy(&a, SignatureMode::IfPresent));
        if if_present.is_ok() {
            let signed_ok = matches!(g.sig, SigChoice::Right | SigChoice::RightPort443)
                || (g.sig == SigChoice::WithoutQuery && !g.target.contains('?'));
            prop_assert!(g.sig == SigChoice::None || (signed_ok && !g.sig_twice), "{:?}", g);
        }
        let mut unsigned = req.clone();
        unsigned.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("X-Twilio-Signature"));
        prop_assert_eq!(
            decide(&req, &policy(&a, SignatureMode::Off)),
            decide(&unsigned, &policy(&a, SignatureMode::Off))
        );
    }
}

/// The request-target bound is inclusive: a correctly signed upgrade whose target is exactly
/// `MAX_REQUEST_TARGET_BYTES` long is accepted; one byte longer is `404`, a refusal that holds
/// no data (so neither the target nor its signature).
#[test]
fn the_request_target_bound_is_exact() {
    common::assert_holds_no_data::<UpgradeReject>();
    let target_of = |len: usize| format!("{PATH}?{}", "a".repeat(len - PATH.len() - 1));
    let at = target_of(MAX_REQUEST_TARGET_BYTES);
    assert_eq!(at.len(), MAX_REQUEST_TARGET_BYTES);
    assert_eq!(answer(&Req::get(&at).0, SignatureMode::Required), Accept);
    let over = target_of(MAX_REQUEST_TARGET_BYTES + 1);
    assert_eq!(
        answer(&Req::get(&over).0, SignatureMode::Required),
        Reject(404, UpgradeReject::NotFound)
    );
}
