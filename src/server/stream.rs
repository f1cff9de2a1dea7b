//! One task per upgraded connection: reads frames, feeds them and the clock to the pure
//! [`Session`], and carries out its [`Output`].
//!
//! Each frame is handled to completion before the next is read. When the session asks for a
//! redemption, the task reserves a stream slot, asks the replay store, and reports the result
//! before it reads again, so a `media` frame that arrived in the same read as `start` is
//! delivered after the stream authenticated, never dropped and never treated as
//! unauthenticated. While pending, the connection also closes (1008, `pending_evicted`) when
//! the capacity counters pick it to make room for a newer one. Nothing is written to the peer
//! before authentication except a close frame.
//!
//! After authentication one poll drives both directions of the socket: what the
//! application queued through its [`StreamHandle`] (from any task) is written whenever the
//! socket takes it, and frames are read meanwhile, so a peer that stops reading cannot stall
//! the reader; the handle has a byte budget, and exhausting it closes the stream. No second
//! task, no channel: an idle stream costs its socket buffers and little else.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig};

use super::Shared;
use super::capacity::{PendingPermit, StreamPermit};
use super::handler::{CloseRequest, MediaHandler, StartedStream, StreamEnd, StreamHandle};
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

/// The application side of an authenticated stream.
struct App {
    handler: Box<dyn MediaHandler>,
    handle: StreamHandle,
    _slot: StreamPermit,
}

/// How the connection ended: what to tell the handler, and the close frame to send (none
/// when the peer is gone or not reading).
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
    let mut ws = WebSocketStream::from_raw_socket(
        io,
        Role::Server,
        Some(ws_config(shared.config.max_message_bytes)),
    )
    .await;
    let mut shutdown_rx = shared.shutdown.clone();
    let shutdown = super::shutdown_requested(&mut shutdown_rx);
    tokio::pin!(shutdown);
    let ctx = AuthContext {
        keys: &shared.config.keys,
        expected_account: &shared.config.account_sid,
        max_message_bytes: shared.config.max_message_bytes,
    };
    let session = Session::new(shared.clock.now(), shared.config.start_timeout, url_token);
    let conn = Conn {
        shared: &shared,
        ctx: &ctx,
        peer,
    };
    let (end, close, app) = match conn
        .await_start(&mut ws, session, permit, shutdown.as_mut())
        .await
    {
        Ok((session, mut app)) => {
            let (end, close) = conn
                .stream(&mut ws, session, &mut app, shutdown.as_mut())
                .await;
            (end, close, Some(app))
        }
        Err((end, close)) => (end, close, None),
    };
    // The handler hears the end and the stream slot is released now, not after the closing
    // handshake; the handle stays for what the application queued.
    let queued = app.map(|mut a| {
        a.handle.mark_closed();
        a.handler.on_end(end);
        a.handle
    });
    let Some(code) = close else {
        // The peer is gone or not reading: no close handshake.
        return;
    };
    let frame = CloseFrame {
        code: code.as_u16().into(),
        reason: code.wire_reason().into(),
    };
    // What the application queued is written first, then the close frame.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if let Some(handle) = &queued {
            while let Some(text) = handle.next_queued() {
                ws.feed(Message::text(text)).await?;
            }
        }
        ws.send(Message::Close(Some(frame))).await
    })
    .await;
    // Give the peer a moment to answer the close, then drop the connection.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
}

/// What one connection's phases share.
#[derive(Clone, Copy)]
struct Conn<'s> {
    shared: &'s Shared,
    ctx: &'s AuthContext<'s>,
    peer: SocketAddr,
}

/// One turn of an authenticated stream's socket.
enum Io {
    /// A frame read (or the end of the stream).
    Read(Option<Result<Message, tungstenite::Error>>),
    /// The application asked to close.
    CloseRequested(CloseRequest),
    /// Writing failed: the peer is gone.
    WriteFailed,
}

/// Writes what the application queued as far as the socket takes it, flushing after a
/// batch. Ready when nothing more can be done now (all written, or the socket is full and
/// will wake the task); `Err` when the socket failed. A message is taken off the queue only
/// once the socket is ready for it, so nothing is lost when this poll is not resumed.
fn poll_write(
    cx: &mut Context<'_>,
    ws: &mut Ws,
    out: &StreamHandle,
    unflushed: &mut bool,
) -> Result<(), tungstenite::Error> {
    while out.has_queued() {
        match ws.poll_ready_unpin(cx) {
            Poll::Ready(r) => r?,
            Poll::Pending => return Ok(()),
        }
        let Some(text) = out.next_queued() else { break };
        let bytes = text.len();
        ws.start_send_unpin(Message::text(text))?;
        out.written(bytes);
        *unflushed = true;
    }
    if *unflushed && let Poll::Ready(r) = ws.poll_flush_unpin(cx) {
        r?;
        *unflushed = false;
    }
    Ok(())
}

impl Conn<'_> {
    /// Until the stream authenticates (`Ok`: the session streams and the application's
    /// handler exists) or the connection ends (`Err`).
    async fn await_start<S: Future<Output = ()>>(
        self,
        ws: &mut Ws,
        mut session: Session,
        permit: PendingPermit,
        mut shutdown: Pin<&mut S>,
    ) -> Result<(Session, App), Ending> {
        let Self { shared, ctx, peer } = self;
        let mut pending = Some(permit);
        let start_timer = tokio::time::sleep(shared.config.start_timeout);
        tokio::pin!(start_timer);
        loop {
            let evicted = async {
                match pending.as_mut() {
                    Some(p) => p.evicted().await,
                    None => std::future::pending().await,
                }
            };
            let read = tokio::select! {
                biased;
                () = &mut shutdown => return Err((StreamEnd::Shutdown, Some(CloseCode::GoingAway))),
                () = evicted => {
                    shared.metrics.stream_rejected(PENDING_EVICTED);
                    tracing::warn!(peer = %peer.ip(), reason = PENDING_EVICTED, "stream closed: the oldest pending connection makes room for a new one");
                    return Err((StreamEnd::PeerGone, Some(CloseCode::Policy)));
                }
                () = &mut start_timer, if session.deadline().is_some() && !start_timer.is_elapsed() => None,
                read = ws.next() => Some(read),
            };
            let now = shared.clock.now();
            let event = match &read {
                None => Event::Tick,
                Some(read) => match event_of(read) {
                    Some(e) => e,
                    None => continue,
                },
            };
            let (next, mut output) = session.handle(event, now, ctx);
            session = next;
            if let Output::Redeem(r) = output {
                // Nothing more is read until the store has answered: a frame that came with
                // `start` waits in the socket and is handled after the result.
                let slot = redeem(shared, &mut pending, &r, now).await;
                let reported = slot.as_ref().map(|_| ()).map_err(|e| *e);
                let (next, out) =
                    session.handle(Event::Redeemed(reported), shared.clock.now(), ctx);
                session = next;
                match (out, slot) {
                    (Output::Authenticated(info), Ok(slot)) => {
                        shared.metrics.stream_authenticated();
                        tracing::info!(peer = %peer.ip(), call_sid = %info.call_sid, stream_sid = %info.stream_sid, "stream authenticated");
                        let handle = StreamHandle::new(info.stream_sid);
                        let webhook = shared.calls.take(&info.call_sid, shared.clock.now());
                        let started = StartedStream {
                            info: *info,
                            webhook,
                        };
                        let mut handler = shared.handlers.create(&started);
                        handler.on_start(&started, &handle);
                        let app = App {
                            handler,
                            handle,
                            _slot: slot,
                        };
                        return Ok((session, app));
                    }
                    (other, _) => output = other,
                }
            }
            match output {
                // Before authentication the session hands the application nothing.
                Output::Nothing
                | Output::Authenticated(_)
                | Output::Redeem(_)
                | Output::Media(_)
                | Output::Dtmf(_)
                | Output::Mark(_) => {}
                Output::Stop(_) => return Err((StreamEnd::Stopped, Some(CloseCode::Normal))),
                Output::Close(reason) => {
                    shared.metrics.stream_rejected(reason.as_str());
                    tracing::warn!(peer = %peer.ip(), authenticated = false, reason = reason.as_str(), "stream closed: {reason}");
                    return Err((StreamEnd::Violation(reason), Some(reason.close_code())));
                }
            }
            if session.is_closed() {
                return Err((StreamEnd::PeerGone, None));
            }
            if let Some(deadline) = session.deadline()
                && start_timer.is_elapsed()
            {
                // The timer fired but, by the session's clock, the deadline has not quite
                // come: wait for the rest.
                let rest = deadline
                    .saturating_since(now)
                    .max(std::time::Duration::from_millis(1));
                if let Some(at) = tokio::time::Instant::now().checked_add(rest) {
                    start_timer.as_mut().reset(at);
                }
            }
        }
    }

    /// An authenticated stream, to its end: frames to the handler, the handler's messages to
    /// the peer.
    async fn stream<S: Future<Output = ()>>(
        self,
        ws: &mut Ws,
        mut session: Session,
        app: &mut App,
        mut shutdown: Pin<&mut S>,
    ) -> Ending {
        let Self { shared, ctx, peer } = self;
        // A streaming session has no deadline and does not use the time: it is read once
        // here, not per frame.
        let now = shared.clock.now();
        let mut unflushed = false;
        loop {
            // The socket first: a frame already buffered is handled without polling the
            // shutdown signal. That is still polled whenever the socket has nothing, and at
            // least every 128 socket reads (tokio's cooperative budget makes the socket
            // report "not ready" then).
            let io = tokio::select! {
                biased;
                io = std::future::poll_fn(|cx| {
                    app.handle.register(cx.waker());
                    if let Some(request) = app.handle.close_request() {
                        return Poll::Ready(Io::CloseRequested(request));
                    }
                    if poll_write(cx, ws, &app.handle, &mut unflushed).is_err() {
                        return Poll::Ready(Io::WriteFailed);
                    }
                    ws.poll_next_unpin(cx).map(Io::Read)
                }) => io,
                () = &mut shutdown => return (StreamEnd::Shutdown, Some(CloseCode::GoingAway)),
            };
            let read = match io {
                Io::Read(read) => read,
                Io::WriteFailed => return (StreamEnd::PeerGone, None),
                Io::CloseRequested(CloseRequest::HangUp) => {
                    tracing::info!(peer = %peer.ip(), "stream closed: the application hung up");
                    return (StreamEnd::HungUp, Some(CloseCode::Normal));
                }
                Io::CloseRequested(CloseRequest::Backpressure) => {
                    tracing::warn!(peer = %peer.ip(), reason = "backpressure", "stream closed: peer is not reading");
                    return (StreamEnd::Backpressure, None);
                }
                Io::CloseRequested(CloseRequest::ApplicationBehind) => {
                    tracing::warn!(peer = %peer.ip(), reason = "application_behind", "stream closed: the application is not keeping up with its events");
                    return (StreamEnd::ApplicationBehind, Some(CloseCode::Internal));
                }
            };
            let Some(event) = event_of(&read) else {
                continue;
            };
            let (next, output) = session.handle(event, now, ctx);
            session = next;
            match output {
                Output::Nothing | Output::Authenticated(_) | Output::Redeem(_) => {}
                Output::Media(frame) => {
                    shared.metrics.media_frame();
                    app.handler.on_media(&frame, &app.handle);
                }
                Output::Dtmf(frame) => app.handler.on_dtmf(&frame, &app.handle),
                Output::Mark(frame) => app.handler.on_mark(&frame, &app.handle),
                Output::Stop(_) => return (StreamEnd::Stopped, Some(CloseCode::Normal)),
                Output::Close(reason) => {
                    shared.metrics.stream_rejected(reason.as_str());
                    tracing::warn!(peer = %peer.ip(), authenticated = true, reason = reason.as_str(), "stream closed: {reason}");
                    return (StreamEnd::Violation(reason), Some(reason.close_code()));
                }
            }
            if session.is_closed() {
                return (StreamEnd::PeerGone, None);
            }
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
