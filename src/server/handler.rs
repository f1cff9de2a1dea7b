//! What an application embedding streamguard implements to receive authenticated audio, and
//! the handle it sends audio back with.
//!
//! The server creates one [`MediaHandler`] per stream, through a [`HandlerFactory`], only
//! after the stream has authenticated; no frame of an unauthenticated connection ever reaches
//! one. Calls are made in frame order, synchronously, on the connection's task: a handler
//! that has slow work to do hands it to a task of its own (that is the primary form, and the
//! cheapest: no copy, no queue). [`channel`] is a thin adapter over it for applications that
//! prefer an async stream of events per call.
//!
//! Outbound messages go through a [`StreamHandle`]: owned, cloneable, `Send + Sync`, usable
//! from any task (a TTS or LLM task pushing audio), with a byte budget
//! ([`MAX_OUTBOUND_BUFFER_BYTES`]): a peer that stops reading makes a send fail with
//! [`SendError::Backpressure`] and the stream is closed, instead of buffering without limit.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use base64::Engine as _;
use futures_util::task::AtomicWaker;
use tokio::sync::mpsc;

use crate::limits::{MAX_OUTBOUND_BUFFER_BYTES, MAX_SHORT_FIELD_BYTES};
use crate::session::{Reason, StreamInfo};
use crate::sid::StreamSid;
use crate::webhook::Verified;
use crate::wire::frames::{
    DtmfFrame, MarkBody, MarkFrame, MediaFrame, Outbound, OutboundMedia, Short,
};

/// Why a stream ended, as told to [`MediaHandler::on_end`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEnd {
    /// Twilio sent `stop`.
    Stopped,
    /// The peer closed or the connection broke (a hang-up often closes without a close frame).
    PeerGone,
    /// The server closed it for a protocol violation.
    Violation(Reason),
    /// The peer stopped reading what the application sent.
    Backpressure,
    /// The application hung up ([`StreamHandle::hang_up`]): closed with 1000.
    HungUp,
    /// The application did not keep up with the events of [`channel`]: closed with 1011.
    ApplicationBehind,
    /// The server is shutting down.
    Shutdown,
}

/// Why a message could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The outbound budget is spent: the peer is not reading. The stream is being closed.
    Backpressure,
    /// The stream has ended (or is ending).
    Closed,
    /// A mark name longer than the protocol allows.
    TooLong,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Backpressure => "outbound buffer full: the peer is not reading",
            Self::Closed => "the stream has ended",
            Self::TooLong => "mark name too long",
        })
    }
}

impl std::error::Error for SendError {}

/// Why the application (or its handle) asks the connection to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseRequest {
    HangUp,
    Backpressure,
    ApplicationBehind,
}

const OPEN: u8 = 0;
const HANG_UP: u8 = 1;
const BACKPRESSURE: u8 = 2;
const BEHIND: u8 = 3;
const CLOSED: u8 = 4;

/// What a stream's handles share with its connection task: the queue of messages not yet
/// written (allocated on the first message: an idle stream costs nothing here), its size in
/// bytes against the budget, the stream's state and the connection task's waker.
struct Inner {
    stream_sid: StreamSid,
    queue: Mutex<VecDeque<String>>,
    queued_bytes: AtomicUsize,
    state: AtomicU8,
    connection: AtomicWaker,
}

/// Sends messages to the peer of one authenticated stream, from any task. Cloning is cheap
/// (one `Arc`); every clone addresses the same stream.
///
/// Keep a clone in a task of your own (a TTS or LLM task) and push audio as it is made. A
/// send fails once the stream has ended, or with [`SendError::Backpressure`] when the peer has
/// stopped reading (the stream is then being closed: stop producing).
///
/// ```
/// use streamguard::server::{MediaHandler, SendError, StartedStream, StreamHandle};
/// use streamguard::wire::frames::{DtmfFrame, MarkFrame, MediaFrame};
///
/// struct Greeter;
///
/// impl MediaHandler for Greeter {
///     fn on_start(&mut self, _stream: &StartedStream, out: &StreamHandle) {
///         let out = out.clone();
///         tokio::spawn(async move {
///             for chunk in [[0xFF_u8; 160]; 50] {
///                 // 20 ms of 8 kHz mu-law (silence here) per chunk.
///                 match out.media(&chunk) {
///                     Ok(()) => {}
///                     Err(SendError::Backpressure) => return, // the peer is not reading
///                     Err(_) => return,                       // the stream has ended
///                 }
///             }
///             // Twilio sends the mark back (`on_mark`) once the audio before it has played.
///             let _ = out.mark("greeting-done");
///         });
///     }
///
///     fn on_media(&mut self, _frame: &MediaFrame<'_>, _out: &StreamHandle) {}
///
///     fn on_dtmf(&mut self, _frame: &DtmfFrame, out: &StreamHandle) {
///         let _ = out.clear(); // a key press skips the greeting: drop Twilio's buffered audio
///     }
///
///     fn on_mark(&mut self, frame: &MarkFrame, out: &StreamHandle) {
///         if frame.mark.name.as_str() == "greeting-done" {
///             out.hang_up(); // what is queued is written, then the stream closes with 1000
///         }
///     }
/// }
/// ```
#[derive(Clone)]
pub struct StreamHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamHandle")
            .field("stream_sid", &self.inner.stream_sid)
            .field("open", &self.is_open())
            .finish()
    }
}

impl StreamHandle {
    pub(crate) fn new(stream_sid: StreamSid) -> Self {
        Self {
            inner: Arc::new(Inner {
                stream_sid,
                queue: Mutex::new(VecDeque::new()),
                queued_bytes: AtomicUsize::new(0),
                state: AtomicU8::new(OPEN),
                connection: AtomicWaker::new(),
            }),
        }
    }

    /// The stream this handle writes to.
    pub fn stream_sid(&self) -> StreamSid {
        self.inner.stream_sid
    }

    /// Whether the stream still takes messages.
    pub fn is_open(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == OPEN
    }

    /// Asks the connection to close (the first request wins).
    fn request_close(&self, code: u8) {
        if self
            .inner
            .state
            .compare_exchange(OPEN, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.inner.connection.wake();
        }
    }

    /// The connection task's side: wake `waker` when a message is queued or a close is
    /// requested.
    pub(crate) fn register(&self, waker: &Waker) {
        self.inner.connection.register(waker);
    }

    /// Whether the application asked to close, and why.
    pub(crate) fn close_request(&self) -> Option<CloseRequest> {
        match self.inner.state.load(Ordering::Acquire) {
            HANG_UP => Some(CloseRequest::HangUp),
            BACKPRESSURE => Some(CloseRequest::Backpressure),
            BEHIND => Some(CloseRequest::ApplicationBehind),
            _ => None,
        }
    }

    /// Whether messages may be waiting (a cheap check before [`Self::next_queued`]).
    pub(crate) fn has_queued(&self) -> bool {
        self.inner.queued_bytes.load(Ordering::Acquire) > 0
    }

    /// The oldest message not yet written. Its bytes stay counted against the budget until
    /// [`Self::written`].
    pub(crate) fn next_queued(&self) -> Option<String> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
    }

    /// `bytes` of what [`Self::next_queued`] gave have been handed to the socket.
    pub(crate) fn written(&self, bytes: usize) {
        self.inner.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// The stream has ended: later sends fail with [`SendError::Closed`].
    pub(crate) fn mark_closed(&self) {
        self.inner.state.store(CLOSED, Ordering::Release);
    }

    /// Asks the connection to close because the application fell behind.
    pub(crate) fn application_behind(&self) {
        self.request_close(BEHIND);
    }

    /// Queues a message. Fails when the peer is not reading (more than
    /// [`MAX_OUTBOUND_BUFFER_BYTES`] queued: the stream is then closed) or the stream has
    /// ended.
    pub fn send(&self, msg: &Outbound<'_>) -> Result<(), SendError> {
        self.send_text(msg.to_json())
    }

    fn send_text(&self, text: String) -> Result<(), SendError> {
        match self.inner.state.load(Ordering::Acquire) {
            OPEN => {}
            BACKPRESSURE => return Err(SendError::Backpressure),
            _ => return Err(SendError::Closed),
        }
        let n = text.len();
        let reserved =
            self.inner
                .queued_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                    q.checked_add(n).filter(|t| *t <= MAX_OUTBOUND_BUFFER_BYTES)
                });
        if reserved.is_err() {
            self.request_close(BACKPRESSURE);
            return Err(SendError::Backpressure);
        }
        self.inner
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(text);
        self.inner.connection.wake();
        Ok(())
    }

    /// Queues audio to play to the caller: 8 kHz mono mu-law bytes (base64-encoded here).
    pub fn media(&self, mulaw: &[u8]) -> Result<(), SendError> {
        let payload = base64::engine::general_purpose::STANDARD.encode(mulaw);
        self.media_base64(&payload)
    }

    /// Queues audio already in base64 (an inbound payload echoed back, say: no re-encoding).
    pub fn media_base64(&self, payload: &str) -> Result<(), SendError> {
        self.send(&Outbound::Media {
            stream_sid: self.inner.stream_sid,
            media: OutboundMedia {
                payload: payload.into(),
            },
        })
    }

    /// Queues a mark: Twilio answers with a `mark` event once the audio before it has played.
    pub fn mark(&self, name: &str) -> Result<(), SendError> {
        if name.len() > MAX_SHORT_FIELD_BYTES {
            return Err(SendError::TooLong);
        }
        let name = Short::new(name).ok_or(SendError::TooLong)?;
        self.send(&Outbound::Mark {
            stream_sid: self.inner.stream_sid,
            mark: MarkBody { name },
        })
    }

    /// Asks Twilio to drop the audio it has buffered (barge-in).
    pub fn clear(&self) -> Result<(), SendError> {
        self.send(&Outbound::Clear {
            stream_sid: self.inner.stream_sid,
        })
    }

    /// Ends the stream: what is queued is written, then a close frame (1000). With
    /// `<Connect><Stream>` Twilio then continues with the TwiML after `<Connect>` (or ends the
    /// call).
    pub fn hang_up(&self) {
        self.request_close(HANG_UP);
    }
}

/// An authenticated stream, as the application first sees it.
#[derive(Clone, Debug)]
pub struct StartedStream {
    /// The stream, from its `start` message (the token removed from the parameters).
    pub info: StreamInfo,
    /// The verified voice webhook of this call (its `From`, `To` and every other field), when
    /// this instance answered it: with several instances behind a load balancer the stream
    /// may land on another one (then `None`: pass what the handler needs through the TwiML
    /// hook's `<Parameter>`s, which arrive in `info.custom_parameters` anywhere).
    pub webhook: Option<Arc<Verified>>,
}

/// Receives the frames of one authenticated stream, in order.
///
/// Each call runs on the connection's task, in frame order: keep it quick and hand slow work
/// to a task of your own (with a clone of the [`StreamHandle`]). Give the server a factory
/// ([`HandlerFactory`], which a closure is) that makes one handler per authenticated stream.
///
/// ```
/// use streamguard::server::{HandlerFactory, MediaHandler, StartedStream, StreamEnd, StreamHandle};
/// use streamguard::wire::frames::MediaFrame;
///
/// /// Counts the audio of one call.
/// struct Meter {
///     caller: String,
///     frames: u64,
/// }
///
/// impl MediaHandler for Meter {
///     fn on_media(&mut self, _frame: &MediaFrame<'_>, _out: &StreamHandle) {
///         self.frames += 1;
///     }
///     fn on_end(&mut self, end: StreamEnd) {
///         tracing::info!(caller = %self.caller, frames = self.frames, ?end, "call ended");
///     }
/// }
///
/// // A `<Parameter>` of the TwiML hook arrives in `custom_parameters`, on any instance.
/// let factory = |s: &StartedStream| -> Box<dyn MediaHandler> {
///     let caller = s.info.custom_parameters.get("caller").unwrap_or("unknown");
///     Box::new(Meter { caller: caller.to_owned(), frames: 0 })
/// };
/// // Server::builder(config).handlers(factory)
/// # fn takes(_: impl HandlerFactory) {}
/// # takes(factory);
/// ```
pub trait MediaHandler: Send {
    /// The stream has authenticated.
    fn on_start(&mut self, _stream: &StartedStream, _out: &StreamHandle) {}
    /// One chunk of audio.
    fn on_media(&mut self, frame: &MediaFrame<'_>, out: &StreamHandle);
    /// A key press.
    fn on_dtmf(&mut self, _frame: &DtmfFrame, _out: &StreamHandle) {}
    /// A mark the application sent earlier has been played.
    fn on_mark(&mut self, _frame: &MarkFrame, _out: &StreamHandle) {}
    /// The stream has ended; called exactly once.
    fn on_end(&mut self, _end: StreamEnd) {}
}

/// Makes the handler of each authenticated stream.
pub trait HandlerFactory: Send + Sync + 'static {
    /// A handler for `stream`.
    fn create(&self, stream: &StartedStream) -> Box<dyn MediaHandler>;
}

impl<F> HandlerFactory for F
where
    F: Fn(&StartedStream) -> Box<dyn MediaHandler> + Send + Sync + 'static,
{
    fn create(&self, stream: &StartedStream) -> Box<dyn MediaHandler> {
        self(stream)
    }
}

/// Drops audio (the binary's default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl MediaHandler for Discard {
    fn on_media(&mut self, _frame: &MediaFrame<'_>, _out: &StreamHandle) {}
}

impl HandlerFactory for Discard {
    fn create(&self, _stream: &StartedStream) -> Box<dyn MediaHandler> {
        Box::new(Discard)
    }
}

/// Sends each inbound payload back as outbound `media` (`--echo`, loopback testing).
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl MediaHandler for Echo {
    fn on_media(&mut self, frame: &MediaFrame<'_>, out: &StreamHandle) {
        // A failure closes the stream (backpressure) or means it has ended.
        let _ = out.media_base64(frame.payload());
    }
}

impl HandlerFactory for Echo {
    fn create(&self, _stream: &StartedStream) -> Box<dyn MediaHandler> {
        Box::new(Echo)
    }
}

/// One event of a stream delivered through [`channel`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// Audio.
    Media(MediaFrame<'static>),
    /// A key press.
    Dtmf(DtmfFrame),
    /// A mark played.
    Mark(MarkFrame),
    /// The stream ended; the last event.
    End(StreamEnd),
}

/// A new authenticated stream delivered through [`channel`]: who it is, how to talk back,
/// and its events.
#[derive(Debug)]
pub struct IncomingStream {
    /// The stream.
    pub stream: StartedStream,
    /// Sends audio, marks, clears; hangs up.
    pub handle: StreamHandle,
    /// The stream's events, in order, ending with [`StreamEvent::End`].
    pub events: StreamEvents,
}

/// The events of one stream, in order, ending with [`StreamEvent::End`]: `recv().await`
/// them, or use this as a [`futures_util::Stream`] (`StreamExt::next`, combinators).
#[derive(Debug)]
pub struct StreamEvents {
    rx: mpsc::Receiver<StreamEvent>,
}

impl StreamEvents {
    /// The next event; `None` after [`StreamEvent::End`].
    pub async fn recv(&mut self) -> Option<StreamEvent> {
        self.rx.recv().await
    }
}

impl futures_util::Stream for StreamEvents {
    type Item = StreamEvent;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<StreamEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// Every authenticated stream of a [`channel`], as it authenticates: `recv().await` them, or
/// use this as a [`futures_util::Stream`] of [`IncomingStream`]s.
#[derive(Debug)]
pub struct IncomingStreams {
    rx: mpsc::Receiver<IncomingStream>,
}

impl IncomingStreams {
    /// The next authenticated stream; `None` once the server has stopped.
    pub async fn recv(&mut self) -> Option<IncomingStream> {
        self.rx.recv().await
    }
}

impl futures_util::Stream for IncomingStreams {
    type Item = IncomingStream;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<IncomingStream>> {
        self.rx.poll_recv(cx)
    }
}

/// The [`HandlerFactory`] half of [`channel`].
#[derive(Debug, Clone)]
pub struct ChannelHandlers {
    streams: mpsc::Sender<IncomingStream>,
    per_stream: usize,
}

impl HandlerFactory for ChannelHandlers {
    fn create(&self, stream: &StartedStream) -> Box<dyn MediaHandler> {
        Box::new(ChannelHandler {
            streams: self.streams.clone(),
            per_stream: self.per_stream,
            stream: Some(stream.clone()),
            events: None,
        })
    }
}

/// The handler [`ChannelHandlers`] makes: at `on_start` (when the handle exists) it hands the
/// stream to the application, then forwards every event.
struct ChannelHandler {
    streams: mpsc::Sender<IncomingStream>,
    per_stream: usize,
    stream: Option<StartedStream>,
    events: Option<mpsc::Sender<StreamEvent>>,
}

impl ChannelHandler {
    fn push(&mut self, event: StreamEvent, out: &StreamHandle) {
        if let Some(tx) = &self.events
            && tx.try_send(event).is_err()
        {
            // The application is not keeping up (or dropped the receiver): close the
            // stream rather than drop a frame or buffer without limit.
            self.events = None;
            out.application_behind();
        }
    }
}

impl MediaHandler for ChannelHandler {
    fn on_start(&mut self, _stream: &StartedStream, out: &StreamHandle) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let (tx, rx) = mpsc::channel(self.per_stream.max(1));
        let incoming = IncomingStream {
            stream,
            handle: out.clone(),
            events: StreamEvents { rx },
        };
        if self.streams.try_send(incoming).is_ok() {
            self.events = Some(tx);
        } else {
            out.application_behind();
        }
    }
    fn on_media(&mut self, frame: &MediaFrame<'_>, out: &StreamHandle) {
        self.push(StreamEvent::Media(frame.clone().into_owned()), out);
    }
    fn on_dtmf(&mut self, frame: &DtmfFrame, out: &StreamHandle) {
        self.push(StreamEvent::Dtmf(frame.clone()), out);
    }
    fn on_mark(&mut self, frame: &MarkFrame, out: &StreamHandle) {
        self.push(StreamEvent::Mark(frame.clone()), out);
    }
    fn on_end(&mut self, end: StreamEnd) {
        if let Some(tx) = self.events.take() {
            let _ = tx.try_send(StreamEvent::End(end));
        }
    }
}

/// The async form, a thin adapter over the callback trait ([`MediaHandler`], the primary
/// form): every authenticated stream arrives on the returned [`IncomingStreams`] (a
/// `futures_util::Stream`) as an [`IncomingStream`] with its own [`StreamEvents`] (also a
/// `Stream`) of up to `per_stream` queued events. An application that
/// falls behind (a full queue) has the stream closed with 1011 ([`StreamEnd::ApplicationBehind`])
/// rather than frames dropped or buffered without limit. Pass the first half to the server
/// builder's `handlers`.
///
/// ```
/// let (handlers, mut streams) = streamguard::server::handler::channel(64);
/// # drop(handlers);
/// # async {
/// while let Some(mut s) = streams.recv().await {
///     tokio::spawn(async move {
///         while let Some(event) = s.events.recv().await {
///             if let streamguard::server::StreamEvent::Media(m) = event {
///                 let _ = s.handle.media_base64(m.payload());
///             }
///         }
///     });
/// }
/// # };
/// ```
pub fn channel(per_stream: usize) -> (ChannelHandlers, IncomingStreams) {
    let (tx, rx) = mpsc::channel(crate::limits::DEFAULT_MAX_STREAMS);
    (
        ChannelHandlers {
            streams: tx,
            per_stream,
        },
        IncomingStreams { rx },
    )
}
