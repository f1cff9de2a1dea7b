//! `streamguard demo`: the reference server on 127.0.0.1 with ephemeral secrets, and the whole
//! conformance kit run against it. No configuration, no network, no accounts.
//!
//! The server runs with a 2 s token TTL and a 1 s start deadline (the kit is told both), so
//! the cases that wait for a token to expire or a slow client to be closed finish in seconds.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpListener;

use super::cases::Target;
use super::conformance::{self, KitError};
use super::report::Report;
use super::simulator::SimError;
use crate::secret::{AuthToken, KeySet, TokenKey};
use crate::server::{Config, Echo, PublicUrl, Server};
use crate::sid::AccountSid;

/// The token TTL the demo's server runs with.
pub const DEMO_TOKEN_TTL: Duration = Duration::from_secs(2);

/// The start deadline the demo's server runs with.
pub const DEMO_START_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the demo could not run.
#[derive(Debug)]
#[non_exhaustive]
pub enum DemoError {
    /// Setting up the server or the secrets failed.
    Setup(SimError),
    /// The kit could not run.
    Kit(KitError),
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Setup(e) => e.fmt(f),
            Self::Kit(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DemoError {}

impl From<SimError> for DemoError {
    fn from(e: SimError) -> Self {
        Self::Setup(e)
    }
}

impl From<std::io::Error> for DemoError {
    fn from(e: std::io::Error) -> Self {
        Self::Setup(SimError::Io(e))
    }
}

fn random_hex(rng: &SystemRandom, bytes: usize) -> Result<String, SimError> {
    let mut buf = vec![0u8; bytes];
    rng.fill(&mut buf)
        .map_err(|_| SimError::Setup("randomness"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs the demo: starts a server with ephemeral secrets, runs the kit, shuts the server down.
pub async fn run() -> Result<Report, DemoError> {
    let rng = SystemRandom::new();
    let auth_text = random_hex(&rng, 16)?;
    let account_sid = AccountSid::parse(&format!("AC{}", random_hex(&rng, 16)?))
        .map_err(|_| SimError::Setup("sid"))?;
    let key = TokenKey::generate(&rng).map_err(|_| SimError::Setup("key"))?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let public = format!("http://{addr}");
    let public_url = PublicUrl::parse(&public).map_err(|_| SimError::Setup("public url"))?;
    let auth = AuthToken::new(&auth_text).map_err(|_| SimError::Setup("auth token"))?;
    let mut config = Config::new(public_url, auth, account_sid, KeySet::single(key));
    config.token_ttl = DEMO_TOKEN_TTL;
    config.start_timeout = DEMO_START_TIMEOUT;
    let target = Target {
        connect_to: addr,
        target: public.clone(),
        public_url: public,
        webhook_path: config.webhook_path.clone(),
        stream_path: config.stream_path.clone(),
        token_ttl: Some(DEMO_TOKEN_TTL),
        start_timeout: Some(DEMO_START_TIMEOUT),
        account_sid,
    };
    let server = Server::builder(config)
        .handlers(Echo)
        .build()
        .map_err(|_| SimError::Setup("server configuration"))?
        .serve(listener)
        .await?;
    let kit_auth = AuthToken::new(&auth_text).map_err(|_| SimError::Setup("auth token"))?;
    let report = conformance::run(target, kit_auth, &[]).await;
    server.shutdown().await;
    report.map_err(DemoError::Kit)
}

/// The paragraph printed after the demo's table.
pub fn summary(report: &Report) -> String {
    if report.all_passed() {
        format!(
            "The reference server took a call the way Twilio places it (signed webhook, the \
             token in a TwiML <Parameter>, signed upgrade, audio echoed back) and refused \
             every forgery the kit knows: unsigned and tampered webhooks, webhook replays \
             within and after the token TTL, unsigned and malformed upgrades, streams with no \
             token, a garbage, foreign, expired or spent token, a token raced over two \
             connections, protocol violations before and after start, a slow client and a \
             flood of connections that never start. No unauthenticated connection heard or \
             injected audio. {}.",
            report.summary_line()
        )
    } else {
        format!(
            "The demo found a failure: see the FAIL rows above ({}).",
            report.summary_line()
        )
    }
}
