//! The voice webhook over real sockets: the signed answer, its idempotence, and every
//! refusal (status code, empty body, no token minted, metrics).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod harness;

use harness::{ACCOUNT, Harness, Options, call, raw_http};
use streamguard::kit::simulator::{Signing, parse_twiml};
use streamguard::secret::{AuthToken, KeySet, TokenKey};
use streamguard::signature::compute_signature;
use streamguard::time::SystemClock;
use streamguard::token::verify;

#[tokio::test]
async fn signed_webhook_gets_twiml_with_a_token_bound_to_the_call() {
    let h = Harness::start(Options::default()).await;
    let reply = h.webhook(1, Signing::Valid).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type.as_deref(), Some("text/xml"));
    let twiml = parse_twiml(&reply.body).unwrap();
    assert_eq!(twiml.verb, "Connect");
    assert_eq!(twiml.url, h.stream_url);
    assert_eq!(twiml.parameters.len(), 1);
    let token = twiml.parameter("token").unwrap();
    let expected = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{}"><Parameter name="token" value="{token}" /></Stream></Connect></Response>"#,
        h.stream_url
    );
    assert_eq!(reply.body, expected);

    // The token verifies for exactly this call and account, with the server's key.
    let keys = KeySet::single(TokenKey::from_bytes(&harness::KEY).unwrap());
    let now = streamguard::time::Clock::now(&SystemClock);
    assert!(verify(&keys, token, &h.account, &call(1), now).is_ok());
    assert!(verify(&keys, token, &h.account, &call(2), now).is_err());
    let m = h.server().metrics();
    assert_eq!((m.webhook_accepted, m.webhook_rejected), (1, 0));
    h.shutdown().await;
}

#[tokio::test]
async fn replayed_webhook_within_the_ttl_gets_byte_identical_twiml() {
    let h = Harness::start(Options::default()).await;
    let params = h.twilio.voice_params(&call(1));
    let first = h
        .twilio
        .post_webhook(&h.webhook_url, &params, Signing::Valid)
        .await
        .unwrap();
    let second = h
        .twilio
        .post_webhook(&h.webhook_url, &params, Signing::Valid)
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.body, second.body);
    // Another call gets another token.
    let other = h.webhook(2, Signing::Valid).await;
    assert_ne!(
        parse_twiml(&first.body).unwrap().parameter("token"),
        parse_twiml(&other.body).unwrap().parameter("token")
    );
    h.shutdown().await;
}

/// Alters the voice parameters of call 1.
fn with(params: &[(String, String)], key: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = params.iter().filter(|(k, _)| k != key).cloned().collect();
    if let Some(v) = value {
        out.push((key.to_owned(), v.to_owned()));
    }
    out
}

#[tokio::test]
async fn refused_webhooks_get_a_bare_status_and_mint_nothing() {
    let h = Harness::start(Options::default()).await;
    let base = h.twilio.voice_params(&call(1));
    let other_account = "ACffffffffffffffffffffffffffffffff";
    type Params = Vec<(String, String)>;
    let cases: Vec<(&str, Params, Signing, u16)> = vec![
        ("no signature", base.clone(), Signing::Absent, 403),
        (
            "signed with another auth token",
            base.clone(),
            Signing::Forged,
            403,
        ),
        (
            "another account, validly signed",
            with(&base, "AccountSid", Some(other_account)),
            Signing::Valid,
            403,
        ),
        (
            "no AccountSid",
            with(&base, "AccountSid", None),
            Signing::Valid,
            403,
        ),
        (
            "no CallSid",
            with(&base, "CallSid", None),
            Signing::Valid,
            400,
        ),
        (
            "malformed CallSid",
            with(&base, "CallSid", Some("CA123")),
            Signing::Valid,
            400,
        ),
        (
            "CallSid with another prefix",
            with(&base, "CallSid", Some(&ACCOUNT.replacen("AC", "MZ", 1))),
            Signing::Valid,
            400,
        ),
    ];
    for (what, params, signing, status) in &cases {
        let reply = h
            .twilio
            .post_webhook(&h.webhook_url, params, *signing)
            .await
            .unwrap();
        assert_eq!(reply.status, *status, "{what}");
        assert!(reply.body.is_empty(), "{what}: body must be empty");
        assert!(reply.content_type.is_none(), "{what}: no content type");
    }
    // Repeated AccountSid (one of them ours): ambiguous, refused.
    let mut repeated = base.clone();
    repeated.push(("AccountSid".to_owned(), other_account.to_owned()));
    let reply = h
        .twilio
        .post_webhook(&h.webhook_url, &repeated, Signing::Valid)
        .await
        .unwrap();
    assert_eq!(reply.status, 403);
    assert!(reply.body.is_empty());

    let m = h.server().metrics();
    assert_eq!(m.webhook_accepted, 0, "nothing was minted");
    assert_eq!(m.webhook_rejected, cases.len() as u64 + 1);
    h.shutdown().await;
}

#[tokio::test]
async fn the_signed_url_is_the_configured_one_not_the_host_header() {
    let h = Harness::start(Options::default()).await;
    let params = h.twilio.voice_params(&call(1));
    // A server that trusted Host would accept this: signed over the attacker's idea of the URL.
    let evil = h.webhook_url.replace("127.0.0.1", "evil.example");
    let auth = AuthToken::new(harness::AUTH_TOKEN).unwrap();
    let sig = compute_signature(&auth, &evil, &params);
    let body = params
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B")))
        .collect::<Vec<_>>()
        .join("&");
    let req = format!(
        "POST /voice/webhook HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: http\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, response) = raw_http(h.addr, req.as_bytes()).await;
    assert_eq!(status, 403);
    assert!(!response.contains("<Response>"));

    // Signed over the configured URL, with a misleading Host: accepted (Host is not used).
    let sig = compute_signature(&auth, &h.webhook_url, &params);
    let req = format!(
        "POST /voice/webhook HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, response) = raw_http(h.addr, req.as_bytes()).await;
    assert_eq!(status, 200, "{response}");
    assert!(
        response.contains(&h.stream_url),
        "the stream url comes from the configuration"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn method_size_and_query_rules() {
    let h = Harness::start(Options::default()).await;
    let (status, resp) = raw_http(
        h.addr,
        b"GET /voice/webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405);
    assert!(resp.ends_with("\r\n\r\n"), "empty body");

    let big = format!(
        "POST /voice/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        64 * 1024 + 1
    );
    let (status, _) = raw_http(h.addr, big.as_bytes()).await;
    assert_eq!(status, 413);

    // A chunked body over the limit (no Content-Length to refuse early).
    let mut chunked = b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..17 {
        chunked.extend_from_slice(b"1000\r\n");
        chunked.extend_from_slice(&[b'a'; 0x1000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, _) = raw_http(h.addr, &chunked).await;
    assert_eq!(status, 413);

    // The query string is part of the signed URL.
    let params = h.twilio.voice_params(&call(3));
    let url = format!("{}?tenant=a", h.webhook_url);
    let reply = h
        .twilio
        .post_webhook(&url, &params, Signing::Valid)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let m = h.server().metrics();
    assert_eq!(m.webhook_accepted, 1);
    h.shutdown().await;
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let h = Harness::start(Options::default()).await;
    let (status, resp) = raw_http(
        h.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(resp.ends_with("\r\n\r\nok"));
    let (status, resp) = raw_http(
        h.addr,
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 404);
    assert!(resp.ends_with("\r\n\r\n"));
    h.shutdown().await;
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_in_prometheus_format() {
    let h = Harness::start(Options {
        configure: |c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap()),
        ..Options::default()
    })
    .await;
    let metrics = h.server().metrics_addr().unwrap();
    assert_ne!(metrics, h.addr);
    // One accepted and one refused webhook, one refused upgrade.
    let _ = h.token_for(1).await;
    let reply = h.webhook(2, Signing::Absent).await;
    assert_eq!(reply.status, 403);
    let (status, _) = raw_http(
        h.addr,
        b"GET /voice/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert_eq!(status, 401);

    let (status, text) = raw_http(
        metrics,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4")
    );
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    for line in [
        "streamguard_webhook_requests_total{outcome=\"accepted\"} 1",
        "streamguard_webhook_requests_total{outcome=\"rejected\"} 1",
        "streamguard_streams_authenticated_total 0",
        "streamguard_streams_rejected_total{reason=\"upgrade_signature_missing\"} 1",
        "streamguard_streams_active 0",
        "streamguard_connections_pending 0",
        "streamguard_media_frames_total 0",
        "# TYPE streamguard_streams_active gauge",
        "# TYPE streamguard_media_frames_total counter",
        // The names issue 8 and issue 9 added, as the README's metrics table spells them.
        "streamguard_webhook_rejected_total{reason=\"signature_missing\"} 1",
        "# TYPE streamguard_webhook_rejected_total counter",
        "# TYPE streamguard_connections_open gauge",
        "# TYPE streamguard_connections_max gauge",
        "streamguard_connections_evicted_total 0",
        "streamguard_connections_refused_total 0",
        "streamguard_accept_errors_total 0",
        "# TYPE streamguard_accept_errors_total counter",
        "streamguard_call_records 1",
        "# TYPE streamguard_call_records gauge",
        "# TYPE streamguard_call_records_capacity gauge",
        "# TYPE streamguard_replay_store_errors_total counter",
        "# TYPE streamguard_replay_store_latency_seconds histogram",
        "streamguard_replay_store_latency_seconds_bucket{op=\"mint\",le=\"+Inf\"} 1",
        "streamguard_replay_store_latency_seconds_count{op=\"mint\"} 1",
        "streamguard_replay_store_latency_seconds_count{op=\"redeem\"} 0",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in:\n{body}"
        );
    }
    // The metrics listener serves nothing else, and the main listener does not serve metrics.
    let (status, _) = raw_http(
        metrics,
        b"GET /voice/webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = raw_http(
        h.addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 404);
    h.shutdown().await;
}
