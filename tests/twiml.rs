//! TwiML rendering (`src/wire/twiml.rs`): byte equality with twilio-python for every case of
//! `tests/data/twiml-python.json`, insta snapshots pinning the exact bytes of the documents
//! the server sends, every refusal (URL shape, forbidden XML characters in each field,
//! parameter names, track under `<Connect>`), and a property: whatever the parameters, the
//! document parses back to exactly the URL and the parameters, in order, with no text node
//! and no whitespace between elements.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod common;

use proptest::prelude::*;
use serde::Deserialize;
use streamguard::wire::twiml::{
    Field, Method, Response, Say, StreamTwiml, Track, TwimlError, Verb, is_xml_char, render,
    render_response,
};

// ---------------------------------------------------------------------------------------------
// twilio-python known answers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct PythonCases {
    source: String,
    cases: Vec<PythonCase>,
}

#[derive(Debug, Deserialize)]
struct PythonCase {
    id: String,
    verb: String,
    url: String,
    name: Option<String>,
    track: Option<String>,
    status_callback: Option<String>,
    status_callback_method: Option<String>,
    parameters: Vec<(String, String)>,
    say: Option<PythonSay>,
    pause_after: Option<u32>,
    expected: String,
}

#[derive(Debug, Deserialize)]
struct PythonSay {
    text: String,
    voice: Option<String>,
    language: Option<String>,
    #[serde(rename = "loop")]
    loop_count: Option<u32>,
}

fn to_twiml(c: &PythonCase) -> StreamTwiml {
    StreamTwiml {
        verb: match c.verb.as_str() {
            "connect" => Verb::Connect,
            "start" => Verb::Start,
            other => panic!("{}: unknown verb {other}", c.id),
        },
        url: c.url.clone(),
        name: c.name.clone(),
        track: c.track.as_deref().map(|t| match t {
            "inbound_track" => Track::Inbound,
            "outbound_track" => Track::Outbound,
            "both_tracks" => Track::Both,
            other => panic!("{}: unknown track {other}", c.id),
        }),
        status_callback: c.status_callback.clone(),
        status_callback_method: c.status_callback_method.as_deref().map(|m| match m {
            "GET" => Method::Get,
            "POST" => Method::Post,
            other => panic!("{}: unknown method {other}", c.id),
        }),
        parameters: c.parameters.clone(),
    }
}

#[test]
fn every_python_case_renders_byte_for_byte() {
    let file: PythonCases = serde_json::from_str(include_str!("data/twiml-python.json")).unwrap();
    assert!(file.source.contains("twilio-python"), "{}", file.source);
    assert!(
        file.cases.len() >= 30,
        "the vector file shrank: review this test"
    );
    let mut with_say = 0;
    for c in &file.cases {
        let response = Response {
            say: c.say.as_ref().map(|s| Say {
                text: s.text.clone(),
                voice: s.voice.clone(),
                language: s.language.clone(),
                loop_count: s.loop_count,
            }),
            stream: to_twiml(c),
            pause_after: c.pause_after,
        };
        assert_eq!(
            render_response(&response).as_deref(),
            Ok(c.expected.as_str()),
            "case {}",
            c.id
        );
        if c.say.is_none() && c.pause_after.is_none() {
            // The stream alone renders the same through `render`.
            assert_eq!(
                render(&to_twiml(c)).as_deref(),
                Ok(c.expected.as_str()),
                "case {}",
                c.id
            );
        } else {
            with_say += 1;
        }
    }
    assert!(
        with_say >= 8,
        "the <Say>/<Pause> cases are gone: review this test"
    );
}

#[test]
fn say_refuses_what_xml_cannot_hold() {
    let stream = StreamTwiml::connect("wss://example.com/media");
    for (say, field) in [
        (
            Say {
                text: "bell\u{7}".into(),
                ..Say::default()
            },
            Field::SayText,
        ),
        (
            Say {
                text: "ok".into(),
                voice: Some("\u{0}".into()),
                ..Say::default()
            },
            Field::SayVoice,
        ),
        (
            Say {
                text: "ok".into(),
                language: Some("\u{FFFE}".into()),
                ..Say::default()
            },
            Field::SayLanguage,
        ),
    ] {
        let r = Response {
            say: Some(say),
            stream: stream.clone(),
            pause_after: None,
        };
        assert_eq!(
            render_response(&r),
            Err(TwimlError::ForbiddenCharacter(field))
        );
    }
}

#[test]
fn track_names_round_trip() {
    for (t, s) in [
        (Track::Inbound, "inbound_track"),
        (Track::Outbound, "outbound_track"),
        (Track::Both, "both_tracks"),
    ] {
        assert_eq!(t.as_str(), s);
        assert_eq!(Track::parse(s), Some(t));
    }
    assert_eq!(Track::parse("inbound"), None);
    assert_eq!(Track::parse("Inbound_track"), None);
    assert_eq!(
        (Method::Get.as_str(), Method::Post.as_str()),
        ("GET", "POST")
    );
}

// ---------------------------------------------------------------------------------------------
// Snapshots: the exact bytes the server sends
// ---------------------------------------------------------------------------------------------

macro_rules! snapshot {
    ($name:literal, $value:expr) => {
        let value: String = $value;
        // insta trims surrounding whitespace when comparing; the bytes must have none.
        assert_eq!(value.trim(), value);
        insta::with_settings!({
            snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"),
            prepend_module_to_snapshot => false,
        }, {
            insta::assert_snapshot!($name, value);
        })
    };
}

const STREAM_URL: &str = "wss://streamguard.example.com/voice/stream";

#[test]
fn snapshot_with_token() {
    // A deterministic token (fixed key, time and nonce): the snapshot pins the token format
    // as well as the TwiML around it.
    let keys = common::keyset(1);
    let token = common::token_for(
        &keys,
        &common::account(common::ACCOUNT),
        &common::call(common::CALL),
        common::T0,
        1,
    );
    let xml = render(&StreamTwiml::connect(STREAM_URL).parameter("token", token.as_str())).unwrap();
    assert!(xml.contains(token.as_str()));
    snapshot!("twiml_with_token", xml);
}

#[test]
fn snapshot_without_parameters() {
    let xml = render(&StreamTwiml::connect(STREAM_URL)).unwrap();
    assert!(xml.ends_with(
        r#"<Stream url="wss://streamguard.example.com/voice/stream" /></Connect></Response>"#
    ));
    snapshot!("twiml_without_parameters", xml);
}

#[test]
fn snapshot_with_several_parameters() {
    let t = StreamTwiml::connect(STREAM_URL)
        .parameter("token", "AQID-_abc")
        .parameter("callId", "abc123")
        .parameter("tenant", "acme");
    snapshot!("twiml_several_parameters", render(&t).unwrap());
}

#[test]
fn snapshot_with_values_that_need_escaping() {
    let t = StreamTwiml {
        verb: Verb::Start,
        name: Some(r#"a "quoted" <name>"#.to_owned()),
        track: Some(Track::Both),
        status_callback: Some("https://example.com/status?a=1&b=2".to_owned()),
        status_callback_method: Some(Method::Post),
        ..StreamTwiml::connect(STREAM_URL)
    }
    .parameter("a&b", "x<y>z")
    .parameter("quote\"", "it's \"fine\"")
    .parameter("ws", "tab\there\nline\r\nend")
    .parameter("unicode", "café 日本語 😀")
    .parameter("entity", "&amp;");
    snapshot!("twiml_escaping", render(&t).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

const URL_CASES: &[(&str, Result<(), TwimlError>)] = &[
    ("wss://example.com/voice/stream", Ok(())),
    ("ws://127.0.0.1:8080/voice/stream", Ok(())),
    ("WSS://example.com/x", Ok(())),
    ("wss://example.com/p%3Fq", Ok(())),
    (
        "wss://example.com/x?token=abc",
        Err(TwimlError::UrlHasQuery),
    ),
    ("wss://example.com/x?", Err(TwimlError::UrlHasQuery)),
    ("wss://example.com/x?a#b", Err(TwimlError::UrlHasQuery)),
    ("wss://example.com/x#frag", Err(TwimlError::UrlHasFragment)),
    ("wss://example.com/x#", Err(TwimlError::UrlHasFragment)),
    ("https://example.com/x", Err(TwimlError::UrlScheme)),
    ("http://example.com/x", Err(TwimlError::UrlScheme)),
    ("ftp://example.com/x", Err(TwimlError::UrlScheme)),
    ("wss:/example.com/x", Err(TwimlError::UrlScheme)),
    ("wss:example.com/x", Err(TwimlError::UrlScheme)),
    ("example.com/x", Err(TwimlError::UrlScheme)),
    (" wss://example.com/x", Err(TwimlError::UrlScheme)),
    ("", Err(TwimlError::UrlScheme)),
    ("//example.com/x", Err(TwimlError::UrlScheme)),
    ("wsss://example.com/x", Err(TwimlError::UrlScheme)),
    // Scheme is checked before the query.
    ("https://example.com/x?a=1", Err(TwimlError::UrlScheme)),
    // The authority must name a host (RFC 6455 §3, RFC 3986 §3.2); userinfo and a port are
    // not a host.
    ("wss://user@example.com/x", Ok(())),
    ("wss://[::1]:8443/x", Ok(())),
    ("ws://example.com:8080", Ok(())),
    ("wss://", Err(TwimlError::UrlScheme)),
    ("wss:///x", Err(TwimlError::UrlScheme)),
    ("wss://user@/x", Err(TwimlError::UrlScheme)),
    ("wss://:443/x", Err(TwimlError::UrlScheme)),
    ("wss://@", Err(TwimlError::UrlScheme)),
    ("wss://?token=abc", Err(TwimlError::UrlScheme)),
    ("wss://#x", Err(TwimlError::UrlScheme)),
    // A `?` inside the fragment is not a query (RFC 3986 §3.4, §3.5).
    ("wss://example.com/x#a?b", Err(TwimlError::UrlHasFragment)),
];

#[test]
fn url_table() {
    for (url, expected) in URL_CASES {
        let got = render(&StreamTwiml::connect(*url).parameter("token", "t")).map(|_| ());
        assert_eq!(got, *expected, "{url:?}");
    }
}

/// The twiml fuzz target's oracle states the URL rules itself (from RFC 6455 and RFC 3986,
/// `invariants::stream_url_problems`): it must judge the hand-written table above as the
/// table says (its first problem is the refusal, none for an accepted URL) and find nothing
/// wrong with any URL twilio-python renders in `tests/data/twiml-python.json`.
#[test]
fn the_fuzz_oracle_agrees_with_the_url_table_and_the_python_vectors() {
    use streamguard::invariants::stream_url_problems;
    for (url, expected) in URL_CASES {
        assert_eq!(
            stream_url_problems(url).first().copied(),
            expected.err(),
            "{url:?}"
        );
    }
    let file: PythonCases = serde_json::from_str(include_str!("data/twiml-python.json")).unwrap();
    for c in &file.cases {
        assert_eq!(stream_url_problems(&c.url), [], "case {}", c.id);
    }
}

/// A `ws://` URL whose host is not ASCII renders like the same `wss://` URL does; it must not
/// be reported as a wrong scheme.
#[test]

fn ws_url_with_non_ascii_host_is_not_a_scheme_error() {
    assert!(render(&StreamTwiml::connect("wss://é.example/x")).is_ok());
    assert_eq!(
        render(&StreamTwiml::connect("ws://é.example/x")).map(|_| ()),
        Ok(())
    );
    assert_eq!(
        render(&StreamTwiml::connect("ws://日本.example/x")).map(|_| ()),
        Ok(())
    );
}

/// Characters XML 1.0 forbids, in each field that carries text.
#[test]
fn forbidden_characters_in_each_field() {
    const FORBIDDEN: [char; 7] = [
        '\u{0}', '\u{1}', '\u{B}', '\u{C}', '\u{1F}', '\u{FFFE}', '\u{FFFF}',
    ];
    type Build = fn(String) -> StreamTwiml;
    let fields: [(Field, Build); 5] = [
        (Field::Url, |s| {
            StreamTwiml::connect(format!("wss://example.com/{s}"))
        }),
        (Field::Name, |s| StreamTwiml {
            name: Some(s),
            ..StreamTwiml::connect(STREAM_URL)
        }),
        (Field::StatusCallback, |s| StreamTwiml {
            status_callback: Some(format!("https://example.com/{s}")),
            ..StreamTwiml::connect(STREAM_URL)
        }),
        (Field::ParameterName(1), |s| {
            StreamTwiml::connect(STREAM_URL)
                .parameter("ok", "ok")
                .parameter(format!("n{s}"), "v")
        }),
        (Field::ParameterValue(1), |s| {
            StreamTwiml::connect(STREAM_URL)
                .parameter("ok", "ok")
                .parameter("n", format!("v{s}x"))
        }),
    ];
    for (field, build) in fields {
        // The same builder with an allowed character renders: the field really is reached.
        assert!(render(&build("a".to_owned())).is_ok(), "{field:?}");
        for c in FORBIDDEN {
            assert_eq!(
                render(&build(c.to_string())),
                Err(TwimlError::ForbiddenCharacter(field)),
                "{field:?} U+{:04X}",
                u32::from(c)
            );
        }
    }
}

#[test]
fn parameter_name_rules() {
    let p = |pairs: &[(&str, &str)]| {
        let mut t = StreamTwiml::connect(STREAM_URL);
        for (n, v) in pairs {
            t = t.parameter(*n, *v);
        }
        render(&t).map(|_| ())
    };
    type Pairs<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Pairs<'_>, Result<(), TwimlError>)] = &[
        (&[("", "v")], Err(TwimlError::EmptyParameterName(0))),
        (
            &[("a", "1"), ("", "v")],
            Err(TwimlError::EmptyParameterName(1)),
        ),
        (
            &[("token", "a"), ("token", "b")],
            Err(TwimlError::DuplicateParameterName(1)),
        ),
        (
            &[("token", "a"), ("token", "a")],
            Err(TwimlError::DuplicateParameterName(1)),
        ),
        (
            &[("a", "1"), ("b", "2"), ("a", "3")],
            Err(TwimlError::DuplicateParameterName(2)),
        ),
        // Names are compared exactly.
        (&[("token", "a"), ("Token", "b")], Ok(())),
        (&[("token", "a"), ("token ", "b")], Ok(())),
        // Empty values are fine.
        (&[("a", "")], Ok(())),
    ];
    for (pairs, expected) in cases {
        assert_eq!(p(pairs), *expected, "{pairs:?}");
    }
}

#[test]
fn only_inbound_track_under_connect() {
    for (verb, track, expected) in [
        (Verb::Connect, None, Ok(())),
        (Verb::Connect, Some(Track::Inbound), Ok(())),
        (
            Verb::Connect,
            Some(Track::Outbound),
            Err(TwimlError::TrackNotAllowed),
        ),
        (
            Verb::Connect,
            Some(Track::Both),
            Err(TwimlError::TrackNotAllowed),
        ),
        (Verb::Start, Some(Track::Inbound), Ok(())),
        (Verb::Start, Some(Track::Outbound), Ok(())),
        (Verb::Start, Some(Track::Both), Ok(())),
    ] {
        let t = StreamTwiml {
            verb,
            track,
            ..StreamTwiml::connect(STREAM_URL)
        };
        assert_eq!(render(&t).map(|_| ()), expected, "{verb:?} {track:?}");
    }
}

/// The XML 1.0 `Char` production (§2.2), written out here independently of the crate.
fn xml_char(c: char) -> bool {
    let u = u32::from(c);
    matches!(u, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

#[test]
fn is_xml_char_matches_the_xml_production() {
    let boundaries = [
        0u32, 0x8, 0x9, 0xA, 0xB, 0xC, 0xD, 0xE, 0x1F, 0x20, 0x7F, 0x80, 0x85, 0xD7FF, 0xE000,
        0xFFFC, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x1FFFE, 0x10FFFF,
    ];
    for u in boundaries.into_iter().chain(0..0x300) {
        let c = char::from_u32(u).unwrap();
        assert_eq!(is_xml_char(c), xml_char(c), "U+{u:04X}");
    }
}

// ---------------------------------------------------------------------------------------------
// Property: parse back
// ---------------------------------------------------------------------------------------------

/// Text made of XML characters, biased towards the ones that need escaping.
fn xml_text(min: usize, max: usize) -> impl Strategy<Value = String> {
    let special = proptest::sample::select(vec![
        '&',
        '<',
        '>',
        '"',
        '\'',
        '\t',
        '\n',
        '\r',
        ' ',
        'é',
        '日',
        '😀',
        '\u{85}',
        '\u{2028}',
        '\u{FFFD}',
        '\u{10FFFF}',
    ]);
    proptest::collection::vec(prop_oneof![any::<char>(), special], min..=max)
        .prop_map(|v| v.into_iter().filter(|c| xml_char(*c)).collect::<String>())
}

fn stream_url() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("wss"), Just("ws")],
        "[a-z0-9.-]{1,20}(:[0-9]{1,5})?",
        proptest::collection::vec(any::<char>(), 0..20),
    )
        .prop_map(|(scheme, host, path)| {
            let path: String = path
                .into_iter()
                .filter(|c| xml_char(*c) && *c != '?' && *c != '#')
                .collect();
            format!("{scheme}://{host}/{path}")
        })
}

/// Every character XML 1.0 forbids (a Rust `char` is never a surrogate): C0 controls other
/// than tab, line feed and carriage return, and U+FFFE, U+FFFF.
fn forbidden_chars() -> Vec<char> {
    (0u32..0x20)
        .chain([0xFFFE, 0xFFFF])
        .filter_map(char::from_u32)
        .filter(|c| !xml_char(*c))
        .collect()
}

proptest! {
    #![proptest_config(common::proptest_config())]

    /// For any stream URL and any parameters with distinct non-empty names (all text made of
    /// XML characters): the document parses, gives back exactly the URL and the parameters
    /// in order, has no text node at all, and its bytes hold no raw newline, carriage
    /// return or tab and no whitespace between elements.
    #[test]
    fn render_then_parse_gives_back_the_input(
        url in stream_url(),
        raw in proptest::collection::vec((xml_text(1, 12), xml_text(0, 24)), 0..6),
        verb in prop_oneof![Just(Verb::Connect), Just(Verb::Start)],
    ) {
        let mut params: Vec<(String, String)> = Vec::new();
        for (n, v) in raw {
            if !n.is_empty() && !params.iter().any(|(m, _)| *m == n) {
                params.push((n, v));
            }
        }
        let t = StreamTwiml { verb, url: url.clone(), parameters: params.clone(), ..StreamTwiml::default() };
        let xml = render(&t).unwrap();

        prop_assert!(xml.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#));
        prop_assert!(!xml.contains(['\n', '\r', '\t']), "{}", xml);
        // A raw `>` only ever closes a tag (attribute values escape it), so the byte after
        // one is always `<` or the end: nothing between elements.
        for (i, _) in xml.match_indices('>') {
            let next = xml.as_bytes().get(i + 1);
            prop_assert!(next.is_none() || next == Some(&b'<'), "{}", xml);
        }

        let doc = roxmltree::Document::parse(&xml).unwrap();
        prop_assert!(doc.descendants().all(|n| !n.is_text()), "{}", xml);
        prop_assert!(doc.descendants().all(|n| !n.is_comment() && !n.is_pi()), "{}", xml);
        let root = doc.root_element();
        prop_assert_eq!(root.tag_name().name(), "Response");
        let verbs: Vec<_> = root.children().collect();
        prop_assert_eq!(verbs.len(), 1);
        let want_verb = match verb { Verb::Connect => "Connect", Verb::Start => "Start" };
        prop_assert_eq!(verbs[0].tag_name().name(), want_verb);
        let streams: Vec<_> = verbs[0].children().collect();
        prop_assert_eq!(streams.len(), 1);
        let stream = streams[0];
        prop_assert_eq!(stream.tag_name().name(), "Stream");
        prop_assert_eq!(stream.attributes().len(), 1);
        prop_assert_eq!(stream.attribute("url"), Some(url.as_str()));
        let got: Vec<(String, String)> = stream
            .children()
            .map(|p| {
                assert_eq!(p.tag_name().name(), "Parameter");
                assert_eq!(p.attributes().len(), 2);
                assert_eq!(p.children().count(), 0);
                (p.attribute("name").unwrap().to_owned(), p.attribute("value").unwrap().to_owned())
            })
            .collect();
        prop_assert_eq!(got, params);
    }

    /// Any text containing a character XML forbids, in a parameter value, is refused and
    /// nothing is rendered.
    #[test]
    fn forbidden_characters_are_always_refused(
        prefix in xml_text(0, 8),
        bad in proptest::sample::select(forbidden_chars()),
        suffix in xml_text(0, 8),
    ) {
        prop_assert!(!xml_char(bad));
        let value = format!("{prefix}{bad}{suffix}");
        let t = StreamTwiml::connect(STREAM_URL).parameter("v", value);
        prop_assert_eq!(render(&t), Err(TwimlError::ForbiddenCharacter(Field::ParameterValue(0))));
    }
}

/// `<Say>` text has `&`, `<` and `>` escaped, as twilio-python's ElementTree writes it
/// (`xml.etree.ElementTree` escapes all three in text); quotes stay as they are.
#[test]
fn say_text_is_escaped_as_elementtree_does() {
    let r = Response {
        say: Some(Say {
            text: r#"a < b > c & "d""#.into(),
            ..Say::default()
        }),
        stream: StreamTwiml::connect("wss://example.com/media"),
        pause_after: None,
    };
    let xml = render_response(&r).unwrap();
    assert!(
        xml.contains(r#"<Say>a &lt; b &gt; c &amp; "d"</Say>"#),
        "{xml}"
    );
}
