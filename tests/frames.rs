//! Twilio media stream messages (`src/frames.rs`): the `PROTOCOL.md` §2 messages parse into
//! the right variants with the right fields; the strictness table (SIDs, streamSid
//! agreement, customParameters shape and bounds, tracks, sizes, syntax vs schema, unknown
//! events); `CustomParameters` and `Debug` of frames hide parameter values; outbound messages
//! serialise to exactly the JSON Twilio expects.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod common;

use common::{ACCOUNT, CALL, OTHER_STREAM, STREAM};
use proptest::prelude::*;
use streamguard::limits::{
    DEFAULT_MAX_MESSAGE_BYTES, MAX_CUSTOM_PARAMETER_NAME_BYTES, MAX_CUSTOM_PARAMETER_VALUE_BYTES,
    MAX_CUSTOM_PARAMETERS, MAX_SHORT_FIELD_BYTES, MAX_TRACKS,
};
use streamguard::wire::frames::{
    FrameError, Inbound, MarkBody, Outbound, OutboundMedia, parse_inbound,
};

const MAX: usize = DEFAULT_MAX_MESSAGE_BYTES;

fn parse(text: &str) -> Result<Inbound<'_>, FrameError> {
    parse_inbound(text, MAX)
}

/// The messages of `PROTOCOL.md` §2, verbatim but with real SIDs and a real payload.
const CONNECTED: &str = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
const START: &str = r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ0123456789abcdef0123456789abcdef",
 "start":{"accountSid":"AC0123456789abcdef0123456789abcdef","streamSid":"MZ0123456789abcdef0123456789abcdef","callSid":"CA0123456789abcdef0123456789abcdef","tracks":["inbound"],
          "customParameters":{"token":"tok-value-123"},
          "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
const MEDIA: &str = r#"{"event":"media","sequenceNumber":"3","streamSid":"MZ0123456789abcdef0123456789abcdef",
 "media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"f39/fw=="}}"#;
const DTMF: &str = r#"{"event":"dtmf","sequenceNumber":"5","streamSid":"MZ0123456789abcdef0123456789abcdef","dtmf":{"track":"inbound_track","digit":"1"}}"#;
const MARK: &str = r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ0123456789abcdef0123456789abcdef","mark":{"name":"label"}}"#;
const STOP: &str = r#"{"event":"stop","sequenceNumber":"5","streamSid":"MZ0123456789abcdef0123456789abcdef","stop":{"accountSid":"AC0123456789abcdef0123456789abcdef","callSid":"CA0123456789abcdef0123456789abcdef"}}"#;

#[test]
fn protocol_messages_parse_into_their_variants() {
    let Inbound::Connected(c) = parse(CONNECTED).unwrap() else {
        panic!("connected")
    };
    assert_eq!(c.protocol.as_ref().map(|s| s.as_str()), Some("Call"));
    assert_eq!(c.version.as_ref().map(|s| s.as_str()), Some("1.0.0"));

    let Inbound::Start(s) = parse(START).unwrap() else {
        panic!("start")
    };
    assert_eq!(s.stream_sid.as_str(), STREAM);
    assert_eq!(s.sequence_number.as_ref().map(|x| x.as_str()), Some("1"));
    assert_eq!(s.start.account_sid.as_str(), ACCOUNT);
    assert_eq!(s.start.call_sid.as_str(), CALL);
    assert_eq!(s.start.stream_sid.as_str(), STREAM);
    assert_eq!(s.start.tracks.iter().collect::<Vec<_>>(), ["inbound"]);
    assert_eq!(
        s.start.custom_parameters.get("token"),
        Some("tok-value-123")
    );
    assert_eq!(s.start.custom_parameters.len(), 1);
    let mf = s.start.media_format.as_ref().unwrap();
    assert_eq!(
        (mf.encoding.as_str(), mf.sample_rate, mf.channels),
        ("audio/x-mulaw", 8000, 1)
    );

    let Inbound::Media(m) = parse(MEDIA).unwrap() else {
        panic!("media")
    };
    assert_eq!(m.stream_sid.as_str(), STREAM);
    assert_eq!(m.track(), Some("inbound"));
    assert_eq!(m.chunk(), Some("1"));
    assert_eq!(m.timestamp(), Some("5"));
    assert_eq!(m.decode_payload(), Some(vec![0x7f, 0x7f, 0x7f, 0x7f]));

    let Inbound::Dtmf(d) = parse(DTMF).unwrap() else {
        panic!("dtmf")
    };
    assert_eq!(d.dtmf.digit.as_str(), "1");
    assert_eq!(
        d.dtmf.track.as_ref().map(|x| x.as_str()),
        Some("inbound_track")
    );

    let Inbound::Mark(k) = parse(MARK).unwrap() else {
        panic!("mark")
    };
    assert_eq!(k.mark.name.as_str(), "label");

    let Inbound::Stop(p) = parse(STOP).unwrap() else {
        panic!("stop")
    };
    let body = p.stop.as_ref().unwrap();
    assert_eq!(
        (body.account_sid.as_str(), body.call_sid.as_str()),
        (ACCOUNT, CALL)
    );

    let names: Vec<&str> = [CONNECTED, START, MEDIA, DTMF, MARK, STOP]
        .iter()
        .map(|m| parse(m).unwrap().event_name())
        .collect();
    assert_eq!(
        names,
        ["connected", "start", "media", "dtmf", "mark", "stop"]
    );
    assert_eq!(parse(CONNECTED).unwrap().stream_sid(), None);
    for m in [START, MEDIA, DTMF, MARK, STOP] {
        assert_eq!(parse(m).unwrap().stream_sid().unwrap().as_str(), STREAM);
    }
}

#[test]
fn lenient_where_it_does_not_matter() {
    // Unknown fields are ignored; optional fields may be absent.
    let cases: &[(&str, &str)] = &[
        (r#"{"event":"connected"}"#, "connected"),
        (
            r#"{"event":"connected","protocol":"Call","version":"1.0.0","extra":{"a":[1,2]}}"#,
            "connected",
        ),
        (
            r#"{"event":"media","streamSid":"MZ0123456789abcdef0123456789abcdef","media":{"payload":""}}"#,
            "media",
        ),
        (
            r#"{"event":"stop","streamSid":"MZ0123456789abcdef0123456789abcdef"}"#,
            "stop",
        ),
        (
            r#"{"event":"start","streamSid":"MZ0123456789abcdef0123456789abcdef","start":{"accountSid":"AC0123456789abcdef0123456789abcdef","streamSid":"MZ0123456789abcdef0123456789abcdef","callSid":"CA0123456789abcdef0123456789abcdef"}}"#,
            "start",
        ),
        // Unknown events, whatever their content.
        (r#"{"event":"transcription","x":1}"#, "unknown"),
        (r#"{"event":"Start"}"#, "unknown"),
        (r#"{"event":""}"#, "unknown"),
    ];
    for (text, name) in cases {
        assert_eq!(parse(text).map(|m| m.event_name()), Ok(*name), "{text}");
    }
}

/// Builds a `start` message from a JSON object of overrides for `start` fields.
fn start_with(body: serde_json::Value) -> String {
    let mut start = serde_json::json!({
        "accountSid": ACCOUNT,
        "streamSid": STREAM,
        "callSid": CALL,
        "tracks": ["inbound"],
        "customParameters": {"token": "abc"}
    });
    for (k, v) in body.as_object().unwrap() {
        start[k] = v.clone();
    }
    serde_json::json!({"event": "start", "streamSid": STREAM, "start": start}).to_string()
}

#[test]
fn strictness_table() {
    let params = |n: usize| -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for i in 0..n {
            m.insert(format!("p{i}"), serde_json::json!("v"));
        }
        serde_json::Value::Object(m)
    };
    let long_name = "n".repeat(MAX_CUSTOM_PARAMETER_NAME_BYTES + 1);
    let ok_name = "n".repeat(MAX_CUSTOM_PARAMETER_NAME_BYTES);
    let long_value = "v".repeat(MAX_CUSTOM_PARAMETER_VALUE_BYTES + 1);
    let ok_value = "v".repeat(MAX_CUSTOM_PARAMETER_VALUE_BYTES);
    let short_ok = "s".repeat(MAX_SHORT_FIELD_BYTES);
    let short_long = "s".repeat(MAX_SHORT_FIELD_BYTES + 1);
    let start_sids = |a: &str, s: &str, c: &str| {
        start_with(serde_json::json!({"accountSid": a, "streamSid": s, "callSid": c}))
    };

    let cases: Vec<(&str, String, Result<&str, FrameError>)> = vec![
        // SIDs are validated by type.
        ("bad accountSid", start_sids("AC123", STREAM, CALL), Err(FrameError::Schema)),
        ("CallSid as accountSid", start_sids(CALL, STREAM, CALL), Err(FrameError::Schema)),
        ("bad callSid", start_sids(ACCOUNT, STREAM, "CAxyz"), Err(FrameError::Schema)),
        ("accountSid as callSid", start_sids(ACCOUNT, STREAM, ACCOUNT), Err(FrameError::Schema)),
        (
            "lowercase prefix",
            start_sids(ACCOUNT, STREAM, "ca0123456789abcdef0123456789abcdef"),
            Err(FrameError::Schema),
        ),
        (
            "bad media streamSid",
            common::media_json("MZ1", 1, ""),
            Err(FrameError::Schema),
        ),
        (
            "streamSid a number",
            r#"{"event":"media","streamSid":5,"media":{"payload":""}}"#.to_owned(),
            Err(FrameError::Schema),
        ),
        // Top-level streamSid must equal start.streamSid.
        (
            "streamSid mismatch",
            start_with(serde_json::json!({"streamSid": OTHER_STREAM})),
            Err(FrameError::StreamSidMismatch),
        ),
        // customParameters: an object of strings, bounded, no repeats.
        (
            "param value a number",
            start_with(serde_json::json!({"customParameters": {"token": 5}})),
            Err(FrameError::Schema),
        ),
        (
            "param value null",
            start_with(serde_json::json!({"customParameters": {"token": null}})),
            Err(FrameError::Schema),
        ),
        (
            "param value object",
            start_with(serde_json::json!({"customParameters": {"token": {"a": "b"}}})),
            Err(FrameError::Schema),
        ),
        (
            "params an array",
            start_with(serde_json::json!({"customParameters": ["token", "abc"]})),
            Err(FrameError::Schema),
        ),
        (
            "params a string",
            start_with(serde_json::json!({"customParameters": "token=abc"})),
            Err(FrameError::Schema),
        ),
        (
            "params at the limit",
            start_with(serde_json::json!({"customParameters": params(MAX_CUSTOM_PARAMETERS)})),
            Ok("start"),
        ),
        (
            "too many params",
            start_with(serde_json::json!({"customParameters": params(MAX_CUSTOM_PARAMETERS + 1)})),
            Err(FrameError::Schema),
        ),
        (
            "name at the limit",
            start_with(serde_json::json!({"customParameters": {ok_name.clone(): "v"}})),
            Ok("start"),
        ),
        (
            "name too long",
            start_with(serde_json::json!({"customParameters": {long_name.clone(): "v"}})),
            Err(FrameError::Schema),
        ),
        (
            "value at the limit",
            start_with(serde_json::json!({"customParameters": {"token": ok_value.clone()}})),
            Ok("start"),
        ),
        (
            "value too long",
            start_with(serde_json::json!({"customParameters": {"token": long_value.clone()}})),
            Err(FrameError::Schema),
        ),
        // Tracks: an array of at most MAX_TRACKS short strings.
        (
            "tracks at the limit",
            start_with(serde_json::json!({"tracks": vec!["inbound"; MAX_TRACKS]})),
            Ok("start"),
        ),
        (
            "too many tracks",
            start_with(serde_json::json!({"tracks": vec!["inbound"; MAX_TRACKS + 1]})),
            Err(FrameError::Schema),
        ),
        (
            "track not a string",
            start_with(serde_json::json!({"tracks": [1]})),
            Err(FrameError::Schema),
        ),
        (
            "track too long",
            start_with(serde_json::json!({"tracks": [short_long.clone()]})),
            Err(FrameError::Schema),
        ),
        // Short fields are bounded.
        (
            "mark name at the limit",
            serde_json::json!({"event":"mark","streamSid":STREAM,"mark":{"name":short_ok}}).to_string(),
            Ok("mark"),
        ),
        (
            "mark name too long",
            serde_json::json!({"event":"mark","streamSid":STREAM,"mark":{"name":short_long}}).to_string(),
            Err(FrameError::Schema),
        ),
        (
            "sequenceNumber as a number",
            r#"{"event":"mark","sequenceNumber":4,"streamSid":"MZ0123456789abcdef0123456789abcdef","mark":{"name":"a"}}"#.to_owned(),
            Err(FrameError::Schema),
        ),
        // Missing fields.
        ("no event", r#"{"streamSid":"MZ0123456789abcdef0123456789abcdef"}"#.to_owned(), Err(FrameError::Schema)),
        ("event not a string", r#"{"event":5}"#.to_owned(), Err(FrameError::Schema)),
        ("start without start", format!(r#"{{"event":"start","streamSid":"{STREAM}"}}"#), Err(FrameError::Schema)),
        (
            "start without callSid",
            format!(r#"{{"event":"start","streamSid":"{STREAM}","start":{{"accountSid":"{ACCOUNT}","streamSid":"{STREAM}"}}}}"#),
            Err(FrameError::Schema),
        ),
        ("media without media", format!(r#"{{"event":"media","streamSid":"{STREAM}"}}"#), Err(FrameError::Schema)),
        ("media without payload", format!(r#"{{"event":"media","streamSid":"{STREAM}","media":{{}}}}"#), Err(FrameError::Schema)),
        ("media without streamSid", r#"{"event":"media","media":{"payload":""}}"#.to_owned(), Err(FrameError::Schema)),
        ("dtmf without digit", format!(r#"{{"event":"dtmf","streamSid":"{STREAM}","dtmf":{{}}}}"#), Err(FrameError::Schema)),
        ("mark without name", format!(r#"{{"event":"mark","streamSid":"{STREAM}","mark":{{}}}}"#), Err(FrameError::Schema)),
        ("a JSON array", "[1,2]".to_owned(), Err(FrameError::Schema)),
        ("a JSON string", r#""start""#.to_owned(), Err(FrameError::Schema)),
        ("JSON null", "null".to_owned(), Err(FrameError::Schema)),
        // Not JSON.
        ("empty", String::new(), Err(FrameError::Syntax)),
        ("garbage", "hello".to_owned(), Err(FrameError::Syntax)),
        ("truncated", CONNECTED[..CONNECTED.len() - 1].to_owned(), Err(FrameError::Syntax)),
        ("trailing garbage", format!("{CONNECTED} x"), Err(FrameError::Syntax)),
        ("two messages", format!("{CONNECTED}{CONNECTED}"), Err(FrameError::Syntax)),
        ("single quotes", "{'event':'connected'}".to_owned(), Err(FrameError::Syntax)),
        ("byte order mark", format!("\u{feff}{CONNECTED}"), Err(FrameError::Syntax)),
    ];
    for (what, text, expected) in &cases {
        let got = parse(text).map(|m| m.event_name());
        assert_eq!(got, *expected, "{what}: {}", &text[..text.len().min(200)]);
    }
}

/// A JSON object with a repeated key is ambiguous; for customParameters (where the token
/// lives) it is refused, never "last one wins".
#[test]
fn repeated_keys_are_refused() {
    let start = |params: &str| {
        format!(
            r#"{{"event":"start","streamSid":"{STREAM}","start":{{"accountSid":"{ACCOUNT}","streamSid":"{STREAM}","callSid":"{CALL}","customParameters":{params}}}}}"#
        )
    };
    let cases: &[(&str, Result<usize, FrameError>)] = &[
        (r#"{"token":"a","token":"b"}"#, Err(FrameError::Schema)),
        (r#"{"token":"a","token":"a"}"#, Err(FrameError::Schema)),
        (
            r#"{"token":"a","x":"1","token":"b"}"#,
            Err(FrameError::Schema),
        ),
        // Escapes are decoded before names are compared.
        (r#"{"token":"a","\u0074oken":"b"}"#, Err(FrameError::Schema)),
        (r#"{"token":"a","Token":"b"}"#, Ok(2)),
    ];
    for (params, expected) in cases {
        let got = parse(&start(params)).map(|m| match m {
            Inbound::Start(s) => s.start.custom_parameters.len(),
            other => panic!("{}", other.event_name()),
        });
        assert_eq!(got, *expected, "{params}");
    }
    // Repeated top-level fields are refused too.
    let twice_sid = format!(
        r#"{{"event":"media","streamSid":"{STREAM}","streamSid":"{OTHER_STREAM}","media":{{"payload":""}}}}"#
    );
    assert_eq!(parse(&twice_sid), Err(FrameError::Schema));
    let twice_event = format!(
        r#"{{"event":"media","event":"start","streamSid":"{STREAM}","media":{{"payload":""}}}}"#
    );
    assert_eq!(
        parse(&twice_event).map(|m| m.event_name()),
        Err(FrameError::Schema)
    );
}

#[test]
fn size_is_checked_before_parsing() {
    // Exactly at the limit: parsed. One byte over: TooLarge, even if it is valid JSON.
    let pad = |n: usize| {
        let base = r#"{"event":"connected","pad":""}"#;
        format!(
            r#"{{"event":"connected","pad":"{}"}}"#,
            "x".repeat(n - base.len())
        )
    };
    let at = pad(MAX);
    assert_eq!(at.len(), MAX);
    assert_eq!(parse(&at).map(|m| m.event_name()), Ok("connected"));
    assert_eq!(parse(&pad(MAX + 1)), Err(FrameError::TooLarge));
    // Not JSON, but too large: the size wins.
    assert_eq!(parse(&"{".repeat(MAX + 1)), Err(FrameError::TooLarge));
    // The limit is the caller's.
    assert_eq!(
        parse_inbound(CONNECTED, CONNECTED.len() - 1),
        Err(FrameError::TooLarge)
    );
    assert!(parse_inbound(CONNECTED, CONNECTED.len()).is_ok());
    assert_eq!(parse_inbound("", 0), Err(FrameError::Syntax));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [200, 10_000, MAX / 2 - 40] {
        let text = format!(
            r#"{{"event":"connected","x":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        if text.len() <= MAX {
            assert!(parse(&text).is_err(), "depth {depth}");
        }
    }
}

#[test]
fn custom_parameters_debug_shows_names_only() {
    let secret = "s3cr3t-t0ken-value";
    let text = common::start_json(
        STREAM,
        ACCOUNT,
        CALL,
        &[("token", secret), ("tenant", "acme-private")],
    );
    let msg = parse(&text).unwrap();
    let Inbound::Start(s) = &msg else { panic!() };
    let params_debug = format!("{:?}", s.start.custom_parameters);
    assert!(
        params_debug.contains("token") && params_debug.contains("tenant"),
        "{params_debug}"
    );
    common::assert_no_leak(&params_debug, &[secret, "acme-private"]);
    // Debug of the whole message (what a careless log line would print) hides them too.
    common::assert_no_leak(&format!("{msg:?}"), &[secret, "acme-private"]);
    common::assert_no_leak(&format!("{s:#?}"), &[secret, "acme-private"]);
    // `without` drops exactly the named parameter and keeps the others in order.
    let rest = s.start.custom_parameters.without("token");
    assert_eq!(
        rest.iter().collect::<Vec<_>>(),
        [("tenant", "acme-private")]
    );
    assert_eq!(s.start.custom_parameters.len(), 2);
}

/// Parse errors cannot carry the input: `FrameError` holds no data. (This test used to
/// search the `Debug` and `Display` of a fieldless enum for a secret, which could not fail.)
#[test]
fn parse_errors_hold_no_data() {
    common::assert_holds_no_data::<FrameError>();
}

/// Outbound messages and the exact JSON Twilio expects for each (`PROTOCOL.md` §2).
#[test]
fn outbound_serialises_to_the_exact_json() {
    let sid = common::stream(STREAM);
    let cases: Vec<(Outbound<'_>, String)> = vec![
        (
            Outbound::Media {
                stream_sid: sid,
                media: OutboundMedia {
                    payload: "f39/fw==".into(),
                },
            },
            format!(
                r#"{{"event":"media","streamSid":"{STREAM}","media":{{"payload":"f39/fw=="}}}}"#
            ),
        ),
        (
            Outbound::Mark {
                stream_sid: sid,
                mark: serde_json::from_str::<MarkBody>(r#"{"name":"end-of-greeting"}"#).unwrap(),
            },
            format!(
                r#"{{"event":"mark","streamSid":"{STREAM}","mark":{{"name":"end-of-greeting"}}}}"#
            ),
        ),
        (
            Outbound::Clear { stream_sid: sid },
            format!(r#"{{"event":"clear","streamSid":"{STREAM}"}}"#),
        ),
        (
            // Characters JSON must escape are escaped.
            Outbound::Mark {
                stream_sid: sid,
                mark: serde_json::from_str::<MarkBody>(r#"{"name":"a\"b\\c\n"}"#).unwrap(),
            },
            format!(r#"{{"event":"mark","streamSid":"{STREAM}","mark":{{"name":"a\"b\\c\n"}}}}"#),
        ),
    ];
    for (msg, expected) in &cases {
        assert_eq!(&msg.to_json(), expected);
        // And Twilio's side reads it back as the same message.
        assert_eq!(
            &serde_json::from_str::<Outbound<'_>>(expected).unwrap(),
            msg
        );
    }
}

proptest! {
    #![proptest_config(common::proptest_config())]

    /// `parse_inbound` never panics on arbitrary text, and never accepts anything over the
    /// size limit.
    #[test]
    fn parse_never_panics(text in any::<String>(), max in 0usize..64) {
        let got = parse_inbound(&text, max);
        if text.len() > max {
            prop_assert_eq!(got, Err(FrameError::TooLarge));
        }
    }

    /// Any custom parameters (distinct names, string values within bounds, in any order)
    /// survive parsing exactly, in the order they were sent.
    #[test]
    fn custom_parameters_round_trip(
        raw in proptest::collection::vec(("[a-zA-Z_]{1,12}", "\\PC{0,40}"), 0..10usize)
    ) {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in raw {
            if !pairs.iter().any(|(n, _)| *n == k) {
                pairs.push((k, v));
            }
        }
        // Written by hand so the JSON object keeps this order (serde_json's map sorts).
        let object = pairs
            .iter()
            .map(|(k, v)| format!("{}:{}", serde_json::json!(k), serde_json::json!(v)))
            .collect::<Vec<_>>()
            .join(",");
        let text = format!(
            r#"{{"event":"start","streamSid":"{STREAM}","start":{{"accountSid":"{ACCOUNT}","streamSid":"{STREAM}","callSid":"{CALL}","customParameters":{{{object}}}}}}}"#
        );
        let Inbound::Start(s) = parse(&text).unwrap() else { panic!() };
        let got: Vec<(&str, &str)> = s.start.custom_parameters.iter().collect();
        let want: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        prop_assert_eq!(got, want);
    }

    /// Mutating one byte of a valid message never panics the parser, and a `start` that
    /// still parses still has equal top-level and inner streamSids.
    #[test]
    fn mutated_messages_never_panic(which in 0usize..6, pos in any::<prop::sample::Index>(), byte in 0x20u8..0x7f) {
        let base = [CONNECTED, START, MEDIA, DTMF, MARK, STOP][which];
        let mut bytes = base.as_bytes().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let text = String::from_utf8(bytes).unwrap();
        if let Ok(Inbound::Start(s)) = parse(&text) {
            prop_assert_eq!(s.stream_sid, s.start.stream_sid);
        }
    }
}

/// A `media` message parses to its fields whatever the key order (the first pass reads it in
/// one go only when `event` comes first; otherwise the second pass does), on both paths, and
/// its accessors give back what was sent.
#[test]
fn media_parses_whatever_the_key_order() {
    use streamguard::wire::frames::parse_inbound_general;
    let orders = [
        MEDIA.to_owned(),
        r#"{"sequenceNumber":"3","event":"media","streamSid":"MZ0123456789abcdef0123456789abcdef","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"f39/fw=="}}"#.to_owned(),
        r#"{"media":{"payload":"f39/fw==","timestamp":"5","chunk":"1","track":"inbound"},"streamSid":"MZ0123456789abcdef0123456789abcdef","sequenceNumber":"3","event":"media"}"#.to_owned(),
    ];
    for text in &orders {
        for parsed in [parse(text), parse_inbound_general(text, MAX)] {
            let Ok(Inbound::Media(m)) = parsed else {
                panic!("{text}: {parsed:?}")
            };
            assert_eq!(m.stream_sid.as_str(), STREAM, "{text}");
            assert_eq!(m.sequence_number(), Some("3"), "{text}");
            assert_eq!(m.payload(), "f39/fw==", "{text}");
            assert_eq!((m.chunk(), m.timestamp()), (Some("1"), Some("5")), "{text}");
        }
    }
}

/// Strings with JSON escapes (which the parser cannot borrow) arrive unescaped, in every
/// bounded field: a customParameter's name and value, and the media fields.
#[test]
fn escaped_strings_arrive_unescaped() {
    let start = START.replace(
        r#""customParameters":{"token":"tok-value-123"}"#,
        r#""customParameters":{"token":"tok-value-123","n\u0061me":"a\"b\\c\u00e9"}"#,
    );
    let Ok(Inbound::Start(s)) = parse(&start) else {
        panic!("{start}")
    };
    let params = &s.start.custom_parameters;
    assert_eq!(params.get("name"), Some("a\"b\\c\u{e9}"));
    assert_eq!(params.len(), 2);
    assert!(!params.is_empty());
    let without = params.without("name").without("token");
    assert!(without.is_empty());
    assert_eq!(without.len(), 0);

    let media = MEDIA
        .replace(r#""sequenceNumber":"3""#, r#""sequenceNumber":"\u0033""#)
        .replace(r#""chunk":"1""#, r#""chunk":"\u0031""#);
    let Ok(Inbound::Media(m)) = parse(&media) else {
        panic!("{media}")
    };
    assert_eq!((m.sequence_number(), m.chunk()), (Some("3"), Some("1")));
}
