//! Log safety for embedders (`streamguard::logging::secret_safe`): an application with its own
//! subscriber at `trace` that adds the filter logs no stream token, signature or secret, while
//! a layer without it, in the same process and the same call, does (so the danger is real and
//! this test can fail). Its own test binary: it installs a global subscriber and `log` bridge.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod harness;

use std::io::Write;
use std::sync::{Arc, Mutex};

use harness::{Harness, Options};
use streamguard::logging::{is_capped_target, secret_safe};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn capped_targets_are_the_websocket_and_redis_libraries() {
    for capped in [
        "tungstenite",
        "tungstenite::protocol",
        "tungstenite::protocol::frame",
        "tokio_tungstenite",
        "tokio_tungstenite::compat",
        "redis",
        "redis::aio",
    ] {
        assert!(is_capped_target(capped), "{capped}");
    }
    for free in [
        "streamguard",
        "streamguard::server",
        "tungstenitex",
        "hyper",
        "redisx",
    ] {
        assert!(!is_capped_target(free), "{free}");
    }
}

#[tokio::test]
async fn an_embedder_at_trace_with_the_filter_logs_no_token() {
    let safe = Buffer::default();
    let unsafe_control = Buffer::default();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(safe.clone())
                .with_filter(tracing_subscriber::filter::LevelFilter::TRACE)
                .with_filter(secret_safe()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(unsafe_control.clone())
                .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
        )
        .try_init()
        .unwrap();

    let h = Harness::start(Options::default()).await;
    let token = h.token_for(1).await;
    let o = h.call_with(1, &token, 3).await;
    assert_eq!(o.close_code, Some(1000));
    h.shutdown().await;

    let safe = safe.text();
    let control = unsafe_control.text();
    assert!(
        safe.contains("stream authenticated"),
        "the filtered layer logs: {safe}"
    );
    assert!(
        control.contains(&token),
        "without the filter, trace logging does carry the token (the control)"
    );
    assert!(
        !safe.contains(&token),
        "the token leaked through secret_safe()"
    );
    assert!(!safe.contains(harness::AUTH_TOKEN));
}
