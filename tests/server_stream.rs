//! The media stream over real sockets, as Twilio drives it: the whole flow, every refusal
//! (each asserting the status or close code AND that neither the handler nor the peer got
//! anything), races, concurrency, backpressure and shutdown.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod harness;

use std::time::Duration;

use base64::Engine as _;
use harness::{
    Harness, Options, Seen, call, close_code_of, raw_http, refusal_close_code, stream_sid,
};
use streamguard::kit::simulator::{
    Signing, StreamOutcome, StreamPlan, parse_twiml, strip_query, tone_frame,
};
use streamguard::server::StreamEnd;
use streamguard::upgrade::SignatureMode;
use tungstenite::Message;

const POLICY: u16 = 1008;

fn payload(i: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(tone_frame(i))
}

/// The peer was refused with `code` and got nothing else: no message, the generic reason.
fn assert_refused(o: &StreamOutcome, code: u16, what: &str) {
    assert_eq!(o.http_status, None, "{what}: the upgrade itself succeeded");
    assert_eq!(o.close_code, Some(code), "{what}: close code");
    assert!(
        !o.received_anything(),
        "{what}: the peer received {:?}",
        o.received
    );
    if code == POLICY {
        assert_eq!(
            o.close_reason, "policy violation",
            "{what}: one generic reason for every cause"
        );
    }
}

#[tokio::test]
async fn the_whole_twilio_flow_delivers_every_frame_in_order_and_echoes() {
    let h = Harness::start(Options {
        echo: true,
        ..Options::default()
    })
    .await;
    // Twilio: signed webhook, TwiML, query dropped, signed upgrade, connected, start, media, stop.
    let reply = h.webhook(1, Signing::Valid).await;
    let twiml = parse_twiml(&reply.body).unwrap();
    let frames = 50;
    let plan = StreamPlan::call(
        strip_query(&twiml.url),
        h.account,
        call(1),
        stream_sid(1),
        twiml.parameters.clone(),
        frames,
    );
    let o = h.twilio.stream(&plan).await.unwrap();

    assert_eq!(o.close_code, Some(1000));
    let sent: Vec<String> = (0..frames).map(payload).collect();
    assert_eq!(o.echoed_payloads(), sent, "every payload echoed, in order");
    for m in &o.received {
        let v: serde_json::Value = serde_json::from_str(m).unwrap();
        assert_eq!(v["event"], "media");
        assert_eq!(v["streamSid"], stream_sid(1).as_str());
    }
    assert_eq!(
        h.recorder.media_of(&stream_sid(1)),
        sent,
        "the handler saw every frame in order"
    );
    let events = h.recorder.events();
    let Seen::Start(info) = &events[0] else {
        panic!("first event is the start: {events:?}")
    };
    assert_eq!((info.call_sid, info.account_sid), (call(1), h.account));
    assert!(
        info.custom_parameters.get("token").is_none(),
        "the token is not handed to the application"
    );
    assert_eq!(
        h.recorder.wait_ends(1).await,
        vec![(stream_sid(1), StreamEnd::Stopped)]
    );

    let m = h.server().metrics();
    assert_eq!(m.streams_authenticated, 1);
    assert_eq!(m.media_frames, frames as u64);
    assert_eq!(m.streams_rejected_total(), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn media_in_the_same_write_as_start_is_not_lost() {
    let h = Harness::start(Options::default()).await;
    let token = h.token_for(1).await;
    let mut plan = h.plan(1, Harness::token_param(&token), 10);
    plan.media_with_start = true;
    let o = h.twilio.stream(&plan).await.unwrap();
    assert_eq!(o.close_code, Some(1000));
    assert_eq!(
        h.recorder.media_of(&stream_sid(1)),
        (0..10).map(payload).collect::<Vec<_>>()
    );
    h.shutdown().await;
}

#[tokio::test]
async fn token_in_the_query_alone_works_for_non_twilio_clients() {
    let h = Harness::start(Options::default()).await;
    let token = h.token_for(1).await;
    let mut plan = h.plan(1, Vec::new(), 3);
    plan.url = format!("{}?token={token}", plan.url);
    let o = h.twilio.stream(&plan).await.unwrap();
    assert_eq!(o.close_code, Some(1000));
    assert_eq!(h.recorder.media_of(&stream_sid(1)).len(), 3);
    h.shutdown().await;
}

/// Every failure after the upgrade: close 1008 (or 1003/1009), nothing to the handler or
/// the peer, the precise reason in metrics.
#[tokio::test]
async fn every_session_failure_closes_and_leaks_nothing() {
    let h = Harness::start(Options::default()).await;
    let t1 = h.token_for(1).await;
    let t2 = h.token_for(2).await;
    let other_account =
        streamguard::sid::AccountSid::parse("ACffffffffffffffffffffffffffffffff").unwrap();

    let mut cases: Vec<(&str, StreamPlan, u16, &str)> = Vec::new();
    cases.push((
        "no token",
        h.plan(1, Vec::new(), 3),
        POLICY,
        "token_missing",
    ));
    cases.push((
        "another call's token",
        h.plan(3, Harness::token_param(&t1), 3),
        POLICY,
        "token_bad_mac",
    ));
    let mut p = h.plan(1, Harness::token_param(&t1), 3);
    p.start.as_mut().unwrap().account = other_account;
    cases.push(("another account", p, POLICY, "account_mismatch"));
    let mut p = h.plan(1, Harness::token_param(&t1), 3);
    p.url = format!("{}?token={t2}", p.url);
    cases.push((
        "query and customParameters disagree",
        p,
        POLICY,
        "token_conflict",
    ));
    cases.push((
        "garbage token",
        h.plan(1, Harness::token_param("x"), 3),
        POLICY,
        "token_length",
    ));
    let mut p = h.plan(1, Vec::new(), 0);
    p.start = None;
    p.raw = vec![Message::text(streamguard::kit::simulator::media_message(
        &stream_sid(1),
        0,
    ))];
    cases.push(("media before start", p, POLICY, "event_before_start"));
    let mut p = h.plan(1, Vec::new(), 0);
    p.start = None;
    p.raw = vec![Message::text("{\"event\":\"start\",")];
    cases.push(("malformed JSON", p, POLICY, "frame_not_json"));
    let mut p = h.plan(1, Vec::new(), 0);
    p.start = None;
    p.raw = vec![Message::text(
        "{\"event\":\"start\",\"streamSid\":\"MZ00000000000000000000000000000000\"}",
    )];
    cases.push(("start without its body", p, POLICY, "frame_invalid"));
    let mut p = h.plan(1, Vec::new(), 0);
    p.start = None;
    p.raw = vec![Message::binary(vec![0u8; 16])];
    cases.push(("binary frame", p, 1003, "binary_frame"));
    let mut p = h.plan(1, Vec::new(), 0);
    p.start = None;
    p.raw = vec![Message::text(format!(
        "{{\"event\":\"connected\",\"pad\":\"{}\"}}",
        "a".repeat(70_000)
    ))];
    cases.push(("message over 64 KiB", p, 1009, "message_too_large"));
    let mut p = h.plan(1, Vec::new(), 0);
    p.start = None;
    p.connected = true;
    p.raw = vec![Message::text(
        streamguard::kit::simulator::connected_message(),
    )];
    cases.push(("second connected", p, POLICY, "unexpected_connected"));
    let mut p = h.plan(1, Vec::new(), 0);
    p.start = None;
    p.raw = vec![Message::Ping(vec![1, 2, 3].into())];
    cases.push(("ping before start", p, POLICY, "control_before_start"));

    for (what, plan, code, reason) in &cases {
        let before = h
            .server()
            .metrics()
            .streams_rejected
            .get(reason)
            .copied()
            .unwrap_or(0);
        let o = h.twilio.stream(plan).await.unwrap();
        if *reason == "control_before_start" {
            // RFC 6455 §5.5.2: the WebSocket layer answers a ping with a pong carrying the
            // peer's own bytes; that is all, and it is not a message.
            assert_eq!(o.close_code, Some(*code), "{what}");
            assert!(o.received.is_empty(), "{what}");
        } else {
            assert_refused(&o, *code, what);
        }
        let after = h
            .server()
            .metrics()
            .streams_rejected
            .get(reason)
            .copied()
            .unwrap_or(0);
        assert_eq!(after, before + 1, "{what}: counted under {reason}");
    }
    assert!(
        h.recorder.events().is_empty(),
        "the handler saw nothing: {:?}",
        h.recorder.events()
    );
    let m = h.server().metrics();
    assert_eq!((m.streams_authenticated, m.media_frames), (0, 0));

    // The token that was refused for other calls still works for its own call: refusals
    // consumed nothing.
    let o = h.call_with(1, &t1, 2).await;
    assert_eq!(o.close_code, Some(1000));
    h.shutdown().await;
}

#[tokio::test]
async fn second_start_after_authentication_closes() {
    let h = Harness::start(Options::default()).await;
    let t1 = h.token_for(1).await;
    let start = streamguard::kit::simulator::start_message(
        &h.account,
        &call(1),
        &stream_sid(1),
        &Harness::token_param(&t1),
    );
    // connected, start, one media frame, then the same start again.
    let mut p = h.plan(1, Vec::new(), 0);
    p.start = None;
    p.raw = vec![
        Message::text(start.clone()),
        Message::text(streamguard::kit::simulator::media_message(
            &stream_sid(1),
            0,
        )),
        Message::text(start),
    ];
    let o = h.twilio.stream(&p).await.unwrap();
    assert_eq!(o.close_code, Some(POLICY));
    assert_eq!(o.close_reason, "policy violation");
    assert_eq!(h.recorder.media_of(&stream_sid(1)), vec![payload(0)]);
    let ends = h.recorder.wait_ends(1).await;
    assert_eq!(
        ends,
        vec![(
            stream_sid(1),
            StreamEnd::Violation(streamguard::session::Reason::SecondStart)
        )]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_token_works_once_then_is_refused() {
    let h = Harness::start(Options::default()).await;
    let t = h.token_for(1).await;
    let first = h.call_with(1, &t, 3).await;
    assert_eq!(first.close_code, Some(1000));
    let replay = h.call_with(1, &t, 3).await;
    assert_refused(&replay, POLICY, "replayed token");
    // The same signed webhook again, after the stream: the call has streamed, so no token
    // (a bare 403, the answer a bad signature gets).
    let again = h.webhook(1, Signing::Valid).await;
    assert_eq!((again.status, again.body.as_str()), (403, ""));
    let replay = h.call_with(1, &t, 3).await;
    assert_refused(&replay, POLICY, "spent token, again");
    assert_eq!(
        h.recorder.media_of(&stream_sid(1)).len(),
        3,
        "only the first stream's frames"
    );
    let m = h.server().metrics();
    assert_eq!(m.streams_rejected_for("token_replayed"), 2);
    assert_eq!(m.webhook_rejected_for("call_already_streamed"), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn two_connections_racing_with_one_token_exactly_one_wins() {
    let h = Harness::start(Options::default()).await;
    for round in 0..10u64 {
        let t = h.token_for(100 + round).await;
        let a = h.plan(100 + round, Harness::token_param(&t), 2);
        let mut b = a.clone();
        b.start.as_mut().unwrap().stream = stream_sid(1000 + round);
        let (ra, rb) = tokio::join!(h.twilio.stream(&a), h.twilio.stream(&b));
        let codes = [ra.unwrap().close_code, rb.unwrap().close_code];
        assert!(
            codes == [Some(1000), Some(POLICY)] || codes == [Some(POLICY), Some(1000)],
            "round {round}: {codes:?}"
        );
    }
    assert_eq!(h.server().metrics().streams_authenticated, 10);
    h.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let h = Harness::start(Options {
        manual_clock: true,
        configure: |c| c.token_ttl = Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let t = h.token_for(1).await;
    h.clock.as_ref().unwrap().advance(Duration::from_secs(1));
    let o = h.call_with(1, &t, 3).await;
    assert_refused(&o, POLICY, "expired token");
    assert_eq!(
        h.server().metrics().streams_rejected.get("token_expired"),
        Some(&1)
    );
    assert!(h.recorder.events().is_empty());
    // A new webhook after expiry mints a fresh token that works.
    let fresh = h.token_for(1).await;
    assert_ne!(fresh, t);
    let o = h.call_with(1, &fresh, 1).await;
    assert_eq!(o.close_code, Some(1000));
    h.shutdown().await;
}

#[tokio::test]
async fn no_start_before_the_deadline_closes() {
    let h = Harness::start(Options {
        configure: |c| c.start_timeout = Duration::from_millis(150),
        ..Options::default()
    })
    .await;
    let mut p = h.plan(1, Vec::new(), 0);
    p.start = None;
    let o = h.twilio.stream(&p).await.unwrap();
    assert_refused(&o, POLICY, "start deadline");
    assert_eq!(
        h.server().metrics().streams_rejected.get("start_timeout"),
        Some(&1)
    );
    h.shutdown().await;
}

fn upgrade_request(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn refusals_before_the_upgrade_are_plain_http() {
    let h = Harness::start(Options::default()).await;
    let auth = streamguard::secret::AuthToken::new(harness::AUTH_TOKEN).unwrap();
    let good_sig =
        streamguard::signature::compute_signature::<&str, &str>(&auth, &h.stream_url, &[]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("other path", upgrade_request("/voice/other", &format!("X-Twilio-Signature: {good_sig}\r\n")), 404),
        (
            "POST",
            b"POST /voice/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            405,
        ),
        (
            "not a websocket handshake",
            format!("GET /voice/stream HTTP/1.1\r\nHost: x\r\nX-Twilio-Signature: {good_sig}\r\nConnection: close\r\n\r\n").into_bytes(),
            400,
        ),
        (
            "bad key",
            String::from_utf8(upgrade_request("/voice/stream", &format!("X-Twilio-Signature: {good_sig}\r\n")))
                .unwrap()
                .replace("dGhlIHNhbXBsZSBub25jZQ==", "short")
                .into_bytes(),
            400,
        ),
        ("no signature", upgrade_request("/voice/stream", ""), 401),
        ("bad signature", upgrade_request("/voice/stream", "X-Twilio-Signature: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"), 401),
        (
            "signature for another URL",
            upgrade_request("/voice/stream?x=1", &format!("X-Twilio-Signature: {good_sig}\r\n")),
            401,
        ),
    ];
    for (what, req, status) in &cases {
        let (got, resp) = raw_http(h.addr, req).await;
        assert_eq!(got, *status, "{what}: {resp}");
        assert!(!resp.contains("101"), "{what}");
        assert!(resp.ends_with("\r\n\r\n"), "{what}: empty body: {resp:?}");
    }
    // The signed one is upgraded.
    let (got, _) = raw_http(
        h.addr,
        &upgrade_request(
            "/voice/stream",
            &format!("X-Twilio-Signature: {good_sig}\r\n"),
        ),
    )
    .await;
    assert_eq!(got, 101);
    let m = h.server().metrics();
    assert_eq!(
        m.streams_rejected.get("upgrade_signature_missing"),
        Some(&1)
    );
    assert_eq!(
        m.streams_rejected.get("upgrade_signature_invalid"),
        Some(&2)
    );
    assert!(h.recorder.events().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn upgrade_signature_modes() {
    for (mode, unsigned, forged) in [
        (SignatureMode::IfPresent, true, false),
        (SignatureMode::Off, true, true),
    ] {
        let h = Harness::start(Options {
            configure: match mode {
                SignatureMode::IfPresent => |c| c.upgrade_signature = SignatureMode::IfPresent,
                _ => |c| c.upgrade_signature = SignatureMode::Off,
            },
            ..Options::default()
        })
        .await;
        for (n, signing, allowed) in [(1, Signing::Absent, unsigned), (2, Signing::Forged, forged)]
        {
            let t = h.token_for(n).await;
            let mut p = h.plan(n, Harness::token_param(&t), 1);
            p.signing = signing;
            let o = h.twilio.stream(&p).await.unwrap();
            if allowed {
                assert_eq!(o.close_code, Some(1000), "{mode:?} {signing:?}");
            } else {
                assert_eq!(o.http_status, Some(401), "{mode:?} {signing:?}");
            }
        }
        h.shutdown().await;
    }
}

/// A full per-address pending cap closes that address's oldest pending connection (1008,
/// `pending_evicted`) to admit the new one; a full stream cap answers 503.
#[tokio::test]
async fn capacity_caps_evict_the_oldest_pending_and_refuse_over_max_streams() {
    let h = Harness::start(Options {
        configure: |c| {
            c.max_pending_per_ip = 2;
            c.start_timeout = Duration::from_secs(5);
        },
        ..Options::default()
    })
    .await;
    let mut oldest = h.connect_stream().await;
    let mut second = h.connect_stream().await;
    h.wait_metrics(|m| m.gauges.connections_pending == 2).await;
    // The third from the same address is admitted (101), and the oldest is closed.
    let mut third = h.connect_stream().await;
    assert_eq!(refusal_close_code(&mut oldest).await, Some(POLICY));
    let m = h
        .wait_metrics(|m| m.streams_rejected_for("pending_evicted") == 1)
        .await;
    assert_eq!(m.gauges.connections_pending, 2);
    // The newest can still authenticate, and the second was left alone.
    let t = h.token_for(3).await;
    h.send_start(&mut third, 3, &t, 1).await;
    h.wait_metrics(|m| m.gauges.streams_active == 1).await;
    let t2 = h.token_for(2).await;
    h.send_start(&mut second, 2, &t2, 1).await;
    h.wait_metrics(|m| m.gauges.streams_active == 2).await;
    assert!(h.recorder.media_of(&stream_sid(1)).is_empty());
    drop((second, third));
    h.wait_metrics(|m| m.gauges.streams_active == 0 && m.gauges.connections_pending == 0)
        .await;
    h.shutdown().await;

    // Streams: with one slot, an authenticated stream makes the next upgrade 503.
    let h = Harness::start(Options {
        configure: |c| c.max_streams = 1,
        ..Options::default()
    })
    .await;
    let t = h.token_for(1).await;
    let mut first = h.open_stream(1, &t, 1).await;
    h.wait_metrics(|m| m.gauges.streams_active == 1).await;
    let t2 = h.token_for(2).await;
    let second = h.call_with(2, &t2, 1).await;
    assert_eq!(second.http_status, Some(503));
    assert!(!second.received_anything());
    assert_eq!(h.server().metrics().streams_rejected_for("streams_full"), 1);
    // When the first stream ends, its slot is free again.
    futures_util::SinkExt::close(&mut first).await.unwrap();
    h.wait_metrics(|m| m.gauges.streams_active == 0).await;
    let t3 = h.token_for(3).await;
    let third = h.call_with(3, &t3, 1).await;
    assert_eq!(third.close_code, Some(1000));
    h.shutdown().await;
}

/// `--max-streams` counts authenticated streams: two connections may be pending with one
/// slot, and the one that authenticates second is closed before its handler exists, with its
/// token unspent (the slot is reserved before redemption): once a slot frees, the same token
/// opens the stream.
#[tokio::test]
async fn a_stream_authenticating_when_the_cap_was_reached_meanwhile_is_closed() {
    let h = Harness::start(Options {
        configure: |c| c.max_streams = 1,
        ..Options::default()
    })
    .await;
    let (t1, t2) = (h.token_for(1).await, h.token_for(2).await);
    let mut a = h.connect_stream().await;
    let mut b = h.connect_stream().await;
    h.wait_metrics(|m| m.gauges.connections_pending == 2).await;
    h.send_start(&mut a, 1, &t1, 1).await;
    h.wait_metrics(|m| m.gauges.streams_active == 1).await;
    h.send_start(&mut b, 2, &t2, 1).await;
    assert_eq!(refusal_close_code(&mut b).await, Some(POLICY));
    let m = h.wait_metrics(|m| m.gauges.connections_pending == 0).await;
    assert_eq!(m.streams_rejected.get("streams_full"), Some(&1));
    assert_eq!((m.gauges.streams_active, m.streams_authenticated), (1, 1));
    let starts: Vec<_> = h
        .recorder
        .events()
        .into_iter()
        .filter(|e| matches!(e, Seen::Start(_)))
        .collect();
    assert_eq!(
        starts.len(),
        1,
        "the late stream's handler was never created"
    );
    assert!(h.recorder.media_of(&stream_sid(2)).is_empty());
    // Free the slot: the refused call's token still works (within its TTL).
    futures_util::SinkExt::close(&mut a).await.unwrap();
    h.wait_metrics(|m| m.gauges.streams_active == 0).await;
    let again = h.call_with(2, &t2, 2).await;
    assert_eq!(again.close_code, Some(1000), "{again:?}");
    assert_eq!(h.recorder.media_of(&stream_sid(2)).len(), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn many_simultaneous_calls_do_not_cross_over() {
    let h = Harness::start(Options {
        echo: true,
        // All calls come from 127.0.0.1 at once: lift the per-IP cap for this test.
        configure: |c| {
            c.max_pending = 64;
            c.max_pending_per_ip = 64;
        },
        ..Options::default()
    })
    .await;
    let n = 24u64;
    let mut plans = Vec::new();
    for i in 0..n {
        let t = h.token_for(i).await;
        plans.push(h.plan(i, Harness::token_param(&t), 5 + i as usize % 7));
    }
    let outcomes = futures_util::future::join_all(plans.iter().map(|p| h.twilio.stream(p))).await;
    for (i, o) in outcomes.into_iter().enumerate() {
        let o = o.unwrap();
        let frames = 5 + i % 7;
        let expected: Vec<String> = (0..frames).map(payload).collect();
        assert_eq!(o.close_code, Some(1000), "call {i}");
        assert_eq!(
            o.echoed_payloads(),
            expected,
            "call {i}: its own echoes only"
        );
        assert_eq!(
            h.recorder.media_of(&stream_sid(i as u64)),
            expected,
            "call {i}: its own frames only"
        );
        for m in &o.received {
            assert!(
                m.contains(stream_sid(i as u64).as_str()),
                "call {i} got another stream's message"
            );
        }
    }
    let starts: Vec<_> = h
        .recorder
        .events()
        .into_iter()
        .filter_map(|e| {
            if let Seen::Start(info) = e {
                Some((info.call_sid, info.stream_sid))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(starts.len(), n as usize);
    for (c, s) in starts {
        let i = (0..n).find(|i| call(*i) == c).unwrap();
        assert_eq!(s, stream_sid(i));
    }
    h.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_closed_not_buffered() {
    // Each inbound frame makes the handler queue 4 MB; the client never reads.
    let h = Harness::start(Options {
        flood: 4_000_000,
        ..Options::default()
    })
    .await;
    let t = h.token_for(1).await;
    let ws = h.open_stream(1, &t, 1).await;
    let ends = h.recorder.wait_ends(1).await;
    assert_eq!(ends, vec![(stream_sid(1), StreamEnd::Backpressure)]);
    h.wait_metrics(|m| m.gauges.streams_active == 0).await;
    drop(ws);
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_streams_with_1001() {
    let h = Harness::start(Options::default()).await;
    let t = h.token_for(1).await;
    let mut ws = h.open_stream(1, &t, 2).await;
    h.wait_metrics(|m| m.media_frames == 2).await;
    let recorder = h.recorder.clone();
    let (code, ()) = tokio::join!(close_code_of(&mut ws), h.shutdown());
    assert_eq!(code, Some(1001));
    assert_eq!(recorder.ends(), vec![(stream_sid(1), StreamEnd::Shutdown)]);
}
