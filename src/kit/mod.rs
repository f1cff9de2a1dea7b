//! The Twilio side of a call: a client, not part of the trust decisions. It plays Twilio
//! against any media-stream server, for `streamguard demo`, `streamguard conformance`, the
//! end-to-end tests and the load generator.
//!
//! - [`simulator`], the signed webhook, TwiML parsing, query stripping, the signed upgrade
//!   and the frames, each step alterable to forge a request;
//! - [`cases`], the conformance catalogue: stable ids, expected outcomes, the attacks;
//! - [`conformance`], the runner (`streamguard conformance`);
//! - [`report`], the table, JSON and JUnit XML;
//! - [`load`], `streamguard load`: many concurrent calls, with latency and server cost;
//! - [`demo`], `streamguard demo`: the reference server and the whole kit.

pub mod cases;
pub mod conformance;
pub mod demo;
pub mod load;
pub mod report;
pub mod simulator;
