//! The floor streamguard is measured against: a media-stream server the way most public
//! implementations are written, with no security at all. It accepts any WebSocket on any
//! path (no webhook, no signature, no token, no limits), parses every text frame as Twilio
//! JSON into a borrowed struct with serde_json (every field of every frame), and counts media
//! frames. Same transport as streamguard: hyper 1, tokio-tungstenite, 8 KiB read and write
//! buffers. Optional echo (`--echo`) sends each payload back, as `streamguard serve --echo`.
//!
//! ```sh
//! cargo run --release --example unauthenticated_baseline -- 127.0.0.1:9100 [--echo]
//! streamguard load --target http://127.0.0.1:9100 --public-url http://127.0.0.1:9100 \
//!     --unauthenticated --calls 100 --duration 10 --rate max
//! ```
//!
//! Never deploy this: it is the CWE-306 hole streamguard exists to close.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)] // a measuring tool

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::protocol::{Role, WebSocketConfig};

/// Every field Twilio sends, borrowed from the frame (`&str`: no copy, as a naive
/// implementation writes it; a string with a JSON escape fails to parse, which Twilio never
/// sends).
#[derive(Deserialize)]
#[allow(dead_code)] // parsed as the floor parses it, not all used
struct Frame<'a> {
    event: &'a str,
    #[serde(default, rename = "sequenceNumber")]
    sequence_number: Option<&'a str>,
    #[serde(default, rename = "streamSid")]
    stream_sid: Option<&'a str>,
    #[serde(default, borrow)]
    media: Option<Media<'a>>,
    #[serde(default, borrow)]
    start: Option<Start<'a>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Media<'a> {
    #[serde(default)]
    track: Option<&'a str>,
    #[serde(default)]
    chunk: Option<&'a str>,
    #[serde(default)]
    timestamp: Option<&'a str>,
    payload: &'a str,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Start<'a> {
    #[serde(default, rename = "accountSid")]
    account_sid: Option<&'a str>,
    #[serde(default, rename = "callSid")]
    call_sid: Option<&'a str>,
    #[serde(default, rename = "streamSid")]
    stream_sid: Option<&'a str>,
}

fn accept_key(req: &Request<Incoming>) -> Option<String> {
    let key = req.headers().get("sec-websocket-key")?;
    Some(tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

async fn stream(
    ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    media: Arc<AtomicU64>,
    echo: bool,
) {
    let (mut sink, mut read) = ws.split();
    let mut sid = String::new();
    while let Some(Ok(msg)) = read.next().await {
        let Message::Text(text) = msg else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
            continue;
        };
        if frame.event == "start"
            && let Some(s) = &frame.stream_sid
        {
            sid = s.to_string();
        }
        if frame.event == "media" {
            media.fetch_add(1, Ordering::Relaxed);
            if echo && let Some(m) = &frame.media {
                let out = format!(
                    r#"{{"event":"media","streamSid":"{sid}","media":{{"payload":"{}"}}}}"#,
                    m.payload
                );
                if sink.send(Message::text(out)).await.is_err() {
                    break;
                }
            }
        }
        if frame.event == "stop" {
            break;
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9100".to_owned());
    let echo = args.any(|a| a == "--echo");
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!(
        "unauthenticated baseline listening on {}",
        listener.local_addr().unwrap()
    );
    let media = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let media = Arc::clone(&media);
        tokio::spawn(async move {
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let media = Arc::clone(&media);
                async move {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    let Some(accept) = accept_key(&req) else {
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        return Ok::<_, std::convert::Infallible>(r);
                    };
                    let on_upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(up) = on_upgrade.await {
                            let config = WebSocketConfig::default()
                                .read_buffer_size(8 * 1024)
                                .write_buffer_size(8 * 1024);
                            let ws = WebSocketStream::from_raw_socket(
                                TokioIo::new(up),
                                Role::Server,
                                Some(config),
                            )
                            .await;
                            stream(ws, media, echo).await;
                        }
                    });
                    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    let h = r.headers_mut();
                    h.insert("connection", "Upgrade".parse().unwrap());
                    h.insert("upgrade", "websocket".parse().unwrap());
                    h.insert("sec-websocket-accept", accept.parse().unwrap());
                    Ok(r)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}
