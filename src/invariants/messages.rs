//! Twilio's messages (`PROTOCOL.md` §2) as the targets build them, and byte edits.

use super::fixtures::{
    ACCOUNT, CALL, FixtureToken, OTHER_ACCOUNT, OTHER_CALL, OTHER_STREAM, STREAM, fixture_token,
    fixtures,
};

#[cfg(doc)]
use super::SessionEvent;

/// Most edits applied in one `token` or `session` mutation.
pub const MAX_EDITS: usize = 8;

/// Which AccountSid a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum AccountChoice {
    /// [`ACCOUNT`].
    Configured,
    /// [`OTHER_ACCOUNT`].
    Other,
}

/// Which CallSid a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum CallChoice {
    /// [`CALL`].
    Call,
    /// [`OTHER_CALL`].
    Other,
}

/// Which StreamSid a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum StreamChoice {
    /// [`STREAM`].
    Stream,
    /// [`OTHER_STREAM`].
    Other,
}

impl AccountChoice {
    fn as_str(self) -> &'static str {
        match self {
            Self::Configured => ACCOUNT,
            Self::Other => OTHER_ACCOUNT,
        }
    }
}

impl CallChoice {
    fn as_str(self) -> &'static str {
        match self {
            Self::Call => CALL,
            Self::Other => OTHER_CALL,
        }
    }
}

impl StreamChoice {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stream => STREAM,
            Self::Other => OTHER_STREAM,
        }
    }
}

/// The `token` custom parameter of a `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum TokenChoice {
    /// No `token` parameter.
    Missing,
    /// A fixture token.
    Fixture(FixtureToken),
    /// Any text.
    Raw(String),
}

/// A `start` message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct StartSpec {
    /// `start.accountSid`.
    pub account: AccountChoice,
    /// `start.callSid`.
    pub call: CallChoice,
    /// `start.streamSid`.
    pub stream: StreamChoice,
    /// Whether the top-level `streamSid` is another stream than `start.streamSid`.
    pub top_level_differs: bool,
    /// `start.customParameters.token`.
    pub token: TokenChoice,
    /// Whether `customParameters` also holds a parameter whose value needs JSON escaping.
    pub extra_parameter: bool,
}

impl StartSpec {
    /// The `start` of a genuine call: the configured account, [`CALL`], [`STREAM`] and
    /// [`FixtureToken::Valid`].
    pub fn valid() -> Self {
        Self {
            account: AccountChoice::Configured,
            call: CallChoice::Call,
            stream: StreamChoice::Stream,
            top_level_differs: false,
            token: TokenChoice::Fixture(FixtureToken::Valid),
            extra_parameter: false,
        }
    }
}

fn json_string(s: &str) -> String {
    // Serialising a `str` cannot fail; the fallback is never taken.
    serde_json::to_string(s).unwrap_or_default()
}

/// The JSON text of a `start` message shaped like Twilio's (`PROTOCOL.md` §2).
pub fn start_json(spec: &StartSpec) -> String {
    let stream = spec.stream.as_str();
    let top = match (spec.top_level_differs, spec.stream) {
        (false, s) => s.as_str(),
        (true, StreamChoice::Stream) => OTHER_STREAM,
        (true, StreamChoice::Other) => STREAM,
    };
    let mut params = Vec::new();
    match &spec.token {
        TokenChoice::Missing => {}
        TokenChoice::Fixture(which) => {
            params.push(format!(r#""token":{}"#, json_string(fixture_token(*which))))
        }
        TokenChoice::Raw(t) => params.push(format!(r#""token":{}"#, json_string(t))),
    }
    if spec.extra_parameter {
        params.push(r#""callId":"a&b<c>\"d\"\n""#.to_owned());
    }
    format!(
        r#"{{"event":"start","sequenceNumber":"1","streamSid":"{top}","start":{{"accountSid":"{account}","streamSid":"{stream}","callSid":"{call}","tracks":["inbound"],"customParameters":{{{params}}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}}}}"#,
        account = spec.account.as_str(),
        call = spec.call.as_str(),
        params = params.join(","),
    )
}

/// A Twilio message kind, for [`message_json`] and [`SessionEvent::Mutated`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum Template {
    /// `connected`.
    Connected,
    /// `start` as [`StartSpec::valid`].
    Start,
    /// `media` with 160 bytes of silence.
    Media,
    /// `dtmf`.
    Dtmf,
    /// `mark`.
    Mark,
    /// `stop`.
    Stop,
    /// An `event` value Twilio does not define.
    Unknown,
}

impl Template {
    /// Every template.
    pub const ALL: [Self; 7] = [
        Self::Connected,
        Self::Start,
        Self::Media,
        Self::Dtmf,
        Self::Mark,
        Self::Stop,
        Self::Unknown,
    ];
}

/// The JSON text of a message of kind `t` for stream `stream` (`PROTOCOL.md` §2).
pub fn message_json(t: Template, stream: StreamChoice) -> String {
    let s = stream.as_str();
    match t {
        Template::Connected => {
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned()
        }
        Template::Start => start_json(&StartSpec {
            stream,
            ..StartSpec::valid()
        }),
        Template::Media => format!(
            r#"{{"event":"media","sequenceNumber":"3","streamSid":"{s}","media":{{"track":"inbound","chunk":"1","timestamp":"5","payload":"{}"}}}}"#,
            fixtures().media_payload
        ),
        Template::Dtmf => format!(
            r#"{{"event":"dtmf","sequenceNumber":"5","streamSid":"{s}","dtmf":{{"track":"inbound_track","digit":"1"}}}}"#
        ),
        Template::Mark => format!(
            r#"{{"event":"mark","sequenceNumber":"4","streamSid":"{s}","mark":{{"name":"label"}}}}"#
        ),
        Template::Stop => format!(
            r#"{{"event":"stop","sequenceNumber":"5","streamSid":"{s}","stop":{{"accountSid":"{ACCOUNT}","callSid":"{CALL}"}}}}"#
        ),
        Template::Unknown => format!(r#"{{"event":"fuzz","streamSid":"{s}"}}"#),
    }
}

/// One byte edit of a message or token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum ByteEdit {
    /// Removes the byte at this position (modulo the length).
    Delete(u16),
    /// Inserts a byte at this position (modulo the length plus one).
    Insert(u16, u8),
    /// Replaces the byte at this position (modulo the length).
    Replace(u16, u8),
    /// Flips one bit (`bit % 8`) of the byte at this position (modulo the length).
    FlipBit(u16, u8),
    /// Keeps only the first `n` bytes (modulo the length plus one).
    Truncate(u16),
}

fn position(at: u16, len: usize) -> usize {
    usize::from(at).checked_rem(len).unwrap_or(0)
}

/// Applies `edit` to `bytes`.
pub fn apply_edit(bytes: &mut Vec<u8>, edit: ByteEdit) {
    let len = bytes.len();
    match edit {
        ByteEdit::Delete(at) if len > 0 => {
            bytes.remove(position(at, len));
        }
        ByteEdit::Insert(at, b) => bytes.insert(position(at, len.saturating_add(1)), b),
        ByteEdit::Replace(at, b) => {
            if let Some(x) = bytes.get_mut(position(at, len)) {
                *x = b;
            }
        }
        ByteEdit::FlipBit(at, bit) => {
            if let Some(x) = bytes.get_mut(position(at, len)) {
                *x ^= 1u8.wrapping_shl(u32::from(bit & 7));
            }
        }
        ByteEdit::Truncate(n) => bytes.truncate(position(n, len.saturating_add(1))),
        ByteEdit::Delete(_) => {}
    }
}
