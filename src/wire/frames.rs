//! The JSON messages of a Twilio Media Stream (`PROTOCOL.md` §2), parsed strictly where it
//! matters for trust.
//!
//! Source: Twilio, "Media Streams – WebSocket Messages"
//! (<https://www.twilio.com/docs/voice/media-streams/websocket-messages>).
//!
//! What is strict:
//! - the message size is checked before any parsing;
//! - every SID is validated by its type ([`crate::sid`]); a `start` whose top-level
//!   `streamSid` differs from `start.streamSid` is refused;
//! - `start.customParameters` is an object of string values with at most
//!   [`MAX_CUSTOM_PARAMETERS`] entries of bounded length, and a repeated name is an error
//!   (a JSON object with two `token` keys is ambiguous, not "last one wins");
//! - every other string field is bounded by [`MAX_SHORT_FIELD_BYTES`].
//!
//! What is lenient: unknown fields are ignored and unknown `event` values parse as
//! [`Inbound::Unknown`], so a field or event Twilio adds later does not break calls. The
//! session decides what an unknown event means (before authentication, a failure).

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::limits::{
    MAX_CUSTOM_PARAMETER_NAME_BYTES, MAX_CUSTOM_PARAMETER_VALUE_BYTES, MAX_CUSTOM_PARAMETERS,
    MAX_SHORT_FIELD_BYTES, MAX_TRACKS,
};
use crate::sid::{AccountSid, CallSid, StreamSid};

/// A string of at most [`MAX_SHORT_FIELD_BYTES`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Short(String);

impl Short {
    /// `s`, if it is at most [`MAX_SHORT_FIELD_BYTES`] long.
    pub fn new(s: impl Into<String>) -> Option<Self> {
        let s = s.into();
        (s.len() <= MAX_SHORT_FIELD_BYTES).then_some(Self(s))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Short {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() > MAX_SHORT_FIELD_BYTES {
            return Err(de::Error::custom("string field too long"));
        }
        Ok(Self(s))
    }
}

/// `start.customParameters`: the `<Parameter>`s of the TwiML, in the order received.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct CustomParameters(Vec<(String, String)>);

impl CustomParameters {
    /// The value of parameter `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every (name, value) pair.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A copy without the parameter `name`.
    pub fn without(&self, name: &str) -> Self {
        Self(self.0.iter().filter(|(n, _)| n != name).cloned().collect())
    }
}

impl fmt::Debug for CustomParameters {
    /// Names only: values may be secrets (the stream token is one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Serialize for CustomParameters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (n, v) in &self.0 {
            map.serialize_entry(n, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for CustomParameters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CustomParameters;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, String)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if out.len() >= MAX_CUSTOM_PARAMETERS {
                        return Err(de::Error::custom("too many custom parameters"));
                    }
                    if name.len() > MAX_CUSTOM_PARAMETER_NAME_BYTES {
                        return Err(de::Error::custom("custom parameter name too long"));
                    }
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom("repeated custom parameter"));
                    }
                    let value = map.next_value::<String>()?;
                    if value.len() > MAX_CUSTOM_PARAMETER_VALUE_BYTES {
                        return Err(de::Error::custom("custom parameter value too long"));
                    }
                    out.push((name, value));
                }
                Ok(CustomParameters(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// `start.tracks`: at most [`MAX_TRACKS`] short strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Tracks(Vec<Short>);

impl Tracks {
    /// The track names.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(Short::as_str)
    }
}

impl<'de> Deserialize<'de> for Tracks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tracks;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of track names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = seq.next_element::<Short>()? {
                    if out.len() >= MAX_TRACKS {
                        return Err(de::Error::custom("too many tracks"));
                    }
                    out.push(t);
                }
                Ok(Tracks(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// `start.mediaFormat`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    /// `audio/x-mulaw` for Twilio calls.
    pub encoding: Short,
    /// 8000 for Twilio calls.
    pub sample_rate: u32,
    /// 1 for Twilio calls.
    pub channels: u32,
}

/// The `start` object of a `start` message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartBody {
    /// The account the call belongs to.
    pub account_sid: AccountSid,
    /// The call.
    pub call_sid: CallSid,
    /// This stream.
    pub stream_sid: StreamSid,
    /// Tracks sent (`inbound`, `outbound`).
    #[serde(default)]
    pub tracks: Tracks,
    /// The TwiML `<Parameter>`s.
    #[serde(default)]
    pub custom_parameters: CustomParameters,
    /// The audio format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_format: Option<MediaFormat>,
}

/// `{"event":"start", ...}`: the one message that carries the stream token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartFrame {
    /// Message counter (a string holding an integer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<Short>,
    /// The stream, repeated at top level.
    pub stream_sid: StreamSid,
    /// The body.
    pub start: StartBody,
}

/// `{"event":"connected", ...}`: the first message on a stream.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectedFrame {
    /// `Call`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Short>,
    /// `1.0.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Short>,
}

/// The `media` object of a `media` message. Its strings borrow from the message text
/// (a [`Cow::Owned`] only where JSON escapes had to be undone): no copy per frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MediaBody<'a> {
    /// `inbound` or `outbound`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<Cow<'a, str>>,
    /// Chunk counter (a string holding an integer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk: Option<Cow<'a, str>>,
    /// Milliseconds since the stream started (a string holding an integer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Cow<'a, str>>,
    /// base64 of 8 kHz mono mu-law audio, as received.
    pub payload: Cow<'a, str>,
}

/// `{"event":"media", ...}`: one chunk of audio, borrowing from the message text; see
/// [`MediaFrame::into_owned`] to keep it past the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFrame<'a> {
    /// Message counter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<Cow<'a, str>>,
    /// The stream.
    pub stream_sid: StreamSid,
    /// The audio.
    pub media: MediaBody<'a>,
}

/// Sets `slot` once: a field that appears twice is an error, as in every other message type.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

/// The field names of a `media` message; anything else is skipped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MediaKey {
    Event,
    SequenceNumber,
    StreamSid,
    Media,
    Other,
}

/// The field names of its `media` object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKey {
    Track,
    Chunk,
    Timestamp,
    Payload,
    Other,
}

/// A field name visitor and seed for a key enum: `$name` matched from the string as the
/// parser hands it over, without a copy.
macro_rules! key_seed {
    ($ty:ident { $($name:literal => $variant:ident),* $(,)? }) => {
        impl<'de> de::DeserializeSeed<'de> for $ty {
            type Value = Self;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self, D::Error> {
                d.deserialize_str(self)
            }
        }

        impl Visitor<'_> for $ty {
            type Value = Self;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self, E> {
                Ok(match v {
                    $($name => Self::$variant,)*
                    _ => Self::Other,
                })
            }
        }
    };
}

key_seed!(MediaKey {
    "event" => Event,
    "sequenceNumber" => SequenceNumber,
    "streamSid" => StreamSid,
    "media" => Media,
});
key_seed!(BodyKey {
    "track" => Track,
    "chunk" => Chunk,
    "timestamp" => Timestamp,
    "payload" => Payload,
});

/// An optional short string value, as a seed.
struct ShortOpt;

impl<'de> de::DeserializeSeed<'de> for ShortOpt {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        short_opt(d)
    }
}

impl<'de> Deserialize<'de> for MediaBody<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MediaBody<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a media object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut track, mut chunk, mut timestamp, mut payload) = (None, None, None, None);
                while let Some(key) = map.next_key_seed(BodyKey::Other)? {
                    match key {
                        BodyKey::Track => {
                            once(&mut track, map.next_value_seed(ShortOpt)?, "track")?
                        }
                        BodyKey::Chunk => {
                            once(&mut chunk, map.next_value_seed(ShortOpt)?, "chunk")?
                        }
                        BodyKey::Timestamp => {
                            once(&mut timestamp, map.next_value_seed(ShortOpt)?, "timestamp")?;
                        }
                        BodyKey::Payload => {
                            once(&mut payload, map.next_value_seed(Text)?, "payload")?;
                        }
                        BodyKey::Other => map.next_value_seed(Skip)?,
                    }
                }
                Ok(MediaBody {
                    track: track.flatten(),
                    chunk: chunk.flatten(),
                    timestamp: timestamp.flatten(),
                    payload: payload.ok_or_else(|| de::Error::missing_field("payload"))?,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// The fields of a `media` message after its `event` (or, read on its own, all of them:
/// then `event` is skipped like any other field, `duplicates_event` unset).
fn media_fields<'de, A: MapAccess<'de>>(
    mut map: A,
    first: Option<MediaKey>,
    event_seen: bool,
) -> Result<MediaFrame<'de>, A::Error> {
    let (mut sequence_number, mut stream_sid, mut media) = (None, None, None);
    let mut key = match first {
        Some(k) => Some(k),
        None => map.next_key_seed(MediaKey::Other)?,
    };
    while let Some(k) = key {
        match k {
            MediaKey::Event if event_seen => return Err(de::Error::duplicate_field("event")),
            MediaKey::SequenceNumber => once(
                &mut sequence_number,
                map.next_value_seed(ShortOpt)?,
                "sequenceNumber",
            )?,
            MediaKey::StreamSid => once(&mut stream_sid, map.next_value()?, "streamSid")?,
            MediaKey::Media => once(&mut media, map.next_value()?, "media")?,
            _ => map.next_value_seed(Skip)?,
        }
        key = map.next_key_seed(MediaKey::Other)?;
    }
    Ok(MediaFrame {
        sequence_number: sequence_number.flatten(),
        stream_sid: stream_sid.ok_or_else(|| de::Error::missing_field("streamSid"))?,
        media: media.ok_or_else(|| de::Error::missing_field("media"))?,
    })
}

impl<'de> Deserialize<'de> for MediaFrame<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MediaFrame<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a media message")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                media_fields(map, None, false)
            }
        }
        d.deserialize_map(V)
    }
}

impl MediaFrame<'_> {
    /// The payload as received: base64, not yet decoded.
    pub fn payload(&self) -> &str {
        &self.media.payload
    }

    /// `sequenceNumber`, if present.
    pub fn sequence_number(&self) -> Option<&str> {
        self.sequence_number.as_deref()
    }

    /// `media.chunk`, if present.
    pub fn chunk(&self) -> Option<&str> {
        self.media.chunk.as_deref()
    }

    /// `media.track`, if present.
    pub fn track(&self) -> Option<&str> {
        self.media.track.as_deref()
    }

    /// `media.timestamp`, if present.
    pub fn timestamp(&self) -> Option<&str> {
        self.media.timestamp.as_deref()
    }

    /// The decoded audio bytes, or `None` if the payload is not standard base64.
    pub fn decode_payload(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(self.media.payload.as_bytes())
            .ok()
    }

    /// The same frame owning its strings, to keep or send past the message it came in.
    pub fn into_owned(self) -> MediaFrame<'static> {
        let own = |c: Option<Cow<'_, str>>| c.map(|c| Cow::Owned(c.into_owned()));
        MediaFrame {
            sequence_number: own(self.sequence_number),
            stream_sid: self.stream_sid,
            media: MediaBody {
                track: own(self.media.track),
                chunk: own(self.media.chunk),
                timestamp: own(self.media.timestamp),
                payload: Cow::Owned(self.media.payload.into_owned()),
            },
        }
    }
}

/// A string of at most `max` bytes, borrowed from the input when it has no escapes.
struct BoundedStr(usize);

impl<'de> Visitor<'de> for BoundedStr {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of at most {} bytes", self.0)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.check(v.len())?;
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.check(v.len())?;
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        self.check(v.len())?;
        Ok(Cow::Owned(v))
    }
}

impl BoundedStr {
    fn check<E: de::Error>(&self, len: usize) -> Result<(), E> {
        if len > self.0 {
            return Err(de::Error::custom("string field too long"));
        }
        Ok(())
    }
}

/// An optional short string field (`null` or absent: `None`), borrowed where it can be.
fn short_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a short string or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_str(BoundedStr(MAX_SHORT_FIELD_BYTES))
                .map(Some)
        }
    }
    d.deserialize_option(V)
}

/// The `dtmf` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtmfBody {
    /// `inbound_track`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<Short>,
    /// The key pressed.
    pub digit: Short,
}

/// `{"event":"dtmf", ...}`: a key press.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DtmfFrame {
    /// Message counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<Short>,
    /// The stream.
    pub stream_sid: StreamSid,
    /// The key.
    pub dtmf: DtmfBody,
}

/// The `mark` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkBody {
    /// The label the server gave the mark.
    pub name: Short,
}

/// `{"event":"mark", ...}`: audio sent earlier with this mark has been played.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarkFrame {
    /// Message counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<Short>,
    /// The stream.
    pub stream_sid: StreamSid,
    /// The mark.
    pub mark: MarkBody,
}

/// The `stop` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopBody {
    /// The account.
    pub account_sid: AccountSid,
    /// The call.
    pub call_sid: CallSid,
}

/// `{"event":"stop", ...}`: the stream has ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopFrame {
    /// Message counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<Short>,
    /// The stream.
    pub stream_sid: StreamSid,
    /// Which call stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopBody>,
}

/// Any message Twilio sends on a media stream. A `media` message borrows from the text it
/// was parsed from (the lifetime); every other kind owns its fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Inbound<'a> {
    /// `connected`.
    Connected(ConnectedFrame),
    /// `start` (boxed: it is large, and comes once).
    Start(Box<StartFrame>),
    /// `media`.
    Media(MediaFrame<'a>),
    /// `dtmf`.
    Dtmf(DtmfFrame),
    /// `mark`.
    Mark(MarkFrame),
    /// `stop`.
    Stop(StopFrame),
    /// An `event` value this build does not know.
    Unknown,
}

impl Inbound<'_> {
    /// The `event` name, for logs.
    pub fn event_name(&self) -> &'static str {
        match self {
            Self::Connected(_) => "connected",
            Self::Start(_) => "start",
            Self::Media(_) => "media",
            Self::Dtmf(_) => "dtmf",
            Self::Mark(_) => "mark",
            Self::Stop(_) => "stop",
            Self::Unknown => "unknown",
        }
    }

    /// The message's `streamSid`, if it has one.
    pub fn stream_sid(&self) -> Option<&StreamSid> {
        match self {
            Self::Start(m) => Some(&m.stream_sid),
            Self::Media(m) => Some(&m.stream_sid),
            Self::Dtmf(m) => Some(&m.stream_sid),
            Self::Mark(m) => Some(&m.stream_sid),
            Self::Stop(m) => Some(&m.stream_sid),
            Self::Connected(_) | Self::Unknown => None,
        }
    }
}

/// Why a text message is not a valid Twilio message. Carries no part of the input: parser
/// messages can quote peer bytes, which do not belong in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Larger than the configured maximum.
    TooLarge,
    /// Not JSON.
    Syntax,
    /// JSON, but not a message of the expected shape (missing or invalid field, bad SID,
    /// bound exceeded, repeated custom parameter ...).
    Schema,
    /// A `start` whose top-level `streamSid` differs from `start.streamSid`.
    StreamSidMismatch,
}

impl FrameError {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "frame_too_large",
            Self::Syntax => "frame_not_json",
            Self::Schema => "frame_invalid",
            Self::StreamSidMismatch => "frame_stream_sid_mismatch",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLarge => "message is larger than allowed",
            Self::Syntax => "message is not JSON",
            Self::Schema => "message is not a valid Twilio media stream message",
            Self::StreamSidMismatch => "start message has two different streamSids",
        })
    }
}

impl std::error::Error for FrameError {}

/// The first pass over a message: its `event`, and when that comes first (as Twilio sends
/// it) and names `media`, the whole `media` message in the same pass. Otherwise only the
/// name (other fields skipped, their JSON checked), for a second pass into the type it
/// names. The message must be an object with exactly one string `event`.
enum FirstPass<'a> {
    Media(MediaFrame<'a>),
    Event(Cow<'a, str>),
}

impl<'de> Deserialize<'de> for FirstPass<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FirstPass<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Twilio media stream message (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut key = map.next_key_seed(MediaKey::Other)?;
                if key == Some(MediaKey::Event) {
                    let event = map.next_value_seed(StrSeed)?;
                    if event == "media" {
                        return media_fields(map, None, true).map(FirstPass::Media);
                    }
                    while let Some(k) = map.next_key_seed(MediaKey::Other)? {
                        if k == MediaKey::Event {
                            return Err(de::Error::duplicate_field("event"));
                        }
                        map.next_value_seed(Skip)?;
                    }
                    return Ok(FirstPass::Event(event));
                }
                let mut event = None;
                while let Some(k) = key {
                    if k == MediaKey::Event {
                        once(&mut event, map.next_value_seed(StrSeed)?, "event")?;
                    } else {
                        map.next_value_seed(Skip)?;
                    }
                    key = map.next_key_seed(MediaKey::Other)?;
                }
                event
                    .map(FirstPass::Event)
                    .ok_or_else(|| de::Error::missing_field("event"))
            }
        }
        d.deserialize_map(V)
    }
}

/// Any JSON value, skipped without allocating, but through the parser's nesting limit (128):
/// a deeply nested value is an error here, as in the message types, not skipped.
struct Skip;

impl<'de> de::DeserializeSeed<'de> for Skip {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// A string value of any length, borrowed where it can be.
struct Text;

impl<'de> de::DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(BoundedStr(usize::MAX))
    }
}

/// A short string value, borrowed where it can be.
struct StrSeed;

impl<'de> de::DeserializeSeed<'de> for StrSeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(BoundedStr(MAX_SHORT_FIELD_BYTES))
    }
}

fn frame_error(e: &serde_json::Error) -> FrameError {
    match e.classify() {
        serde_json::error::Category::Data => FrameError::Schema,
        _ => FrameError::Syntax,
    }
}

mod fast;

/// Parses one text message of at most `max_bytes` bytes. A `media` message in the shape
/// Twilio sends takes a fast path that borrows every string ([`parse_media_fast`]); anything else goes
/// to [`parse_inbound_general`], which gives the same answer for every input.
pub fn parse_inbound(text: &str, max_bytes: usize) -> Result<Inbound<'_>, FrameError> {
    if text.len() > max_bytes {
        return Err(FrameError::TooLarge);
    }
    if let Some(m) = fast::media(text) {
        return Ok(Inbound::Media(m));
    }
    parse_inbound_general(text, max_bytes)
}

/// The fast path of [`parse_inbound`] alone: the `media` message `text` is, when it has the
/// shape Twilio sends (no escapes, known fields only, each once); `None` when it does not,
/// which says nothing about whether it is valid. Whenever this is `Some(m)`,
/// [`parse_inbound_general`] gives `Ok(Inbound::Media(m))` (checked by property tests and
/// the `start_frame` fuzz target).
pub fn parse_media_fast(text: &str) -> Option<MediaFrame<'_>> {
    fast::media(text)
}

/// [`parse_inbound`] without its fast path: serde_json, the `event` first, then the one
/// message type it names (a `media` message without copying its strings). The reference
/// the fast path is checked against.
pub fn parse_inbound_general(text: &str, max_bytes: usize) -> Result<Inbound<'_>, FrameError> {
    fn body<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, FrameError> {
        serde_json::from_str(text).map_err(|e| frame_error(&e))
    }
    if text.len() > max_bytes {
        return Err(FrameError::TooLarge);
    }
    let event = match body(text)? {
        FirstPass::Media(m) => return Ok(Inbound::Media(m)),
        FirstPass::Event(e) => e,
    };
    let msg = match &*event {
        "media" => Inbound::Media(body(text)?),
        "start" => {
            let s: Box<StartFrame> = body(text)?;
            if s.stream_sid != s.start.stream_sid {
                return Err(FrameError::StreamSidMismatch);
            }
            Inbound::Start(s)
        }
        "connected" => Inbound::Connected(body(text)?),
        "dtmf" => Inbound::Dtmf(body(text)?),
        "mark" => Inbound::Mark(body(text)?),
        "stop" => Inbound::Stop(body(text)?),
        _ => Inbound::Unknown,
    };
    Ok(msg)
}

/// The messages a server may send on a bidirectional stream (`<Connect><Stream>` only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Outbound<'a> {
    /// Audio to play to the caller.
    Media {
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: StreamSid,
        /// The audio.
        media: OutboundMedia<'a>,
    },
    /// Ask Twilio to report when the audio sent so far has played.
    Mark {
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: StreamSid,
        /// The label.
        mark: MarkBody,
    },
    /// Drop audio buffered at Twilio.
    Clear {
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: StreamSid,
    },
}

/// The `media` object of an outbound `media` message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMedia<'a> {
    /// base64 of 8 kHz mono mu-law audio.
    pub payload: Cow<'a, str>,
}

impl Outbound<'_> {
    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs to a string cannot fail (no maps with non-string
        // keys, no custom serialisers that error); the empty fallback is never taken.
        serde_json::to_string(self).unwrap_or_default()
    }
}
