//! The embedding API over real sockets: the builder with a TwiML hook (a `<Say>`, the
//! application's `<Parameter>`s and `statusCallback`, the token always streamguard's), the
//! verified webhook's fields at the handler's `start`, the `StreamHandle` used from another
//! task (audio as bytes, marks, clear, hang-up, backpressure), the async `channel` form, and
//! `Config::from_env` through the `from_env` example.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use streamguard::kit::simulator::{
    Connection, Signing, Twilio, TwimlStream, Upgrade, connected_message, media_message,
    parse_twiml, start_message, strip_query,
};
use streamguard::secret::{AuthToken, KeySet, TokenKey};
use streamguard::server::handler;
use streamguard::server::{
    Config, MediaHandler, PublicUrl, SendError, Server, ServerHandle, StartedStream, StreamEnd,
    StreamEvent, StreamHandle,
};
use streamguard::sid::{AccountSid, CallSid, StreamSid};
use streamguard::webhook::{CallTwiml, Verified};
use streamguard::wire::frames::MediaFrame;
use streamguard::wire::twiml::{Method, Say};

const AUTH: &str = "0f0e0d0c0b0a09080706050403020100";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

struct Running {
    handle: ServerHandle,
    twilio: Twilio,
    public: String,
}

async fn start(build: impl FnOnce(Config) -> Server) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let public = format!("http://{addr}");
    let config = Config::new(
        PublicUrl::parse(&public).unwrap(),
        AuthToken::new(AUTH).unwrap(),
        AccountSid::parse(ACCOUNT).unwrap(),
        KeySet::single(TokenKey::from_bytes(&[3; 32]).unwrap()),
    );
    let handle = build(config).serve(listener).await.unwrap();
    Running {
        handle,
        twilio: Twilio {
            connect_to: addr,
            auth_token: AuthToken::new(AUTH).unwrap(),
            account_sid: AccountSid::parse(ACCOUNT).unwrap(),
        },
        public,
    }
}

impl Running {
    /// Call `n` as Twilio makes it: the signed webhook, the upgrade to its TwiML's stream URL
    /// (query dropped), `connected` and `start` with the TwiML's parameters.
    async fn started_call(&self, n: u64) -> Box<Connection> {
        let url = format!("{}/voice/webhook", self.public);
        let reply = self
            .twilio
            .post_webhook(&url, &self.twilio.voice_params(&call(n)), Signing::Valid)
            .await
            .unwrap();
        self.open_and_start(&parse_twiml(&reply.body).unwrap(), n)
            .await
    }

    /// The upgrade to `twiml`'s stream URL (query dropped), `connected` and `start` of call `n`
    /// with the TwiML's parameters.
    async fn open_and_start(&self, twiml: &TwimlStream, n: u64) -> Box<Connection> {
        let Upgrade::Open(mut conn) = self
            .twilio
            .open(strip_query(&twiml.url), Signing::Valid)
            .await
            .unwrap()
        else {
            panic!("upgrade refused")
        };
        conn.send_text(connected_message()).await;
        conn.send_text(start_message(
            &self.twilio.account_sid,
            &call(n),
            &stream(n),
            &twiml.parameters,
        ))
        .await;
        conn
    }
}

fn call(n: u64) -> CallSid {
    CallSid::parse(&format!("CA{n:032x}")).unwrap()
}

fn stream(n: u64) -> StreamSid {
    StreamSid::parse(&format!("MZ{n:032x}")).unwrap()
}

fn hook(call: &Verified) -> CallTwiml {
    CallTwiml {
        say: Some(Say {
            text: "Hello & <welcome>".to_owned(),
            voice: Some("Polly.Amy".to_owned()),
            language: Some("en-GB".to_owned()),
            loop_count: None,
        }),
        status_callback: Some("https://app.example.com/status".to_owned()),
        status_callback_method: Some(Method::Post),
        parameters: vec![("caller".to_owned(), call.param("From").unwrap().to_owned())],
        ..CallTwiml::default()
    }
}

/// What the handler saw, per event.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Records the start (webhook fields, custom parameters), and pushes audio from another task
/// through a clone of its handle.
struct Pusher {
    seen: Seen,
}

impl MediaHandler for Pusher {
    fn on_start(&mut self, s: &StartedStream, out: &StreamHandle) {
        let from = s
            .webhook
            .as_ref()
            .and_then(|w| w.param("From"))
            .unwrap_or("-");
        let to = s
            .webhook
            .as_ref()
            .and_then(|w| w.param("To"))
            .unwrap_or("-");
        let custom: Vec<String> = s
            .info
            .custom_parameters
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        self.seen.push(format!(
            "start from={from} to={to} custom={}",
            custom.join(",")
        ));
        let handle = out.clone();
        tokio::spawn(async move {
            // Audio as mu-law bytes, a mark, a clear, from a task of the application's own.
            handle.media(&[0xff; 160]).unwrap();
            handle.mark("greeting").unwrap();
            handle.clear().unwrap();
            assert_eq!(handle.mark(&"m".repeat(300)), Err(SendError::TooLong));
        });
    }
    fn on_media(&mut self, frame: &MediaFrame<'_>, _out: &StreamHandle) {
        self.seen
            .push(format!("media {}", frame.chunk().unwrap_or("-")));
    }
    fn on_end(&mut self, end: StreamEnd) {
        self.seen.push(format!("end {end:?}"));
    }
}

#[tokio::test]
async fn the_twiml_hook_shapes_the_answer_and_the_handler_knows_the_call() {
    let seen = Seen::default();
    let handler_seen = seen.clone();
    let r = start(move |config| {
        Server::builder(config)
            .handlers(move |_: &StartedStream| -> Box<dyn MediaHandler> {
                Box::new(Pusher {
                    seen: handler_seen.clone(),
                })
            })
            .twiml(hook)
            .build()
            .unwrap()
    })
    .await;
    let url = format!("{}/voice/webhook", r.public);
    let reply = r
        .twilio
        .post_webhook(&url, &r.twilio.voice_params(&call(1)), Signing::Valid)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let twiml = parse_twiml(&reply.body).unwrap();
    let token = twiml.parameter("token").unwrap().to_owned();
    // The exact bytes, written out here: the application's parts, then streamguard's token.
    let stream_url = format!("{}/voice/stream", r.public.replacen("http", "ws", 1));
    assert_eq!(
        reply.body,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say language="en-GB" voice="Polly.Amy">Hello &amp; &lt;welcome&gt;</Say><Connect><Stream statusCallback="https://app.example.com/status" statusCallbackMethod="POST" url="{stream_url}"><Parameter name="caller" value="+14155550199" /><Parameter name="token" value="{token}" /></Stream></Connect></Response>"#
        )
    );

    let mut conn = r.open_and_start(&twiml, 1).await;
    conn.send_text(media_message(&stream(1), 0)).await;
    conn.wait_messages(3, Duration::from_secs(5)).await;
    let kinds: Vec<String> = conn
        .received()
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).unwrap();
            v["event"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds, ["media", "mark", "clear"]);
    assert_eq!(
        conn.echoed_payloads(),
        [base64::engine::general_purpose::STANDARD.encode([0xffu8; 160])]
    );
    conn.close().await;
    for _ in 0..200 {
        if seen.all().iter().any(|s| s.starts_with("end")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all = seen.all();
    assert_eq!(
        all[0],
        "start from=+14155550199 to=+14155550100 custom=caller=+14155550199"
    );
    assert_eq!(all[1], "media 1");
    assert!(all[2].starts_with("end PeerGone"), "{all:?}");
    r.handle.shutdown().await;
}

/// A hook that adds its own `token` parameter gets no TwiML: 500, empty, and no token minted
/// under its name.
#[tokio::test]
async fn a_hook_cannot_add_its_own_token_parameter() {
    let r = start(|config| {
        Server::builder(config)
            .twiml(|_: &Verified| CallTwiml {
                parameters: vec![("token".to_owned(), "mine".to_owned())],
                ..CallTwiml::default()
            })
            .build()
            .unwrap()
    })
    .await;
    let url = format!("{}/voice/webhook", r.public);
    let reply = r
        .twilio
        .post_webhook(&url, &r.twilio.voice_params(&call(1)), Signing::Valid)
        .await
        .unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (500, ""));
    assert_eq!(r.handle.metrics().webhook_rejected_for("internal"), 1);
    r.handle.shutdown().await;
}

/// `hang_up()` from another task: what was queued is written, then close 1000; the handler
/// hears `HungUp`. A handle kept after the stream ended refuses sends.
#[tokio::test]
async fn hang_up_from_another_task_closes_with_1000() {
    let kept: Arc<Mutex<Option<StreamHandle>>> = Arc::default();
    let ends = Seen::default();
    struct HangsUp {
        kept: Arc<Mutex<Option<StreamHandle>>>,
        ends: Seen,
    }
    impl MediaHandler for HangsUp {
        fn on_start(&mut self, _s: &StartedStream, out: &StreamHandle) {
            *self.kept.lock().unwrap() = Some(out.clone());
            let h = out.clone();
            tokio::spawn(async move {
                h.media(&[1; 160]).unwrap();
                h.hang_up();
            });
        }
        fn on_media(&mut self, _f: &MediaFrame<'_>, _o: &StreamHandle) {}
        fn on_end(&mut self, end: StreamEnd) {
            self.ends.push(format!("{end:?}"));
        }
    }
    let (k, e) = (kept.clone(), ends.clone());
    let r = start(move |config| {
        Server::builder(config)
            .handlers(move |_: &StartedStream| -> Box<dyn MediaHandler> {
                Box::new(HangsUp {
                    kept: k.clone(),
                    ends: e.clone(),
                })
            })
            .build()
            .unwrap()
    })
    .await;
    let mut conn = r.started_call(2).await;
    let end = conn.wait_end(Duration::from_secs(5)).await;
    assert_eq!(end, Some(streamguard::kit::simulator::Ended::Close(1000)));
    assert_eq!(
        conn.echoed_payloads().len(),
        1,
        "queued audio written first"
    );
    for _ in 0..200 {
        if !ends.all().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ends.all(), ["HungUp"]);
    let stale = kept.lock().unwrap().clone().unwrap();
    assert!(!stale.is_open());
    assert_eq!(stale.media(&[0; 160]), Err(SendError::Closed));
    r.handle.shutdown().await;
}

/// Audio pushed from the application's own task to a peer that has stopped reading: the
/// push itself fails with `SendError::Backpressure` once the 1 MiB outbound budget is full
/// (the caller sees it; nothing is buffered without limit), later pushes fail too, and the
/// stream ends with `Backpressure`.
#[tokio::test]
async fn pushing_audio_to_a_peer_that_stops_reading_fails_with_backpressure() {
    #[derive(Clone, Default)]
    struct Outcome(Arc<Mutex<Option<(usize, SendError, SendError)>>>);
    struct Pusher {
        outcome: Outcome,
        ends: Seen,
    }
    impl MediaHandler for Pusher {
        fn on_start(&mut self, _s: &StartedStream, out: &StreamHandle) {
            let (h, outcome) = (out.clone(), self.outcome.clone());
            tokio::spawn(async move {
                let mut pushed = 0usize;
                let first = loop {
                    match h.media(&[0x7f; 160]) {
                        Ok(()) => pushed += 1,
                        Err(e) => break e,
                    }
                    if pushed.is_multiple_of(64) {
                        // Let the writer run: what stalls it must be the peer, not this loop.
                        tokio::task::yield_now().await;
                    }
                    assert!(pushed < 1_000_000, "no backpressure after 1,000,000 pushes");
                };
                let next = h.media(&[0x7f; 160]).unwrap_err();
                *outcome.0.lock().unwrap() = Some((pushed, first, next));
            });
        }
        fn on_media(&mut self, _f: &MediaFrame<'_>, _o: &StreamHandle) {}
        fn on_end(&mut self, end: StreamEnd) {
            self.ends.push(format!("{end:?}"));
        }
    }
    let (outcome, ends) = (Outcome::default(), Seen::default());
    let (o, e) = (outcome.clone(), ends.clone());
    let r = start(move |config| {
        Server::builder(config)
            .handlers(move |_: &StartedStream| -> Box<dyn MediaHandler> {
                Box::new(Pusher {
                    outcome: o.clone(),
                    ends: e.clone(),
                })
            })
            .build()
            .unwrap()
    })
    .await;
    let conn = r.started_call(3).await;
    // The client reads nothing from here on.
    let mut seen = None;
    for _ in 0..500 {
        seen = *outcome.0.lock().unwrap();
        if seen.is_some() && !ends.all().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (pushed, first, next) = seen.expect("the pushing task saw an error");
    assert_eq!(first, SendError::Backpressure, "after {pushed} pushes");
    assert!(
        matches!(next, SendError::Backpressure | SendError::Closed),
        "{next:?}"
    );
    // Each push is a ~250-byte message: the budget (1 MiB) and the socket buffers, no more.
    assert!(pushed > 1_000, "{pushed} pushes: the budget is 1 MiB");
    assert_eq!(ends.all(), ["Backpressure"]);
    drop(conn);
    r.handle.shutdown().await;
}

/// The async form: every stream arrives with its events in order, ending with `End`, and the
/// application answers from its own task.
#[tokio::test]
async fn the_channel_form_delivers_every_event_in_order() {
    let (handlers, mut streams) = handler::channel(64);
    let r = start(move |config| Server::builder(config).handlers(handlers).build().unwrap()).await;
    let collected: Arc<Mutex<Vec<String>>> = Arc::default();
    let c = collected.clone();
    tokio::spawn(async move {
        while let Some(mut s) = streams.recv().await {
            let c = c.clone();
            tokio::spawn(async move {
                c.lock()
                    .unwrap()
                    .push(format!("stream {}", s.stream.info.call_sid));
                // The events as a `futures_util::Stream`.
                while let Some(ev) = futures_util::StreamExt::next(&mut s.events).await {
                    match ev {
                        StreamEvent::Media(m) => {
                            let _ = s.handle.media_base64(m.payload());
                            c.lock()
                                .unwrap()
                                .push(format!("media {}", m.chunk().unwrap()));
                        }
                        StreamEvent::End(e) => c.lock().unwrap().push(format!("end {e:?}")),
                        other => c.lock().unwrap().push(format!("{other:?}")),
                    }
                }
            });
        }
    });
    let mut conn = r.started_call(3).await;
    for i in 0..5 {
        conn.send_text(media_message(&stream(3), i)).await;
    }
    conn.wait_messages(5, Duration::from_secs(5)).await;
    assert_eq!(
        conn.echoed_payloads().len(),
        5,
        "answered from the application's task"
    );
    conn.send_text(streamguard::kit::simulator::stop_message(
        &r.twilio.account_sid,
        &call(3),
        &stream(3),
        7,
    ))
    .await;
    assert_eq!(
        conn.wait_end(Duration::from_secs(5)).await,
        Some(streamguard::kit::simulator::Ended::Close(1000))
    );
    for _ in 0..200 {
        if collected
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.starts_with("end"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = collected.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            format!("stream {}", call(3)),
            "media 1".to_owned(),
            "media 2".to_owned(),
            "media 3".to_owned(),
            "media 4".to_owned(),
            "media 5".to_owned(),
            "end Stopped".to_owned(),
        ]
    );
    r.handle.shutdown().await;
}

/// `Config::from_env` (through `Config::from_vars`, the same code on given pairs): the same
/// clear errors as `serve`, naming the variable and the rule, never a value; a full
/// environment gives the configuration `serve` would run with.
#[test]
fn config_from_env_names_what_is_wrong() {
    use streamguard::server::EnvError;
    use streamguard::server::config::Vars;
    let secrets = [("TWILIO_AUTH_TOKEN", AUTH), ("TWILIO_ACCOUNT_SID", ACCOUNT)];
    let err = |extra: &[(&'static str, &'static str)]| -> String {
        let mut all = secrets.to_vec();
        all.extend_from_slice(extra);
        Config::from_vars(&Vars::pairs(&all))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        Config::from_vars(&Vars::pairs(&secrets)).unwrap_err(),
        EnvError::Missing("STREAMGUARD_PUBLIC_URL")
    );
    let public = ("STREAMGUARD_PUBLIC_URL", "https://voice.example.com");
    for (extra, words, secret) in [
        (
            vec![("STREAMGUARD_PUBLIC_URL", "voice.example.com")],
            "--public-url: it must start with https://",
            "",
        ),
        (
            vec![public, ("STREAMGUARD_LISTEN", "nowhere")],
            "STREAMGUARD_LISTEN",
            "",
        ),
        (
            vec![public, ("STREAMGUARD_TOKEN_KEY", "c2hvcnQ=")],
            "shorter than 32 bytes",
            "c2hvcnQ=",
        ),
        (
            vec![public, ("STREAMGUARD_TOKEN_KEY", " ")],
            "STREAMGUARD_TOKEN_KEY: set but empty",
            "",
        ),
        (
            vec![
                public,
                (
                    "STREAMGUARD_REPLAY_STORE",
                    "redis://:pw-in-url@127.0.0.1:6379",
                ),
            ],
            "STREAMGUARD_REDIS_PASSWORD",
            "pw-in-url",
        ),
    ] {
        let e = err(&extra);
        assert!(e.contains(words), "{extra:?}: {e}");
        assert!(secret.is_empty() || !e.contains(secret), "{extra:?}: {e}");
        assert!(!e.contains(AUTH));
    }
    let missing_auth = Config::from_vars(&Vars::pairs(&[public])).unwrap_err();
    assert_eq!(missing_auth, EnvError::Missing("TWILIO_AUTH_TOKEN"));

    let key = "c3RyZWFtZ3VhcmQtdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE=";
    let mut full = secrets.to_vec();
    full.extend([
        public,
        ("STREAMGUARD_LISTEN", "0.0.0.0:9000"),
        ("STREAMGUARD_TOKEN_KEY", key),
        ("STREAMGUARD_REPLAY_STORE", "redis://redis.internal:6379/2"),
        ("STREAMGUARD_REDIS_PASSWORD", "from-the-env"),
    ]);
    let c = Config::from_vars(&Vars::pairs(&full)).unwrap();
    assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(c.webhook_url(), "https://voice.example.com/voice/webhook");
    assert_eq!(
        c.replay_store.describe(),
        "redis://redis.internal:6379/2 (timeout 250 ms)"
    );
    assert!(!format!("{c:?}").contains("from-the-env"));
    assert!(!format!("{c:?}").contains(key));
}
