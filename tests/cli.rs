//! The `streamguard` binary: `sign`, `twiml`, `demo`, and `serve` run as a real process —
//! refusing to start without its secrets, serving a call, never logging a secret even at
//! trace level, and exiting 0 on SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

use std::process::Command;
use std::time::Duration;

use streamguard::kit::simulator::{Signing, StreamPlan};
use streamguard::sid::{CallSid, StreamSid};

mod redis_support;
mod serve_support;
use redis_support::RedisServer;
use serve_support::{BIN, SERVE_ACCOUNT, SERVE_AUTH, SERVE_KEY, Serve, free_addr};

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("TWILIO_AUTH_TOKEN")
        .env_remove("TWILIO_ACCOUNT_SID")
        .env_remove("STREAMGUARD_TOKEN_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn sign_prints_the_known_answer() {
    // Vector from Twilio's SDK test suites (tests/data/twilio-signature.json).
    let (code, out, _) = run(
        &[
            "sign",
            "--url",
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            "--param",
            "CallSid=CA1234567890ABCDE",
            "--param",
            "Digits=1234",
            "--param",
            "From=+14158675309",
            "--param",
            "To=+18005551212",
            "--param",
            "Caller=+14158675309",
        ],
        &[("TWILIO_AUTH_TOKEN", "12345")],
    );
    assert_eq!(code, 0);
    assert_eq!(out, "RSOYDt4T1cUTdK1PDd93/VVr8B8=\n");
}

#[test]
fn sign_with_a_body_file_signs_the_body_hash() {
    let dir = std::env::temp_dir().join(format!("streamguard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body = dir.join("body.json");
    std::fs::write(&body, br#"{"property": "value", "boolean": true}"#).unwrap();
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    let (code, out, err) = run(
        &["sign", "--url", url, "--body-file", body.to_str().unwrap()],
        &[("TWILIO_AUTH_TOKEN", "12345")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "a9nBmqA0ju/hNViExpshrM61xv4=\n");
    // A body that does not match the URL's hash is an error, not a signature.
    std::fs::write(&body, b"{}").unwrap();
    let (code, out, err) = run(
        &["sign", "--url", url, "--body-file", body.to_str().unwrap()],
        &[("TWILIO_AUTH_TOKEN", "12345")],
    );
    assert_ne!(code, 0);
    assert!(out.is_empty());
    assert!(err.contains("bodySHA256"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sign_refuses_without_the_auth_token_and_never_prints_it() {
    let (code, out, err) = run(&["sign", "--url", "https://a.example/x"], &[]);
    assert_ne!(code, 0);
    assert!(out.is_empty());
    assert!(err.contains("TWILIO_AUTH_TOKEN"), "{err}");
    let (code, _, err) = run(
        &["sign", "--url", "ftp://a.example/x"],
        &[("TWILIO_AUTH_TOKEN", "s3cr3t-auth")],
    );
    assert_ne!(code, 0);
    assert!(!err.contains("s3cr3t-auth"));
}

#[test]
fn twiml_prints_exactly_the_library_output() {
    let (code, out, _) = run(
        &[
            "twiml",
            "--stream-url",
            "wss://example.com/media",
            "--param",
            "callId=abc123",
        ],
        &[],
    );
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url=\"wss://example.com/media\"><Parameter name=\"callId\" value=\"abc123\" /></Stream></Connect></Response>\n"
    );
    let (code, out, _) = run(
        &[
            "twiml",
            "--stream-url",
            "wss://example.com/media",
            "--start",
        ],
        &[],
    );
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Start><Stream url=\"wss://example.com/media\" /></Start></Response>\n"
    );
}

#[test]
fn twiml_errors_go_to_stderr_with_a_non_zero_exit() {
    for args in [
        &["twiml", "--stream-url", "wss://example.com/media?token=abc"][..],
        &["twiml", "--stream-url", "https://example.com/media"][..],
        &[
            "twiml",
            "--stream-url",
            "wss://example.com/media",
            "--param",
            "novalue",
        ][..],
        &[
            "twiml",
            "--stream-url",
            "wss://example.com/media",
            "--param",
            "a=\u{1}",
        ][..],
        &[
            "twiml",
            "--stream-url",
            "wss://example.com/media",
            "--connect",
            "--start",
        ][..],
    ] {
        let (code, out, err) = run(args, &[]);
        assert_ne!(code, 0, "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(!err.is_empty(), "{args:?}");
    }
}

/// The CLI says which rule an input broke, naming the input.
#[test]
fn sign_and_twiml_errors_say_what_is_wrong() {
    let auth = [("TWILIO_AUTH_TOKEN", "12345")];
    for (url, words) in [
        ("voice.example.com/voice/webhook", "no scheme"),
        (
            "ftp://voice.example.com/voice/webhook",
            "scheme must be https",
        ),
        ("https:///voice/webhook", "no host"),
        ("https://voice.example.com:99999/voice/webhook", "port"),
    ] {
        let (code, out, err) = run(&["sign", "--url", url], &auth);
        assert_ne!(code, 0, "{url}");
        assert!(out.is_empty());
        assert!(err.contains(url) && err.contains(words), "{url}: {err}");
    }
    let (code, _, err) = run(
        &[
            "sign",
            "--url",
            "wss://voice.example.com/voice/stream",
            "--param",
            "a=1",
        ],
        &auth,
    );
    assert_ne!(code, 0);
    assert!(err.contains("URL alone"), "{err}");
    let (code, out, err) = run(
        &["sign", "--url", "wss://voice.example.com/voice/stream?x=1"],
        &auth,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim().len(), 28);
    assert!(err.contains("drops the query"), "{err}");

    let (code, out, err) = run(
        &[
            "twiml",
            "--stream-url",
            "wss://example.com/media",
            "--param",
            "a=1",
            "--param",
            "a=2",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(out.is_empty());
    assert!(err.contains("--param a: given twice"), "{err}");
}

/// `--log-format json`: one JSON object per line, the same fields, no secret.
#[cfg(unix)]
#[tokio::test]
async fn serve_logs_json_lines_on_request() {
    let serve = Serve::start(&["--echo", "--log-format", "json"], "info", None);
    let token = serve.call(1, 2).await;
    let (code, logs) = serve.stop();
    assert_eq!(code, Some(0));
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["message"] == "stream authenticated"),
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .all(|v| v["level"].is_string() && v["target"].is_string())
    );
    assert!(!logs.contains(&token));
    assert!(!logs.contains('\u{1b}'), "no ANSI codes");
}

#[test]
fn demo_passes() {
    let (code, out, err) = run(&["demo"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let ids = streamguard::kit::conformance::list();
    assert!(ids.len() >= 30);
    // One row per case, each with exactly one verdict word, all PASS.
    for (id, _) in &ids {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("{id} missing:\n{out}"));
        assert_eq!(line.split_whitespace().last(), Some("PASS"), "{line}");
    }
    assert!(
        out.contains(&format!("{} passed, 0 failed, 0 skipped", ids.len())),
        "{out}"
    );
}

/// `conformance --list` needs no secrets and names every case; a target that is not there is
/// exit status 2 (the kit could not run), not 1 (a case failed).
#[test]
fn conformance_lists_its_cases_and_says_when_it_cannot_run() {
    let (code, out, _) = run(&["conformance", "--list"], &[]);
    assert_eq!(code, 0);
    for (id, description) in streamguard::kit::conformance::list() {
        assert!(out.contains(id) && out.contains(description), "{id}");
    }
    let target = format!("http://{}", free_addr());
    let env = [
        ("TWILIO_AUTH_TOKEN", SERVE_AUTH),
        ("TWILIO_ACCOUNT_SID", SERVE_ACCOUNT),
    ];
    let (code, _, err) = run(
        &[
            "conformance",
            "--target",
            &target,
            "--public-url",
            "https://v.example.com",
        ],
        &env,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unreachable"), "{err}");
    let (code, _, err) = run(
        &[
            "conformance",
            "--target",
            "127.0.0.1:1",
            "--public-url",
            "https://v.example.com",
        ],
        &env,
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(
        &[
            "conformance",
            "--target",
            &target,
            "--public-url",
            "https://v.example.com",
            "--only",
            "no.such.case",
        ],
        &env,
    );
    assert_eq!(code, 2, "{err}");
}

/// `conformance` against a real `serve` process: every case passes (exit 0), `--json` is one
/// document with the same verdicts, `--junit` writes one testcase per case.
#[cfg(unix)]
#[tokio::test]
async fn conformance_against_serve_passes_and_writes_json_and_junit() {
    let serve = Serve::start(
        &["--echo", "--token-ttl", "2", "--start-timeout-ms", "1000"],
        "info",
        None,
    );
    let junit = std::env::temp_dir().join(format!("streamguard-junit-{}.xml", std::process::id()));
    let target = format!("http://{}", serve.addr);
    let public = serve.public.clone();
    let junit_arg = junit.display().to_string();
    let args = [
        "conformance",
        "--target",
        &target,
        "--public-url",
        &public,
        "--token-ttl",
        "2",
        "--start-timeout-ms",
        "1000",
        "--json",
        "--junit",
        &junit_arg,
    ];
    let env = [
        ("TWILIO_AUTH_TOKEN", SERVE_AUTH),
        ("TWILIO_ACCOUNT_SID", SERVE_ACCOUNT),
    ];
    let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        run(&refs, &env)
    })
    .await
    .unwrap();
    let (_, _) = serve.stop();
    assert_eq!(code, 0, "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), streamguard::kit::conformance::list().len());
    assert!(cases.iter().all(|c| c["verdict"] == "PASS"), "{out}");
    assert_eq!(doc["failed"], 0);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let _ = std::fs::remove_file(&junit);
    let parsed = roxmltree::Document::parse(&xml).unwrap();
    let testcases: Vec<_> = parsed
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(testcases.len(), cases.len());
    assert!(
        !parsed.descendants().any(|n| n.has_tag_name("failure")),
        "{xml}"
    );
    assert!(
        testcases
            .iter()
            .any(|t| t.attribute("name") == Some("stream.token_race"))
    );
}

#[test]
fn serve_refuses_to_start_without_its_secrets() {
    let public = [
        "serve",
        "--public-url",
        "https://voice.example.com",
        "--listen",
        "127.0.0.1:0",
    ];
    let (code, _, err) = run(
        &public,
        &[("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("TWILIO_AUTH_TOKEN is not set"), "{err}");
    let (code, _, err) = run(&public, &[("TWILIO_AUTH_TOKEN", "x")]);
    assert_ne!(code, 0);
    assert!(err.contains("TWILIO_ACCOUNT_SID is not set"), "{err}");
    let (code, _, err) = run(
        &public,
        &[("TWILIO_AUTH_TOKEN", "x"), ("TWILIO_ACCOUNT_SID", "AC1")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("TWILIO_ACCOUNT_SID"), "{err}");
    let (code, _, err) = run(
        &public,
        &[
            ("TWILIO_AUTH_TOKEN", "x"),
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            ("STREAMGUARD_TOKEN_KEY", "c2hvcnQ="),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("STREAMGUARD_TOKEN_KEY") && err.contains("shorter than 32"),
        "{err}"
    );
    assert!(!err.contains("c2hvcnQ="), "the key is not echoed");
}

/// A real `serve` process, at trace level: a call works, SIGTERM exits 0, and no secret
/// (auth token, token key, stream token, signature) appears anywhere in the logs. A webhook
/// signed over another URL is logged with the URL it was checked against.
#[cfg(unix)]
#[tokio::test]
async fn serve_logs_no_secret_even_at_trace_and_exits_0_on_sigterm() {
    let serve = Serve::start(&["--echo"], "trace", None);
    let twilio = serve.twilio();
    let token = serve.call(1, 5).await;
    // A refused attempt with the spent token, so the rejection path logs too.
    let call = CallSid::parse(&format!("CA{:032x}", 1)).unwrap();
    let plan = StreamPlan::call(
        &format!("ws://{}/voice/stream", serve.addr),
        twilio.account_sid,
        call,
        StreamSid::parse(&format!("MZ{:032x}", 1)).unwrap(),
        vec![("token".to_owned(), token.clone())],
        5,
    );
    let o = twilio.stream(&plan).await.unwrap();
    assert_eq!(o.close_code, Some(1008));
    let webhook_sig = streamguard::signature::compute_signature(
        &twilio.auth_token,
        &serve.webhook_url(),
        &twilio.voice_params(&call),
    );
    // Signed over the URL a proxy would show (https, another host): refused, and the log says
    // which URL was expected.
    let other = CallSid::parse(&format!("CA{:032x}", 2)).unwrap();
    let wrong = twilio
        .post_webhook(
            &format!("http://{}/voice/webhook?x=1", serve.addr),
            &twilio.voice_params(&other),
            Signing::Valid,
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, 200, "query included in both: accepted");
    let mismatched_sig = streamguard::signature::compute_signature(
        &twilio.auth_token,
        "https://voice.example.com/voice/webhook",
        &twilio.voice_params(&other),
    );
    let req = format!(
        "POST /voice/webhook HTTP/1.1\r\nHost: voice.example.com\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {mismatched_sig}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut tcp = tokio::net::TcpStream::connect(&serve.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, req.as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(&mut tcp, &mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // The same for an upgrade signed over another URL, whose query carries a token: 401, the
    // stream URL logged, the query (and its token) not.
    let query_token = "tok-in-query-5d1c9a";
    let upgrade_sig = streamguard::signature::compute_signature::<&str, &str>(
        &twilio.auth_token,
        &format!("wss://voice.example.com/voice/stream?token={query_token}"),
        &[],
    );
    let req = format!(
        "GET /voice/stream?token={query_token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Twilio-Signature: {upgrade_sig}\r\n\r\n"
    );
    let mut tcp = tokio::net::TcpStream::connect(&serve.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, req.as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut head)
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
    drop(tcp);

    let addr = serve.addr.clone();
    let (code, logs) = serve.stop();
    assert_eq!(code, Some(0), "SIGTERM exits 0");
    assert!(
        logs.contains("stream authenticated"),
        "the logs are real: {logs}"
    );
    assert!(
        logs.contains("token_replayed"),
        "the precise reason is logged: {logs}"
    );
    assert!(
        logs.contains(&format!("signed_url=http://{addr}/voice/webhook")),
        "the URL signed against is logged: {logs}"
    );
    assert!(
        logs.contains(&format!("signed_url=ws://{addr}/voice/stream"))
            && logs.contains("reason=\"upgrade_signature_invalid\""),
        "the stream URL signed against is logged: {logs}"
    );
    for (what, secret) in [
        ("auth token", SERVE_AUTH),
        ("token key", SERVE_KEY),
        ("stream token", token.as_str()),
        ("webhook signature", webhook_sig.as_str()),
        ("mismatched signature", mismatched_sig.as_str()),
        ("upgrade signature", upgrade_sig.as_str()),
        ("token in the upgrade's query", query_token),
    ] {
        assert!(!logs.contains(secret), "{what} leaked into the logs");
    }
}

/// No `RUST_LOG` value lifts the cap on the WebSocket library's frame logging: a more specific
/// directive (`tungstenite::protocol=trace`, the reported bypass) included. Each filter also
/// enables streamguard's own `info` lines, which must appear, so the pipeline is live.
#[cfg(unix)]
#[tokio::test]
async fn no_log_filter_lets_a_token_through() {
    for filter in [
        "trace",
        "info,tungstenite=trace",
        "info,tungstenite::protocol=trace",
        "info,tungstenite::protocol::frame=trace",
        "info,tokio_tungstenite=trace",
    ] {
        let serve = Serve::start(&["--echo"], filter, None);
        let token = serve.call(1, 2).await;
        let (code, logs) = serve.stop();
        assert_eq!(code, Some(0), "{filter}");
        assert!(logs.contains("stream authenticated"), "{filter}: {logs}");
        assert!(!logs.contains(&token), "{filter}: the stream token leaked");
        assert!(
            !logs.contains(SERVE_AUTH),
            "{filter}: the auth token leaked"
        );
    }
}

/// Item 3 of the review: with the descriptor limit lowered to 256, idle connections and
/// half-sent request heads beyond the cap do not take the server down: `/healthz` answers, a
/// signed call completes, the cap chosen is logged, and failed accepts do not flood the log.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn idle_and_half_sent_connections_beyond_the_cap_do_not_lock_calls_out() {
    let serve = Serve::start(&["--echo"], "info", Some(256));
    let rss_before = rss_kib(serve.pid());
    let mut held = Vec::new();
    // 200 idle connections (nothing sent) and 60 half-sent request heads of 15 KiB each (just
    // under the 16 KiB bound, so the server holds them): 260 > 192, the cap the limit allows
    // (256 less the 64 kept free).
    let half_head = format!(
        "POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Padding: {}",
        "a".repeat(15 * 1024)
    );
    for i in 0..260 {
        let mut tcp = tokio::net::TcpStream::connect(&serve.addr).await.unwrap();
        if i >= 200 {
            tokio::io::AsyncWriteExt::write_all(&mut tcp, half_head.as_bytes())
                .await
                .unwrap();
        }
        held.push(tcp);
    }
    let (status, _) = raw_get(&serve.addr, "/healthz").await;
    assert_eq!(status, 200, "health answers while the cap is held");
    let token = serve.call(1, 3).await;
    assert!(!token.is_empty());
    // A request head over the 16 KiB bound is refused, not buffered.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    // 431, or a reset that overtakes it (the server closes with the rest of the head unread);
    // never a 2xx, and the server is not made to buffer it (the RSS below).
    let (status, _) = raw_request(&serve.addr, big.as_bytes()).await;
    assert!(status == 431 || status == 0, "oversized head: {status}");
    let rss_held = rss_kib(serve.pid());
    // Each held head is at most 16 KiB in the server, each connection a task: bounded by the
    // cap (192 x (16 KiB + a few KiB)), not by what peers send.
    assert!(
        rss_held.saturating_sub(rss_before) < 192 * 32,
        "RSS {rss_before} KiB -> {rss_held} KiB with the cap held"
    );
    eprintln!(
        "connection cap held (200 idle, 60 half-sent 15 KiB heads, cap 192): RSS {rss_before} \
         KiB -> {rss_held} KiB"
    );
    // The server made room by closing the oldest waiting connections: at least the 68 over
    // the cap (more, since the health check and the call were admitted the same way).
    let mut closed_by_server = 0;
    for tcp in &mut held {
        let mut byte = [0u8; 1];
        let read = tokio::io::AsyncReadExt::read(tcp, &mut byte);
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(20), read).await {
            closed_by_server += 1;
        }
    }
    assert!(
        closed_by_server >= 68,
        "{closed_by_server} connections were closed"
    );
    drop(held);
    let (status, _) = raw_get(&serve.addr, "/healthz").await;
    assert_eq!(status, 200);
    let (code, logs) = serve.stop();
    assert_eq!(code, Some(0));
    assert!(
        logs.contains("max_connections=192") && logs.contains("descriptor_limit=256"),
        "the cap chosen is logged: {logs}"
    );
    let accept_warnings = logs.matches("accept failed").count();
    assert!(
        accept_warnings <= 2,
        "{accept_warnings} accept warnings: {logs}"
    );
}

/// The resident set of process `pid`, in KiB (`/proc/PID/status`).
#[cfg(target_os = "linux")]
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn raw_request(addr: &str, request: &[u8]) -> (u16, String) {
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let _ = tokio::io::AsyncWriteExt::write_all(&mut tcp, request).await;
    let mut text = String::new();
    let read = tokio::io::AsyncReadExt::read_to_string(&mut tcp, &mut text);
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

async fn raw_get(addr: &str, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    raw_request(addr, req.as_bytes()).await
}

/// Two `serve` processes behind one public URL share single use through Redis (password from
/// the environment, never logged): a webhook answered by one, its stream on the other, the
/// spent token refused by both. A third with the wrong password refuses calls (fails closed)
/// and tells the operator the cause once, at `warn`, not once per refused call.
#[cfg(unix)]
#[tokio::test]
async fn two_serve_processes_share_single_use_through_redis() {
    const PASSWORD: &str = "s3cret-redis-pass-7f3a";
    let Some(redis) = RedisServer::start_with_password(
        "two_serve_processes_share_single_use_through_redis",
        Some(PASSWORD),
    ) else {
        return;
    };
    let store = format!("redis://127.0.0.1:{}", redis.port);
    let public = Some("http://voice.example.com");
    let args = ["--echo", "--replay-store", store.as_str()];
    let env = [("STREAMGUARD_REDIS_PASSWORD", PASSWORD)];
    let a = Serve::start_with(&args, "debug", None, public, &env);
    let b = Serve::start_with(&args, "debug", None, public, &env);
    let (status, token) = a.webhook(1).await;
    assert_eq!(status, 200);
    let token = token.unwrap();
    assert_eq!(
        b.stream(1, &token, 3).await,
        Some(1000),
        "the stream on the other instance"
    );
    assert_eq!(
        a.stream(1, &token, 3).await,
        Some(1008),
        "spent, on the first"
    );
    assert_eq!(
        b.stream(1, &token, 3).await,
        Some(1008),
        "spent, on the second"
    );
    assert_eq!(b.webhook(1).await, (403, None), "the call has streamed");

    let metrics_addr = free_addr();
    let mut wrong_args = args.to_vec();
    wrong_args.extend(["--metrics-listen", metrics_addr.as_str()]);
    let wrong = Serve::start_with(
        &wrong_args,
        "info",
        None,
        public,
        &[("STREAMGUARD_REDIS_PASSWORD", "not-the-password")],
    );
    assert_eq!(wrong.webhook(2).await, (503, None), "fails closed");
    assert_eq!(wrong.webhook(3).await, (503, None), "and stays closed");
    let (status, metrics) = raw_get(&metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "streamguard_replay_store_errors_total{kind=\"error\"} 2",
        "streamguard_webhook_rejected_total{reason=\"replay_store_unavailable\"} 2",
        "streamguard_replay_store_latency_seconds_count{op=\"mint\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }

    for (i, serve) in [a, b, wrong].into_iter().enumerate() {
        let (code, logs) = serve.stop();
        assert_eq!(code, Some(0));
        let warned: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("the replay store fails"))
            .collect();
        if i == 2 {
            assert_eq!(warned.len(), 1, "the cause once per outage: {logs}");
            assert!(warned[0].contains("AuthenticationFailed"), "{}", warned[0]);
        } else {
            assert!(warned.is_empty(), "{logs}");
        }
        assert!(
            logs.contains(&format!("replay_store={store} (timeout 250 ms)")),
            "{logs}"
        );
        assert!(
            !logs.contains(PASSWORD),
            "the Redis password leaked: {logs}"
        );
        assert!(!logs.contains(&token), "the token leaked");
    }
}

/// `rediss://`: `serve` reaches a Redis that listens with TLS (its certificate from a test CA
/// named by `SSL_CERT_FILE`, the password in `STREAMGUARD_REDIS_PASSWORD`). A call streams; a
/// second process started afterwards refuses the spent token and the streamed call's webhook
/// (the record is in Redis, not in the first process). A process that does not trust Redis's
/// certificate mints nothing (503, empty body) and logs why, and a trusted one still serves the
/// next call. No password or token in any log.
#[cfg(unix)]
#[tokio::test]
async fn serve_uses_redis_over_tls_and_refuses_an_untrusted_certificate() {
    const PASSWORD: &str = "tls-redis-pass-91c2e7";
    let Some(redis) = RedisServer::start_tls(
        "serve_uses_redis_over_tls_and_refuses_an_untrusted_certificate",
        Some(PASSWORD),
    ) else {
        return;
    };
    let store = redis.tls_url();
    let (ca, other_ca) = (redis.ca_file(), redis.other_ca_file());
    let args = ["--echo", "--replay-store", store.as_str()];
    let public = Some("http://voice.example.com");
    let trusted = [
        ("STREAMGUARD_REDIS_PASSWORD", PASSWORD),
        ("SSL_CERT_FILE", ca.to_str().unwrap()),
    ];
    let untrusted = [
        ("STREAMGUARD_REDIS_PASSWORD", PASSWORD),
        ("SSL_CERT_FILE", other_ca.to_str().unwrap()),
    ];

    let a = Serve::start_with(&args, "debug", None, public, &trusted);
    let (status, token) = a.webhook(1).await;
    assert_eq!(status, 200);
    let token = token.unwrap();
    assert_eq!(a.stream(1, &token, 3).await, Some(1000), "the call streams");
    let (code, logs_a) = a.stop();
    assert_eq!(code, Some(0));
    assert!(
        logs_a.contains(&format!("replay_store={store} (timeout 250 ms)")),
        "{logs_a}"
    );

    let b = Serve::start_with(&args, "debug", None, public, &trusted);
    assert_eq!(
        b.stream(1, &token, 3).await,
        Some(1008),
        "spent, seen by a process that never saw it"
    );
    assert_eq!(b.webhook(1).await, (403, None), "the call has streamed");

    let c = Serve::start_with(&args, "debug", None, public, &untrusted);
    assert_eq!(
        c.webhook(2).await,
        (503, None),
        "an untrusted certificate fails closed"
    );
    let (status, token2) = b.webhook(2).await;
    assert_eq!(status, 200, "the trusted process serves the next call");
    let token2 = token2.unwrap();

    let (code_b, logs_b) = b.stop();
    let (code_c, logs_c) = c.stop();
    assert_eq!((code_b, code_c), (Some(0), Some(0)));
    assert!(
        logs_c.contains("replay_store_unavailable"),
        "the refusal's reason: {logs_c}"
    );
    let cause = logs_c
        .lines()
        .find(|l| l.contains("the replay store fails"))
        .unwrap_or_else(|| panic!("the store's failure is logged: {logs_c}"));
    assert!(
        cause.contains("WARN") && cause.contains("certificate"),
        "the operator is told the cause: {cause}"
    );
    for logs in [&logs_a, &logs_b, &logs_c] {
        assert!(!logs.contains(PASSWORD), "the Redis password leaked");
        assert!(
            !logs.contains(&token) && !logs.contains(&token2),
            "a token leaked"
        );
    }
}

/// The in-memory replay store warns the operator from 80 % full, once per percent reached,
/// and when full refuses new calls with the generic `503` and the precise reason, while the
/// webhooks below the mark warn nothing.
#[cfg(unix)]
#[tokio::test]
async fn the_replay_store_warns_from_80_percent_full_and_refuses_when_full() {
    let serve = Serve::start(&["--call-capacity", "5"], "info", None);
    for n in 1..=3 {
        assert_eq!(serve.webhook(n).await.0, 200);
    }
    // 4 of 5 is 80 %, 5 of 5 is 100 %: the warnings below name their record counts.
    assert_eq!(serve.webhook(4).await.0, 200);
    assert_eq!(serve.webhook(5).await.0, 200);
    assert_eq!(serve.webhook(6).await, (503, None), "full: fails closed");
    let (code, logs) = serve.stop();
    assert_eq!(code, Some(0));
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("% full:"))
        .collect();
    assert_eq!(warnings.len(), 2, "{logs}");
    assert!(warnings[0].contains("80% full") && warnings[0].contains("records=4"));
    assert!(warnings[1].contains("100% full") && warnings[1].contains("records=5"));
    assert!(
        logs.lines()
            .any(|l| l.contains("webhook refused") && l.contains("reason=\"call_records_full\"")),
        "{logs}"
    );
}

/// Accept failures: the descriptor limit of a running `serve` is lowered under what it holds
/// (`prlimit`), so `accept` fails with "too many open files" while clients connect. The
/// failures back off (5 ms doubling to 1 s: a few, not a spin), are counted in
/// `streamguard_accept_errors_total` and warned about once (at most every 5 s); with the
/// limit restored the server recovers by itself and the connections that waited in the
/// backlog are served.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn accept_failures_back_off_are_counted_and_recovered_from() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "prlimit (util-linux) is needed in CI"
        );
        eprintln!("SKIPPED: prlimit is not installed");
        return;
    }
    let metrics_addr = free_addr();
    let serve = Serve::start(&["--metrics-listen", &metrics_addr], "info", None);
    let pid = serve.pid().to_string();
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = |soft: &str| {
        let ok = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={soft}:")])
            .status()
            .unwrap()
            .success();
        assert!(ok, "prlimit --nofile={soft}:");
    };
    let soft_before = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .unwrap();
    // What the server holds now, and not one more.
    limit(&open_fds.to_string());
    let mut waiting = Vec::new();
    for _ in 0..3 {
        // The kernel completes the handshake (the backlog); `accept` fails.
        waiting.push(tokio::net::TcpStream::connect(&serve.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    limit(&soft_before);
    for mut tcp in waiting {
        tokio::io::AsyncWriteExt::write_all(
            &mut tcp,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = String::new();
        let read = tokio::io::AsyncReadExt::read_to_string(&mut tcp, &mut answer);
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "a waiting connection: {answer:?}"
        );
    }
    let (status, metrics) = raw_get(&metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("streamguard_accept_errors_total "))
        .unwrap()
        .parse()
        .unwrap();
    // 1.5 s of failures at 5, 10, 20 ... ms apart is about nine; a loop that spun would count
    // thousands.
    assert!((2..100).contains(&errors), "accept errors: {errors}");
    let (code, logs) = serve.stop();
    assert_eq!(code, Some(0));
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("accept failed; backing off"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(
        warnings[0].contains("Too many open files") || warnings[0].contains("os error 24"),
        "{}",
        warnings[0]
    );
}

#[test]
fn a_redis_url_with_a_password_is_refused_without_echoing_it() {
    let (code, _, err) = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            "https://v.example.com",
            "--replay-store",
            "redis://:hunter2hunter2@127.0.0.1:6379",
        ],
        &[
            ("TWILIO_AUTH_TOKEN", SERVE_AUTH),
            ("TWILIO_ACCOUNT_SID", SERVE_ACCOUNT),
            ("STREAMGUARD_TOKEN_KEY", SERVE_KEY),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("STREAMGUARD_REDIS_PASSWORD"), "{err}");
    assert!(!err.contains("hunter2hunter2"), "{err}");
}

/// Settings that cannot work are refused at start with a clear message; settings that work
/// but surprise start with a warning.
#[cfg(unix)]
#[tokio::test]
async fn serve_refuses_what_cannot_work_and_warns_about_surprises() {
    let env = [
        ("TWILIO_AUTH_TOKEN", SERVE_AUTH),
        ("TWILIO_ACCOUNT_SID", SERVE_ACCOUNT),
    ];
    let base = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--public-url",
        "https://v.example.com",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    let mut empty_key = env.to_vec();
    empty_key.push(("STREAMGUARD_TOKEN_KEY", ""));
    let (code, _, err) = run(&with(&[]), &empty_key);
    assert_ne!(code, 0);
    assert!(
        err.contains("STREAMGUARD_TOKEN_KEY: set but empty"),
        "{err}"
    );
    let mut keyed = env.to_vec();
    keyed.push(("STREAMGUARD_TOKEN_KEY", SERVE_KEY));
    for (args, words) in [
        (with(&["--token-ttl", "0"]), "--token-ttl"),
        (with(&["--call-memory", "5"]), "--call-memory"),
        (with(&["--streams-per-call", "0"]), "--streams-per-call"),
    ] {
        let (code, _, err) = run(&args, &keyed);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(words), "{args:?}: {err}");
    }
    let (code, _, err) = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            "voice.example.com",
        ],
        &keyed,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("--public-url: it must start with https://"),
        "{err}"
    );

    let serve = Serve::start(&["--upgrade-signature", "off"], "info", None);
    let (code, logs) = serve.stop();
    assert_eq!(code, Some(0));
    assert!(logs.contains("--upgrade-signature off"), "{logs}");
    assert!(
        logs.contains("error 31922"),
        "the http:// public URL is warned about: {logs}"
    );
}
