//! The smallest server: configuration from the environment, exactly as `streamguard serve`
//! reads it (`STREAMGUARD_LISTEN`, `STREAMGUARD_PUBLIC_URL`, `TWILIO_AUTH_TOKEN`,
//! `TWILIO_ACCOUNT_SID`, `STREAMGUARD_TOKEN_KEY`, `STREAMGUARD_REPLAY_STORE`), audio dropped.
//!
//! ```sh
//! export TWILIO_AUTH_TOKEN=... TWILIO_ACCOUNT_SID=AC... STREAMGUARD_PUBLIC_URL=https://voice.example.com
//! cargo run --example from_env
//! ```

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

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
    let config = streamguard::server::Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let server = streamguard::server::Server::builder(config).build()?;
    let running = server.serve(listener).await?;
    running
        .serve_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
