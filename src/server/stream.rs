//! One task per upgraded connection: reads frames, feeds them and the clock to the pure
//! [`Session`], and carries out its [`Output`].
//!
//! Each frame is handled to completion, synchronously, before the next is read: the state
//! becomes `Streaming` inside `Session::handle`, so a `media` frame that arrived in the same
//! read as `start` is delivered, never dropped and never treated as unauthenticated. Nothing
//! is written to the peer before authentication except a close frame. Writes go through a
//! separate writer task so that a peer that stops reading cannot stall the reader; the
//! handler's [`Outbox`] has a byte budget, and exhausting it closes the stream.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig};

use super::Shared;
use super::capacity::{PendingPermit, StreamPermit};
use super::media::{MediaHandler, Outbox, StreamEnd, WriterCmd};
use crate::limits::{
    CLOSE_TIMEOUT, MAX_OUTBOUND_BUFFER_BYTES, WS_READ_BUFFER_BYTES, WS_WRITE_BUFFER_BYTES,
};
use crate::session::{AuthContext, CloseCode, Event, Output, Reason, Session, UrlToken};
use crate::upgrade::UpgradeReject;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// The WebSocket limits: small buffers (Twilio's frames are small), the configured maximum
/// message and frame size.
pub(crate) fn ws_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_OUTBOUND_BUFFER_BYTES.saturating_add(WS_WRITE_BUFFER_BYTES))
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

async fn writer(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    mut rx: mpsc::UnboundedReceiver<WriterCmd>,
) {
    while let Some(cmd) = rx.recv().await {
        let msg = match cmd {
            WriterCmd::Text(q) => Message::text(q.text),
            WriterCmd::Close(code) => {
                let frame = CloseFrame {
                    code: code.as_u16().into(),
                    reason: code.wire_reason().into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                return;
            }
        };
        // Batch what is queued; flush when the queue is empty.
        let sent = if rx.is_empty() {
            sink.send(msg).await
        } else {
            sink.feed(msg).await
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The application side of an authenticated stream.
struct App {
    handler: Box<dyn MediaHandler>,
    outbox: Outbox,
    _slot: StreamPermit,
}

/// Runs one upgraded connection to its end.
pub(crate) async fn run(
    io: TokioIo<Upgraded>,
    shared: Arc<Shared>,
    url_token: UrlToken,
    permit: PendingPermit,
    peer: SocketAddr,
) {
    let ws = WebSocketStream::from_raw_socket(
        io,
        Role::Server,
        Some(ws_config(shared.config.max_message_bytes)),
    )
    .await;
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::unbounded_channel::<WriterCmd>();
    let mut writer_task = tokio::spawn(writer(sink, rx));
    let mut shutdown = shared.shutdown.clone();

    let ctx = AuthContext {
        keys: &shared.config.keys,
        expected_account: &shared.config.account_sid,
        replay: &shared.replay,
        max_message_bytes: shared.config.max_message_bytes,
    };
    let mut session = Session::new(shared.clock.now(), shared.config.start_timeout, url_token);
    let mut pending = Some(permit);
    let mut app: Option<App> = None;
    let start_timer = tokio::time::sleep(shared.config.start_timeout);
    tokio::pin!(start_timer);

    let end = loop {
        let msg = tokio::select! {
            msg = stream.next() => TimerOr::Msg(msg),
            () = &mut start_timer, if session.deadline().is_some() && !start_timer.is_elapsed() => TimerOr::Timer,
            () = super::shutdown_requested(&mut shutdown) => break (StreamEnd::Shutdown, Some(CloseCode::GoingAway)),
        };
        let now = shared.clock.now();
        let text;
        let event = match msg {
            TimerOr::Timer => Event::Tick,
            TimerOr::Msg(None) => Event::PeerClosed,
            TimerOr::Msg(Some(Ok(m))) => match m {
                Message::Text(t) => {
                    text = t;
                    Event::Text(text.as_str())
                }
                Message::Binary(_) => Event::Binary,
                Message::Ping(_) | Message::Pong(_) => Event::Control,
                Message::Close(_) => Event::PeerClosed,
                Message::Frame(_) => continue,
            },
            TimerOr::Msg(Some(Err(e))) => match e {
                tungstenite::Error::Capacity(_) => Event::TooLarge,
                tungstenite::Error::Utf8(_) | tungstenite::Error::Protocol(_) => Event::Malformed,
                _ => Event::PeerClosed,
            },
        };
        let (next, output) = session.handle(event, now, &ctx);
        session = next;
        match output {
            Output::Nothing => {}
            Output::Authenticated(info) => {
                let Some(permit) = pending.take() else {
                    // A session authenticates at most once; a second `Authenticated` would be a
                    // bug in the state machine. Refuse the stream rather than continue.
                    break (
                        StreamEnd::Violation(Reason::SecondStart),
                        Some(CloseCode::Internal),
                    );
                };
                let slot = match permit.into_stream() {
                    Ok(slot) => slot,
                    Err(permit) => {
                        pending = Some(permit);
                        // The same label as the `503` before the upgrade.
                        let reason = UpgradeReject::StreamsFull.as_str();
                        shared.metrics.stream_rejected(reason);
                        tracing::warn!(peer = %peer.ip(), call_sid = %info.call_sid, reason, "stream closed: --max-streams reached");
                        break (StreamEnd::PeerGone, Some(CloseCode::Policy));
                    }
                };
                shared.metrics.stream_authenticated();
                tracing::info!(peer = %peer.ip(), call_sid = %info.call_sid, stream_sid = %info.stream_sid, "stream authenticated");
                let mut outbox = Outbox::new(info.stream_sid, tx.clone());
                let mut handler = shared.handlers.create(&info);
                handler.on_start(&info, &mut outbox);
                app = Some(App {
                    handler,
                    outbox,
                    _slot: slot,
                });
            }
            Output::Media(frame) => {
                if let Some(a) = app.as_mut() {
                    shared.metrics.media_frame();
                    a.handler.on_media(&frame, &mut a.outbox);
                }
            }
            Output::Dtmf(frame) => {
                if let Some(a) = app.as_mut() {
                    a.handler.on_dtmf(&frame, &mut a.outbox);
                }
            }
            Output::Mark(frame) => {
                if let Some(a) = app.as_mut() {
                    a.handler.on_mark(&frame, &mut a.outbox);
                }
            }
            Output::Stop(_) => break (StreamEnd::Stopped, Some(CloseCode::Normal)),
            Output::Close(reason) => {
                shared.metrics.stream_rejected(reason.as_str());
                tracing::warn!(
                    peer = %peer.ip(),
                    authenticated = app.is_some(),
                    reason = reason.as_str(),
                    "stream closed: {reason}"
                );
                break (StreamEnd::Violation(reason), Some(reason.close_code()));
            }
        }
        if app.as_ref().is_some_and(|a| a.outbox.overflowed()) {
            tracing::warn!(peer = %peer.ip(), reason = "backpressure", "stream closed: peer is not reading");
            break (StreamEnd::Backpressure, None);
        }
        if session.is_closed() {
            break (StreamEnd::PeerGone, None);
        }
        if let Some(deadline) = session.deadline() {
            // The timer fired but, by the session's clock, the deadline has not quite come:
            // wait for the rest.
            if start_timer.is_elapsed() {
                let rest = deadline
                    .saturating_since(now)
                    .max(std::time::Duration::from_millis(1));
                if let Some(at) = tokio::time::Instant::now().checked_add(rest) {
                    start_timer.as_mut().reset(at);
                }
            }
        }
    };
    let (end, close) = end;

    // Release the pending slot now, not after the closing handshake.
    drop(pending);
    if let Some(mut a) = app.take() {
        a.handler.on_end(end);
    }
    match close {
        Some(code) => {
            let _ = tx.send(WriterCmd::Close(code));
            drop(tx);
            if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer_task)
                .await
                .is_err()
            {
                writer_task.abort();
            }
            // Give the peer a moment to answer the close, then drop the connection.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                while let Some(Ok(m)) = stream.next().await {
                    if m.is_close() {
                        break;
                    }
                }
            })
            .await;
        }
        None => {
            // The peer is gone or not reading: no close handshake to wait for.
            writer_task.abort();
        }
    }
}

/// A frame from the peer, or the start timer firing.
enum TimerOr {
    Msg(Option<Result<Message, tungstenite::Error>>),
    Timer,
}
