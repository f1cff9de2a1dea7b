//! The axum example (`examples/axum_app.rs`), mounted in its own axum app on one listener,
//! passes every case of the conformance kit, and its own route still answers. Built only with
//! the `axum` feature: `cargo test --features axum --test axum_example` (CI runs it).

#![cfg(feature = "axum")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

#[path = "../examples/axum_app.rs"]
mod axum_app;

use std::net::SocketAddr;
use std::time::Duration;

use streamguard::kit::cases::Target;
use streamguard::kit::report::Verdict;
use streamguard::secret::{AuthToken, KeySet, TokenKey};
use streamguard::server::{Config, PublicUrl};
use streamguard::sid::AccountSid;

const AUTH: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_passes_the_conformance_kit() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let public = format!("http://{addr}");
    let mut config = Config::new(
        PublicUrl::parse(&public).unwrap(),
        AuthToken::new(AUTH).unwrap(),
        AccountSid::parse(ACCOUNT).unwrap(),
        KeySet::single(TokenKey::from_bytes(&[5; 32]).unwrap()),
    );
    config.token_ttl = Duration::from_secs(2);
    config.start_timeout = Duration::from_secs(1);
    let (router, server) = axum_app::app(config).unwrap();
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let app = tokio::spawn(async move { axum::serve(listener, service).await });

    // The application's own route.
    let (status, text) = streamguard::kit::simulator::raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(text.ends_with("the application's own page"), "{text}");

    let target = Target {
        connect_to: addr,
        target: public.clone(),
        public_url: public,
        webhook_path: "/voice/webhook".to_owned(),
        stream_path: "/voice/stream".to_owned(),
        token_ttl: Some(Duration::from_secs(2)),
        start_timeout: Some(Duration::from_secs(1)),
        account_sid: AccountSid::parse(ACCOUNT).unwrap(),
    };
    let report = streamguard::kit::conformance::run(target, AuthToken::new(AUTH).unwrap(), &[])
        .await
        .unwrap();
    assert_eq!(report.failed, 0, "{}", report.table());
    assert_eq!(report.skipped, 0, "{}", report.table());
    assert_eq!(
        report.verdict("injection.unauthenticated_frames_go_nowhere"),
        Some(Verdict::Pass)
    );
    assert!(server.metrics().streams_authenticated > 5);
    server.shutdown().await;
    app.abort();
}
