//! The fuzz targets' invariants, run by plain `cargo test` without cargo-fuzz.
//!
//! - Every committed corpus file under `fuzz/corpus/<target>/` goes through the same
//!   `streamguard::invariants` function its fuzz target calls, decoded as the target decodes
//!   it (`invariants::decode_input`); `invariants` is available here because the crate lists
//!   itself as a dev-dependency with the `fuzzing` feature (see `Cargo.toml`), so no feature
//!   flag is needed on the command line.
//! - The readable seeds (`seed-*` files) are generated from the values in this file by
//!   `cargo test --test fuzz_invariants -- --ignored write_seeds`; a test checks that the
//!   committed ones are current, and others check that the seeds reach the paths that
//!   matter (authenticated streams, accepted upgrades, valid signatures, rendered TwiML).
//! - Structured seeds are the JSON of their typed values (serde, a format this crate owns):
//!   the fuzz targets read them with `invariants::decode_input`, which tries JSON first and
//!   `arbitrary` otherwise, so the seeds do not depend on `arbitrary`'s private byte format.
//!   Every seed is decoded again and compared with its value.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use arbitrary::Arbitrary;
use streamguard::invariants::{
    self, AccountChoice, ByteEdit, CallChoice, FixtureToken, HeaderName, HttpMethod, PolicyUrl,
    SessionEvent, SessionInput, SessionOutcome, SignatureHeader, SignatureInput, SignedBody,
    SignedUrl, StartOutcome, StartSpec, Step, StreamChoice, Template, TokenChoice, TokenInput,
    TokenMutation, UpgradeHeader, UpgradeInput, UpgradeOutcome, UpgradeTarget, UrlTokenChoice,
};
use streamguard::signature::compute_signature;
use streamguard::wire::twiml::{Method, StreamTwiml, Track, Verb};

/// Every fuzz target, as named in `fuzz/Cargo.toml`.
const TARGETS: [&str; 7] = [
    "upgrade_request",
    "upgrade_request_raw",
    "start_frame",
    "session",
    "token",
    "twiml",
    "signature",
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

// ---------------------------------------------------------------------------------------------
// Running an input the way its fuzz target does
// ---------------------------------------------------------------------------------------------

/// Decodes a structured input exactly as its fuzz target does.
fn decode<T>(data: &[u8]) -> Option<T>
where
    T: for<'a> Arbitrary<'a> + serde::de::DeserializeOwned,
{
    invariants::decode_input(data)
}

/// Runs `data` through `target`'s invariants, as the fuzz target would. Returns whether the
/// input was one the target drives (decoded, for structured targets).
fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "upgrade_request" => decode::<UpgradeInput>(data)
            .map(|i| invariants::upgrade_request(&i))
            .is_some(),
        "upgrade_request_raw" => {
            invariants::upgrade_request_raw(data);
            true
        }
        "start_frame" => {
            invariants::start_frame(data);
            true
        }
        "session" => decode::<SessionInput>(data)
            .map(|i| invariants::session(&i))
            .is_some(),
        "token" => decode::<TokenInput>(data)
            .map(|i| invariants::token(&i))
            .is_some(),
        "twiml" => decode::<StreamTwiml>(data)
            .map(|i| invariants::twiml(&i))
            .is_some(),
        "signature" => decode::<SignatureInput>(data)
            .map(|i| invariants::signature(&i))
            .is_some(),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// The committed corpus of `target`: (path, bytes), sorted by path.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

fn run_corpus(target: &str) {
    let files = corpus(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    let total = files.len();
    let mut driven = 0;
    for (path, bytes) in files {
        match catch_unwind(AssertUnwindSafe(|| run(target, &bytes))) {
            Ok(true) => driven += 1,
            Ok(false) => {}
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!("{target}: {} fails: {msg}", path.display());
            }
        }
    }
    // Every committed input is one the fuzzer kept for its coverage, so nearly all decode.
    assert!(
        driven * 10 >= total * 9,
        "{target}: only {driven} of {total} corpus inputs were driven"
    );
}

#[test]
fn corpus_upgrade_request() {
    run_corpus("upgrade_request");
}

#[test]
fn corpus_upgrade_request_raw() {
    run_corpus("upgrade_request_raw");
}

#[test]
fn corpus_start_frame() {
    run_corpus("start_frame");
}

#[test]
fn corpus_session() {
    run_corpus("session");
}

#[test]
fn corpus_token() {
    run_corpus("token");
}

#[test]
fn corpus_twiml() {
    run_corpus("twiml");
}

#[test]
fn corpus_signature() {
    run_corpus("signature");
}

// ---------------------------------------------------------------------------------------------
// Seeds in a format this crate owns
// ---------------------------------------------------------------------------------------------

/// `value` as a seed file: its JSON (serde), which `invariants::decode_input` reads back
/// before trying `arbitrary`. Checked by decoding it again the way the fuzz target does.
fn encoded<T>(value: &T) -> Vec<u8>
where
    T: serde::Serialize + serde::de::DeserializeOwned + for<'a> Arbitrary<'a> + PartialEq + Debug,
{
    let mut bytes = serde_json::to_vec(value).unwrap();
    bytes.push(b'\n');
    assert_eq!(
        invariants::decode_input::<T>(&bytes).as_ref(),
        Some(value),
        "a seed does not decode to its value"
    );
    bytes
}

// ---------------------------------------------------------------------------------------------
// The seeds
// ---------------------------------------------------------------------------------------------

fn start(spec: impl FnOnce(&mut StartSpec)) -> StartSpec {
    let mut s = StartSpec::valid();
    spec(&mut s);
    s
}

fn on_first(event: SessionEvent) -> Step {
    Step {
        second: false,
        event,
    }
}

fn on_second(event: SessionEvent) -> Step {
    Step {
        second: true,
        event,
    }
}

fn session_input(first_url: UrlTokenChoice, steps: Vec<Step>) -> SessionInput {
    SessionInput {
        first_url,
        second_url: UrlTokenChoice::None,
        steps,
    }
}

/// The `session` seeds, by name.
fn session_seeds() -> Vec<(&'static str, SessionInput)> {
    use SessionEvent as E;
    let valid = || E::Start(StartSpec::valid());
    let s = StreamChoice::Stream;
    let one = |steps| session_input(UrlTokenChoice::None, steps);
    vec![
        (
            "genuine-call",
            one(vec![
                on_first(E::Connected),
                on_first(valid()),
                on_first(E::Media(s)),
                on_first(E::Dtmf(s)),
                on_first(E::Mark(s)),
                on_first(E::Stop(s)),
            ]),
        ),
        (
            "token-in-url",
            session_input(
                UrlTokenChoice::Fixture(FixtureToken::Valid),
                vec![
                    on_first(E::Start(start(|x| x.token = TokenChoice::Missing))),
                    on_first(E::Media(s)),
                ],
            ),
        ),
        (
            "url-and-start-tokens-differ",
            session_input(
                UrlTokenChoice::Fixture(FixtureToken::OtherCall),
                vec![on_first(valid())],
            ),
        ),
        (
            "token-replayed-on-second-connection",
            one(vec![on_first(valid()), on_second(valid())]),
        ),
        (
            "second-token-same-call",
            one(vec![
                on_first(valid()),
                on_second(E::Start(start(|x| {
                    x.token = TokenChoice::Fixture(FixtureToken::SecondForCall);
                }))),
            ]),
        ),
        (
            "two-calls",
            one(vec![
                on_first(valid()),
                on_second(E::Start(start(|x| {
                    x.call = CallChoice::Other;
                    x.stream = StreamChoice::Other;
                    x.token = TokenChoice::Fixture(FixtureToken::OtherCall);
                }))),
                on_second(E::Media(StreamChoice::Other)),
                on_first(E::Media(s)),
            ]),
        ),
        (
            "token-for-other-call",
            one(vec![on_first(E::Start(start(|x| {
                x.token = TokenChoice::Fixture(FixtureToken::OtherCall);
            })))]),
        ),
        (
            "other-account",
            one(vec![on_first(E::Start(start(|x| {
                x.account = AccountChoice::Other;
                x.token = TokenChoice::Fixture(FixtureToken::OtherAccount);
            })))]),
        ),
        (
            "expired-token",
            one(vec![on_first(E::Start(start(|x| {
                x.token = TokenChoice::Fixture(FixtureToken::Expired);
            })))]),
        ),
        ("media-before-start", one(vec![on_first(E::Media(s))])),
        (
            "start-after-deadline",
            one(vec![on_first(E::Tick(5000)), on_first(valid())]),
        ),
        (
            "start-before-deadline-then-long-call",
            one(vec![
                on_first(E::Tick(4999)),
                on_first(valid()),
                on_first(E::Tick(60_000)),
                on_first(E::Media(s)),
            ]),
        ),
        (
            "binary-before-start",
            one(vec![on_first(E::Binary), on_first(valid())]),
        ),
        ("ping-before-start", one(vec![on_first(E::Control)])),
        (
            "ping-while-streaming",
            one(vec![
                on_first(valid()),
                on_first(E::Control),
                on_first(E::Media(s)),
            ]),
        ),
        (
            "oversized-after-start",
            one(vec![on_first(valid()), on_first(E::Oversized)]),
        ),
        (
            "too-large-after-start",
            one(vec![on_first(valid()), on_first(E::TooLarge)]),
        ),
        (
            "malformed-after-start",
            one(vec![on_first(valid()), on_first(E::Malformed)]),
        ),
        (
            "media-for-other-stream",
            one(vec![
                on_first(valid()),
                on_first(E::Media(StreamChoice::Other)),
            ]),
        ),
        (
            "second-start",
            one(vec![on_first(valid()), on_first(valid())]),
        ),
        (
            "connected-twice",
            one(vec![on_first(E::Connected), on_first(E::Connected)]),
        ),
        (
            "peer-closed-then-media",
            one(vec![
                on_first(valid()),
                on_first(E::PeerClosed),
                on_first(E::Media(s)),
            ]),
        ),
        (
            "unknown-event-while-streaming",
            one(vec![
                on_first(valid()),
                on_first(E::Unknown(s)),
                on_first(E::Media(s)),
            ]),
        ),
        (
            "mutated-start",
            one(vec![on_first(E::Mutated {
                template: Template::Start,
                edits: vec![ByteEdit::FlipBit(200, 0)],
            })]),
        ),
        (
            "text-after-start",
            one(vec![
                on_first(valid()),
                on_first(E::Text(r#"{"event":"clear"}"#.to_owned())),
            ]),
        ),
    ]
}

fn upgrade(policy: PolicyUrl, target: UpgradeTarget, headers: Vec<UpgradeHeader>) -> UpgradeInput {
    UpgradeInput {
        policy,
        method: HttpMethod::Get,
        target,
        headers,
    }
}

fn handshake_with(extra: &[UpgradeHeader]) -> Vec<UpgradeHeader> {
    let mut h = vec![
        UpgradeHeader::Upgrade,
        UpgradeHeader::Connection,
        UpgradeHeader::Version,
        UpgradeHeader::Key,
    ];
    h.extend_from_slice(extra);
    h
}

/// The `upgrade_request` seeds, by name.
fn upgrade_seeds() -> Vec<(&'static str, UpgradeInput)> {
    use UpgradeHeader as H;
    let signed = |with_port| handshake_with(&[H::Signature { with_port }]);
    vec![
        (
            "signed",
            upgrade(PolicyUrl::NoPort, UpgradeTarget::StreamPath, signed(false)),
        ),
        (
            "signed-with-port",
            upgrade(PolicyUrl::NoPort, UpgradeTarget::StreamPath, signed(true)),
        ),
        (
            "signed-default-port-policy",
            upgrade(
                PolicyUrl::DefaultPort,
                UpgradeTarget::StreamPath,
                signed(false),
            ),
        ),
        (
            "signed-other-port-policy",
            upgrade(
                PolicyUrl::OtherPort,
                UpgradeTarget::StreamPath,
                signed(false),
            ),
        ),
        (
            "signed-local-ws",
            upgrade(PolicyUrl::LocalWs, UpgradeTarget::StreamPath, signed(true)),
        ),
        (
            "signed-token-query",
            upgrade(
                PolicyUrl::NoPort,
                UpgradeTarget::WithToken(FixtureToken::Valid),
                signed(false),
            ),
        ),
        (
            "unsigned",
            upgrade(
                PolicyUrl::NoPort,
                UpgradeTarget::StreamPath,
                handshake_with(&[]),
            ),
        ),
        (
            "two-signatures",
            upgrade(
                PolicyUrl::NoPort,
                UpgradeTarget::StreamPath,
                handshake_with(&[
                    H::Signature { with_port: false },
                    H::Signature { with_port: true },
                ]),
            ),
        ),
        (
            "post",
            UpgradeInput {
                method: HttpMethod::Post,
                ..upgrade(PolicyUrl::NoPort, UpgradeTarget::StreamPath, signed(false))
            },
        ),
        (
            "forwarded-headers",
            upgrade(
                PolicyUrl::NoPort,
                UpgradeTarget::StreamPath,
                handshake_with(&[
                    H::Named {
                        name: HeaderName::XForwardedHost,
                        lowercase: true,
                        value: b"evil.example".to_vec(),
                    },
                    H::Signature { with_port: false },
                ]),
            ),
        ),
        (
            "trailing-slash",
            upgrade(
                PolicyUrl::NoPort,
                UpgradeTarget::Raw("/voice/stream/".to_owned()),
                signed(false),
            ),
        ),
        (
            "query-signed-without-query",
            UpgradeInput {
                headers: handshake_with(&[H::Named {
                    name: HeaderName::XTwilioSignature,
                    lowercase: false,
                    value: invariants::upgrade_signature(PolicyUrl::NoPort, "/voice/stream", false)
                        .into_bytes(),
                }]),
                ..upgrade(
                    PolicyUrl::NoPort,
                    UpgradeTarget::WithQuery("x=1".to_owned()),
                    vec![],
                )
            },
        ),
    ]
}

/// The `token` seeds, by name.
fn token_seeds() -> Vec<(String, TokenInput)> {
    let mut out: Vec<(String, TokenInput)> = FixtureToken::ALL
        .iter()
        .map(|t| {
            (
                format!("verify-{t:?}"),
                TokenInput::Verify(invariants::fixture_token(*t).to_owned()),
            )
        })
        .collect();
    let valid = invariants::fixture_token(FixtureToken::Valid);
    // The last character carries 2 bits of data and 4 zero bits: another spelling of it
    // decodes to the same bytes only if the decoder allowed stray bits.
    let mut stray_bits = valid.to_owned();
    let last = stray_bits.pop().unwrap();
    stray_bits.push(if last == 'B' { 'C' } else { 'B' });
    out.push((
        "verify-stray-bits".to_owned(),
        TokenInput::Verify(stray_bits),
    ));
    out.push(("verify-empty".to_owned(), TokenInput::Verify(String::new())));
    out.push((
        "verify-padded".to_owned(),
        TokenInput::Verify(format!("{valid}==")),
    ));
    let mutation = |raw_edits, text_edits| TokenMutation {
        account: AccountChoice::Configured,
        call: CallChoice::Call,
        issued_after_ms: 0,
        ttl_us: 60_000_000,
        nonce: [7; 16],
        text_edits,
        raw_edits,
    };
    out.push((
        "mutate-every-field".to_owned(),
        TokenInput::Mutation(mutation(
            vec![
                ByteEdit::FlipBit(0, 0),  // version
                ByteEdit::FlipBit(0, 0),  // back
                ByteEdit::FlipBit(2, 1),  // key id
                ByteEdit::FlipBit(2, 1),  // back
                ByteEdit::FlipBit(12, 0), // expiry
                ByteEdit::FlipBit(12, 0), // back
                ByteEdit::FlipBit(20, 7), // nonce
                ByteEdit::FlipBit(60, 0), // tag
            ],
            vec![],
        )),
    ));
    out.push((
        "mutate-text".to_owned(),
        TokenInput::Mutation(mutation(
            vec![],
            vec![
                ByteEdit::Replace(81, b'A'),
                ByteEdit::Insert(0, b'A'),
                ByteEdit::Delete(0),
                ByteEdit::Truncate(81),
            ],
        )),
    ));
    out
}

/// The `twiml` seeds, by name.
fn twiml_seeds() -> Vec<(&'static str, StreamTwiml)> {
    let url = "wss://streamguard.example/voice/stream";
    let base = || StreamTwiml::connect(url);
    vec![
        (
            "connect-token",
            base().parameter("token", invariants::fixture_token(FixtureToken::Valid)),
        ),
        (
            "start-all-attributes",
            StreamTwiml {
                verb: Verb::Start,
                name: Some("call 1".to_owned()),
                track: Some(Track::Both),
                status_callback: Some("https://s.example/status?a=1&b=2".to_owned()),
                status_callback_method: Some(Method::Post),
                ..base()
            }
            .parameter("a", "1")
            .parameter("b", "2"),
        ),
        (
            "escaping",
            base()
                .parameter("callId", "a&b<c>\"d'e\n\r\tf")
                .parameter("名前", "ünïcødé € 😀"),
        ),
        ("forbidden-character", base().parameter("x", "a\u{1}b")),
        ("nonchar-fffe", base().parameter("x", "\u{FFFE}")),
        (
            "url-query",
            StreamTwiml::connect("wss://streamguard.example/voice/stream?token=x"),
        ),
        (
            "url-fragment",
            StreamTwiml::connect("wss://streamguard.example/#x"),
        ),
        (
            "url-https",
            StreamTwiml::connect("https://streamguard.example/voice/stream"),
        ),
        ("url-no-host", StreamTwiml::connect("wss:///voice/stream")),
        (
            "url-uppercase-scheme",
            StreamTwiml::connect("WS://h.example"),
        ),
        (
            "url-non-ascii-host",
            StreamTwiml::connect("ws://é.example/"),
        ),
        (
            "duplicate-parameter",
            base().parameter("token", "a").parameter("token", "b"),
        ),
        ("empty-parameter-name", base().parameter("", "x")),
        (
            "connect-outbound-track",
            StreamTwiml {
                track: Some(Track::Outbound),
                ..base()
            },
        ),
    ]
}

/// The `signature` seeds, by name.
fn signature_seeds() -> Vec<(&'static str, SignatureInput)> {
    let sig = |url: SignedUrl, body, header, params: &[(&str, &str)]| SignatureInput {
        url,
        body,
        header,
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let https = |s: &str| SignedUrl::Https(s.to_owned());
    let wss = |s: &str| SignedUrl::Wss(s.to_owned());
    let sdk_params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];
    let sdk_url = "mycompany.com/myapp.php?foo=1&bar=2";
    use SignatureHeader as H;
    vec![
        (
            "sdk-vector",
            sig(https(sdk_url), SignedBody::None, H::Computed, &sdk_params),
        ),
        (
            "sdk-vector-header",
            sig(
                https(sdk_url),
                SignedBody::None,
                H::Raw(b"RSOYDt4T1cUTdK1PDd93/VVr8B8=".to_vec()),
                &sdk_params,
            ),
        ),
        (
            "upgrade-with-port",
            sig(
                wss("streamguard.example/voice/stream"),
                SignedBody::None,
                H::PortVariant { with_port: true },
                &[],
            ),
        ),
        (
            "upgrade-without-port",
            sig(
                wss("streamguard.example:443/voice/stream"),
                SignedBody::None,
                H::PortVariant { with_port: false },
                &[],
            ),
        ),
        (
            "json-body",
            sig(
                https("s.example/hook"),
                SignedBody::Hashed(b"{\"a\":1}".to_vec()),
                H::Computed,
                &[],
            ),
        ),
        (
            "body-without-hash",
            sig(
                https("s.example/hook"),
                SignedBody::Raw(b"{}".to_vec()),
                H::Computed,
                &[],
            ),
        ),
        (
            "body-with-params",
            sig(
                https("s.example/hook"),
                SignedBody::Hashed(b"{}".to_vec()),
                H::Computed,
                &[("a", "1")],
            ),
        ),
        (
            "other-auth-token",
            sig(
                https("s.example/hook"),
                SignedBody::None,
                H::OtherAuthToken,
                &[("CallSid", "CA1")],
            ),
        ),
        (
            "missing",
            sig(https("s.example/hook"), SignedBody::None, H::Missing, &[]),
        ),
        (
            "edited",
            sig(
                https("s.example/hook"),
                SignedBody::None,
                H::Edited(ByteEdit::FlipBit(3, 2)),
                &[],
            ),
        ),
        (
            "ipv6-port",
            sig(
                https("[::1]:8443/x"),
                SignedBody::None,
                H::PortVariant { with_port: false },
                &[],
            ),
        ),
        (
            "userinfo",
            sig(
                SignedUrl::Http("u:p@h.example:80/x".to_owned()),
                SignedBody::None,
                H::PortVariant { with_port: false },
                &[],
            ),
        ),
        (
            "repeated-params",
            sig(
                https("s.example/hook"),
                SignedBody::None,
                H::Computed,
                &[("a", "2"), ("a", "1"), ("a", "1"), ("A", "1")],
            ),
        ),
        (
            "not-a-url",
            sig(
                SignedUrl::Raw("ftp://s.example/".to_owned()),
                SignedBody::None,
                H::Computed,
                &[],
            ),
        ),
    ]
}

/// The `start_frame` seeds: Twilio messages as text (`PROTOCOL.md` §2).
fn start_frame_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |name: &str, text: String| out.push((format!("{name}.json"), text.into_bytes()));
    let spec = |f: fn(&mut StartSpec)| {
        let mut s = StartSpec::valid();
        f(&mut s);
        invariants::start_json(&s)
    };
    let valid = invariants::start_json(&StartSpec::valid());
    add("start-valid", valid.clone());
    add("start-extra-parameter", spec(|s| s.extra_parameter = true));
    add(
        "start-other-call-token",
        spec(|s| s.token = TokenChoice::Fixture(FixtureToken::OtherCall)),
    );
    add(
        "start-for-other-call",
        spec(|s| {
            s.call = CallChoice::Other;
            s.token = TokenChoice::Fixture(FixtureToken::OtherCall);
        }),
    );
    add(
        "start-other-account",
        spec(|s| {
            s.account = AccountChoice::Other;
            s.token = TokenChoice::Fixture(FixtureToken::OtherAccount);
        }),
    );
    add(
        "start-other-account-token",
        spec(|s| s.token = TokenChoice::Fixture(FixtureToken::OtherAccount)),
    );
    add(
        "start-other-key",
        spec(|s| s.token = TokenChoice::Fixture(FixtureToken::OtherKey)),
    );
    add(
        "start-expired",
        spec(|s| s.token = TokenChoice::Fixture(FixtureToken::Expired)),
    );
    add(
        "start-second-token",
        spec(|s| s.token = TokenChoice::Fixture(FixtureToken::SecondForCall)),
    );
    add("start-no-token", spec(|s| s.token = TokenChoice::Missing));
    add(
        "start-garbage-token",
        spec(|s| s.token = TokenChoice::Raw("not-a-token".to_owned())),
    );
    add(
        "start-stream-sid-mismatch",
        spec(|s| s.top_level_differs = true),
    );
    add(
        "start-escaped-token-name",
        valid.replace(r#""token":"#, r#""tok\u0065n":"#),
    );
    let token = invariants::fixture_token(FixtureToken::Valid);
    add(
        "start-repeated-token",
        valid.replace(r#""token":"#, &format!(r#""token":"{token}","token":"#)),
    );
    for t in Template::ALL {
        if t != Template::Start {
            add(
                &format!("{t:?}").to_lowercase(),
                invariants::message_json(t, StreamChoice::Stream),
            );
        }
    }
    add("not-json", "hello".to_owned());
    out
}

fn http(method: &str, target: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut s = format!("{method} {target} HTTP/1.1\r\nHost: streamguard.example\r\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// The `upgrade_request_raw` seeds: HTTP request heads for [`PolicyUrl::NoPort`].
fn upgrade_raw_seeds() -> Vec<(String, Vec<u8>)> {
    let key = invariants::WEBSOCKET_KEY.to_owned();
    let hs = |extra: &[(&'static str, String)]| {
        let mut h = vec![
            ("Upgrade", "websocket".to_owned()),
            ("Connection", "Upgrade".to_owned()),
            ("Sec-WebSocket-Version", "13".to_owned()),
            ("Sec-WebSocket-Key", key.clone()),
        ];
        h.extend_from_slice(extra);
        h
    };
    let sig = |target: &str, with_port| {
        invariants::upgrade_signature(PolicyUrl::NoPort, target, with_port)
    };
    let path = invariants::STREAM_PATH;
    let token_target = format!(
        "{path}?token={}",
        invariants::fixture_token(FixtureToken::Valid)
    );
    let other_auth = compute_signature::<&str, &str>(
        &streamguard::secret::AuthToken::new(invariants::OTHER_AUTH_TOKEN).unwrap(),
        "wss://streamguard.example/voice/stream",
        &[],
    );
    let x_sig = "X-Twilio-Signature";
    let mut out = vec![
        (
            "signed",
            http("GET", path, &hs(&[(x_sig, sig(path, false))])),
        ),
        (
            "signed-port-443",
            http("GET", path, &hs(&[(x_sig, sig(path, true))])),
        ),
        (
            "signed-token-query",
            http(
                "GET",
                &token_target,
                &hs(&[(x_sig, sig(&token_target, false))]),
            ),
        ),
        ("unsigned", http("GET", path, &hs(&[]))),
        (
            "signed-other-auth-token",
            http("GET", path, &hs(&[(x_sig, other_auth)])),
        ),
        (
            "two-signatures",
            http(
                "GET",
                path,
                &hs(&[(x_sig, sig(path, false)), (x_sig, sig(path, true))]),
            ),
        ),
        (
            "post",
            http("POST", path, &hs(&[(x_sig, sig(path, false))])),
        ),
        (
            "trailing-slash",
            http(
                "GET",
                "/voice/stream/",
                &hs(&[(x_sig, sig("/voice/stream/", false))]),
            ),
        ),
        (
            "version-8",
            http(
                "GET",
                path,
                &[
                    ("Upgrade", "websocket".to_owned()),
                    ("Connection", "Upgrade".to_owned()),
                    ("Sec-WebSocket-Version", "8".to_owned()),
                    ("Sec-WebSocket-Key", key.clone()),
                    (x_sig, sig(path, false)),
                ],
            ),
        ),
        (
            "forwarded-headers",
            http(
                "GET",
                path,
                &hs(&[
                    ("X-Forwarded-Host", "evil.example".to_owned()),
                    ("X-Forwarded-Proto", "http".to_owned()),
                    (x_sig, sig(path, false)),
                ]),
            ),
        ),
    ];
    let lowercase = hs(&[(x_sig, sig(path, false))]);
    let mut lower_head =
        String::from("GET /voice/stream HTTP/1.1\r\nhost: streamguard.example\r\n");
    for (n, v) in &lowercase {
        lower_head.push_str(&format!("{}: {v}\r\n", n.to_ascii_lowercase()));
    }
    lower_head.push_str("\r\n");
    out.push(("lowercase-headers", lower_head.into_bytes()));
    out.into_iter()
        .map(|(n, b)| (format!("{n}.http"), b))
        .collect()
}

/// Every seed: target → (file name without the `seed-` prefix, bytes).
fn all_seeds() -> BTreeMap<&'static str, Vec<(String, Vec<u8>)>> {
    fn named<T>(
        v: Vec<(impl Into<String>, T)>,
        f: impl Fn(&T) -> Vec<u8>,
    ) -> Vec<(String, Vec<u8>)> {
        v.into_iter().map(|(n, x)| (n.into(), f(&x))).collect()
    }
    let json = |v: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        v.into_iter()
            .map(|(n, b)| (format!("{n}.json"), b))
            .collect()
    };
    let mut m = BTreeMap::new();
    m.insert("upgrade_request", json(named(upgrade_seeds(), encoded)));
    m.insert("upgrade_request_raw", upgrade_raw_seeds());
    m.insert("start_frame", start_frame_seeds());
    m.insert("session", json(named(session_seeds(), encoded)));
    m.insert("token", json(named(token_seeds(), encoded)));
    m.insert("twiml", json(named(twiml_seeds(), encoded)));
    m.insert("signature", json(named(signature_seeds(), encoded)));
    m
}

/// Writes the seeds into `fuzz/corpus/<target>/seed-*`, replacing the old ones.
#[test]
#[ignore = "writes files: run to regenerate the seeds after changing them"]
fn write_seeds() {
    for (target, seeds) in all_seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
            {
                std::fs::remove_file(p).unwrap();
            }
        }
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}

#[test]
fn committed_seeds_are_current() {
    for (target, seeds) in all_seeds() {
        let committed: BTreeMap<String, Vec<u8>> = corpus(target)
            .into_iter()
            .filter_map(|(p, b)| {
                let name = p.file_name()?.to_string_lossy().into_owned();
                Some((name.strip_prefix("seed-")?.to_owned(), b))
            })
            .collect();
        let generated: BTreeMap<String, Vec<u8>> = seeds.into_iter().collect();
        assert_eq!(
            committed.keys().collect::<Vec<_>>(),
            generated.keys().collect::<Vec<_>>(),
            "{target}: seed files differ; run `cargo test --test fuzz_invariants -- --ignored write_seeds`"
        );
        for (name, bytes) in &generated {
            assert!(
                committed[name] == *bytes,
                "{target}: seed-{name} is stale; run `cargo test --test fuzz_invariants -- --ignored write_seeds`"
            );
        }
    }
}

#[test]
fn every_target_has_a_seed_a_dictionary_and_a_fuzz_target() {
    let seeds = all_seeds();
    for target in TARGETS {
        assert!(!seeds[target].is_empty(), "{target} has no seeds");
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file(),
            "{target} has no fuzz target"
        );
        let dict = fuzz_dir().join("dicts").join(format!("{target}.dict"));
        let text =
            std::fs::read_to_string(&dict).unwrap_or_else(|e| panic!("{}: {e}", dict.display()));
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // `name="value"` or `"value"`; libFuzzer ignores entries over 64 bytes.
            let value = if line.starts_with('"') {
                line
            } else {
                line.split_once('=').map_or(line, |(_, v)| v)
            };
            assert!(
                value.len() >= 2 && value.starts_with('"') && value.ends_with('"'),
                "{target}.dict: bad line {line:?}"
            );
            assert!(
                value.len() <= 66,
                "{target}.dict: entry over 64 bytes {line:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written inputs: the seeds reach what they are named for
// ---------------------------------------------------------------------------------------------

fn session_outcome(name: &str) -> SessionOutcome {
    let (_, input) = session_seeds()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap();
    invariants::session(&input)
}

#[test]
fn session_seeds_reach_their_paths() {
    let outcome = |authenticated, delivered, closes| SessionOutcome {
        authenticated,
        delivered,
        closes,
    };
    let cases = [
        ("genuine-call", outcome(1, 4, 0)),
        ("token-in-url", outcome(1, 1, 0)),
        ("url-and-start-tokens-differ", outcome(0, 0, 1)),
        ("token-replayed-on-second-connection", outcome(1, 0, 1)),
        ("second-token-same-call", outcome(1, 0, 1)),
        ("two-calls", outcome(2, 2, 0)),
        ("token-for-other-call", outcome(0, 0, 1)),
        ("other-account", outcome(0, 0, 1)),
        ("expired-token", outcome(0, 0, 1)),
        ("media-before-start", outcome(0, 0, 1)),
        ("start-after-deadline", outcome(0, 0, 1)),
        ("start-before-deadline-then-long-call", outcome(1, 1, 0)),
        ("binary-before-start", outcome(0, 0, 1)),
        ("ping-before-start", outcome(0, 0, 1)),
        ("ping-while-streaming", outcome(1, 1, 0)),
        ("oversized-after-start", outcome(1, 0, 1)),
        ("too-large-after-start", outcome(1, 0, 1)),
        ("malformed-after-start", outcome(1, 0, 1)),
        ("media-for-other-stream", outcome(1, 0, 1)),
        ("second-start", outcome(1, 0, 1)),
        ("connected-twice", outcome(0, 0, 1)),
        ("peer-closed-then-media", outcome(1, 0, 0)),
        ("unknown-event-while-streaming", outcome(1, 1, 0)),
        ("mutated-start", outcome(0, 0, 1)),
        ("text-after-start", outcome(1, 0, 0)),
    ];
    assert_eq!(cases.len(), session_seeds().len());
    for (name, expected) in cases {
        assert_eq!(session_outcome(name), expected, "{name}");
    }
}

#[test]
fn start_frame_seeds_reach_their_paths() {
    let seeds: BTreeMap<String, Vec<u8>> = start_frame_seeds().into_iter().collect();
    let cases = [
        ("start-valid.json", StartOutcome::Authenticated),
        ("start-extra-parameter.json", StartOutcome::Authenticated),
        ("start-for-other-call.json", StartOutcome::Authenticated),
        // A valid MAC, but not the token the store minted for the call: not on record.
        ("start-second-token.json", StartOutcome::StartRefused),
        ("start-escaped-token-name.json", StartOutcome::Authenticated),
        ("start-other-call-token.json", StartOutcome::StartRefused),
        ("start-other-account.json", StartOutcome::StartRefused),
        ("start-other-account-token.json", StartOutcome::StartRefused),
        ("start-other-key.json", StartOutcome::StartRefused),
        ("start-expired.json", StartOutcome::StartRefused),
        ("start-no-token.json", StartOutcome::StartRefused),
        ("start-garbage-token.json", StartOutcome::StartRefused),
        ("start-stream-sid-mismatch.json", StartOutcome::Unparsed),
        ("start-repeated-token.json", StartOutcome::Unparsed),
        ("connected.json", StartOutcome::OtherMessage),
        ("media.json", StartOutcome::OtherMessage),
        ("dtmf.json", StartOutcome::OtherMessage),
        ("mark.json", StartOutcome::OtherMessage),
        ("stop.json", StartOutcome::OtherMessage),
        ("unknown.json", StartOutcome::OtherMessage),
        ("not-json.json", StartOutcome::Unparsed),
    ];
    assert_eq!(cases.len(), seeds.len());
    for (name, expected) in cases {
        assert_eq!(invariants::start_frame(&seeds[name]), expected, "{name}");
    }
    assert_eq!(
        invariants::start_frame(&[0xff, 0xfe]),
        StartOutcome::NotText
    );
}

#[test]
fn upgrade_seeds_reach_their_paths() {
    let accepted = |required, if_present, off| UpgradeOutcome {
        required,
        if_present,
        off,
    };
    let all = accepted(true, true, true);
    let none = accepted(false, false, false);
    let unsigned_only = accepted(false, true, true);
    let off_only = accepted(false, false, true);
    let structured = [
        ("signed", all),
        ("signed-with-port", all),
        ("signed-default-port-policy", all),
        ("signed-other-port-policy", all),
        ("signed-local-ws", all),
        ("signed-token-query", all),
        ("unsigned", unsigned_only),
        ("two-signatures", off_only),
        ("post", none),
        ("forwarded-headers", all),
        ("trailing-slash", none),
        ("query-signed-without-query", off_only),
    ];
    let seeds = upgrade_seeds();
    assert_eq!(structured.len(), seeds.len());
    for (name, expected) in structured {
        let input = &seeds.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(invariants::upgrade_request(input), expected, "{name}");
    }
    let raw: BTreeMap<String, Vec<u8>> = upgrade_raw_seeds().into_iter().collect();
    let cases = [
        ("signed.http", all),
        ("signed-port-443.http", all),
        ("signed-token-query.http", all),
        ("unsigned.http", unsigned_only),
        ("signed-other-auth-token.http", off_only),
        ("two-signatures.http", off_only),
        ("post.http", none),
        ("trailing-slash.http", none),
        ("version-8.http", none),
        ("forwarded-headers.http", all),
        ("lowercase-headers.http", all),
    ];
    assert_eq!(cases.len(), raw.len());
    for (name, expected) in cases {
        assert_eq!(
            invariants::upgrade_request_raw(&raw[name]),
            Some(expected),
            "{name}"
        );
    }
    assert_eq!(
        invariants::upgrade_request_raw(b"GET /voice/stream HTTP/1.1\r\n"),
        None
    );
}

#[test]
fn token_seeds_reach_their_paths() {
    for (name, input) in token_seeds() {
        let verified = invariants::token(&input);
        let expected = name == "verify-Valid" || name == "verify-SecondForCall";
        assert_eq!(verified, expected, "{name}");
    }
}

#[test]
fn twiml_seeds_reach_their_paths() {
    let rendered = [
        "connect-token",
        "start-all-attributes",
        "escaping",
        "url-uppercase-scheme",
        "url-non-ascii-host",
    ];
    for (name, input) in twiml_seeds() {
        assert_eq!(
            invariants::twiml(&input),
            rendered.contains(&name),
            "{name}"
        );
    }
}

#[test]
fn signature_seeds_reach_their_paths() {
    let accepted = [
        "sdk-vector",
        "upgrade-with-port",
        "upgrade-without-port",
        "json-body",
        "ipv6-port",
        "userinfo",
        "repeated-params",
    ];
    for (name, input) in signature_seeds() {
        assert_eq!(
            invariants::signature(&input),
            accepted.contains(&name),
            "{name}"
        );
    }
}

#[test]
fn sdk_vector_header_is_the_known_answer() {
    // Known answer from Twilio's SDK test suites (tests/data/twilio-signature.json), under
    // that vector's auth token: the seed uses the fixed fuzz auth token instead, so the
    // header there is refused; this pins that the seed is the real vector's shape.
    let auth = streamguard::secret::AuthToken::new("12345").unwrap();
    let params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];
    assert_eq!(
        compute_signature(
            &auth,
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            &params
        ),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
}
