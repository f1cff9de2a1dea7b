//! The Twilio side of a call: a client, not part of the trust decisions. It plays Twilio
//! against any media-stream server, for `streamguard demo`, the end-to-end tests and
//! conformance checks.
//!
//! - [`simulator`], the signed webhook, TwiML parsing, query stripping, the signed upgrade
//!   and the frames, each step alterable to forge a request;
//! - [`demo`], `streamguard demo`.

pub mod demo;
pub mod simulator;
