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

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use streamguard::kit::simulator::{Signing, StreamPlan, Twilio, parse_twiml, strip_query};
use streamguard::secret::AuthToken;
use streamguard::sid::{AccountSid, CallSid, StreamSid};

const BIN: &str = env!("CARGO_BIN_EXE_streamguard");

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

#[test]
fn demo_passes() {
    let (code, out, err) = run(&["demo"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("FAIL"), "{out}");
    for scenario in [
        "unsigned webhook",
        "stream without a token",
        "another call's token",
        "replayed token",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(scenario))
            .unwrap_or_else(|| panic!("{scenario} missing:\n{out}"));
        assert!(line.trim_end().ends_with("ok"), "{line}");
    }
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
/// (auth token, token key, stream token, signature) appears anywhere in the logs.
#[cfg(unix)]
#[tokio::test]
async fn serve_logs_no_secret_even_at_trace_and_exits_0_on_sigterm() {
    const AUTH: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";
    const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
    const KEY: &str = "c3RyZWFtZ3VhcmQtdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE=";
    // Find a free port, then let the server take it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &addr,
            "--public-url",
            &format!("http://{addr}"),
            "--echo",
        ])
        .env("TWILIO_AUTH_TOKEN", AUTH)
        .env("TWILIO_ACCOUNT_SID", ACCOUNT)
        .env("STREAMGUARD_TOKEN_KEY", KEY)
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Wait for "listening".
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server printed nothing");
        if line.contains("streamguard listening") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "server did not start");
    }

    let twilio = Twilio {
        connect_to: addr.parse().unwrap(),
        auth_token: AuthToken::new(AUTH).unwrap(),
        account_sid: AccountSid::parse(ACCOUNT).unwrap(),
    };
    let call = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
    let reply = twilio
        .post_webhook(
            &format!("http://{addr}/voice/webhook"),
            &twilio.voice_params(&call),
            Signing::Valid,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let twiml = parse_twiml(&reply.body).unwrap();
    let token = twiml.parameter("token").unwrap().to_owned();
    let stream = StreamSid::parse("MZ0123456789abcdef0123456789abcdef").unwrap();
    let plan = StreamPlan::call(
        strip_query(&twiml.url),
        twilio.account_sid,
        call,
        stream,
        twiml.parameters.clone(),
        5,
    );
    let o = twilio.stream(&plan).await.unwrap();
    assert_eq!(o.close_code, Some(1000));
    assert_eq!(o.echoed_payloads().len(), 5);
    // A refused attempt with the spent token, so the rejection path logs too.
    let o = twilio.stream(&plan).await.unwrap();
    assert_eq!(o.close_code, Some(1008));
    let webhook_sig = streamguard::signature::compute_signature(
        &twilio.auth_token,
        &format!("http://{addr}/voice/webhook"),
        &twilio.voice_params(&call),
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    let logs = reader.join().unwrap();
    assert!(
        logs.contains("stream authenticated"),
        "the logs are real: {logs}"
    );
    assert!(
        logs.contains("token_replayed"),
        "the precise reason is logged: {logs}"
    );
    for (what, secret) in [
        ("auth token", AUTH),
        ("token key", KEY),
        ("stream token", token.as_str()),
        ("webhook signature", webhook_sig.as_str()),
    ] {
        assert!(!logs.contains(secret), "{what} leaked into the logs");
    }
}
