//! Proof that the conformance kit has teeth: the whole kit is run against targets that each
//! go without exactly one protection (`tests/weak_target`, built from the crate's pure
//! decisions), and must report FAIL on exactly the cases that weakness should trip, with the
//! observation that explains it, and PASS on the rest (or SKIP, for a stated reason). The same
//! test server with nothing removed, and the real reference server, must pass every case.
//!
//! Each expected set below was derived from what the weakness breaks, case by case, before the
//! kit was run; `why` says it, and a comment says why the nearby cases are not tripped. The
//! observed fragments are the kit's own words for that outcome, so a case that fails for
//! another reason (a timeout, a crash of the test server) does not count as the weakness
//! being caught. Two expectations that the kit first did not meet were holes in the kit, fixed
//! in `src/kit/cases.rs`: `NoMessageLimit` passed `stream.oversized_message` (its oversized
//! message was refused as media before `start`), and against `TokenFromUrlOnly` the kit did
//! not see the token in the stream URL (`passes_as` pins how those cases pass now).
//!
//! Every target listens on its own port; all the runs go concurrently (they mostly wait:
//! for refusals, the start deadline, one token TTL), so the file takes about as long as the
//! slowest run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod weak_target;

use std::time::Duration;

use streamguard::kit::cases::{Target, twiml_problems};
use streamguard::kit::conformance;
use streamguard::kit::report::{Report, Verdict};
use streamguard::secret::{AuthToken, KeySet, TokenKey};
use streamguard::server::{Config, Echo, PublicUrl, Server};
use streamguard::sid::AccountSid;
use tokio::net::TcpListener;
use weak_target::{WeakTarget, Weakness};

/// The number of cases in the catalogue. A new case must be placed in (or out of) every
/// expected set below, so a change here is meant to break this file.
const CATALOGUE_CASES: usize = 34;

/// Token TTL of every target, told to the kit.
const TOKEN_TTL: Duration = Duration::from_secs(2);

/// Start deadline of every target, told to the kit (which then waits 1 s + 2 s for a refusal).
const START_TIMEOUT: Duration = Duration::from_secs(1);
/// The start deadline of [`Weakness::PendingCapRefuses`] (the kit is told it too): its flood
/// locks the call out only while the flood's first connections are still pending, so the
/// deadline must outlast the flood and the call's webhook however loaded the machine is
/// (all weak targets run their kits at once).
const FLOOD_START_TIMEOUT: Duration = Duration::from_secs(4);

/// A case the weakness must trip.
struct Trip {
    id: &'static str,
    /// Part of the kit's observation when it trips for this reason.
    observed: &'static str,
    /// Why this weakness trips it.
    why: &'static str,
}

/// A case the kit must skip.
struct Skip {
    id: &'static str,
    /// Part of the kit's stated reason.
    reason: &'static str,
    /// Why it cannot be judged against this target.
    why: &'static str,
}

struct Expected {
    weakness: Weakness,
    fail: &'static [Trip],
    skip: &'static [Skip],
    /// Cases that pass, where how they pass is the point (`why` says why it matters).
    passes_as: &'static [Trip],
    /// Cases the weakness may also trip, or not, depending on which other case's call is
    /// streaming at that moment (the kit runs its TTL-waiting cases alongside the others).
    /// Only a weakness that leaks between connections needs this.
    may_fail: &'static [&'static str],
}

const fn trip(id: &'static str, observed: &'static str, why: &'static str) -> Trip {
    Trip { id, observed, why }
}

/// What the kit sends back when a request that must be refused got TwiML.
const GOT_TWIML: &str = "HTTP 200, TwiML with a token";
/// A stream that should have been closed, still open after the refusal wait (1 s + 2 s).
const STILL_OPEN: &str = "still open after 3 s";
const SECOND_STREAM: &str = "a second stream for the call was accepted";

const EXPECTED: &[Expected] = &[
    Expected {
        weakness: Weakness::None,
        may_fail: &[],
        fail: &[],
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::NoTokenCheck,
        may_fail: &[],
        fail: &[
            trip(
                "webhook.replay_after_stream",
                SECOND_STREAM,
                "nothing is redeemed, so the call's token stays live; the replay gets it \
                 again and its stream is accepted (it would be with any token)",
            ),
            trip(
                "webhook.replay_after_ttl",
                SECOND_STREAM,
                "the unredeemed record is forgotten at expiry, the replay mints afresh, and \
                 any start is accepted anyway",
            ),
            trip("stream.no_token", STILL_OPEN, "no token is asked for"),
            trip(
                "stream.garbage_token",
                STILL_OPEN,
                "the token is not verified",
            ),
            trip(
                "stream.other_call_token",
                STILL_OPEN,
                "the token is not verified against start.callSid",
            ),
            trip(
                "stream.other_account",
                STILL_OPEN,
                "neither start.accountSid nor the token is checked",
            ),
            trip(
                "stream.replayed_token",
                STILL_OPEN,
                "no redemption, so a spent token opens a second stream",
            ),
            trip(
                "stream.token_race",
                "both accepted",
                "no redemption, so both racers authenticate",
            ),
            trip(
                "stream.expired_token",
                STILL_OPEN,
                "the expiry is not checked",
            ),
            trip(
                "stream.token_in_url_only",
                "accepted from the URL, twice",
                "the URL's token is accepted, as is any, every time",
            ),
            trip(
                "stream.token_conflict",
                STILL_OPEN,
                "no extraction, so conflicting tokens are not noticed",
            ),
            // Not tripped, by design of the kit: the protocol cases (events before start,
            // duplicate start, binary, oversize, JSON, deadline) are the session's, which is
            // intact; interception passes because this target echoes on each connection's
            // own writer, so an accepted spy is sent nothing (stream.garbage_token is what
            // catches its acceptance); injection passes because the injector's media before
            // start closes its connection.
        ],
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::TokenFromUrlOnly,
        may_fail: &[],
        fail: &[
            trip(
                "call.legitimate",
                "close 1008 after start",
                "Twilio drops the query, so the real call arrives with no token",
            ),
            trip(
                "twiml.shape",
                "a query in the stream URL (Twilio drops it); no <Parameter name=\"token\">",
                "the token is in the url's query and in no <Parameter>",
            ),
            trip(
                "webhook.replay_after_stream",
                "the first stream was not accepted",
                "no call as Twilio places it streams",
            ),
            trip(
                "webhook.replay_after_ttl",
                "the first stream was not accepted",
                "no call as Twilio places it streams",
            ),
            trip(
                "stream.replayed_token",
                "the first stream was not accepted",
                "no call as Twilio places it streams",
            ),
            trip(
                "stream.token_race",
                "neither accepted",
                "neither racer carries the token where this target looks",
            ),
            trip(
                "stream.duplicate_start",
                "the first start was not accepted",
                "no call as Twilio places it streams",
            ),
            trip(
                "stream.preauth_flood",
                "the call was refused during the flood",
                "no call as Twilio places it streams, flood or not",
            ),
            trip(
                "interception.unauthenticated_hears_nothing",
                "the legitimate call was not accepted",
                "no call as Twilio places it streams",
            ),
            // Not tripped: webhook.replay_within_ttl passes (the store gives a retried webhook
            // the same token, which the kit reads from the url's query); the refusal cases
            // pass (nothing authenticates without the right token in the URL), and so does
            // stream.token_in_url_only (the token opens one stream from the URL, then is
            // spent); the upgrade and protocol cases are untouched.
        ],
        skip: &[Skip {
            id: "injection.unauthenticated_frames_go_nowhere",
            reason: "the target does not echo",
            why: "call.legitimate was refused, so the kit never heard an echo",
        }],
        passes_as: &[
            trip(
                "webhook.replay_within_ttl",
                "the same token again",
                "the kit compares the tokens in the two answers' URLs, not two absences",
            ),
            trip(
                "stream.token_in_url_only",
                "accepted once from the URL, refused again",
                "judged, not skipped: the kit takes the token from the TwiML's URL",
            ),
        ],
    },
    Expected {
        weakness: Weakness::SharedExpectedAccount,
        may_fail: &[],
        fail: &[trip(
            "webhook.other_account",
            GOT_TWIML,
            "the webhook's own AccountSid becomes the expected one, so it always matches",
        )],
        // Not tripped: stream.other_account passes, because the token binds the account: a
        // start for another account fails the token's MAC whatever the expected account is.
        // The shared value is reset by each legitimate webhook before its stream starts; the
        // kit never interleaves a foreign webhook between another call's webhook and start.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::MediaBeforeStart,
        may_fail: &[],
        fail: &[
            trip(
                "stream.media_before_start",
                STILL_OPEN,
                "the media is swallowed, the valid start that follows authenticates",
            ),
            trip(
                "stream.stop_before_start",
                STILL_OPEN,
                "the stop is swallowed, the valid start that follows authenticates",
            ),
            trip(
                "stream.mark_before_start",
                STILL_OPEN,
                "the mark is swallowed, the valid start that follows authenticates",
            ),
            trip(
                "injection.unauthenticated_frames_go_nowhere",
                "injected frames came back on the call",
                "the injector's media before start is handed to the live stream its \
                 streamSid names, which echoes it to the caller",
            ),
        ],
        // Not tripped: binary, oversized and malformed messages before start still close
        // (they are not events); interception passes (the spy's start with a bad token is
        // refused by the intact session).
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::WhitespaceInStream,
        may_fail: &[],
        fail: &[trip(
            "twiml.shape",
            "text nodes (whitespace) inside the TwiML",
            "the indented template puts newlines and spaces inside <Stream>",
        )],
        // Not tripped: the kit reads the <Parameter> through the whitespace, as a lenient
        // parser would, so every call still streams.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::UnsignedWebhook,
        may_fail: &[],
        fail: &[
            trip(
                "webhook.unsigned",
                GOT_TWIML,
                "the signature is not checked",
            ),
            trip(
                "webhook.bad_signature",
                GOT_TWIML,
                "the signature is not checked",
            ),
            trip(
                "webhook.tampered_parameter",
                GOT_TWIML,
                "the signature is not checked, so an altered From goes through",
            ),
        ],
        // Not tripped: webhook.other_account passes (the AccountSid is still compared with the
        // configuration).
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::ReusableToken,
        may_fail: &[],
        fail: &[
            trip(
                "webhook.replay_after_stream",
                SECOND_STREAM,
                "the token is never spent, so the replay gets it again and it opens again",
            ),
            trip(
                "webhook.replay_after_ttl",
                SECOND_STREAM,
                "no redemption ever records that the call streamed, so after expiry the \
                 replay mints afresh",
            ),
            trip(
                "stream.replayed_token",
                STILL_OPEN,
                "the spent token opens a second stream",
            ),
            trip(
                "stream.token_race",
                "both accepted",
                "both racers verify and neither redeems",
            ),
            trip(
                "stream.token_in_url_only",
                "accepted from the URL, twice",
                "the URL token, like any, is not single use",
            ),
        ],
        // Not tripped: the token is still verified, so garbage, foreign-call, foreign-account
        // and expired tokens are refused.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::SecondStreamPerCall,
        may_fail: &[],
        fail: &[
            trip(
                "webhook.replay_after_stream",
                SECOND_STREAM,
                "a call that has streamed mints a new token, which streams",
            ),
            trip(
                "webhook.replay_after_ttl",
                SECOND_STREAM,
                "the call is remembered, but as allowed to stream again",
            ),
        ],
        // Not tripped: each token is still single use (replayed token, race, URL token
        // twice all pass), and a replay within the TTL gets the same token.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::ForgetsAfterTtl,
        may_fail: &[],
        fail: &[trip(
            "webhook.replay_after_ttl",
            SECOND_STREAM,
            "the streamed call is forgotten with its token, so the late replay mints afresh",
        )],
        // Not tripped: webhook.replay_after_stream replays within the TTL (about 0.5 s after
        // the webhook, the TTL is 2 s), while the call is still remembered.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::UnsignedUpgrade,
        may_fail: &[],
        fail: &[
            trip(
                "upgrade.unsigned",
                "101: upgraded",
                "the upgrade's signature is not checked",
            ),
            trip(
                "upgrade.bad_signature",
                "101: upgraded",
                "the upgrade's signature is not checked",
            ),
        ],
        // Not tripped: path, method and handshake are still checked, and every stream still
        // needs its token.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::NoStartDeadline,
        may_fail: &[],
        fail: &[trip(
            "stream.start_deadline",
            STILL_OPEN,
            "a connection that never starts is never closed",
        )],
        // Not tripped: stream.preauth_flood passes, since this target has no pending-
        // connection limit for the flood to exhaust.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::NoMessageLimit,
        may_fail: &[],
        fail: &[trip(
            "stream.oversized_message",
            STILL_OPEN,
            "the padded 600 KiB start is read and parsed whole, and its token authenticates",
        )],
        // Not tripped: every other message the kit sends is small.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::LaxFrames,
        may_fail: &[],
        fail: &[
            trip(
                "stream.binary_frame",
                STILL_OPEN,
                "the binary frame is dropped, the valid start that follows authenticates",
            ),
            trip(
                "stream.malformed_json",
                STILL_OPEN,
                "the broken JSON is dropped, the valid start that follows authenticates",
            ),
        ],
        // Not tripped: an oversized message is refused by the WebSocket layer, before any
        // JSON is read.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::MintsEveryWebhook,
        may_fail: &[],
        fail: &[trip(
            "webhook.replay_within_ttl",
            "a second, different token",
            "the retried webhook mints afresh instead of answering with the live token",
        )],
        // Not tripped: no other case posts the webhook of an unstreamed call twice; a call
        // that has streamed is still remembered and refused (replay_after_stream and
        // replay_after_ttl pass), and each token is still single use.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::AnyPath,
        may_fail: &[],
        fail: &[trip(
            "upgrade.wrong_path",
            "101: upgraded",
            "the upgrade on another path, signed for that path, is accepted",
        )],
        // Not tripped: method, handshake and signature are still checked, and a stream on any
        // path still needs its token.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::AnyMethod,
        may_fail: &[],
        fail: &[trip(
            "upgrade.wrong_method",
            "HTTP 101",
            "the POST upgrade is answered as if it were a GET",
        )],
        // Not tripped: path, handshake and signature are still checked.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::NoHandshakeKey,
        may_fail: &[],
        fail: &[trip(
            "upgrade.malformed_handshake",
            "HTTP 101",
            "the upgrade without Sec-WebSocket-Key is answered 101",
        )],
        // Not tripped: path, method and signature are still checked; every other upgrade the
        // kit sends has a valid key.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::DuplicateStartIgnored,
        may_fail: &[],
        fail: &[trip(
            "stream.duplicate_start",
            "a second start on an open stream was accepted",
            "the second start is dropped and the stream goes on",
        )],
        // Not tripped: a start before authentication goes through the intact session, so every
        // token and protocol case is judged as for the control.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::PendingCapRefuses,
        may_fail: &[],
        fail: &[trip(
            "stream.preauth_flood",
            "the call during the flood: upgrade refused: HTTP 503",
            "the flood takes every pending slot, so the call's upgrade is refused",
        )],
        // Not tripped: no other case holds more than a few connections before start at once,
        // so the cap is never reached outside the flood.
        skip: &[],
        passes_as: &[],
    },
    Expected {
        weakness: Weakness::BroadcastsToEveryConnection,
        may_fail: &[
            "call.legitimate",
            "stream.token_race",
            "stream.start_deadline",
        ],
        fail: &[trip(
            "interception.unauthenticated_hears_nothing",
            "received",
            "the live call's echo goes to every open connection, the listener that never sent \
             start included",
        )],
        // The interception case must catch it: its listener is open, never authenticated,
        // while the live call sends audio. Other cases see the leak only when another case's
        // call streams at the same moment (may_fail): a call hearing a second call's echo, the
        // loser of a token race hearing the winner's, a slow client hearing someone's audio.
        skip: &[],
        passes_as: &[],
    },
];

/// Every way `report` differs from `expected`, one line each.
fn differences(report: &Report, expected: &Expected) -> Vec<String> {
    let mut out = Vec::new();
    if report.cases.len() != CATALOGUE_CASES {
        out.push(format!(
            "{} cases reported, {CATALOGUE_CASES} expected",
            report.cases.len()
        ));
    }
    let named: Vec<&str> = expected
        .fail
        .iter()
        .chain(expected.passes_as)
        .map(|t| t.id)
        .chain(expected.skip.iter().map(|s| s.id))
        .collect();
    for (i, id) in named.iter().enumerate() {
        if report.verdict(id).is_none() {
            out.push(format!("{id}: expected, but not in the report"));
        }
        if named[..i].contains(id) {
            out.push(format!("{id}: named twice in the expectation"));
        }
    }
    for case in &report.cases {
        let trip = expected.fail.iter().find(|t| t.id == case.id);
        let skip = expected.skip.iter().find(|s| s.id == case.id);
        let passes_as = expected.passes_as.iter().find(|p| p.id == case.id);
        if expected.may_fail.contains(&case.id) {
            if case.verdict == Verdict::Skip {
                out.push(format!("{}: SKIP, expected PASS or FAIL", case.id));
            }
            continue;
        }
        let (verdict, fragment, why) = match (trip, skip, passes_as) {
            (Some(t), _, _) => (Verdict::Fail, t.observed, t.why),
            (None, Some(s), _) => (Verdict::Skip, s.reason, s.why),
            (None, None, Some(p)) => (Verdict::Pass, p.observed, p.why),
            (None, None, None) => (Verdict::Pass, "", "untouched by the weakness"),
        };
        if case.verdict != verdict {
            out.push(format!(
                "{}: {} expected ({why}), got {} ({})",
                case.id,
                verdict.as_str(),
                case.verdict.as_str(),
                case.observed
            ));
        } else if !case.observed.contains(fragment) {
            out.push(format!(
                "{}: {} as expected, but observed {:?}, not {fragment:?} ({why})",
                case.id,
                verdict.as_str(),
                case.observed
            ));
        }
    }
    out
}

async fn run_kit(target: Target, auth: AuthToken) -> Report {
    conformance::run(target, auth, &[]).await.unwrap()
}

/// Each weakness, and the control, against the whole kit: exactly the expected FAILs and
/// SKIPs, everything else PASS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_weakness_fails_exactly_its_cases() {
    let listed: Vec<Weakness> = EXPECTED.iter().map(|e| e.weakness).collect();
    assert_eq!(listed, Weakness::ALL, "every weakness, once, in order");
    let runs = EXPECTED.iter().map(|expected| async move {
        let start_timeout = if expected.weakness == Weakness::PendingCapRefuses {
            FLOOD_START_TIMEOUT
        } else {
            START_TIMEOUT
        };
        let target = WeakTarget::start(expected.weakness, TOKEN_TTL, start_timeout).await;
        let report = run_kit(target.target(), target.auth_token()).await;
        drop(target);
        (expected, report)
    });
    let results = futures_util::future::join_all(runs).await;
    let mut problems = Vec::new();
    for (expected, report) in &results {
        let diff = differences(report, expected);
        if !diff.is_empty() {
            problems.push(format!(
                "{:?}:\n  {}\n{}",
                expected.weakness,
                diff.join("\n  "),
                report.table()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The real reference server (`Server::builder` with `Echo`, as `streamguard demo` runs it:
/// 2 s token TTL, 1 s start deadline, the kit told both) passes every case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_passes_every_case() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let public = format!("http://{addr}");
    let account = AccountSid::parse(weak_target::ACCOUNT).unwrap();
    let key = TokenKey::from_bytes(&[0x3c; 32]).unwrap();
    let mut config = Config::new(
        PublicUrl::parse(&public).unwrap(),
        AuthToken::new(weak_target::AUTH_TOKEN).unwrap(),
        account,
        KeySet::single(key),
    );
    config.token_ttl = TOKEN_TTL;
    config.start_timeout = START_TIMEOUT;
    let target = Target {
        connect_to: addr,
        target: public.clone(),
        public_url: public,
        webhook_path: config.webhook_path.clone(),
        stream_path: config.stream_path.clone(),
        token_ttl: Some(TOKEN_TTL),
        start_timeout: Some(START_TIMEOUT),
        account_sid: account,
    };
    let server = Server::builder(config)
        .handlers(Echo)
        .build()
        .unwrap()
        .serve(listener)
        .await
        .unwrap();
    let report = run_kit(target, AuthToken::new(weak_target::AUTH_TOKEN).unwrap()).await;
    server.shutdown().await;
    assert_eq!(
        (
            report.cases.len(),
            report.passed,
            report.failed,
            report.skipped
        ),
        (CATALOGUE_CASES, CATALOGUE_CASES, 0, 0),
        "{}",
        report.table()
    );
}

// ---------------------------------------------------------------------------------------------
// twiml_problems, against hand-written documents
// ---------------------------------------------------------------------------------------------

const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

const TEXT_NODE: &str = "text nodes (whitespace) inside the TwiML";
const QUERY: &str = "a query in the stream URL (Twilio drops it)";
const NOT_WS: &str = "the stream URL is not ws(s)://";
const NO_TOKEN: &str = r#"no <Parameter name="token">"#;
const SHAPE: &str = "not <Response><Connect|Start><Stream>";
const NOT_XML: &str = "not well-formed XML";

/// (document body after the XML declaration, the problems in the order reported)
const TWIML_CASES: &[(&str, &[&str])] = &[
    // Good: the shape streamguard (and twilio-python) writes, under either verb.
    (
        r#"<Response><Connect><Stream url="wss://voice.example.com/voice/stream"><Parameter name="token" value="AAAA" /></Stream></Connect></Response>"#,
        &[],
    ),
    (
        r#"<Response><Start><Stream url="ws://127.0.0.1:8080/voice/stream"><Parameter name="token" value="AAAA" /></Stream></Start></Response>"#,
        &[],
    ),
    // Other parameters beside the token are fine.
    (
        r#"<Response><Connect><Stream url="wss://voice.example.com/s"><Parameter name="caller" value="x" /><Parameter name="token" value="AAAA" /></Stream></Connect></Response>"#,
        &[],
    ),
    // A whitespace text node inside <Stream> (an indented template).
    (
        "<Response><Connect><Stream url=\"wss://voice.example.com/voice/stream\">\n      <Parameter name=\"token\" value=\"AAAA\" />\n    </Stream></Connect></Response>",
        &[TEXT_NODE],
    ),
    // One space between two elements is already a text node.
    (
        r#"<Response> <Connect><Stream url="wss://voice.example.com/voice/stream"><Parameter name="token" value="AAAA" /></Stream></Connect></Response>"#,
        &[TEXT_NODE],
    ),
    // A query in the url, the token in a <Parameter> as well.
    (
        r#"<Response><Connect><Stream url="wss://voice.example.com/voice/stream?token=AAAA"><Parameter name="token" value="AAAA" /></Stream></Connect></Response>"#,
        &[QUERY],
    ),
    // The token only in the url's query.
    (
        r#"<Response><Connect><Stream url="wss://voice.example.com/voice/stream?token=AAAA" /></Connect></Response>"#,
        &[QUERY, NO_TOKEN],
    ),
    // No token parameter at all; an empty one; one under another name.
    (
        r#"<Response><Connect><Stream url="wss://voice.example.com/voice/stream" /></Connect></Response>"#,
        &[NO_TOKEN],
    ),
    (
        r#"<Response><Connect><Stream url="wss://voice.example.com/voice/stream"><Parameter name="token" value="" /></Stream></Connect></Response>"#,
        &[NO_TOKEN],
    ),
    (
        r#"<Response><Connect><Stream url="wss://voice.example.com/voice/stream"><Parameter name="tok" value="AAAA" /></Stream></Connect></Response>"#,
        &[NO_TOKEN],
    ),
    // An http(s) url.
    (
        r#"<Response><Connect><Stream url="https://voice.example.com/voice/stream"><Parameter name="token" value="AAAA" /></Stream></Connect></Response>"#,
        &[NOT_WS],
    ),
    // Not <Response>; no <Connect>/<Start>; no <Stream>.
    (
        r#"<Reply><Connect><Stream url="wss://voice.example.com/voice/stream"><Parameter name="token" value="AAAA" /></Stream></Connect></Reply>"#,
        &[SHAPE],
    ),
    (
        r#"<Response><Stream url="wss://voice.example.com/voice/stream"><Parameter name="token" value="AAAA" /></Stream></Response>"#,
        &[SHAPE],
    ),
    (
        r#"<Response><Connect><Say>hello</Say></Connect></Response>"#,
        &[SHAPE],
    ),
    // The words of a <Say> (a TwiML hook's greeting) are the one text Twilio reads; any other
    // text is not.
    (
        r#"<Response><Say>Connecting you now.</Say><Connect><Stream url="wss://voice.example.com/voice/stream"><Parameter name="token" value="AAAA" /></Stream></Connect></Response>"#,
        &[],
    ),
    (
        r#"<Response><Connect><Stream url="wss://voice.example.com/voice/stream">token<Parameter name="token" value="AAAA" /></Stream></Connect></Response>"#,
        &[TEXT_NODE],
    ),
    // Not XML.
    (
        r#"<Response><Connect><Stream url="wss://voice.example.com/voice/stream"></Connect></Response>"#,
        &[NOT_XML],
    ),
];

/// Every document twilio-python writes (`tests/data/twiml-python.json`, Twilio's own helper
/// library, so the right shape by definition) has no problem but a missing token, and only
/// where it has no `token` parameter with a value.
#[test]
fn twiml_problems_of_the_python_vectors() {
    let file: serde_json::Value =
        serde_json::from_str(include_str!("data/twiml-python.json")).unwrap();
    let cases = file["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 30,
        "the vector file shrank: review this test"
    );
    let mut with_token = 0;
    for c in cases {
        let has_token = c["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p[0] == "token" && p[1].as_str().is_some_and(|v| !v.is_empty()));
        with_token += usize::from(has_token);
        let want: &[&str] = if has_token { &[] } else { &[NO_TOKEN] };
        let doc = c["expected"].as_str().unwrap();
        assert_eq!(twiml_problems(doc), want, "case {}", c["id"]);
    }
    assert!(with_token >= 5 && with_token < cases.len(), "{with_token}");
}

#[test]
fn twiml_problems_of_hand_written_documents() {
    for (body, expected) in TWIML_CASES {
        let doc = format!("{DECL}{body}");
        assert_eq!(twiml_problems(&doc), *expected, "{doc}");
    }
    // The declaration is optional; without it the good document is still good.
    let (good, none) = TWIML_CASES[0];
    assert_eq!(twiml_problems(good), none);
}
