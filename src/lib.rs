//! streamguard authenticates Twilio Media Streams WebSocket connections: the voice webhook
//! and the upgrade are signature-checked, and a stream is accepted only with a token bound to
//! one call and one account, that expires and works once.
//!
//! # In an application
//!
//! Build a [`server::Server`] from a [`server::Config`] (usually [`server::Config::from_env`],
//! the same variables `streamguard serve` reads), give it a [`server::MediaHandler`] factory,
//! and either mount its routes in your router ([`server::Server::service`], a tower service;
//! `Server::router` with the `axum` feature) or let it serve alone. Audio goes back through a
//! [`server::StreamHandle`], from any task ([`server::handler::channel`] delivers each call
//! as an async stream of events instead). A [`webhook::TwimlHook`] shapes each call's TwiML
//! (a `<Say>`, parameters of your own). Add [`logging::secret_safe`] to your tracing
//! subscriber: it keeps stream tokens out of your logs whatever the filter.
//!
//! ```no_run
//! use streamguard::server::{Config, MediaHandler, Server, StartedStream, StreamHandle};
//! use streamguard::wire::frames::MediaFrame;
//!
//! struct Echo;
//! impl MediaHandler for Echo {
//!     fn on_media(&mut self, frame: &MediaFrame<'_>, out: &StreamHandle) {
//!         let _ = out.media_base64(frame.payload());
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_env()?; // STREAMGUARD_PUBLIC_URL, TWILIO_AUTH_TOKEN, ...
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! let server = Server::builder(config)
//!     .handlers(|_: &StartedStream| -> Box<dyn MediaHandler> { Box::new(Echo) })
//!     .build()?;
//! server.serve(listener).await?.serve_until(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```
//!
//! If your subscriber forwards `log` records (`tracing-log`), keep `log::max_level` at your
//! filter's level: tungstenite logs every frame at `trace`, and forwarding them only to drop
//! them costs about 15% of the per-frame work.
//!
//! Features: `redis` (the shared replay store for several instances), `axum`
//! (`Server::router`), and the defaults `cli` and `kit` (the binary and the Twilio-side
//! client): a library build turns the defaults off (`default-features = false`).
//!
//! # The trust flow
//!
//! Twilio POSTs the voice webhook; [`webhook::decide`] checks its `X-Twilio-Signature`
//! ([`signature`]) and the AccountSid; the server mints a stream token bound to that CallSid
//! and AccountSid through the replay store ([`store::mint`]: the call's live token again if
//! Twilio retries, nothing if the call has already streamed) and answers TwiML
//! ([`wire::twiml::render`]) that carries the token in a `<Parameter>`, because Twilio drops
//! any query string from the stream URL. Twilio then opens the WebSocket:
//! [`upgrade::decide`] checks the handshake and its URL-only signature before anything is
//! sent; the per-connection [`session::Session`] state machine waits for `start`, takes the
//! token from `start.customParameters` ([`extract`]), checks the AccountSid against the
//! configuration ([`sid::check_account_sid`]), verifies the token for exactly that call and
//! account ([`token::verify`]) and asks the server to redeem it; the server reserves a
//! stream slot and redeems it once in the store ([`store::redeem`]). Only then does audio
//! reach the application.
//!
//! Everything above is pure: time and randomness are arguments, and the one piece of shared
//! state, the replay store ([`store`]), is a step the server carries out and reports back. The
//! [`server`] module is the only one that knows hyper and tokio; [`kit`] plays Twilio's side
//! for the demo, the tests and conformance checks. [`logging::secret_safe`] keeps tokens out
//! of any log, whatever the filter. `invariants` (feature `fuzzing`, for the fuzz targets and
//! the tests only) holds the checks the fuzz targets assert.

// Also set in Cargo.toml's [lints]; stated here so a reader of the crate root sees them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod extract;
#[cfg(feature = "fuzzing")]
pub mod invariants;
#[cfg(feature = "kit")]
pub mod kit;
pub mod limits;
pub mod logging;
pub mod secret;
pub mod server;
pub mod session;
pub mod sid;
pub mod signature;
pub mod store;
mod sync;
pub mod time;
pub mod token;
pub mod upgrade;
pub mod webhook;
pub mod wire;
