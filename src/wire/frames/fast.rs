//! The fast path for the one message that comes fifty times a second: a `media` message in
//! the shape Twilio sends, recognised without a general JSON parser.
//!
//! [`media`] accepts only what it can answer exactly as the general parser
//! ([`super::parse_inbound_general`]) would: an object whose first member is
//! `"event":"media"`, then `sequenceNumber`, `streamSid` and `media` in any order, each at
//! most once; a `media` object of `track`, `chunk`, `timestamp` and `payload`, each at most
//! once; every value a string without escapes or control characters; JSON whitespace
//! between tokens. For anything else (an escape, an unknown field, a number, a repeated or
//! missing field, a bound exceeded, a bad SID) it returns `None` and the general parser
//! decides, so the answer is the general parser's for every input. `tests/frames.rs`
//! checks that claim as a property over generated messages, and the `start_frame` fuzz
//! target's oracle checks it for every input it tries.
//!
//! What it saves: serde's visitor machinery per field and its scan of every string for
//! escapes; here known keys are compared as bytes and each value's end is found with a
//! vector search.

use std::borrow::Cow;

use super::{MediaBody, MediaFrame};
use crate::limits::MAX_SHORT_FIELD_BYTES;
use crate::sid::StreamSid;

/// A position in the message.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        self.text.as_bytes().get(self.at..).unwrap_or_default()
    }

    fn advance(&mut self, n: usize) {
        self.at = self.at.saturating_add(n);
    }

    /// Skips JSON whitespace.
    fn skip_ws(&mut self) {
        let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        if self.rest().first().is_some_and(ws) {
            let n = self.rest().iter().take_while(|b| ws(b)).count();
            self.advance(n);
        }
    }

    /// The next token is the byte `b` (then consumed), or not (then nothing is consumed).
    fn eat(&mut self, b: u8) -> bool {
        self.skip_ws();
        let here = self.rest().first() == Some(&b);
        if here {
            self.advance(1);
        }
        here
    }

    /// `"name":` with `name` one of `names` (compared as bytes: a known name has no
    /// escape), or `None` for any other key.
    fn key<const N: usize>(&mut self, names: [&'static [u8]; N]) -> Option<usize> {
        self.skip_ws();
        let rest = self.rest().strip_prefix(b"\"")?;
        let (i, len) = names.iter().enumerate().find_map(|(i, name)| {
            let after = rest.strip_prefix(*name)?;
            (after.first() == Some(&b'"')).then_some((i, name.len()))
        })?;
        self.advance(len.saturating_add(2));
        self.eat(b':').then_some(i)
    }

    /// A string value without escapes or control characters: its contents, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let rest = self.rest();
        // The first quote or backslash (a vector search), then the lowest byte before it
        // (a minimum the compiler vectorises) for control characters.
        let len = memchr::memchr2(b'"', b'\\', rest)?;
        let plain = rest.get(len) == Some(&b'"')
            && rest.get(..len)?.iter().fold(u8::MAX, |m, &b| m.min(b)) >= 0x20;
        if !plain {
            return None;
        }
        let start = self.at;
        self.advance(len.saturating_add(1));
        // Both ends are ASCII quotes, so this slices on character boundaries.
        self.text.get(start..start.saturating_add(len))
    }

    /// A string of at most [`MAX_SHORT_FIELD_BYTES`] bytes.
    fn short(&mut self) -> Option<&'a str> {
        self.string().filter(|s| s.len() <= MAX_SHORT_FIELD_BYTES)
    }

    /// `,` then more members (`true`), or `}` (`false`).
    fn more(&mut self) -> Option<bool> {
        if self.eat(b',') {
            return Some(true);
        }
        self.eat(b'}').then_some(false)
    }

    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.rest().is_empty()
    }
}

/// Sets `slot` once; a second value is the general parser's to refuse.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// The `media` object.
fn body<'a>(c: &mut Cursor<'a>) -> Option<MediaBody<'a>> {
    if !c.eat(b'{') {
        return None;
    }
    let (mut track, mut chunk, mut timestamp, mut payload) = (None, None, None, None);
    loop {
        match c.key([b"track", b"chunk", b"timestamp", b"payload"])? {
            0 => once(&mut track, c.short()?)?,
            1 => once(&mut chunk, c.short()?)?,
            2 => once(&mut timestamp, c.short()?)?,
            _ => once(&mut payload, c.string()?)?,
        }
        if !c.more()? {
            break;
        }
    }
    Some(MediaBody {
        track: track.map(Cow::Borrowed),
        chunk: chunk.map(Cow::Borrowed),
        timestamp: timestamp.map(Cow::Borrowed),
        payload: Cow::Borrowed(payload?),
    })
}

/// `text` as a `media` message, when it has the common shape; `None` leaves it to the
/// general parser (which may accept it, or refuse it).
pub(super) fn media(text: &str) -> Option<MediaFrame<'_>> {
    let mut c = Cursor { text, at: 0 };
    if !c.eat(b'{') || c.key([b"event"])? != 0 || c.string()? != "media" {
        return None;
    }
    let (mut sequence_number, mut stream_sid, mut media) = (None, None, None);
    while c.more()? {
        match c.key([b"sequenceNumber", b"streamSid", b"media"])? {
            0 => once(&mut sequence_number, c.short()?)?,
            1 => once(&mut stream_sid, StreamSid::parse(c.string()?).ok()?)?,
            _ => once(&mut media, body(&mut c)?)?,
        }
    }
    if !c.at_end() {
        return None;
    }
    Some(MediaFrame {
        sequence_number: sequence_number.map(Cow::Borrowed),
        stream_sid: stream_sid?,
        media: media?,
    })
}
