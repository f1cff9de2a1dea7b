//! streamguard authenticates Twilio Media Streams WebSocket connections.
//!
//! # The trust flow
//!
//! Twilio POSTs the voice webhook; [`webhook::decide`] checks its `X-Twilio-Signature`
//! ([`signature`]) and the AccountSid, mints a stream token bound to that CallSid and
//! AccountSid ([`token::issue`], idempotently through [`replay::TokenLedger`]) and answers
//! TwiML ([`wire::twiml::render`]) that carries the token in a `<Parameter>`, because Twilio drops
//! any query string from the stream URL. Twilio then opens the WebSocket:
//! [`upgrade::decide`] checks the handshake and its URL-only signature before anything is
//! sent; the per-connection [`session::Session`] state machine waits for `start`, takes the
//! token from `start.customParameters` ([`extract`]), checks the AccountSid against the
//! configuration ([`sid::check_account_sid`]), verifies the token for exactly that call and
//! account ([`token::verify`]) and redeems it once ([`replay::ReplayGuard`]). Only then does
//! audio reach the application.
//!
//! Everything above is pure: time and randomness are arguments; the two shared maps
//! ([`replay`]) take the time as an argument too. The [`server`] module is the only one that
//! knows hyper and tokio; [`kit`] plays Twilio's side for the demo, the tests and
//! conformance checks. `invariants` (feature `fuzzing`, for the fuzz targets and the tests
//! only) holds the checks the fuzz targets assert.

// Also set in Cargo.toml's [lints]; stated here so a reader of the crate root sees them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod extract;
#[cfg(feature = "fuzzing")]
pub mod invariants;
#[cfg(feature = "kit")]
pub mod kit;
pub mod limits;
pub mod replay;
pub mod secret;
pub mod server;
pub mod session;
pub mod sid;
pub mod signature;
pub mod time;
pub mod token;
pub mod upgrade;
pub mod webhook;
pub mod wire;
