//! The media fast path (`src/wire/frames/fast.rs`) answers exactly as the general parser:
//! whenever `parse_media_fast` recognises a message, `parse_inbound_general` parses it to the
//! same frame, and `parse_inbound` (fast path first) equals `parse_inbound_general` on every
//! input. Checked on a table of edge cases (each with the path it must take and the general
//! parser's verdict), on generated messages (key order, whitespace, escapes, control
//! characters, repeated, unknown and missing fields, wrong types, bounds) and on one-byte
//! mutations of real frames. The canonical frames Twilio sends must take the fast path, or
//! the property would hold vacuously.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod common;

use common::STREAM;
use proptest::prelude::*;
use streamguard::limits::{DEFAULT_MAX_MESSAGE_BYTES, MAX_SHORT_FIELD_BYTES};
use streamguard::sid::StreamSid;
use streamguard::wire::frames::{
    FrameError, Inbound, parse_inbound, parse_inbound_general, parse_media_fast,
};

const MAX: usize = DEFAULT_MAX_MESSAGE_BYTES;

/// The property, for one input: the fast path agrees with the general parser.
fn agrees(text: &str) -> Result<(), String> {
    let general = parse_inbound_general(text, MAX);
    if let Some(fast) = parse_media_fast(text)
        && general != Ok(Inbound::Media(fast.clone()))
    {
        return Err(format!(
            "fast path gave {fast:?}, general parser {general:?} for {text:?}"
        ));
    }
    let combined = parse_inbound(text, MAX);
    if combined != general {
        return Err(format!(
            "parse_inbound gave {combined:?}, general parser {general:?} for {text:?}"
        ));
    }
    Ok(())
}

#[test]
fn twilio_frames_take_the_fast_path() {
    let sid = StreamSid::parse(STREAM).unwrap();
    for i in 0..500 {
        let text = streamguard::kit::simulator::media_message(&sid, i);
        let fast = parse_media_fast(&text).unwrap_or_else(|| panic!("not recognised: {text}"));
        assert_eq!(fast.stream_sid, sid);
        assert_eq!(fast.chunk(), Some((i + 1).to_string().as_str()));
        agrees(&text).unwrap();
    }
    // As PROTOCOL.md §2 prints it (whitespace between tokens), and the minimal form.
    for text in [
        format!(
            "{{\"event\": \"media\",\n \"sequenceNumber\": \"3\", \"streamSid\": \"{STREAM}\",\n \"media\": {{ \"track\": \"inbound\", \"chunk\": \"1\", \"timestamp\": \"5\", \"payload\": \"f39/fw==\" }} }}\n"
        ),
        format!(r#"{{"event":"media","streamSid":"{STREAM}","media":{{"payload":""}}}}"#),
    ] {
        let fast = parse_media_fast(&text).unwrap_or_else(|| panic!("not recognised: {text}"));
        assert_eq!(fast.stream_sid.as_str(), STREAM);
        agrees(&text).unwrap();
    }
}

/// Each case: the message, whether the fast path must recognise it, and what the general
/// parser says (`None`: a media frame).
#[test]
fn edge_cases_take_the_right_path_and_agree() {
    let long = "9".repeat(MAX_SHORT_FIELD_BYTES + 1);
    let at_bound = "9".repeat(MAX_SHORT_FIELD_BYTES);
    let m = |rest: &str| format!(r#"{{"event":"media","streamSid":"{STREAM}",{rest}}}"#);
    let cases: Vec<(&str, String, bool, Option<FrameError>)> = vec![
        (
            "payload with an escaped slash",
            m(r#""media":{"payload":"f39\/fw=="}"#),
            false,
            None,
        ),
        (
            "unicode escape in a counter",
            m(r#""sequenceNumber":"\u0033","media":{"payload":""}"#),
            false,
            None,
        ),
        (
            "escaped key",
            format!(r#"{{"event":"media","stream\u0053id":"{STREAM}","media":{{"payload":""}}}}"#),
            false,
            None,
        ),
        (
            "raw control character in the payload",
            m("\"media\":{\"payload\":\"a\u{1}b\"}"),
            false,
            Some(FrameError::Syntax),
        ),
        (
            "raw tab in a counter",
            m("\"sequenceNumber\":\"1\t\",\"media\":{\"payload\":\"\"}"),
            false,
            Some(FrameError::Syntax),
        ),
        (
            "DEL is not a control character in JSON",
            m("\"media\":{\"track\":\"in\u{7f}\",\"payload\":\"\"}"),
            true,
            None,
        ),
        (
            "non-ASCII track",
            m(r#""media":{"track":"ïñbøünd","payload":"AA=="}"#),
            true,
            None,
        ),
        (
            "counter at the bound",
            m(&format!(
                r#""sequenceNumber":"{at_bound}","media":{{"payload":""}}"#
            )),
            true,
            None,
        ),
        (
            "counter over the bound",
            m(&format!(
                r#""sequenceNumber":"{long}","media":{{"payload":""}}"#
            )),
            false,
            Some(FrameError::Schema),
        ),
        (
            "long payload (no bound of its own)",
            m(&format!(
                r#""media":{{"payload":"{}"}}"#,
                "A".repeat(40_000)
            )),
            true,
            None,
        ),
        (
            "repeated streamSid",
            m(&format!(
                r#""streamSid":"{STREAM}","media":{{"payload":""}}"#
            )),
            false,
            Some(FrameError::Schema),
        ),
        (
            "repeated payload",
            m(r#""media":{"payload":"","payload":"AA=="}"#),
            false,
            Some(FrameError::Schema),
        ),
        (
            "repeated media",
            m(r#""media":{"payload":""},"media":{"payload":""}"#),
            false,
            Some(FrameError::Schema),
        ),
        (
            "repeated event",
            m(r#""event":"media","media":{"payload":""}"#),
            false,
            Some(FrameError::Schema),
        ),
        (
            "unknown top-level field",
            m(r#""extra":"x","media":{"payload":""}"#),
            false,
            None,
        ),
        (
            "unknown media field",
            m(r#""media":{"payload":"","x":1}"#),
            false,
            None,
        ),
        (
            "deeply nested unknown field",
            m(&format!(
                r#""x":{}{},"media":{{"payload":""}}"#,
                "[".repeat(200),
                "]".repeat(200)
            )),
            false,
            Some(FrameError::Syntax),
        ),
        (
            "counter as a number",
            m(r#""sequenceNumber":3,"media":{"payload":""}"#),
            false,
            Some(FrameError::Schema),
        ),
        (
            "null counter",
            m(r#""sequenceNumber":null,"media":{"payload":""}"#),
            false,
            None,
        ),
        (
            "null payload",
            m(r#""media":{"payload":null}"#),
            false,
            Some(FrameError::Schema),
        ),
        (
            "missing payload",
            m(r#""media":{"track":"inbound"}"#),
            false,
            Some(FrameError::Schema),
        ),
        (
            "empty media",
            m(r#""media":{}"#),
            false,
            Some(FrameError::Schema),
        ),
        (
            "media as an array",
            m(r#""media":["inbound","1","5",""]"#),
            false,
            Some(FrameError::Schema),
        ),
        (
            "missing streamSid",
            r#"{"event":"media","media":{"payload":""}}"#.to_owned(),
            false,
            Some(FrameError::Schema),
        ),
        (
            "bad streamSid",
            r#"{"event":"media","streamSid":"MZ123","media":{"payload":""}}"#.to_owned(),
            false,
            Some(FrameError::Schema),
        ),
        (
            "event not first",
            format!(r#"{{"streamSid":"{STREAM}","event":"media","media":{{"payload":""}}}}"#),
            false,
            None,
        ),
        (
            "another event",
            format!(r#"{{"event":"mark","streamSid":"{STREAM}","mark":{{"name":"a"}}}}"#),
            false,
            None,
        ),
        (
            "trailing comma",
            m(r#""media":{"payload":""},"#),
            false,
            Some(FrameError::Syntax),
        ),
        (
            "trailing comma in media",
            m(r#""media":{"payload":"",}"#),
            false,
            Some(FrameError::Syntax),
        ),
        (
            "trailing bytes",
            format!("{}x", m(r#""media":{"payload":""}"#)),
            false,
            Some(FrameError::Syntax),
        ),
        (
            "two messages",
            format!("{0}{0}", m(r#""media":{"payload":""}"#)),
            false,
            Some(FrameError::Syntax),
        ),
        (
            "unterminated",
            m(r#""media":{"payload":"AAAA"#),
            false,
            Some(FrameError::Syntax),
        ),
        (
            "missing colon",
            m(r#""media"{"payload":""}"#),
            false,
            Some(FrameError::Syntax),
        ),
        (
            "a key prefix",
            m(r#""mediaX":{"payload":""},"media":{"payload":""}"#),
            false,
            None,
        ),
    ];
    for (name, text, fast_expected, general_error) in cases {
        let fast = parse_media_fast(&text);
        assert_eq!(fast.is_some(), fast_expected, "{name}: fast path {fast:?}");
        let general = parse_inbound_general(&text, MAX);
        match general_error {
            Some(e) => assert_eq!(general, Err(e), "{name}"),
            None => assert!(general.is_ok(), "{name}: {general:?}"),
        }
        agrees(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// A JSON value in a generated message.
#[derive(Clone, Debug)]
enum Value {
    Str(String),
    Num(i64),
    Null,
    Obj(Vec<(String, Value)>),
}

fn key(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::sample::select(names).prop_map(str::to_owned),
        1 => "[a-zA-Z]{1,12}",
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[0-9]{1,6}",
        2 => "inbound|outbound",
        2 => Just(STREAM.to_owned()),
        3 => "[A-Za-z0-9+/=]{0,400}",
        1 => "\\PC{0,24}",
        1 => "[\\x00-\\x7f]{0,12}",
        1 => Just("9".repeat(MAX_SHORT_FIELD_BYTES + 1)),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => string().prop_map(Value::Str),
        1 => any::<i64>().prop_map(Value::Num),
        1 => Just(Value::Null),
    ]
}

fn body() -> impl Strategy<Value = Value> {
    proptest::collection::vec(
        (key(&["track", "chunk", "timestamp", "payload"]), scalar()),
        0..6,
    )
    .prop_map(Value::Obj)
}

/// Anything of the message's shape: an optional `event` first, then members with known
/// or random keys and values of any type.
fn any_message() -> impl Strategy<Value = Vec<(String, Value)>> {
    let member = prop_oneof![
        (key(&["sequenceNumber", "streamSid", "event"]), scalar()),
        (Just("media".to_owned()), body()),
        (Just("media".to_owned()), scalar()),
    ];
    (
        prop_oneof![
            6 => Just(Some(("event".to_owned(), Value::Str("media".to_owned())))),
            1 => Just(None),
        ],
        proptest::collection::vec(member, 0..6),
    )
        .prop_map(|(first, rest)| first.into_iter().chain(rest).collect())
}

/// A valid frame (fields in any order after `event`, optional ones present or not) with,
/// sometimes, one more member of any kind inserted somewhere.
fn near_valid_message() -> impl Strategy<Value = Vec<(String, Value)>> {
    let s = |v: &str| Value::Str(v.to_owned());
    let body = (
        proptest::option::of("[0-9]{1,5}"),
        proptest::option::of("inbound|outbound"),
        "[A-Za-z0-9+/]{0,300}={0,2}",
    )
        .prop_map(move |(chunk, track, payload)| {
            let mut m = vec![("payload".to_owned(), s(&payload))];
            m.extend(chunk.map(|c| ("chunk".to_owned(), s(&c))));
            m.extend(track.map(|t| ("track".to_owned(), s(&t))));
            m
        })
        .prop_shuffle()
        .prop_map(Value::Obj);
    let fields = (proptest::option::of("[0-9]{1,5}"), body)
        .prop_map(move |(seq, body)| {
            let mut m = vec![
                ("streamSid".to_owned(), s(STREAM)),
                ("media".to_owned(), body),
            ];
            m.extend(seq.map(|q| ("sequenceNumber".to_owned(), s(&q))));
            m
        })
        .prop_shuffle();
    let extra = proptest::option::weighted(
        0.3,
        (
            any::<prop::sample::Index>(),
            key(&["sequenceNumber", "streamSid", "event", "media"]),
            scalar(),
        ),
    );
    (fields, extra).prop_map(move |(fields, extra)| {
        let mut m = vec![("event".to_owned(), s("media"))];
        m.extend(fields);
        if let Some((at, k, v)) = extra {
            m.insert(at.index(m.len() + 1), (k, v));
        }
        m
    })
}

fn message() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop_oneof![any_message(), near_valid_message()]
}

/// How a message is written: whitespace between tokens, and whether strings are escaped
/// as serde_json escapes them (always valid JSON) or written raw between quotes.
#[derive(Clone, Copy, Debug)]
struct Style {
    ws: &'static str,
    escaped: bool,
}

fn style() -> impl Strategy<Value = Style> {
    (
        proptest::sample::select(&["", " ", "\n  ", "\t", "\r\n"][..]),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(ws, escaped)| Style { ws, escaped })
}

fn encode_str(s: &str, style: Style) -> String {
    if style.escaped {
        serde_json::to_string(s).unwrap()
    } else {
        format!("\"{s}\"")
    }
}

fn encode(members: &[(String, Value)], style: Style) -> String {
    let w = style.ws;
    let fields: Vec<String> = members
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Str(s) => encode_str(s, style),
                Value::Num(n) => n.to_string(),
                Value::Null => "null".to_owned(),
                Value::Obj(inner) => encode(inner, style),
            };
            format!("{w}{}{w}:{w}{v}{w}", encode_str(k, style))
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

proptest! {
    #![proptest_config(common::proptest_config())]

    /// Generated media-like messages: the fast path agrees with the general parser.
    #[test]
    fn generated_messages_agree(members in message(), style in style()) {
        let text = encode(&members, style);
        prop_assert!(agrees(&text).is_ok(), "{}", agrees(&text).unwrap_err());
    }

    /// A real frame with one byte changed: the fast path agrees with the general parser.
    #[test]
    fn mutated_frames_agree(index in 0usize..50, pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let sid = StreamSid::parse(STREAM).unwrap();
        let mut bytes = streamguard::kit::simulator::media_message(&sid, index).into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        if let Ok(text) = String::from_utf8(bytes) {
            prop_assert!(agrees(&text).is_ok(), "{}", agrees(&text).unwrap_err());
        }
    }
}

/// The generator reaches both paths: among generated messages, some are recognised by the
/// fast path and some are left to the general parser, both accepted and refused ones.
#[test]
fn the_generator_reaches_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut fast, mut general_ok, mut general_err) = (0, 0, 0);
    let strategy = (message(), style());
    for _ in 0..2000 {
        let (members, style) = strategy.new_tree(&mut runner).unwrap().current();
        let text = encode(&members, style);
        if parse_media_fast(&text).is_some() {
            fast += 1;
        } else if parse_inbound_general(&text, MAX).is_ok() {
            general_ok += 1;
        } else {
            general_err += 1;
        }
    }
    assert!(fast >= 50, "fast path taken {fast} times of 2000");
    assert!(
        general_ok >= 50,
        "general parser accepted {general_ok} of 2000"
    );
    assert!(
        general_err >= 50,
        "general parser refused {general_err} of 2000"
    );
}
