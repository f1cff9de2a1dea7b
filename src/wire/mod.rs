//! Parsing and writing only, no decisions: the codecs and message shapes the trust decisions
//! read and the server writes (as rustls keeps `msgs/` apart from the handshake, and hyper
//! `proto/` apart from `server/`).
//!
//! - [`form`], the `application/x-www-form-urlencoded` codec;
//! - [`request`], the HTTP request head the pure decisions take;
//! - [`frames`], Twilio's JSON messages on a media stream;
//! - [`twiml`], the TwiML answer, byte-identical to Twilio's helper library.

pub mod form;
pub mod frames;
pub mod request;
pub mod twiml;
