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

/// The `media` object of a `media` message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaBody {
    /// `inbound` or `outbound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<Short>,
    /// Chunk counter (a string holding an integer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<Short>,
    /// Milliseconds since the stream started (a string holding an integer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Short>,
    /// base64 of 8 kHz mono mu-law audio.
    pub payload: String,
}

/// `{"event":"media", ...}`: one chunk of audio.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFrame {
    /// Message counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<Short>,
    /// The stream.
    pub stream_sid: StreamSid,
    /// The audio.
    pub media: MediaBody,
}

impl MediaFrame {
    /// The decoded audio bytes, or `None` if the payload is not standard base64.
    pub fn decode_payload(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(self.media.payload.as_bytes())
            .ok()
    }
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

/// Any message Twilio sends on a media stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Inbound {
    /// `connected`.
    Connected(ConnectedFrame),
    /// `start`.
    Start(StartFrame),
    /// `media`.
    Media(MediaFrame),
    /// `dtmf`.
    Dtmf(DtmfFrame),
    /// `mark`.
    Mark(MarkFrame),
    /// `stop`.
    Stop(StopFrame),
    /// An `event` value this build does not know.
    #[serde(other)]
    Unknown,
}

impl Inbound {
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

/// Parses one text message of at most `max_bytes` bytes.
pub fn parse_inbound(text: &str, max_bytes: usize) -> Result<Inbound, FrameError> {
    if text.len() > max_bytes {
        return Err(FrameError::TooLarge);
    }
    let msg: Inbound = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => FrameError::Schema,
        _ => FrameError::Syntax,
    })?;
    if let Inbound::Start(s) = &msg
        && s.stream_sid != s.start.stream_sid
    {
        return Err(FrameError::StreamSidMismatch);
    }
    Ok(msg)
}

/// The messages a server may send on a bidirectional stream (`<Connect><Stream>` only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Outbound {
    /// Audio to play to the caller.
    Media {
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: StreamSid,
        /// The audio.
        media: OutboundMedia,
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
pub struct OutboundMedia {
    /// base64 of 8 kHz mono mu-law audio.
    pub payload: String,
}

impl Outbound {
    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs to a string cannot fail (no maps with non-string
        // keys, no custom serialisers that error); the empty fallback is never taken.
        serde_json::to_string(self).unwrap_or_default()
    }
}
