//! An echo bot with the callback API: every authenticated stream gets its own handler, which
//! greets the caller by the number the webhook said they call from, echoes their audio, plays
//! a mark after each second of it, and hangs up when they press `#`. The TwiML hook says
//! something before the stream and passes the caller's number as a `<Parameter>`.
//!
//! Configuration from the environment, exactly as `streamguard serve` reads it:
//!
//! ```sh
//! export TWILIO_AUTH_TOKEN=... TWILIO_ACCOUNT_SID=AC... STREAMGUARD_PUBLIC_URL=https://voice.example.com
//! cargo run --example echo_bot
//! ```

use streamguard::server::{MediaHandler, Server, StartedStream, StreamEnd, StreamHandle};
use streamguard::webhook::{CallTwiml, Verified};
use streamguard::wire::frames::{DtmfFrame, MarkFrame, MediaFrame};
use streamguard::wire::twiml::Say;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// One call's handler.
struct EchoBot {
    frames: u64,
}

impl MediaHandler for EchoBot {
    fn on_start(&mut self, stream: &StartedStream, _out: &StreamHandle) {
        // From the verified webhook when this instance answered it; from the TwiML hook's
        // parameter on any instance.
        let caller = stream
            .webhook
            .as_ref()
            .and_then(|w| w.param("From").map(str::to_owned))
            .or_else(|| {
                stream
                    .info
                    .custom_parameters
                    .get("caller")
                    .map(str::to_owned)
            });
        tracing::info!(call_sid = %stream.info.call_sid, caller = caller.as_deref().unwrap_or("unknown"), "echoing");
    }

    fn on_media(&mut self, frame: &MediaFrame<'_>, out: &StreamHandle) {
        // The payload is already base64: send it back as it came.
        let _ = out.media_base64(frame.payload());
        self.frames = self.frames.saturating_add(1);
        if self.frames.is_multiple_of(50) {
            let _ = out.mark(&format!("second-{}", self.frames / 50));
        }
    }

    fn on_dtmf(&mut self, frame: &DtmfFrame, out: &StreamHandle) {
        if frame.dtmf.digit.as_str() == "#" {
            out.hang_up();
        } else if frame.dtmf.digit.as_str() == "*" {
            // Barge-in: drop what Twilio has buffered.
            let _ = out.clear();
        }
    }

    fn on_mark(&mut self, frame: &MarkFrame, _out: &StreamHandle) {
        tracing::debug!(mark = frame.mark.name.as_str(), "played");
    }

    fn on_end(&mut self, end: StreamEnd) {
        tracing::info!(?end, frames = self.frames, "call ended");
    }
}

fn twiml(call: &Verified) -> CallTwiml {
    CallTwiml {
        say: Some(Say {
            text: "You are talking to an echo.".to_owned(),
            ..Say::default()
        }),
        parameters: vec![(
            "caller".to_owned(),
            call.param("From").unwrap_or_default().to_owned(),
        )],
        ..CallTwiml::default()
    }
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
    let config = streamguard::server::Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let server = Server::builder(config)
        .handlers(|_: &StartedStream| -> Box<dyn MediaHandler> { Box::new(EchoBot { frames: 0 }) })
        .twiml(twiml)
        .build()?;
    let running = server.serve(listener).await?;
    running
        .serve_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
