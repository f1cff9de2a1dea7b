//! One task per upgraded connection: reads frames, feeds them and the clock to the pure
//! [`Session`], and carries out its [`Output`].
//!
//! Each frame is handled to completion before the next is read. When the session asks for a
//! redemption, the task reserves a stream slot, asks the replay store, and reports the result
//! before it reads again, so a `media` frame that arrived in the same read as `start` is
//! delivered after the stream authenticated, never dropped and never treated as
//! unauthenticated. While pending, the connection also closes (1008, `pending_evicted`) when
//! the capacity counters pick it to make room for a newer one. Nothing is written to the peer
//! before authentication except a close frame. Writes go through a
//! separate writer task so that a peer that stops reading cannot stall the reader; the
//! handler's [`StreamHandle`] has a byte budget, and exhausting it closes the stream; the
//! application can also hang up through it, from any task.

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

use tungstenite::error::ProtocolError;

use super::Shared;
use super::capacity::{PendingPermit, StreamPermit};
use super::handler::{
    CloseRequest, MediaHandler, StartedStream, StreamEnd, StreamHandle, WriterCmd,
};
use super::metrics::StoreOp;
use crate::limits::{
    CLOSE_TIMEOUT, MAX_OUTBOUND_BUFFER_BYTES, WS_READ_BUFFER_BYTES, WS_WRITE_BUFFER_BYTES,
};
use crate::session::{
    AuthContext, CloseCode, Event, Output, RedeemFailure, Redemption, Session, UrlToken,
};
use crate::store::{self, RedeemError};
use crate::time::UnixTime;

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
    handle: StreamHandle,
    _slot: StreamPermit,
}

/// How the read loop ended: what to tell the handler, and the close frame to send (none when
/// the peer is gone or not reading).
type Ending = (StreamEnd, Option<CloseCode>);

/// Maps a WebSocket read to a session event.
fn event_of(read: &Option<Result<Message, tungstenite::Error>>) -> Option<Event<'_>> {
    Some(match read {
        None => Event::PeerClosed,
        Some(Ok(m)) => match m {
            Message::Text(t) => Event::Text(t.as_str()),
            Message::Binary(_) => Event::Binary,
            Message::Ping(_) | Message::Pong(_) => Event::Control,
            Message::Close(_) => Event::PeerClosed,
            Message::Frame(_) => return None,
        },
        Some(Err(e)) => match e {
            tungstenite::Error::Capacity(_) => Event::TooLarge,
            // The peer dropped the TCP connection without a close frame: how a call often
            // ends (a hang-up), not an attack.
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                Event::PeerClosed
            }
            tungstenite::Error::Utf8(_) | tungstenite::Error::Protocol(_) => Event::Malformed,
            _ => Event::PeerClosed,
        },
    })
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
        max_message_bytes: shared.config.max_message_bytes,
    };
    let mut session = Session::new(shared.clock.now(), shared.config.start_timeout, url_token);
    let mut pending = Some(permit);
    let mut app: Option<App> = None;
    let start_timer = tokio::time::sleep(shared.config.start_timeout);
    tokio::pin!(start_timer);

    let (end, close): Ending = loop {
        let evicted = async {
            match pending.as_mut() {
                Some(p) => p.evicted().await,
                None => std::future::pending().await,
            }
        };
        let app_handle = app.as_ref().map(|a| a.handle.clone());
        let app_close = async move {
            match app_handle {
                Some(h) => h.close_requested().await,
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            read = stream.next() => Some(read),
            () = &mut start_timer, if session.deadline().is_some() && !start_timer.is_elapsed() => None,
            () = evicted => {
                shared.metrics.stream_rejected(PENDING_EVICTED);
                tracing::warn!(peer = %peer.ip(), reason = PENDING_EVICTED, "stream closed: the oldest pending connection makes room for a new one");
                break (StreamEnd::PeerGone, Some(CloseCode::Policy));
            }
            request = app_close => match request {
                CloseRequest::HangUp => {
                    tracing::info!(peer = %peer.ip(), "stream closed: the application hung up");
                    break (StreamEnd::HungUp, Some(CloseCode::Normal));
                }
                CloseRequest::Backpressure => {
                    tracing::warn!(peer = %peer.ip(), reason = "backpressure", "stream closed: peer is not reading");
                    break (StreamEnd::Backpressure, None);
                }
                CloseRequest::ApplicationBehind => {
                    tracing::warn!(peer = %peer.ip(), reason = "application_behind", "stream closed: the application is not keeping up with its events");
                    break (StreamEnd::ApplicationBehind, Some(CloseCode::Internal));
                }
            },
            () = super::shutdown_requested(&mut shutdown) => break (StreamEnd::Shutdown, Some(CloseCode::GoingAway)),
        };
        let now = shared.clock.now();
        let event = match &read {
            None => Event::Tick,
            Some(read) => match event_of(read) {
                Some(e) => e,
                None => continue,
            },
        };
        let (next, mut output) = session.handle(event, now, &ctx);
        session = next;
        if let Output::Redeem(r) = output {
            // Nothing more is read until the store has answered: a frame that came with
            // `start` waits in the socket and is handled after the result.
            let slot = redeem(&shared, &mut pending, &r, now).await;
            let reported = slot.as_ref().map(|_| ()).map_err(|e| *e);
            let (next, out) = session.handle(Event::Redeemed(reported), shared.clock.now(), &ctx);
            session = next;
            output = out;
            if let (Output::Authenticated(info), Ok(slot)) = (&output, slot) {
                shared.metrics.stream_authenticated();
                tracing::info!(peer = %peer.ip(), call_sid = %info.call_sid, stream_sid = %info.stream_sid, "stream authenticated");
                let handle = StreamHandle::new(info.stream_sid, tx.clone());
                let started = StartedStream {
                    info: info.clone(),
                    webhook: shared.calls.take(&info.call_sid, shared.clock.now()),
                };
                let mut handler = shared.handlers.create(&started);
                handler.on_start(&started, &handle);
                app = Some(App {
                    handler,
                    handle,
                    _slot: slot,
                });
            }
        }
        match output {
            Output::Nothing | Output::Authenticated(_) | Output::Redeem(_) => {}
            Output::Media(frame) => {
                if let Some(a) = app.as_mut() {
                    shared.metrics.media_frame();
                    a.handler.on_media(&frame, &a.handle);
                }
            }
            Output::Dtmf(frame) => {
                if let Some(a) = app.as_mut() {
                    a.handler.on_dtmf(&frame, &a.handle);
                }
            }
            Output::Mark(frame) => {
                if let Some(a) = app.as_mut() {
                    a.handler.on_mark(&frame, &a.handle);
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
        if app.as_ref().is_some_and(|a| !a.handle.is_open()) {
            // A send from the handler just now hit the budget (or it hung up): the close
            // request branch above handles it on the next turn.
            continue;
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

    // Release the pending slot now, not after the closing handshake.
    drop(pending);
    if let Some(mut a) = app.take() {
        a.handle.mark_closed();
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

/// The metric and log label of a pending connection closed to admit a newer one.
const PENDING_EVICTED: &str = "pending_evicted";

/// Carries out a redemption: a stream slot first (so a stream refused for `--max-streams`
/// keeps its token unspent), then the store.
async fn redeem(
    shared: &Shared,
    pending: &mut Option<PendingPermit>,
    r: &Redemption,
    now: UnixTime,
) -> Result<StreamPermit, RedeemFailure> {
    let slot = match pending.take().map(PendingPermit::into_stream) {
        Some(Ok(slot)) => slot,
        Some(Err(permit)) => {
            *pending = Some(permit);
            return Err(RedeemFailure::StreamsFull);
        }
        // A session asks for one redemption at most; without a permit there is no slot.
        None => return Err(RedeemFailure::StreamsFull),
    };
    let started = std::time::Instant::now();
    let result = store::redeem(
        &*shared.store,
        &shared.store_key,
        &r.account_sid,
        &r.call_sid,
        &r.claims,
        now,
    )
    .await;
    let store_error = match result {
        Err(RedeemError::Store(e)) => Some(e),
        _ => None,
    };
    shared
        .metrics
        .store_call(StoreOp::Redeem, started.elapsed(), store_error);
    result.map(|()| slot).map_err(RedeemFailure::Store)
}
