//! Every bound and default in streamguard, in one place.
//!
//! A bound that a peer can push against is a named constant here or a field of a config
//! struct whose default comes from here. Nothing else in the crate writes a bare number for a
//! size, a count or a duration. Where a value matches or beats a limit from the public record
//! (`PROTOCOL.md` §5: 5 s start deadline, 4 pending connections per IP, 64 KiB messages,
//! 1 MiB outbound buffer, 10 minutes of webhook replay memory), the comment says so.

use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Stream tokens
// ---------------------------------------------------------------------------------------------

/// Smallest accepted token key, in bytes (HMAC-SHA256 security level; RFC 2104 §3 advises a key
/// at least as long as the hash output).
pub const TOKEN_KEY_MIN_BYTES: usize = 32;

/// Largest accepted token key, in bytes. Longer keys would be hashed down by HMAC anyway.
pub const TOKEN_KEY_MAX_BYTES: usize = 64;

/// Most keys in a verification set (the current key plus the ones being rotated out).
pub const TOKEN_MAX_KEYS: usize = 8;

/// Random nonce carried by every token, in bytes (128 bits from the OS CSPRNG).
pub const TOKEN_NONCE_BYTES: usize = 16;

/// Default token lifetime, counted from issuance.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);

/// Longest token lifetime the configuration accepts. A stream token only has to survive the
/// gap between the webhook answer and Twilio opening the WebSocket.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Longest token string that extraction accepts (a v1 token is 82 characters; the headroom is
/// for later versions). Anything longer is rejected before it is decoded.
pub const MAX_TOKEN_CHARS: usize = 256;

// ---------------------------------------------------------------------------------------------
// Single use: the replay store
// ---------------------------------------------------------------------------------------------

/// Shortest token lifetime the configuration accepts (`--token-ttl` is in whole seconds; a
/// shorter life would not survive Twilio's round trip from the webhook answer to the upgrade).
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(1);

/// How long a CallSid that has opened a stream stays remembered (`--call-memory`), refused a
/// new token and a new stream: 4 h, Twilio's default maximum call length (`timeLimit`,
/// 14400 s). A captured webhook is signed forever (the signature has no timestamp); replayed
/// within this time it mints nothing. An operator who raises `timeLimit` raises this too.
pub const DEFAULT_CALL_MEMORY: Duration = Duration::from_secs(14_400);

/// Longest `--call-memory` the configuration accepts.
pub const MAX_CALL_MEMORY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Streams one call may open (`--streams-per-call`). 1: the same call sent back to the
/// webhook by `<Redirect>` after its stream ended gets no second stream.
pub const DEFAULT_STREAMS_PER_CALL: u32 = 1;

/// Largest `--streams-per-call`.
pub const MAX_STREAMS_PER_CALL: u32 = 100;

/// Most calls the in-memory store remembers at once (`--call-capacity`). A record is
/// forgotten only once expired; when the store is full of live records, webhooks are refused
/// (fail closed). At the default `--call-memory` this sustains capacity / 14400 calls per
/// second (about 69); see the README for bytes per record.
pub const DEFAULT_CALL_CAPACITY: usize = 1_000_000;

/// Most recent verified webhooks kept for the handlers of their streams (`From`, `To` ...),
/// each for its token's lifetime; the oldest is dropped first (a convenience, not security
/// state: about 2 KiB each).
pub const DEFAULT_CALL_CONTEXTS: usize = 16_384;

/// Fill ratio (in percent) at which the store logs a warning.
pub const CALL_RECORDS_WARN_PERCENT: u64 = 80;

// ---------------------------------------------------------------------------------------------
// Twilio messages
// ---------------------------------------------------------------------------------------------

/// Default largest inbound WebSocket message (`--max-message-bytes`; matches the public record).
/// Twilio's largest message is a `start` with its custom parameters, far below this.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Most entries in `start.customParameters`.
pub const MAX_CUSTOM_PARAMETERS: usize = 64;

/// Longest custom parameter name, in bytes.
pub const MAX_CUSTOM_PARAMETER_NAME_BYTES: usize = 256;

/// Longest custom parameter value, in bytes.
pub const MAX_CUSTOM_PARAMETER_VALUE_BYTES: usize = 4096;

/// Longest string field in a Twilio message other than a media payload or a custom
/// parameter (tracks, mark names, digits, sequence numbers ...).
pub const MAX_SHORT_FIELD_BYTES: usize = 256;

/// Most entries in `start.tracks`.
pub const MAX_TRACKS: usize = 4;

// ---------------------------------------------------------------------------------------------
// HTTP and WebSocket transport
// ---------------------------------------------------------------------------------------------

/// Longest request target (path and query) considered for extraction or signatures.
pub const MAX_REQUEST_TARGET_BYTES: usize = 8 * 1024;

/// Longest URL accepted by the signature functions.
pub const MAX_SIGNED_URL_BYTES: usize = 16 * 1024;

/// Longest `X-Twilio-Signature` header value (a valid one is 28 characters).
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 128;

/// Largest webhook body (`413` above it).
pub const MAX_WEBHOOK_BODY_BYTES: usize = 64 * 1024;

/// Most form parameters in one webhook body.
pub const MAX_WEBHOOK_PARAMS: usize = 512;

/// Time allowed to receive a whole webhook body.
pub const WEBHOOK_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed to receive a request head on any HTTP connection.
pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time from the upgrade to a valid `start` (`--start-timeout-ms`; the public record).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(5);

/// Default cap on upgraded but not yet authenticated connections (`--max-pending`). When it is
/// reached the oldest pending connection of the address holding the most is closed to admit
/// the new one (so a flood from a few addresses evicts itself, not the calls of others). A
/// pending connection costs about 12 KiB of RSS (measured: 11.8 KiB, buffers, task and slot;
/// BENCHMARKS.md), so 1024 of them are about 12 MiB.
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// Default cap on pending connections from one client IP (`--max-pending-per-ip`).
pub const DEFAULT_MAX_PENDING_PER_IP: usize = 4;

/// Default cap on authenticated streams at once (`--max-streams`).
pub const DEFAULT_MAX_STREAMS: usize = 1024;

/// Default cap on TCP connections of every kind at once (`--max-connections`). When it is
/// reached the oldest connection that has not sent a complete request head is closed to admit
/// the new one. Lowered at start to the file-descriptor limit less
/// [`FD_RESERVE`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// File descriptors kept free for everything that is not a client connection (listeners,
/// the replay store, logs, the runtime).
pub const FD_RESERVE: usize = 64;

/// Largest request head (request line and headers) read on any HTTP connection. Twilio's are
/// about 1 KiB; 16 KiB is plenty.
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// First pause after a failed `accept` (out of descriptors, say); it doubles up to
/// [`ACCEPT_BACKOFF_MAX`] while `accept` keeps failing.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// Longest pause after failed `accept`s.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// At most one warning per this period for failed `accept`s (the rest are counted).
pub const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(5);

/// WebSocket read buffer per connection. tokio-tungstenite's default (128 KiB) is allocated
/// and zero-filled per connection; Twilio's frames are a few hundred bytes.
pub const WS_READ_BUFFER_BYTES: usize = 8 * 1024;

/// WebSocket write buffer per connection before a flush is forced.
pub const WS_WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// Outbound bytes queued for one peer before it counts as not reading and is closed (the
/// public record closes at 1 MiB).
pub const MAX_OUTBOUND_BUFFER_BYTES: usize = 1024 * 1024;

/// Time allowed to send a close frame before the connection is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Time allowed for streams to close on shutdown before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
