//! Log safety: whatever the log filter says (`RUST_LOG=trace`,
//! `RUST_LOG=tungstenite::protocol=trace` ...), no stream token, signature or secret reaches a
//! log line.
//!
//! streamguard itself never logs one. Its WebSocket library does: tungstenite logs whole
//! frames at `trace`, and a `start` frame carries the stream token. So the libraries that can
//! see frame or connection bytes ([`CAPPED_TARGETS`]) are capped at `warn`, *after* the
//! operator's filter: a more specific directive cannot lift the cap, because the cap is a
//! second filter that must also agree, not a directive that can be outranked.
//!
//! An application embedding streamguard installs its own subscriber; it should add
//! [`secret_safe`] to it, as the command line does:
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt as _;
//! let subscriber = tracing_subscriber::registry().with(streamguard::logging::secret_safe());
//! // .with(your fmt layer) ...
//! # drop(subscriber);
//! ```
//!
//! As a global filter (`.with(secret_safe())`) it disables the capped events for every layer;
//! as a per-layer filter (`layer.with_filter(secret_safe())`, or combined with an `EnvFilter`
//! by `FilterExt::and`) for that layer.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::FilterFn;

/// Log targets (and their sub-targets) capped at `warn`: the WebSocket libraries, which log
/// frames, and the Redis client, whose connection settings carry a password.
pub const CAPPED_TARGETS: &[&str] = &["tungstenite", "tokio_tungstenite", "redis"];

/// Whether `target` is one of [`CAPPED_TARGETS`] or below one (`tungstenite::protocol`).
pub fn is_capped_target(target: &str) -> bool {
    CAPPED_TARGETS.iter().any(|capped| {
        target
            .strip_prefix(capped)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Whether an event or span may be logged: anything, except below `warn` from a capped
/// target.
pub fn allows(meta: &Metadata<'_>) -> bool {
    !is_capped_target(meta.target()) || *meta.level() <= Level::WARN
}

/// The filter that enforces the cap: a `tracing_subscriber` layer (global) and per-layer
/// filter.
///
/// ```
/// use tracing::Level;
/// use tracing_subscriber::layer::SubscriberExt as _;
///
/// let subscriber = tracing_subscriber::registry().with(streamguard::logging::secret_safe());
/// tracing::subscriber::with_default(subscriber, || {
///     // tungstenite's frame logs (a `start` frame carries the token) are off ...
///     assert!(!tracing::enabled!(target: "tungstenite::protocol", Level::TRACE));
///     // ... everything else is up to your own filter.
///     assert!(tracing::enabled!(target: "my_app", Level::TRACE));
/// });
/// ```
pub fn secret_safe() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    FilterFn::new(allows as fn(&Metadata<'_>) -> bool)
}
