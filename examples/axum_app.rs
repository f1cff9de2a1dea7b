//! streamguard inside an existing axum application: the app's own routes and streamguard's
//! webhook and stream routes on one listener and one runtime. Audio is pushed from a task of
//! the application's own (here it echoes what it receives, as `streamguard serve --echo`
//! does, so `streamguard conformance` can check it), through the async form of the handler
//! API (`server::handler::channel`).
//!
//! Configuration from the environment, exactly as `streamguard serve` reads it:
//!
//! ```sh
//! export TWILIO_AUTH_TOKEN=... TWILIO_ACCOUNT_SID=AC... STREAMGUARD_PUBLIC_URL=http://127.0.0.1:8080
//! cargo run --example axum_app --features axum
//! streamguard conformance --target http://127.0.0.1:8080 --public-url http://127.0.0.1:8080
//! ```

// Also compiled into `tests/axum_example.rs`, which uses `app` and not `main`.
#![allow(dead_code)]

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use streamguard::server::handler::{self, IncomingStream};
use streamguard::server::{Config, Server, StreamEvent};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The application's task for one call: receives the call's events and talks back through
/// the handle, from outside the connection's own task.
async fn talk(mut call: IncomingStream) {
    while let Some(event) = call.events.recv().await {
        match event {
            StreamEvent::Media(m) => {
                let Ok(()) = call.handle.media_base64(m.payload()) else {
                    // The stream has ended (or the caller stopped reading).
                    break;
                };
            }
            StreamEvent::End(end) => {
                tracing::info!(?end, call_sid = %call.stream.info.call_sid, "call ended");
                break;
            }
            _ => {}
        }
    }
}

/// The application: its own routes, merged with streamguard's.
pub fn app(config: Config) -> Result<(Router, Server), streamguard::server::ConfigError> {
    let (handlers, mut streams) = handler::channel(256);
    let server = Server::builder(config).handlers(handlers).build()?;
    tokio::spawn(async move {
        while let Some(call) = streams.recv().await {
            tokio::spawn(talk(call));
        }
    });
    let router = Router::new()
        .route("/", get(|| async { "the application's own page" }))
        .merge(server.router());
    Ok((router, server))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::registry()
        .with(streamguard::logging::secret_safe())
        .with(tracing_subscriber::fmt::layer())
        .init();
    let config = Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let (router, server) = app(config)?;
    // Client addresses for the per-address pending cap.
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Close the streams with 1001 and wait for them.
    server.shutdown().await;
    Ok(())
}
