//! Token extraction (`src/extract.rs`): the `token` query parameter of an upgrade request
//! target (decoding, ambiguity, bounds, fragments), `customParameters.token`, and
//! `resolve_token`'s five-row table, including that a conflict is never resolved in favour of
//! either side.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod common;

use common::{ACCOUNT, CALL, STREAM};
use proptest::prelude::*;
use streamguard::extract::{
    ExtractError, TOKEN_PARAM, resolve_token, token_from_custom_parameters,
    token_from_request_target,
};
use streamguard::limits::{DEFAULT_MAX_MESSAGE_BYTES, MAX_REQUEST_TARGET_BYTES, MAX_TOKEN_CHARS};
use streamguard::wire::form;
use streamguard::wire::frames::{Inbound, parse_inbound};

/// What a request target yields.
#[derive(Debug)]
enum Want {
    None,
    Token(&'static str),
    Err(ExtractError),
}

const TARGETS: &[(&str, Want)] = &[
    // Absent.
    ("/voice/stream", Want::None),
    ("/voice/stream?", Want::None),
    ("/voice/stream?a=1&b=2", Want::None),
    ("/voice/stream?tokens=abc", Want::None),
    ("/voice/stream?TOKEN=abc", Want::None),
    ("/voice/stream?xtoken=abc", Want::None),
    ("/voice/stream?tok+en=abc", Want::None),
    // Present.
    ("/voice/stream?token=abc", Want::Token("abc")),
    ("/voice/stream?a=1&token=abc&b=2", Want::Token("abc")),
    ("/voice/stream?&&token=abc&&", Want::Token("abc")),
    ("?token=abc", Want::Token("abc")),
    ("/voice/stream?token=a=b", Want::Token("a=b")),
    // Percent-encoded value; `+` is a space, as in form encoding.
    ("/voice/stream?token=a%2Bb%2Fc%3D", Want::Token("a+b/c=")),
    ("/voice/stream?token=a%2bb", Want::Token("a+b")),
    ("/voice/stream?token=a+b", Want::Token("a b")),
    ("/voice/stream?token=%C3%A9", Want::Token("é")),
    // The name is compared after decoding.
    ("/voice/stream?%74oken=abc", Want::Token("abc")),
    ("/voice/stream?%74%6F%6B%65%6E=abc", Want::Token("abc")),
    // Repeated, in any spelling and even with the same value: ambiguous.
    (
        "/voice/stream?token=a&token=b",
        Want::Err(ExtractError::Ambiguous),
    ),
    (
        "/voice/stream?token=a&token=a",
        Want::Err(ExtractError::Ambiguous),
    ),
    (
        "/voice/stream?token=a&%74oken=a",
        Want::Err(ExtractError::Ambiguous),
    ),
    (
        "/voice/stream?token=a&token",
        Want::Err(ExtractError::Ambiguous),
    ),
    (
        "/voice/stream?token=&token=a",
        Want::Err(ExtractError::Ambiguous),
    ),
    // Malformed escapes or non-UTF-8, in the value or in any name.
    ("/voice/stream?token=%zz", Want::Err(ExtractError::Encoding)),
    (
        "/voice/stream?token=abc%",
        Want::Err(ExtractError::Encoding),
    ),
    (
        "/voice/stream?token=abc%4",
        Want::Err(ExtractError::Encoding),
    ),
    ("/voice/stream?token=%FF", Want::Err(ExtractError::Encoding)),
    ("/voice/stream?token=%C3", Want::Err(ExtractError::Encoding)),
    (
        "/voice/stream?%zz=1&token=abc",
        Want::Err(ExtractError::Encoding),
    ),
    (
        "/voice/stream?%74oke%=abc",
        Want::Err(ExtractError::Encoding),
    ),
    // Empty.
    ("/voice/stream?token=", Want::Err(ExtractError::Empty)),
    ("/voice/stream?token", Want::Err(ExtractError::Empty)),
    ("/voice/stream?token=&a=1", Want::Err(ExtractError::Empty)),
    // A fragment is not part of the query.
    ("/voice/stream#token=abc", Want::None),
    ("/voice/stream#?token=abc", Want::None),
    ("/voice/stream?token=abc#frag", Want::Token("abc")),
    ("/voice/stream?token=abc#token=def", Want::Token("abc")),
    ("/voice/stream?a=1#&token=abc", Want::None),
];

fn check(target: &str, want: &Want) {
    let got = token_from_request_target(target);
    match want {
        Want::None => assert_eq!(got, Ok(None), "{target}"),
        Want::Token(t) => assert_eq!(got, Ok(Some((*t).to_owned())), "{target}"),
        Want::Err(e) => assert_eq!(got, Err(*e), "{target}"),
    }
}

#[test]
fn request_target_table() {
    for (target, want) in TARGETS {
        check(target, want);
    }
}

#[test]
fn request_target_length_bounds() {
    let at_limit = "a".repeat(MAX_TOKEN_CHARS);
    let over = "a".repeat(MAX_TOKEN_CHARS + 1);
    // Percent-encoding makes the raw value longer, but the decoded length is what counts.
    let encoded_at_limit = "%61".repeat(MAX_TOKEN_CHARS);
    let encoded_over = "%61".repeat(MAX_TOKEN_CHARS + 1);
    let cases: Vec<(String, Result<Option<String>, ExtractError>)> = vec![
        (format!("/s?token={at_limit}"), Ok(Some(at_limit.clone()))),
        (
            format!("/s?token={encoded_at_limit}"),
            Ok(Some(at_limit.clone())),
        ),
        (format!("/s?token={over}"), Err(ExtractError::TooLong)),
        (
            format!("/s?token={encoded_over}"),
            Err(ExtractError::TooLong),
        ),
        // 256 two-byte characters: 512 bytes, too long.
        (
            format!("/s?token={}", "%C3%A9".repeat(MAX_TOKEN_CHARS)),
            Err(ExtractError::TooLong),
        ),
    ];
    for (target, expected) in &cases {
        assert_eq!(
            token_from_request_target(target),
            *expected,
            "{}",
            target.len()
        );
    }
    // The whole target is bounded before anything else is looked at.
    let pad = |n: usize| format!("/s?token=abc&pad={}", "x".repeat(n));
    let base = pad(0).len();
    let at = pad(MAX_REQUEST_TARGET_BYTES - base);
    assert_eq!(at.len(), MAX_REQUEST_TARGET_BYTES);
    assert_eq!(token_from_request_target(&at), Ok(Some("abc".to_owned())));
    let over = pad(MAX_REQUEST_TARGET_BYTES - base + 1);
    assert_eq!(
        token_from_request_target(&over),
        Err(ExtractError::TargetTooLong)
    );
    // Even if it has no query at all, or a malformed one.
    assert_eq!(
        token_from_request_target(&"/".repeat(MAX_REQUEST_TARGET_BYTES + 1)),
        Err(ExtractError::TargetTooLong)
    );
}

/// Extraction errors cannot carry the token: `ExtractError` holds no data. (This test used
/// to search the `Debug` and `Display` of a fieldless enum for the token, which could not
/// fail.)
#[test]
fn extraction_errors_hold_no_data() {
    common::assert_holds_no_data::<ExtractError>();
}

fn start_with_params(params: &[(&str, &str)]) -> streamguard::wire::frames::StartFrame {
    let text = common::start_json(STREAM, ACCOUNT, CALL, params);
    match parse_inbound(&text, DEFAULT_MAX_MESSAGE_BYTES).unwrap() {
        Inbound::Start(s) => *s,
        other => panic!("{}", other.event_name()),
    }
}

#[test]
fn custom_parameters_table() {
    let long = "a".repeat(MAX_TOKEN_CHARS + 1);
    let at = "a".repeat(MAX_TOKEN_CHARS);
    type Params<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Params<'_>, Result<Option<String>, ExtractError>)> = vec![
        (vec![], Ok(None)),
        (vec![("tenant", "acme")], Ok(None)),
        (vec![("Token", "abc")], Ok(None)),
        (vec![(TOKEN_PARAM, "abc")], Ok(Some("abc".to_owned()))),
        // Values in customParameters are not percent-decoded: they are JSON strings.
        (
            vec![(TOKEN_PARAM, "a%2Bb+c")],
            Ok(Some("a%2Bb+c".to_owned())),
        ),
        (
            vec![("tenant", "acme"), (TOKEN_PARAM, "abc")],
            Ok(Some("abc".to_owned())),
        ),
        (vec![(TOKEN_PARAM, "")], Err(ExtractError::Empty)),
        (vec![(TOKEN_PARAM, at.as_str())], Ok(Some(at.clone()))),
        (
            vec![(TOKEN_PARAM, long.as_str())],
            Err(ExtractError::TooLong),
        ),
    ];
    for (params, expected) in &cases {
        assert_eq!(
            token_from_custom_parameters(&start_with_params(params)),
            *expected,
            "{params:?}"
        );
    }
}

#[test]
fn resolve_table() {
    let s = |x: &str| Some(x.to_owned());
    type Row = (Option<String>, Option<String>, Result<String, ExtractError>);
    let cases: &[Row] = &[
        (None, None, Err(ExtractError::Missing)),
        (s("a"), None, Ok("a".to_owned())),
        (None, s("a"), Ok("a".to_owned())),
        (s("a"), s("a"), Ok("a".to_owned())),
        (s("a"), s("b"), Err(ExtractError::Conflict)),
        // Near misses are conflicts too.
        (s("abc"), s("abcd"), Err(ExtractError::Conflict)),
        (s("abc"), s("ABC"), Err(ExtractError::Conflict)),
        (s("abc"), s("abc "), Err(ExtractError::Conflict)),
    ];
    for (url, custom, expected) in cases {
        assert_eq!(
            resolve_token(url.clone(), custom.clone()),
            *expected,
            "{url:?} {custom:?}"
        );
    }
}

/// Query-like request targets made of the pieces that matter to the parser (the name
/// `token`, plain and percent-encoded, separators, escapes good and bad, short values), so
/// that most of them hold a `token` parameter, some once, some twice, some empty.
fn query_like_target() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => Just("token=".to_owned()),
        1 => Just("%74oken=".to_owned()),
        1 => Just("token".to_owned()),
        1 => Just("tok".to_owned()),
        3 => Just("&".to_owned()),
        1 => Just("=".to_owned()),
        1 => Just("?".to_owned()),
        1 => Just("#".to_owned()),
        1 => Just("+".to_owned()),
        1 => prop_oneof![Just("%"), Just("%2"), Just("%zz"), Just("%C3%A9"), Just("%FF"), Just("%2B")]
            .prop_map(str::to_owned),
        4 => "[a-zA-Z0-9_-]{1,12}",
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|p| format!("/voice/stream?{}", p.concat()))
}

/// On query-like targets, extraction never panics, and when it returns a token the token is
/// non-empty and at most MAX_TOKEN_CHARS bytes. The generator makes targets that do carry a
/// token; the test fails if none of them returned one.
#[test]
fn extracted_tokens_are_non_empty_and_bounded() {
    let returned =
        common::run_property(
            file!(),
            query_like_target(),
            |target| match token_from_request_target(&target) {
                Ok(Some(t)) => {
                    prop_assert!(
                        !t.is_empty() && t.len() <= MAX_TOKEN_CHARS,
                        "{:?} from {}",
                        t,
                        target
                    );
                    Ok(true)
                }
                _ => Ok(false),
            },
        );
    assert!(returned > 0, "no generated target returned a token");
}

#[test]
fn form_decode_table() {
    let cases: &[(&str, Option<&str>)] = &[
        ("", Some("")),
        ("abc", Some("abc")),
        ("a+b", Some("a b")),
        ("a%20b", Some("a b")),
        ("%2B", Some("+")),
        ("%2b", Some("+")),
        ("%", None),
        ("%2", None),
        ("%g0", None),
        ("%0g", None),
        ("%FF", None),
        ("%E6%97%A5", Some("日")),
        ("日", Some("日")),
    ];
    for (input, expected) in cases {
        assert_eq!(form::decode(input).as_deref(), *expected, "{input:?}");
    }
}

proptest! {
    #![proptest_config(common::proptest_config())]

    /// Extraction never panics on an arbitrary request target. (Random text almost never
    /// holds `token=`: what a returned token is, is the next test's.)
    #[test]
    fn extraction_never_panics(target in any::<String>()) {
        let _ = token_from_request_target(&target);
    }

    /// Any token (1 to MAX_TOKEN_CHARS bytes of text), percent-encoded into a query among
    /// other parameters, is extracted exactly.
    #[test]
    fn encoded_tokens_round_trip(
        token in "\\PC{1,64}",
        before in "[a-z]{1,5}=[a-z0-9]{0,5}",
        after in "[a-z]{1,5}=[a-z0-9]{0,5}",
    ) {
        prop_assume!(token.len() <= MAX_TOKEN_CHARS);
        prop_assume!(!before.starts_with("token=") && !after.starts_with("token="));
        let target = format!("/voice/stream?{before}&token={}&{after}#frag", common::percent_encode(&token));
        prop_assert_eq!(token_from_request_target(&target), Ok(Some(token)));
    }

    /// Two different tokens are never resolved in favour of either side.
    #[test]
    fn conflicts_are_never_resolved(a in "\\PC{1,100}", b in "\\PC{1,100}") {
        prop_assume!(a != b);
        prop_assert_eq!(resolve_token(Some(a.clone()), Some(b.clone())), Err(ExtractError::Conflict));
        prop_assert_eq!(resolve_token(Some(b), Some(a)), Err(ExtractError::Conflict));
    }

    /// Equal tokens from both places resolve to that token; one side alone resolves to it.
    #[test]
    fn agreement_resolves(a in "\\PC{1,100}") {
        prop_assert_eq!(resolve_token(Some(a.clone()), Some(a.clone())), Ok(a.clone()));
        prop_assert_eq!(resolve_token(Some(a.clone()), None), Ok(a.clone()));
        prop_assert_eq!(resolve_token(None, Some(a.clone())), Ok(a));
    }
}
