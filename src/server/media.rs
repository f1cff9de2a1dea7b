//! What an application embedding streamguard implements to receive authenticated audio.
//!
//! The server creates one [`MediaHandler`] per stream, through a [`HandlerFactory`], only
//! after the stream has authenticated; no frame of an unauthenticated connection ever reaches
//! one. Calls are made in frame order, synchronously, on the connection's task: a handler
//! that has slow work to do should hand it to a channel or task of its own.
//!
//! Outbound messages go through an [`Outbox`] with a byte budget
//! ([`MAX_OUTBOUND_BUFFER_BYTES`]): a peer that stops reading makes [`Outbox::send`] fail and
//! the connection is closed, instead of buffering without limit.

use std::fmt;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::limits::MAX_OUTBOUND_BUFFER_BYTES;
use crate::session::{Reason, StreamInfo};
use crate::sid::StreamSid;
use crate::wire::frames::{
    DtmfFrame, MarkBody, MarkFrame, MediaFrame, Outbound, OutboundMedia, Short,
};

/// Why a stream ended, as told to [`MediaHandler::on_end`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEnd {
    /// Twilio sent `stop`.
    Stopped,
    /// The peer closed or the connection broke.
    PeerGone,
    /// The server closed it for a protocol violation.
    Violation(Reason),
    /// The peer stopped reading what the handler sent.
    Backpressure,
    /// The server is shutting down.
    Shutdown,
}

/// The outbound queue is over its byte budget: the peer is not reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backpressure;

impl fmt::Display for Backpressure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("outbound buffer full: the peer is not reading")
    }
}

impl std::error::Error for Backpressure {}

/// A message for the writer task, holding its share of the byte budget until written.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) text: String,
    pub(crate) _budget: OwnedSemaphorePermit,
}

/// What the writer task of a connection is asked to do, in order.
#[derive(Debug)]
pub(crate) enum WriterCmd {
    /// A text message from the handler.
    Text(Queued),
    /// A close frame; the writer stops after it.
    Close(crate::session::CloseCode),
}

/// Sends messages to the peer of one authenticated stream.
#[derive(Debug)]
pub struct Outbox {
    stream_sid: StreamSid,
    tx: mpsc::UnboundedSender<WriterCmd>,
    budget: Arc<Semaphore>,
    overflowed: bool,
}

impl Outbox {
    pub(crate) fn new(stream_sid: StreamSid, tx: mpsc::UnboundedSender<WriterCmd>) -> Self {
        Self {
            stream_sid,
            tx,
            budget: Arc::new(Semaphore::new(MAX_OUTBOUND_BUFFER_BYTES)),
            overflowed: false,
        }
    }

    /// The stream this outbox writes to.
    pub fn stream_sid(&self) -> StreamSid {
        self.stream_sid
    }

    /// Queues a message. Fails, and marks the stream for closing, when the peer is not
    /// reading (more than [`MAX_OUTBOUND_BUFFER_BYTES`] queued) or the connection is gone.
    pub fn send(&mut self, msg: &Outbound) -> Result<(), Backpressure> {
        if self.overflowed {
            return Err(Backpressure);
        }
        let text = msg.to_json();
        let permit = u32::try_from(text.len())
            .ok()
            .and_then(|n| Arc::clone(&self.budget).try_acquire_many_owned(n).ok());
        let Some(permit) = permit else {
            self.overflowed = true;
            return Err(Backpressure);
        };
        if self
            .tx
            .send(WriterCmd::Text(Queued {
                text,
                _budget: permit,
            }))
            .is_err()
        {
            self.overflowed = true;
            return Err(Backpressure);
        }
        Ok(())
    }

    /// Queues audio (base64 mu-law) to play to the caller.
    pub fn media(&mut self, payload: String) -> Result<(), Backpressure> {
        let msg = Outbound::Media {
            stream_sid: self.stream_sid,
            media: OutboundMedia { payload },
        };
        self.send(&msg)
    }

    /// Queues a mark; Twilio answers with a `mark` event once the audio before it has played.
    pub fn mark(&mut self, name: Short) -> Result<(), Backpressure> {
        let msg = Outbound::Mark {
            stream_sid: self.stream_sid,
            mark: MarkBody { name },
        };
        self.send(&msg)
    }

    /// Whether a send has failed for backpressure (the server then closes the stream).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

/// Receives the frames of one authenticated stream, in order.
pub trait MediaHandler: Send {
    /// The stream has authenticated.
    fn on_start(&mut self, _info: &StreamInfo, _out: &mut Outbox) {}
    /// One chunk of audio.
    fn on_media(&mut self, frame: &MediaFrame, out: &mut Outbox);
    /// A key press.
    fn on_dtmf(&mut self, _frame: &DtmfFrame, _out: &mut Outbox) {}
    /// A mark the server sent earlier has been played.
    fn on_mark(&mut self, _frame: &MarkFrame, _out: &mut Outbox) {}
    /// The stream has ended; called exactly once.
    fn on_end(&mut self, _end: StreamEnd) {}
}

/// Makes the handler of each authenticated stream.
pub trait HandlerFactory: Send + Sync + 'static {
    /// A handler for the stream described by `info`.
    fn create(&self, info: &StreamInfo) -> Box<dyn MediaHandler>;
}

impl<F> HandlerFactory for F
where
    F: Fn(&StreamInfo) -> Box<dyn MediaHandler> + Send + Sync + 'static,
{
    fn create(&self, info: &StreamInfo) -> Box<dyn MediaHandler> {
        self(info)
    }
}

/// Drops audio (the binary's default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl MediaHandler for Discard {
    fn on_media(&mut self, _frame: &MediaFrame, _out: &mut Outbox) {}
}

impl HandlerFactory for Discard {
    fn create(&self, _info: &StreamInfo) -> Box<dyn MediaHandler> {
        Box::new(Discard)
    }
}

/// Sends each inbound payload back as outbound `media` (`--echo`, loopback testing).
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl MediaHandler for Echo {
    fn on_media(&mut self, frame: &MediaFrame, out: &mut Outbox) {
        // A failure marks the outbox overflowed; the server closes the stream.
        let _ = out.media(frame.media.payload.clone());
    }
}

impl HandlerFactory for Echo {
    fn create(&self, _info: &StreamInfo) -> Box<dyn MediaHandler> {
        Box::new(Echo)
    }
}
